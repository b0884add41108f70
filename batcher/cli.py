"""The `batcher` command: parse options, call the core, turn its errors into exit codes.

Exit codes: 0 every row ok; 1 finished with failed rows; 2 usage, config or
input error; 3 aborted (key refused, a write failed, rows failing alike, a
budget reached); 4 batches submitted with --no-wait, not yet collected; 130
interrupted. `batcher simulate` lives in simulate.py.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import shlex
import sys
from pathlib import Path

import click

from .errors import EXIT_INTERRUPTED, EXIT_USAGE, BatcherError
from .simulate import simulate
from .words import plural, usd


def _fail(message: str, code: int) -> None:
    click.echo(f"batcher: {message}", err=True)
    sys.exit(code)


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
@click.option("--max-retries", type=int, help="Retries per row for 429, 5xx, timeouts.  [default: 8]")
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
    from .gateway import flags_over
    from .job import build_job, load_job_file

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
            from .dryrun import plan

            _print_plan(plan(job))
            return
        outcome = asyncio.run(_run(job, quiet))
    except BatcherError as e:
        _fail(f"error: {e}", e.exit_code)
    except KeyboardInterrupt:  # before the run's own handlers were in place: nothing was sent
        _fail("interrupted before sending anything", EXIT_INTERRUPTED)
    stats = outcome.stats
    if not quiet or outcome.exit_code:
        _report(job, outcome)
    if stats.cut:  # even when quiet: the most common silent failure
        click.echo(
            f"batcher: warning: {plural(stats.cut, 'answer was', 'answers were')} cut at max_tokens"
            " (finish_reason: length); raise --max-tokens if they should be whole",
            err=True,
        )
    if outcome.stopped_early:
        click.echo(f"resume with: {_resume_command()}", err=True)
    elif stats.remaining and job.limit is not None:
        click.echo(f"the rest: {_resume_command(without=('--limit',))}", err=True)
    elif stats.remaining:
        click.echo(f"resume with: {_resume_command()}", err=True)
    if (outcome.stopped_early or stats.remaining) and str(job.input) == "-":
        click.echo(
            f"  (the rows piped in are kept in {job.output}/.batcher/input.jsonl: pipe the same rows again,"
            " or name that file in place of -)",
            err=True,
        )
    sys.exit(outcome.exit_code)


async def _run(job, quiet: bool):
    from .progress import Watch
    from .session import run_job

    watch = Watch(show=not quiet)
    try:
        return await run_job(job, on_progress=watch.on_progress, on_start=watch.on_start, handle_signals=True)
    finally:
        watch.close()


def _price_option(text: str, model: object) -> dict:
    from .errors import ConfigError

    if not isinstance(model, str):
        raise ConfigError("--price needs --model (or `model` in the job file): it prices that model")
    try:
        prompt, completion = (float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--price takes input,output USD per million tokens, e.g. 0.15,0.60; got {text!r}"
        ) from None
    return {model: {"input": prompt, "output": completion}}


def _report(job, outcome) -> None:
    s = outcome.stats.summary(outcome.status)
    session = s["session"]
    click.echo(
        f"{outcome.status}: {s['rows_ok']:,} ok, {s['rows_failed']:,} failed,"
        f" {s['rows_remaining']:,} remaining of {plural(s['rows_total'], 'row')}"
        f" ({s['rows_skipped']:,} done before);"
        f" this session {plural(session['rows_done'], 'row')} in {session['wall_time_s']:.1f} s"
        f" ({session['rows_per_s'] or 0:.1f} rows/s), {_requests_text(session)},"
        f" {plural(session['retries'], 'retry', 'retries')}, {plural(session['rate_limited_429'], '429')},"
        f" {plural(s['total_tokens'], 'token')}, {_cost_text(s['cost_usd'], s['answers_unpriced'])} in all",
        err=True,
    )
    if outcome.message and outcome.status != "interrupted":
        click.echo(f"batcher: {outcome.message}", err=True)
    if outcome.note:
        click.echo(f"batcher: {outcome.note}", err=True)
    click.echo(f"output: {job.output}", err=True)


def _requests_text(session: dict) -> str:
    """The requests of a session: answered, and apart from them those that got no answer."""
    text = f"{plural(session['answers'], 'request')} answered"
    if session["connection_failures"]:
        text += (
            f" and {plural(session['connection_failures'], 'attempt')} with no answer"
            f" ({session['attempts'] - session['requests_sent']:,} could not connect)"
        )
    return text


def _print_plan(plan) -> None:
    from .jsoncodec import dumps

    job = plan.job
    where = "a new run directory" if plan.directory == "new" else "resumes its earlier sessions"
    lines = [
        "dry run: nothing was sent and nothing written.",
        f"input:    {job.input}: {plan.rows:,} rows ({plan.input_kind})",
        f"output:   {job.output}: {where}",
    ]
    if plan.directory != "new":
        retried = "sent again" if job.retry_failed else "left failed (--no-retry-failed)"
        lines.append(f"          {plan.done:,} rows done, {plan.failed:,} failed ({retried})")
    sent = f"{plan.requests:,} requests"
    if job.embeddings:
        sent = f"{plan.to_send:,} rows in about {plan.requests:,} requests"
    elif plan.estimate.repeats:
        sent += f" for {plan.to_send:,} rows ({plan.estimate.repeats:,} repeat a request: answered once)"
    lines.append(f"to send:  {sent} to {plan.where()}, model {job.model or '(per row)'}")
    lines += _gateway_lines(job)
    lines += plan.figures()
    lines += [f"note:     {note}" for note in plan.notes]
    if plan.samples:
        lines.append("first requests:")
        for where, body in plan.samples:
            text = dumps(body)
            lines.append(f"  {where}: {text if len(text) <= 600 else text[:600] + ' ...'}")
    click.echo("\n".join(lines))


def _gateway_lines(job) -> list[str]:
    """The headers and query parameters each endpoint sends: names only (a header's value may be a key)."""
    lines = []
    for config in job.endpoint_configs:
        at = f" ({config.name})" if len(job.endpoint_configs) > 1 else ""
        for label, pairs in (("headers:", config.headers), ("query:", config.query)):
            if pairs:
                lines.append(f"{label:<10}{', '.join(pairs.names)}{at}; values not shown")
    return lines


def _resume_command(without: tuple[str, ...] = ()) -> str:
    """The command line of this run again, but for the options named in `without` (and their values);
    --header values (and --query values that are credentials) shown as *** (gateway.shown_flag)."""
    from .gateway import HIDDEN, shown_flag

    args, kept = sys.argv[1:], []
    while args:
        arg = args.pop(0)
        name = arg.split("=", 1)[0]
        if name in without:
            if "=" not in arg and args:
                args.pop(0)
            continue
        if name in ("--header", "--query") and "=" in arg:
            arg = f"{name}={shown_flag(name, arg.split('=', 1)[1])}"
        elif name in ("--header", "--query") and args:
            kept.append(arg)
            arg = shown_flag(name, args.pop(0))
        kept.append(arg)
    hidden = any(HIDDEN in arg for arg in kept) and HIDDEN not in " ".join(sys.argv)
    return shlex.join(["batcher", *kept]) + ("  (with your values in place of ***)" if hidden else "")


@main.command()
@click.argument("directory")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def status(directory: str, as_json: bool) -> None:
    """Show a run directory's progress: rows, tokens, cost.

    Works on finished, interrupted and still-running directories and changes nothing.

    \b
    Example:
      batcher status runs/classify-reviews
    """
    from .checkpoint import inspect
    from .mirror import readable

    try:
        with readable(directory) as (path, held):
            info = inspect(path)
        if held is not None:  # a copy of a run directory in an object store
            info.update(directory=directory, running=held)
    except BatcherError as e:
        _fail(f"error: {e}", e.exit_code)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    state = "running" if info["running"] else "not running"
    click.echo(f"{info['directory']} ({state})")
    click.echo(f"  input:     {info['input']}")
    click.echo(f"  model:     {info['model']}")
    click.echo(
        f"  rows:      {info['rows_total']} total, {info['rows_ok']} done, "
        f"{info['rows_failed']} failed, {info['rows_remaining']} remaining"
    )
    click.echo(
        f"  tokens:    {info['prompt_tokens']} prompt + {info['completion_tokens']} completion "
        f"= {info['total_tokens']}"
    )
    click.echo(f"  cost:      {_cost_text(info['cost_usd'], info['answers_unpriced'])}")
    for batch in info["batches"]:
        click.echo(f"  part {batch['part']}:{' ' * max(1, 5 - len(str(batch['part'])))}{_batch_line(batch)}")


def _batch_line(batch: dict) -> str:
    text = f"{batch['state']}, {batch['requests']} requests"
    if batch["batch_id"]:
        text += f", {batch['batch_id']} {batch['status'] or ''}".rstrip()
    counts = batch["request_counts"]
    if counts:
        text += f" ({counts.get('completed', 0)} done, {counts.get('failed', 0)} failed)"
    return text


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--api-key-env",
    default="OPENAI_API_KEY",
    show_default=True,
    help="The environment variable holding the key the batches were made with.",
)
@click.option(
    "--header", "headers", multiple=True, help="'Name: value' sent on every call, as the run sent it."
)
@click.option(
    "--query", multiple=True, help="name=value added to every URL (Azure's api-version), as the run's."
)
def cancel(directory: Path, api_key_env: str, headers: tuple[str, ...], query: tuple[str, ...]) -> None:
    """Cancel a batch-api run's batches that are still running at the provider.

    What they answered before stopping is kept: run the same `batcher run`
    command again to collect it (it sends the rest again in new batches).
    A run made through a gateway needs its --header / --query here too.

    \b
    Example:
      batcher cancel runs/summaries
      batcher cancel runs/azure --query api-version=2024-10-21 --header 'api-key: env:AZURE_OPENAI_API_KEY'
    """
    from .batchapi.cancel import cancel_batches
    from .gateway import Gateway, merged, openai_headers, parse_headers, parse_query

    try:
        api_key = os.environ.get(api_key_env)
        sent = merged(openai_headers(os.environ), parse_headers(headers, "--header"))
        gateway = Gateway.of(api_key, sent, parse_query(query, "--query"))
        cancelled = asyncio.run(cancel_batches(directory, api_key, gateway=gateway))
    except BatcherError as e:
        _fail(f"error: {e}", e.exit_code)
    if not cancelled:
        click.echo(f"{directory}: no batch is running")
    for part, batch in cancelled:
        click.echo(f"part {part.number}: {batch}")


@main.command()
@click.argument("directory")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the page.  [default: DIRECTORY/report.html]",
)
def report(directory: str, output: Path | None) -> None:
    """Write an HTML page of a run (figures, charts, errors).

    One self-contained file: requests and tokens per minute against the limits
    over time, 429s and retries, latency, errors by type with examples, cost.

    Works on finished, failed and still-running directories, and changes nothing
    but the page it writes. It opens in any browser, offline.

    \b
    Example:
      batcher report runs/classify-reviews
    """
    from .mirror import readable
    from .report import write
    from .storage import RemoteDirectory

    try:
        with readable(directory) as (path, held):
            page = write(path, output)
            if held is not None and output is None:  # beside the outputs in the object store
                RemoteDirectory(directory).put_file("report.html", page)
                page = f"{directory.rstrip('/')}/report.html"
    except BatcherError as e:
        _fail(f"error: {e}", e.exit_code)
    except OSError as e:
        _fail(f"error: cannot write the report: {e.strerror or e}", EXIT_USAGE)
    click.echo(str(page))


def _cost_text(cost: float, unpriced: int) -> str:
    text = usd(cost)
    if unpriced:
        text += (
            f" (and {plural(unpriced, 'answer')} of a model with no price: set prices in the job file"
            " or --price)"
        )
    return text


main.add_command(simulate)
