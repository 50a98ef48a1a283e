"""The Faust stream: the same core as the replay, run on Kafka, with Redis and Prometheus as views."""
