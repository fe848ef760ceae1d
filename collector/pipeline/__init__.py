"""From a received body to committed spans: admission, decoding (in worker processes or a
thread), the hand-off and the wait (``ingest.IngestPipeline.export``), and the group-commit
writer that batches many requests into one commit (``writer``)."""
