"""The migration file: a ZIP archive of a JSON manifest and zstd-compressed binary COPY streams.

Layout (format ``migration-manager`` version 1)::

    manifest.json          the manifest (see docs/migration-file.md)
    manifest.json.sha256   hex sha256 of manifest.json
    manifest.json.sig      Ed25519 signature of manifest.json (when the creating side signs)
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
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final, Protocol

import zstandard

from migration_manager import manifest as manifest_model
from migration_manager import signing
from migration_manager.digest import CHUNK, Digest
from migration_manager.errors import ArchiveError, ArchiveLimitError
from migration_manager.signing import (
    SIGNATURE_MAX_BYTES,
    SIGNATURE_MEMBER,
    Signature,
    SigningKey,
    Trust,
    TrustedKey,
)

FORMAT_NAME: Final = "migration-manager"
FORMAT_VERSION: Final = 1
MANIFEST = "manifest.json"
MANIFEST_SUM = "manifest.json.sha256"
_MEMBER = manifest_model.MEMBER_PATTERN
_FIXED = (MANIFEST, MANIFEST_SUM, SIGNATURE_MEMBER)
MANIFEST_MAX_BYTES = 64 << 20  # a manifest of 10,000 tables is about 50 MB
SUM_MAX_BYTES = 128  # 64 hex digits and a newline


class Openable(Protocol):
    """A path-like that can be opened: ``pathlib.Path`` or Airflow's ``ObjectStoragePath``."""

    def open(self, mode: str = ...) -> Any: ...


def data_member(index: int) -> str:
    return f"data/{index:04d}.copy.zst"


class _HashingWriter(io.RawIOBase):
    def __init__(self, target: IO[bytes]):
        self.target = target
        self.digest = Digest()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.digest.update(b)
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
            self.members[member] = {
                "sha256": hashing.digest.hexdigest(),
                "bytes": hashing.digest.size,
            }

    def finish(self, manifest: dict[str, Any], signing_key: SigningKey | None = None) -> bytes:
        body = json.dumps(manifest, indent=1, sort_keys=False, ensure_ascii=False).encode("utf-8")
        if len(body) > MANIFEST_MAX_BYTES:
            raise ArchiveError(
                f"The manifest is {len(body)} bytes, more than the {MANIFEST_MAX_BYTES} bytes readers "
                "accept; migrate fewer tables per file"
            )
        self._zip.writestr(MANIFEST, body)
        self._zip.writestr(MANIFEST_SUM, hashlib.sha256(body).hexdigest() + "\n")
        if signing_key is not None:
            self._zip.writestr(SIGNATURE_MEMBER, signing.sign(body, signing_key))
        self._zip.close()
        return body


class _VerifyingReader(io.RawIOBase):
    """Reads a stored member, hashing as it goes; at EOF the hash must match or ArchiveError.

    Never returns more than the member's declared size: one byte more is refused.
    """

    def __init__(self, raw: IO[bytes], expected: str, member: str, size: int, name: str):
        self.raw = raw
        self.expected = expected
        self.member = member
        self.size = size
        self.remaining = size
        self.name = name
        self.digest = Digest()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        try:
            n = self.raw.readinto(b)  # type: ignore[attr-defined]
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise ArchiveError(
                f"{self.name}: member {self.member} is damaged ({exc}); create the migration file again"
            ) from exc
        if n:
            if n > self.remaining:
                raise ArchiveLimitError(
                    f"{self.name}: member {self.member} fails its checksum: it holds more than the "
                    f"{self.size} bytes its manifest declares (its limit); the file is corrupt or was "
                    "modified. Create the migration file again"
                )
            self.digest.update(memoryview(b)[:n])
            self.remaining -= n
        elif self.digest.hexdigest() != self.expected or self.remaining != 0:
            raise ArchiveError(
                f"{self.name}: member {self.member} fails its checksum: the file is corrupt or was "
                "modified; create the migration file again"
            )
        return n


class _InflateLimit(io.RawIOBase):
    """A decompressed stream that refuses to give more than ``limit`` bytes (the declared size)."""

    def __init__(self, inner: Any, limit: int, member: str, name: str):
        self.inner = inner
        self.limit = limit
        self.given = 0
        self.member = member
        self.name = name

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self.inner.read(len(b))
        n = len(data)
        self.given += n
        if self.given > self.limit:
            raise ArchiveLimitError(
                f"{self.name}: member {self.member} inflates beyond the {self.limit} bytes its "
                "manifest declares (raw_bytes); refusing it. Create the migration file again"
            )
        b[:n] = data
        return n


def _damaged(name: str, member: str, exc: BaseException) -> ArchiveError:
    return ArchiveError(
        f"{name}: member {member} is damaged ({exc}); create the migration file again"
    )


class ArchiveReader:
    """Opens a migration file: layout, sizes, the manifest's checksum, model and signature.

    Every member is read with a limit: the manifest and its checksum and signature members with
    fixed caps (``MANIFEST_MAX_BYTES``, ``SUM_MAX_BYTES``, ``SIGNATURE_MAX_BYTES``), each data
    member with the size its manifest declares (``members[...].bytes``, stored bytes) and, once
    decompressed, the table's ``raw_bytes``. Data is streamed, never read whole.

    ``trust`` (keys and ``allow_unsigned``) makes the reader refuse a file that is not signed
    by a trusted key; without it the signature is only reported (``signature``).
    """

    def __init__(
        self, fileobj: IO[bytes], *, name: str = "migration file", trust: Trust | None = None
    ):
        self.name = name
        try:
            self._zip = zipfile.ZipFile(fileobj, "r")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise ArchiveError(
                f"{name} is not a migration file or is truncated ({exc}); create it again"
            ) from exc
        infos = self._zip.infolist()
        names = [i.filename for i in infos]
        duplicated = (
            sorted({n for n in names if names.count(n) > 1})
            if len(set(names)) != len(names)
            else []
        )
        if duplicated:
            raise ArchiveError(
                f"{name} holds member(s) {', '.join(map(repr, duplicated))} more than once; ZIP tools "
                "disagree on which copy counts, so the file is refused. Create the migration file again"
            )
        self._infos = {i.filename: i for i in infos}
        for member in names:
            if member not in _FIXED and not _MEMBER.match(member):
                raise ArchiveError(
                    f"{name} has an unexpected member {member!r} (path outside the archive layout); refusing it"
                )
        if MANIFEST not in names or MANIFEST_SUM not in names:
            raise ArchiveError(f"{name} has no manifest; it is not a migration file of this tool")
        body = self._read_capped(MANIFEST, MANIFEST_MAX_BYTES)
        try:
            expected = self._read_capped(MANIFEST_SUM, SUM_MAX_BYTES).decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise ArchiveError(
                f"{name}: the manifest is damaged ({exc}); create the migration file again"
            ) from exc
        if hashlib.sha256(body).hexdigest() != expected:
            raise ArchiveError(
                f"{name}: the manifest fails its checksum (modified or corrupt); create the migration file again"
            )
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArchiveError(f"{name}: the manifest is not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise ArchiveError(
                f"{name}: the manifest is not a JSON object; create the migration file again"
            )
        fmt, version = doc.get("format"), doc.get("format_version")
        if fmt != FORMAT_NAME:
            raise ArchiveError(f"{name} is of format {fmt!r}, not {FORMAT_NAME!r}")
        if version != FORMAT_VERSION:
            raise ArchiveError(
                f"{name} is format version {version}; this tool reads version {FORMAT_VERSION}. "
                "Create the file with the same version of the tool that executes it."
            )
        members = doc.get("members") or {}
        if isinstance(members, dict):
            for member in members:
                if (
                    not isinstance(member, str)
                    or not _MEMBER.match(member)
                    or member not in self._infos
                ):
                    raise ArchiveError(
                        f"{name}: the manifest names member {member!r}, which the archive lacks or may not contain"
                    )
        self.manifest: manifest_model.Manifest = manifest_model.validate(doc, name=name)
        for member, info in self._infos.items():
            if member in _FIXED:
                continue
            if member not in self.manifest.members:
                raise ArchiveError(
                    f"{name}: member {member} is not listed in the manifest; refusing the file"
                )
            if info.compress_type != zipfile.ZIP_STORED:
                raise ArchiveError(
                    f"{name}: member {member} is compressed in the ZIP (method {info.compress_type}); "
                    "migration files store their members as they are. Create the migration file again"
                )
        self._raw_limits = {
            t.data.member: (t.data.raw_bytes, t.name)
            for t in self.manifest.tables
            if t.data is not None
        }
        signature = (
            self._read_capped(SIGNATURE_MEMBER, SIGNATURE_MAX_BYTES)
            if SIGNATURE_MEMBER in self._infos
            else None
        )
        self._body, self._signature_member = body, signature
        self.signature: Signature = signing.check(
            body, signature, trust.keys if trust is not None else None
        )
        if trust is not None:
            signing.enforce(self.signature, trust, name=name)

    def signature_against(self, keys: tuple[TrustedKey, ...]) -> Signature:
        """The signature checked against ``keys`` (the reader keeps the manifest's bytes)."""
        return signing.check(self._body, self._signature_member, keys)

    def _read_capped(self, member: str, limit: int) -> bytes:
        """A small member, whole: refused when it is (or inflates to) more than ``limit`` bytes."""
        info = self._infos[member]
        too_big = ArchiveLimitError(
            f"{self.name}: member {member} is larger than its limit of {limit} bytes "
            f"({info.file_size} bytes declared in the ZIP); refusing the file. Create the migration file again"
        )
        if info.file_size > limit:
            raise too_big
        try:
            with self._zip.open(member) as fh:
                data = fh.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ArchiveError(
                f"{self.name}: the manifest is damaged ({exc}); create the migration file again"
            ) from exc
        if len(data) > limit:
            raise too_big
        return data

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _member_info(self, member: str) -> manifest_model.MemberInfo:
        try:
            return self.manifest.members[member]
        except KeyError:
            raise ArchiveError(f"{self.name}: no member {member!r}") from None

    @contextmanager
    def raw(self, member: str) -> Iterator[IO[bytes]]:
        """The stored (compressed) bytes of ``member``, checksum-verified as they are read."""
        info = self._member_info(member)
        try:
            opened = self._zip.open(member)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise _damaged(self.name, member, exc) from exc
        with opened as raw:
            yield io.BufferedReader(
                _VerifyingReader(raw, info.sha256, member, info.bytes, self.name), CHUNK
            )

    @contextmanager
    def data(self, member: str) -> Iterator[IO[bytes]]:
        """The decompressed COPY stream of ``member``, never more than its table's ``raw_bytes``."""
        limit, _table = self._raw_limits.get(member, (0, ""))
        with self.raw(member) as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK, closefd=False)
            try:
                yield io.BufferedReader(_InflateLimit(reader, limit, member, self.name), CHUNK)
                while raw.read(
                    CHUNK
                ):  # to EOF, so the checksum is checked even if unread bytes follow
                    pass
            except zstandard.ZstdError as exc:
                raise ArchiveError(
                    f"{self.name}: member {member} does not decompress ({exc}); the file is damaged: "
                    "create the migration file again"
                ) from exc
            finally:
                reader.close()

    def verify(self) -> None:
        """Read every data member once and check its checksum (before anything is applied)."""
        for member in self.manifest.members:
            with self.raw(member) as raw:
                while raw.read(CHUNK):
                    pass


@contextmanager
def open_archive(
    path: Openable | Path, *, name: str | None = None, trust: Trust | None = None
) -> Iterator[ArchiveReader]:
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
        with ArchiveReader(fh, name=label, trust=trust) as reader:
            yield reader
    finally:
        fh.close()
