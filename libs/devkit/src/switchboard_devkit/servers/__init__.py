"""Real Kafka, FerretDB and Prometheus on 127.0.0.1, or Docker's, or the environment's."""
