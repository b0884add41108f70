"""batcher's own client of the Files and Batches endpoints, against the simulator over loopback."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from batcher.errors import BadRequest, Retryable
from batcher.transports.batchapi.collect import read_fates
from batcher.transports.batchapi.provider import BatchProvider
from tests.helpers import TEST_KEY

ENDED = ("completed", "failed", "expired", "cancelled")


def request_lines(n: int) -> bytes:
    return b"".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "m",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": f"review {i}"}],
                },
            }
        ).encode()
        + b"\n"
        for i in range(n)
    )


async def until_ended(provider: BatchProvider, batch_id: str) -> dict:
    for _ in range(200):
        batch = await provider.get(batch_id)
        if batch["status"] in ENDED:
            return batch
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end")


def test_a_part_is_uploaded_created_polled_and_its_answers_read_back(simulator_factory):
    simulator = simulator_factory()

    async def go():
        async with BatchProvider(simulator.base_url, TEST_KEY, timeout=10) as provider:
            file = await provider.upload("part-00001.jsonl", request_lines(5))
            batch = await provider.create(file["id"], "/v1/chat/completions", {"batcher_part": "1"})
            ended = await until_ended(provider, batch["id"])
            return ended, await provider.content(ended["output_file_id"])

    ended, output = asyncio.run(go())

    assert ended["status"] == "completed" and ended["request_counts"]["completed"] == 5
    fates = read_fates(output, b"", [f"r{i}" for i in range(5)])
    assert sorted(fates.answered) == [f"r{i}" for i in range(5)] and not fates.again


def test_a_creation_whose_answer_was_lost_is_found_by_its_metadata(simulator_factory):
    simulator = simulator_factory(batch_create_lost_rate=1.0)

    async def go():
        async with BatchProvider(simulator.base_url, TEST_KEY, timeout=10) as provider:
            file = await provider.upload("part-00001.jsonl", request_lines(2))
            since = time.time() - 1
            with pytest.raises(Retryable):
                await provider.create(
                    file["id"], "/v1/chat/completions", {"batcher_run": "x", "batcher_nonce": "n1"}
                )
            found = await provider.find({"batcher_run": "x", "batcher_nonce": "n1"}, since=since)
            missing = await provider.find({"batcher_run": "x", "batcher_nonce": "n2"}, since=since)
            return found, missing

    found, missing = asyncio.run(go())

    assert found is not None and found["metadata"]["batcher_nonce"] == "n1"
    assert missing is None


def test_provider_refusals_are_the_failures_an_online_request_would_raise(simulator_factory):
    simulator = simulator_factory()

    async def go():
        async with BatchProvider(simulator.base_url, TEST_KEY, timeout=10) as provider:
            with pytest.raises(BadRequest) as unknown:
                await provider.get("batch_nope")
            return unknown.value

    failure = asyncio.run(go())

    assert failure.status == 404 and "batch_nope" in failure.message
