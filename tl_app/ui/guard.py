"""The app's front door: every HTTP request passes here before Gradio sees it (an ASGI middleware).

Gradio itself does not check these (REFERENCE.md, "Gradio behaviours we met"); the
decisions are the core's (:mod:`tl_app.guard`, :mod:`tl_app.access`):

- in single-user mode, a request addressed to another host name than this computer's
  is refused (DNS rebinding);
- a request that another web site makes the browser send (``Origin``, or ``Referer``
  for a request that acts) is refused: it would carry the owner's login cookie;
- wrong passwords on the login page are slowed down per address and user;
- a gallery thumbnail is served to owners only, and only while its picture is in the
  project (not in the trash), whatever URL names it.

Handlers still check the role of every request themselves (:func:`tl_app.ui.adapters.owner_only`).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Optional

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from ..access import OWNER
from ..guard import THUMB_NAME, client_address, local_host, same_site

if TYPE_CHECKING:
    from .adapters import UIContext

#: Methods that only read; other requests act (and are refused when another site sends them).
_SAFE = {"GET", "HEAD", "OPTIONS"}
_MAX_LOGIN_BODY = 64 * 1024


def login_name(scope: dict) -> Optional[str]:
    """The user name of the app's own login (Gradio's ``auth``) behind a request, if logged in."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or not cookie_id:
        return None
    cookies = Request(scope).cookies if scope.get("type") == "http" else {}
    token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


def hf_user_name(scope: dict) -> Optional[str]:
    """The Hugging Face user signed in with "Sign in with Hugging Face" (Gradio keeps it in the session)."""
    session = scope.get("session")
    info = session.get("oauth_info") if isinstance(session, dict) else None
    if not isinstance(info, dict):
        return None
    expires = info.get("expires_at")
    if expires is not None and expires < time.time():
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return str(name) if name else None


def request_address(scope: dict, behind_proxy: bool) -> Optional[str]:
    """The address a request counts as coming from (the proxy's word for it when the proxy is trusted)."""
    client = scope.get("client")
    peer = client[0] if client else None
    return client_address(peer, Headers(scope=scope).get("x-forwarded-for"), behind_proxy=behind_proxy)


class Guard:
    """ASGI middleware applying the checks above; ``ctx`` is the app's :class:`UIContext`."""

    def __init__(self, app, ctx: "UIContext"):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        access = self.ctx.access
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if access.single_user and not local_host(host):
            await PlainTextResponse(
                f"This app serves only this computer: open it at http://127.0.0.1 (not {host or 'this address'}). "
                "To share it, start it with --shared or a login (TL_AUTH).", status_code=403)(scope, receive, send)
            return
        method = scope.get("method", "GET")
        hosts = [host, *access.public_hosts]
        if access.behind_proxy and headers.get("x-forwarded-host"):
            hosts += [h.strip() for h in headers["x-forwarded-host"].split(",")]
        origin = headers.get("origin")
        referer = headers.get("referer")
        if (origin is not None and not same_site(origin, hosts)) or (
                origin is None and method not in _SAFE and referer and not same_site(referer, hosts)):
            await PlainTextResponse(
                "Refused: this request was sent by another web site. Use the app from its own page.",
                status_code=403)(scope, receive, send)
            return
        path = scope.get("path", "")
        if method == "POST" and path.rstrip("/") == "/login":
            await self._login(scope, receive, send)
            return
        m = THUMB_NAME.search(path)
        if m and not self._thumbnail_allowed(scope, m.group(1).lower()):
            await PlainTextResponse("Not found.", status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _thumbnail_allowed(self, scope: dict, sha256: str) -> bool:
        """Owners see thumbnails of the pictures in the project; nobody sees those of trashed pictures."""
        if self.ctx.access.role_of(login=login_name(scope), hf_user=hf_user_name(scope)) != OWNER:
            return False
        item = self.ctx.project.find_sha(sha256)
        return item is not None and item.status == "active"

    async def _login(self, scope, receive, send):
        """The login form: a try is checked only when the throttle allows it; the outcome is counted."""
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_LOGIN_BODY:
                await PlainTextResponse("Too large.", status_code=413)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        def replay():
            sent = False

            async def again():
                nonlocal sent
                if sent:
                    return {"type": "http.disconnect"}
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return again

        try:
            form = await Request(scope, replay()).form()
            user = str(form.get("username") or "").strip()
        except Exception:  # noqa: BLE001 - a malformed form: Gradio answers it as it would
            user = ""
        throttle = self.ctx.login_throttle
        address = request_address(scope, self.ctx.access.behind_proxy) or "unknown"
        wait = throttle.wait(address, user)
        if wait > 0:
            # 400 like a wrong password (Gradio's login page then says the credentials are wrong);
            # the page's note says that tries are slowed down, and API callers read the detail.
            await JSONResponse({"detail": f"Too many wrong passwords for this user from your address: try again "
                                          f"in {math.ceil(wait)} s."}, status_code=400)(scope, receive, send)
            return
        status: dict = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, replay(), watch)
        if status.get("code") == 200:
            throttle.succeeded(address, user)
        elif status.get("code") == 400:
            throttle.failed(address, user)


def login_note() -> str:
    """What the login page says about wrong passwords (Gradio's ``auth_message``)."""
    return ("After five wrong passwords, every further try waits a little longer (1 s, then 2, 4, ... up to five "
            "minutes); a try sent sooner is refused.")
