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

from ..access import Access, Allowance, Visitor
from ..errors import InputError, LimitReached, NotAllowed, TLError
from ..guard import LoginThrottle
from ..project import Project
from ..search import BACKENDS, DDGSProvider, RateLimiter, SearchProvider

log = logging.getLogger("tl_app.ui")


#: How a handler is classified (its ``tl_access`` attribute): owners only, or anyone (visitors too).
FOR_OWNERS, FOR_ANYONE = "owners", "anyone"
#: Handlers Gradio adds by itself, and who they are for (LoginButton: reads the visitor's own sign-in).
GRADIO_OWN_HANDLERS = {"_check_login_status": FOR_ANYONE}


@dataclass
class UIContext:
    """What every tab needs: the project, who owns it, whether the app is shared, and who follows the trainer.

    ``search_provider`` answers every web search when set (tests pass recorded
    results); otherwise each search asks ddgs with the engine the visitor chose.
    ``search_limiter`` counts searches per visitor (a shared app has one).
    ``downloads`` holds the stop token of each browser session's running download.
    ``access`` says who the owners are (:class:`tl_app.access.Access`); ``classify_allowance``
    limits the pictures a visitor of a shared app classifies; ``login_throttle`` slows down
    wrong passwords (see :mod:`tl_app.ui.guard`).
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
    #: the stop token of each browser session's running import or export, by ``(kind, session)``
    stops: dict = field(default_factory=dict)
    access: Access = field(default_factory=Access)
    classify_allowance: Optional[Allowance] = None
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    #: one picture's predictions for programs (Gradio's unqueued ``/predict`` and :mod:`tl_app.ui.programs`)
    #: wait here: two forwards at a time, as the queue allows the page's
    predict_slots: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(2))

    def provider_for(self, engine: str) -> SearchProvider:
        """The provider that answers a search with ``engine`` (ddgs unless one was given)."""
        return self.search_provider or DDGSProvider(engine or BACKENDS[0])

    def visitor(self, request: gr.Request | None = None) -> Visitor:
        """The person behind ``request`` (default: the request of the running event), with their role."""
        return visitor_of(request if request is not None else current_request(), self.access)

    def count_classified(self, visitor: Visitor, n: int = 1) -> None:
        """Count ``n`` pictures a visitor of a shared app classifies in their allowance (an owner's are not
        counted); raises :class:`LimitReached` past it, counting nothing."""
        if self.classify_allowance is not None and not visitor.is_owner:
            self.classify_allowance.take(allowance_key(visitor), n)


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


def _input_mistake(e: TLError):
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

    :class:`InputError` (a mistake in what was typed or chosen), :class:`NotAllowed` (a visitor
    asking for the owner's work) and :class:`LimitReached` (a visitor's allowance used up) become
    a warning on the page and change no output; any other :class:`TLError` is an error message; anything else is logged and
    reported without library text.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except (InputError, NotAllowed, LimitReached) as e:
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
        except (InputError, NotAllowed, LimitReached) as e:
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


#: The look of :func:`html_table` (a ``gr.HTML``'s ``css_template``): the page's colours, headers that
#: wrap, a sideways scroll only when the columns cannot fit.
TABLE_CSS = """
.tl-table { overflow-x: auto; }
.tl-table .tl-title { margin: 0 0 4px; font-size: var(--block-label-text-size); color: var(--block-label-text-color); }
.tl-table table { width: 100%; border-collapse: collapse; font-size: var(--text-sm); }
.tl-table th, .tl-table td { padding: 4px 8px; border: 1px solid var(--border-color-primary); text-align: right;
                             overflow-wrap: anywhere; }
.tl-table th { background: var(--background-fill-secondary); font-weight: 600; }
.tl-table th:first-child, .tl-table td:first-child { text-align: left; }
"""


def html_table(df, title: str) -> str:
    """A read-only table as plain HTML, every name escaped (class names are the user's).

    For tables that are only looked at: laid out by the browser alone, so every column shows
    as soon as the table does (a ``gr.Dataframe`` sizes its columns by script a moment after
    it appears, and when that lands while its box is still hidden some columns stay cut off).
    """
    from html import escape

    if df is None or len(df.columns) == 0:
        return ""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return (f'<div class="tl-table"><p class="tl-title">{escape(title)}</p>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def current_request() -> gr.Request | None:
    """The request of the event being handled (Gradio keeps it for the running handler)."""
    try:
        from gradio.context import LocalContext

        return LocalContext.request.get(None)
    except (ImportError, AttributeError):
        return None


def _scope(request) -> dict:
    """The ASGI scope of the HTTP request behind a ``gr.Request`` ({} when there is none)."""
    inner = getattr(request, "request", None) if request is not None else None
    scope = getattr(inner, "scope", None)
    return scope if isinstance(scope, dict) else {}


def visitor_of(request: gr.Request | None, access: Access | None = None) -> Visitor:
    """The person behind a request: login name, page session, role (by ``access``) and address."""
    scope = _scope(request)
    login = getattr(request, "username", None) if request is not None else None
    session = getattr(request, "session_hash", None) if request is not None else None
    # A request rebuilt without its HTTP request (tests) counts from its client's address, if any.
    client = None if scope else getattr(getattr(request, "client", None), "host", None)
    return visitor_in(scope, access, login=login, session=session, address=client)


def visitor_in(scope: dict, access: Access | None = None, *, login: Optional[str] = None,
               session: Optional[str] = None, address: Optional[str] = None) -> Visitor:
    """The person behind an HTTP request's ASGI ``scope`` (also a request that did not come through
    Gradio's events: :mod:`tl_app.ui.programs`); ``login`` when the caller already knows it (else read
    from the app's login cookie), ``address`` when there is no scope to read it from."""
    from .guard import hf_user_name, login_name, request_address

    access = access or Access(shared=True)  # not told who owns the app: nobody does
    login = login or (login_name(scope) if scope else None)
    hf_user = hf_user_name(scope) if scope else None
    if scope:
        address = request_address(scope, access.behind_proxy)
    return Visitor(user=login or hf_user or None, session=session or None,
                   role=access.role_of(login=login, hf_user=hf_user), address=address or None)


def visitor_id(request: gr.Request | None, access: Access | None = None) -> str:
    """Who is asking, for per-visitor limits: the visitor's address, else the browser session.

    The address is the connecting one, or behind a trusted proxy (a Space) the visitor's
    address as the proxy reports it: a new page or a new API client does not bring a
    fresh allowance.
    """
    return allowance_key(visitor_of(request, access))


def allowance_key(v: Visitor) -> str:
    """The key per-visitor limits count ``v`` by (see :func:`visitor_id`)."""
    if v.address:
        return f"ip:{v.address}"
    return f"session:{v.session or 'unknown'}"


# --- who may call a handler ------------------------------------------------------------------
def _quiet_refusal() -> bool:
    """A page event (not the API) refused without a message: the page asked on its own (a load, a tab)."""
    return not _from_api()


def owner_only(ctx: UIContext, action: str, *, quiet: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: the handler runs for owners only; a visitor is refused with a plain message.

    ``action`` completes "Only the owner of this app may ...". With ``quiet`` (events the page
    fires by itself: a page load, a tab opened) a visitor's page gets no change and no message;
    an API caller is still told. The result is also wrapped by :func:`handler` and marked
    ``tl_access = FOR_OWNERS`` for the test that classifies every endpoint.
    """
    def decorate(fn: Callable) -> Callable:
        def allowed() -> bool:
            visitor = ctx.visitor()
            if visitor.is_owner:
                return True
            if quiet and _quiet_refusal():
                return False
            ctx.access.require_owner(visitor, action)
            return False

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def checked(*args, **kwargs):
                if not allowed():
                    yield gr.skip()
                    return
                yield from fn(*args, **kwargs)
        else:
            @functools.wraps(fn)
            def checked(*args, **kwargs):
                if not allowed():
                    return gr.skip()
                return fn(*args, **kwargs)
        wrapped = handler(checked)
        wrapped.tl_access = FOR_OWNERS
        wrapped.tl_quiet = quiet
        return wrapped
    return decorate


def for_anyone(fn: Callable) -> Callable:
    """Decorator: a handler visitors may call too (classify, the model card, the page's own layout).

    Wrapped by :func:`handler` and marked ``tl_access = FOR_ANYONE``; it must neither change
    the project nor cost the owner more than a visitor's share of compute.
    """
    wrapped = handler(fn)
    wrapped.tl_access = FOR_ANYONE
    return wrapped


def handler_access(fn) -> str | None:
    """How an event's function is classified: FOR_OWNERS, FOR_ANYONE, or None (not classified)."""
    if fn is None:
        return FOR_ANYONE  # no server function: the event runs only in the browser
    marked = getattr(fn, "tl_access", None)
    if marked:
        return marked
    owner = getattr(fn, "__self__", None)
    if owner is not None and isinstance(owner, gr.LoginButton):
        return GRADIO_OWN_HANDLERS.get(getattr(fn, "__name__", ""))
    return None
