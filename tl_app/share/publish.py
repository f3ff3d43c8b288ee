"""Publishing to the Hugging Face Hub: the model bundle, the classify-only Space, or the dataset.

Owners only (the fronts ask :mod:`tl_app.access` first). The token is, in order:
the one given (the signed-in owner's OAuth token in the web app, ``--token`` on the
command line), ``HF_TOKEN``, or the one ``hf auth login`` saved. Before anything is
built or sent, the Hub is asked who the token belongs to, with short timeouts of our
own (huggingface_hub's shared client waits without a limit): offline, unreachable or
a refused token is said in plain words within 10 s. Then huggingface_hub creates the
repository (``exist_ok``: publishing again adds a commit) and uploads the folder.

``HF_ENDPOINT`` (read when publishing, not at import) points everything at another
Hub, such as the tests' loopback stand-in.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from .. import config
from ..errors import InputError, TLError
from ..jobs import Progress, StopToken
from ..project import Project

#: What ``--to`` accepts, and the Hub's name for each kind of repository.
TARGETS = {"model": "model", "space": "space", "dataset": "dataset"}
DEFAULT_ENDPOINT = "https://huggingface.co"
#: Seconds to connect to the Hub, and to wait for its answer to "who am I".
CONNECT_TIMEOUT = 6.0
ANSWER_TIMEOUT = 8.0
_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")


class PublishFailed(TLError):
    """The Hub could not be reached, refused the token, or refused the repository."""


@dataclass
class PublishReport:
    """Where it went: the repository's address, its kind and name, the commit, how many files, how long."""

    url: str
    repo_id: str
    repo_type: str
    commit_url: str
    files: int
    seconds: float
    private: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        kind = {"model": "model", "space": "Space", "dataset": "dataset"}[self.repo_type]
        return f"Published the {kind} to {self.url} ({self.files} files, {'private' if self.private else 'public'})."


def endpoint() -> str:
    """The Hub's address: ``HF_ENDPOINT`` when set (read now, not when huggingface_hub was imported)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def find_token(given: Optional[str] = None) -> str:
    """The token to publish with: the one given, else ``HF_TOKEN`` or the one ``hf auth login`` saved."""
    if given and given.strip():
        return given.strip()
    from huggingface_hub import get_token

    token = get_token()
    if not token:
        raise PublishFailed("There is no Hugging Face token to publish with: sign in with Hugging Face (on a Space), "
                            "set HF_TOKEN, or run `hf auth login` on this computer.")
    return token


def _hub_words(e: BaseException, what: str) -> str:
    """A failure talking to the Hub, in plain words (no library text)."""
    from .. import network

    status = getattr(getattr(e, "response", None), "status_code", None)
    if status == 401:
        return (f"The Hugging Face Hub refused the token while {what}: it is not valid any more, or it may not write. "
                "Sign in again, or make a token with write access (Settings, Access Tokens).")
    if status == 403:
        return (f"The Hugging Face Hub refused while {what}: this token may not write there. Choose a repository in "
                "your own name, or a token with write access to it.")
    if status == 402:
        return (f"The Hugging Face Hub refused while {what}: the account's plan does not allow it (since 2026-07 a free "
                "account can create only ZeroGPU Spaces).")
    if status == 409:
        return f"The Hugging Face Hub refused while {what}: a repository of another kind already has that name."
    if status is not None:
        return f"The Hugging Face Hub answered with an error ({status}) while {what}; try again later."
    if network.offline(e):
        return "The Hugging Face Hub cannot be reached: this computer seems to have no internet connection."
    if network.timed_out(e):
        return "The Hugging Face Hub did not answer in time; check the connection and try again."
    return f"The Hugging Face Hub cannot be reached ({type(e).__name__}) while {what}; try again later."


def whoami(token: str) -> str:
    """The Hub's user name for ``token``, asked with short timeouts; :class:`PublishFailed` says why not."""
    import httpx

    if config.offline():
        raise PublishFailed("The app is in offline mode (TL_OFFLINE or HF_HUB_OFFLINE): nothing can be published.")
    url = f"{endpoint()}/api/whoami-v2"
    try:
        r = httpx.get(url, headers={"authorization": f"Bearer {token}"}, follow_redirects=False,
                      timeout=httpx.Timeout(ANSWER_TIMEOUT, connect=CONNECT_TIMEOUT))
    except httpx.HTTPError as e:
        raise PublishFailed(_hub_words(e, "checking the token")) from None
    if r.status_code != 200:
        raise PublishFailed(_hub_words(_Status(r.status_code), "checking the token"))
    try:
        name = r.json().get("name")
    except ValueError:
        name = None
    if not isinstance(name, str) or not name:
        raise PublishFailed("The Hugging Face Hub's answer about the token was not understood; try again later.")
    return name


class _Status(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.response = type("R", (), {"status_code": status})()


def repo_id_for(name: str, user: str) -> str:
    """``user/name`` for a bare name, or ``owner/name`` as given; refuses names the Hub would."""
    name = (name or "").strip().strip("/")
    parts = name.split("/")
    if not name or len(parts) > 2 or not all(_NAME.match(p) and ".." not in p for p in parts):
        raise InputError(f"'{name}' is not a repository name the Hub accepts: letters, digits, '-', '_' and '.', "
                         "optionally after your user or organisation name and a slash (ann/cats).")
    return name if len(parts) == 2 else f"{user}/{name}"


def _build(project: Project, target: str, work: Path, run: Optional[str],
           progress: Optional[Callable[[Progress], None]], stop: Optional[StopToken]) -> Path:
    """The folder to upload for ``target``, built in ``work``."""
    if target == "dataset":
        from .archive import export_dataset

        zpath = export_dataset(project, work / "dataset.zip", progress=progress, stop=stop).out
        folder = work / "dataset"
        with zipfile.ZipFile(zpath) as zf:  # our own zip, just written
            zf.extractall(folder)
        zpath.unlink()
        return folder
    from . import bundle  # the bundle and the Space are built by the export code

    make = bundle.export_bundle if target == "model" else bundle.export_space
    out = work / target
    return make(project, out, run_id=run, progress=lambda m: None, stop=stop).out  # a folder, checked like any export


def publish(project: Project, target: str, repo: str, *, run: Optional[str] = None, token: Optional[str] = None,
            private: bool = True, progress: Optional[Callable[[Progress], None]] = None,
            stop: Optional[StopToken] = None) -> PublishReport:
    """Push the model bundle (``model``), the Space folder (``space``) or the dataset (``dataset``) to the Hub.

    ``repo`` is ``name`` (in the token's user name) or ``owner/name``. The repository
    is created if needed (private unless ``private=False``; an existing one keeps its
    visibility) and gets one commit with the files. Raises :class:`PublishFailed`
    with plain words when the Hub cannot be reached or refuses.
    """
    if target not in TARGETS:
        raise InputError(f"Publish what? Choose one of: {', '.join(TARGETS)}.")
    t0 = time.time()
    tok = find_token(token)
    user = whoami(tok)
    repo_id = repo_id_for(repo, user)
    repo_type = TARGETS[target]
    with tempfile.TemporaryDirectory(prefix="tl-publish-", dir=project.tmp_dir) as tmp:
        folder = _build(project, target, Path(tmp), run, progress, stop)
        files = sum(1 for f in folder.rglob("*") if f.is_file())
        if stop is not None and stop.is_set():
            raise TLError("Publishing was stopped before anything was sent.")
        from huggingface_hub import HfApi

        api = HfApi(endpoint=endpoint(), token=tok)
        try:
            url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                                  space_sdk="gradio" if repo_type == "space" else None)
        except Exception as e:  # noqa: BLE001 - every Hub failure becomes plain words
            raise PublishFailed(_hub_words(e, f"creating {repo_id}")) from None
        try:
            info = api.upload_folder(repo_id=repo_id, repo_type=repo_type, folder_path=folder,
                                     commit_message=f"Publish the {target} from tl_app")
        except Exception as e:  # noqa: BLE001
            raise PublishFailed(_hub_words(e, f"uploading to {repo_id}")) from None
    return PublishReport(url=str(url), repo_id=repo_id, repo_type=repo_type,
                         commit_url=str(getattr(info, "commit_url", "") or ""), files=files,
                         seconds=time.time() - t0, private=private)
