"""ingest-social: verified provider webhooks normalised onto ``support.inbound.v1``."""
