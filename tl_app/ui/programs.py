"""The app's endpoint for programs: one picture in a request's body, its prediction out, in one request.

    curl --data-binary @cat.jpg "http://127.0.0.1:7860/api/predict?name=cat.jpg"

answers what ``predict --json`` prints for that file. Gradio's own API takes two requests for
the same (an upload, then ``POST /gradio_api/run/predict``) and about 6 ms more here.

An ASGI middleware inside :class:`tl_app.ui.guard.Guard` (which has already refused another web
site's request, or another host name's on a computer of one's own). Who may call it is decided
as for the page: anyone may classify (a visitor of a shared app within the same allowance as the
page's Classify); behind the app's login (``TL_AUTH``) only a logged-in user. Nothing in the
project changes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.responses import JSONResponse

from .. import config
from ..errors import LimitReached, TLError

if TYPE_CHECKING:
    from .adapters import UIContext

log = logging.getLogger("tl_app.ui")

PATH = "/api/predict"
_HOW = (f"Send one picture as the body of a POST to {PATH} (for example "
        f"`curl --data-binary @cat.jpg \"http://HOST{PATH}?name=cat.jpg\"`).")


class ProgramsApi:
    """ASGI middleware serving :data:`PATH`; every other request goes on to Gradio."""

    def __init__(self, app, ctx: "UIContext"):
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path", "").rstrip("/") != PATH:
            await self.app(scope, receive, send)
            return
        status, answer, headers = await self._answer(scope, receive)
        await JSONResponse(answer, status_code=status, headers=headers)(scope, receive, send)

    async def _answer(self, scope, receive) -> tuple[int, dict, dict | None]:
        from urllib.parse import parse_qs

        import anyio

        from ..predict import predict_bytes
        from .adapters import visitor_in
        from .guard import login_name

        if scope.get("method") != "POST":
            return 405, {"error": _HOW}, {"Allow": "POST"}
        app, login = scope.get("app"), login_name(scope)
        if getattr(app, "auth", None) is not None and login is None:  # as Gradio's own API behind a login
            return 401, {"error": "Log in first: this app is behind a login."}, None
        headers = Headers(scope=scope)
        too_large = {"error": f"The picture is larger than {config.MAX_IMPORT_BYTES >> 20} MB."}
        try:
            if int(headers.get("content-length") or 0) > config.MAX_IMPORT_BYTES:
                return 413, too_large, None
        except ValueError:
            return 400, {"error": "The request's Content-Length is not a number."}, None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return 400, {"error": "The request ended before its picture."}, None
            body += message.get("body", b"")
            if len(body) > config.MAX_IMPORT_BYTES:
                return 413, too_large, None
            if not message.get("more_body", False):
                break
        if not body:
            return 400, {"error": _HOW}, None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        name = (query.get("name") or ["picture"])[0][:200] or "picture"
        ctx = self.ctx
        try:
            ctx.count_classified(visitor_in(scope, ctx.access, login=login))
        except LimitReached as e:
            return 429, {"error": str(e)}, None

        def predict() -> dict:
            with ctx.predict_slots:  # two forwards at a time, with Gradio's unqueued /predict
                return predict_bytes(ctx.project, bytes(body), name).to_dict()

        try:
            answer = await anyio.to_thread.run_sync(predict)
        except TLError as e:  # no model trained yet, the model's files changed
            return 409, {"error": str(e)}, None
        except Exception:  # noqa: BLE001 - said in words; the details go to the server's log
            log.exception("unexpected error answering %s", PATH)
            return 500, {"error": "Something went wrong on the server; the details are in its log."}, None
        return (422 if answer.get("error") else 200), answer, None
