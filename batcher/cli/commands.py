"""The `batcher` command: parse options, call the core, turn its errors into exit codes.

Exit codes: 0 every row ok; 1 finished with failed rows; 2 usage, config or
input error; 3 aborted (key refused, a write failed, rows failing alike, a
budget reached); 4 batches submitted with --no-wait, not yet collected; 130
interrupted. The commands on a run directory (status, report, cancel) live in runs.py,
`batcher simulate` in simulate.py.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys

import click

from batcher.cli.runs import cancel, report, status
from batcher.cli.simulate import simulate
from batcher.cli.views import fail, plan_text, tell_run_ended
from batcher.errors import EXIT_INTERRUPTED, BatcherError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="batcher", prog_name="batcher")
def main() -> None:
    """Send every row of a dataset (JSONL, CSV, Parquet, an OpenAI Batch input file) to an
    OpenAI-compatible API: Chat Completions or embeddings, one request a row online or at half the
    price through the provider's Batch API, under rate limits, with retries and resumable checkpoints.

    \b
    Try it offline on the embedded simulator:
      batcher run jobs/classify-reviews.toml --dry-run
      batcher run jobs/classify-reviews.toml
      batcher status runs/classify-reviews
      batcher report runs/classify-reviews
    """


@main.command()
@click.argument("source", required=False)  # a path, or a URI (s3://...): storage.location reads it
@click.option(
    "-o",
    "--output",
    help="Run directory for results, errors, summary and checkpoint: a path, or a URI (s3://...).",
)
@click.option("--prompt", help="Prompt template; {column} placeholders are filled from each row.")
@click.option("--system", help="System message sent before each prompt.")
@click.option(
    "--id-column", help="Column that names each row.  [default: id; a file with none: line/row numbers]"
)
@click.option("--keep-columns", help="Input columns copied into each result, comma-separated; '*': all.")
@click.option("--model", help="Model for rows that do not name one.")
@click.option("--max-tokens", type=int, help="max_tokens for rows that set none.")
@click.option("--temperature", type=float, help="temperature for rows that set none (0..2).")
@click.option("--top-p", type=float, help="top_p for rows that set none (0..1).")
@click.option(
    "--base-url",
    help="API base URL, e.g. https://api.openai.com/v1, or 'simulator'.  "
    "[default: $OPENAI_BASE_URL or OpenAI]",
)
@click.option("--api-key-env", help="Environment variable holding the API key.  [default: OPENAI_API_KEY]")
@click.option(
    "--header",
    multiple=True,
    metavar="'NAME: VALUE'",
    help="A header sent on every request (repeatable), e.g. 'api-key: env:AZURE_OPENAI_API_KEY'"
    " (env:VAR reads the variable). Never written or printed; a header holding the key replaces"
    " Authorization: Bearer.",
)
@click.option(
    "--query",
    multiple=True,
    metavar="NAME=VALUE",
    help="A query parameter on every request (repeatable), e.g. api-version=2024-10-21 (Azure).",
)
@click.option("--concurrency", type=int, help="Requests in flight at once.  [default: 16; embeddings: 4]")
@click.option("--rpm", type=float, help="Requests per minute to stay under.")
@click.option("--tpm", type=float, help="Tokens per minute to stay under (prompt + max_tokens).")
@click.option(
    "--max-retries",
    type=int,
    help="Retries per row for 5xx, timeouts, bad answers (429s use none).  [default: 8]",
)
@click.option("--timeout", type=float, help="Seconds per request.  [default: 600]")
@click.option(
    "--output-format",
    type=click.Choice(["jsonl", "parquet", "openai-batch"]),
    help="Format of results and errors.  [default: jsonl]",
)
@click.option(
    "--retry-failed/--no-retry-failed",
    default=None,
    help="On resume, send rows that failed before again.  [default: retry]",
)
@click.option(
    "--force", is_flag=True, default=None, help="Resume into a directory that holds a different job."
)
@click.option(
    "--drain-timeout", type=float, help="Seconds in-flight requests may finish after Ctrl-C.  [default: 30]"
)
@click.option(
    "--stop-after-identical-failures",
    type=int,
    help="Stop when this many rows in a row fail with the same error (0: never).  [default: 10]",
)
@click.option(
    "--endpoint",
    type=click.Choice(["chat", "embeddings"]),
    help="chat: /chat/completions; embeddings: /embeddings, rows packed many to a request, vectors out"
    " (docs/embeddings.md).  [default: chat]",
)
@click.option("--dimensions", type=int, help="embeddings: the vectors' dimensions (text-embedding-3 models).")
@click.option(
    "--encoding-format",
    type=click.Choice(["base64", "float"]),
    help="embeddings: how vectors travel (base64: a quarter of the bytes).  [default: base64]",
)
@click.option(
    "--inputs-per-request",
    type=int,
    help="embeddings: most rows packed into one request (e.g. 32 for a TEI server).  [default: 2048]",
)
@click.option(
    "--tokens-per-request", type=int, help="embeddings: most tokens in one request.  [default: 300000]"
)
@click.option("--tokens-per-input", type=int, help="embeddings: most tokens in one row.  [default: 8192]")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    help="local: this process sends; ray: workers on a Ray cluster, under one limit (docs/ray.md)."
    "  [default: local]",
)
@click.option("--ray-address", help="The Ray cluster to join.  [default: $RAY_ADDRESS, else a new local one]")
@click.option("--workers", type=int, help="Ray workers sending at once (--executor ray).  [default: 2]")
@click.option(
    "--commit-seconds",
    type=float,
    help="With --output in an object store: seconds between commits of new rows to it.  [default: 5]",
)
@click.option(
    "--mode",
    type=click.Choice(["online", "batch-api"]),
    help="online: a request a row; batch-api: the provider's Batch API, half the price, within 24 h"
    " (docs/batch-api.md).  [default: online]",
)
@click.option("--batch-size", type=int, help="Requests a batch holds, in batch-api mode.  [default: 50000]")
@click.option(
    "--poll-interval",
    type=float,
    help="Most seconds between looks at running batches (1 s at first, doubling).  [default: 60]",
)
@click.option(
    "--no-wait",
    is_flag=True,
    default=None,
    help="batch-api mode: submit the batches and exit 4; the same command later collects them.",
)
@click.option(
    "--deadline",
    metavar="WHEN",
    help="batch-api mode: have every row answered by WHEN (90s, 45m, 8h, or 2026-12-07T07:00+01:00); what"
    " the batches have not answered in time goes online (docs/batch-api.md, Deadlines).",
)
@click.option(
    "--patience",
    type=float,
    help="Seconds of nothing but 429s or an unreachable server before the run stops, resumably."
    "  [default: 300]",
)
@click.option(
    "--allow-insecure-http",
    is_flag=True,
    default=None,
    help="Send the key over plain http to a host other than this machine.",
)
@click.option(
    "--json-schema",
    type=click.Path(dir_okay=False, path_type=str),
    help="JSON Schema file each answer must meet; its properties become result columns.",
)
@click.option(
    "--labels", help="Comma-separated labels a classification answer must be one of (a 'label' column)."
)
@click.option(
    "--parse-retries", type=int, help="Times an answer that does not parse is asked again.  [default: 2]"
)
@click.option("--max-cost", type=float, help="Stop before spending more than this many USD (all sessions).")
@click.option("--max-total-tokens", type=int, help="Stop before using more tokens than this (all sessions).")
@click.option(
    "--price",
    help="USD per million input,output tokens for --model, over the built-in table, e.g. 0.15,0.60.",
)
@click.option(
    "--dedupe/--no-dedupe",
    default=None,
    help="Send identical requests of a run once and share the answer.  [default: dedupe]",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=str),
    help="Reuse answers across runs for identical requests at temperature 0, kept in this directory.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Send only the first N rows of the input (try a prompt on a few); the same job without it"
    " continues with the rest.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check the whole job, show the first requests, count rows and estimate tokens; send nothing.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (cron, overnight runs).")
@click.option("-v", "--verbose", is_flag=True, help="Log retries and failures to stderr.")
def run(source: str | None, dry_run: bool, quiet: bool, verbose: bool, **options: object) -> None:
    """Run a job: a TOML job file, or an input file with options.

    SOURCE is a job file (.toml), an input file (.jsonl, .parquet, .csv, .tsv,
    or an OpenAI Batch input file), or - for JSONL rows piped into standard
    input. Flags override the job file. Running the same command again into
    the same output directory resumes where it stopped.

    \b
    Examples:
      batcher run jobs/classify-reviews.toml
      batcher run reviews.jsonl -o runs/reviews --model gpt-4o-mini \\
          --prompt "Classify the sentiment of this review: {text}" --rpm 500
      batcher run batch_input.jsonl -o runs/batch --output-format openai-batch
      cat rows.jsonl | batcher run - -o runs/piped --model gpt-4o-mini --prompt "{text}"
    """
    from batcher.job import build_job
    from batcher.job.files import load_job_file
    from batcher.job.gateway import flags_over

    # A run allocates many short-lived objects a row, and the collector's default (a pass every
    # 700 allocations) cost 2.4% of the client's instructions a row (callgrind; benchmarks/README.md).
    # The command owns its process; the Python API leaves its caller's settings alone.
    gc.set_threshold(20_000, 10, 10)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True)
    try:
        settings: dict[str, object] = {}
        if source is not None and source.lower().endswith(".toml"):
            settings = load_job_file(source)
        elif source is not None:
            settings["input"] = str(source)
        price = options.pop("price")
        headers, query = options.pop("header"), options.pop("query")
        settings.update({k: v for k, v in options.items() if v is not None})
        flags_over(settings, headers, query)  # (over the job file's, name by name)
        if price is not None:
            settings["prices"] = {**settings.get("prices", {}), **_price_option(price, settings.get("model"))}
        job = build_job(settings)
        if dry_run:
            from batcher.cli.dryrun import plan

            click.echo(plan_text(plan(job)))
            return
        outcome = asyncio.run(_run(job, quiet))
    except BatcherError as e:
        fail(f"error: {e}", e.exit_code)
    except KeyboardInterrupt:  # before the run's own handlers were in place: nothing was sent
        fail("interrupted before sending anything", EXIT_INTERRUPTED)
    tell_run_ended(job, outcome, quiet)
    sys.exit(outcome.exit_code)


async def _run(job, quiet: bool):
    from batcher.progress import Watch
    from batcher.session import run_job

    watch = Watch(show=not quiet)
    try:
        return await run_job(job, on_progress=watch.on_progress, on_start=watch.on_start, handle_signals=True)
    finally:
        watch.close()


def _price_option(text: str, model: object) -> dict:
    from batcher.errors import ConfigError

    if not isinstance(model, str):
        raise ConfigError("--price needs --model (or `model` in the job file): it prices that model")
    try:
        prompt, completion = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--price takes input,output USD per million tokens, e.g. 0.15,0.60; got {text!r}"
        ) from None
    return {model: {"input": prompt, "output": completion}}


for command in (simulate, status, report, cancel):
    main.add_command(command)
