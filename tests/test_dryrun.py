"""`run --dry-run`: the whole job checked, the first requests shown, rows and tokens counted, nothing sent."""

from __future__ import annotations

import json
import re

from tests.helpers import prompt_for, read_jsonl, review_rows, run_args, write_jsonl


def snapshot(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_dry_run_sends_nothing_writes_nothing_and_shows_what_would_go(cli, simulator, tmp_path, run_dir):
    rows = review_rows(12)
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    result = cli(*run_args(path, run_dir, simulator.base_url, "--max-tokens", "5", "--dry-run"))

    assert result.exit_code == 0, result.output
    assert simulator.requests == 0
    assert not run_dir.exists()
    assert "12 rows" in result.output and "a new run directory" in result.output
    assert "to send:  12 requests" in result.output
    first = json.loads(result.output.split("line 1: ", 1)[1].splitlines()[0])
    assert first == {
        "messages": [{"role": "user", "content": prompt_for(rows[0])}],
        "model": "m",
        "max_tokens": 5,
    }
    assert "line 3: " in result.output and "line 4: " not in result.output
    # Prompts at 4.4 characters a token, with OpenAI's 3 tokens a request and 4 a message; completions
    # expected at all of a max_tokens of 16 or less.
    prompt_tokens = round(sum(len(prompt_for(r)) + 13 + 18 for r in rows) / 4.4)
    assert f"about {prompt_tokens:,} prompt + 60 completion expected" in result.output
    assert f"at most {prompt_tokens + 60:,} (completions at max_tokens)" in result.output


def test_a_dry_run_on_a_stopped_run_counts_only_what_is_left(cli, simulator, tmp_path, run_dir):
    rows = review_rows(20)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    args = run_args(path, run_dir, simulator.base_url, "--max-tokens", "5")
    assert cli(*args).exit_code == 0
    results = run_dir / "results.jsonl"
    kept = read_jsonl(results)[:15]
    results.write_text("".join(json.dumps(r) + "\n" for r in kept))
    before = snapshot(run_dir)

    result = cli(*args, "--dry-run")

    assert result.exit_code == 0, result.output
    assert simulator.requests == 20
    assert snapshot(run_dir) == before
    assert "resumes its earlier sessions" in result.output and "15 rows done, 0 failed" in result.output
    assert "to send:  5 requests" in result.output
    # Estimated from the 15 answers on disk: one-word answers, so 5 completion tokens expected.
    assert "estimate: from the 15 answers of earlier sessions" in result.output
    prompt = int(result.output.split("about ")[1].split(" prompt")[0])
    assert f"+ 5 completion expected = {prompt + 5}; at most {prompt + 25} (" in result.output
    first_left = min(
        r["row_number"] for r in review_rows_numbered(20) if r["id"] not in {k["id"] for k in kept}
    )
    assert f"line {first_left}: " in result.output


def review_rows_numbered(n):
    return [{**row, "row_number": i + 1} for i, row in enumerate(review_rows(n))]


def test_a_dry_run_fails_where_the_run_would_before_sending(cli, simulator, tmp_path, run_dir):
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')

    bad_input = cli(*run_args(path, run_dir, simulator.base_url, "--dry-run"))

    assert bad_input.exit_code == 2
    assert str(path) in bad_input.output and "line 2 has no column 'text'" in bad_input.output

    good = write_jsonl(tmp_path / "good.jsonl", review_rows(3))
    assert cli(*run_args(good, run_dir, simulator.base_url)).exit_code == 0
    other_job = cli(*run_args(good, run_dir, simulator.base_url, "--dry-run", model="other"))

    assert other_job.exit_code == 2 and "different job" in other_job.output

    a_file = tmp_path / "taken"
    a_file.write_text("")
    not_a_dir = cli(*run_args(good, a_file / "run", simulator.base_url, "--dry-run"))

    assert not_a_dir.exit_code == 2 and "not a directory" in not_a_dir.output
    assert simulator.requests == 3
    assert "Traceback" not in bad_input.output + other_job.output + not_a_dir.output


def test_a_dry_run_counts_guessed_completions_where_rows_set_no_max_tokens(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(4))

    result = cli(*run_args(path, run_dir, simulator.base_url, "--dry-run"))

    assert result.exit_code == 0, result.output
    assert "4 requests set no max_tokens: 256 each at most" in result.output
    figures = re.search(r"(\d+) completion expected = [\d,]+; at most ([\d,]+)", result.output)
    expected, at_most = figures.groups()
    prompt = int(result.output.split("about ")[1].split(" prompt")[0])
    assert int(expected) == 4 * round(256 / 3) and int(at_most.replace(",", "")) == prompt + 1024
