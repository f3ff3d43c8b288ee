"""Training in a separate process, driven by the same CLI a user could call.

The web app starts ``python -m tl_app train PROJECT --run-id ID --events FILE``
and follows the events file; Stop creates the run's STOP file, which the
training process checks after every batch, and ends the process if it does not
stop in time. A crash in training cannot take the web server down.
"""

from __future__ import annotations

import json
import os
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
class TrainingProcess:
    """A training process the app started, and what it has reported so far."""

    project: Project
    run_id: str
    proc: subprocess.Popen
    events_path: Path
    started: float = field(default_factory=time.time)
    events: list[dict] = field(default_factory=list)
    _offset: int = 0
    stop_requested: float | None = None

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
        """Ask the training to stop at its next batch; it is recorded as stopped."""
        if self.stop_requested is None:
            self.stop_requested = time.time()
        (runs.run_dir(self.project, self.run_id) / "STOP").touch()

    def enforce_stop(self) -> None:
        """End the process if a requested stop has not taken effect in time."""
        if self.stop_requested is not None and self.running and time.time() - self.stop_requested > STOP_GRACE_SECONDS:
            self.proc.kill()
            self.proc.wait(timeout=10)
            run = runs.get_run(self.project, self.run_id)
            if run.status == "running":
                runs.end_run(self.project, self.run_id, status="stopped", seconds=time.time() - self.started,
                             reason="stopped by the user (the process was ended)")

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

    def result(self) -> runs.Run:
        """The run as recorded; a process that died without recording gets 'failed'."""
        run = runs.get_run(self.project, self.run_id)
        if run.status == "running" and not self.running:
            run = runs.end_run(self.project, self.run_id, status="failed",
                               reason=self.error_text() or f"the training process ended with code {self.proc.returncode}")
        return run


def trainer_holder(project: Project) -> Optional[dict]:
    """Who is training on the project right now (run, started), or None."""
    return trainer_lock(project).holder()


def start_training(project: Project, cfg: TrainConfig) -> TrainingProcess:
    """Start a training process; raises :class:`TrainerBusy` or :class:`PreflightError` at once."""
    cfg.validate()
    preflight(take_snapshot(project), cfg.valid_pct)
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
               "--events", str(events), "--arch", cfg.arch, "--epochs", str(cfg.epochs), "--size", str(cfg.size),
               "--batch-size", str(cfg.batch_size)]
        if not cfg.pretrained:
            cmd.append("--no-pretrained")
        if cfg.quick:
            cmd.append("--quick")
        if cfg.weights:
            cmd += ["--weights", str(cfg.weights)]
        env = dict(os.environ)
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONWARNINGS", "ignore")
        with open(rdir / "stdout.txt", "wb") as out, open(rdir / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=pkg_root)
        tp = TrainingProcess(project, run_id, proc, events)
        # Wait until the process holds the trainer lock (or ends), so that the next
        # visitor sees it as busy.
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None and trainer_holder(project) is None:
            time.sleep(0.05)
        return tp
