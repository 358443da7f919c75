"""Streaming sha256 of files and streams: read in :data:`CHUNK` pieces, memory flat whatever the size.

:class:`Digest` is a running sha256 with the byte count; :func:`copy` reads a stream to its end
through one (optionally writing each piece on, optionally refusing more than a limit);
:func:`file_digest` is the sha256 and size of a file (``Path`` or any path-like with ``open``).
"""

from __future__ import annotations

import hashlib
from typing import IO, Any

CHUNK = 1 << 20


class TooLarge(ValueError):
    """:func:`copy` read more than its ``limit`` bytes (nothing beyond the limit was written)."""

    def __init__(self, limit: int):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class Digest:
    """The sha256 and byte count of the bytes seen so far."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.size = 0

    def update(self, chunk: Any) -> None:
        """Add ``chunk`` (bytes, bytearray or memoryview)."""
        self._sha.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def copy(src: IO[bytes], dest: IO[bytes] | None = None, *, limit: int | None = None) -> Digest:
    """Read ``src`` to its end, writing each piece to ``dest`` when given; the digest of what was read.

    With ``limit``, :class:`TooLarge` is raised as soon as more than ``limit`` bytes were read
    (the piece that crossed it is not written).
    """
    digest = Digest()
    while chunk := src.read(CHUNK):
        if limit is not None and digest.size + len(chunk) > limit:
            raise TooLarge(limit)
        digest.update(chunk)
        if dest is not None:
            dest.write(chunk)
    return digest


def file_digest(path: Any) -> Digest:
    """The sha256 and size of the file at ``path`` (anything with ``open("rb")``); OSError as raised."""
    with path.open("rb") as fh:
        return copy(fh)
