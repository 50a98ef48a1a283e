"""Where the stream's results go besides Kafka: Redis (the read view) and Prometheus (the metrics)."""
