"""What a run needs from the machine it runs on, checked before anything is read, written or sent.

A model named (rows filled into a prompt name none), the extras the job uses installed
(extras.py), a model priced where a budget in USD must count it (limits/costs.py), and the key: each
endpoint's variable set, unless the endpoint is the embedded simulator, a server on this machine
(vLLM, llama.cpp, Ollama run without keys, so a missing key there is only a note), or a header of
the user's carries the credential (Azure's `api-key`). A missing key to any other server is
refused: every request would come back 401.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from typing import TYPE_CHECKING

from batcher.errors import ConfigError
from batcher.job import extras
from batcher.job.gateway import looks_secret
from batcher.limits.costs import check_priced

if TYPE_CHECKING:
    from batcher.job import Job
    from batcher.job.endpoints import EndpointConfig


def check(job: Job) -> list[str]:
    """Refuse (ConfigError) a job this machine cannot run; what a dry run should say of the rest."""
    if job.prompt is not None and not job.model:  # (one problem, not one a row)
        raise ConfigError(
            "no model: set --model or `model` in the job file (rows filled into a prompt do not name one)"
        )
    extras.check(job)
    check_priced(job)
    return check_keys(job)


def check_keys(job: Job) -> list[str]:
    """Refuse endpoints whose key is needed and not set (naming the variable, never a value);
    a note for each on this machine that runs without one."""
    notes, missing = [], []
    several = len(job.endpoint_configs) > 1
    for endpoint in job.endpoint_configs:
        if endpoint.uses_simulator or os.environ.get(endpoint.api_key_env) or carries_credential(endpoint):
            continue
        at = f" for endpoint {endpoint.name!r}" if several else ""
        # A server on this machine, or one spoken to in plain http (a key would not be sent there
        # without --allow-insecure-http: vLLM on the LAN, a compose service), may need none.
        if on_this_machine(endpoint.base_url) or endpoint.base_url.startswith("http://"):
            notes.append(f"no key set (${endpoint.api_key_env}){at}: fine for a server that needs none")
        else:
            missing.append((endpoint.api_key_env, at, endpoint.base_url))
    if len(missing) == 1:
        variable, at, base_url = missing[0]
        raise ConfigError(
            f"no API key: ${variable}{at} is not set, and {base_url} needs one: set it"
            f" (export {variable}=...), or name the variable that holds the key with --api-key-env"
            " (api_key_env in the job file)"
        )
    if missing:
        told = ", ".join(f"${variable}{at}" for variable, at, _ in missing)
        raise ConfigError(f"no API keys: {told} are not set: set them, or name others in api_key_env")
    return notes


def on_this_machine(base_url: str) -> bool:
    """Whether the URL's host is this machine: localhost, a loopback address (127.0.0.1, ::1), or
    the unspecified address a server prints when it listens on every interface (0.0.0.0)."""
    host = urllib.parse.urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
        return address.is_loopback or address.is_unspecified
    except ValueError:
        return False


def carries_credential(endpoint: EndpointConfig) -> bool:
    """A header or query parameter of the user's that carries a credential in place of the key."""
    names = [*endpoint.headers.names, *(name for name, _ in endpoint.query)]
    return any(looks_secret(name) for name in names)
