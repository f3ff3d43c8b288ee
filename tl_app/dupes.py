"""Perceptual hashes: near-duplicate pictures (recompressed, resized, re-saved copies).

Exact duplicates are caught by the content hash at import. Near-duplicates
(the same "photo unavailable" placeholder served as different JPEGs, or one
photo at two sizes) have perceptual hashes a few bits apart. Hashes are cached
per content hash in the project database.
"""

from __future__ import annotations

import threading
from typing import Iterable, Optional

#: Hamming distance (of 64 bits) at or under which two pictures count as the same.
NEAR_DISTANCE = 6


def phash(im) -> int:
    """64-bit perceptual hash (DCT of the 32x32 grayscale picture) of a PIL image."""
    import imagehash

    return int(str(imagehash.phash(im)), 16)


def phash_stored(src) -> int:
    """Perceptual hash of a stored JPEG (a path or a file object), computed the same way everywhere."""
    from PIL import Image

    with Image.open(src, formats=["JPEG"]) as im:
        im.draft("L", (64, 64))
        return phash(im.convert("L"))


def distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def _table(project) -> None:
    with project._write() as con:
        con.execute("CREATE TABLE IF NOT EXISTS phash(sha256 TEXT PRIMARY KEY, value TEXT NOT NULL)")


def item_hashes(project, items: Optional[Iterable] = None) -> dict[str, int]:
    """Perceptual hash per item id (active items by default), computing and caching missing ones."""
    _table(project)
    items = list(project.items() if items is None else items)
    with project._read() as con:
        known = {r["sha256"]: int(r["value"], 16) for r in con.execute("SELECT sha256, value FROM phash")}
    out, new = {}, []
    for it in items:
        h = known.get(it.sha256)
        if h is None:
            h = phash_stored(project.path_of(it))
            new.append((it.sha256, f"{h:016x}"))
        out[it.id] = h
    if new:
        with project._write() as con:
            con.executemany("INSERT OR REPLACE INTO phash(sha256, value) VALUES(?, ?)", new)
    return out


def remember(project, sha256: str, h: int) -> None:
    _table(project)
    with project._write() as con:
        save_hashes(con, [(sha256, h)])


def save_hashes(con, pairs: Iterable[tuple[str, int]]) -> None:
    """Cache ``(sha256, hash)`` pairs inside the caller's write transaction (the table must exist)."""
    con.executemany("INSERT OR REPLACE INTO phash(sha256, value) VALUES(?, ?)", [(s, f"{h:016x}") for s, h in pairs])


class NearDupIndex:
    """The perceptual hashes of a project's pictures, to ask "have we got this one already?"."""

    def __init__(self, project, max_distance: int = NEAR_DISTANCE):
        self.max_distance = max_distance
        self._lock = threading.Lock()
        self._hashes: dict[str, int] = item_hashes(project)

    def find(self, h: int) -> Optional[str]:
        """The id of a stored picture within ``max_distance`` of ``h``, or None."""
        with self._lock:
            best, best_d = None, self.max_distance + 1
            for iid, other in self._hashes.items():
                d = distance(h, other)
                if d < best_d:
                    best, best_d = iid, d
            return best

    def add(self, item_id: str, h: int) -> None:
        with self._lock:
            self._hashes[item_id] = h
