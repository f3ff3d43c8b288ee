"""Tab 4: drop pictures, see the top predictions with their confidence."""

from __future__ import annotations

import gradio as gr

from .. import runs
from ..predict import predict_files
from .adapters import UIContext, handler, upload_paths


def model_note(ctx: UIContext) -> str:
    run = runs.active_run(ctx.project)
    if run is None:
        return "No model yet: train one in the Train tab first."
    acc = run.accuracy
    return (f"Using {run.name}" + (f", {acc:.0%} right on its held-out pictures." if acc is not None else ".")
            + " The Train tab says why this model and lets you choose another.")


def prediction_label(shown: str, index: int, total: int) -> str:
    """The Prediction box's title: which picture it shows, and how to see another."""
    if total <= 1:
        return f"Prediction for {shown}"
    return f"Prediction for {shown} ({index + 1} of {total}; click another picture below to see its prediction)"


def create_classify_tab(ctx: UIContext) -> dict:
    c: dict = {}
    c["note"] = gr.Markdown(model_note(ctx), elem_id="classify-note")
    with gr.Row():
        with gr.Column(scale=1):
            c["files"] = gr.File(file_count="multiple", file_types=["image"], label="Drop pictures here",
                                 elem_id="classify-files")
        with gr.Column(scale=1):
            c["label"] = gr.Label(num_top_classes=3, label="Prediction", elem_id="classify-label")
    c["predictions"] = gr.State([])
    # fit_columns=False: two pictures stay two small ones (not each half the page wide, captions out of sight).
    c["gallery"] = gr.Gallery(label="All pictures: click one to see its prediction above", columns=6, height="auto",
                              fit_columns=False, allow_preview=False, elem_id="classify-gallery")
    c["errors"] = gr.Markdown(elem_id="classify-errors")

    @handler
    def classify(files):
        paths, names = upload_paths(files)
        if not paths:
            return model_note(ctx), gr.Label(value=None, label="Prediction"), [], [], ""
        preds = predict_files(ctx.project, paths, names=names)
        gallery, errors, good = [], [], []
        for path, p in zip(paths, preds):
            if p.error:
                errors.append(f"- `{p.file}`: {p.error}")
                continue
            good.append(p.to_dict())
            gallery.append((path, f"{p.file}: {p.label} {p.confidence:.0%}"))
        err = ("Not classified:\n" + "\n".join(errors)) if errors else ""
        if not good:
            return model_note(ctx), gr.Label(value=None, label="Prediction"), [], [], err
        first = good[0]
        return (model_note(ctx), gr.Label(value=first["probs"], label=prediction_label(first["file"], 0, len(good))),
                good, gallery, err)

    c["files"].change(classify, [c["files"]], [c["note"], c["label"], c["predictions"], c["gallery"], c["errors"]],
                      api_name="classify")

    def select(preds, evt: gr.SelectData):
        if preds and evt.index is not None and evt.index < len(preds):
            p = preds[evt.index]
            return gr.Label(value=p["probs"], label=prediction_label(p["file"], evt.index, len(preds)))
        return gr.skip()

    c["gallery"].select(select, [c["predictions"]], [c["label"]], api_visibility="private")
    c["on_select"] = (lambda: model_note(ctx), [], [c["note"]])
    return c
