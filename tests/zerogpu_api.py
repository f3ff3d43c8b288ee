"""A loopback stand-in for the ZeroGPU device API that ``spaces`` talks to, which lends no GPU.

On a ZeroGPU Space, ``spaces`` asks ``SPACES_ZERO_DEVICE_API_URL`` for a GPU before each
call (``POST /schedule``). This server answers the way the real one does when it will
not lend one, so that ``spaces``' own code raises its own errors: a used-up quota (HTTP
429 with what is left and when it comes back), a request longer than allowed (429 with
a negative wait), or no GPU free (503). It never grants a GPU: there is none here.
It records every request, so a test can read the duration the app asked for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from loopback import JsonHandler, LoopbackServer

ROOT = Path(__file__).resolve().parent.parent

QUOTA, TOO_LONG, NO_GPU = "quota", "too_long", "no_gpu"


@dataclass
class ZeroGpuApi:
    """Serve on 127.0.0.1 until :meth:`close`; ``mode`` says how /schedule refuses."""

    mode: str = QUOTA
    left: int = 12               # seconds of quota left (QUOTA)
    wait: int = 3540             # seconds until enough comes back (QUOTA)
    requests: list = field(default_factory=list)

    def __post_init__(self):
        api = self

        class Handler(JsonHandler):
            def do_POST(self):
                url = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                api.requests.append((url.path, params))
                if url.path == "/schedule":
                    if api.mode == NO_GPU:
                        return self.send_json(503, {})
                    wait = -1 if api.mode == TOO_LONG else api.wait
                    return self.send_json(429, {"left": api.left, "wait": wait},
                                        {"X-Authenticated": "regular"} if "token" in params else {})
                return self.send_json(200, {})  # /startup-report, /release

        self._server = LoopbackServer(Handler).start()

    @property
    def url(self) -> str:
        return self._server.url

    def schedules(self) -> list[dict]:
        """The parameters of every GPU request so far (``durationSeconds``, ``token``...)."""
        return [p for path, p in self.requests if path == "/schedule"]

    def close(self) -> None:
        self._server.close()

    def __enter__(self) -> "ZeroGpuApi":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def ip_token(payload: dict | None = None) -> str:
    """A token shaped like the ``X-IP-Token`` Hugging Face's proxy adds (``spaces`` reads only its payload)."""
    import base64

    body = base64.urlsafe_b64encode(json.dumps(payload or {"user": "ann"}).encode()).decode().rstrip("=")
    return f"e30.{body}.c2ln"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zerogpu_app(project_root: Path, api_url: str, log: Path):
    """``python app.py`` as a ZeroGPU Space starts it (SPACES_ZERO_GPU, the device API), on loopback.

    Returns ``(process, url)``; the server is up when this returns.
    """
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SPACE_ID", "SYSTEM", "TL_AUTH", "TL_OWNERS")}
    env.update(SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=api_url, TL_PROJECT=str(project_root),
               PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(ROOT))
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    end = time.time() + 120
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the app ended: {log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"the app did not start: {log.read_text(errors='replace')[-2000:]}")
