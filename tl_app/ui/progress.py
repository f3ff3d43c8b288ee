"""A training's progress in words: one status line built from its events, shared by Train and Review.

A :class:`JobWatch` folds a job's events (from its start, so a page opened during
training catches up) into what the page shows: one line of progress, the epochs
so far and the device. fastai's ``fine_tune`` trains the new last layers alone for
one epoch before the whole network ("warm-up"), so a request for 2 epochs runs 3:
the line says "warm-up", then "epoch 1 of 2".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

from ..errors import InputError
from ..jobs import Progress, StopToken, TimeLeft, time_left_words
from .adapters import pct


def seconds_left(s: float | None) -> str:
    """"about 3 min left" (empty when unknown): the core's words, the same as the CLI's."""
    return time_left_words(s)


def gr_progress(progress, desc: str, unit: str = "steps") -> Callable[[Progress], None]:
    """A core progress callback that drives a ``gr.Progress``: "120/500 files · Importing, about 2 min left".

    Gradio's bar counts ``done/total unit`` itself; the words add the time left, the core's
    estimate (:class:`tl_app.jobs.TimeLeft`), the same as the CLI prints.
    """
    eta = TimeLeft()

    def report(p: Progress) -> None:
        left = time_left_words(eta.update(p.done, p.total)) if p.done < p.total else ""
        progress((min(p.done, p.total), max(p.total, 1)), desc=f"{desc}, {left}" if left else desc, unit=unit)

    return report


def progress_slot(elem_id: str):
    """An empty line, hidden until a long step runs, for Gradio to draw that step's progress bar on.

    Returns ``(column, line)``: show the column (an event output: not among the API's values, unlike
    a Markdown) while the work runs, and point the event's ``show_progress_on`` at the line.
    """
    import gradio as gr

    with gr.Column(visible=False, elem_id=elem_id) as column:
        line = gr.Markdown(min_height=72)
    return column, line


@contextlib.contextmanager
def session_stop(ctx, kind: str, request) -> Iterator[StopToken]:
    """The stop token of this browser session's ``kind`` of work (an import, an export) while it runs.

    Kept per session, so a Stop ends only this window's work; a second one of the same kind in
    the same window is refused with a plain message. See :func:`stop_session`.
    """
    key = (kind, getattr(request, "session_hash", None) or "api")
    token = StopToken()
    with ctx.lock:
        if key in ctx.stops:
            raise InputError(f"An {kind} is already running in this window: wait for it, or Stop it first."
                             if kind[0] in "aeiou" else f"A {kind} is already running in this window: wait for it, "
                             "or Stop it first.")
        ctx.stops[key] = token
    try:
        yield token
    finally:
        with ctx.lock:
            if ctx.stops.get(key) is token:
                del ctx.stops[key]


def stop_session(ctx, kind: str, request) -> bool:
    """Ask this session's running ``kind`` of work to stop; False when none runs."""
    token = ctx.stops.get((kind, getattr(request, "session_hash", None) or "api"))
    if token is None:
        return False
    token.set()
    return True


def duration(s: float | None) -> str:
    """"12 s", "3 min 05 s" (empty when unknown)."""
    if s is None:
        return ""
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def epoch_name(epoch0: int, epochs: int, mode: Optional[str]) -> str:
    """What a 0-based epoch index is called: fine-tuning's first one is the warm-up."""
    if mode == "finetune":
        return "warm-up (last layers only)" if epoch0 == 0 else f"epoch {epoch0} of {max(1, epochs - 1)}"
    return f"epoch {epoch0 + 1} of {epochs}"


@dataclass
class JobWatch:
    """What a page knows of a running job, from its events."""

    title: str                       # the run's name, or "The learning-rate search"
    kind: str = "training"           # training or lr-find
    mode: Optional[str] = None       # quick or finetune, from the job's start event
    status: str = ""
    device: Optional[str] = None
    history: list[dict] = field(default_factory=list)
    epochs: int = 0                  # epochs the run makes, warm-up included (from batch events)

    def __post_init__(self):
        self.status = f"{self.title}: starting…"

    def add(self, ev: dict) -> bool:
        """Take one event in; True when the epochs (the chart) changed."""
        kind, phase = ev.get("type"), ev.get("phase")
        if kind == "start":
            self.mode = ev.get("mode")
        elif kind == "phase" and phase == "device":
            self.device = ev.get("device")
        elif kind == "epoch":
            self.history.append(ev)
            if ev.get("phase") != "quick":
                e = int(ev["epoch"]) - 1  # the history counts fastai's epochs from 1
                what = "warm-up" if self.mode == "finetune" and e == 0 else \
                    epoch_name(e, self.epochs or e + 1, self.mode)
                self.status = f"{self.title}: {what} done, {pct(ev.get('accuracy'))} right on the held-out pictures."
            return True
        elif kind == "batch":
            self.epochs = int(ev.get("epochs") or 0) or self.epochs
        line = self.line(ev)
        if line:
            self.status = line
        return False

    def line(self, ev: dict) -> str:
        """One line of progress for an event ('' for events that do not change it)."""
        kind, phase = ev.get("type"), ev.get("phase")
        left = seconds_left(ev.get("eta"))
        tail = (f", {left}" if left else "") + "."
        if kind == "batch":
            share = ev["done"] / max(1, ev["total"])
            if self.kind == "lr-find":
                return f"Trying learning rates: step {ev['done']} of {ev['total']} ({share:.0%})" + tail
            where = epoch_name(int(ev["epoch"]), int(ev["epochs"]), self.mode)
            return f"{self.title}: {where}, {share:.0%} of the run done" + tail
        if phase == "loading":
            return f"{self.title}: reading pictures, {ev['done']} of {ev['total']}."
        if phase == "features":
            return f"{self.title}: computing features, {ev['done']} of {ev['total']} pictures" + tail
        if phase == "cache":
            todo = ev["total"] - ev["cached"]
            return (f"{self.title}: {ev['cached']} of {ev['total']} pictures' features are cached; "
                    f"{todo} to compute." if todo else f"{self.title}: every picture's features are cached.")
        if phase == "scoring":
            return f"{self.title}: scoring every picture for Review, {ev['done']} of {ev['total']}" + tail
        if phase in ("head", "model", "lr_find", "compare"):
            return f"{self.title}: {ev.get('message', '')}…"
        if phase == "gpu_wait":
            return f"{self.title}: asking ZeroGPU for a GPU (up to {ev.get('seconds', '?')} s)…"
        if phase in ("oom", "early_stop", "gpu_time"):
            return f"{self.title}: {ev.get('message', '')}"
        return ""
