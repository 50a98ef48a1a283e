"""The pure MRR engine. It imports nothing of Kafka, Redis, Prometheus, files or the clock.

event + account state -> new account state + movements   (account.apply)
movements -> monthly totals -> monthly aggregates           (aggregates)
"""
