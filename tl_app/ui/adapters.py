"""Glue between the core and Gradio: errors to messages, shared context, small helpers."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import gradio as gr

from ..access import Visitor
from ..errors import InputError, TLError
from ..project import Project
from ..search import BACKENDS, DDGSProvider, RateLimiter, SearchProvider

log = logging.getLogger("tl_app.ui")


@dataclass
class UIContext:
    """What every tab needs: the project, whether the app is shared, and who follows the trainer.

    ``search_provider`` answers every web search when set (tests pass recorded
    results); otherwise each search asks ddgs with the engine the visitor chose.
    ``search_limiter`` counts searches per visitor (a shared app has one).
    ``downloads`` holds the stop token of each browser session's running download.
    ``followers`` holds the browser sessions whose Train tab follows a training now
    (the training itself is the core's: :func:`tl_app.runner.current_job`).
    """

    project: Project
    shared: bool = False
    followers: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    search_provider: Optional[SearchProvider] = None
    search_limiter: Optional[RateLimiter] = None
    downloads: dict = field(default_factory=dict)

    def provider_for(self, engine: str) -> SearchProvider:
        """The provider that answers a search with ``engine`` (ddgs unless one was given)."""
        return self.search_provider or DDGSProvider(engine or BACKENDS[0])


def _to_gr_error(e: Exception) -> gr.Error:
    if isinstance(e, TLError):
        return gr.Error(str(e), print_exception=False)
    log.exception("unexpected error in a UI handler")
    return gr.Error("Something went wrong on the server; the details are in its log. Your pictures are unchanged.",
                    print_exception=False)


def _from_api() -> bool:
    """Whether the running event came from gradio_client (it marks its requests) rather than the page."""
    try:
        from gradio.context import LocalContext

        request = LocalContext.request.get(None)
    except (ImportError, AttributeError):  # a Gradio without this context: treat as the API, i.e. raise
        return True
    if request is None:
        return True
    headers = getattr(request, "headers", None) or {}
    return str(headers.get("x-gradio-user", "")).lower() in ("api", "mcp")


def _input_mistake(e: InputError):
    """A user's input mistake: on the page a warning that leaves every output as it was; for the API an error.

    A raised ``gr.Error`` would mark every output component of the event with an "Error" badge that stays
    (the class table, dropdowns, drop area, gallery) for what is only a missing word in one field.
    """
    if _from_api():
        raise gr.Error(str(e), print_exception=False) from None
    gr.Warning(str(e))
    return gr.skip()


def handler(fn: Callable) -> Callable:
    """Wrap an event handler so that core errors reach the user as a plain message.

    :class:`InputError` (a mistake in what was typed or chosen) becomes a warning on the page and
    changes no output; any other :class:`TLError` is an error message; anything else is logged and
    reported without library text.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except InputError as e:
                yield _input_mistake(e)
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
        except InputError as e:
            return _input_mistake(e)
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


def visitor_of(request: gr.Request | None) -> Visitor:
    """The person behind a request, for the core's permission checks: login name and page session."""
    user = getattr(request, "username", None) if request is not None else None
    session = getattr(request, "session_hash", None) if request is not None else None
    return Visitor(user=user or None, session=session or None)


def visitor_id(request: gr.Request | None) -> str:
    """Who is asking, for per-visitor limits: a public connecting address, else the browser session.

    Behind a proxy (a Hugging Face Space) every visitor arrives from the proxy's
    private address, so the session (one per page load) is the best handle left.
    """
    import ipaddress

    host = getattr(getattr(request, "client", None), "host", None)
    try:
        if host and ipaddress.ip_address(host).is_global:
            return f"ip:{host}"
    except ValueError:
        pass
    return f"session:{getattr(request, 'session_hash', None) or host or 'unknown'}"
