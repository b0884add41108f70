"""The command line: parse, call the core, say what happened, map errors to exit codes.

- `commands`: the click group (`main`, which gathers every command) and `batcher run`;
- `runs`: the commands on a run directory: `batcher status`, `batcher report`, `batcher cancel`;
- `dryrun`, `estimates`: `batcher run --dry-run`, what a run would send and cost (`dry_run`, `Tally`);
- `views`: what a command prints (a run's end, a plan, a status);
- `simulate`: `batcher simulate`, the embedded simulator served on a port.

Nothing below this package imports click; tqdm is imported only by the progress bar
(batcher/progress.py), which the Python API shows too.
"""
