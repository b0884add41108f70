"""A TOML job file read into settings: paths made relative to its folder, every key and type checked,
and no secret held (keys live in environment variables; a job file names the variable).

`check_settings` also guards the Python API's options, which are the same settings.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from batcher.errors import ConfigError
from batcher.job.gateway import refuse_written_secrets

# Keys a job file may hold, with the type each must have.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "input": (str,),
    "output": (str,),
    "model": (str,),
    "prompt": (str,),
    "system": (str,),
    "id_column": (str,),
    "keep_columns": (list, str),
    "max_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "base_url": (str,),
    "api_key_env": (str,),
    "concurrency": (int,),
    "rpm": (int, float),
    "tpm": (int, float),
    "max_retries": (int,),
    "timeout": (int, float),
    "output_format": (str,),
    "retry_failed": (bool,),
    "drain_timeout": (int, float),
    "stop_after_identical_failures": (int,),
    "patience": (int, float),
    "mode": (str,),
    "batch_size": (int,),
    "poll_interval": (int, float),
    "no_wait": (bool,),
    "deadline": (str,),
    "allow_insecure_http": (bool,),
    "json_schema": (str, dict),
    "labels": (list, str),
    "parse_retries": (int,),
    "prices": (dict,),
    "max_cost": (int, float),
    "max_total_tokens": (int,),
    "dedupe": (bool,),
    "cache": (str,),
    "endpoints": (list,),
    "endpoint": (str,),
    "dimensions": (int,),
    "encoding_format": (str,),
    "inputs_per_request": (int,),
    "tokens_per_request": (int,),
    "tokens_per_input": (int,),
    "executor": (str,),
    "ray_address": (str,),
    "workers": (int,),
    "commit_seconds": (int, float),
    "limit": (int,),
    "headers": (list, dict),
    "query": (list, dict),
    "simulator": (dict,),
}
_SECRET_KEYS = {"api_key", "key", "openai_api_key", "token", "secret", "password"}


def load_job_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML job file into settings, paths made relative to its folder."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            settings = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: job file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read job file: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    _refuse_secrets(path, settings)
    check_settings(settings, str(path))
    if settings.get("input") == "-":
        raise ConfigError(
            f'{path}: input = "-" (standard input) is for the command line (... | batcher run - -o DIR):'
            " a job file is run again to resume, and what was piped in cannot be read again; name a file"
        )
    api_key = os.environ.get(settings.get("api_key_env") or "OPENAI_API_KEY")
    refuse_written_secrets(str(path), settings, api_key)
    for key in ("input", "output", "json_schema", "cache"):
        if isinstance(settings.get(key), str) and "://" not in settings[key]:
            settings[key] = os.path.normpath(path.parent / settings[key])
    return settings


def check_settings(settings: dict[str, Any], origin: str) -> None:
    """Refuse unknown settings and values of the wrong type, naming where they came from."""
    for key, value in settings.items():
        if key not in _FIELD_TYPES:
            known = ", ".join(sorted(_FIELD_TYPES))
            raise ConfigError(f"{origin}: unknown setting '{key}' (known: {known})")
        types = _FIELD_TYPES[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(t.__name__ for t in types)
            shown = "" if key in ("headers", "query") else f" {value!r}"  # (a header's value may be a key)
            raise ConfigError(f"{origin}: '{key}' must be {wanted}, got {type(value).__name__}{shown}")


def _refuse_secrets(path: Path, table: dict[str, Any], prefix: str = "") -> None:
    for key, value in table.items():
        if key.lower() in _SECRET_KEYS:
            raise ConfigError(
                f"{path}: '{prefix}{key}' looks like a secret; job files never hold keys. "
                "Put the key in an environment variable and name it with api_key_env."
            )
        if isinstance(value, dict) and key not in ("headers", "query"):  # (those: refuse_written_secrets)
            _refuse_secrets(path, value, f"{prefix}{key}.")
