"""What a run checks before it sends, the dry run as the real run: the extras installed, the keys set,
a budget that can be kept, problems counted as problems, and an estimate worth reading.

Each runs `batcher` as a process of its own, as a user would, against the embedded simulator.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from batcher.inputs.problems import Problems
from tests.helpers import read_jsonl, review_rows, run_args, run_subprocess, subprocess_env, write_jsonl

#: `batcher` in a Python that cannot import some modules, as if they were not installed: a module
#: set to None in sys.modules is what the import system itself treats as not importable.
WITHOUT = (
    "import sys\n"
    "for name in sys.argv.pop(1).split(','):\n"
    "    sys.modules[name] = None\n"
    "from batcher.cli.commands import main\n"
    "main(prog_name='batcher')\n"
)
#: A server that is not this machine (never reached: the runs are refused before sending).
ELSEWHERE = "https://batcher-test.invalid/v1"


def run_without(modules: str, *args, **env) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", WITHOUT, modules, *[str(a) for a in args]]
    return subprocess.run(command, env=subprocess_env(**env), capture_output=True, text=True, timeout=60)


def refused(result: subprocess.CompletedProcess) -> str:
    """The one line a refused run printed (exit 2, no traceback)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def planned_tokens(output: str) -> tuple[int, int]:
    """(expected, at most) tokens of a dry run's output."""
    found = re.search(
        r"tokens:   about [\d,]+ prompt \+ [\d,]+ completion expected = ([\d,]+); at most ([\d,]+)", output
    )
    assert found, output
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


# -- item 1: a missing extra -------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_executor_ray_without_ray_installed_exits_2_naming_the_extra_and_writes_nothing(
    tmp_path, run_dir, dry_run
):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(5))
    args = run_args(path, run_dir, "simulator", "--executor", "ray", *(["--dry-run"] if dry_run else []))

    line = refused(run_without("ray", *args))

    assert "--executor ray needs Ray (no module ray)" in line
    assert "pip install 'batcher[ray]'" in line
    assert not run_dir.exists()
    assert os.listdir(tmp_path) == ["in.jsonl"]  # nor a lock, a spool or a .batcher beside it


def test_an_object_store_input_without_its_pyarrow_filesystem_exits_2_before_reaching_it(tmp_path, run_dir):
    line = refused(
        run_without("pyarrow._gcsfs", *run_args("gs://bucket/in.jsonl", run_dir, "simulator", "--dry-run"))
    )

    assert "input gs://bucket/in.jsonl needs pyarrow's Google Cloud Storage filesystem" in line
    assert "no module pyarrow._gcsfs" in line and "pip install" in line
    assert not run_dir.exists()


# -- item 6: the key, the model, the problems --------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_missing_key_for_a_server_elsewhere_exits_2_naming_the_variable(tmp_path, run_dir, dry_run):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    args = run_args(path, run_dir, ELSEWHERE, *(["--dry-run"] if dry_run else []))

    line = refused(run_subprocess(*args, OPENAI_API_KEY=""))

    assert "no API key: $OPENAI_API_KEY is not set" in line and ELSEWHERE in line
    assert "--api-key-env" in line
    assert not run_dir.exists()


def test_a_server_on_this_machine_is_sent_to_without_a_key_and_the_dry_run_says_so(
    simulator, tmp_path, run_dir
):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    args = run_args(path, run_dir, simulator.base_url)

    plan = run_subprocess(*args, "--dry-run", OPENAI_API_KEY="")
    run = run_subprocess(*args, OPENAI_API_KEY="")

    assert plan.returncode == 0, plan.stderr
    assert "note:     no key set ($OPENAI_API_KEY): fine for a server that needs none" in plan.stdout
    # Not refused before sending: the server itself decides (this one wants a key, as vLLM can).
    assert simulator.requests >= 1
    assert run.returncode == 3 and "refused the key" in run.stderr


def test_each_endpoint_needs_its_own_key_and_the_message_names_its_variable(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    job = tmp_path / "job.toml"
    job.write_text(
        'input = "in.jsonl"\noutput = "run"\nmodel = "m"\nprompt = "{text}"\n'
        '[[endpoints]]\nname = "local"\nbase_url = "simulator"\n'
        f'[[endpoints]]\nname = "gateway"\nbase_url = "{ELSEWHERE}"\napi_key_env = "GATEWAY_TEST_KEY"\n'
    )

    line = refused(run_subprocess("run", job, "--dry-run", OPENAI_API_KEY="", GATEWAY_TEST_KEY=""))

    assert "$GATEWAY_TEST_KEY for endpoint 'gateway' is not set" in line
    assert "OPENAI_API_KEY" not in line  # (the simulator needs none)
    assert not (tmp_path / "run").exists()


def test_a_header_carrying_the_credential_stands_in_for_the_key(tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    args = run_args(path, run_dir, ELSEWHERE, "--header", "api-key: env:AZURE_TEST_KEY", "--dry-run")

    plan = run_subprocess(*args, OPENAI_API_KEY="", AZURE_TEST_KEY="azure-secret-value-0123")

    assert plan.returncode == 0, plan.stderr
    assert "azure-secret-value-0123" not in plan.stdout + plan.stderr


@pytest.mark.parametrize("host", ["http://10.255.255.1:8000/v1", "http://0.0.0.0:8000/v1"])
def test_a_plain_http_server_elsewhere_or_on_every_interface_runs_without_a_key(tmp_path, run_dir, host):
    # (vLLM on the LAN or in a compose service; 0.0.0.0 is what a server prints when it listens on all)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))

    plan = run_subprocess(*run_args(path, run_dir, host, "--dry-run"), OPENAI_API_KEY="")

    assert plan.returncode == 0, plan.stderr
    assert "no key set ($OPENAI_API_KEY): fine for a server that needs none" in plan.stdout


def test_a_header_carrying_a_credential_is_not_sent_in_clear_to_another_machine(tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    args = run_args(path, run_dir, "http://gateway.invalid:8080/v1", "--header", "x-api-key: env:GW_TEST_KEY")

    line = refused(run_subprocess(*args, "--dry-run", OPENAI_API_KEY="", GW_TEST_KEY="gw-secret-0123456789"))

    assert "plain http to another machine" in line and "--allow-insecure-http" in line
    assert "gw-secret-0123456789" not in line


def test_a_short_dummy_key_is_no_part_of_a_header_value(tmp_path):
    from batcher.job.gateway import Gateway, Pairs

    write_jsonl(tmp_path / "in.jsonl", review_rows(2))
    job = tmp_path / "job.toml"
    job.write_text(
        'input = "in.jsonl"\noutput = "run"\nmodel = "m"\nprompt = "{text}"\nbase_url = "http://127.0.0.1:9/v1"\n'
        'headers = { "HTTP-Referer" = "https://example.com" }\n'
    )

    plan = run_subprocess("run", job, "--dry-run", OPENAI_API_KEY="x")  # ("x", "EMPTY": vLLM's dummy keys)

    assert plan.returncode == 0, plan.stderr
    sent = Gateway.of("x", Pairs([("HTTP-Referer", "https://example.com")])).headers
    assert sent["Authorization"] == "Bearer x"


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_a_prompt_without_a_model_is_one_job_level_problem(tmp_path, run_dir, dry_run):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(21))
    args = run_args(path, run_dir, "simulator", *(["--dry-run"] if dry_run else []), model=None)

    line = refused(run_subprocess(*args))

    assert line == (
        "batcher: error: no model: set --model or `model` in the job file (rows filled into a prompt do not"
        " name one)"
    )
    assert not run_dir.exists()


def test_rows_failing_alike_are_one_problem_naming_their_lines(tmp_path, run_dir):
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"hi {i}"}]} for i in range(500)]
    rows[7]["model"] = "m"
    path = write_jsonl(tmp_path / "requests.jsonl", rows)

    plan = run_subprocess("run", path, "-o", run_dir, "--base-url", "simulator", "--dry-run")

    assert plan.returncode == 2, plan.stderr
    assert f"{path} has 1 problem in 499 lines; nothing was sent:" in plan.stderr
    assert "  lines 1-7, 9-21 and 479 more: have no model: set --model" in plan.stderr
    assert len(plan.stderr.strip().splitlines()) == 2


def test_problems_keep_file_order_and_tell_a_lone_row_as_before():
    problems = Problems()
    problems.add(1, "line 1 has no column 'text' for the prompt's {text}")
    problems.add(2, "line 2 is not valid JSON")
    for number in range(3, 30):
        problems.add(number, f"line {number} has no column 'text' for the prompt's {{text}}")

    assert len(problems) == 2
    assert problems.lines() == [
        "lines 1, 3-21 and 8 more: have no column 'text' for the prompt's {text}",
        "line 2 is not valid JSON",
    ]


@pytest.mark.skipif(os.access("/proc/sys", os.W_OK), reason="needs a directory this user cannot write")
def test_an_output_directory_that_cannot_be_written_is_refused_by_the_dry_run_and_the_run(tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2))
    for extra in (["--dry-run"], []):
        line = refused(run_subprocess(*run_args(path, "/proc/sys/batcher-run", "simulator", *extra)))
        assert "/proc/sys/batcher-run cannot be used as the output directory" in line


# -- item 10: a budget that cannot be kept -----------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_max_cost_for_a_model_with_no_price_exits_2_naming_price(simulator, tmp_path, run_dir, dry_run):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    args = run_args(path, run_dir, simulator.base_url, "--max-cost", "0.01", model="my-finetune")

    line = refused(run_subprocess(*args, *(["--dry-run"] if dry_run else [])))
    priced = run_subprocess(*args, "--price", "0.15,0.60", *(["--dry-run"] if dry_run else []))

    assert "--max-cost cannot be kept: model 'my-finetune' (--model) has no known price" in line
    assert "--price" in line and "[prices]" in line
    assert priced.returncode == 0, priced.stderr
    assert simulator.requests == (0 if dry_run else 3)


def test_max_cost_with_rows_naming_a_model_with_no_price_is_refused_at_the_scan(simulator, tmp_path, run_dir):
    rows = [
        {"id": f"r{i}", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        for i in range(4)
    ]
    rows[2]["model"] = "their-own-model"
    path = write_jsonl(tmp_path / "requests.jsonl", rows)
    args = ["run", path, "-o", run_dir, "--base-url", simulator.base_url, "--max-cost", "1"]

    run = run_subprocess(*args)
    unbudgeted = run_subprocess(*args[:-2], "--dry-run")

    assert run.returncode == 2 and simulator.requests == 0
    assert "line 3 names model 'their-own-model', which has no known price" in run.stderr
    assert "[prices]" in run.stderr and not run_dir.exists()
    assert unbudgeted.returncode == 0, unbudgeted.stderr
    assert "1 request of a model with no price (their-own-model)" in unbudgeted.stdout


def test_max_cost_added_on_resume_over_rows_naming_an_unpriced_model_is_refused_not_a_crash(
    simulator, tmp_path, run_dir
):
    rows = [
        {"id": f"r{i}", "model": "my-unpriced", "messages": [{"role": "user", "content": f"hi {i}"}]}
        for i in range(6)
    ]
    path = write_jsonl(tmp_path / "requests.jsonl", rows)
    args = ["run", path, "-o", run_dir, "--base-url", simulator.base_url]
    assert run_subprocess(*args, "--limit", "3").returncode == 0

    again = run_subprocess(*args, "--max-cost", "0.0001")

    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "lines 1-6: name model 'my-unpriced', which has no known price" in again.stderr
    assert simulator.requests == 3


# -- item 8: an estimate worth reading ---------------------------------------------------------


def test_the_simulator_bills_a_structured_output_schema_as_prompt_tokens(simulator, tmp_path):
    rows = review_rows(3)
    plain, labelled = write_jsonl(tmp_path / "a.jsonl", rows), tmp_path / "b"
    run_subprocess(*run_args(plain, tmp_path / "a", simulator.base_url, "--max-tokens", "10"))
    run_subprocess(*run_args(plain, labelled, simulator.base_url, "--max-tokens", "10", "--labels", "yes,no"))

    [without] = {r["usage"]["prompt_tokens"] for r in read_jsonl(tmp_path / "a" / "results.jsonl")[:1]}
    [with_schema] = {r["usage"]["prompt_tokens"] for r in read_jsonl(labelled / "results.jsonl")[:1]}
    # {"type":"object","properties":{"label":{"type":"string","enum":["yes","no"]}},"required":["label"],
    # "additionalProperties":false}: its words, and its runs of punctuation as one token each
    assert with_schema - without == 27


def test_a_dry_run_says_how_it_estimated_and_its_at_most_bounds_what_the_run_uses(
    simulator, tmp_path, run_dir
):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(40))
    args = run_args(path, run_dir, simulator.base_url, "--max-tokens", "60")

    plan = run_subprocess(*args, "--dry-run")
    run = run_subprocess(*args)

    expected, at_most = planned_tokens(plan.stdout)
    used = json.loads((run_dir / "summary.json").read_text())["total_tokens"]
    assert "estimate: prompts at 4.4 characters a token" in plan.stdout
    assert "completions expected at 33% of max_tokens" in plan.stdout
    assert run.returncode == 0 and expected <= at_most
    assert used <= at_most  # (these answers are one word: expected at a third of max_tokens is high)


def test_a_dry_run_after_a_limited_run_estimates_the_rest_from_its_answers(simulator, tmp_path, run_dir):
    rows = [{"id": f"r{i}", "text": " ".join(["word"] * (10 + i % 50))} for i in range(120)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    args = run_args(path, run_dir, simulator.base_url, "--max-tokens", "200", prompt="Repeat: {text}")
    first = run_subprocess(*args, "--limit", "20")

    plan = run_subprocess(*args, "--dry-run")
    summary_before = json.loads((run_dir / "summary.json").read_text())
    rest = run_subprocess(*args)

    assert first.returncode == 0 and rest.returncode == 0, rest.stderr
    assert "estimate: from the 20 answers of earlier sessions: prompts at " in plan.stdout
    expected, _ = planned_tokens(plan.stdout)
    used = json.loads((run_dir / "summary.json").read_text())["total_tokens"] - summary_before["total_tokens"]
    assert 0.75 * used <= expected <= 1.25 * used
