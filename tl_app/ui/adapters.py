"""Glue between the core and Gradio: errors to messages, shared context, small helpers."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import gradio as gr

from ..errors import TLError
from ..project import Project

log = logging.getLogger("tl_app.ui")


@dataclass
class UIContext:
    """What every tab needs: the project, whether the app is shared, and running jobs by id."""

    project: Project
    shared: bool = False
    jobs: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _to_gr_error(e: Exception) -> gr.Error:
    if isinstance(e, TLError):
        return gr.Error(str(e), print_exception=False)
    log.exception("unexpected error in a UI handler")
    return gr.Error(f"Something went wrong: {type(e).__name__}: {e}. The details are in the server log.",
                    print_exception=False)


def handler(fn: Callable) -> Callable:
    """Wrap an event handler so that core errors reach the user as a plain message."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except gr.Error as e:
                e.print_exception = False  # a message for the user, not a fault of the server
                raise
            except Exception as e:  # noqa: BLE001 - every error becomes a message
                raise _to_gr_error(e) from None
        return gen

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error as e:
            e.print_exception = False
            raise
        except Exception as e:  # noqa: BLE001
            raise _to_gr_error(e) from None
    return wrapped


def upload_paths(files) -> tuple[list[str], dict[str, str]]:
    """Paths of uploaded files and the names the user gave them (uploads arrive under temporary folders)."""
    if not files:
        return [], {}
    if not isinstance(files, (list, tuple)):
        files = [files]
    paths, names = [], {}
    for f in files:
        p = str(getattr(f, "name", f) if not isinstance(f, (str, Path)) else f)
        paths.append(p)
        names[p] = Path(p).name
    return paths, names


def class_choices(project: Project) -> list[str]:
    return project.labels()


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"
