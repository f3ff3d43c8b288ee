"""Training: a snapshot of the dataset, fastai fine-tuning, and the run's record.

Training works on a snapshot taken when it starts: the item list is read once,
so deleting or relabelling while training runs cannot disturb it. Pictures are
streamed from disk in batches (decoded ahead on a thread pool), so memory does
not grow with the dataset. Progress goes to an ``events`` callback
(one dict per batch, epoch and phase) and a :class:`~tl_app.jobs.StopToken`
ends the work at the next batch; the run is then recorded as stopped.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from . import config, runs
from .errors import PreflightError, Stopped, TLError, TrainerBusy
from .features import (Pictures, embed_logits, embed_pixels, embed_with_stages, load_image_for_model,  # noqa: F401
                       predict_pixels, read_ahead, softmax)
from .jobs import FileLock, StopToken, TimeLeft
from .models import ModelSpec, create_model, get_arch, save_model
from .project import Project

EventFn = Callable[[dict], None]


def _no_events(_: dict) -> None:
    pass


@dataclass
class TrainConfig:
    """What to train. ``quick`` trains a head on cached features; otherwise fastai fine-tunes."""

    arch: str = config.DEFAULT_ARCH
    epochs: int = config.DEFAULT_EPOCHS
    size: int = config.DEFAULT_SIZE
    pretrained: bool = True
    weights: Optional[str] = None
    quick: bool = False
    batch_size: int = config.DEFAULT_BATCH_SIZE
    lr: Optional[float] = None
    seed: int = 42
    valid_pct: float = config.VALID_PCT
    augment: bool = True             # fastai's aug_transforms on training batches (flips, rotation, zoom, light)
    keep_best: bool = True           # fine-tuning keeps the weights of the epoch with the lowest validation loss
    patience: Optional[int] = None   # stop after this many unfrozen epochs without improvement
    cpu: bool = False                # the CPU even where a GPU is available (ZeroGPU's quota used up)

    def validate(self) -> "TrainConfig":
        get_arch(self.arch)
        if not 1 <= int(self.epochs) <= 100:
            raise TLError("Epochs must be between 1 and 100.")
        if not 32 <= int(self.size) <= 1024:
            raise TLError("Image size must be between 32 and 1024 pixels.")
        if not 1 <= int(self.batch_size) <= 1024:
            raise TLError("Batch size must be between 1 and 1024.")
        if self.lr is not None and not (math.isfinite(float(self.lr)) and 0 < float(self.lr) < 10):
            raise TLError(f"The learning rate must be a positive number below 10, such as 0.002 (not {self.lr}).")
        if self.patience is not None and not 1 <= int(self.patience) <= 100:
            raise TLError("Early stopping waits between 1 and 100 epochs for an improvement.")
        return self


@dataclass
class TrainReport:
    """How a run ended."""

    run: str
    status: str
    metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict:
        return {"run": self.run, "status": self.status, "metrics": self.metrics,
                "seconds": round(self.seconds, 3), "reason": self.reason}


# --- the dataset snapshot -------------------------------------------------------
@dataclass
class SnapItem:
    id: str
    label: str
    path: Path
    sha256: str


@dataclass
class Snapshot:
    """The items a run trains on, fixed when the run starts."""

    items: list[SnapItem]
    vocab: list[str]
    class_log: int = 0   # the class-change log's position when taken (see tl_app.class_map)

    @property
    def targets(self) -> list[int]:
        idx = {v: i for i, v in enumerate(self.vocab)}
        return [idx[it.label] for it in self.items]


def take_snapshot(project: Project) -> Snapshot:
    """The project's active items now; the vocabulary is the classes that have images."""
    # Read before the items: a class change in between is then applied to names the run already
    # has, which changes nothing, rather than missed.
    position = project.class_log_position()
    items = [SnapItem(it.id, it.label, project.path_of(it), it.sha256) for it in project.items()]
    vocab = sorted({it.label for it in items})
    return Snapshot(items, vocab, position)


def preflight(snap: Snapshot, valid_pct: float = config.VALID_PCT) -> None:
    """Refuse, with a plain message, a dataset that cannot be trained on."""
    counts: dict[str, int] = {}
    for it in snap.items:
        counts[it.label] = counts.get(it.label, 0) + 1
    if len(counts) < 2:
        have = f"only '{next(iter(counts))}'" if counts else "no images yet"
        raise PreflightError(f"Training needs at least two classes with images; the project has {have}. "
                             "Add images of another class first.")
    few = [f"'{k}' ({v})" for k, v in counts.items() if v < 2]
    if few:
        raise PreflightError(f"Every class needs at least two images (one to learn from, one to check with); "
                             f"too few in {', '.join(few)}.")
    if len(snap.items) < 4:
        raise PreflightError("Too few images to set some aside for checking the model; add a few more.")


def split_valid(snap: Snapshot, valid_pct: float = config.VALID_PCT) -> tuple[list[int], list[int]]:
    """A stratified, stable validation split: per class, the items whose hash sorts first.

    The same image stays on the same side from one run to the next, so runs
    are compared on the same validation images as far as the data allows.
    """
    by_label: dict[str, list[int]] = {}
    for i, it in enumerate(snap.items):
        by_label.setdefault(it.label, []).append(i)
    train, valid = [], []
    for idxs in by_label.values():
        order = sorted(idxs, key=lambda i: hashlib.sha256(("v" + snap.items[i].sha256).encode()).hexdigest())
        n_valid = min(len(order) - 1, max(1, round(len(order) * valid_pct)))
        valid += order[:n_valid]
        train += order[n_valid:]
    return sorted(train), sorted(valid)


def snapshot_pictures(project: Project, snap: Snapshot, size: int) -> Pictures:
    """The snapshot's pictures as the network sees them, streamed from disk batch by batch.

    Nothing is decoded here: each pass (training, validation, scoring) decodes its batches
    on a thread pool just ahead of the network, so memory does not grow with the number of
    pictures. A picture deleted or relabelled since the snapshot is read where it is now.
    """
    items = snap.items
    return Pictures([it.path for it in items], size,
                    fallback=lambda i: project.path_of(project.item(items[i].id)))


# --- metrics ----------------------------------------------------------------------
def classification_metrics(probs, targets, vocab: list[str]) -> dict:
    """Accuracy, loss, per-class precision/recall and the confusion matrix (rows: actual)."""
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    n = len(vocab)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    cm = np.zeros((n, n), dtype=np.int64)
    for t, p in zip(targets, pred):
        cm[t, p] += 1
    per_class = {}
    for i, name in enumerate(vocab):
        tp = int(cm[i, i])
        col, row = int(cm[:, i].sum()), int(cm[i, :].sum())
        per_class[name] = {"precision": round(tp / col, 4) if col else None,
                           "recall": round(tp / row, 4) if row else None, "support": row}
    eps = 1e-12
    loss = float(-np.log(probs[np.arange(len(targets)), targets] + eps).mean()) if len(targets) else None
    acc = float((pred == targets).mean()) if len(targets) else None
    return {"accuracy": None if acc is None else round(acc, 4),
            "valid_loss": None if loss is None else round(loss, 4),
            "per_class": per_class, "confusion": {"labels": vocab, "matrix": cm.tolist()}}


def default_device(cpu: bool = False):
    """CUDA when present, then Apple's MPS, else the CPU (always the CPU when ``cpu`` is asked for)."""
    import torch

    if cpu:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        return f"GPU ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU ({torch.get_num_threads()} threads)"


# --- fastai fine-tuning -------------------------------------------------------------
def _build_learner(model, pixels, targets, train_idx, valid_idx, spec: ModelSpec, bs: int, device, cbs=(),
                   augment: bool = True):
    """A fastai Learner over the pictures (streamed :class:`Pictures` or an array): augmentation on
    the training batches only; each batch is decoded on a thread pool while the one before trains."""
    import torch
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback
    from fastai.data.core import DataLoaders, TfmdDL
    from fastai.data.transforms import IntToFloatTensor, Normalize
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.torch_core import TensorCategory, TensorImage, params
    from fastai.vision.augment import aug_transforms

    class _Images(torch.utils.data.Dataset):
        def __init__(self, idxs, split_idx):
            self.idxs = list(idxs)
            self.y = torch.tensor([targets[i] for i in idxs], dtype=torch.long)
            self.split_idx = split_idx  # fastai applies random augmentation only where this is 0

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            x = torch.from_numpy(pixels[self.idxs[i]]).permute(2, 0, 1)  # HWC uint8 -> CHW, as fastai's images
            return TensorImage(x), TensorCategory(self.y[i])

    class _ChannelsLast(Callback):
        """Batches in channels-last memory order: about 3x faster convolutions on a CPU."""
        order = 1

        def before_batch(self):
            self.learn.xb = tuple(x.contiguous(memory_format=torch.channels_last) for x in self.xb)

    class _DL(TfmdDL):
        """Remembers each epoch's order, so that batch k is known to hold items order[k*bs:(k+1)*bs]."""

        def get_idxs(self):
            idxs = super().get_idxs()
            self.order = list(idxs)
            return idxs

        def create_batches(self, samps):
            # fastai decodes a batch's items one after the other on this thread; here they are
            # decoded on a thread pool, the next batches while this one trains (same items, order
            # and collation, so the same batches).
            for items in read_ahead(self.do_item, self.chunkify(samps)):
                yield self.do_batch([o for o in items if o is not None])

    norm = Normalize.from_stats(spec.mean, spec.std, cuda=device.type == "cuda")
    bs = max(2, min(bs, len(train_idx)))
    train_dl = _DL(_Images(train_idx, 0), bs=bs, shuffle=True, drop_last=len(train_idx) > bs,
                   num_workers=0, device=device, after_batch=[IntToFloatTensor(), *(aug_transforms() if augment else []), norm])
    valid_dl = _DL(_Images(valid_idx, 1), bs=bs * 2, shuffle=False, num_workers=0, device=device,
                   after_batch=[IntToFloatTensor(), norm])
    dls = DataLoaders(train_dl, valid_dl, device=device)

    def splitter(m):
        return [params(m[0]), params(m[1])]

    model.to(device).to(memory_format=torch.channels_last)
    learn = Learner(dls, model, loss_func=CrossEntropyLossFlat(), metrics=accuracy, splitter=splitter,
                    cbs=[_ChannelsLast(), *cbs])
    learn.remove_cbs([cb for cb in learn.cbs if isinstance(cb, ProgressCallback)])
    return learn


def _fastai_finetune(model, pixels, targets, train_idx, valid_idx, spec: ModelSpec, cfg: TrainConfig, device,
                     stop: StopToken, events: EventFn, bs: int, probe_epochs=frozenset()):
    """fastai ``fine_tune`` with augmentation; keeps the best epoch's weights; optional early stopping.

    Returns ``(history, info)``: one entry per epoch, and which epoch was kept. After each epoch
    in ``probe_epochs`` (1-based) every picture is embedded in one clean pass
    (``info["probes"][epoch]``): features from before the network memorised its labels.
    """
    import torch
    from fastai.callback.core import Callback, CancelFitException
    import fastai.callback.schedule  # noqa: F401 - adds Learner.fine_tune

    import numpy as np

    from . import distributed

    dist = distributed.is_distributed()
    lead = distributed.rank() == 0  # the process that records the run

    def halt(flag: bool) -> bool:  # every process stops at the same batch
        return distributed.agree(flag) if dist else flag

    def net():  # the model without its DistributedDataParallel wrapper
        m = learn.model
        return getattr(m, "module", m)

    history: list[dict] = []
    state = {"epoch": 0, "t0": time.time(), "done_batches": 0, "best": None, "best_epoch": None,
             "best_state": None, "bad_epochs": 0, "early_stopped": False, "batch": 0}
    n_epochs = cfg.epochs + 1  # fine_tune's frozen epoch, then cfg.epochs unfrozen
    n_classes = len(spec.vocab)
    # Probabilities every item got in every epoch: training items from their (augmented) training
    # batch, validation items from the validation pass. Review uses them; no extra pass is needed.
    item_probs = np.full((n_epochs, len(targets), n_classes), np.nan, dtype=np.float32)
    probes: dict[int, object] = {}
    left = TimeLeft()

    class _Progress(Callback):
        order = 70  # after the Recorder, so that epoch values are ready

        def before_fit(self):
            if halt(stop.is_set()) or state["early_stopped"]:
                raise CancelFitException()

        def before_train(self):
            state["batch"] = 0

        def before_validate(self):
            state["batch"] = 0

        def after_pred(self):
            dl = self.dl
            k, b = state["batch"], dl.bs
            pos = dl.order[k * b: k * b + len(self.pred)]
            which = train_idx if self.training else valid_idx
            rows = [which[p] for p in pos]
            with torch.no_grad():
                pr = torch.softmax(self.pred.detach().float(), 1).cpu().numpy()
            if state["epoch"] < n_epochs:
                item_probs[state["epoch"], rows] = pr
            state["batch"] += 1

        def after_batch(self):
            state["done_batches"] += 1
            done = state["done_batches"]
            total = n_epochs * (len(self.dls.train) + len(self.dls.valid))
            eta = left.update(done, total)
            ev = {"type": "batch", "epoch": state["epoch"], "epochs": n_epochs, "done": done, "total": total,
                  "train": bool(self.training), "eta": None if eta is None else round(max(eta, 0), 1)}
            if self.training:
                ev["loss"] = round(float(self.learn.smooth_loss), 4)
            events(ev)
            if halt(stop.is_set()):
                raise CancelFitException()

        def after_epoch(self):
            vals = self.recorder.values[-1] if self.recorder.values else []
            names = [n for n in self.recorder.metric_names[1:-1]]  # drop 'epoch' and 'time'
            rec = dict(zip(names, [float(v) for v in vals]))
            entry = {"epoch": state["epoch"] + 1, "phase": "frozen" if state["epoch"] == 0 else "unfrozen",
                     "train_loss": rec.get("train_loss"), "valid_loss": rec.get("valid_loss"),
                     "accuracy": rec.get("accuracy"), "seconds": round(time.time() - state["t0"], 2)}
            history.append(entry)
            events({"type": "epoch", **entry})
            state["epoch"] += 1
            probe_stopped = False
            if entry["epoch"] in probe_epochs and lead:  # only the process that records the run needs it
                try:
                    probes[entry["epoch"]] = embed_pixels(net(), pixels, spec, batch_size=2 * bs,
                                                          device=device, stop=stop, events=events,
                                                          phase="features")[1]
                except Stopped:
                    probe_stopped = True
            if (halt(probe_stopped or stop.is_set()) if dist else probe_stopped):
                raise CancelFitException()
            vl = entry["valid_loss"]
            if vl is not None and math.isfinite(vl) and (state["best"] is None or vl < state["best"]):
                state.update(best=vl, best_epoch=entry["epoch"], bad_epochs=0)
                if cfg.keep_best:  # a copy in memory: no checkpoint file, no pickle
                    state["best_state"] = {k: v.detach().clone() for k, v in net().state_dict().items()}
            elif entry["phase"] == "unfrozen":
                state["bad_epochs"] += 1
            # (bad_epochs is 0 after an improvement; every process asks, whatever its own losses said)
            if halt(bool(cfg.patience) and state["bad_epochs"] >= cfg.patience):
                state["early_stopped"] = True
                events({"type": "phase", "phase": "early_stop",
                        "message": f"No improvement for {cfg.patience} epochs: stopping early."})
                raise CancelFitException()

    cbs = [_Progress()]
    if dist:  # fastai's DistributedTrainer on Accelerate: DDP, each process a share of every batch
        cbs.append(distributed.trainer(cpu=device.type == "cpu"))
    learn = _build_learner(model, pixels, targets, train_idx, valid_idx, spec, bs, device, cbs=cbs,
                           augment=cfg.augment)
    with learn.no_logging():
        learn.fine_tune(cfg.epochs, base_lr=cfg.lr or 2e-3)
    if dist:  # each process saw its share of the pictures: put their probabilities together
        item_probs = distributed.combine(item_probs)
    info = {"best_epoch": state["best_epoch"], "early_stopped": state["early_stopped"], "batch_size": bs,
            "processes": distributed.world_size()}
    kept = len(history)  # the epoch whose weights the model ends with
    if cfg.keep_best and state["best_state"] is not None and history and state["best_epoch"] != kept:
        model.load_state_dict(state["best_state"])  # also after a Stop in the middle of an epoch
        info["restored_best"] = True
        kept = state["best_epoch"]
    # Scores: validation items from the kept epoch's validation pass (exactly the final model);
    # training items from the latest epoch in which they were in a training batch.
    scores = np.full((len(targets), n_classes), np.nan, dtype=np.float32)
    if kept:
        scores[valid_idx] = item_probs[kept - 1, valid_idx]
    for e in range(kept or len(history)):
        seen = ~np.isnan(item_probs[e, train_idx, 0])
        scores[np.asarray(train_idx)[seen]] = item_probs[e, np.asarray(train_idx)[seen]]
    info["item_probs"] = item_probs[: len(history)]
    info["probes"] = probes
    info["scores"] = scores
    return history, info


def find_lr(project: Project, cfg: TrainConfig, *, stop: Optional[StopToken] = None,
            events: EventFn = _no_events) -> dict:
    """fastai's learning-rate finder on the project's pictures (the frozen phase of fine-tuning).

    Holds the trainer like a training does, reports every batch to ``events`` and ends at
    the next batch when ``stop`` is set (raising :class:`Stopped`). Returns
    ``{"lr": suggested, "lrs": [...], "losses": [...], "device": ...}``; nothing is recorded as a run.
    """
    import shutil
    import tempfile

    import numpy as np
    import torch
    from fastai.callback.core import Callback, CancelFitException
    import fastai.callback.schedule  # noqa: F401 - adds Learner.lr_find

    cfg.validate()
    snap = take_snapshot(project)
    preflight(snap, cfg.valid_pct)
    stop = stop or StopToken()
    lock = trainer_lock(project)
    if not lock.acquire({"run": "lr-find", "pid": os.getpid(), "started": time.time()}):
        raise TrainerBusy(busy_message(lock.holder() or {}))
    tmp = Path(tempfile.mkdtemp(prefix="tl_lr_find_"))
    try:
        _seed_everything(cfg.seed)
        device = default_device(cfg.cpu)
        events({"type": "phase", "phase": "device", "device": describe_device(device)})
        spec = ModelSpec(arch=cfg.arch, vocab=snap.vocab, size=cfg.size, head="fastai")
        model = create_model(spec, pretrained=cfg.pretrained, weights=Path(cfg.weights) if cfg.weights else None)
        pixels = snapshot_pictures(project, snap, cfg.size)
        train_idx, valid_idx = split_valid(snap, cfg.valid_pct)
        state = {"done": 0, "t0": time.time(), "n": 1}
        left = TimeLeft()

        class _Watch(Callback):
            def after_batch(self):
                state["done"] += 1
                done, n = state["done"], state["n"]
                eta = left.update(min(done, n), n)
                events({"type": "batch", "epoch": 0, "epochs": 1, "done": min(done, n), "total": n, "train": True,
                        "eta": None if eta is None else round(eta, 1)})
                if stop.is_set():
                    raise CancelFitException()

        learn = _build_learner(model, pixels, snap.targets, train_idx, valid_idx, spec, cfg.batch_size, device,
                               cbs=[_Watch()], augment=cfg.augment)
        learn.path = tmp  # lr_find saves the model there and puts it back afterwards
        learn.freeze()
        n_it = int(min(100, max(20, 3 * len(learn.dls.train))))
        state["n"] = n_it
        events({"type": "phase", "phase": "lr_find", "message": f"Trying learning rates ({n_it} steps)"})
        try:
            with learn.no_logging():
                sug = learn.lr_find(num_it=n_it, show_plot=False)
        except Exception:
            if stop.is_set():  # stopped after a few steps: too few to suggest anything
                raise Stopped("The learning-rate search was stopped.") from None
            raise
        if stop.is_set():
            raise Stopped("The learning-rate search was stopped.")
        lrs = [float(x) for x in learn.recorder.lrs]
        losses = [float(x) for x in learn.recorder.losses]
        lr = float(getattr(sug, "valley", sug[0]))
        if not np.isfinite(lr) or lr <= 0:
            lr = 2e-3
        return {"lr": lr, "lrs": lrs, "losses": losses, "device": describe_device(device)}
    finally:
        lock.release()
        shutil.rmtree(tmp, ignore_errors=True)


def confusion_figure(report: dict):
    """A matplotlib figure of a run's confusion matrix (rows: actual class), counts in the cells.

    Built without pyplot (no global figure state), so web requests may draw at the same time.
    """
    import numpy as np
    from matplotlib.figure import Figure

    conf = report.get("confusion") or {"labels": [], "matrix": []}
    labels, m = conf["labels"], np.asarray(conf["matrix"] or [[0]])
    n = max(1, len(labels))
    fig = Figure(figsize=(1.6 + 0.7 * n, 1.2 + 0.6 * n), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    hi = m.max() if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center",
                    color="white" if hi and m[i, j] > hi / 2 else "black")
    ax.set_title("Confusion matrix")
    fig.tight_layout()
    return fig


# --- the entry point -------------------------------------------------------------------
def trainer_lock(project: Project) -> FileLock:
    return FileLock(project.root / "train.lock")


def busy_message(holder: dict, name: str = "") -> str:
    """What another visitor is told while the trainer is held: by what, and since when."""
    since = holder.get("started")
    when = time.strftime("%H:%M:%S", time.localtime(since)) if since else "a moment ago"
    if str(holder.get("run", "")).startswith("lr-find"):
        return f"The trainer is busy: a search for a good learning rate has been running since {when}."
    return f"The trainer is busy: another training{f' ({name})' if name else ''} has been running since {when}."


def train(project: Project, cfg: TrainConfig, *, run_id: Optional[str] = None, stop: Optional[StopToken] = None,
          events: EventFn = _no_events) -> TrainReport:
    """Train a model on the project's current images and record the run.

    Raises :class:`PreflightError` before any work when the data cannot be
    trained on, and :class:`TrainerBusy` when another training holds the
    project. Failures during training are recorded in the run and returned
    with status ``failed``; a stop gives status ``stopped``.
    """
    cfg.validate()
    if cfg.quick:
        from .quick import check_quick_possible

        check_quick_possible(cfg.pretrained, cfg.weights)
    from . import distributed

    if distributed.is_distributed():
        if cfg.quick:
            raise TLError("Several processes train only a full fine-tuning; quick mode runs in one.")
        distributed.init(cpu=default_device(cfg.cpu).type == "cpu")
        if distributed.rank() > 0:
            return _follow(project, cfg, stop=stop or StopToken())
    run_id = run_id or runs.new_run_id()
    stop = stop or StopToken(runs.run_dir(project, run_id) / "STOP")
    try:
        snap = take_snapshot(project)
        preflight(snap, cfg.valid_pct)
        lock = trainer_lock(project)
        if not lock.acquire({"run": run_id, "pid": os.getpid(), "started": time.time()}):
            raise TrainerBusy(busy_message(lock.holder() or {}))
    except Exception:
        if distributed.is_distributed():
            distributed.broadcast(None)  # the other processes end too
        raise
    if distributed.is_distributed():
        distributed.broadcast((run_id, snap))
    t0 = time.time()
    mode = "quick" if cfg.quick else "finetune"
    try:
        runs.start_run(project, run_id, arch=cfg.arch, mode=mode, cfg=asdict(cfg))
        rdir = runs.run_dir(project, run_id)
        _write_snapshot(rdir, snap, *split_valid(snap, cfg.valid_pct))  # what the run sees, however it ends
        events({"type": "start", "run": run_id, "mode": mode, "items": len(snap.items), "vocab": snap.vocab})
        try:
            result = _train_snapshot(project, snap, cfg, rdir, stop=stop, events=events)
        except Stopped as e:
            rep = runs.end_run(project, run_id, status="stopped", seconds=time.time() - t0, reason=str(e))
            events({"type": "end", "status": "stopped", "reason": str(e)})
            return TrainReport(run_id, "stopped", {}, time.time() - t0, str(e))
        except TLError as e:
            runs.end_run(project, run_id, status="failed", seconds=time.time() - t0, reason=str(e))
            events({"type": "end", "status": "failed", "reason": str(e)})
            raise
        except Exception as e:  # noqa: BLE001 - recorded in the run, then re-raised for the front to report
            reason = f"{type(e).__name__}: {e}"
            (rdir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
            runs.end_run(project, run_id, status="failed", seconds=time.time() - t0, reason=reason)
            events({"type": "end", "status": "failed", "reason": reason})
            raise
        status = "stopped" if result["stopped"] else "finished"
        seconds = time.time() - t0
        stop_reason = (stop.reason or "stopped by the user") if result["stopped"] else ""
        if result.get("note"):
            stop_reason = f"{stop_reason}; {result['note']}"
        runs.end_run(project, run_id, status=status, metrics=result["metrics"], seconds=seconds,
                     reason=stop_reason,
                     model_file=result.get("model_file"), model_sha256=result.get("model_sha256"))
        if status == "finished":  # used by Review and Classify only if better than the run in use
            from .run_choice import choose_after_training

            choose_after_training(project, run_id, events=events)
        events({"type": "end", "status": status, "metrics": result["metrics"], "seconds": round(seconds, 2)})
        return TrainReport(run_id, status, result["metrics"], seconds, stop_reason)
    finally:
        lock.release()


def _follow(project: Project, cfg: TrainConfig, *, stop: StopToken) -> TrainReport:
    """A process other than the first of a distributed fine-tuning: train on the first's snapshot,
    record nothing (its files go to a temporary folder)."""
    import tempfile

    from . import distributed

    t0 = time.time()
    got = distributed.broadcast(None)
    if got is None:
        return TrainReport("", "failed", {}, 0.0, "The first process did not start the run.")
    run_id, snap = got
    stop.file = runs.run_dir(project, run_id) / "STOP"  # the run's Stop (from the web app) stops this one too
    with tempfile.TemporaryDirectory(prefix="tl_app_rank_") as tmp:
        try:
            result = _train_snapshot(project, snap, cfg, Path(tmp), stop=stop, events=_no_events)
        except Stopped as e:
            return TrainReport(run_id, "stopped", {}, time.time() - t0, str(e))
    return TrainReport(run_id, "stopped" if result["stopped"] else "finished", {}, time.time() - t0)


def _write_scores(rdir: Path, snap: Snapshot, probs, valid_idx: list[int], *, out_of_fold: bool,
                  evidence=None, embeddings=None, outliers=None, partial: bool = False) -> None:
    """Probabilities per item for Review; rows that hold NaN (never scored) are left out.

    ``partial``: a stopped run's probabilities from its training batches only (no clean pass,
    no evidence): Review then ranks by them but flags nothing (``"review_pass": "skipped"``).

    ``evidence`` (a :class:`~tl_app.review.LabelEvidence`) gives each item's ``review``
    probabilities (what it looks like, judged by evidence that never learned its label; the
    labels' noise still in them), its ``suspect`` score (the probability that its label is
    wrong) and the dataset's ``noise`` matrix (how labels go wrong, to judge a relabelled
    item); ``embeddings`` are the features
    Review looks for neighbours, duplicates and outliers in (``embeddings.npy``, in snapshot
    order, float16, loaded without pickle); ``outliers`` each item's outlier score (see
    :func:`~tl_app.review.outlier_scores`).
    """
    import math

    import numpy as np

    valid_set = set(valid_idx)
    rows = []
    for i, it in enumerate(snap.items):
        if math.isnan(float(probs[i][0])):
            continue
        row = {"item": it.id, "label": it.label, "valid": i in valid_set,
               "probs": [round(float(p), 6) for p in probs[i]]}
        if evidence is not None:
            row["review"] = [round(float(p), 6) for p in evidence.probs[i]]
            row["suspect"] = round(float(evidence.score[i]), 6)
        if outliers is not None:
            row["outlier"] = round(float(outliers[i]), 4)
        rows.append(row)
    if embeddings is not None:
        tmp = rdir / f".embeddings.{os.getpid()}.npy"
        np.save(tmp, np.asarray(embeddings, dtype=np.float16), allow_pickle=False)
        os.replace(tmp, rdir / "embeddings.npy")
    doc = {"vocab": snap.vocab, "out_of_fold": out_of_fold, "items": rows}
    if partial:
        doc["review_pass"] = "skipped"
    if evidence is not None:
        doc["noise"] = [[round(float(v), 6) for v in row] for row in evidence.noise]
    runs.write_json(rdir, "scores.json", doc)


def _record_open_set(rdir: Path, stage_feats, widths: list[int], valid_logits, targets, train_idx: list[int],
                     valid_idx: list[int]) -> None:
    """The run's none-of-these rule (``unknown.json`` and its bank), set on its held-out pictures against
    its training pictures' layer features from a clean pass (see :mod:`tl_app.openset`)."""
    import numpy as np

    from . import openset

    y = np.asarray(targets)
    openset.record(rdir, stage_feats[train_idx], stage_feats[valid_idx], valid_logits, widths=widths,
                   train_labels=y[train_idx], valid_labels=y[valid_idx])


def _write_losses(rdir: Path, snap: Snapshot, item_probs) -> None:
    """Each item's loss in each epoch (None where no batch held it): how hard it was to fit."""
    import numpy as np

    targets = np.asarray(snap.targets)
    p = item_probs[:, np.arange(len(targets)), targets]
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = -np.log(np.clip(p, 1e-12, 1.0))
    runs.write_json(rdir, "losses.json", {
        "items": [it.id for it in snap.items],
        "losses": [[None if np.isnan(v) else round(float(v), 5) for v in row] for row in loss]})


def _write_snapshot(rdir: Path, snap: Snapshot, train_idx: list[int], valid_idx: list[int]) -> None:
    valid_set = set(valid_idx)
    runs.write_json(rdir, "snapshot.json", {
        "vocab": snap.vocab, "class_log": snap.class_log,
        "items": [{"item": it.id, "label": it.label, "sha256": it.sha256, "valid": i in valid_set}
                  for i, it in enumerate(snap.items)]})


def _halved_batch(bs: int, smallest: int, events: EventFn, doing: str) -> int:
    """After a CUDA out-of-memory: half the batch size, the user told; a plain error below ``smallest``."""
    import torch

    if bs <= smallest:
        raise TLError(f"The GPU ran out of memory even with {smallest} picture{'s' if smallest > 1 else ''} "
                      "per batch; choose a smaller image size or network.") from None
    bs //= 2
    torch.cuda.empty_cache()
    events({"type": "phase", "phase": "oom",
            "message": f"The GPU ran out of memory; {doing} {bs} pictures at a time."})
    return bs


def _features_halving_on_oom(body, pixels, bs: int, device, stop: StopToken, events: EventFn):
    """``(features, stage_features, widths)`` of a body (see :func:`tl_app.quick.compute_features`), in batches
    half as large after each CUDA out-of-memory (the user is told)."""
    import torch

    from . import quick

    while True:
        try:
            return quick.compute_features(body, pixels, batch_size=bs, device=device, stop=stop, events=events,
                                          stages=True)
        except torch.cuda.OutOfMemoryError:
            bs = _halved_batch(bs, 1, events, "computing features")


def _train_quick(project: Project, snap: Snapshot, cfg: TrainConfig, rdir: Path, *, stop: StopToken,
                 events: EventFn) -> dict:
    """Features once per picture (cached), then a softmax-regression head: seconds, no fastai.

    When every feature is cached (and the body stored), neither torch nor fastai is imported.
    """
    import numpy as np

    from . import quick

    quick.check_quick_possible(cfg.pretrained, cfg.weights)
    clock = quick.timed()
    wid = quick.weights_id(cfg.arch, cfg.pretrained, cfg.weights)
    tag = quick.feature_tag(cfg.arch, cfg.size, wid)
    stage_tag = tag + "|layers"  # the none-of-these features (features.StagePool, version 3), from the same pass
    store = quick.FeatureStore(project)
    shas = sorted({it.sha256 for it in snap.items})
    # Kept as stored (float16): at 50,000 pictures the two sets are 400 MB so, 800 MB as float32. Features
    # computed now are rounded the same way, so a first run and a retrain on the cache see the same numbers.
    have, have_stages = store.get(shas, tag, dtype="float16"), store.get(shas, stage_tag, dtype="float16")
    widths = store.get_meta(stage_tag)
    if widths is None:  # the layers' widths are recorded with their first features: without them, none count
        have_stages = {}
    missing = [i for i, it in enumerate(snap.items) if it.sha256 not in have or it.sha256 not in have_stages]
    body_ref = quick.stored_body(project, tag)
    events({"type": "phase", "phase": "cache", "cached": len(snap.items) - len(missing), "total": len(snap.items)})
    device_text = "CPU (every picture's features were cached)"
    if missing or body_ref is None:
        device = default_device(cfg.cpu)
        device_text = describe_device(device)
        events({"type": "phase", "phase": "device", "device": device_text})
        events({"type": "phase", "phase": "model", "message": f"Preparing {cfg.arch}"})
        from .models import create_body

        body = create_body(cfg.arch, pretrained=cfg.pretrained, weights=Path(cfg.weights) if cfg.weights else None)
        if body_ref is None:
            body_ref = quick.store_body(project, tag, body)
        if missing:
            sub = Snapshot([snap.items[i] for i in missing], snap.vocab)
            pixels = snapshot_pictures(project, sub, cfg.size)
            feats, staged, widths = _features_halving_on_oom(body, pixels, quick.inference_batch(cfg.size, device,
                                                             cfg.batch_size), device, stop, events)
            store.put_meta(stage_tag, widths)
            store.put(tag, [(it.sha256, feats[j]) for j, it in enumerate(sub.items)])
            store.put(stage_tag, [(it.sha256, staged[j]) for j, it in enumerate(sub.items)])
            feats, staged = feats.astype(np.float16), staged.astype(np.float16, copy=False)
            have.update({it.sha256: feats[j] for j, it in enumerate(sub.items)})
            have_stages.update({it.sha256: staged[j] for j, it in enumerate(sub.items)})
            del feats, staged
    else:
        events({"type": "phase", "phase": "device", "device": device_text})
    if stop.is_set():
        raise Stopped("Stopped before the classifier was trained.")
    X = np.empty((len(snap.items), len(have[snap.items[0].sha256]) if snap.items else 0), np.float32)
    for i, it in enumerate(snap.items):
        X[i] = have[it.sha256]
    del have
    y = np.asarray(snap.targets)
    n = len(snap.vocab)
    train_idx, valid_idx = split_valid(snap, cfg.valid_pct)
    events({"type": "phase", "phase": "head", "message": "Training the classifier on the features"})
    # The head, its L2 strength (cross-validated on the training pictures) and, for Review, every
    # picture's probabilities from a head that never saw it (k-fold on the cached features).
    fit = quick.fit_quick_head(X, y, n, train_idx, valid_idx, seed=cfg.seed)
    head, l2 = fit.head, fit.l2
    if stop.is_set():
        raise Stopped("Stopped before the model was saved.")
    metrics = classification_metrics(head.probs(X[valid_idx]), y[valid_idx], snap.vocab)
    history = []
    for i, t in enumerate(fit.trace):
        entry = {"epoch": t["epoch"], "phase": "quick",
                 **{k: None if t[k] is None else round(t[k], 4) for k in ("train_loss", "valid_loss", "accuracy")}}
        if i == len(fit.trace) - 1:
            entry["seconds"] = round(clock(), 2)
        history.append(entry)
        events({"type": "epoch", **entry, "last": i == len(fit.trace) - 1})
    spec = ModelSpec(arch=cfg.arch, vocab=snap.vocab, size=cfg.size, head="linear",
                     extra={"body_file": body_ref[0], "body_sha256": body_ref[1], "weights": wid, "l2": l2})
    sha = quick.save_quick_model(rdir, spec, head)
    metrics.update({"epochs": history, "train_items": len(train_idx), "valid_items": len(valid_idx),
                    "device": device_text, "features_computed": len(missing), "l2": l2})
    runs.write_json(rdir, "report.json", metrics)
    from .review import evidence_and_outliers

    # The features come from a body that never saw these labels, and fit.oof from heads that never
    # saw the item: both are evidence about its label.
    evidence, outliers = evidence_and_outliers(X, y, len(snap.vocab), oof_probs=fit.oof)
    _write_scores(rdir, snap, fit.oof, valid_idx, out_of_fold=True, embeddings=X, evidence=evidence,
                  outliers=outliers)
    S = np.stack([have_stages[it.sha256] for it in snap.items])  # float16, as the bank stores them
    del have_stages
    _record_open_set(rdir, S, widths, X[valid_idx] @ head.W + head.b, y, train_idx, valid_idx)
    summary = {k: metrics[k] for k in ("accuracy", "valid_loss")}
    summary.update(epochs=history[-1]["epoch"] if history else 0, train_items=len(train_idx),
                   valid_items=len(valid_idx), features_computed=len(missing))
    return {"stopped": False, "metrics": summary, "model_file": "model.safetensors", "model_sha256": sha}


#: After which epoch a full run embeds every picture for Review: the frozen one, when only the head
#: has learned the labels and the body cannot have memorised any picture's label.
REVIEW_PROBE_EPOCHS = frozenset({1})


def _full_run_evidence(emb, early, targets, n_classes: int, seed: int):
    """Review's evidence for a fine-tuned run: neighbours in the final and the early features, and
    heads fitted on the early features without the item (k-fold). Heads on the final features too
    were tried on bench/review.py's variants: no better, and as long again. Returns the evidence and
    the outlier scores (in the early features when there are some)."""
    import numpy as np

    from . import quick
    from .review import evidence_and_outliers

    y = np.asarray(targets)
    oof = None
    if early is not None:
        l2 = quick.choose_l2(early, y, n_classes, seed=seed)
        oof = quick.out_of_fold_probs(early, y, n_classes, l2=l2, seed=seed)
    return evidence_and_outliers(emb, y, n_classes, early=early, oof_probs=oof)


def _seed_everything(seed: int) -> None:
    """The same pictures and settings give the same run: fastai's loaders shuffle with Python's
    ``random``, augmentation and weights draw from torch, the evidence's folds from numpy."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _train_snapshot(project: Project, snap: Snapshot, cfg: TrainConfig, rdir: Path, *, stop: StopToken,
                    events: EventFn) -> dict:
    if cfg.quick:
        return _train_quick(project, snap, cfg, rdir, stop=stop, events=events)
    import numpy as np
    import torch

    from . import distributed

    dist = distributed.is_distributed()
    _seed_everything(cfg.seed)  # the same in every process: the same first weights
    device = distributed.init(cpu=default_device(cfg.cpu).type == "cpu") if dist else default_device(cfg.cpu)
    events({"type": "phase", "phase": "device", "device": describe_device(device)})
    targets = snap.targets
    train_idx, valid_idx = split_valid(snap, cfg.valid_pct)
    spec = ModelSpec(arch=cfg.arch, vocab=snap.vocab, size=cfg.size, head="fastai")
    weights = Path(cfg.weights) if cfg.weights else None
    events({"type": "phase", "phase": "model", "message": f"Preparing {cfg.arch}"})
    model = create_model(spec, pretrained=cfg.pretrained, weights=weights)
    pixels = snapshot_pictures(project, snap, cfg.size)
    bs = cfg.batch_size
    while True:
        try:
            history, info = _fastai_finetune(model, pixels, targets, train_idx, valid_idx, spec, cfg, device,
                                             stop, events, bs, probe_epochs=REVIEW_PROBE_EPOCHS)
            break
        except torch.cuda.OutOfMemoryError:
            if dist:  # the other processes cannot start again with it
                raise TLError("A GPU ran out of memory; choose a smaller batch size, image size or network.") from None
            bs = _halved_batch(bs, 2, events, "starting again with")
            torch.manual_seed(cfg.seed)
            model = create_model(spec, pretrained=cfg.pretrained, weights=weights)
    stopped = stop.is_set()
    epochs_done = len(history)
    result: dict = {"stopped": stopped, "metrics": {}}
    if stopped and epochs_done == 0:
        raise Stopped("Stopped before the first epoch ended; no model was kept.")
    if dist and distributed.rank() > 0:  # the first process scores, saves and records
        return result
    model.eval()
    scores = info.pop("scores")
    item_probs = info.pop("item_probs")
    probes = info.pop("probes")
    if stopped:
        # Stop keeps what is done and ends now: the model of the kept epoch, its validation pass's
        # metrics and each picture's probabilities from the batches that held it. The clean pass
        # over every picture (Review's evidence, the none-of-these rule) would take minutes on a
        # large dataset, so it is left out; a finished run has it.
        seen_valid = [i for i in valid_idx if not np.isnan(scores[i, 0])]
        metrics = classification_metrics(scores[seen_valid], [targets[i] for i in seen_valid], snap.vocab)
        metrics.update({"epochs": history, "train_items": len(train_idx), "valid_items": len(valid_idx),
                        "device": describe_device(device), "review_pass": "skipped", **info})
        _write_scores(rdir, snap, scores, valid_idx, out_of_fold=False, partial=True)
        _write_losses(rdir, snap, item_probs)
        result["note"] = (f"the model after epoch {info.get('best_epoch') if info.get('restored_best') else epochs_done}"
                          f" of {cfg.epochs + 1} is kept; the check of every picture for Review and the "
                          "none-of-these rule were skipped to stop at once (a finished run has them)")
    else:
        # One clean pass over the pictures (eval mode, no augmentation) gives the features Review
        # judges every item by: its neighbours in the trained network's feature space, so that no
        # item is judged by a model that learned it (see review.py).
        widths: list[int] = []
        logits, emb, stage_feats = embed_with_stages(model, pixels, spec, device=device, events=events,
                                                     widths_out=widths)
        clean = softmax(logits)
        unseen = np.isnan(scores[:, 0])  # no training batch held it (drop_last)
        scores[unseen] = clean[unseen]
        probs = scores[valid_idx]
        metrics = classification_metrics(probs, [targets[i] for i in valid_idx], snap.vocab)
        metrics.update({"epochs": history, "train_items": len(train_idx), "valid_items": len(valid_idx),
                        "device": describe_device(device), **info})
        early = probes[min(probes)] if probes else None  # see REVIEW_PROBE_EPOCHS
        evidence, outliers = _full_run_evidence(emb, early, targets, len(snap.vocab), cfg.seed)
        _write_scores(rdir, snap, scores, valid_idx, out_of_fold=False, embeddings=emb, evidence=evidence,
                      outliers=outliers)
        _record_open_set(rdir, stage_feats, widths, logits[valid_idx], targets, train_idx, valid_idx)
        _write_losses(rdir, snap, item_probs)
    sha = save_model(model.cpu(), spec, rdir)
    result.update(model_file="model.safetensors", model_sha256=sha)
    summary = {k: metrics[k] for k in ("accuracy", "valid_loss")}
    summary.update(epochs=epochs_done, train_items=len(train_idx), valid_items=len(valid_idx))
    runs.write_json(rdir, "report.json", metrics)
    result["metrics"] = summary
    return result
