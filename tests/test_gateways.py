"""What gateways need: `--header` and `--query` on every request, the OpenAI organization and project,
and a header that holds a secret kept out of every file and message (batcher/gateway.py)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.helpers import read_jsonl, review_rows, run_args, run_subprocess, write_jsonl
from tests.test_embeddings import articles, embed_args

TENANT = ("--header", "X-Gateway-Tenant: team-42")
VERSION = ("--query", "api-version=2024-10-21")
#: A secret a gateway wants in a header of its own, and Azure's key (sent in its `api-key` header).
GATEWAY_SECRET = "gw-LEAKCHECK-5d8e1f0a2b3c4d5e6f708192a3b4c5d6"
AZURE_KEY = "az-LEAKCHECK-9c0b1a2d3e4f5a6b7c8d9e0f1a2b3c4d"


def seen(simulator) -> list[dict]:
    """The requests the simulator received, as its `GET /_simulator/requests` shows them."""
    root = simulator.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/_simulator/requests", timeout=10) as answer:
        return json.load(answer)


def to(path: str, requests: list[dict]) -> list[dict]:
    return [r for r in requests if r["path"].startswith(path)]


def header(request: dict, name: str) -> str | None:
    """A request's header, its name compared case-insensitively (as HTTP compares them)."""
    return next((v for k, v in request["headers"].items() if k.lower() == name.lower()), None)


def test_headers_and_query_reach_the_server_on_every_chat_request(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(5))

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url, *TENANT, *VERSION))

    assert done.returncode == 0, done.stderr
    chats = to("/v1/chat/completions", seen(simulator))
    assert len(chats) == 5
    for request in chats:
        assert header(request, "X-Gateway-Tenant") == "team-42"
        assert request["query"] == {"api-version": "2024-10-21"}
        assert header(request, "Authorization") == "[redacted]"  # (the simulator shows no key)
        assert header(request, "Content-Type") == "application/json"


def test_headers_and_query_reach_the_server_on_embeddings_requests(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", articles(6))

    done = run_subprocess(*embed_args(path, run_dir, simulator.base_url, *TENANT, *VERSION))

    assert done.returncode == 0, done.stderr
    embeddings = to("/v1/embeddings", seen(simulator))
    assert embeddings
    assert all(header(r, "X-Gateway-Tenant") == "team-42" for r in embeddings)
    assert all(r["query"] == {"api-version": "2024-10-21"} for r in embeddings)


def test_the_batch_apis_file_and_batch_calls_carry_the_headers_and_query(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(5))
    batch = ("--mode", "batch-api", "--poll-interval", "0.1")

    done = run_subprocess(*run_args(path, run_dir, simulator.base_url, *batch, *TENANT, *VERSION))

    assert done.returncode == 0, done.stderr
    assert len(read_jsonl(run_dir / "results.jsonl")) == 5
    requests = seen(simulator)
    calls = to("/v1/files", requests) + to("/v1/batches", requests)
    paths = {r["method"] + " " + r["path"].split("/")[2] for r in calls}
    assert {"POST files", "POST batches", "GET batches", "GET files"} <= paths  # upload .. output file
    for request in calls:
        assert header(request, "X-Gateway-Tenant") == "team-42", request["path"]
        assert request["query"].get("api-version") == "2024-10-21", request["path"]


def test_batcher_cancel_sends_the_headers_and_query_the_run_sent(simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(batch_requests_per_second=2)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(10))
    batch = ("--mode", "batch-api", "--no-wait")
    assert (
        run_subprocess(*run_args(path, run_dir, simulator.base_url, *batch, *TENANT, *VERSION)).returncode
        == 4
    )

    cancelled = run_subprocess("cancel", run_dir, *TENANT, *VERSION)

    assert cancelled.returncode == 0, cancelled.stderr
    assert "part 1: batch_" in cancelled.stdout and "cancel" in cancelled.stdout
    cancels = [r for r in to("/v1/batches", seen(simulator)) if r["path"].endswith("/cancel")]
    assert len(cancels) == 1
    assert header(cancels[0], "X-Gateway-Tenant") == "team-42"
    assert cancels[0]["query"] == {"api-version": "2024-10-21"}


def test_openai_org_and_project_variables_are_sent_as_the_sdk_sends_them(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2))

    done = run_subprocess(
        *run_args(path, run_dir, simulator.base_url), OPENAI_ORG_ID="org-abc", OPENAI_PROJECT_ID="proj_xyz"
    )

    assert done.returncode == 0, done.stderr
    for request in to("/v1/chat/completions", seen(simulator)):
        assert header(request, "OpenAI-Organization") == "org-abc"
        assert header(request, "OpenAI-Project") == "proj_xyz"


def test_a_header_flag_overrides_the_organization_variable(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(1))

    done = run_subprocess(
        *run_args(path, run_dir, simulator.base_url, "--header", "openai-organization: org-mine"),
        OPENAI_ORG_ID="org-abc",
    )

    assert done.returncode == 0, done.stderr
    (request,) = to("/v1/chat/completions", seen(simulator))
    assert [v for k, v in request["headers"].items() if k.lower() == "openai-organization"] == ["org-mine"]


def test_a_users_authorization_header_replaces_ours(simulator_factory, tmp_path, run_dir):
    gateway = simulator_factory(api_key=GATEWAY_SECRET)  # refuses $OPENAI_API_KEY: only the user's token
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))

    done = run_subprocess(
        *run_args(path, run_dir, gateway.base_url, "--header", f"Authorization: Bearer {GATEWAY_SECRET}")
    )

    assert done.returncode == 0, done.stderr
    for request in to("/v1/chat/completions", seen(gateway)):
        assert header(request, "Authorization") == "[redacted]"  # one, not "[redacted], [redacted]"


def test_a_header_holding_the_key_carries_it_in_place_of_a_bearer_as_azure_takes_it(
    simulator_factory, tmp_path, run_dir
):
    azure = simulator_factory(api_key=AZURE_KEY)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    args = ("--api-key-env", "AZURE_OPENAI_API_KEY", "--header", "api-key: env:AZURE_OPENAI_API_KEY")

    done = run_subprocess(*run_args(path, run_dir, azure.base_url, *args), AZURE_OPENAI_API_KEY=AZURE_KEY)

    assert done.returncode == 0, done.stderr
    for request in to("/v1/chat/completions", seen(azure)):
        assert header(request, "api-key") == "[redacted]"
        assert header(request, "Authorization") is None


def test_no_bearer_is_sent_without_a_key(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(2))

    done = run_subprocess(
        *run_args(path, run_dir, simulator.base_url, "--header", "api-key: env:GATEWAY_KEY"),
        OPENAI_API_KEY="",
        GATEWAY_KEY=GATEWAY_SECRET,
    )

    assert done.returncode == 0, done.stderr  # (the simulator takes a key in api-key too)
    for request in to("/v1/chat/completions", seen(simulator)):
        assert header(request, "Authorization") is None


def test_each_endpoint_sends_its_own_headers_over_the_jobs(simulator_factory, tmp_path):
    first, second = simulator_factory(), simulator_factory()
    write_jsonl(tmp_path / "in.jsonl", review_rows(20))
    job = tmp_path / "job.toml"
    job.write_text(
        f"""
input = "in.jsonl"
output = "run"
model = "m"
prompt = "Classify: {{text}}"
headers = ["X-Team: shared", "X-Trace: on"]
query = {{"api-version" = "2024-10-21"}}

[[endpoints]]
name = "east"
base_url = "{first.base_url}"
headers = {{"X-Team" = "east-team"}}

[[endpoints]]
name = "west"
base_url = "{second.base_url}"
query = ["api-version=2025-01-01"]
"""
    )

    done = run_subprocess("run", job, "--header", "X-Trace: off")

    assert done.returncode == 0, done.stderr
    east, west = to("/v1/chat", seen(first)), to("/v1/chat", seen(second))
    assert east and west and len(east) + len(west) == 20
    assert {(header(r, "X-Team"), header(r, "X-Trace"), r["query"]["api-version"]) for r in east} == {
        ("east-team", "off", "2024-10-21")
    }
    assert {(header(r, "X-Team"), header(r, "X-Trace"), r["query"]["api-version"]) for r in west} == {
        ("shared", "off", "2025-01-01")
    }


def test_a_header_holding_a_secret_leaves_no_trace_in_any_file_or_output(simulator_factory, tmp_path):
    # Azure's key in its api-key header, typed on the command line (as "$AZURE_KEY" expands), and a
    # gateway's secret of its own; the server refuses the key after 6 requests, echoing it.
    azure = simulator_factory(api_key=AZURE_KEY, fail_auth_after=6, echo_key=True, error_rate=0.2)
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(20))
    secrets = (
        *("--header", f"api-key: {AZURE_KEY}", "--header", f"X-Gateway-Secret: {GATEWAY_SECRET}"),
        *("--api-key-env", "AZURE_OPENAI_API_KEY", "--concurrency", "1"),
    )
    env = {"AZURE_OPENAI_API_KEY": AZURE_KEY}
    outputs = []

    dry = run_subprocess(*run_args(path, tmp_path / "run", azure.base_url, *secrets, "--dry-run"), **env)
    refused = run_subprocess(*run_args(path, tmp_path / "run", azure.base_url, *secrets, "-v"), **env)
    status = run_subprocess("status", tmp_path / "run", "--json")
    report = run_subprocess("report", tmp_path / "run")
    outputs += [p.stdout + p.stderr for p in (dry, refused, status, report)]

    assert dry.returncode == 0 and "headers:  api-key, X-Gateway-Secret; values not shown" in dry.stdout
    assert refused.returncode == 3, refused.stderr
    assert "Incorrect API key provided: [the key]" in refused.stderr
    assert "'api-key: ***'" in refused.stderr and "'X-Gateway-Secret: ***'" in refused.stderr  # resume
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p != path]
    assert len(files) >= 5
    for text in outputs:
        assert AZURE_KEY not in text and GATEWAY_SECRET not in text
    for file in files:
        data = file.read_bytes()
        assert AZURE_KEY.encode() not in data and GATEWAY_SECRET.encode() not in data, file


def test_a_job_is_the_same_job_when_a_header_value_changes(simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(4))
    first = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--header", "api-key: old-key-1"))

    rotated = run_subprocess(*run_args(path, run_dir, simulator.base_url, "--header", "api-key: new-key-2"))

    assert first.returncode == 0 and rotated.returncode == 0, rotated.stderr
    assert "old-key-1" not in (run_dir / "job.json").read_text()


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--header", GATEWAY_SECRET, "--header #1 has no ':'"),
        ("--header", f": {GATEWAY_SECRET}", "--header #1: its name is not a header name"),
        ("--header", f"X Secret: {GATEWAY_SECRET}", "--header #1: 'X Secret' is not a header name"),
        ("--header", "api-key:", "--header #1 (api-key) has an empty value"),
        ("--query", GATEWAY_SECRET, "--query #1 has no '='"),
        ("--query", f"={GATEWAY_SECRET}", "--query #1 has an empty name"),
    ],
)
def test_a_bad_header_or_query_exits_2_naming_the_flag_never_the_value(
    simulator, tmp_path, run_dir, flag, value, said
):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(1))

    bad = run_subprocess(*run_args(path, run_dir, simulator.base_url, flag, value))

    assert bad.returncode == 2, bad.stderr
    assert said in bad.stderr and "Traceback" not in bad.stderr
    assert GATEWAY_SECRET not in bad.stdout + bad.stderr
    assert not run_dir.exists() and simulator.requests == 0


def test_a_header_read_from_a_variable_not_set_exits_2_naming_it_in_the_dry_run_too(
    simulator, tmp_path, run_dir
):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(1))
    args = run_args(path, run_dir, simulator.base_url, "--header", "api-key: env:AZURE_OPENAI_API_KEY")

    dry, real = run_subprocess(*args, "--dry-run"), run_subprocess(*args)

    for done in (dry, real):
        assert done.returncode == 2
        assert "header api-key is read from $AZURE_OPENAI_API_KEY, which is not set" in done.stderr
    assert not run_dir.exists() and simulator.requests == 0


def test_a_job_file_header_holding_a_credential_must_name_its_variable(simulator, tmp_path):
    write_jsonl(tmp_path / "in.jsonl", review_rows(2))
    job = tmp_path / "job.toml"
    body = 'input = "in.jsonl"\noutput = "run"\nmodel = "m"\nprompt = "{text}"\n'
    body += f'base_url = "{simulator.base_url}"\n'
    job.write_text(body + f'[headers]\napi-key = "{GATEWAY_SECRET}"\n')

    refused = run_subprocess("run", job)
    job.write_text(body + '[headers]\napi-key = "env:GATEWAY_KEY"\n')
    named = run_subprocess("run", job, GATEWAY_KEY=GATEWAY_SECRET)

    assert refused.returncode == 2
    assert "header 'api-key' would keep a secret in the job file" in refused.stderr
    assert GATEWAY_SECRET not in refused.stderr + refused.stdout
    assert named.returncode == 0, named.stderr
    assert all(header(r, "api-key") for r in to("/v1/chat", seen(simulator)))


# Ray workers sending the headers, the variables `env:` names travelling with the work: tested with
# a --limit in tests/test_ray_executor.py (one Ray pipeline for both).


def test_no_repr_of_a_job_its_endpoints_or_their_clients_shows_a_header_value(monkeypatch):
    from batcher.job import build_job
    from batcher.kinds import kind_of
    from batcher.transports.online.endpoints import Endpoint

    monkeypatch.setenv("GATEWAY_KEY", GATEWAY_SECRET)
    job = build_job(
        {
            "input": "x.jsonl",
            "output": "o",
            "headers": {"api-key": AZURE_KEY, "X-Gateway-Secret": "env:GATEWAY_KEY"},
            "query": ["code=" + AZURE_KEY],
        }
    )
    (config,) = job.endpoint_configs
    kind = kind_of(job, "template")
    endpoint = Endpoint(config, "http://127.0.0.1:1/v1", kind=kind, timeout=1, connections=1)

    shown = " ".join(repr(thing) for thing in (job, config, endpoint.gateway, endpoint.client))
    endpoint.limits.close()
    assert "api-key" in shown and "X-Gateway-Secret" in shown and "code" in shown
    assert AZURE_KEY not in shown and GATEWAY_SECRET not in shown


def test_a_query_parameter_named_as_a_credential_is_hidden_from_messages_even_when_written_out():
    from batcher.job.gateway import Gateway, Pairs

    gateway = Gateway.of(
        None, query=Pairs([("sig", "sv-2024-signature-value"), ("api-version", "2024-10-21")])
    )

    assert "sv-2024-signature-value" in gateway.secrets
    assert "2024-10-21" not in gateway.secrets
