"""Plain words for network failures: was a name not found (no connection), or did a server refuse?

Libraries report the same fact in many ways ("DNSError: ... error resolving DNS",
"[Errno -2] Name or service not known", "nodename nor servname provided"); the
search and the fetcher ask here instead of showing that text to people.
"""

from __future__ import annotations

import re
import socket
from typing import Iterator, Optional

_NAME_MARKERS = ("dnserror", "dns error", "error resolving dns", "name or service not known",
                 "nodename nor servname", "temporary failure in name resolution", "failed to lookup address",
                 "no address associated with hostname", "getaddrinfo failed", "could not resolve host",
                 "name resolution", "no such host", "failed to resolve")
_DOWN_MARKERS = ("network is unreachable", "network unreachable")
_URL_HOST = re.compile(r"https?://([A-Za-z0-9.\-]+)")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and exceptions wrapped in its arguments (ddgs wraps twice)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__] + [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]


def _text(exc: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}" for e in _chain(exc)).lower()


def cannot_resolve(exc: BaseException) -> bool:
    """Whether ``exc`` says a host name could not be looked up (offline, or no such site)."""
    if any(isinstance(e, socket.gaierror) for e in _chain(exc)):
        return True
    text = _text(exc)
    return any(m in text for m in _NAME_MARKERS)


def offline(exc: BaseException) -> bool:
    """Whether ``exc`` looks like this computer has no working internet connection."""
    return cannot_resolve(exc) or any(m in _text(exc) for m in _DOWN_MARKERS)


def refused_connection(exc: BaseException) -> bool:
    """Whether ``exc`` says a connection could not be made (refused or reset), as a closed proxy does."""
    return any(isinstance(e, (ConnectionRefusedError, ConnectionResetError)) for e in _chain(exc)) or any(
        m in _text(exc) for m in ("connection refused", "connecterror", "connection reset", "proxyerror"))


def timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` is a timeout, by type or by what it says."""
    return any(isinstance(e, TimeoutError) or "timeout" in type(e).__name__.lower() for e in _chain(exc)) or \
        "timed out" in _text(exc)


def host_of(exc: BaseException) -> Optional[str]:
    """The host name of the first link mentioned in the error's text, if any."""
    for e in _chain(exc):
        m = _URL_HOST.search(str(e))
        if m:
            return m.group(1).lower()
    return None
