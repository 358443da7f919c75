"""The migration file: a ZIP archive of a JSON manifest and zstd-compressed binary COPY streams.

Layout (format ``migration-manager`` version 1)::

    manifest.json          the manifest (see docs/migration-file.md)
    manifest.json.sha256   hex sha256 of manifest.json
    data/0001.copy.zst     table data: PostgreSQL binary COPY, zstd-compressed
    ...

Members are stored (not deflated): the data is already compressed. Every data member's sha256
(of its stored bytes) is in the manifest; readers verify the manifest's own checksum on open,
and a data member's checksum while streaming it, before the unit that loads it commits.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Protocol

import zstandard

from migration_manager.errors import ArchiveError

FORMAT_NAME = "migration-manager"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
_MEMBER = re.compile(r"^data/[0-9]{4,6}\.copy\.zst$")
CHUNK = 1 << 20


class Openable(Protocol):
    """A path-like that can be opened: ``pathlib.Path`` or Airflow's ``ObjectStoragePath``."""

    def open(self, mode: str = ...) -> Any: ...


def data_member(index: int) -> str:
    return f"data/{index:04d}.copy.zst"


class _HashingWriter(io.RawIOBase):
    def __init__(self, target: IO[bytes]):
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.sha.update(b)
        self.size += len(b)
        return self.target.write(b)


class ArchiveWriter:
    """Writes a migration file; data members first, the manifest last."""

    def __init__(self, fileobj: IO[bytes], *, level: int = 1):
        self._zip = zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self._level = level
        self.members: dict[str, dict[str, int | str]] = {}

    @contextmanager
    def data(self, member: str) -> Iterator[IO[bytes]]:
        """A writable stream; bytes written are zstd-compressed into ``member``."""
        if not _MEMBER.match(member):
            raise ValueError(member)
        with self._zip.open(member, "w", force_zip64=True) as raw:
            hashing = _HashingWriter(raw)
            compressor = zstandard.ZstdCompressor(level=self._level, threads=-1)
            with compressor.stream_writer(hashing, closefd=False) as writer:  # type: ignore[arg-type]
                yield writer
            self.members[member] = {"sha256": hashing.sha.hexdigest(), "bytes": hashing.size}

    def finish(self, manifest: dict[str, Any]) -> bytes:
        body = json.dumps(manifest, indent=1, sort_keys=False, ensure_ascii=False).encode("utf-8")
        self._zip.writestr(MANIFEST, body)
        self._zip.writestr(MANIFEST_SUM, hashlib.sha256(body).hexdigest() + "\n")
        self._zip.close()
        return body


class _VerifyingReader(io.RawIOBase):
    """Reads a stored member, hashing as it goes; at EOF the hash must match or ArchiveError."""

    def __init__(self, raw: IO[bytes], expected: str, member: str, size: int):
        self.raw = raw
        self.expected = expected
        self.member = member
        self.remaining = size
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            n = self.raw.readinto(b)  # type: ignore[attr-defined]
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ArchiveError(f"Migration file member {self.member} is damaged: {exc}") from exc
        if n:
            self.sha.update(memoryview(b)[:n])
            self.remaining -= n
        elif self.sha.hexdigest() != self.expected or self.remaining != 0:
            raise ArchiveError(
                f"Migration file member {self.member} fails its checksum: the file is corrupt or was modified; "
                "create the migration file again"
            )
        return n


class ArchiveReader:
    """Opens a migration file and checks its format and the manifest's checksum."""

    def __init__(self, fileobj: IO[bytes], *, name: str = "migration file"):
        self.name = name
        try:
            self._zip = zipfile.ZipFile(fileobj, "r")
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(
                f"{name} is not a migration file or is truncated ({exc}); create it again"
            ) from exc
        names = self._zip.namelist()
        for member in names:
            if member not in (MANIFEST, MANIFEST_SUM) and not _MEMBER.match(member):
                raise ArchiveError(
                    f"{name} has an unexpected member {member!r} (path outside the archive layout); refusing it"
                )
        if MANIFEST not in names or MANIFEST_SUM not in names:
            raise ArchiveError(f"{name} has no manifest; it is not a migration file of this tool")
        try:
            body = self._zip.read(MANIFEST)
            expected = self._zip.read(MANIFEST_SUM).decode("ascii").strip()
        except (zipfile.BadZipFile, OSError, EOFError, UnicodeDecodeError) as exc:
            raise ArchiveError(
                f"{name}: the manifest is damaged ({exc}); create the migration file again"
            ) from exc
        if hashlib.sha256(body).hexdigest() != expected:
            raise ArchiveError(
                f"{name}: the manifest fails its checksum (modified or corrupt); create the migration file again"
            )
        try:
            self.manifest: dict[str, Any] = json.loads(body)
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"{name}: the manifest is not valid JSON ({exc})") from exc
        fmt, version = self.manifest.get("format"), self.manifest.get("format_version")
        if fmt != FORMAT_NAME:
            raise ArchiveError(f"{name} is of format {fmt!r}, not {FORMAT_NAME!r}")
        if version != FORMAT_VERSION:
            raise ArchiveError(
                f"{name} is format version {version}; this tool reads version {FORMAT_VERSION}. "
                "Create the file with the same version of the tool that executes it."
            )
        members = self.manifest.get("members") or {}
        for member in members:
            if not _MEMBER.match(member) or member not in names:
                raise ArchiveError(
                    f"{name}: the manifest names member {member!r}, which the archive lacks or may not contain"
                )

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _member_info(self, member: str) -> dict[str, Any]:
        try:
            info: dict[str, Any] = self.manifest["members"][member]
        except KeyError:
            raise ArchiveError(f"{self.name}: no member {member!r}") from None
        return info

    @contextmanager
    def raw(self, member: str) -> Iterator[IO[bytes]]:
        """The stored (compressed) bytes of ``member``, checksum-verified as they are read."""
        info = self._member_info(member)
        with self._zip.open(member) as raw:
            yield io.BufferedReader(
                _VerifyingReader(raw, info["sha256"], member, int(info["bytes"])), CHUNK
            )

    @contextmanager
    def data(self, member: str) -> Iterator[IO[bytes]]:
        """The decompressed COPY stream of ``member``."""
        with self.raw(member) as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, closefd=False)
            try:
                yield reader
                while raw.read(
                    CHUNK
                ):  # to EOF, so the checksum is checked even if unread bytes follow
                    pass
            except zstandard.ZstdError as exc:
                raise ArchiveError(
                    f"{self.name}: member {member} does not decompress ({exc}); the file is damaged"
                ) from exc
            finally:
                reader.close()

    def verify(self) -> None:
        """Read every data member once and check its checksum (before anything is applied)."""
        for member in self.manifest.get("members") or {}:
            with self.raw(member) as raw:
                while raw.read(CHUNK):
                    pass


@contextmanager
def open_archive(path: Openable | Path, *, name: str | None = None) -> Iterator[ArchiveReader]:
    label = name or str(path)
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise ArchiveError(
            f"Migration file {label} does not exist; check the migration_file param"
        ) from exc
    except OSError as exc:
        raise ArchiveError(f"Migration file {label} cannot be opened ({exc})") from exc
    try:
        with ArchiveReader(fh, name=label) as reader:
            yield reader
    finally:
        fh.close()
