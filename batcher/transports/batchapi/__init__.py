"""The Batch API: a job's rows sent as the provider's batches, at half the price (docs/batch-api.md).

- `transport`: `BatchTransport`, the rounds of a run: plan, upload, create, poll, collect;
- `plan`: rows made into parts, each a batch's worth of one model's requests;
- `parts`: the journal of what became of each part (`PartsLog`, `PartState`);
- `provider`: the Files and Batches endpoints (`BatchProvider`);
- `collect`: what a finished batch's files say about each row (`Collector`);
- `cancel`: `batcher cancel DIR`.
"""
