"""Checks on the web requests that reach the app, decided before any handler runs.

Plain functions on header values (no web framework): the web front applies them
to every request (see ``tl_app/ui/guard.py``).

- :func:`local_host`: in single-user mode only requests addressed to this computer
  are served, so a web page cannot reach the app through a name of its own that
  resolves to 127.0.0.1 (DNS rebinding).
- :func:`same_site`: a request sent by another web site (its ``Origin`` or
  ``Referer``) is refused: the browser would attach the owner's login cookie.
- :func:`client_address`: the address per-visitor limits count by; behind a
  trusted proxy, the visitor's address as the proxy reports it.
- :class:`LoginThrottle`: wrong passwords are slowed down per address and user.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional
from urllib.parse import urlsplit

from .access import is_loopback_host

#: A gallery thumbnail's file name (``<sha256>-<side>.jpg``, see :meth:`tl_app.project.Project.thumbnail`).
THUMB_NAME = re.compile(r"(?:^|/)([0-9a-f]{64})-\d+\.jpg$", re.IGNORECASE)


def _split_host(value: str) -> tuple[str, Optional[int]]:
    """``("name", port)`` of a Host header value (``name:port``, ``[::1]:port``); port None when absent."""
    value = (value or "").strip().lower()
    if value.startswith("["):
        end = value.find("]")
        name, rest = value[1:end] if end > 0 else value[1:], value[end + 1:] if end > 0 else ""
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, port = value.split(":")
    else:
        name, port = value, ""
    return name, int(port) if port.isdigit() else None


def local_host(host_header: str | None) -> bool:
    """Whether a Host header names this computer: localhost, 127.0.0.1 or [::1] (any port)."""
    name, _ = _split_host(host_header or "")
    return bool(name) and is_loopback_host(name)


def same_site(url: str | None, hosts: Iterable[str]) -> bool:
    """Whether an ``Origin`` or ``Referer`` value is the app's own address (one of ``hosts``, Host values).

    A host given without a port matches the scheme's default port of ``url``.
    """
    try:
        parts = urlsplit((url or "").strip())
        name, port = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not name:
        return False  # "null" (a sandboxed page, a file) and other schemes are never the app itself
    port = port or (443 if parts.scheme == "https" else 80)
    for h in hosts:
        h_name, h_port = _split_host(h)
        if h_name == name and (h_port is None or h_port == port):
            return True
    return False


def _address(text: str) -> Optional[ipaddress._BaseAddress]:
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1 and "." in text:  # "1.2.3.4:5678"
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: str | None, *, behind_proxy: bool) -> Optional[str]:
    """The address a request counts as coming from, for per-visitor limits and login throttling.

    Without a trusted proxy it is the connecting address (``peer``), whatever it is: a
    header the sender writes is never believed. Behind a trusted proxy (a Space) it is
    the right-most public address of ``X-Forwarded-For``: the proxy appends the address
    it saw, so addresses a visitor adds in front of it are ignored, and the private
    addresses of further proxy hops are skipped.
    """
    if behind_proxy and forwarded_for:
        found = [a for a in (_address(x) for x in forwarded_for.split(",")[-20:]) if a is not None]
        for a in reversed(found):
            if a.is_global:
                return str(a)
        if found:
            return str(found[-1])
    return peer or None


# --- wrong passwords ----------------------------------------------------------------------------
@dataclass
class LoginThrottle:
    """Slows down wrong passwords: after ``free`` wrong tries for one user from one address
    (``free_per_address`` for all users from one address), each further try must wait, 1 s,
    then 2, 4, ... up to ``cap`` seconds, and a try that comes sooner is refused unchecked.

    A right password clears the count of that user and address. Counts are forgotten an
    hour after the last wrong try.
    """

    free: int = 5
    free_per_address: int = 20
    base: float = 1.0
    cap: float = 300.0
    forget_after: float = 3600.0
    _seen: dict = field(default_factory=dict, repr=False)     # key -> [wrong tries, last wrong try, next allowed]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _keys(self, address: str, user: str) -> list[tuple[tuple, int]]:
        return [((address, (user or "").strip().casefold()), self.free), ((address, None), self.free_per_address)]

    def wait(self, address: str, user: str, now: Optional[float] = None) -> float:
        """Seconds before a try of ``user`` from ``address`` is checked (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            waits = [s[2] - now for k, _ in self._keys(address, user) if (s := self._seen.get(k))
                     and now - s[1] <= self.forget_after]
        return max([0.0, *waits])

    def failed(self, address: str, user: str, now: Optional[float] = None) -> None:
        """Count a wrong password of ``user`` from ``address``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for key, free in self._keys(address, user):
                s = self._seen.get(key)
                if s is None or now - s[1] > self.forget_after:
                    s = self._seen[key] = [0, now, now]
                s[0] += 1
                s[1] = now
                if s[0] > free:
                    s[2] = now + min(self.cap, self.base * 2 ** (s[0] - free - 1))
            if len(self._seen) > 50_000:
                for k in [k for k, s in self._seen.items() if now - s[1] > self.forget_after]:
                    del self._seen[k]

    def succeeded(self, address: str, user: str) -> None:
        """A right password: that user's count from that address starts again."""
        with self._lock:
            self._seen.pop(self._keys(address, user)[0][0], None)
