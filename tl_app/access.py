"""Who may do what: the one place that decides, for every front.

Two roles. The **owner** may do everything: add, move and delete pictures and
classes, search and download, train, choose the model. A **visitor** may
classify pictures and read the model card (classes, held-out accuracy,
confusion matrix, where the pictures came from), nothing that changes the
project or costs the owner compute.

Who is an owner (:class:`Access`, decided when the app starts):

- single-user mode: the app is served on this computer only (loopback), not
  shared and without a login: whoever reaches the page is the owner;
- the app's own login (``TL_AUTH=user:password``): its users are owners;
- "Sign in with Hugging Face" (on a Space with ``hf_oauth: true``): users whose
  name is the Space's author (``SPACE_AUTHOR_NAME``) or listed in ``TL_OWNERS``;
- anyone else, e.g. on a shared server without a login, is a visitor.

The fronts build a :class:`Visitor` per request and ask :meth:`Access.require_owner`
in every handler that changes data or costs compute; hiding a button is only a
convenience. :class:`Allowance` counts per-visitor limits on a shared server.
"""

from __future__ import annotations

import ipaddress
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from .errors import LimitReached, NotAllowed, ServeRefused

OWNER, VISITOR = "owner", "visitor"
#: Where "Sign in with Hugging Face" works: on a Space (real OAuth) or locally (Gradio's mock of it).
SPACE, LOCAL = "space", "local"


@dataclass(frozen=True)
class Visitor:
    """The person behind a request.

    ``user`` is the name they signed in with (the app's login or Hugging Face), ``session``
    the page's session, ``role`` owner or visitor, and ``address`` the network address
    per-visitor limits count by (on a Space, the visitor's address as the proxy reports it).
    """

    user: Optional[str] = None
    session: Optional[str] = None
    role: str = VISITOR
    address: Optional[str] = None

    @property
    def is_owner(self) -> bool:
        return self.role == OWNER

    def same_person(self, other: "Visitor | None", *, shared: bool) -> bool:
        """Whether ``other`` counts as the same person as this visitor.

        With a login, the same user name is the same person, whatever page or
        browser they use. Without one, an app that is not shared has a single
        person at the keyboard: every page is theirs. A shared app without a
        login can tell visitors apart only by their page's session.
        """
        if other is None:
            return False
        if self.user or other.user:
            return self.user == other.user
        if not shared:
            return True
        return self.session is not None and self.session == other.session


def may_stop_training(owner: Visitor | None, visitor: Visitor, *, shared: bool) -> bool:
    """Whether ``visitor`` may stop a training (or learning-rate search) that ``owner`` started.

    ``owner`` is None for work started outside the web app (the command line):
    on the computer of the person who runs the app, they may stop it from the
    page; on a shared server no visitor may.
    """
    if owner is None:
        return not shared and visitor.user is None
    return owner.same_person(visitor, shared=shared)


# --- who owns the app ---------------------------------------------------------------------------
def is_loopback_host(host: str | None) -> bool:
    """Whether a server address (``--host``) or a Host header's name is this computer only."""
    name = (host or "").strip().lower()
    if name.startswith("[") and "]" in name:
        name = name[1:name.index("]")]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def names_from(text: str | None) -> frozenset[str]:
    """User names from a setting such as ``TL_OWNERS="ann, bob"`` (commas or spaces), compared without case."""
    return frozenset(n.casefold() for n in re.split(r"[\s,;]+", text or "") if n)


@dataclass(frozen=True)
class Access:
    """Who the owners of a running app are, and what a visitor is told when refused.

    ``logins`` are the user names of the app's own login (owners); ``hf_owners`` the
    Hugging Face user names that own the app (compared without case); ``hf_signin``
    says where "Sign in with Hugging Face" works (:data:`SPACE`, :data:`LOCAL` or None).
    ``behind_proxy``: the app is reached through a proxy that reports each visitor's
    address (``X-Forwarded-For``); ``public_hosts`` are the app's public host names
    (a Space's ``SPACE_HOST``), for the cross-site check.
    """

    shared: bool = False
    loopback: bool = True
    logins: frozenset[str] = frozenset()
    hf_owners: frozenset[str] = frozenset()
    hf_signin: Optional[str] = None
    behind_proxy: bool = False
    public_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, *, shared: bool, host: str, logins: Iterable[str] = (), hf_signin: Optional[str] = None,
                 env: Mapping[str, str] | None = None) -> "Access":
        """The access of an app served on ``host``, from the environment.

        On a Hugging Face Space (``SPACE_ID``) the Space's author owns the app and
        visitors arrive through the Space's proxy; ``TL_OWNERS`` adds owners and
        ``TL_BEHIND_PROXY=1`` says the app is behind another proxy that reports
        the visitor's address.
        """
        env = os.environ if env is None else env
        on_space = bool(env.get("SPACE_ID"))
        owners = names_from(env.get("TL_OWNERS"))
        if on_space and env.get("SPACE_AUTHOR_NAME"):
            owners |= names_from(env["SPACE_AUTHOR_NAME"])
        behind = on_space or env.get("TL_BEHIND_PROXY", "").strip().lower() not in ("", "0", "false", "no", "off")
        hosts = tuple(h.strip().lower() for h in env.get("SPACE_HOST", "").split(",") if h.strip())
        return cls(shared=shared, loopback=is_loopback_host(host), logins=frozenset(logins), hf_owners=owners,
                   hf_signin=hf_signin, behind_proxy=behind, public_hosts=hosts)

    @property
    def single_user(self) -> bool:
        """Served on this computer only, not shared, no login: one person, the owner, at the keyboard."""
        return not self.shared and self.loopback and not self.logins

    @property
    def everyone_owner(self) -> bool:
        """Whether every request that reaches the app comes from an owner (single-user mode, or the app's
        own login in front of every page); the page then shows everything from the start."""
        return self.single_user or (bool(self.logins) and not self.hf_signin)

    def role_of(self, *, login: Optional[str] = None, hf_user: Optional[str] = None) -> str:
        """The role of a request's sender: ``login`` is the app's own login name, ``hf_user`` the
        Hugging Face user signed in with "Sign in with Hugging Face" (None: not signed in)."""
        if self.single_user:
            return OWNER
        if login and login in self.logins:
            return OWNER
        if hf_user and self.hf_signin and hf_user.casefold() in self.hf_owners:
            return OWNER
        return VISITOR

    def refusal(self, action: str) -> str:
        """What a visitor reads when they ask for ``action`` ("delete pictures")."""
        text = (f"Only the owner of this app may {action}. Visitors may classify pictures and read about the "
                "model (the Classify tab).")
        if self.hf_signin:
            text += " If this app is yours, sign in with Hugging Face first."
        return text

    def require_owner(self, visitor: Visitor, action: str) -> None:
        """Raise :class:`NotAllowed` unless ``visitor`` is an owner."""
        if not visitor.is_owner:
            raise NotAllowed(self.refusal(action))


def check_serving(host: str, *, shared: bool, login: bool) -> None:
    """Refuse to serve on a network address without ``--shared`` or a login (:class:`ServeRefused`).

    Without either, whoever reaches the server would be the owner: able to delete,
    move and download pictures and start trainings.
    """
    if shared or login or is_loopback_host(host):
        return
    raise ServeRefused(
        f"Not serving on {host}: anyone who can reach this computer there could delete your pictures and start "
        "trainings, since there is no login. Choose one: add --shared (visitors may only classify pictures and "
        "read about the model; you keep working on this computer at 127.0.0.1, or set TL_OWNERS with "
        "'Sign in with Hugging Face' on a Space); or set TL_AUTH=user:password (everyone must log in, and the "
        "users are owners); or leave --host out to serve this computer only (127.0.0.1).")


# --- per-visitor limits -------------------------------------------------------------------------
def _every(window: float) -> str:
    return f"{window / 60:g} minutes" if window >= 120 else f"{window:g} seconds"


@dataclass
class Allowance:
    """At most ``limit`` uses of something per ``window`` seconds per visitor (for a shared server).

    Visitors are told apart by :attr:`Visitor.address` (see :func:`tl_app.guard.client_address`),
    so a new page, a new session or a new API client does not bring a fresh allowance.
    """

    limit: int = 10
    window: float = 600.0
    what: str = "uses"
    advice: str = ""
    _hits: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, visitor: str, n: int = 1, now: Optional[float] = None) -> None:
        """Count ``n`` uses for ``visitor``; raise :class:`LimitReached` (counting nothing) past the limit."""
        now = time.monotonic() if now is None else now
        tail = f", {self.advice}" if self.advice else ""
        if n > self.limit:
            raise LimitReached(f"This shared app allows {self.limit} {self.what} per visitor every "
                               f"{_every(self.window)}: send at most {self.limit} at a time{tail}.")
        with self._lock:
            q = self._hits.setdefault(visitor, deque())
            while q and now - q[0] > self.window:
                q.popleft()
            if len(q) + n > self.limit:
                wait = int(self.window - (now - q[len(q) + n - self.limit - 1])) + 1
                raise LimitReached(f"This shared app allows {self.limit} {self.what} per visitor every "
                                   f"{_every(self.window)}; try again in {wait} s{tail}.")
            q.extend([now] * n)
            if len(self._hits) > 10_000:  # forget the visitors whose uses have all left the window
                for k in [k for k, v in self._hits.items() if not v or now - v[-1] > self.window]:
                    del self._hits[k]
