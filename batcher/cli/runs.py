"""The commands on a run directory: `batcher status`, `batcher report`, `batcher cancel`.

Each reads a run directory (local, or in an object store) without changing it, but for the page
`report` writes and the batches `cancel` stops at the provider.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import click

from batcher.cli.views import fail, status_text
from batcher.errors import EXIT_USAGE, BatcherError


@click.command()
@click.argument("directory")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def status(directory: str, as_json: bool) -> None:
    """Show a run directory's progress: rows, tokens, cost.

    Works on finished, interrupted and still-running directories and changes nothing.

    \b
    Example:
      batcher status runs/classify-reviews
    """
    from batcher.store.figures import inspect
    from batcher.store.mirror import readable
    from batcher.transports.batchapi.deadline import deadline_of
    from batcher.transports.batchapi.parts import batches_of

    try:
        with readable(directory) as (path, held):
            info = inspect(path)
            info["batches"] = batches_of(path)
            info["deadline"] = deadline_of(path)
        if held is not None:  # a copy of a run directory in an object store
            info.update(directory=directory, running=held)
    except BatcherError as e:
        fail(f"error: {e}", e.exit_code)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(status_text(info))


@click.command()
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
    from batcher.job.gateway import Gateway, merged, openai_headers, parse_headers, parse_query
    from batcher.transports.batchapi.cancel import cancel_batches

    try:
        api_key = os.environ.get(api_key_env)
        sent = merged(openai_headers(os.environ), parse_headers(headers, "--header"))
        gateway = Gateway.of(api_key, sent, parse_query(query, "--query"))
        cancelled = asyncio.run(cancel_batches(directory, api_key, gateway=gateway))
    except BatcherError as e:
        fail(f"error: {e}", e.exit_code)
    if not cancelled:
        click.echo(f"{directory}: no batch is running")
    for part, batch in cancelled:
        click.echo(f"part {part.number}: {batch}")


@click.command()
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
    from batcher.outputs.report import write
    from batcher.storage import RemoteDirectory
    from batcher.store.mirror import readable

    try:
        with readable(directory) as (path, held):
            page = write(path, output)
            if held is not None and output is None:  # beside the outputs in the object store
                RemoteDirectory(directory).put_file("report.html", page)
                page = f"{directory.rstrip('/')}/report.html"
    except BatcherError as e:
        fail(f"error: {e}", e.exit_code)
    except OSError as e:
        fail(f"error: cannot write the report: {e.strerror or e}", EXIT_USAGE)
    click.echo(str(page))
