"""Training in a separate process, driven by the same CLI a user could call.

The web app starts ``python -m tl_app train PROJECT --run-id ID --events FILE``
(or ``lr-find``) and follows the events file; Stop creates the job's STOP file,
which the process checks after every batch, and ends the process if it does not
stop in time. A crash in training cannot take the web server down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from . import runs
from .errors import TrainerBusy
from .project import Project
from .train import TrainConfig, busy_message, preflight, take_snapshot, trainer_lock

#: How long a stopped training may take to end by itself before it is killed.
STOP_GRACE_SECONDS = 30.0

_start_lock = threading.Lock()


@dataclass
class JobProcess:
    """A process the app started (a training or a learning-rate search) and what it reported so far."""

    project: Project
    job_id: str
    proc: subprocess.Popen
    events_path: Path
    started: float = field(default_factory=time.time)
    events: list[dict] = field(default_factory=list)
    _offset: int = 0
    stop_requested: float | None = None

    @property
    def stop_file(self) -> Path:
        return self.events_path.with_name("STOP")

    def poll_events(self) -> list[dict]:
        """New events since the last call (complete lines only)."""
        new: list[dict] = []
        try:
            with open(self.events_path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return new
        end = chunk.rfind(b"\n")
        if end < 0:
            return new
        self._offset += end + 1
        for line in chunk[: end + 1].splitlines():
            try:
                new.append(json.loads(line))
            except ValueError:
                continue
        self.events.extend(new)
        return new

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """Ask the process to stop at its next batch."""
        if self.stop_requested is None:
            self.stop_requested = time.time()
        self.stop_file.touch()

    def _killed(self) -> None:
        """Called after a process was ended because it did not stop in time."""

    def enforce_stop(self) -> None:
        """End the process if a requested stop has not taken effect in time."""
        if self.stop_requested is not None and self.running and time.time() - self.stop_requested > STOP_GRACE_SECONDS:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self._killed()

    def follow(self, interval: float = 0.5) -> Iterator[list[dict]]:
        """Yield new events every ``interval`` seconds until the process ends."""
        while True:
            alive = self.running
            self.enforce_stop()
            yield self.poll_events()
            if not alive:
                yield self.poll_events()
                break
            time.sleep(interval)

    def error_text(self) -> str:
        """What the process printed as its error, if it failed before recording anything."""
        err = self.events_path.with_name("stderr.txt")
        try:
            lines = [ln for ln in err.read_text(encoding="utf-8", errors="replace").splitlines() if ln.startswith("error:")]
        except OSError:
            return ""
        return lines[-1][len("error:"):].strip() if lines else ""


@dataclass
class TrainingProcess(JobProcess):
    """A training process; its run is recorded in the project."""

    @property
    def run_id(self) -> str:
        return self.job_id

    @property
    def stop_file(self) -> Path:
        return runs.run_dir(self.project, self.run_id) / "STOP"

    def _killed(self) -> None:
        run = runs.get_run(self.project, self.run_id)
        if run.status == "running":
            runs.end_run(self.project, self.run_id, status="stopped", seconds=time.time() - self.started,
                         reason="stopped by the user (the process was ended)")

    def result(self) -> runs.Run:
        """The run as recorded; a process that died without recording gets 'failed'."""
        run = runs.get_run(self.project, self.run_id)
        if run.status == "running" and not self.running:
            run = runs.end_run(self.project, self.run_id, status="failed",
                               reason=self.error_text() or f"the training process ended with code {self.proc.returncode}")
        return run


@dataclass
class LrFindProcess(JobProcess):
    """A learning-rate search (``python -m tl_app lr-find``); its answer is its JSON output."""

    def result(self) -> dict:
        """``{"lr": ...}`` when the search finished, else ``{"error": reason}`` (stopped or failed)."""
        if self.running:
            self.proc.wait()
        try:
            doc = json.loads(self.events_path.with_name("stdout.txt").read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            doc = {}
        error_text = self.error_text()
        shutil.rmtree(self.events_path.parent, ignore_errors=True)  # a search leaves nothing behind
        if "lr" in doc:
            return doc
        if self.stop_requested is not None:
            return {"error": "The learning-rate search was stopped.", "stopped": True}
        return {"error": doc.get("error") or error_text
                or f"the learning-rate search ended with code {self.proc.returncode}"}


def trainer_holder(project: Project) -> Optional[dict]:
    """Who is training on the project right now (run, started), or None."""
    return trainer_lock(project).holder()


def fail_abandoned_runs(project: Project) -> None:
    """Runs still 'running' while nobody holds the trainer were left by a process that died: 'failed'.

    A training holds the trainer from before its run is recorded until after its end is.
    """
    runs.mark_abandoned(project, lambda r: trainer_holder(project) is not None)


def _cli_args(cfg: TrainConfig) -> list[str]:
    args = ["--arch", cfg.arch, "--epochs", str(cfg.epochs), "--size", str(cfg.size),
            "--batch-size", str(cfg.batch_size)]
    if not cfg.pretrained:
        args.append("--no-pretrained")
    if cfg.weights:
        args += ["--weights", str(cfg.weights)]
    return args


def _spawn(cmd: list[str], folder: Path) -> subprocess.Popen:
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=pkg_root)


def _wait_for_lock(project: Project, proc: subprocess.Popen) -> None:
    # Until the process holds the trainer lock (or ends), so that the next visitor sees it as busy.
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and trainer_holder(project) is None:
        time.sleep(0.05)


def start_training(project: Project, cfg: TrainConfig) -> TrainingProcess:
    """Start a training process; raises :class:`TrainerBusy` or :class:`PreflightError` at once."""
    cfg.validate()
    preflight(take_snapshot(project), cfg.valid_pct)
    if cfg.quick:
        from .quick import check_quick_possible

        check_quick_possible(cfg.pretrained, cfg.weights)
    with _start_lock:
        holder = trainer_holder(project)
        if holder is not None:
            raise TrainerBusy(busy_message(holder))
        run_id = runs.new_run_id()
        rdir = runs.run_dir(project, run_id)
        rdir.mkdir(parents=True, exist_ok=True)
        events = rdir / "events.jsonl"
        events.touch()
        cmd = [sys.executable, "-m", "tl_app", "train", str(project.root), "--json", "--run-id", run_id,
               "--events", str(events), *_cli_args(cfg)]
        if cfg.quick:
            cmd.append("--quick")
        if cfg.lr is not None:
            cmd += ["--lr", repr(float(cfg.lr))]
        if cfg.patience:
            cmd += ["--patience", str(int(cfg.patience))]
        tp = TrainingProcess(project, run_id, _spawn(cmd, rdir), events)
        _wait_for_lock(project, tp.proc)
        return tp


def start_lr_find(project: Project, cfg: TrainConfig) -> LrFindProcess:
    """Start ``lr-find`` in a process (it holds the trainer like a training); raises like :func:`start_training`."""
    cfg.validate()
    preflight(take_snapshot(project), cfg.valid_pct)
    with _start_lock:
        holder = trainer_holder(project)
        if holder is not None:
            raise TrainerBusy(busy_message(holder))
        job_id = "lr-find-" + runs.new_run_id()
        folder = project.cache_dir / "jobs" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        events = folder / "events.jsonl"
        events.touch()
        cmd = [sys.executable, "-m", "tl_app", "lr-find", str(project.root), "--json", "--events", str(events),
               "--stop-file", str(folder / "STOP"), *_cli_args(cfg)]
        job = LrFindProcess(project, job_id, _spawn(cmd, folder), events)
        _wait_for_lock(project, job.proc)
        return job
