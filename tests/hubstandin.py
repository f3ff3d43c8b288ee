"""A loopback stand-in for the Hugging Face Hub's HTTP API, enough for huggingface_hub to publish.

Implements what ``HfApi`` (huggingface_hub 2.x) calls to create a repository and
commit a folder: ``GET /api/whoami-v2``, ``GET /api/agent-harnesses`` (a registry the
client asks for once a day; answered empty), ``POST /api/repos/create``,
``POST /api/validate-yaml`` (a README's front matter must parse as a YAML mapping),
``POST /api/{type}s/{id}/preupload/{rev}`` (every file answered "regular", so
no LFS or Xet transfer is needed: keep test files small) and
``POST /api/{type}s/{id}/commit/{rev}`` (ndjson, base64 file contents). It records
the repositories created and the files of each commit. A request with another
token than the stand-in's gets 401, as the Hub answers a refused token.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field

from loopback import JsonHandler, LoopbackServer

TOKEN = "hf_standin_write_token"
USER = "ann"


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool | None
    sdk: str | None
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict] = field(default_factory=list)


class HubStandIn:
    """``with HubStandIn() as hub:`` serves on 127.0.0.1; ``hub.url`` goes into ``HF_ENDPOINT``."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.readmes: list[str] = []
        self.lock = threading.Lock()
        hub = self

        class Handler(JsonHandler):
            def _authorised(self) -> bool:
                if self.headers.get("Authorization") == f"Bearer {TOKEN}":
                    return True
                self.send_json(401, {"error": "Invalid credentials in Authorization header"})
                return False

            def do_GET(self):
                with hub.lock:
                    hub.requests.append(("GET", self.path))
                if self.path.startswith("/api/agent-harnesses"):
                    self.send_json(200, {"standardEnvVars": [], "harnesses": {}})
                    return
                if self.path.startswith("/api/whoami-v2"):
                    if self._authorised():
                        self.send_json(200, {"type": "user", "name": USER, "auth": {"accessToken": {"role": "write"}}})
                    return
                self.send_json(404, {"error": "not found"})

            def do_POST(self):
                with hub.lock:
                    hub.requests.append(("POST", self.path))
                body = self.body()
                if not self._authorised():
                    return
                base = f"http://{self.headers.get('Host')}"
                if self.path == "/api/validate-yaml":
                    import yaml

                    text = json.loads(body)["content"]
                    front = text.split("---", 2)[1] if text.startswith("---") else None
                    try:  # no front matter is fine; front matter must be a mapping
                        ok = front is None or isinstance(yaml.safe_load(front), dict)
                    except yaml.YAMLError:
                        ok = False
                    with hub.lock:
                        hub.readmes.append(text)
                    if ok:
                        self.send_json(200, {"errors": [], "warnings": []})
                    else:
                        self.send_json(400, {"errors": [{"message": "the front matter is not a YAML mapping"}]})
                    return
                if self.path == "/api/repos/create":
                    p = json.loads(body)
                    kind = p.get("type") or "model"
                    repo_id = f"{p.get('organization') or USER}/{p['name']}"
                    prefix = "" if kind == "model" else f"{kind}s/"
                    url = f"{base}/{prefix}{repo_id}"
                    with hub.lock:
                        if (kind, repo_id) in hub.repos:
                            self.send_json(409, {"error": "You already created this repo", "url": url})
                            return
                        private = p.get("visibility", None)
                        hub.repos[(kind, repo_id)] = Repo(repo_id, kind, None if private is None else private == "private",
                                                          p.get("sdk"))
                    self.send_json(200, {"url": url, "name": repo_id})
                    return
                m = re.match(r"^/api/(model|dataset|space)s/([^/]+/[^/]+)/(preupload|commit)/([^/?]+)", self.path)
                if not m:
                    self.send_json(404, {"error": "not found"})
                    return
                kind, repo_id, what, _rev = m.groups()
                with hub.lock:
                    repo = hub.repos.get((kind, repo_id))
                if repo is None:
                    self.send_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return
                if what == "preupload":
                    files = json.loads(body)["files"]
                    self.send_json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                "oid": None} for f in files]})
                    return
                lines = [json.loads(x) for x in body.splitlines() if x.strip()]
                commit = {"header": lines[0]["value"], "files": []}
                with hub.lock:
                    for ln in lines[1:]:
                        if ln["key"] != "file":  # lfsFile would need an LFS or Xet upload: not stood in for
                            self.send_json(400, {"error": f"unsupported operation {ln['key']}"})
                            return
                        repo.files[ln["value"]["path"]] = base64.b64decode(ln["value"]["content"])
                        commit["files"].append(ln["value"]["path"])
                    repo.commits.append(commit)
                    oid = f"{len(repo.commits):040x}"
                prefix = "" if kind == "model" else f"{kind}s/"
                self.send_json(200, {"commitUrl": f"{base}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid,
                                 "pullRequestUrl": None})

        self.server = LoopbackServer(Handler)
        self.url = self.server.url

    def __enter__(self) -> "HubStandIn":
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.close()
