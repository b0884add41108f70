"""Inputs: the rows a job reads, from a file on disk or an object store, checked before any is sent.

- `sources`: `Source` opens an input and streams `InputRow`s (JSONL, Parquet, CSV/TSV, OpenAI Batch
  input files); `Builder` is what a request kind lends it to read a row;
- `scan`: the first pass, every row checked before anything is sent (`scan`, `Scan`);
- `formats`: which kind of file an input is, and what a row is (template data, chat, Batch line);
- `jsonl`, `csvinput`: reading a line and a CSV block;
- `scanning`, `problems`: the ids' rules and the kept columns; the problems found, told once;
- `idset`: a compact set of row ids (`IdSet`), 8 bytes an id.

Inputs know no request kind, no store and no transport: they hand rows on.
"""
