"""ZeroGPU: on a Hugging Face Space with ZeroGPU hardware, each training borrows a GPU.

``spaces.GPU`` (the ``spaces`` package) asks Hugging Face for a GPU for the time a call
needs, runs the function in a worker process forked from the web server, and hands the
GPU back when it returns. Elsewhere (``SPACES_ZERO_GPU`` unset) it returns the function
unchanged. The worker's arguments and result cross a process boundary, so both are plain
data: the job is a :class:`GpuJob` (paths, ids, the :class:`~tl_app.train.TrainConfig`)
and everything the training makes is written to the project (the run's folder and the
project's database), exactly as ``python -m tl_app train`` writes it. Progress goes to the
same events file and Stop is the same STOP file, so the web app follows either alike
(:mod:`tl_app.runner`). The training's own DataLoaders already run with ``num_workers=0``,
as a forked worker needs.

``spaces`` imports Gradio, so this module imports it only inside :func:`gpu_task`, which
the runner calls only on ZeroGPU (and tests call to check the wiring).
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

from .errors import GpuQuotaExhausted, GpuUnavailable, TLError
from .train import TrainConfig

#: The variable Hugging Face sets on ZeroGPU hardware (``spaces`` reads the same one, the same way).
ZERO_GPU_ENV = "SPACES_ZERO_GPU"
#: The shortest GPU time asked for: the worker's start (CUDA, the network, its weights) alone takes a while.
MIN_SECONDS = 60
#: The longest asked for at once. ZeroGPU refuses longer requests; its limit is not documented (300 s for
#: signed-in people was the answer in 2024-2025). ``TL_GPU_MAX_SECONDS`` overrides it.
MAX_SECONDS = 300
#: Asked-for time over the estimate, for a GPU slower than expected or a busy CPU loading pictures.
SAFETY = 1.5

# The estimate's figures (conservative guesses for an H200 slice, not measured here: no GPU on this
# machine). Pictures are decoded on the Space's CPU; the network runs on the GPU.
_STARTUP_SECONDS = 25.0       # worker start, CUDA, building the network and reading its weights
_DECODE_PER_SECOND = 100.0    # pictures read and resized on the CPU
_FORWARD_PER_SECOND = 1500.0  # resnet18 at 224 px, no gradient (features, validation, scoring)
_TRAIN_PER_SECOND = 400.0     # resnet18 at 224 px, a training step with augmentation
#: How much slower than resnet18 each network runs (the registry's notes: resnet34 2x, resnet50 3x).
ARCH_COST = {"resnet18": 1.0, "resnet34": 2.0, "resnet50": 3.0, "convnext_tiny": 3.5, "efficientnet_b0": 1.5}


def on_zerogpu(env: Optional[Mapping[str, str]] = None) -> bool:
    """Whether this server runs on ZeroGPU hardware (``SPACES_ZERO_GPU`` true, as ``spaces`` reads it)."""
    env = os.environ if env is None else env
    return str(env.get(ZERO_GPU_ENV, "")).strip().lower() in ("1", "t", "true")


def max_seconds(env: Optional[Mapping[str, str]] = None) -> int:
    """The longest GPU time one training asks for (``TL_GPU_MAX_SECONDS``, else :data:`MAX_SECONDS`)."""
    env = os.environ if env is None else env
    try:
        return max(MIN_SECONDS, int(env.get("TL_GPU_MAX_SECONDS", "") or MAX_SECONDS))
    except ValueError:
        return MAX_SECONDS


def gpu_seconds(cfg: TrainConfig, pictures: int, *, to_embed: Optional[int] = None,
                limit: Optional[int] = None) -> int:
    """The GPU time to ask ZeroGPU for, in seconds: pictures x epochs x size x network, with a margin.

    ``to_embed`` is, for quick mode, how many pictures still need their features (the rest
    are cached). The answer lies between :data:`MIN_SECONDS` and ``limit`` (default
    :func:`max_seconds`); a training that would need more is stopped when its time is nearly
    up and keeps its best epoch (:func:`run_training`). Only the time used counts against
    the quota, but a visitor whose quota left is below the request is refused, so the
    request stays close to the estimate.
    """
    limit = limit or max_seconds()
    n = max(0, int(pictures))
    scale = (int(cfg.size) / 224.0) ** 2 * ARCH_COST.get(cfg.arch, 3.0)
    if cfg.quick:
        todo = n if to_embed is None else max(0, int(to_embed))
        work = todo / _DECODE_PER_SECOND + todo * scale / _FORWARD_PER_SECOND
    else:
        train = n * (1 - cfg.valid_pct)
        valid = n - train
        passes = int(cfg.epochs) + 1  # fastai's warm-up epoch, then the epochs asked for
        per_epoch = train * scale / _TRAIN_PER_SECOND + valid * scale / _FORWARD_PER_SECOND
        # then one pass for Review's early features and one clean pass over every picture
        work = n / _DECODE_PER_SECOND + passes * per_epoch + 2 * n * scale / _FORWARD_PER_SECOND
    return int(min(limit, max(MIN_SECONDS, math.ceil(SAFETY * (_STARTUP_SECONDS + work)))))


@dataclass
class GpuJob:
    """One training for the GPU worker, as plain data that pickles (no project object, no callbacks)."""

    project_root: str
    run_id: str
    cfg: TrainConfig
    events: str          # the events file the web app follows
    seconds: int         # the GPU time asked for (see gpu_seconds)


#: Time kept back from the GPU time asked for: stopping, the last clean pass and saving the model.
def _margin(seconds: int) -> float:
    return max(15.0, 0.2 * seconds)


def run_training(job: GpuJob) -> dict:
    """The work done in the GPU worker: what ``python -m tl_app train --events`` does, as a function.

    The run is recorded in the project as it goes; the result is plain data
    (:meth:`TrainReport.to_dict`, or ``{"status": "failed", "reason": ..., "error": class name}``
    when it failed or could not start), never a live object. When the GPU time asked for is nearly up the training
    stops by itself after the current batch, so its best epoch so far is kept rather than
    lost when ZeroGPU takes the GPU back.
    """
    from . import runs
    from .jobs import EventsFile, StopToken
    from .project import Project
    from .train import train

    events = EventsFile(job.events)
    timer = None
    try:
        project = Project.open(job.project_root)
        stop = StopToken(runs.run_dir(project, job.run_id) / "STOP")

        def time_up() -> None:
            if not stop.is_set():
                events({"type": "phase", "phase": "gpu_time",
                        "message": f"The GPU time asked for ({job.seconds} s) is nearly up: stopping after this "
                                   "batch; the best epoch so far is kept."})
                stop.set(f"stopped when the GPU time asked for ({job.seconds} s) was nearly up")

        timer = threading.Timer(max(1.0, job.seconds - _margin(job.seconds)), time_up)
        timer.daemon = True
        timer.start()
        return train(project, job.cfg, run_id=job.run_id, stop=stop, events=events).to_dict()
    except TLError as e:  # recorded in the run when it had started; the message crosses as text
        return {"run": job.run_id, "status": "failed", "reason": str(e), "error": type(e).__name__}
    except Exception as e:  # noqa: BLE001 - train() recorded it (error.txt); a live exception need not cross
        return {"run": job.run_id, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
    finally:
        if timer is not None:
            timer.cancel()
        events.close()


def _job_seconds(job: GpuJob) -> int:
    return int(job.seconds)


_task_lock = threading.Lock()
_task: Optional[Callable[[GpuJob], dict]] = None


def gpu_task() -> Callable[[GpuJob], dict]:
    """:func:`run_training` wrapped by ``spaces.GPU``, its duration read from the job (made once).

    Off ZeroGPU ``spaces`` gives :func:`run_training` back unchanged. On ZeroGPU the
    wrapping must happen before the server starts (``spaces`` reports its GPU functions at
    launch): the web app calls :func:`prepare`.
    """
    global _task
    with _task_lock:
        if _task is None:
            import spaces  # imports gradio: only here

            _task = spaces.GPU(duration=_job_seconds)(run_training)
        return _task


def prepare() -> bool:
    """On ZeroGPU, wrap the GPU function now (before the server starts); True when on ZeroGPU."""
    if on_zerogpu():
        gpu_task()
        return True
    return False


# --- what ZeroGPU says when it lends no GPU ------------------------------------------------------
#: The titles of the errors ``spaces`` raises (a ``gradio.Error``) when it lends no GPU; nothing ran.
QUOTA_TITLES = frozenset({"ZeroGPU quota exceeded", "ZeroGPU pending credits exceeded"})
NO_GPU_TITLES = frozenset({"ZeroGPU illegal duration", "ZeroGPU queue timeout", "ZeroGPU client error"})
CPU_HINT = "You can train on the CPU instead (slower, and it uses no GPU time), or try again later."


def refusal(exc: BaseException, *, seconds: Optional[int] = None) -> Optional[GpuUnavailable]:
    """The plain-words error for a GPU that ZeroGPU did not lend, or None for any other error.

    ``spaces`` raises ``gradio.Error`` with a title (read here without importing Gradio)
    before the work starts: the visitor's quota is used up, the time asked for is longer
    than ZeroGPU lends, or no GPU was free.
    """
    title = str(getattr(exc, "title", "") or "")
    text = str(getattr(exc, "message", "") or exc)
    if title in QUOTA_TITLES or "quota" in title.lower():
        wait = re.search(r"Try again in ([0-9:]+)", text)
        when = f"It comes back after {_clock(wait.group(1))}." if wait else "It comes back over the next hours."
        left = re.search(r"\((\d+)s requested vs\. (\d+)s left\)", text)
        if left:
            what = (f"Your GPU time on Hugging Face is used up for now (this training asks for {left.group(1)} s; "
                    f"{left.group(2)} s are left).")
        else:  # no visitor token (not through Hugging Face's proxy): the quota is the address's or the Space's
            what = "The GPU time ZeroGPU lends here is used up for now."
        return GpuQuotaExhausted(f"{what} {when} {CPU_HINT}")
    if title == "ZeroGPU illegal duration":
        asked = f" ({seconds} s)" if seconds else ""
        return GpuUnavailable(f"This training needs more GPU time{asked} than ZeroGPU lends at once. Choose fewer "
                              f"epochs, a smaller image size or a smaller network. {CPU_HINT}")
    if title in NO_GPU_TITLES:
        return GpuUnavailable(f"ZeroGPU had no GPU free for this training. {CPU_HINT}")
    return None


def _clock(hms: str) -> str:
    """'1:05:00' -> '1 h 05 min'; '0:00:56' -> '56 s'."""
    parts = [int(p) for p in hms.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    h, m, s = parts[-3:]
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min" + (f" {s:02d} s" if s else "")
    return f"{s} s"


def worker_error_text(exc: BaseException) -> str:
    """Why a GPU training ended without saying how (the worker was stopped or failed), in plain words."""
    title = str(getattr(exc, "title", "") or "")
    text = str(getattr(exc, "message", "") or exc)
    if title == "ZeroGPU worker error" and "aborted" in text.lower():
        return "ZeroGPU took the GPU back before the training ended (its time was up)"
    if title.startswith("ZeroGPU"):
        return f"the GPU worker failed ({text})"
    return f"{type(exc).__name__}: {exc}"
