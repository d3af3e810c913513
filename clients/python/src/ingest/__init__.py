"""ingest: the ingest.v1 API (see ingest.v1)."""
