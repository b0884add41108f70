"""Outputs: what a run leaves for its user, made from the journal's records.

- `sinks`: the output files (`open_sink`: results.jsonl and errors.jsonl, Parquet, an OpenAI Batch
  output file, vectors as Parquet);
- `stats`: a run's counters and latency percentiles (`RunStats`), and summary.json;
- `timeline`: per-interval counters of every session (`Timeline`), for the report;
- `report`, `charts`: `batcher report`'s self-contained HTML page and its SVG charts.

See docs/outputs.md for every column and file.
"""
