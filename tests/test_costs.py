"""Cost and budgets: a price table, cost per row and per run, --max-cost and --max-total-tokens."""

from __future__ import annotations

import json

import pytest

from batcher.errors import ConfigError
from batcher.limits.costs import Budget, Prices
from tests.helpers import read_jsonl, review_rows, run_args, write_jsonl


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def test_each_row_and_the_run_carry_their_cost_at_the_models_price(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(10))

    result = cli(*run_args(path, run_dir, simulator.base_url, model="gpt-4o-mini-2024-07-18"))
    status = cli("status", run_dir)

    assert result.exit_code == 0, result.output
    rows = read_jsonl(run_dir / "results.jsonl")
    for row in rows:  # priced as its family, gpt-4o-mini: $0.15 in, $0.60 out per million
        usage = row["usage"]
        assert row["cost_usd"] == pytest.approx(
            (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.6) / 1e6
        )
    total = sum(row["cost_usd"] for row in rows)
    assert summary(run_dir)["cost_usd"] == pytest.approx(total, abs=1e-6)
    assert summary(run_dir)["answers_unpriced"] == 0
    assert f"cost:      ${total:.4f}" in status.output


def test_a_model_with_no_price_has_an_unknown_cost_not_a_zero_one(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(4))

    cli(*run_args(path, run_dir, simulator.base_url, model="my-local-llama"))
    status = cli("status", run_dir)

    assert all(row["cost_usd"] is None for row in read_jsonl(run_dir / "results.jsonl"))
    assert summary(run_dir)["answers_unpriced"] == 4
    assert "4 answers of a model with no price" in status.output


def test_prices_come_from_price_or_the_job_file_over_the_built_in_table(cli, simulator, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(3))
    by_flag = cli(*run_args(path, tmp_path / "a", simulator.base_url, "--price", "1000000,0", model="gpt-4o"))
    job = tmp_path / "job.toml"
    job.write_text(
        f'input = "in.jsonl"\noutput = "b"\nmodel = "mine"\nprompt = "{{text}}"\n'
        f'base_url = "{simulator.base_url}"\n[prices.mine]\ninput = 0\noutput = 1000000\n'
    )
    by_file = cli("run", job)

    assert by_flag.exit_code == 0 and by_file.exit_code == 0, by_flag.output + by_file.output
    for row in read_jsonl(tmp_path / "a" / "results.jsonl"):
        assert row["cost_usd"] == row["usage"]["prompt_tokens"]  # $1 a prompt token
    for row in read_jsonl(tmp_path / "b" / "results.jsonl"):
        assert row["cost_usd"] == row["usage"]["completion_tokens"]


def test_max_cost_stops_before_the_budget_and_a_larger_one_resumes(cli, simulator_factory, tmp_path, run_dir):
    simulator = simulator_factory(latency_ms=20)
    rows = review_rows(40)
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    # $1 a token: each request costs about 20-30 prompt tokens + 1-5 completion tokens (max_tokens 5).
    args = run_args(path, run_dir, simulator.base_url, "--price", "1000000,1000000", "--max-tokens", "5")

    stopped = cli(*args, "--max-cost", "400", "--concurrency", "4")

    assert stopped.exit_code == 3, stopped.output
    assert "budget reached" in stopped.output and "resume with:" in stopped.output
    first = summary(stopped_dir := run_dir)
    assert first["status"] == "budget_reached" and 0 < first["rows_ok"] < 40
    assert first["cost_usd"] <= 400
    assert simulator.requests == first["rows_ok"]  # every answer paid for is kept

    resumed = cli(*args, "--max-cost", "100000")

    assert resumed.exit_code == 0, resumed.output
    ids = [r["id"] for r in read_jsonl(stopped_dir / "results.jsonl")]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert simulator.requests == 40


def test_max_total_tokens_counts_every_session(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(30))
    args = run_args(path, run_dir, simulator.base_url, "--max-tokens", "5", "--concurrency", "2")

    first = cli(*args, "--max-total-tokens", "300")
    again = cli(*args, "--max-total-tokens", "300")  # the same budget: nothing more fits

    assert first.exit_code == again.exit_code == 3
    tokens = summary(run_dir)["total_tokens"]
    assert 0 < tokens <= 300
    assert summary(run_dir)["session"]["requests_sent"] == 0


def test_a_dry_run_estimates_the_cost_at_most(cli, simulator, tmp_path, run_dir):
    path = write_jsonl(tmp_path / "in.jsonl", review_rows(10))

    result = cli(
        *run_args(path, run_dir, simulator.base_url, "--max-tokens", "100", "--dry-run", model="gpt-4o")
    )

    assert result.exit_code == 0, result.output
    prompt = int(result.output.split("about ")[1].split(" prompt")[0].replace(",", ""))
    assert f"cost:     about ${(prompt * 2.5 + 1000 * 10) / 1e6:.4f} at most" in result.output


def test_price_lookup_knows_dated_snapshots_and_refuses_a_bad_table():
    prices = Prices.from_settings({"gpt-4o-mini-fast": {"input": 9, "output": 9}})

    assert prices.of("gpt-4o-mini-2024-07-18") == (0.15, 0.60)
    assert prices.of("gpt-4o-2024-08-06") == (2.50, 10.00)
    assert prices.of("gpt-4o-mini-fast") == (9, 9)
    assert prices.of("gpt-4o-minix") is None and prices.of("gpt-4o-audio-preview") is None
    assert prices.of("gpt-4-turbo-2024-04-09") == (10.0, 30.0) and prices.of(None) is None
    with pytest.raises(ConfigError, match="needs input and output"):
        Prices.from_settings({"m": {"input": 1}})
    with pytest.raises(ConfigError, match="0 or more"):
        Prices.from_settings({"m": {"input": -1, "output": 1}})


def test_batch_prices_are_half_the_online_ones_unless_an_entry_says_its_own():
    prices = Prices.from_settings(
        {
            "self-hosted": {"input": 1.0, "output": 4.0},
            "gateway-model": {"input": 1.0, "output": 4.0, "batch_input": 0.8},
        }
    )
    usage = {"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}

    assert prices.of("gpt-4o-mini", batch=True) == (0.075, 0.30)
    assert prices.of("gpt-4o-mini-2024-07-18", batch=True) == (0.075, 0.30)  # snapshots too
    assert prices.cost("gpt-4o", usage, batch=True) == 6.25 and prices.cost("gpt-4o", usage) == 12.5
    assert prices.of("self-hosted", batch=True) == (0.5, 2.0)
    assert prices.of("gateway-model", batch=True) == (0.8, 2.0)  # the output discounted, as unsaid
    assert prices.of("unknown", batch=True) is None
    with pytest.raises(ConfigError, match="may say batch_input and batch_output"):
        Prices.from_settings({"m": {"input": 1, "output": 1, "batch": 0.5}})
    with pytest.raises(ConfigError, match="0 or more"):
        Prices.from_settings({"m": {"input": 1, "output": 1, "batch_output": -1}})


# The budget itself: what a request holds before it is sent, and what its answer settles.


def test_a_request_is_sent_only_if_its_worst_case_fits_beside_those_in_flight():
    budget = Budget(max_cost=1.0, max_tokens=None, spent_cost=0.25, spent_tokens=0)

    assert budget.reserve(100, 0.25) and budget.reserve(100, 0.25)  # 0.25 spent + 0.5 held
    assert budget.reserve(100, 0.25)  # exactly the budget still fits
    assert not budget.reserve(1, 0.01)


def test_a_settled_request_frees_its_reservation_and_counts_what_it_used():
    budget = Budget(max_cost=None, max_tokens=1_000, spent_cost=0.0, spent_tokens=0)
    assert budget.reserve(600, None)
    assert not budget.reserve(600, None)  # the first still holds its worst case

    budget.settle(600, None, used_tokens=150, used_cost=None)

    assert budget.spent_tokens == 150
    assert budget.reserve(850, None)  # the 450 tokens it did not use are free again
    assert not budget.reserve(1, None)


def test_a_request_that_got_no_answer_gives_its_whole_reservation_back():
    budget = Budget(max_cost=0.5, max_tokens=500, spent_cost=0.0, spent_tokens=0)
    assert budget.reserve(500, 0.5)

    budget.settle(500, 0.5, used_tokens=0, used_cost=None)

    assert (budget.spent_tokens, budget.spent_cost) == (0, 0.0)
    assert budget.reserve(500, 0.5)


def test_a_refused_reservation_holds_nothing():
    budget = Budget(max_cost=1.0, max_tokens=1_000, spent_cost=0.0, spent_tokens=0)

    assert not budget.reserve(2_000, 0.1)  # over the tokens
    assert not budget.reserve(10, 2.0)  # over the cost

    assert budget.reserve(1_000, 1.0)  # both refusals left the whole budget


def test_earlier_sessions_spending_counts_against_the_budget():
    budget = Budget(max_cost=None, max_tokens=1_000, spent_cost=0.0, spent_tokens=950)

    assert not budget.reserve(60, None)
    assert budget.reserve(50, None)


def test_without_max_cost_or_max_total_tokens_nothing_is_limited():
    budget = Budget(max_cost=None, max_tokens=None, spent_cost=1e6, spent_tokens=10**9)

    assert not budget.limited
    assert budget.reserve(10**9, 1e6)
    assert Budget(max_cost=0.0, max_tokens=None, spent_cost=0.0, spent_tokens=0).limited


def test_the_exhausted_message_names_each_budget_what_was_spent_and_how_to_go_on():
    budget = Budget(max_cost=2.5, max_tokens=1_000_000, spent_cost=2.4912345, spent_tokens=987_654)

    message = budget.exhausted_message()

    assert message.startswith("budget reached: ")
    assert (
        "$2.4912 of max_cost $2.5 and 987,654 of max_total_tokens 1,000,000 spent over all sessions"
        in message
    )
    assert "the next request would go over" in message
    assert "What was already sent was finished and kept" in message
    assert "Raise the budget and run the same command again to continue" in message


def test_the_exhausted_message_names_only_the_budgets_that_were_set():
    by_cost = Budget(max_cost=3, max_tokens=None, spent_cost=2.99, spent_tokens=5_000).exhausted_message()
    by_tokens = Budget(max_cost=None, max_tokens=300, spent_cost=1.0, spent_tokens=290).exhausted_message()

    assert "$2.9900 of max_cost $3 spent" in by_cost and "max_total_tokens" not in by_cost
    assert "290 of max_total_tokens 300 spent" in by_tokens and "max_cost" not in by_tokens
