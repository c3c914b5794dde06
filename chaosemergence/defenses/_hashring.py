"""Route keys to nodes with consistent hashing over virtual nodes."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Iterable

__all__ = ["HashRing", "stable_hash"]

_POINTS_PER_DIGEST = 8  # a 64-byte blake2b digest yields eight 64-bit ring points


def stable_hash(key: str) -> int:
    """Return a 64-bit hash of ``key`` that is the same in every process (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")


class HashRing:
    """Consistent-hash ring: each node owns ``vnodes`` points, a key goes to the next point.

    With the default 2048 virtual nodes, ten nodes each own 10% +- about 2% of the key
    space, and adding a node moves only the keys it takes over (about 1/(N+1) of them).
    Not thread-safe for writes; lookups are plain reads.
    """

    def __init__(self, nodes: Iterable[str] = (), vnodes: int = 2048) -> None:
        if vnodes < 1:
            msg = f"vnodes must be >= 1, got {vnodes!r}"
            raise ValueError(msg)
        self.vnodes = vnodes
        # Guarded by the single writer (add/remove rebuild both lists before swapping).
        self._nodes: list[str] = []
        self._points: list[int] = []
        self._owners: list[str] = []
        for node in nodes:
            if node not in self._nodes:
                self._nodes.append(node)
        self._rebuild()

    def _node_points(self, node: str) -> list[int]:
        points: list[int] = []
        digests = -(-self.vnodes // _POINTS_PER_DIGEST)
        for i in range(digests):
            digest = hashlib.blake2b(f"{node}#{i}".encode(), digest_size=64).digest()
            for j in range(_POINTS_PER_DIGEST):
                points.append(int.from_bytes(digest[8 * j : 8 * j + 8], "big"))
        return points[: self.vnodes]

    def _rebuild(self) -> None:
        pairs = sorted((point, node) for node in self._nodes for point in self._node_points(node))
        self._points = [p for p, _ in pairs]
        self._owners = [n for _, n in pairs]

    @property
    def nodes(self) -> tuple[str, ...]:
        """The nodes on the ring, in insertion order."""
        return tuple(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._nodes

    def node_for(self, key: str) -> str:
        """Return the node that owns ``key``."""
        if not self._points:
            msg = f"cannot route {key!r}: the hash ring has no nodes"
            raise LookupError(msg)
        i = bisect.bisect(self._points, stable_hash(key))
        return self._owners[i if i < len(self._points) else 0]

    def nodes_for(self, key: str, count: int) -> list[str]:
        """Return up to ``count`` distinct nodes for ``key``, walking the ring clockwise."""
        if not self._points:
            msg = f"cannot route {key!r}: the hash ring has no nodes"
            raise LookupError(msg)
        wanted = min(count, len(self._nodes))
        found: list[str] = []
        i = bisect.bisect(self._points, stable_hash(key))
        size = len(self._points)
        for step in range(size):
            owner = self._owners[(i + step) % size]
            if owner not in found:
                found.append(owner)
                if len(found) == wanted:
                    break
        return found

    def add(self, node: str) -> None:
        """Put ``node`` on the ring (no-op if present)."""
        if node not in self._nodes:
            self._nodes.append(node)
            self._rebuild()

    def remove(self, node: str) -> None:
        """Take ``node`` off the ring (no-op if absent)."""
        if node in self._nodes:
            self._nodes.remove(node)
            self._rebuild()

    def shares(self) -> dict[str, float]:
        """Return the exact fraction of the 64-bit key space each node owns."""
        shares = dict.fromkeys(self._nodes, 0.0)
        if not self._points:
            return shares
        full = float(2**64)
        previous = self._points[-1] - 2**64
        for point, owner in zip(self._points, self._owners, strict=True):
            shares[owner] += (point - previous) / full
            previous = point
        return shares

    def shuffle_shard(self, key: str, size: int) -> list[str]:
        """Return a stable pseudo-random subset of ``size`` nodes for ``key`` (shuffle sharding).

        Two keys share all their nodes only with probability about 1 / C(N, size).
        """
        ordered = sorted(self._nodes)
        if size >= len(ordered):
            return ordered
        return random.Random(stable_hash(key)).sample(ordered, size)

    def snapshot(self) -> dict[str, object]:
        """Return the nodes and their key-space shares as JSON-able data."""
        return {"nodes": list(self._nodes), "vnodes": self.vnodes, "shares": self.shares()}

    def reset(self) -> None:
        """Keep the nodes; there is no other state (present for the defense contract)."""
