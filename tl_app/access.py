"""Who may do what: the one place that decides, so that roles (issue 10) can grow here.

A :class:`Visitor` is whoever sends a request: the user name they logged in with
(``TL_AUTH`` or another login), and the browser session of the page they use.
The fronts build one per request and ask the functions here; they never hide a
button instead of asking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Visitor:
    """The person behind a request: a login name when there is one, and the page's session."""

    user: Optional[str] = None
    session: Optional[str] = None

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
