"""What long work shares: a progress callback type and a cooperative stop token."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional


@dataclass
class Progress:
    """One progress report: ``done`` of ``total`` steps, and what is happening."""

    done: int
    total: int
    message: str = ""
    failed: int = 0


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every report."""


class StopToken:
    """Ask long work to stop at its next safe point.

    Work checks :meth:`is_set` between steps (images, batches, downloads). A
    token may also watch a file, so that another process (the web app) can stop
    a training process by creating that file.
    """

    def __init__(self, file: Optional[Path] = None):
        self._event = threading.Event()
        self.file = Path(file) if file else None
        self.reason = ""

    def set(self, reason: str = "") -> None:
        """Ask the work to stop; ``reason`` (when it is not the user's request) is recorded with the run."""
        self.reason = self.reason or reason
        self._event.set()
        if self.file is not None:
            try:
                self.file.parent.mkdir(parents=True, exist_ok=True)
                self.file.touch()
            except OSError:
                pass

    def is_set(self) -> bool:
        if self._event.is_set():
            return True
        if self.file is not None and self.file.exists():
            self._event.set()
            return True
        return False

    def clear(self) -> None:
        self._event.clear()
        if self.file is not None:
            try:
                os.unlink(self.file)
            except OSError:
                pass


def never_stop() -> StopToken:
    return StopToken()


class FileLock:
    """An exclusive lock on a file, released when the holder exits or crashes.

    Used so that one training runs at a time per project, across processes.
    The file also records who holds the lock (``info``), for "busy since" messages.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._fh = None

    def acquire(self, info: dict) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        import json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            import fcntl

            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                return False
        except ImportError:  # Windows: msvcrt locks a byte range
            import msvcrt

            try:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
            except OSError:
                fh.close()
                return False
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps(info))
        fh.flush()
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            try:
                self._fh.seek(0)
                self._fh.truncate()
                self._fh.flush()
            finally:
                self._fh.close()  # closing drops the lock
                self._fh = None

    def holder(self) -> dict | None:
        """Who holds the lock (as recorded), or None when it is free."""
        import json

        probe = FileLock(self.path)
        if probe.acquire({}):
            probe.release()
            return None
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


class EventsFile:
    """A job's events as JSON lines, each with its time (``t``): the file the web app follows.

    Written by the training process (``python -m tl_app train --events``) or by the
    ZeroGPU worker; read by :class:`tl_app.runner.EventReader`.
    """

    def __init__(self, path: Path):
        self._fh = open(path, "a", encoding="utf-8")

    def __call__(self, ev: dict) -> None:
        import json
        import time

        if self._fh is not None:
            self._fh.write(json.dumps({**ev, "t": round(time.time(), 3)}) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
