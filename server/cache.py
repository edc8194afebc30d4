"""The video cache: each video's model input (its sampled frames' backbone features), so that a follow-up
question about the same video skips decoding and the backbone.

Keyed by the SHA-256 of the video's bytes (computed by the server from the bytes it received, never taken
from a caller) and the version of the model that computed the features: an entry can only ever answer for
the very bytes it was made from, and only for that model. Least-recently-used entries are evicted to keep
the bytes held under the budget (``--cache-mb``); an entry larger than the whole budget is not kept.
Used from the serving event loop only (no locking).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from .metrics import ServerMetrics

#: A video's key: (hex SHA-256 of its bytes, model version).
CacheKey = tuple[str, str]


def video_sha256(data: bytes) -> str:
    """Lower-case hex SHA-256 of a video's bytes (hashlib releases the GIL: callers run it off the loop)."""
    return hashlib.sha256(data).hexdigest()


def is_sha256(text: str) -> bool:
    """Whether ``text`` is 64 lower-case hex digits."""
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


@dataclass
class _Entry:
    sha256: str
    model_version: str
    value: Any
    nbytes: int


class VideoCache:
    """LRU of prepared clips under ``max_bytes`` (0: nothing is ever kept)."""

    def __init__(self, max_bytes: int, metrics: ServerMetrics) -> None:
        if max_bytes < 0:
            raise ValueError(f"the cache budget must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._metrics = metrics
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the entries now (never above ``max_bytes``)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, sha256: str, model_version: str) -> Any | None:
        """The cached value for these bytes and this model (now the most recently used), or None; counts a
        hit or a miss."""
        entry = self._entries.get((sha256, model_version))
        # The key already pins both; the entry's own record is checked again so that no bookkeeping bug
        # can ever hand one video's features to another.
        if entry is None or entry.sha256 != sha256 or entry.model_version != model_version:
            self._metrics.cache_misses.inc()
            return None
        self._entries.move_to_end((sha256, model_version))
        self._metrics.cache_hits.inc()
        return entry.value

    def put(self, sha256: str, model_version: str, value: Any, nbytes: int) -> bool:
        """Keep ``value`` (``nbytes`` large), evicting the least recently used entries to stay under the
        budget; False (nothing kept) when it alone is over the budget or the cache is off."""
        if not self.enabled or nbytes > self.max_bytes:
            return False
        key = (sha256, model_version)
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        while self._entries and self._bytes + nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes
            self._metrics.cache_evictions.inc()
        self._entries[key] = _Entry(sha256, model_version, value, int(nbytes))
        self._bytes += int(nbytes)
        self._publish()
        return True

    def clear(self) -> None:
        """Drop every entry (not counted as evictions)."""
        self._entries.clear()
        self._bytes = 0
        self._publish()

    def _publish(self) -> None:
        self._metrics.cache_bytes.set(self._bytes)
        self._metrics.cache_entries.set(len(self._entries))
