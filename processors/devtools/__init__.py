"""Development tooling: the local-server manager (`mrr-stream servers`) and the demo (`mrr-stream demo`).

They come with a checkout's editable install (`make install`), never with a wheel or the image
(pyproject.toml excludes this package): production runs its own Kafka, Redis and Prometheus."""
