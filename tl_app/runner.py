"""Training in a separate process, driven by the same CLI a user could call.

The web app starts ``python -m tl_app train PROJECT --run-id ID --events FILE``
(or ``lr-find``) and follows the events file; Stop creates the job's STOP file,
which the process checks after every batch, and ends the process if it does not
stop in time. A crash in training cannot take the web server down.

Each process started here is watched by a thread of its own until it ends: the
thread enforces a requested stop, reaps the process (no zombie is left behind)
and records a run that ended without saying how as failed. Anyone may follow a
job's progress from the start (each follower reads the events file on its
own); who may stop it is decided by :func:`tl_app.access.may_stop_training`.

On ZeroGPU (a Hugging Face Space whose GPU is lent for each job) a training runs
instead in a worker that ``spaces.GPU`` forks from this server with a GPU attached
(:mod:`tl_app.zerogpu`); a thread of this process waits for it. It writes the same
events file, watches the same STOP file and records its run in the project the same
way, so following and stopping are the same. When ZeroGPU lends no GPU (the quota is
used up, none is free) nothing is recorded and the job says why (``not_started``);
the same training can then run on the CPU (``TrainConfig.cpu``), in a process as
anywhere else.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from . import errors, runs, zerogpu
from .access import Visitor, may_stop_training
from .errors import RunNotFound, TLError, TrainerBusy
from .models import settle_weights_file
from .project import Project
from .train import Snapshot, TrainConfig, busy_message, preflight, take_snapshot, trainer_lock

#: How long a stopped training may take to end by itself before it is killed.
STOP_GRACE_SECONDS = 30.0
#: How often the watcher thread looks at its process.
WATCH_INTERVAL = 0.25

_start_lock = threading.Lock()
_jobs_lock = threading.Lock()
#: The job each project's trainer runs, for jobs started by this process (project root -> job).
_jobs: dict[str, "JobProcess"] = {}


class EventReader:
    """Reads a job's events file from its beginning, a complete line at a time (one per follower)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._offset = 0

    def read(self) -> list[dict]:
        """Events written since the last call."""
        new: list[dict] = []
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
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
        return new


@dataclass
class JobProcess:
    """A process the app started (a training or a learning-rate search), watched until it ends.

    ``owner`` is who started it (None: unknown). ``done`` is set once the process
    has ended, been reaped and its outcome recorded.
    """

    project: Project
    job_id: str
    proc: subprocess.Popen
    events_path: Path
    owner: Optional[Visitor] = None
    title: str = ""
    started: float = field(default_factory=time.time)
    stop_requested: float | None = None
    done: threading.Event = field(default_factory=threading.Event)
    kind: str = "training"
    weights: Optional[str] = None       # the stored weights file it was given (see settle_weights_file)
    killable: bool = True               # a process that ignores Stop is ended after STOP_GRACE_SECONDS

    @property
    def stop_file(self) -> Path:
        return self.events_path.with_name("STOP")

    @property
    def running(self) -> bool:
        """Whether the job has not ended yet (its outcome is not recorded)."""
        return not self.done.is_set()

    def stop(self) -> None:
        """Ask the process to stop at its next batch (whoever asks: see :func:`request_stop`)."""
        if self.stop_requested is None:
            self.stop_requested = time.time()
        try:
            self.stop_file.touch()
        except OSError:
            pass

    def _killed(self) -> None:
        """Called after a process was ended because it did not stop in time."""

    def _finish(self) -> None:
        """Called once the process has ended and been reaped: record its outcome."""

    def _watch(self) -> None:
        try:
            while self.proc.poll() is None:
                if (self.killable and self.stop_requested is not None
                        and time.time() - self.stop_requested > STOP_GRACE_SECONDS and self.proc.poll() is None):
                    self.proc.kill()
                    self.proc.wait(timeout=30)
                    self._killed()
                    break
                time.sleep(WATCH_INTERVAL)
            self.proc.wait()
            self._finish()
            self._settle_weights()
        finally:
            with _jobs_lock:
                if _jobs.get(_key(self.project)) is self:
                    del _jobs[_key(self.project)]
            self.done.set()

    def _accepted_run(self) -> Optional[str]:
        """The run this job produced if it finished and is now in use (its weights file stays)."""
        return None

    def _settle_weights(self) -> None:
        try:
            settle_weights_file(self.project.root, self.weights, accepted_run=self._accepted_run())
        except OSError:
            pass

    def start_watching(self) -> "JobProcess":
        threading.Thread(target=self._watch, name=f"watch-{self.job_id}", daemon=True).start()
        return self

    def follow(self, interval: float = 0.5) -> Iterator[list[dict]]:
        """Every event from the job's start, then new ones every ``interval`` seconds, until it ends."""
        reader = EventReader(self.events_path)
        while True:
            ended = self.done.is_set()
            yield reader.read()
            if ended:
                break
            self.done.wait(interval)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job has ended and its outcome is recorded; False on timeout."""
        return self.done.wait(timeout)

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

    def _recorded_run(self) -> runs.Run:
        """The run's record; a process that ended before recording its run gets one, as failed.

        (It records the run once it has started: a process that could not start, or was ended
        first, would otherwise leave the page asking for a run the project never heard of.)
        """
        try:
            return runs.get_run(self.project, self.run_id)
        except RunNotFound:
            if self.proc.poll() is None:
                raise
        mode, _, rest = (self.title or "").partition(" · ")
        runs.start_run(self.project, self.run_id, arch=rest.partition(" · ")[0] or "unknown",
                       mode="quick" if mode.lower().startswith("quick") else "finetune", cfg={})
        return runs.end_run(self.project, self.run_id, status="failed", seconds=time.time() - self.started,
                            reason=self.error_text() or f"the training process ended before it started "
                                                        f"(code {self.proc.returncode})")

    def _killed(self) -> None:
        run = self._recorded_run()
        if run.status == "running":
            runs.end_run(self.project, self.run_id, status="stopped", seconds=time.time() - self.started,
                         reason="stopped by the user (the process was ended)")

    def _finish(self) -> None:
        self.result()

    def _accepted_run(self) -> Optional[str]:
        run = self._recorded_run()
        active = runs.active_run(self.project)
        return run.id if run.status == "finished" and active is not None and active.id == run.id else None

    def result(self) -> runs.Run:
        """The run as recorded; a process that died without recording gets 'failed'."""
        run = self._recorded_run()
        if run.status == "running" and self.proc.poll() is not None:
            run = runs.end_run(self.project, self.run_id, status="failed",
                               reason=self.error_text() or f"the training process ended with code {self.proc.returncode}")
        return run


class _GpuCall:
    """The ZeroGPU call of one training, made in a thread of this process; watched like a process.

    The thread runs in a copy of the starting request's context: ``spaces`` reads the
    visitor's request from it, and ZeroGPU counts the time against that visitor's quota.
    """

    def __init__(self, fn: Callable[[zerogpu.GpuJob], dict], job: zerogpu.GpuJob):
        self.returncode: Optional[int] = None
        self.value: Optional[dict] = None
        self.error: Optional[BaseException] = None
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._run, fn, job), name=f"gpu-{job.run_id}",
                                        daemon=True)
        self._thread.start()

    def _run(self, fn, job) -> None:
        try:
            self.value = fn(job)
            self.returncode = 0 if (self.value or {}).get("status") in ("finished", "stopped") else 1
        except BaseException as e:  # noqa: BLE001 - kept for the watcher, which records the outcome
            self.error = e
            self.returncode = 1

    def poll(self) -> Optional[int]:
        return None if self._thread.is_alive() else self.returncode

    def wait(self, timeout: float | None = None) -> Optional[int]:
        self._thread.join(timeout)
        return self.poll()

    def kill(self) -> None:
        """Nothing to do: a thread cannot be ended from outside (ZeroGPU ends its worker when the time is up)."""


@dataclass
class GpuTraining(TrainingProcess):
    """A training on a GPU lent by ZeroGPU (:mod:`tl_app.zerogpu`); ``proc`` is its :class:`_GpuCall`.

    ``not_started`` holds why it never started when that is so (ZeroGPU lent no GPU:
    :class:`~tl_app.errors.GpuUnavailable`, or the trainer was taken meanwhile): no run is
    recorded then and its folder is removed. ``seconds`` is the GPU time it asked for.
    """

    killable: bool = False
    seconds: int = 0
    not_started: Optional[TLError] = None

    def _recorded(self) -> bool:
        try:
            runs.get_run(self.project, self.run_id)
            return True
        except RunNotFound:
            return False

    def _finish(self) -> None:
        call: _GpuCall = self.proc
        if not self._recorded():
            if call.error is not None:
                self.not_started = (zerogpu.refusal(call.error, seconds=self.seconds)
                                    or TLError(f"The training did not start: {zerogpu.worker_error_text(call.error)}."))
            else:  # e.g. the trainer taken meanwhile (TrainerBusy): the worker's error, by its class name
                value = call.value or {}
                kind = getattr(errors, str(value.get("error") or ""), None)
                kind = kind if isinstance(kind, type) and issubclass(kind, TLError) else TLError
                self.not_started = kind(value.get("reason") or "the GPU worker ended without recording the run")
            shutil.rmtree(runs.run_dir(self.project, self.run_id), ignore_errors=True)
            return
        self.result()

    def _accepted_run(self) -> Optional[str]:
        return None if self.not_started is not None else super()._accepted_run()

    def result(self) -> runs.Run:
        """The run as recorded; raises ``not_started`` when the training never started."""
        if self.not_started is not None:
            raise self.not_started
        return super().result()

    def error_text(self) -> str:
        call: _GpuCall = self.proc
        if call.error is not None:
            return zerogpu.worker_error_text(call.error)
        return str((call.value or {}).get("reason") or "")


@dataclass
class LrFindProcess(JobProcess):
    """A learning-rate search (``python -m tl_app lr-find``); its answer is its JSON output."""

    kind: str = "lr-find"
    outcome: Optional[dict] = None

    def _finish(self) -> None:
        try:
            doc = json.loads(self.events_path.with_name("stdout.txt").read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            doc = {}
        error_text = self.error_text()
        if self.stop_requested is not None:  # the person asked to stop: the answer, if any came, is not used
            self.outcome = {"error": "The learning-rate search was stopped.", "stopped": True}
        elif "lr" in doc:
            self.outcome = doc
        else:
            self.outcome = {"error": doc.get("error") or error_text
                            or f"the learning-rate search ended with code {self.proc.returncode}"}
        shutil.rmtree(self.events_path.parent, ignore_errors=True)  # a search leaves nothing behind

    def result(self) -> dict:
        """``{"lr": ...}`` when the search finished, else ``{"error": reason}`` (stopped or failed)."""
        self.done.wait()
        return dict(self.outcome or {"error": "the learning-rate search ended without an answer"})


@dataclass
class OutsideTraining:
    """A training that holds the trainer but was not started by this app (the command line, or before a restart).

    Its progress can be followed when it writes an events file; Stop creates its STOP file.
    """

    project: Project
    job_id: str
    owner: Optional[Visitor] = None
    kind: str = "training"
    title: str = ""
    stop_requested: float | None = None

    @property
    def run_id(self) -> str:
        return self.job_id

    @property
    def events_path(self) -> Path:
        return runs.run_dir(self.project, self.job_id) / "events.jsonl"

    @property
    def running(self) -> bool:
        return (trainer_holder(self.project) or {}).get("run") == self.job_id

    def stop(self) -> None:
        if self.stop_requested is None:
            self.stop_requested = time.time()
        try:
            (runs.run_dir(self.project, self.job_id) / "STOP").touch()
        except OSError:
            pass

    def follow(self, interval: float = 0.5) -> Iterator[list[dict]]:
        reader = EventReader(self.events_path)
        while True:
            ended = not self.running
            yield reader.read()
            if ended:
                break
            time.sleep(interval)


def _key(project: Project) -> str:
    return str(Path(project.root).resolve())


def current_job(project: Project):
    """The training or search running on the project now, or None.

    A job this app started (:class:`JobProcess`) until its outcome is recorded; else a
    training started elsewhere that holds the trainer (:class:`OutsideTraining`).
    """
    with _jobs_lock:
        job = _jobs.get(_key(project))
    if job is not None:
        return job
    holder = trainer_holder(project)
    run_id = (holder or {}).get("run")
    if run_id and run_id != "lr-find":
        try:
            run = runs.get_run(project, run_id)
        except Exception:  # noqa: BLE001 - not recorded yet, or not a run id
            return None
        return OutsideTraining(project, run_id, title=run.name)
    return None


@dataclass
class StopAnswer:
    """What a request to stop did: ``stopping`` is True when the job was asked to stop."""

    stopping: bool
    message: str
    job: object = None


def request_stop(project: Project, visitor: Visitor, *, shared: bool, job_id: str | None = None) -> StopAnswer:
    """Stop the project's running job if ``visitor`` may (the decision is :func:`may_stop_training`'s).

    ``job_id`` names the job the visitor sees; a different (or no) running job is not stopped.
    """
    job = current_job(project)
    if job is None or (job_id and job.job_id != job_id):
        holder = trainer_holder(project)
        if holder:  # the search of a command line, which cannot be stopped from here
            return StopAnswer(False, busy_message(holder) + " It was not started from this page, so it cannot be "
                                                            "stopped here.")
        return StopAnswer(False, "Nothing is training.")
    if not may_stop_training(job.owner, visitor, shared=shared):
        holder = trainer_holder(project) or {"run": job.job_id, "started": getattr(job, "started", None)}
        return StopAnswer(False, busy_message(holder) + " Only the person who started it can stop it.", job)
    job.stop()
    return StopAnswer(True, stopping_message(job), job)


def stopping_message(job) -> str:
    """What the page says between Stop and the job's end."""
    if job.kind == "lr-find":
        return "Stopping the learning-rate search after the current batch…"
    return f"Stopping {job.title or 'the training'} after the current batch…"


def stop_all(project: Project, timeout: float = 10.0) -> None:
    """End the project's job at once (when the server shuts down: never leave a process behind)."""
    with _jobs_lock:
        job = _jobs.get(_key(project))
    if job is not None and job.proc.poll() is None:
        job.proc.kill()
        job.done.wait(timeout)


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
    if cfg.cpu:
        args.append("--cpu")
    return args


def _spawn(cmd: list[str], folder: Path) -> subprocess.Popen:
    env = dict(os.environ)
    pkg_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONWARNINGS", "ignore")
    with open(folder / "stdout.txt", "wb") as out, open(folder / "stderr.txt", "wb") as err:
        return subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=pkg_root)


def _wait_for_lock(project: Project, proc: subprocess.Popen) -> None:
    # Until the process holds the trainer lock (or ends), so that visitors of another app see it as busy.
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and trainer_holder(project) is None:
        time.sleep(0.05)


def _refuse_if_busy(project: Project) -> None:
    job = current_job(project)
    holder = trainer_holder(project)
    if job is not None or holder is not None:
        raise TrainerBusy(busy_message(holder or {"run": job.job_id, "started": getattr(job, "started", None)},
                                       name=getattr(job, "title", "") if job is not None and job.kind == "training"
                                       else ""))


def _register(job: JobProcess, *, wait_for_lock: bool = True) -> JobProcess:
    with _jobs_lock:
        _jobs[_key(job.project)] = job
    job.start_watching()
    if wait_for_lock:
        _wait_for_lock(job.project, job.proc)
    return job


def _release_weights(project: Project, weights: Optional[str]) -> None:
    """A weights file stored for work that did not start is removed (unless kept, or the running job uses it)."""
    job = current_job(project)
    if weights and not (job is not None and getattr(job, "weights", None) == weights):
        try:
            settle_weights_file(project.root, weights, accepted_run=None)
        except OSError:
            pass


def start_training(project: Project, cfg: TrainConfig, *, owner: Visitor | None = None,
                   borrow_gpu: bool | None = None) -> TrainingProcess:
    """Start a training for ``owner``; raises :class:`TrainerBusy` or :class:`PreflightError` at once.

    It runs in a training process, or with ``borrow_gpu`` on a GPU lent by ZeroGPU (a
    :class:`GpuTraining`; by default on ZeroGPU unless ``cfg.cpu`` asks for the CPU, and
    unless quick mode finds every feature cached, which needs no GPU). A weights file the
    configuration names inside ``PROJECT/models/weights`` (an upload) is kept only if the
    run finishes and is chosen (:func:`tl_app.models.settle_weights_file`).
    """
    try:
        return _start_training(project, cfg, owner, borrow_gpu)
    except BaseException:
        _release_weights(project, cfg.weights)
        raise


def _features_to_compute(project: Project, snap: Snapshot, cfg: TrainConfig) -> int:
    """How many pictures quick mode has no cached features for (with these settings)."""
    from . import quick

    tag = quick.feature_tag(cfg.arch, cfg.size, quick.weights_id(cfg.arch, cfg.pretrained, cfg.weights))
    have = quick.FeatureStore(project).get(sorted({it.sha256 for it in snap.items}), tag)
    return sum(1 for it in snap.items if it.sha256 not in have)


def gpu_seconds_for(project: Project, snap: Snapshot, cfg: TrainConfig) -> int:
    """The GPU time a training of ``snap`` asks ZeroGPU for; 0 when it has no work for a GPU (all cached)."""
    if cfg.quick:
        todo = _features_to_compute(project, snap, cfg)
        return zerogpu.gpu_seconds(cfg, len(snap.items), to_embed=todo) if todo else 0
    return zerogpu.gpu_seconds(cfg, len(snap.items))


def _start_training(project: Project, cfg: TrainConfig, owner: Visitor | None,
                    borrow_gpu: bool | None) -> TrainingProcess:
    cfg.validate()
    snap = take_snapshot(project)
    preflight(snap, cfg.valid_pct)
    if borrow_gpu is None:
        borrow_gpu = zerogpu.on_zerogpu() and not cfg.cpu
    if cfg.quick:
        from .quick import check_quick_possible

        check_quick_possible(cfg.pretrained, cfg.weights)
    with _start_lock:
        _refuse_if_busy(project)
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
        title = runs.run_name(run_id, "quick" if cfg.quick else "finetune", cfg.arch)
        seconds = gpu_seconds_for(project, snap, cfg) if borrow_gpu else 0
        if seconds:
            return _start_on_gpu(project, cfg, run_id, events, seconds, owner=owner, title=title)
        tp = TrainingProcess(project, run_id, _spawn(cmd, rdir), events, owner=owner, title=title,
                             weights=cfg.weights)
        return _register(tp)


def _start_on_gpu(project: Project, cfg: TrainConfig, run_id: str, events: Path, seconds: int, *,
                  owner: Visitor | None, title: str) -> GpuTraining:
    from .jobs import EventsFile

    say = EventsFile(events)
    say({"type": "phase", "phase": "gpu_wait", "seconds": seconds,
         "message": f"Asking ZeroGPU for a GPU for up to {seconds} s"})
    say.close()
    job = zerogpu.GpuJob(project_root=str(project.root), run_id=run_id, cfg=cfg, events=str(events), seconds=seconds)
    call = _GpuCall(zerogpu.gpu_task(), job)
    gt = GpuTraining(project, run_id, call, events, owner=owner, title=title, weights=cfg.weights, seconds=seconds)
    return _register(gt, wait_for_lock=False)  # ZeroGPU may queue it first: current_job() says it is busy


def start_lr_find(project: Project, cfg: TrainConfig, *, owner: Visitor | None = None) -> LrFindProcess:
    """Start ``lr-find`` in a process (it holds the trainer like a training); raises like :func:`start_training`.

    A weights file stored for it is removed when it ends, unless an accepted run started from it.
    """
    try:
        return _start_lr_find(project, cfg, owner)
    except BaseException:
        _release_weights(project, cfg.weights)
        raise


def _start_lr_find(project: Project, cfg: TrainConfig, owner: Visitor | None) -> LrFindProcess:
    cfg.validate()
    preflight(take_snapshot(project), cfg.valid_pct)
    with _start_lock:
        _refuse_if_busy(project)
        job_id = "lr-find-" + runs.new_run_id()
        folder = project.cache_dir / "jobs" / job_id
        folder.mkdir(parents=True, exist_ok=True)
        events = folder / "events.jsonl"
        events.touch()
        cmd = [sys.executable, "-m", "tl_app", "lr-find", str(project.root), "--json", "--events", str(events),
               "--stop-file", str(folder / "STOP"), *_cli_args(cfg)]
        job = LrFindProcess(project, job_id, _spawn(cmd, folder), events, owner=owner,
                            title="The learning-rate search", weights=cfg.weights)
        return _register(job)
