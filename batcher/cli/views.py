"""What the commands print: the line that ends a run, its warnings and the command that resumes it,
the dry run's plan, a run directory's status. Figures are said through words.py; a header's value
is never shown (job/gateway.py), only its name.
"""

from __future__ import annotations

import shlex
import sys

import click

from batcher.words import clock, plural, usd


def fail(message: str, code: int) -> None:
    """Say `message` on stderr and exit with `code` (errors.py has the codes)."""
    click.echo(f"batcher: {message}", err=True)
    sys.exit(code)


def tell_run_ended(job, outcome, quiet: bool) -> None:
    """What `batcher run` says when a session ends: the figures (unless quiet and all went well),
    answers cut at max_tokens (even when quiet: the most common silent failure), and how to go on."""
    stats = outcome.stats
    if not quiet or outcome.exit_code:
        _report(job, outcome)
        if (bill := stats.deadline_bill) is not None:
            click.echo(f"deadline {bill['deadline']}: {bill_text(bill)}", err=True)
    if stats.cut:
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


def plan_text(plan) -> str:
    """`batcher run --dry-run`: what the run would do."""
    from batcher.jsoncodec import dumps

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
    return "\n".join(lines)


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
    from batcher.job.gateway import HIDDEN, shown_flag

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


def status_text(info: dict) -> str:
    """`batcher status`: a run directory's figures, a line each."""
    lines = []
    state = "running" if info["running"] else "not running"
    lines.append(f"{info['directory']} ({state})")
    lines.append(f"  input:     {info['input']}")
    lines.append(f"  model:     {info['model']}")
    lines.append(
        f"  rows:      {info['rows_total']} total, {info['rows_ok']} done, "
        f"{info['rows_failed']} failed, {info['rows_remaining']} remaining"
    )
    lines.append(
        f"  tokens:    {info['prompt_tokens']} prompt + {info['completion_tokens']} completion "
        f"= {info['total_tokens']}"
    )
    lines.append(f"  cost:      {_cost_text(info['cost_usd'], info['answers_unpriced'])}")
    if info.get("deadline"):
        lines.extend(_deadline_lines(info["deadline"]))
    for batch in info["batches"]:
        lines.append(
            f"  part {batch['part']}:{' ' * max(1, 5 - len(str(batch['part'])))}{_batch_line(batch)}"
        )
    return "\n".join(lines)


def _deadline_lines(deadline: dict) -> list[str]:
    """A deadline run: when, the estimate of when its rows go online (or when they went), the bill."""
    lines = [f"  deadline:  {deadline['text']} ({clock(deadline['at'], date=True)})"]
    estimate = deadline.get("estimate") or {}
    if deadline.get("online_since"):
        went = clock(deadline["online_since"])
        lines.append(f"  online:    since {went}: the batches cancelled, the rows left sent online")
    elif estimate.get("go_online_at"):
        when = clock(estimate["go_online_at"])
        assumed = ", the online rate assumed: give --rpm" if estimate.get("rate_assumed") else ""
        lines.append(
            f"  online at: {when} at the latest (about {estimate['online_seconds']:.0f} s online and a "
            f"margin of {estimate['margin_seconds']:.0f} s{assumed})"
        )
    bill = deadline.get("bill")
    if bill:
        lines.append(f"  bill:      {bill_text(bill)}")
    return lines


def bill_text(bill: dict) -> str:
    """A deadline run's bill in a line: met or not, rows and USD by way, the saving, paid twice."""
    return (
        f"{'met' if bill['met'] else 'NOT met'}; {bill['rows_batch']} rows by batch "
        f"{usd(bill['cost_batch_usd'])}, {bill['rows_online']} online {usd(bill['cost_online_usd'])}; "
        f"saved {usd(bill['saving_usd'])} against all online; {bill['rows_paid_twice']} paid twice"
    )


def _batch_line(batch: dict) -> str:
    text = f"{batch['state']}, {batch['requests']} requests"
    if batch["batch_id"]:
        text += f", {batch['batch_id']} {batch['status'] or ''}".rstrip()
    counts = batch["request_counts"]
    if counts:
        text += f" ({counts.get('completed', 0)} done, {counts.get('failed', 0)} failed)"
    return text


def _cost_text(cost: float, unpriced: int) -> str:
    text = usd(cost)
    if unpriced:
        text += (
            f" (and {plural(unpriced, 'answer')} of a model with no price: set prices in the job file"
            " or --price)"
        )
    return text
