"""What a job needs beyond the default install, looked for before anything runs.

Ray (`--executor ray`) comes with the `[ray]` extra; an object store's filesystem (s3://, gs://,
az://, hdfs://) with pyarrow, whose PyPI wheels hold S3, Google Cloud Storage and Azure (Azure
from pyarrow 16) but whose other builds may not. Each is found with `importlib.util.find_spec`,
which imports no heavy module: a job needing one that is missing is refused (exit 2) with one
line naming it and the install that brings it, before the run directory is touched. orjson is a
dependency and only a speedup: a job never needs it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batcher.errors import ConfigError
from batcher.storage import is_remote

if TYPE_CHECKING:
    from batcher.job import Job


@dataclass(frozen=True)
class Extra:
    """Something a job may need: the modules it is, and how to install them."""

    #: What it is, in the user's words ("Ray").
    name: str
    modules: tuple[str, ...]
    install: str


#: `--executor ray`: Ray and Ray Data (which needs pandas and fsspec), the `[ray]` extra.
RAY = Extra("Ray", ("ray", "ray.data", "pandas", "fsspec"), "pip install 'batcher[ray]'")
_PYPI_PYARROW = "pip install --force-reinstall 'pyarrow>=16' (PyPI's wheels hold it)"
#: Each object store's scheme, and pyarrow's module for its filesystem.
FILESYSTEMS = {
    "s3": Extra("pyarrow's S3 filesystem", ("pyarrow._s3fs",), _PYPI_PYARROW),
    "gs": Extra("pyarrow's Google Cloud Storage filesystem", ("pyarrow._gcsfs",), _PYPI_PYARROW),
    "az": Extra("pyarrow's Azure Blob Storage filesystem", ("pyarrow._azurefs",), _PYPI_PYARROW),
    "hdfs": Extra("pyarrow's HDFS filesystem", ("pyarrow._hdfs",), _PYPI_PYARROW),
}
#: Schemes that are other names of the same stores (storage.SCHEMES).
_SAME_STORE = {"gcs": "gs", "abfs": "az", "abfss": "az"}


def needed(job: Job) -> dict[Extra, str]:
    """What the job needs beyond the default install, each with the setting that needs it."""
    wanted: dict[Extra, str] = {}
    if job.executor == "ray":
        wanted[RAY] = "--executor ray"
    for setting, path in (("input", job.input), ("output", job.output)):
        if is_remote(path):
            scheme = str(path).partition("://")[0].lower()
            extra = FILESYSTEMS.get(_SAME_STORE.get(scheme, scheme))
            if extra is not None:
                wanted.setdefault(extra, f"{setting} {path}")
    return wanted


def missing_modules(extra: Extra) -> list[str]:
    """The extra's modules that cannot be imported here (found without importing them)."""
    missing: list[str] = []
    for module in extra.modules:
        if module.partition(".")[0] not in missing and not _findable(module):  # (ray: not ray.data too)
            missing.append(module)
    return missing


def check(job: Job) -> None:
    """Refuse a job that needs what is not installed: one line naming each and its install."""
    told = []
    for extra, setting in needed(job).items():
        missing = missing_modules(extra)
        if missing:
            told.append(f"{setting} needs {extra.name} (no module {', '.join(missing)}): {extra.install}")
    if told:
        raise ConfigError("; ".join(told))


def _findable(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (nor, for a submodule, its
    package: `ray.data` is looked for as a file of the `ray` package)."""
    if module in sys.modules:  # imported already, or blocked (None)
        return sys.modules[module] is not None
    package, _, sub = module.partition(".")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # (a package that is broken, or blocked in sys.modules)
        return False
    if spec is None or not sub:
        return spec is not None
    for folder in spec.submodule_search_locations or ():
        path = os.path.join(folder, *sub.split("."))
        if os.path.isfile(os.path.join(path, "__init__.py")) or _module_file(path):
            return True
    return False


def _module_file(path: str) -> bool:
    """A module file of that name: a .py, or a compiled extension (_s3fs.cpython-311-x86_64-linux-gnu.so)."""
    folder, name = os.path.split(path)
    try:
        return any(
            entry == f"{name}.py" or (entry.startswith(f"{name}.") and entry.endswith((".so", ".pyd")))
            for entry in os.listdir(folder)
        )
    except OSError:
        return False
