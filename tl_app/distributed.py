"""Fine-tuning on several processes: one per GPU, or several CPU processes, on Hugging Face Accelerate.

Each process is the same ``python -m tl_app train`` command; the environment says which one it is
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), as ``accelerate launch``
or ``torchrun`` set it, or :func:`launch` (``train --processes N``) on this machine. The first process
(rank 0) takes the snapshot, holds the trainer and records the run; the others train on their share of
every batch and write nothing. fastai's ``DistributedTrainer`` (what ``Learner.distrib_ctx`` adds) wraps
the model in DistributedDataParallel through Accelerate; its loader broadcasts each epoch's order as a
CUDA tensor, so :func:`trainer` gives it one that broadcasts on the process group's own device (gloo
on CPUs). Every process stops at the same batch: Stop is agreed on after each batch.

Nothing here imports torch, fastai or accelerate at import time.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Optional

#: How long a process waits for the others (rank 0 alone embeds every picture for Review).
TIMEOUT = timedelta(hours=6)


def world_size() -> int:
    """Processes training together (1: not distributed)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def is_distributed() -> bool:
    return world_size() > 1


def init(cpu: bool):
    """Join the process group (gloo on CPUs, NCCL on GPUs, chosen by Accelerate); this process's device."""
    from accelerate import PartialState

    state = PartialState(cpu=cpu, timeout=TIMEOUT)
    return state.device


def broadcast(obj):
    """Rank 0's ``obj`` in every process (pickled; only small objects)."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _device():
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def agree(flag: bool) -> bool:
    """True in every process when it is true in any (a Stop seen by one stops all at the same batch)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def combine(arr):
    """Merge per-process arrays that hold NaN where a process saw nothing (each item's probabilities):
    the mean of the values the processes have, NaN where none has one. Returns the merged array."""
    import numpy as np
    import torch
    import torch.distributed as dist

    seen = ~np.isnan(arr)
    vals = torch.from_numpy(np.where(seen, arr, 0).astype(np.float32)).to(_device())
    cnt = torch.from_numpy(seen.astype(np.float32)).to(_device())
    dist.all_reduce(vals)
    dist.all_reduce(cnt)
    v, c = vals.cpu().numpy(), cnt.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c > 0, v / np.maximum(c, 1), np.nan).astype(arr.dtype)


def trainer(cpu: bool):
    """fastai's DistributedTrainer callback, with a loader that broadcasts on the group's device."""
    import torch
    import torch.distributed as dist
    from fastai.distributed import DistributedDL, DistributedTrainer

    class _DL(DistributedDL):
        def _broadcast(self, t, rank):
            t = torch.tensor(t, dtype=torch.long, device=_device())
            dist.broadcast(t, rank)
            return t.cpu().tolist()

        def get_idxs(self):
            idxs = super().get_idxs()
            self.order = list(idxs)  # this process's share, in batch order (see train._Progress)
            return idxs

    class _Trainer(DistributedTrainer):
        def _wrap_dl(self, dl):
            return dl if isinstance(dl, DistributedDL) else _DL(dl, device=self.learn.model.device)

    # SyncBatchNorm needs GPUs; on CPUs each process keeps its own batch statistics.
    return _Trainer(sync_bn=not cpu, cpu=cpu)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], processes: int, *, port: Optional[int] = None) -> int:
    """Run ``python -m tl_app <argv>`` as ``processes`` processes on this machine, over loopback.

    The first process's output is this command's output; the others' is kept in a temporary file and
    shown only if one of them fails. Ctrl-C goes to the first process; all stop at the same batch.
    Returns the first process's exit code (or the first failure's).
    """
    import signal

    port = port or _free_port()
    logs = Path(tempfile.mkdtemp(prefix="tl_app_ranks_"))
    procs = []
    base = dict(os.environ, WORLD_SIZE=str(processes), LOCAL_WORLD_SIZE=str(processes),
                MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    for r in range(processes):
        env = dict(base, RANK=str(r), LOCAL_RANK=str(r))
        out = None if r == 0 else open(logs / f"rank{r}.log", "w")
        # Own sessions: a Ctrl-C in the terminal reaches them once, forwarded below, not twice.
        procs.append(subprocess.Popen([sys.executable, "-m", "tl_app", *argv], env=env, stdout=out, start_new_session=True,
                                      stderr=subprocess.STDOUT if out else None))
        if out:
            out.close()  # the process has its own copy
    def forward(*_):  # to the first process: it stops, and every process stops at the same batch with it
        if procs[0].poll() is None:
            procs[0].send_signal(signal.SIGINT)

    old = signal.signal(signal.SIGINT, forward)
    try:
        codes = [p.wait() for p in procs]
    finally:
        signal.signal(signal.SIGINT, old)
    try:
        bad = [r for r, c in enumerate(codes) if c != 0 and r > 0]
        for r in bad:
            sys.stderr.write(f"process {r} failed:\n" + (logs / f"rank{r}.log").read_text(errors="replace")[-3000:])
        return codes[0] if codes[0] != 0 or not bad else codes[bad[0]]
    finally:
        shutil.rmtree(logs, ignore_errors=True)
