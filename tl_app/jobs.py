"""What long work shares: a progress callback type and a cooperative stop token."""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional


@dataclass(slots=True)
class Progress:
    """One progress report: ``done`` of ``total`` steps, and what is happening."""

    done: int
    total: int
    message: str = ""
    failed: int = 0
    #: what is counted, when a step reports more than one kind of count ("stages", "pictures")
    unit: str = ""


ProgressFn = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    """A progress callback that ignores every report."""


# --- time left ------------------------------------------------------------------------------
class TimeLeft:
    """Turn ``done of total`` reports over time into an estimate of the seconds left.

    One estimator per long step, fed every report (:meth:`update`); every front (the
    CLI's stderr, the UI's progress, a training's events) words it with
    :func:`time_left_words`. The rate is measured from the first report with some work
    done (set-up before it, such as opening a zip or loading a model, is not counted),
    then smoothed over intervals of at least ``interval`` seconds, so one slow picture
    or batch does not swing the figure. Nothing is estimated until ``warmup`` seconds
    and at least ``min_done`` steps have passed: a guess from the first second is
    mostly noise. ``clock`` is for tests.
    """

    def __init__(self, *, warmup: float = 2.0, min_done: int = 2, interval: float = 1.0, smoothing: float = 0.3,
                 clock: Callable[[], float] = time.monotonic):
        self.warmup, self.min_done, self.interval, self.smoothing = warmup, min_done, interval, smoothing
        self._clock = clock
        self._start: Optional[tuple[float, int]] = None    # (time, done) of the first report with work done
        self._last: Optional[tuple[float, int]] = None     # the last point the rate was measured at
        self._rate: Optional[float] = None                 # smoothed steps per second
        self.seconds: Optional[float] = None               # the latest estimate (None: not enough data yet)

    def update(self, done: int, total: int) -> Optional[float]:
        """Take one report in; the seconds left (None until there is enough data, 0 when done)."""
        now = self._clock()
        if total <= 0:
            self.seconds = None
            return None
        if done >= total:
            self.seconds = 0.0
            return 0.0
        if self._start is None:
            if done <= 0:
                return None
            self._start = self._last = (now, done)
            return None
        t0, d0 = self._start
        if done < d0:  # counting started over (a new phase): so does the estimate
            self._start = self._last = (now, done)
            self._rate = self.seconds = None
            return None
        t_last, d_last = self._last
        if now - t_last >= self.interval and done > d_last:
            inst = (done - d_last) / (now - t_last)
            if self._rate is None:
                self._rate = (done - d0) / (now - t0) if now > t0 else inst
            else:
                self._rate += self.smoothing * (inst - self._rate)
            self._last = (now, done)
        if self._rate is None or self._rate <= 0 or now - t0 < self.warmup or done - d0 < self.min_done:
            self.seconds = None
            return None
        self.seconds = (total - done) / self._rate
        return self.seconds


def time_left_words(seconds: Optional[float]) -> str:
    """"about 40 s left", "about 3 min left", "about 1 h 10 min left" ('' when unknown).

    Rounded the way a person says it: the figure is an estimate.
    """
    if seconds is None:
        return ""
    s = max(0, int(round(seconds)))
    if s < 10:
        return "a few seconds left"
    if s < 60:
        return f"about {int(round(s / 5.0)) * 5} s left"
    if s < 120:
        return f"about 1 min {int(round((s - 60) / 10.0)) * 10:02d} s left" if s >= 65 else "about 1 min left"
    if s < 3600:
        return f"about {int(round(s / 60.0))} min left"
    h, m = divmod(int(round(s / 60.0)), 60)
    return f"about {h} h {m} min left" if m else f"about {h} h left"


def progress_words(done: int, total: int, left: Optional[float] = None, unit: str = "") -> str:
    """"120 of 500 pictures, about 2 min left": one step's progress as every front words it."""
    text = f"{done:,} of {total:,}" + (f" {unit}" if unit else "")
    words = time_left_words(left) if done < total else ""
    return f"{text}, {words}" if words else text


class ProgressLine:
    """A front's view of one long step: feed it reports, read one line of words back.

    ``ProgressLine("pictures")(p)`` gives "120 of 500 pictures, about 2 min left";
    the same object keeps the :class:`TimeLeft` estimate between reports.
    """

    def __init__(self, unit: str = "", *, estimator: Optional[TimeLeft] = None):
        self.unit = unit
        self.eta = estimator or TimeLeft()

    def __call__(self, p: Progress) -> str:
        left = self.eta.update(p.done, p.total)
        return progress_words(p.done, p.total, left, self.unit)


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


# The stop token and progress callback of the step running in this thread, for helpers deep inside it
# (caches filled on the way, such as fingerprints and picture quality for Review) that take neither.
_CURRENT_STOP: contextvars.ContextVar[Optional[StopToken]] = contextvars.ContextVar("tl_app_stop", default=None)
_CURRENT_PROGRESS: contextvars.ContextVar[Optional[ProgressFn]] = contextvars.ContextVar("tl_app_progress",
                                                                                        default=None)


@contextlib.contextmanager
def step_scope(stop: Optional[StopToken], progress: Optional[ProgressFn] = None) -> Iterator[None]:
    """Within the block (in this thread), :func:`stop_requested` answers for ``stop`` and
    :func:`step_progress` reports to ``progress``."""
    tokens = (_CURRENT_STOP.set(stop), _CURRENT_PROGRESS.set(progress))
    try:
        yield
    finally:
        _CURRENT_STOP.reset(tokens[0])
        _CURRENT_PROGRESS.reset(tokens[1])


def stop_requested() -> bool:
    """Whether the step running in this thread was asked to stop (see :func:`step_scope`)."""
    stop = _CURRENT_STOP.get()
    return stop is not None and stop.is_set()


def step_progress(done: int, total: int, message: str = "") -> None:
    """Report ``done`` of ``total`` pictures to the step running in this thread, if it listens."""
    fn = _CURRENT_PROGRESS.get()
    if fn is not None:
        fn(Progress(done, total, message, unit="pictures"))


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
