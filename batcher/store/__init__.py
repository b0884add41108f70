"""The store: what is done, durably, in a run directory (on disk, or mirrored to an object store).

- `checkpoint`: the run directory (`Checkpoint`: journal, lock, what is done); `figures` reads a
  run's figures without touching it (`inspect`, `read_progress`); `jobrecord`: the job a run
  directory holds (`job.json`), so that a resume of another is refused;
- `parts`: journal parts, the rows other processes (a Ray run's workers) finished, taken into the
  journal when the run directory is opened; `locks`: a directory held by a living process;
- `progress`: what a run directory holds done (`DoneRows`, by position or by id) and spent
  (`Progress`);
- `journal`: append-only JSONL that survives a kill, read back with repair (`Journal`);
- `vectors`: embeddings' float32 vectors beside the journal (`VectorFile`);
- `mirror`: a run directory committed to an object store in parts (`Mirror`);
- `stdin`: rows piped into `-`, kept in the run directory so that a resume finds them.

Everything that must survive a crash is written here and nowhere else. See docs/checkpoints.md.
"""
