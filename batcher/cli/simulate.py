"""`batcher simulate`: the embedded OpenAI-compatible server, served on its own for tries and tests.

Kept apart from commands.py for its many knobs (the simulator's settings, SimulatorConfig);
the server itself is imported only when the command runs, so `batcher --help` stays quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

import click

from batcher.errors import EXIT_ABORTED, EXIT_USAGE, BatcherError


def _fail(message: str, code: int) -> None:
    click.echo(f"batcher: {message}", err=True)
    sys.exit(code)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=4141, show_default=True, type=int, help="Port (0 picks a free one).")
@click.option("--rpm", type=float, help="Requests per minute before 429s.")
@click.option("--tpm", type=float, help="Tokens per minute before 429s.")
@click.option(
    "--rate-limit-headers",
    type=click.Choice(["all", "remaining", "none"]),
    default="all",
    show_default=True,
    help="x-ratelimit-* headers sent: all (OpenAI), remaining (Azure), none (many gateways).",
)
@click.option(
    "--retry-after-ms", type=float, help="retry-after-ms of every 429 (default: until it has room)."
)
@click.option("--latency-ms", type=float, default=0.0, show_default=True, help="Mean answer latency.")
@click.option("--error-rate", type=float, default=0.0, show_default=True, help="Fraction answered 500.")
@click.option(
    "--drop-rate", type=float, default=0.0, show_default=True, help="Fraction of connections dropped."
)
@click.option(
    "--garbage-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction answered 200 with a broken body.",
)
@click.option("--error-status", type=int, default=500, show_default=True, help="Status of injected errors.")
@click.option(
    "--html-rate", type=float, default=0.0, show_default=True, help="Fraction answered 502 in HTML."
)
@click.option(
    "--slow-rate", type=float, default=0.0, show_default=True, help="Fraction answered after --slow-ms."
)
@click.option("--slow-ms", type=float, default=5000.0, show_default=True, help="Latency of slow answers.")
@click.option("--hang-rate", type=float, default=0.0, show_default=True, help="Fraction never answered.")
@click.option("--huge-rate", type=float, default=0.0, show_default=True, help="Fraction answered with 64 MB.")
@click.option(
    "--invalid-answer-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction answered with text that ignores the response_format asked for.",
)
@click.option(
    "--storm-every", type=float, default=0.0, show_default=True, help="Seconds between 429 storms (0: none)."
)
@click.option("--storm-seconds", type=float, default=1.0, show_default=True, help="Length of a 429 storm.")
@click.option("--fail-auth-after", type=int, help="Answer 401 to every request after this many.")
@click.option("--models", help="Comma-separated model names served (default: any).")
@click.option("--require-key-env", help="Accept only the key held in this environment variable.")
@click.option("--reject-marker", help="Answer 400 to prompts containing this text.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fault generator.")
@click.option(
    "--batch-validating-seconds",
    type=float,
    default=0.2,
    show_default=True,
    help="Seconds a Batch API batch spends validating.",
)
@click.option(
    "--batch-requests-per-second",
    type=float,
    default=200.0,
    show_default=True,
    help="Requests a batch answers per second.",
)
@click.option(
    "--batch-finalizing-seconds",
    type=float,
    default=0.1,
    show_default=True,
    help="Seconds a batch spends finalizing or cancelling.",
)
@click.option(
    "--batch-list-lag-seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds before a new batch shows in the list of batches.",
)
@click.option(
    "--batch-cancelling-seconds",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds a batch goes on answering once asked to cancel.",
)
@click.option("--batch-expire-after", type=int, help="A batch expires after answering this many requests.")
@click.option(
    "--batch-expire-fraction", type=float, help="A batch expires after this fraction of its requests."
)
@click.option("--batch-expiring-batches", type=int, help="Only the first N batches created expire.")
@click.option(
    "--batch-line-error-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of batch requests answered --error-status.",
)
@click.option(
    "--batch-create-error-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of batch creations refused with 500.",
)
@click.option(
    "--batch-create-lost-rate",
    type=float,
    default=0.0,
    show_default=True,
    help="Fraction of batch creations made, then answered 500.",
)
@click.option("--batch-token-limit", type=int, help="Enqueued-token limit: a batch over it fails validation.")
@click.option(
    "--batch-create-delay-ms",
    type=float,
    default=0.0,
    show_default=True,
    help="Milliseconds a batch creation is answered after the batch is made.",
)
@click.option(
    "--embedding-dimensions",
    type=int,
    default=1536,
    show_default=True,
    help="Vector size of embedding models other than OpenAI's.",
)
@click.option(
    "--embedding-max-inputs", type=int, default=2048, show_default=True, help="Inputs per embeddings request."
)
@click.option(
    "--embedding-max-input-tokens",
    type=int,
    default=8192,
    show_default=True,
    help="Tokens per embeddings input.",
)
@click.option(
    "--embedding-max-request-tokens",
    type=int,
    default=300_000,
    show_default=True,
    help="Tokens per embeddings request.",
)
def simulate(host: str, port: int, models: str | None, require_key_env: str | None, **options) -> None:
    """Serve OpenAI-compatible Chat Completions, Embeddings, Files and Batches for offline tries and tests.

    \b
    Example:
      batcher simulate --port 4141 --rpm 600 --latency-ms 200 --error-rate 0.05
      batcher simulate --batch-expire-fraction 0.5 --batch-token-limit 2000000
      batcher simulate --embedding-max-inputs 32 --embedding-max-input-tokens 512   # like a TEI server
      OPENAI_BASE_URL=http://127.0.0.1:4141/v1 OPENAI_API_KEY=sk-any batcher run ...
    """
    from batcher.simulator import serve
    from batcher.simulator.config import SimulatorConfig

    api_key = None
    if require_key_env:
        api_key = os.environ.get(require_key_env)
        if not api_key:
            _fail(f"error: ${require_key_env} is not set", EXIT_USAGE)
    try:
        config = SimulatorConfig(
            models=tuple(m.strip() for m in (models or "").split(",") if m.strip()),
            api_key=api_key,
            **options,
        )
    except BatcherError as e:
        _fail(f"error: {e}", e.exit_code)

    def ready(base_url: str) -> None:
        click.echo(f"simulator listening on {base_url}", err=True)
        sys.stderr.flush()

    async def serve_until_stopped() -> None:
        # SIGTERM (a service manager, `kill`) and Ctrl-C both end the server cleanly, exit 0, as servers do.
        main_task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, main_task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(config, host, port, ready)

    try:
        asyncio.run(serve_until_stopped())
    except KeyboardInterrupt:
        pass
    except OSError as e:
        _fail(f"error: cannot listen on {host}:{port}: {e.strerror or e}", EXIT_ABORTED)
