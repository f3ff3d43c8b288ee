"""Tab 3: train in a separate process with live progress and a Stop that works; runs and their metrics."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from .. import config, runs
from ..models import list_archs
from ..runner import start_training, trainer_holder
from ..train import TrainConfig, busy_message
from .adapters import UIContext, handler, pct

SIZES = [128, 160, 192, 224, 256, 320]


def runs_table(ctx: UIContext) -> pd.DataFrame:
    rows = []
    active = runs.active_run(ctx.project)
    for r in runs.list_runs(ctx.project):
        rows.append({"Run": r.id, "Status": r.status + (" (in use)" if active and r.id == active.id else ""),
                     "Mode": r.mode, "Network": r.arch, "Accuracy": pct(r.metrics.get("accuracy")),
                     "Seconds": None if r.seconds is None else round(r.seconds, 1),
                     "Started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
                     "Note": r.reason})
    cols = ["Run", "Status", "Mode", "Network", "Accuracy", "Seconds", "Started", "Note"]
    return pd.DataFrame(rows, columns=cols)


def run_choices(ctx: UIContext) -> tuple[list[str], str | None]:
    choices = [r.id for r in runs.list_runs(ctx.project) if r.has_model]
    active = runs.active_run(ctx.project)
    return choices, active.id if active else None


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


def report_parts(ctx: UIContext, run_id: str | None) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    empty = pd.DataFrame()
    if not run_id:
        return "No finished run yet.", empty, empty
    run = runs.get_run(ctx.project, run_id)
    rep = runs.read_json(ctx.project, run_id, "report.json") or {}
    text = (f"**Run {run.id}**: {run.status}, {run.arch}, {run.mode}; accuracy on the held-out pictures "
            f"**{pct(rep.get('accuracy'))}** ({rep.get('valid_items', '?')} checked, "
            f"{rep.get('train_items', '?')} learned from), trained on {rep.get('device', '?')}.")
    conf = rep.get("confusion")
    cm = empty
    if conf:
        labels = conf["labels"]
        cm = pd.DataFrame(conf["matrix"], columns=[f"predicted {x}" for x in labels])
        cm.insert(0, "actual", labels)
    pc = pd.DataFrame([{"class": k, "precision": pct(v["precision"]), "recall": pct(v["recall"]),
                        "pictures checked": v["support"]} for k, v in (rep.get("per_class") or {}).items()])
    return text, cm, pc


def _pixels(size) -> int:
    try:
        return int(str(size).strip())
    except ValueError:
        raise gr.Error(f"The image size must be a whole number of pixels, such as 224 (not '{size}').") from None


def run_history(ctx: UIContext, run_id: str | None) -> list[dict]:
    """The per-epoch values a finished run recorded, so the plot is not empty after a restart."""
    if not run_id:
        return []
    rep = runs.read_json(ctx.project, run_id, "report.json") or {}
    return list(rep.get("epochs") or [])


def create_train_tab(ctx: UIContext) -> dict:
    c: dict = {}
    gr.Markdown("Train a classifier on your pictures. Training runs in the background: you can keep working, "
                "and Stop ends it after the current batch.")
    with gr.Row():
        c["arch"] = gr.Dropdown(choices=list_archs(), value=config.DEFAULT_ARCH, label="Network", elem_id="train-arch")
        c["epochs"] = gr.Slider(1, 20, value=config.DEFAULT_EPOCHS, step=1, label="Epochs", elem_id="train-epochs")
        c["size"] = gr.Dropdown(choices=SIZES, value=config.DEFAULT_SIZE, label="Image size (pixels)",
                                allow_custom_value=True, elem_id="train-size",
                                info="Smaller is faster; you may type another size (32 to 1024).")
        c["pretrained"] = gr.Checkbox(value=True, label="Pretrained weights", elem_id="train-pretrained",
                                      info="Start from a network trained on ImageNet (recommended).")
    with gr.Row():
        c["train"] = gr.Button("Train", variant="primary", elem_id="train-button")
        c["stop"] = gr.Button("Stop", variant="stop", elem_id="stop-button")
    c["my_run"] = gr.State(None)
    c["status"] = gr.Markdown(elem_id="train-status")
    c["plot"] = gr.LinePlot(None, x="epoch", y="value", color="metric", title="Loss and accuracy per epoch",
                            height=260, elem_id="train-plot")
    c["report"] = gr.Markdown(elem_id="train-report")
    with gr.Row():
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

    def final_outputs(my_run, status, history):
        choices, active = run_choices(ctx)
        text, cm, pc = report_parts(ctx, active)
        return (my_run, status, history_frame(history), text, cm, pc, runs_table(ctx),
                gr.Dropdown(choices=choices, value=active))

    outs = [c["my_run"], c["status"], c["plot"], c["report"], c["confusion"], c["per_class"], c["runs"], c["use_run"]]

    @handler
    def train(arch, epochs, size, pretrained, progress=gr.Progress()):
        cfg = TrainConfig(arch=arch, epochs=int(epochs), size=_pixels(size), pretrained=bool(pretrained))
        tp = start_training(ctx.project, cfg)
        ctx.jobs[tp.run_id] = tp
        history: list[dict] = []
        status = f"Training run {tp.run_id}: starting…"
        yield (tp.run_id, status, history_frame(history), gr.skip(), gr.skip(), gr.skip(), runs_table(ctx), gr.skip())
        try:
            for new in tp.follow(0.5):
                changed = False
                for ev in new:
                    kind = ev.get("type")
                    if kind == "batch":
                        eta = ev.get("eta")
                        progress((ev["done"], ev["total"]),
                                 desc=f"Epoch {ev['epoch'] + 1} of {ev['epochs']}" + (f", about {eta:.0f} s left" if eta else ""))
                    elif kind == "epoch":
                        history.append(ev)
                        acc = ev.get("accuracy")
                        status = (f"Training run {tp.run_id}: epoch {ev['epoch']} done, accuracy {pct(acc)}.")
                        changed = True
                    elif kind == "phase":
                        phase = ev.get("phase")
                        if phase == "device":
                            status = f"Training run {tp.run_id} on {ev['device']}…"
                            changed = True
                        elif phase in ("loading", "scoring", "features"):
                            progress((ev["done"], ev["total"]),
                                     desc={"loading": "Reading pictures", "scoring": "Scoring every picture for Review",
                                           "features": "Computing features"}[phase])
                    if tp.stop_requested and kind == "batch":
                        status = f"Stopping run {tp.run_id}…"
                if changed:
                    yield (tp.run_id, status, history_frame(history), gr.skip(), gr.skip(), gr.skip(), gr.skip(),
                           gr.skip())
        finally:
            ctx.jobs.pop(tp.run_id, None)
        run = tp.result()
        if run.status == "finished":
            status = f"Run {run.id} finished in {run.seconds:.0f} s: accuracy {pct(run.metrics.get('accuracy'))}."
        elif run.status == "stopped":
            status = f"Run {run.id} stopped. " + ("Its model is kept and can be chosen below." if run.has_model
                                                   else "No model was kept; your pictures are unchanged.")
        else:
            status = f"Run {run.id} failed: {run.reason}"
        yield final_outputs(None, status, history)

    c["train"].click(train, [c["arch"], c["epochs"], c["size"], c["pretrained"]], outs, api_name="train",
                     show_progress_on=[c["status"]])

    @handler
    def stop(my_run):
        tp = ctx.jobs.get(my_run) if my_run else None
        if tp is None:
            holder = trainer_holder(ctx.project)
            if holder:
                return busy_message(holder) + " Only the person who started it can stop it."
            return "Nothing is training."
        tp.stop()
        return f"Stopping run {tp.run_id} after the current batch…"

    c["stop"].click(stop, [c["my_run"]], [c["status"]], api_name="stop", queue=False)

    @handler
    def use_run(run_id):
        if run_id:
            runs.set_active_run(ctx.project, run_id)
        text, cm, pc = report_parts(ctx, run_id)
        return text, history_frame(run_history(ctx, run_id)), cm, pc, runs_table(ctx)

    c["use_run"].input(use_run, [c["use_run"]], [c["report"], c["plot"], c["confusion"], c["per_class"], c["runs"]],
                       api_name="use_run")

    @handler
    def refresh(my_run):
        choices, active = run_choices(ctx)
        text, cm, pc = report_parts(ctx, active)
        holder = trainer_holder(ctx.project)
        mine = bool(my_run and my_run in ctx.jobs)
        status = busy_message(holder) if holder and not mine else gr.skip()
        # While this visitor's training runs, its generator owns the plot.
        plot = gr.skip() if mine else history_frame(run_history(ctx, active))
        return status, plot, text, cm, pc, runs_table(ctx), gr.Dropdown(choices=choices, value=active)

    c["on_select"] = (refresh, [c["my_run"]],
                      [c["status"], c["plot"], c["report"], c["confusion"], c["per_class"], c["runs"], c["use_run"]])
    return c
