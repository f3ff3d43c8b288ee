"""Classify tab, the picture shown: why the model said so (a heatmap), and add it to the dataset.

Wiring only: the heatmap is :func:`tl_app.explain.explain`, adding is
:func:`tl_app.classify.add_to_dataset` (one undoable action; owners only, checked in
the handler). The picture travels as a file component's value, so Gradio accepts
only files it served or received (never an arbitrary server path).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from ..classify import add_to_dataset
from ..errors import InputError, ItemNotFound, NothingToUndo
from ..explain import explain
from ..predict import Prediction
from .adapters import UIContext, for_anyone, owner_only

ADD_INFO = ("The model's answer is chosen. Choose another class, or type a new class name (for a picture of "
            "none of your classes). Undo takes it out again.")


def _path_of(item) -> str | None:
    """The file path of a gallery item as Gradio hands it to a handler ((path, caption) or a path)."""
    if isinstance(item, (list, tuple)) and item:
        item = item[0]
    if isinstance(item, dict):
        item = (item.get("image") or item).get("path")
    return str(item) if item else None


def picture_choice(ctx: UIContext, preds: list[dict], gallery, index: int):
    """The outputs that make picture ``index`` the one the actions below act on."""
    if not preds or gallery is None or index is None or index >= len(preds) or index >= len(gallery):
        return (gr.Column(visible=False), None, "", None, gr.Dropdown(choices=ctx.project.labels(), value=None),
                gr.Image(value=None, visible=False), "", "")
    return chosen_picture(ctx, preds[index], _path_of(gallery[index]))


def chosen_picture(ctx: UIContext, p: dict, path: str):
    """The outputs that make the picture at ``path``, with prediction ``p``, the one the actions act on."""
    guess = None if p.get("unknown") else p.get("label")
    return (gr.Column(visible=True), path, p["file"], p,
            gr.Dropdown(choices=ctx.project.labels(), value=guess, info=ADD_INFO),
            gr.Image(value=None, visible=False), "", f"**{p['file']}**: why, and add it to the dataset")


def create_picture_actions(ctx: UIContext, c: dict) -> dict:
    """The "Why?" button and heatmap, and "Add to the dataset as" with Undo, under the Prediction box.

    ``c`` holds the Classify tab's components and its events ``classified`` (pictures dropped)
    and ``picked`` (a picture clicked in the gallery); the actions follow the picture shown.
    """
    a: dict = {}
    owner_view = ctx.access.everyone_owner
    with gr.Column(visible=False, elem_id="picture-actions") as a["box"]:
        a["title"] = gr.Markdown("**The picture shown above**", elem_id="picture-title")
        with gr.Row():
            a["why"] = gr.Button("Why? Show where the model looked", elem_id="classify-why", scale=0, min_width=280)
        a["heat"] = gr.Image(label="Where the model looked", type="pil", format="png", interactive=False, visible=False,
                             height=360, elem_id="classify-heatmap")
        with gr.Row(visible=owner_view, equal_height=False) as a["add_row"]:
            a["add_as"] = gr.Dropdown(choices=ctx.project.labels(), value=None, allow_custom_value=True,
                                      label="Add this picture to the dataset as", info=ADD_INFO, scale=3,
                                      elem_id="classify-add-as")
            a["add"] = gr.Button("Add to dataset", variant="primary", scale=1, min_width=140, elem_id="classify-add")
            a["undo"] = gr.Button("Undo", scale=0, min_width=90, elem_id="classify-undo")
        a["note"] = gr.Markdown(elem_id="classify-add-note")
    # The picture the actions act on: a copy Gradio serves, its name, and what the model said of it.
    a["picked"] = gr.File(visible=False, elem_id="classify-picked")
    a["picked_name"] = gr.Textbox(visible=False)
    a["picked_pred"] = gr.State(None)
    chosen = [a["box"], a["picked"], a["picked_name"], a["picked_pred"], a["add_as"], a["heat"], a["note"], a["title"]]
    a["chosen"] = chosen

    @for_anyone
    def show_first(preds, gallery):
        return picture_choice(ctx, preds or [], gallery, 0)

    c["classified"].then(show_first, [c["predictions"], c["gallery"]], chosen, api_visibility="private")

    @for_anyone
    def show_picked(preds, gallery, evt: gr.SelectData):
        return picture_choice(ctx, preds or [], gallery, evt.index)

    c["gallery"].select(show_picked, [c["predictions"], c["gallery"]], chosen, api_visibility="private")

    @for_anyone
    def why(picture, name: str = "", request: gr.Request = None):
        if not picture:
            raise InputError("Drop a picture first: the heatmap shows where the model looked in it.")
        ctx.count_classified(ctx.visitor(request))
        e = explain(ctx.project, Path(str(picture)))
        shown = name or Path(str(picture)).name
        return gr.Image(value=e.overlay, visible=True,
                        label=f"Where the model looked to say “{e.label}” ({e.confidence:.0%}) in {shown}: "
                              "red counted most, blue least")

    a["why"].click(why, [a["picked"], a["picked_name"]], [a["heat"]], api_name="explain")

    @owner_only(ctx, "add pictures to the dataset")
    def add(picture, name: str, label: str, pred: dict | None = None):
        if not picture:
            raise InputError("Drop a picture first, then add it to the dataset.")
        name = (name or "").strip() or Path(str(picture)).name
        known = Prediction(**{k: pred[k] for k in ("file", "label", "confidence", "probs") if k in pred}) \
            if isinstance(pred, dict) and pred.get("file") else None
        if known is not None and isinstance(pred, dict) and pred.get("unknown") is not None:
            known.unknown = pred.get("unknown")  # after the none-of-these score exists
        new = not ctx.project.find_label(label or "")
        act = add_to_dataset(ctx.project, Path(str(picture)), label, name=name, prediction=known)
        stored = act.items[0]["label"] if act.items else label
        text = f"Added {name} to '{stored}'" + (" (a new class)" if new else "") + \
            ". Undo takes it out again; retrain in the Train tab to teach the model."
        return text, gr.Dropdown(choices=ctx.project.labels(), value=stored)

    a["add"].click(add, [a["picked"], a["picked_name"], a["add_as"], a["picked_pred"]], [a["note"], a["add_as"]],
                   api_name="add_to_dataset")

    @owner_only(ctx, "undo changes")
    def undo():
        try:
            act = ctx.project.undo()
        except (NothingToUndo, ItemNotFound) as e:
            return str(e), gr.Dropdown(choices=ctx.project.labels())
        return f"Undone: {act.summary}.", gr.Dropdown(choices=ctx.project.labels())

    a["undo"].click(undo, [], [a["note"], a["add_as"]], api_name="undo_add")

    if not owner_view:
        @owner_only(ctx, "add pictures to the dataset", quiet=True)
        def show_add_row():
            """Owners see "Add to the dataset" (a visitor's page never does)."""
            return gr.Row(visible=True)

        a["on_load"] = (show_add_row, [], [a["add_row"]])
    return a

