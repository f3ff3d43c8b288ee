"""Runs: one training job and everything it produced, recorded in the project database.

A run's folder ``runs/<id>/`` holds ``model.safetensors`` + ``model.json``,
``events.jsonl`` (live progress), ``report.json`` (metrics, confusion matrix)
and ``scores.json`` (probabilities for every item, used by Review). Only models
whose run is recorded here, with the hash written at training time, are ever
loaded.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RunNotFound
from .project import Project, inside

_RUN_RE = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{4}$")


@dataclass
class Run:
    """A recorded training run."""

    id: str
    created: float
    status: str                     # running, finished, stopped, failed
    arch: str
    mode: str                       # quick or finetune
    config: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    seconds: float | None = None
    reason: str = ""
    model_file: str | None = None
    model_sha256: str | None = None
    finished: float | None = None

    @property
    def has_model(self) -> bool:
        return bool(self.model_file and self.model_sha256)

    @property
    def name(self) -> str:
        """What people call the run: mode, network and start time ("Quick · resnet18 · 25 Nov 14:02")."""
        return run_name(self.id, self.mode, self.arch)

    @property
    def accuracy(self) -> float | None:
        """Accuracy on the run's own held-out pictures (None without a model)."""
        return self.metrics.get("accuracy")

    def to_dict(self) -> dict:
        return {"run": self.id, "name": self.name, "status": self.status, "metrics": self.metrics,
                "seconds": self.seconds, "arch": self.arch, "mode": self.mode, "created": self.created,
                "reason": self.reason}


MODE_NAMES = {"quick": "Quick", "finetune": "Full fine-tuning"}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def new_run_id() -> str:
    """A run id: its local start time to the second, and 4 random hex digits."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + os.urandom(2).hex()


def run_name(run_id: str, mode: str, arch: str) -> str:
    """A run's name for people, from its mode, network and the start time its id holds.

    Known before the run is recorded (the id is made when it starts), and the same
    in every front; the id itself stays in the run's details.
    """
    when = ""
    if _RUN_RE.match(run_id or ""):
        month = int(run_id[4:6])
        when = f"{int(run_id[6:8])} {_MONTHS[month - 1] if 1 <= month <= 12 else '?'} {run_id[9:11]}:{run_id[11:13]}"
    return " · ".join(x for x in (MODE_NAMES.get(mode, mode), arch, when) if x)


def run_names(all_runs: list["Run"]) -> dict[str, str]:
    """Names for a list of runs, told apart: the later of two runs started in the same minute gets " (2)"."""
    names: dict[str, str] = {}
    seen: dict[str, int] = {}
    for r in sorted(all_runs, key=lambda r: r.id):
        n = seen[r.name] = seen.get(r.name, 0) + 1
        names[r.id] = r.name if n == 1 else f"{r.name} ({n})"
    return names


def validate_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_RE.match(run_id):
        raise RunNotFound(f"'{run_id}' is not a run of this project.")
    return run_id


def run_dir(project: Project, run_id: str) -> Path:
    return inside(project.runs_dir, validate_run_id(run_id))


def _from_row(r) -> Run:
    d = dict(r)
    d["config"] = json.loads(d["config"] or "{}")
    d["metrics"] = json.loads(d["metrics"] or "{}")
    return Run(**d)


def start_run(project: Project, run_id: str, *, arch: str, mode: str, cfg: dict) -> Run:
    """Record a run as running."""
    validate_run_id(run_id)
    run_dir(project, run_id).mkdir(parents=True, exist_ok=True)
    with project._write() as con:
        con.execute("INSERT INTO runs(id, created, status, arch, mode, config) VALUES(?,?,?,?,?,?)",
                    (run_id, time.time(), "running", arch, mode, json.dumps(cfg)))
    return get_run(project, run_id)


def end_run(project: Project, run_id: str, *, status: str, metrics: dict | None = None, seconds: float | None = None,
            reason: str = "", model_file: str | None = None, model_sha256: str | None = None) -> Run:
    """Record how a run ended (finished, stopped or failed) and its model, if any."""
    with project._write() as con:
        con.execute("UPDATE runs SET status=?, metrics=?, seconds=?, reason=?, model_file=?, model_sha256=?, finished=?"
                    " WHERE id=?",
                    (status, json.dumps(metrics or {}), seconds, reason, model_file, model_sha256, time.time(), run_id))
    return get_run(project, run_id)


def get_run(project: Project, run_id: str) -> Run:
    validate_run_id(run_id)
    with project._read() as con:
        r = con.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
    if r is None:
        raise RunNotFound(f"There is no run '{run_id}' in this project.")
    return _from_row(r)


def list_runs(project: Project) -> list[Run]:
    """Every run, newest first."""
    with project._read() as con:
        return [_from_row(r) for r in con.execute("SELECT * FROM runs ORDER BY created DESC, id DESC")]


def mark_abandoned(project: Project, is_alive) -> None:
    """Runs left 'running' by a process that is gone become 'failed'."""
    for r in list_runs(project):
        if r.status == "running" and not is_alive(r) and get_run(project, r.id).status == "running":
            end_run(project, r.id, status="failed", reason="the training process ended unexpectedly")


def set_active_run(project: Project, run_id: str | None, *, why: dict | None = None) -> None:
    """Choose which run Classify and Review use (None: the latest finished one).

    ``why`` records how the choice was made (see :mod:`tl_app.run_choice`); without
    it the choice is the user's own.
    """
    if run_id is not None:
        r = get_run(project, run_id)
        if not r.has_model:
            raise RunNotFound(f"Run {r.name} has no model to use ({r.status}).")
    record = {"how": "picked", **(why or {}), "run": run_id, "at": time.time()}
    with project._write() as con:
        if run_id is None:
            con.execute("DELETE FROM meta WHERE key IN ('active_run', 'in_use')")
        else:
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('active_run', ?)", (run_id,))
            con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('in_use', ?)", (json.dumps(record),))


def in_use_record(project: Project) -> dict | None:
    """How the run in use was chosen, as recorded with it (None when nothing was recorded)."""
    with project._read() as con:
        row = con.execute("SELECT value FROM meta WHERE key='in_use'").fetchone()
    if row is None:
        return None
    try:
        rec = json.loads(row["value"])
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def chosen_run_id(project: Project) -> str | None:
    """The run chosen for Review and Classify (by a person or after a comparison), if one was."""
    with project._read() as con:
        row = con.execute("SELECT value FROM meta WHERE key='active_run'").fetchone()
    return row["value"] if row is not None else None


def active_run(project: Project, *, excluding: str | None = None) -> Run | None:
    """The run Classify and Review use: the chosen one, else the latest finished run with a model.

    ``excluding`` leaves one run out of the fallback (a run that has just finished
    and is not chosen yet).
    """
    chosen = chosen_run_id(project)
    if chosen is not None:
        try:
            r = get_run(project, chosen)
            if r.has_model:
                return r
        except RunNotFound:
            pass
    for r in list_runs(project):
        if r.status == "finished" and r.has_model and r.id != excluding:
            return r
    return None


def read_json(project: Project, run_id: str, name: str) -> dict | list | None:
    """A JSON file the run wrote (report.json, scores.json), or None."""
    p = run_dir(project, run_id) / name
    if not p.is_file():
        return None
    return json.loads(p.read_text(encoding="utf-8"))


def write_json(folder: Path, name: str, data) -> None:
    """Write a JSON file atomically."""
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, folder / name)
