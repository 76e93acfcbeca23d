"""Checksums of streamed bytes, shared by client and server: SHA-256, and XXH3-128 where both ends have it.

SHA-256 runs near 2 GB/s on one core (with the CPU's SHA instructions), slower than a loopback gRPC
stream, so verifying a volume by it costs about as much CPU as receiving it. XXH3-128 runs near
30 GB/s. It is not a cryptographic hash: it guards the bytes against a broken transfer, not against
someone who crafts a collision; the datastore's SHA-256 of a stored file stays the content's identity,
and a server that verified an upload by XXH3-128 alone computes it after answering.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable, Optional

import xxhash

__all__ = ["SHA256", "XXH3_128", "SUPPORTED", "HEX_DIGITS", "is_hex_digest", "Digests", "fastest", "mismatch"]

SHA256 = "sha256"
XXH3_128 = "xxh3_128"
SUPPORTED = (SHA256, XXH3_128)
_HEX = frozenset("0123456789abcdef")
HEX_DIGITS = {SHA256: 64, XXH3_128: 32}


def is_hex_digest(value: str, name: str) -> bool:
    """Whether ``value`` is a well-formed lower-case hex digest of the named kind."""
    return len(value) == HEX_DIGITS[name] and not set(value) - _HEX


class Digests:
    """Hashes a byte stream with the digests asked for, in one pass.

    Args:
        names: the digests to compute (of ``SUPPORTED``).
    """

    def __init__(self, names: Iterable[str]) -> None:
        self._hashers: dict[str, Any] = {}
        for name in names:
            if name == SHA256:
                self._hashers[name] = hashlib.sha256()
            elif name == XXH3_128:
                self._hashers[name] = xxhash.xxh3_128()
            else:
                raise ValueError(f"unknown digest {name!r}")

    def update(self, data: Any) -> None:
        """Adds bytes (any buffer) to every digest."""
        for h in self._hashers.values():
            h.update(data)

    def hexdigest(self, name: str) -> Optional[str]:
        """The named digest of what was added, or None when it was not asked for."""
        h = self._hashers.get(name)
        return None if h is None else str(h.hexdigest())

    @staticmethod
    def of(data: Any, name: str) -> str:
        """The named digest of one buffer."""
        d = Digests([name])
        d.update(data)
        return d.hexdigest(name) or ""


def fastest(header: Any) -> Optional[str]:
    """The fastest checksum a ``ContentHeader`` carries (its name), or None when it carries none."""
    if header.xxh3_128:
        return XXH3_128
    if header.sha256:
        return SHA256
    return None


def mismatch(header: Any, data: Any) -> Optional[str]:
    """Checks bytes against the fastest checksum a ``ContentHeader`` carries.

    Returns:
        None when they match (or the header carries no checksum); else a message naming the checksum.
    """
    name = fastest(header)
    if name is None:
        return None
    expected = header.xxh3_128 if name == XXH3_128 else header.sha256
    actual = Digests.of(data, name)
    return None if actual == expected else f"the bytes have {name} {actual}; the header says {expected}"
