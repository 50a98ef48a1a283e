"""mrr-stream: billing events in, exact MRR movements and monthly aggregates out."""
