"""Tab 3: train in a separate process with live progress and a Stop that works; runs and their metrics.

The first press of Train runs quick mode (a model in seconds); once the project has a
finished run, full fine-tuning is proposed to improve on it. Handlers receive the
form's values by name (``inputs_kwargs``) and turn them into a :class:`TrainForm`.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import gradio as gr
import pandas as pd

from .. import config, runs
from ..models import list_archs, store_weights_file
from ..runner import LrFindProcess, fail_abandoned_runs, start_lr_find, start_training, trainer_holder
from ..train import TrainConfig, busy_message
from ..errors import InputError
from .adapters import UIContext, handler, pct

SIZES = [128, 160, 192, 224, 256, 320]
QUICK, FULL = "quick", "full"
MODES = [("Quick (seconds: trains only the last layer)", QUICK),
         ("Full fine-tuning (minutes, more accurate)", FULL)]
MODE_NAMES = {"quick": "quick", "finetune": "full fine-tuning"}
QUICK_NEEDS_WEIGHTS = ("Quick mode needs pretrained weights (or your own weights file): it trains only the last "
                       "layer on the features of a trained network, and an untrained network's features mean nothing.")


@dataclass
class TrainForm:
    """The Train tab's settings, by name: what a click on Train (or on Suggest) sends."""

    mode: str = QUICK
    arch: str = config.DEFAULT_ARCH
    size: int | str = config.DEFAULT_SIZE
    pretrained: bool = True
    weights: Optional[str] = None       # an uploaded file (a temporary path)
    epochs: int = config.DEFAULT_EPOCHS
    lr: Optional[str] = None            # empty: the default (or run "Suggest a learning rate")
    patience: Optional[float] = 0       # 0: no early stopping

    def to_config(self, ctx: UIContext) -> TrainConfig:
        """The core's configuration; an uploaded weights file is checked and copied into the project."""
        if self.mode not in (QUICK, FULL):
            raise InputError(f"Choose quick or full training (not '{self.mode}').")
        weights = None
        if self.weights:
            weights = str(store_weights_file(ctx.project.root, Path(self.weights), Path(self.weights).name))
        return TrainConfig(arch=self.arch, epochs=int(self.epochs or 1), size=_pixels(self.size),
                           pretrained=bool(self.pretrained), weights=weights, quick=self.mode == QUICK,
                           lr=_learning_rate(self.lr),
                           patience=int(self.patience) if self.patience else None)


def _learning_rate(value) -> Optional[float]:
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise InputError(f"The learning rate must be a number such as 0.002 (not '{text}').") from None


def _pixels(size) -> int:
    try:
        return int(str(size).strip())
    except ValueError:
        raise InputError(f"The image size must be a whole number of pixels, such as 224 (not '{size}').") from None


# --- what the tab shows ------------------------------------------------------------------
def runs_table(ctx: UIContext) -> pd.DataFrame:
    rows = []
    active = runs.active_run(ctx.project)
    for r in runs.list_runs(ctx.project):
        rows.append({"Run": r.id, "Status": r.status + (" (in use)" if active and r.id == active.id else ""),
                     "Mode": MODE_NAMES.get(r.mode, r.mode), "Network": r.arch,
                     "Accuracy": pct(r.metrics.get("accuracy")),
                     "Seconds": None if r.seconds is None else round(r.seconds, 1),
                     "Started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
                     "Note": r.reason})
    cols = ["Run", "Status", "Mode", "Network", "Accuracy", "Seconds", "Started", "Note"]
    return pd.DataFrame(rows, columns=cols)


def run_choices(ctx: UIContext) -> tuple[list[str], str | None]:
    choices = [r.id for r in runs.list_runs(ctx.project) if r.has_model]
    active = runs.active_run(ctx.project)
    return choices, active.id if active else None


def default_mode(ctx: UIContext) -> str:
    """Quick until the project has a finished run; then full fine-tuning, to improve on it."""
    return FULL if any(r.status == "finished" for r in runs.list_runs(ctx.project)) else QUICK


@functools.lru_cache(maxsize=1)
def device_note() -> str:
    """The device training uses here (imports torch once, when the Train tab is first opened)."""
    from ..train import default_device, describe_device

    return f"**Device:** {describe_device(default_device())}"


def history_frame(history: list[dict]) -> pd.DataFrame | None:
    """The plot's data: one row per epoch and metric; None when there is nothing to draw.

    Gradio 6.31's LinePlot never draws lines again after it was given an empty
    frame (its column types are guessed from no data), so "nothing" is None.
    """
    rows = []
    for h in history:
        for key, name in (("train_loss", "training loss"), ("valid_loss", "validation loss"), ("accuracy", "accuracy")):
            if h.get(key) is not None:
                rows.append({"epoch": h["epoch"], "value": float(h[key]), "metric": name})
    return pd.DataFrame(rows, columns=["epoch", "value", "metric"]) if rows else None


def run_history(ctx: UIContext, run_id: str | None) -> list[dict]:
    """The per-epoch values a finished run recorded, so the plot is not empty after a restart."""
    if not run_id:
        return []
    rep = runs.read_json(ctx.project, run_id, "report.json") or {}
    return list(rep.get("epochs") or [])


@dataclass
class RunView:
    """What the tab shows about one run."""

    text: str
    figure: object
    confusion: pd.DataFrame
    per_class: pd.DataFrame


def run_view(ctx: UIContext, run_id: str | None) -> RunView:
    from ..train import confusion_figure

    empty = pd.DataFrame()
    if not run_id:
        return RunView("No finished run yet.", None, empty, empty)
    run = runs.get_run(ctx.project, run_id)
    rep = runs.read_json(ctx.project, run_id, "report.json") or {}
    text = (f"**Run {run.id}**: {run.status}, {run.arch}, {MODE_NAMES.get(run.mode, run.mode)}; accuracy on the "
            f"held-out pictures **{pct(rep.get('accuracy'))}** ({rep.get('valid_items', '?')} checked, "
            f"{rep.get('train_items', '?')} learned from), trained on {rep.get('device', '?')}"
            + (f" in {run.seconds:.0f} s" if run.seconds else "") + ".")
    if run.mode == "quick" and "features_computed" in rep:
        n, total = rep["features_computed"], rep.get("train_items", 0) + rep.get("valid_items", 0)
        text += (f" Features computed for {n} of {total} pictures; the others came from the cache." if n < total
                 else f" Features computed for all {n} pictures (kept for the next quick run).")
        text += " The chart shows the last layer's training, one point per pass over the features."
    if rep.get("early_stopped"):
        text += " Stopped early: the validation loss no longer improved."
    if rep.get("restored_best") and rep.get("best_epoch"):
        text += f" Kept the weights of epoch {rep['best_epoch']}, which had the lowest validation loss."
    conf = rep.get("confusion")
    cm = empty
    if conf:
        labels = conf["labels"]
        cm = pd.DataFrame(conf["matrix"], columns=[f"predicted {x}" for x in labels])
        cm.insert(0, "actual", labels)
    pc = pd.DataFrame([{"class": k, "precision": pct(v["precision"]), "recall": pct(v["recall"]),
                        "pictures checked": v["support"]} for k, v in (rep.get("per_class") or {}).items()])
    return RunView(text, confusion_figure(rep) if conf else None, cm, pc)


def _seconds(s: float | None) -> str:
    if s is None:
        return ""
    s = int(round(s))
    return f"about {s // 60} min {s % 60:02d} s left" if s >= 60 else f"about {s} s left"


def progress_text(job_id: str, ev: dict) -> str:
    """One line of live progress for a batch or phase event."""
    kind, phase = ev.get("type"), ev.get("phase")
    left = _seconds(ev.get("eta"))
    if kind == "batch":
        share = ev["done"] / max(1, ev["total"])
        where = ("Trying learning rates" if job_id.startswith("lr-find")
                 else f"Training run {job_id}: epoch {ev['epoch'] + 1} of {ev['epochs']}")
        return f"{where}, batch {ev['done']} of {ev['total']} ({share:.0%})" + (f", {left}" if left else "") + "."
    if phase == "loading":
        return f"Reading pictures: {ev['done']} of {ev['total']}."
    if phase == "features":
        return (f"Training run {job_id}: computing features, {ev['done']} of {ev['total']} pictures"
                + (f", {left}" if left else "") + ".")
    if phase == "cache":
        return (f"Training run {job_id}: {ev['cached']} of {ev['total']} pictures' features are cached; "
                f"{ev['total'] - ev['cached']} to compute.")
    if phase in ("head", "model", "lr_find"):
        return f"{ev.get('message', '')}…"
    if phase in ("oom", "early_stop"):
        return ev.get("message", "")
    return ""


# --- the tab ------------------------------------------------------------------------------
def create_train_tab(ctx: UIContext) -> dict:
    c: dict = {}
    gr.Markdown("Train a classifier on your pictures. **Quick** gives a first model in seconds; **full "
                "fine-tuning** then trains the whole network for a better one. Training runs in the background: "
                "you can keep working, and Stop ends it after the current batch.")
    c["mode"] = gr.Radio(MODES, value=lambda: default_mode(ctx), label="How", elem_id="train-mode")
    c["mode_note"] = gr.Markdown(elem_id="train-mode-note")
    with gr.Row():
        c["arch"] = gr.Dropdown(choices=list_archs(), value=config.DEFAULT_ARCH, label="Network", elem_id="train-arch")
        c["size"] = gr.Dropdown(choices=SIZES, value=config.DEFAULT_SIZE, label="Image size (pixels)",
                                allow_custom_value=True, elem_id="train-size",
                                info="Smaller is faster; you may type another size (32 to 1024).")
        c["pretrained"] = gr.Checkbox(value=True, label="Pretrained weights", elem_id="train-pretrained",
                                      info="Start from a network trained on ImageNet (recommended).")
    with gr.Accordion("Full fine-tuning options", open=False, elem_id="train-full-options") as c["full_options"]:
        with gr.Row():
            c["epochs"] = gr.Slider(1, 20, value=config.DEFAULT_EPOCHS, step=1, label="Epochs", elem_id="train-epochs",
                                    info="Passes over the pictures after a first pass that trains only the head.")
            c["lr"] = gr.Textbox("", label="Learning rate", elem_id="train-lr", placeholder="0.002 (the default)",
                                 info="Empty: the default. 'Suggest a learning rate' tries some on your pictures.")
            c["patience"] = gr.Number(0, label="Early stopping (epochs; 0: never)", precision=0, minimum=0,
                                      maximum=100, elem_id="train-patience", info=config.HELP["patience"])
        c["lr_find"] = gr.Button("Suggest a learning rate", elem_id="lr-find-button")
    with gr.Accordion("Your own starting weights (optional)", open=False, elem_id="train-weights-box"):
        gr.Markdown(config.HELP["weights"])
        c["weights"] = gr.File(file_count="single", file_types=[".safetensors", ".pth", ".pt"], type="filepath",
                               label="Weights file", elem_id="train-weights")
    with gr.Row():
        c["train"] = gr.Button("Train", variant="primary", elem_id="train-button")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop-button")
    c["my_run"] = gr.State(None)
    c["device"] = gr.Markdown(elem_id="train-device")
    c["status"] = gr.Markdown(elem_id="train-status")
    c["plot"] = gr.LinePlot(None, x="epoch", y="value", color="metric", title="Loss and accuracy per epoch",
                            height=260, elem_id="train-plot")
    c["report"] = gr.Markdown(elem_id="train-report")
    with gr.Row():
        c["confusion_plot"] = gr.Plot(label="Confusion matrix", elem_id="train-confusion-plot", format="png")
        with gr.Column():
            c["confusion"] = gr.Dataframe(label="Confusion matrix (rows: actual class)", interactive=False,
                                          elem_id="train-confusion")
            c["per_class"] = gr.Dataframe(label="Per class", interactive=False, elem_id="train-per-class")
    c["runs"] = gr.Dataframe(value=lambda: runs_table(ctx), label="Runs", interactive=False, elem_id="runs-table")
    with gr.Row():
        choices, active = run_choices(ctx)
        # allow_custom_value: runs made after the app started are not in an API caller's choices;
        # set_active_run checks the id.
        c["use_run"] = gr.Dropdown(choices=choices, value=active, label="Model used by Review and Classify",
                                   allow_custom_value=True, elem_id="use-run")

    def view_outputs(run_id: str | None) -> dict:
        v = run_view(ctx, run_id)
        return {c["report"]: v.text, c["confusion_plot"]: v.figure, c["confusion"]: v.confusion,
                c["per_class"]: v.per_class}

    def final_outputs(status: str, device: str, history: list[dict]) -> dict:
        choices, active = run_choices(ctx)
        return {c["my_run"]: None, c["status"]: status, c["device"]: device, c["plot"]: history_frame(history),
                **view_outputs(active),
                c["runs"]: runs_table(ctx), c["use_run"]: gr.Dropdown(choices=choices, value=active),
                c["mode"]: default_mode(ctx)}

    train_outs = [c["my_run"], c["status"], c["device"], c["plot"], c["report"], c["confusion_plot"], c["confusion"],
                  c["per_class"], c["runs"], c["use_run"], c["mode"]]
    form_fields = ("mode", "arch", "size", "pretrained", "weights", "epochs", "lr", "patience")

    @handler
    def train(mode: str = QUICK, arch: str = config.DEFAULT_ARCH, size=config.DEFAULT_SIZE, pretrained: bool = True,
              weights: Optional[str] = None, epochs: int = config.DEFAULT_EPOCHS, lr: Optional[str] = None,
              patience: Optional[float] = 0, progress=gr.Progress()):
        form = TrainForm(mode, arch, size, pretrained, weights, epochs, lr, patience)
        tp = start_training(ctx.project, form.to_config(ctx))
        ctx.jobs[tp.run_id] = tp
        history: list[dict] = []
        status, device = f"Training run {tp.run_id}: starting…", device_note()
        yield {c["my_run"]: tp.run_id, c["status"]: status, c["plot"]: None, c["runs"]: runs_table(ctx)}
        try:
            for new in tp.follow(0.5):
                out: dict = {}
                for ev in new:
                    kind = ev.get("type")
                    line = progress_text(tp.run_id, ev)
                    if line:
                        status = line
                    if kind == "batch":
                        progress((ev["done"], ev["total"]), desc=status)
                    elif kind == "phase" and ev.get("phase") in ("loading", "features"):
                        progress((ev["done"], ev["total"]), desc=status)
                    elif kind == "epoch":
                        history.append(ev)
                        out[c["plot"]] = history_frame(history)
                        if ev.get("phase") != "quick":
                            status = f"Training run {tp.run_id}: epoch {ev['epoch']} done, accuracy {pct(ev.get('accuracy'))}."
                    elif kind == "phase" and ev.get("phase") == "device":
                        device = out[c["device"]] = f"**Device:** {ev['device']}"
                if tp.stop_requested:
                    status = f"Stopping run {tp.run_id}…"
                if new:
                    out[c["status"]] = status
                if out:
                    yield out
        finally:
            ctx.jobs.pop(tp.run_id, None)
        run = tp.result()
        if run.status == "finished":
            status = f"Run {run.id} finished in {run.seconds:.0f} s: accuracy {pct(run.metrics.get('accuracy'))}."
            if run.mode == "quick":
                status += " Full fine-tuning is now selected: press Train again for a better model."
        elif run.status == "stopped":
            status = f"Run {run.id} stopped. " + ("Its model is kept and can be chosen below." if run.has_model
                                                   else "No model was kept; your pictures are unchanged.")
        else:
            status = f"Run {run.id} failed: {run.reason}"
        yield final_outputs(status, device, history if history else run_history(ctx, run.id))

    # One training (or search) at a time is enforced by the trainer lock; these followers get their own
    # queue slots, so that the rest of the app stays responsive and a second visitor hears "busy" at once.
    c["train"].click(train, None, train_outs, inputs_kwargs={k: c[k] for k in form_fields}, api_name="train",
                     show_progress_on=[c["status"]], concurrency_id="trainer", concurrency_limit=4)

    @handler
    def lr_find(arch: str = config.DEFAULT_ARCH, size=config.DEFAULT_SIZE, pretrained: bool = True,
                weights: Optional[str] = None, progress=gr.Progress()):
        form = TrainForm(FULL, arch, size, pretrained, weights)
        job: LrFindProcess = start_lr_find(ctx.project, form.to_config(ctx))
        ctx.jobs[job.job_id] = job
        status, device = "Searching for a good learning rate…", device_note()
        yield {c["my_run"]: job.job_id, c["status"]: status}
        try:
            for new in job.follow(0.5):
                out: dict = {}
                for ev in new:
                    line = progress_text(job.job_id, ev)
                    if line:
                        status = line
                    if ev.get("type") == "batch" or ev.get("phase") == "loading":
                        progress((ev["done"], ev["total"]), desc=status)
                    elif ev.get("phase") == "device":
                        device = out[c["device"]] = f"**Device:** {ev['device']}"
                if job.stop_requested:
                    status = "Stopping the learning-rate search…"
                if new:
                    out[c["status"]] = status
                if out:
                    yield out
        finally:
            ctx.jobs.pop(job.job_id, None)
        res = job.result()
        if "lr" in res:
            lr = f"{res['lr']:.2g}"
            yield {c["my_run"]: None, c["lr"]: lr, c["device"]: device,
                   c["status"]: f"Suggested learning rate: **{lr}** (fastai's lr_find, the 'valley' of the loss "
                                f"curve). It is filled in above; full fine-tuning will use it."}
        else:
            text = ("The learning-rate search was stopped; the learning rate is unchanged." if res.get("stopped")
                    else f"No learning rate was suggested: {res['error']}")
            yield {c["my_run"]: None, c["device"]: device, c["status"]: text}

    c["lr_find"].click(lr_find, None, [c["my_run"], c["status"], c["lr"], c["device"]],
                       inputs_kwargs={k: c[k] for k in ("arch", "size", "pretrained", "weights")}, api_name="lr_find",
                       show_progress_on=[c["status"]], concurrency_id="trainer", concurrency_limit=4)

    @handler
    def stop(my_run):
        job = ctx.jobs.get(my_run) if my_run else None
        if job is None:
            holder = trainer_holder(ctx.project)
            if holder:
                return busy_message(holder) + " Only the person who started it can stop it."
            return "Nothing is training."
        job.stop()
        if isinstance(job, LrFindProcess):
            return "Stopping the learning-rate search after the current batch…"
        return f"Stopping run {job.run_id} after the current batch…"

    c["stop"].click(stop, [c["my_run"]], [c["status"]], api_name="stop", queue=False)

    # Quick mode needs weights worth their features: unticking "Pretrained weights" switches to full
    # fine-tuning, choosing Quick ticks it again; either way the note says why.
    def on_pretrained(pretrained, mode, weights):
        if not pretrained and not weights and mode == QUICK:
            return (FULL, QUICK_NEEDS_WEIGHTS + " Switched to **full fine-tuning**, which trains the whole network "
                    "from scratch (slower, and it needs more pictures).", gr.Accordion(open=True))
        return gr.skip(), "", gr.skip()

    c["pretrained"].input(on_pretrained, [c["pretrained"], c["mode"], c["weights"]],
                          [c["mode"], c["mode_note"], c["full_options"]], api_visibility="private")

    def on_mode(mode, pretrained, weights):
        opened = gr.Accordion(open=mode == FULL)
        if mode == QUICK and not pretrained and not weights:
            return True, QUICK_NEEDS_WEIGHTS + " 'Pretrained weights' is ticked again.", opened
        return gr.skip(), "", opened

    c["mode"].input(on_mode, [c["mode"], c["pretrained"], c["weights"]],
                    [c["pretrained"], c["mode_note"], c["full_options"]], api_visibility="private")

    @handler
    def use_run(run_id):
        if run_id:
            runs.set_active_run(ctx.project, run_id)
        v = run_view(ctx, run_id)
        return v.text, history_frame(run_history(ctx, run_id)), v.figure, v.confusion, v.per_class, runs_table(ctx)

    c["use_run"].input(use_run, [c["use_run"]],
                       [c["report"], c["plot"], c["confusion_plot"], c["confusion"], c["per_class"], c["runs"]],
                       api_name="use_run")

    @handler
    def refresh(my_run):
        fail_abandoned_runs(ctx.project)
        choices, active = run_choices(ctx)
        v = run_view(ctx, active)
        holder = trainer_holder(ctx.project)
        mine = bool(my_run and my_run in ctx.jobs)
        status = busy_message(holder) if holder and not mine else gr.skip()
        # While this visitor's training runs, its generator owns the plot.
        plot = gr.skip() if mine else history_frame(run_history(ctx, active))
        return (status, device_note(), plot, v.text, v.figure, v.confusion, v.per_class, runs_table(ctx),
                gr.Dropdown(choices=choices, value=active))

    c["on_select"] = (refresh, [c["my_run"]],
                      [c["status"], c["device"], c["plot"], c["report"], c["confusion_plot"], c["confusion"],
                       c["per_class"], c["runs"], c["use_run"]])
    return c
