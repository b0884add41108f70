"""The Batch API mode: a job's rows sent as the provider's batches (docs/batch-api.md)."""
