"""Tab 3: train in a separate process with live progress and a Stop that works; runs and their metrics.

The first press of Train runs quick mode (a model in seconds); once the project has a
finished run, full fine-tuning is proposed to improve on it. Handlers receive the
form's values by name (``inputs_kwargs``) and turn them into a :class:`TrainForm`.

Progress belongs to the training, not to the page that started it: any page that
opens this tab while a training runs follows it from its events (the same person
sees everything and may stop it; see :mod:`tl_app.access`). Which run Review and
Classify use is the core's decision (:mod:`tl_app.run_choice`); the tab says which and why.

On ZeroGPU each training borrows a GPU (:mod:`tl_app.zerogpu`); when none is lent (the
owner's GPU time is used up) the status says so and "Train on the CPU instead" trains
the same settings on the CPU.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import gradio as gr
import pandas as pd

from .. import config, runs, zerogpu
from ..access import Visitor, may_stop_training
from ..errors import GpuUnavailable, InputError, PreflightError, TrainerBusy
from ..models import list_archs, store_weights_file
from ..run_choice import KEPT, in_use
from ..runner import (current_job, fail_abandoned_runs, request_stop, start_lr_find, start_training,
                      stopping_message)
from ..train import TrainConfig
from .adapters import TABLE_CSS, UIContext, html_table, owner_only, pct
from .export_panel import create_export_panel
from .progress import JobWatch, duration
from .share_panel import create_share_panel

SIZES = [128, 160, 192, 224, 256, 320]
QUICK, FULL = "quick", "full"
MODES = [("Quick (seconds: trains only the last layer)", QUICK),
         ("Full fine-tuning (minutes, more accurate)", FULL)]
QUICK_NEEDS_WEIGHTS = ("Quick mode needs pretrained weights (or your own weights file): it trains only the last "
                       "layer on the features of a trained network, and an untrained network's features mean nothing.")


#: The title over the run's confusion matrix.
CONFUSION_TITLE = "Confusion matrix (rows: actual class; columns: predicted class)"


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

    def to_config(self, ctx: UIContext, *, cpu: bool = False) -> TrainConfig:
        """The core's configuration; an uploaded weights file is checked and copied into the project.

        The copy stays only if the run it is given for finishes and is chosen
        (:func:`tl_app.models.settle_weights_file`, called when the work ends).
        """
        if self.mode not in (QUICK, FULL):
            raise InputError(f"Choose quick or full training (not '{self.mode}').")
        cfg = TrainConfig(arch=self.arch, epochs=int(self.epochs or 1), size=_pixels(self.size),
                          pretrained=bool(self.pretrained), quick=self.mode == QUICK, lr=_learning_rate(self.lr),
                          patience=int(self.patience) if self.patience else None, cpu=cpu)
        cfg.validate()  # before the file is copied: a refused setting leaves nothing behind
        if self.weights:
            cfg.weights = str(store_weights_file(ctx.project.root, Path(self.weights), Path(self.weights).name))
        return cfg


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
RUN_COLUMNS = ["Run", "Status", "Held-out accuracy", "Took", "Note"]


def runs_table(ctx: UIContext) -> pd.DataFrame:
    """Every run, newest first, by name; the run in use is marked."""
    all_runs = runs.list_runs(ctx.project)
    names = runs.run_names(all_runs)
    active = runs.active_run(ctx.project)
    rows = [{"Run": names[r.id], "Status": r.status + (" (in use)" if active and r.id == active.id else ""),
             "Held-out accuracy": pct(r.accuracy), "Took": duration(r.seconds), "Note": r.reason}
            for r in all_runs]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def run_choices(ctx: UIContext) -> tuple[list[tuple[str, str]], str | None]:
    """The runs with a model, as (name and accuracy, id), and the one in use."""
    all_runs = runs.list_runs(ctx.project)
    names = runs.run_names(all_runs)
    choices = [(f"{names[r.id]} ({pct(r.accuracy)})", r.id) for r in all_runs if r.has_model]
    active = runs.active_run(ctx.project)
    return choices, active.id if active else None


def in_use_text(ctx: UIContext) -> str:
    """Which run Review and Classify use, and why (the core's words), with what the person can do."""
    iu = in_use(ctx.project)
    if iu is None:
        return "**No model in use yet.** Train one: Review and Classify will use it."
    text = "**" + iu.describe(runs.run_names(runs.list_runs(ctx.project))).replace(",", ":**", 1)
    if iu.how == KEPT and iu.other is not None:
        text += " You can still choose it here."
    return text


def default_mode(ctx: UIContext) -> str:
    """Quick until the project has a finished run; then full fine-tuning, to improve on it."""
    return FULL if any(r.status == "finished" for r in runs.list_runs(ctx.project)) else QUICK


def device_note() -> str:
    """The device training uses here (imports torch once, when the Train tab is first opened).

    On ZeroGPU the GPU is lent for each training only: this process has none to describe.
    """
    if zerogpu.on_zerogpu():
        return ("**Device:** a GPU lent by ZeroGPU for each training (Hugging Face counts its time against your "
                "daily GPU quota), or the CPU when you choose it.")
    return _local_device_note()


@functools.lru_cache(maxsize=1)
def _local_device_note() -> str:
    from ..train import default_device, describe_device

    return f"**Device:** {describe_device(default_device())}"


def history_frame(history: list[dict], mode: str | None = None) -> pd.DataFrame | None:
    """The plot's data: one row per epoch and metric; None when there is nothing to draw.

    Fine-tuning's warm-up (fastai trains the last layers alone first) is epoch 0, so that
    the epochs the person asked for are 1 to N. Gradio 6.31's LinePlot never draws lines
    again after it was given an empty frame (its column types are guessed from no data),
    so "nothing" is None.
    """
    shift = 1 if mode == "finetune" else 0
    rows = []
    for h in history:
        for key, name in (("train_loss", "training loss"), ("valid_loss", "validation loss"), ("accuracy", "accuracy")):
            if h.get(key) is not None:
                rows.append({"epoch": int(h["epoch"]) - shift, "value": float(h[key]), "metric": name})
    return pd.DataFrame(rows, columns=["epoch", "value", "metric"]) if rows else None


def run_history(ctx: UIContext, run_id: str | None) -> pd.DataFrame | None:
    """A recorded run's chart, so the plot is not empty after a restart."""
    if not run_id:
        return None
    rep = runs.read_json(ctx.project, run_id, "report.json") or {}
    return history_frame(list(rep.get("epochs") or []), runs.get_run(ctx.project, run_id).mode)


@dataclass
class RunView:
    """What the tab shows about one run."""

    text: str
    figure: object
    confusion: pd.DataFrame
    per_class: pd.DataFrame


def _kept_epoch(rep: dict, mode: str) -> str:
    best = rep.get("best_epoch")
    if mode == "finetune":
        return "the warm-up" if best == 1 else f"epoch {best - 1}"
    return f"epoch {best}"


def run_view(ctx: UIContext, run_id: str | None) -> RunView:
    """A run's details: how it did on its held-out pictures, its confusion matrix and per-class figures."""
    from ..train import confusion_figure

    empty = pd.DataFrame()
    if not run_id:
        return RunView("No finished run yet.", None, empty, empty)
    run = runs.get_run(ctx.project, run_id)
    name = runs.run_names(runs.list_runs(ctx.project)).get(run.id, run.name)
    active = runs.active_run(ctx.project)
    rep = runs.read_json(ctx.project, run_id, "report.json") or {}
    status = run.status + (", in use" if active and active.id == run.id else "")
    text = f"**{name}** ({status})"
    if rep.get("accuracy") is not None:
        text += (f": {pct(rep.get('accuracy'))} right on {rep.get('valid_items', '?')} held-out pictures "
                 f"(learned from {rep.get('train_items', '?')}), trained on {rep.get('device', '?')}"
                 + (f" in {duration(run.seconds)}" if run.seconds else "") + ".")
    else:
        text += "." + (f" {run.reason}." if run.reason else "")
    if run.mode == "quick" and "features_computed" in rep:
        n, total = rep["features_computed"], rep.get("train_items", 0) + rep.get("valid_items", 0)
        text += (f" Features computed for {n} of {total} pictures; the others came from the cache." if n < total
                 else f" Features computed for all {n} pictures (kept for the next quick run).")
        text += " The chart shows the last layer's training, one point per pass over the features."
    if run.mode == "finetune" and rep.get("epochs"):
        text += " In the chart, epoch 0 is the warm-up: fastai's fine-tuning trains the new last layers alone first."
    if rep.get("early_stopped"):
        text += " Stopped early: the validation loss no longer improved."
    if rep.get("restored_best") and rep.get("best_epoch"):
        text += f" Kept the weights of {_kept_epoch(rep, run.mode)}, which had the lowest validation loss."
    text += f"  \n<small>On the command line this run is `--run {run.id}`.</small>"
    conf = rep.get("confusion")
    cm = empty
    if conf:
        labels = conf["labels"]
        cm = pd.DataFrame(conf["matrix"], columns=list(labels))
        cm.insert(0, "actual \\ predicted", labels)
    pc = pd.DataFrame([{"class": k, "precision": pct(v["precision"]), "recall": pct(v["recall"]),
                        "pictures checked": v["support"]} for k, v in (rep.get("per_class") or {}).items()])
    return RunView(text, confusion_figure(rep) if conf else None, cm, pc)


def ending_text(ctx: UIContext, run: runs.Run) -> str:
    """How a run ended, in one or two sentences, with the run in use after it."""
    name = runs.run_names(runs.list_runs(ctx.project)).get(run.id, run.name)
    if run.status == "finished":
        text = f"{name} finished in {duration(run.seconds)}: {pct(run.accuracy)} right on its held-out pictures."
        text += " " + choice_text(ctx, run)
        if run.mode == "quick":
            text += " Full fine-tuning is now selected: press Train again to try for a better model."
        return text
    if run.status == "stopped":
        return f"{name} stopped. " + ("Its model is kept and can be chosen below." if run.has_model
                                      else "No model was kept; your pictures are unchanged.")
    if run.status == "failed":
        return f"{name} failed: {run.reason}"
    return f"{name} is {run.status}."


def choice_text(ctx: UIContext, run: runs.Run) -> str:
    """Whether a run that just finished is now the one Review and Classify use, and why (or why not)."""
    iu = in_use(ctx.project)
    if iu is None:
        return ""
    names = runs.run_names(runs.list_runs(ctx.project))
    compared = iu.pictures and iu.accuracy is not None and iu.other_accuracy is not None
    if iu.run.id == run.id:
        if iu.other is None:
            return "Review and Classify use it now."
        previous = names.get(iu.other.id, iu.other.name)
        if compared and round(iu.accuracy, 4) == round(iu.other_accuracy, 4):
            return (f"Review and Classify use it now: on the same {iu.pictures} held-out pictures it got as many "
                    f"right as the previous model ({previous}, {iu.other_accuracy:.0%}), and was surer of the "
                    f"right answers.")
        if compared:
            return (f"Review and Classify use it now: on the same {iu.pictures} held-out pictures it scored "
                    f"{iu.accuracy:.0%}, the previous model ({previous}) {iu.other_accuracy:.0%}.")
        return f"Review and Classify use it now ({iu.note})." if iu.note else "Review and Classify use it now."
    in_use_name = names.get(iu.run.id, iu.run.name)
    if iu.other is not None and iu.other.id == run.id and compared:
        score = (f"as many right, {iu.accuracy:.0%}, and surer of the right answers"
                 if round(iu.accuracy, 4) == round(iu.other_accuracy, 4)
                 else f"{iu.accuracy:.0%} against {iu.other_accuracy:.0%}")
        return (f"Not used: the model in use, {in_use_name}, did better on the same {iu.pictures} held-out "
                f"pictures ({score}). You can still choose the new one below.")
    if iu.other is not None and iu.other.id == run.id and iu.note:
        return f"Not used: {iu.note}. You can still choose it below."
    return f"Review and Classify use {in_use_name}; you can choose the new one below."


def latest_ending(ctx: UIContext) -> str:
    """The status line when nothing runs: how the latest run ended (never "running": see fail_abandoned_runs)."""
    all_runs = runs.list_runs(ctx.project)
    return ("Latest run: " + ending_text(ctx, all_runs[0])) if all_runs and all_runs[0].status != "running" else ""


# --- the tab ------------------------------------------------------------------------------
def create_train_tab(ctx: UIContext) -> dict:
    c: dict = {}
    gr.Markdown("Train a classifier on your pictures. **Quick** gives a first model in seconds; **full "
                "fine-tuning** then trains the whole network for a better one. Training runs in the background: "
                "you can keep working, come back or reload the page, and Stop ends it after the current batch.")
    c["mode"] = gr.Radio(MODES, value=default_mode(ctx), label="How", elem_id="train-mode")
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
                                    info="Passes over all the pictures, after a warm-up pass that trains only the "
                                         "new last layers.")
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
        # Shown when ZeroGPU lent no GPU (see follow): the same settings, on the CPU.
        c["cpu_train"] = gr.Button("Train on the CPU instead", visible=False, elem_id="train-cpu-button")
    # The one line of progress (no progress bar besides it), then how the run ended.
    c["status"] = gr.Markdown(elem_id="train-status")
    c["device"] = gr.Markdown(elem_id="train-device")
    # The chart, the runs and their details: hidden until there is a run (empty boxes before that).
    every_run = runs.list_runs(ctx.project) if ctx.access.everyone_owner else []
    has_runs, has_model = bool(every_run), any(r.has_model for r in every_run)
    with gr.Column(visible=has_runs, elem_id="train-results") as c["results"]:
        with gr.Column(visible=has_model, elem_id="train-chart-box") as c["chart_box"]:  # a run with a model
            c["plot"] = gr.LinePlot(None, x="epoch", y="value", color="metric", title="Loss and accuracy per epoch",
                                    height=260, x_axis_format="d", elem_id="train-plot")
        c["in_use"] = gr.Markdown(elem_id="train-in-use")
        # allow_custom_value: runs made after the app started are not in an API caller's choices;
        # set_active_run checks the id.
        c["use_run"] = gr.Dropdown(choices=[], value=None, label="Model used by Review and Classify",
                                   allow_custom_value=True, elem_id="use-run", visible=has_model)
        c["report"] = gr.Markdown(elem_id="train-report")
        with gr.Column(visible=has_model, elem_id="train-matrix-box") as c["matrix_box"]:  # the run shown has one
            with gr.Row(equal_height=False):
                c["confusion_plot"] = gr.Plot(label="Confusion matrix", elem_id="train-confusion-plot", format="png")
                # Plain HTML tables: every column shows at once (see adapters.html_table).
                c["per_class"] = gr.HTML(css_template=TABLE_CSS, js_on_load=None, elem_id="train-per-class")
            c["confusion"] = gr.HTML(css_template=TABLE_CSS, js_on_load=None, elem_id="train-confusion")
        # Filled when the tab opens; empty in the page where visitors may look (a failure's reason can name a file).
        c["runs"] = gr.Dataframe(value=runs_table(ctx) if ctx.access.everyone_owner else
                                 pd.DataFrame(columns=RUN_COLUMNS), label="Runs", interactive=False,
                                 elem_id="runs-table")
    c.update(create_export_panel(ctx))

    def details(run_id: str | None) -> dict:
        """The run in use (or the given run), the choice and the runs: everything but the progress."""
        v = run_view(ctx, run_id)
        choices, active = run_choices(ctx)
        running = current_job(ctx.project) is not None
        return {c["report"]: v.text, c["confusion_plot"]: v.figure,
                c["confusion"]: html_table(v.confusion, CONFUSION_TITLE),
                c["per_class"]: html_table(v.per_class, "Per class"), c["runs"]: runs_table(ctx),
                c["in_use"]: in_use_text(ctx),
                c["use_run"]: gr.Dropdown(choices=choices, value=active, visible=bool(choices)),
                c["results"]: gr.Column(visible=bool(runs.list_runs(ctx.project)) or running),
                c["chart_box"]: gr.Column(visible=bool(choices) or running),
                c["matrix_box"]: gr.Column(visible=v.figure is not None)}

    def follow(job, visitor: Visitor) -> Iterator[dict]:
        """Follow a job from its first event to its end; the last update shows how it ended.

        The person who started it sees its progress and chart; another visitor of a shared
        app only hears that the trainer is busy, and how far it got.
        """
        same = may_stop_training(job.owner, visitor, shared=ctx.shared)
        watch = JobWatch(job.title or "The training", kind=job.kind)
        session = visitor.session
        with ctx.lock:
            ctx.followers.add(session)
        try:
            first = True
            for new in job.follow(0.5):
                out: dict = {}
                for ev in new:
                    if watch.add(ev) and same and job.kind == "training":
                        out[c["plot"]] = history_frame(watch.history, watch.mode)
                    if ev.get("type") == "start":
                        out[c["runs"]] = runs_table(ctx)
                if first and same and job.kind == "training":
                    out[c["results"]] = out[c["chart_box"]] = gr.Column(visible=True)
                    if c["plot"] not in out:
                        out[c["plot"]] = history_frame(watch.history, watch.mode)
                if new or first:
                    status = watch.status
                    if job.stop_requested:
                        status = stopping_message(job)
                    out[c["status"]] = status if same else "The trainer is busy. " + status
                    if same and watch.device:
                        out[c["device"]] = f"**Device:** {watch.device}"
                first = False
                if out:
                    yield out
        finally:
            with ctx.lock:
                ctx.followers.discard(session)
        refused = getattr(job, "not_started", None)
        if refused is not None:  # ZeroGPU lent no GPU (or the trainer was taken): nothing ran, nothing recorded
            if not same:
                yield {c["status"]: "The trainer is free again."}
                return
            yield {c["status"]: str(refused), c["cpu_train"]: gr.Button(visible=isinstance(refused, GpuUnavailable))}
            return
        if job.kind == "lr-find":
            res = job.result() if same else {}
            if not same:
                yield {c["status"]: "The trainer is free again."}
            elif "lr" in res:
                lr = f"{res['lr']:.2g}"
                yield {c["lr"]: lr, c["device"]: f"**Device:** {watch.device}" if watch.device else device_note(),
                       c["status"]: f"Suggested learning rate: **{lr}** (fastai's lr_find, the 'valley' of the loss "
                                    f"curve). It is filled in above; full fine-tuning will use it."}
            else:
                yield {c["device"]: device_note(), c["status"]: (
                    "The learning-rate search was stopped; the learning rate is unchanged." if res.get("stopped")
                    else f"No learning rate was suggested: {res.get('error', 'the search ended without an answer')}")}
            return
        run = runs.get_run(ctx.project, job.job_id)
        active = runs.active_run(ctx.project)
        out = details(run.id if run.has_model else (active.id if active else None))  # the run that just ended
        out[c["status"]] = ending_text(ctx, run) if same else f"The trainer is free again. {ending_text(ctx, run)}"
        if same:  # another visitor's form is theirs: their choice of mode stays
            out[c["mode"]] = default_mode(ctx)
            out[c["device"]] = f"**Device:** {watch.device}" if watch.device else device_note()
            out[c["plot"]] = history_frame(watch.history, watch.mode) if watch.history else run_history(ctx, run.id)
        yield out

    def only(outputs: list, updates: Iterator[dict]) -> Iterator[dict]:
        keep = set(outputs)
        for u in updates:
            yield {k: v for k, v in u.items() if k in keep}

    train_outs = [c["status"], c["device"], c["plot"], c["report"], c["confusion_plot"], c["confusion"],
                  c["per_class"], c["runs"], c["use_run"], c["mode"], c["in_use"], c["cpu_train"], c["results"],
                  c["chart_box"], c["matrix_box"]]
    lr_outs = [c["status"], c["lr"], c["device"]]
    watch_outs = [*train_outs, c["lr"]]
    form_fields = ("mode", "arch", "size", "pretrained", "weights", "epochs", "lr", "patience")

    def _start(start, cfg_form: TrainForm, visitor: Visitor, *, cpu: bool = False):
        try:
            return start(ctx.project, cfg_form.to_config(ctx, cpu=cpu), owner=visitor)
        except (TrainerBusy, PreflightError) as e:  # not a fault: say it once, change nothing on the page
            raise InputError(str(e)) from None

    def _train(form: TrainForm, visitor: Visitor, *, cpu: bool) -> Iterator[dict]:
        job = _start(start_training, form, visitor, cpu=cpu)
        hide_cpu = {c["cpu_train"]: gr.Button(visible=False)}  # until ZeroGPU refuses this one too
        for out in only(train_outs, follow(job, visitor)):
            yield {**hide_cpu, **out}
            hide_cpu = {}

    @owner_only(ctx, "train models")
    def train(mode: str = QUICK, arch: str = config.DEFAULT_ARCH, size=config.DEFAULT_SIZE, pretrained: bool = True,
              weights: Optional[str] = None, epochs: int = config.DEFAULT_EPOCHS, lr: Optional[str] = None,
              patience: Optional[float] = 0, request: gr.Request = None):
        """Train with the form's settings: on ZeroGPU on a GPU lent for it, elsewhere on this computer's device."""
        form = TrainForm(mode, arch, size, pretrained, weights, epochs, lr, patience)
        yield from _train(form, ctx.visitor(request), cpu=False)

    @owner_only(ctx, "train models")
    def train_cpu(mode: str = QUICK, arch: str = config.DEFAULT_ARCH, size=config.DEFAULT_SIZE,
                  pretrained: bool = True, weights: Optional[str] = None, epochs: int = config.DEFAULT_EPOCHS,
                  lr: Optional[str] = None, patience: Optional[float] = 0, request: gr.Request = None):
        """The same, on the CPU (when ZeroGPU lends no GPU: the GPU time is used up)."""
        form = TrainForm(mode, arch, size, pretrained, weights, epochs, lr, patience)
        yield from _train(form, ctx.visitor(request), cpu=True)

    # Followers get their own queue slots (one training at a time is the trainer lock's job), so
    # that the rest of the app stays responsive and a second visitor hears "busy" at once. The status
    # line is the progress: no spinner or bar beside it.
    follow_opts = dict(concurrency_id="trainer", concurrency_limit=16, show_progress="hidden")
    c["train"].click(train, None, train_outs, inputs_kwargs={k: c[k] for k in form_fields}, api_name="train",
                     **follow_opts)
    c["cpu_train"].click(train_cpu, None, train_outs, inputs_kwargs={k: c[k] for k in form_fields},
                         api_name="train_cpu", **follow_opts)

    @owner_only(ctx, "search for a learning rate")
    def lr_find(arch: str = config.DEFAULT_ARCH, size=config.DEFAULT_SIZE, pretrained: bool = True,
                weights: Optional[str] = None, request: gr.Request = None):
        visitor = ctx.visitor(request)
        job = _start(start_lr_find, TrainForm(FULL, arch, size, pretrained, weights), visitor)
        yield from only(lr_outs, follow(job, visitor))

    c["lr_find"].click(lr_find, None, lr_outs, inputs_kwargs={k: c[k] for k in ("arch", "size", "pretrained", "weights")},
                       api_name="lr_find", **follow_opts)

    @owner_only(ctx, "follow trainings", quiet=True)
    def watch(request: gr.Request = None):
        """Follow the training that runs now, if this page does not follow it already (a reload, a second tab)."""
        visitor = ctx.visitor(request)
        job = current_job(ctx.project)
        if job is None or visitor.session in ctx.followers:
            yield {c["status"]: gr.skip()}  # nothing to do ({} would not read as "no change")
            return
        yield from only(watch_outs, follow(job, visitor))

    @owner_only(ctx, "stop trainings")
    def stop(request: gr.Request = None):
        return request_stop(ctx.project, ctx.visitor(request), shared=ctx.shared).message

    c["stop"].click(stop, None, [c["status"]], api_name="stop", queue=False)

    # Quick mode needs weights worth their features: unticking "Pretrained weights" switches to full
    # fine-tuning, choosing Quick ticks it again; either way the note says why.
    @owner_only(ctx, "change the training settings")
    def on_pretrained(pretrained, mode, weights):
        if not pretrained and not weights and mode == QUICK:
            return (FULL, QUICK_NEEDS_WEIGHTS + " Switched to **full fine-tuning**, which trains the whole network "
                    "from scratch (slower, and it needs more pictures).", gr.Accordion(open=True))
        return gr.skip(), "", gr.skip()

    c["pretrained"].input(on_pretrained, [c["pretrained"], c["mode"], c["weights"]],
                          [c["mode"], c["mode_note"], c["full_options"]], api_visibility="private")

    @owner_only(ctx, "change the training settings")
    def on_mode(mode, pretrained, weights):
        opened = gr.Accordion(open=mode == FULL)
        if mode == QUICK and not pretrained and not weights:
            return True, QUICK_NEEDS_WEIGHTS + " 'Pretrained weights' is ticked again.", opened
        return gr.skip(), "", opened

    c["mode"].input(on_mode, [c["mode"], c["pretrained"], c["weights"]],
                    [c["pretrained"], c["mode_note"], c["full_options"]], api_visibility="private")

    use_outs = [c["report"], c["plot"], c["confusion_plot"], c["confusion"], c["per_class"], c["runs"], c["in_use"],
                c["matrix_box"]]

    @owner_only(ctx, "choose the model in use")
    def use_run(run_id):
        if run_id:
            runs.set_active_run(ctx.project, run_id)
        out = details(run_id)
        out[c["plot"]] = run_history(ctx, run_id)
        return {k: v for k, v in out.items() if k in use_outs}

    c["use_run"].input(use_run, [c["use_run"]], use_outs, api_name="use_run")

    refresh_outs = [c["status"], c["device"], c["plot"], c["report"], c["confusion_plot"], c["confusion"],
                    c["per_class"], c["runs"], c["use_run"], c["in_use"], c["results"], c["chart_box"], c["matrix_box"]]

    @owner_only(ctx, "see the runs", quiet=True)
    def refresh():
        """The tab as the project is now. While a training runs, its follower (next) owns the status and chart."""
        fail_abandoned_runs(ctx.project)
        active = runs.active_run(ctx.project)
        out = details(active.id if active else None)
        out[c["device"]] = device_note()
        if current_job(ctx.project) is None:
            out[c["status"]] = latest_ending(ctx)
            out[c["plot"]] = run_history(ctx, active.id if active else None)
        return out

    @owner_only(ctx, "see the runs", quiet=True)
    def mode_now():
        """The mode a fresh page proposes: quick until a run finished, then full fine-tuning."""
        return default_mode(ctx)

    c["on_select"] = (refresh, [], refresh_outs)
    c["select_opts"] = dict(show_progress="hidden")  # quick; no loading boxes over the chart and tables
    c["on_load"] = (mode_now, [], [c["mode"]])
    c["then"] = (watch, [], watch_outs, follow_opts)
    c.update(create_share_panel(ctx))
    return c
