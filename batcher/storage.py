"""Where a path may point: this machine's disk, or an object store (`s3://`, `gs://`, `az://`).

An input given as a URI is read through pyarrow's filesystems (S3, Google Cloud
Storage, Azure Blob Storage, HDFS), which pyarrow brings with it: nothing more
to install. Credentials and endpoints come the standard way (for S3:
`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`,
`AWS_DEFAULT_REGION`, `AWS_PROFILE`, instance roles); batcher never reads,
writes or shows them. `RemotePath` offers the few things of `pathlib.Path` that
reading an input needs, so a source reads a remote object as it reads a file:
JSONL line by line through a buffer, Parquet by row group through ranged reads.
"""

from __future__ import annotations

import io
import os
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any

from .errors import ConfigError

#: Schemes pyarrow has filesystems for (gs and gcs, az and abfs are the same stores).
SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "hdfs")
#: Bytes read from a remote object at a time when it is read as a stream.
BUFFER_BYTES = 1 << 20


def location(value: str | os.PathLike[str]) -> Path | RemotePath:
    """A local path, or a `RemotePath` for a URI of an object store; ConfigError for other schemes."""
    text = os.fspath(value)
    scheme, sep, _ = text.partition("://")
    if not sep:
        return Path(text)
    scheme = scheme.lower()
    if scheme == "file":
        return Path(text[len("file://") :])
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{text}: batcher reads local paths and s3://, gs://, az:// or hdfs:// URIs, not {scheme}://"
        )
    return RemotePath(text)


def is_remote(value: object) -> bool:
    return isinstance(value, RemotePath)


class RemotePath:
    """An object in an object store, by its URI, with what reading it as an input needs."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self._fs: Any = None
        self._path = ""

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemotePath({self.uri!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemotePath) and other.uri == self.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    @property
    def name(self) -> str:
        return PurePosixPath(self.uri.partition("://")[2]).name

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def filesystem(self) -> tuple[Any, str]:
        """pyarrow's filesystem for the URI's store, and the object's path in it."""
        if self._fs is None:
            from pyarrow import fs

            try:
                self._fs, self._path = fs.FileSystem.from_uri(self.uri)
            except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
                raise ConfigError(f"{self.uri}: cannot use this object store ({_reason(e)})") from None
        return self._fs, self._path

    def _info(self) -> Any:
        filesystem, path = self.filesystem
        try:
            return filesystem.get_file_info(path)
        except Exception as e:
            raise OSError(f"cannot reach it ({_reason(e)})") from None

    def exists(self) -> bool:
        from pyarrow import fs

        return self._info().type != fs.FileType.NotFound

    def is_dir(self) -> bool:
        from pyarrow import fs

        return self._info().type == fs.FileType.Directory

    def stat(self) -> SimpleNamespace:
        """Its size, and when it was last written (an object is replaced whole, never changed)."""
        info = self._info()
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        return SimpleNamespace(st_size=info.size or 0, st_mtime=mtime)

    def open(self, mode: str = "rb") -> io.BufferedReader:
        """The object as a buffered stream, read from its start (for lines)."""
        if mode != "rb":
            raise ValueError("a remote input is opened for reading only")
        filesystem, path = self.filesystem
        try:
            return io.BufferedReader(filesystem.open_input_stream(path), BUFFER_BYTES)
        except Exception as e:
            raise OSError(f"cannot be opened ({_reason(e)})") from None

    def open_random(self) -> Any:
        """The object as a file that reads any range (for Parquet's footer and row groups)."""
        filesystem, path = self.filesystem
        try:
            return filesystem.open_input_file(path)
        except Exception as e:
            raise OSError(f"cannot be opened ({_reason(e)})") from None


def _reason(error: Exception) -> str:
    """An error's first line: pyarrow's messages name the bucket and key, never the credentials."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
