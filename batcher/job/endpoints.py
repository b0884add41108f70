"""Where a job's requests may go: its endpoints' settings, as a job file or the flags give them.

An endpoint is a base URL serving the job's model, with its key's variable, its limits and its own
headers and query (gateway.py). The endpoints that send requests are built from these by the online
transport (transports/online/endpoints.py). See docs/endpoints.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from batcher.errors import ConfigError
from batcher.job.gateway import NO_PAIRS, Pairs, merged, parse_headers, parse_query, variables

#: Keys an entry of `endpoints` may hold, with their types.
ENDPOINT_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "base_url": (str,),
    "api_key_env": (str,),
    "rpm": (int, float),
    "tpm": (int, float),
    "model": (str,),
    "headers": (list, dict),
    "query": (list, dict),
}


@dataclass(frozen=True)
class EndpointConfig:
    """One place that serves the job's model."""

    name: str
    base_url: str
    api_key_env: str = "OPENAI_API_KEY"
    rpm: float | None = None
    tpm: float | None = None
    #: The model's name at this endpoint, when it differs (e.g. "openai/gpt-4o-mini" at a gateway).
    model: str | None = None
    #: Headers and query parameters of this endpoint's requests, the job's merged under them (gateway.py).
    headers: Pairs = NO_PAIRS
    query: Pairs = NO_PAIRS

    @property
    def uses_simulator(self) -> bool:
        return self.base_url == "simulator"

    def under(self, headers: Pairs, query: Pairs) -> EndpointConfig:
        """This endpoint with the job's headers and query under its own (its own win, name by name)."""
        return dataclasses.replace(
            self,
            headers=merged(headers, self.headers),
            query=merged(query, self.query, fold_case=False),
        )

    def environment(self) -> dict[str, str]:
        """The environment variables this endpoint reads (its key; its `env:` headers and query), as set
        here: what a Ray worker is handed with its work, never in a runtime_env, a file or a log."""
        names = [self.api_key_env, *variables(self.headers), *variables(self.query)]
        return {name: os.environ[name] for name in names if os.environ.get(name)}


def endpoint_configs(entries: Iterable[Any]) -> tuple[EndpointConfig, ...]:
    """Validate the job file's `endpoints` list."""
    configs = []
    for number, entry in enumerate(entries, start=1):
        where = f"endpoints[{number}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a table with base_url, api_key_env, rpm, tpm, model, headers")
        for key, value in entry.items():
            if key not in ENDPOINT_FIELDS:
                raise ConfigError(f"{where}: unknown setting '{key}' (known: {', '.join(ENDPOINT_FIELDS)})")
            types = ENDPOINT_FIELDS[key]
            if not isinstance(value, types) or isinstance(value, bool):
                wanted = " or ".join(t.__name__ for t in types)
                got = type(value).__name__ if key in ("headers", "query") else repr(value)  # (may be a key)
                raise ConfigError(f"{where}: '{key}' must be {wanted}, got {got}")
        if "base_url" not in entry:
            raise ConfigError(f"{where} needs a base_url")
        for key in ("rpm", "tpm"):
            if key in entry and not entry[key] > 0:
                raise ConfigError(f"{where}: {key} must be a positive number, got {entry[key]}")
        settings = {**entry, "base_url": entry["base_url"].rstrip("/"), **_gateway_settings(entry, where)}
        settings.setdefault("name", f"{number}:{settings['base_url']}")
        configs.append(EndpointConfig(**settings))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"endpoints need different names: {names}")
    return tuple(configs)


def _gateway_settings(entry: dict[str, Any], where: str) -> dict[str, Pairs]:
    """An entry's own headers and query, parsed (gateway.py)."""
    settings = {}
    if "headers" in entry:
        settings["headers"] = parse_headers(entry["headers"], f"{where}.headers")
    if "query" in entry:
        settings["query"] = parse_query(entry["query"], f"{where}.query")
    return settings
