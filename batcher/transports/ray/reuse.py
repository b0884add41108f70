"""A Ray run's answer cache (`--cache`) and de-duplication (`--dedupe`): one for the cluster.

The run's `kinds.reuse.AnswerCache` (SQLite) is opened by one actor, `ReuseKeeper`, placed on the
driver's node (the cache is a directory of the driver's disk, as in a local run), which also keeps
the answers this run has had so far, by request key (with `--dedupe`). A worker asks it once a
batch: before sending the batch's rows, for what it holds of their keys (`ClusterReuse.prefetch`);
after, it hands it the answers the batch got (awaited: they are the actor's before the batch is
the driver's, so a second run finds them). Within a worker, identical requests wait for the one on
the wire, as in a local run (kinds/reuse.py). Identical requests on the wire at the same moment on
two workers are both sent: de-duplication across the cluster is by batch, give or take the requests
in flight. A second run over the same rows with the same cache pays nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

from batcher.kinds.completion import Completion
from batcher.kinds.reuse import RECENT, AnswerCache, Reuse

#: Answers of this run the actor keeps for the workers' later batches (--dedupe).
RUN_ANSWERS = 4 * RECENT


class ReuseKeeper:
    """The actor: the answer cache and this run's answers, by request key."""

    def __init__(self, cache_dir: str | None, within_run: bool):
        self._cache = AnswerCache(Path(cache_dir)) if cache_dir else None
        self._within_run = within_run
        self._answers: OrderedDict[bytes, tuple[Completion, str]] = OrderedDict()

    def find(self, keys: list[bytes]) -> dict[bytes, tuple[Completion, str]]:
        """What is known of `keys`: an answer and where it comes from (a row id, or "cache")."""
        found = {}
        for key in keys:
            if (answer := self._answers.get(key)) is not None:
                found[key] = answer
            elif self._cache is not None and (cached := self._cache.get(key)) is not None:
                found[key] = (cached, "cache")
        return found

    def keep(self, answers: list[tuple[bytes, Completion, str, bool]]) -> None:
        """Answers a batch got: (key, answer, row id, whether the cache keeps it)."""
        for key, completion, row_id, cacheable in answers:
            if cacheable and self._cache is not None:
                self._cache.put(key, completion)
            if self._within_run:
                self._answers[key] = (completion, row_id)
                if len(self._answers) > RUN_ANSWERS:
                    self._answers.popitem(last=False)
        if self._cache is not None:
            self._cache.save()

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()


def reuse_actor(cache_dir: str | None, within_run: bool) -> Any:
    """The run's ReuseKeeper, on this (the driver's) node: the cache is a directory of its disk."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor_class = ray.remote(num_cpus=0, max_concurrency=1)(ReuseKeeper)
    return actor_class.options(scheduling_strategy=here).remote(cache_dir, within_run)


class _Prefetched:
    """The cache's answers to a batch's keys, as kinds.reuse.Reuse asks a cache (`get`, `put`)."""

    def __init__(self) -> None:
        self.found: dict[bytes, Completion] = {}

    def get(self, key: bytes) -> Completion | None:
        return self.found.get(key)

    def put(self, key: bytes, completion: Completion) -> None:
        pass  # handed to the actor with the batch's other answers (ClusterReuse.settle)


class ClusterReuse(Reuse):
    """A worker's Reuse, drawing on the cluster's ReuseKeeper a batch at a time."""

    def __init__(self, keeper: Any, *, within_run: bool, cache: bool):
        super().__init__(within_run=within_run, cache=_Prefetched() if cache else None)
        self._keeper = keeper
        self._answered: list[tuple[bytes, Completion, str, bool]] = []

    async def prefetch(self, bodies: list[dict[str, Any]]) -> None:
        """Ask the keeper what it holds of these requests (one round trip a batch)."""
        keys = [key for body in bodies if (key := self.key(body)) is not None]
        if not keys:
            return
        for key, (completion, source) in (await self._keeper.find.remote(keys)).items():
            if source == "cache":
                self.cache.found[key] = completion
            else:  # answered in this run by another worker (or an earlier batch)
                self._recent[key] = (completion, source)

    def settle(self, key: bytes, body: dict[str, Any], completion: Completion | None, row_id: str) -> None:
        super().settle(key, body, completion, row_id)
        if completion is not None:
            self._answered.append((key, completion, row_id, self.caches(body)))

    async def hand_over(self) -> None:
        """The batch's answers to the keeper (awaited: its before the batch is the driver's)."""
        if self._answered:
            answered, self._answered = self._answered, []
            await self._keeper.keep.remote(answered)
