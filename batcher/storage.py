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

from batcher.errors import ConfigError

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

    def __getstate__(self) -> dict[str, str]:
        # Sent to a Ray task as its URI alone: the filesystem is made again where it is read, from
        # that machine's own credentials (a pickled S3 filesystem would carry the keys it holds).
        return {"uri": self.uri}

    def __setstate__(self, state: dict[str, str]) -> None:
        self.__init__(state["uri"])  # type: ignore[misc]

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


class RemoteDirectory:
    """A "directory" of an object store (a key prefix), with what keeping a run there needs: whole
    objects put and read, and the objects under a prefix listed. A put is atomic: the object is
    there whole or not at all; nothing is ever appended to."""

    def __init__(self, uri: str):
        self.uri = uri.rstrip("/")
        self._remote = RemotePath(self.uri)

    def __str__(self) -> str:
        return self.uri

    def _key(self, name: str) -> tuple[Any, str]:
        filesystem, path = self._remote.filesystem
        return filesystem, f"{path}/{name}" if name else path

    def put(self, name: str, data: bytes) -> None:
        filesystem, path = self._key(name)
        try:
            with filesystem.open_output_stream(path) as out:
                out.write(data)
        except Exception as e:
            raise OSError(f"cannot put {self.uri}/{name} ({_reason(e)})") from None

    def put_file(self, name: str, local: Path) -> None:
        """A local file, put whole as the object `name` (read and sent in pieces)."""
        filesystem, path = self._key(name)
        try:
            with local.open("rb") as f, filesystem.open_output_stream(path) as out:
                while chunk := f.read(BUFFER_BYTES * 8):
                    out.write(chunk)
        except OSError as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise OSError(f"cannot put {self.uri}/{name} ({_reason(e)})") from None
        except Exception as e:
            raise OSError(f"cannot put {self.uri}/{name} ({_reason(e)})") from None

    def read(self, name: str) -> bytes | None:
        """The object `name`'s bytes, or None when there is none."""
        from pyarrow import fs

        filesystem, path = self._key(name)
        try:
            if filesystem.get_file_info(path).type == fs.FileType.NotFound:
                return None
            with filesystem.open_input_stream(path) as f:
                return f.read()
        except Exception as e:
            raise OSError(f"cannot read {self.uri}/{name} ({_reason(e)})") from None

    def copy_to(self, name: str, local: Path, *, append: bool) -> None:
        """The object `name`, written to (or appended to) the local file `local`, in pieces."""
        filesystem, path = self._key(name)
        try:
            with filesystem.open_input_stream(path) as f, local.open("ab" if append else "wb") as out:
                while chunk := f.read(BUFFER_BYTES * 8):
                    out.write(chunk)
        except OSError as e:
            if e.errno is not None:
                raise
            raise OSError(f"cannot read {self.uri}/{name} ({_reason(e)})") from None
        except Exception as e:
            raise OSError(f"cannot read {self.uri}/{name} ({_reason(e)})") from None

    def list(self, prefix: str) -> list[str]:
        """The names (relative to this directory) of every object under `prefix`."""
        from pyarrow import fs

        filesystem, base = self._key("")
        try:
            infos = filesystem.get_file_info(
                fs.FileSelector(f"{base}/{prefix}", recursive=True, allow_not_found=True)
            )
        except Exception as e:
            raise OSError(f"cannot list {self.uri}/{prefix} ({_reason(e)})") from None
        return sorted(i.path[len(base) + 1 :] for i in infos if i.type == fs.FileType.File)

    def delete(self, name: str) -> None:
        filesystem, path = self._key(name)
        try:
            filesystem.delete_file(path)
        except FileNotFoundError:
            pass
        except Exception as e:
            raise OSError(f"cannot delete {self.uri}/{name} ({_reason(e)})") from None
