"""Tab 2: the images most likely to be wrong; delete, relabel or keep them, with undo and redo."""

from __future__ import annotations

import gradio as gr

from .. import review, runs
from ..errors import RunNotFound
from .adapters import UIContext, handler, pct

ALL = "All classes"
SHOWN = 48


def _caption(r: review.ReviewRow) -> str:
    if r.predicted == r.label:
        return f"{r.label} ✓ {pct(r.confidence)}"
    return f"{r.label} → {r.predicted}? {pct(r.confidence)}"


def load_rows(ctx: UIContext, label: str | None) -> tuple[list[dict], str]:
    try:
        rows = review.rank(ctx.project, top=SHOWN, label=None if label in (None, "", ALL) else label)
    except RunNotFound as e:
        return [], str(e)
    run = runs.active_run(ctx.project)
    note = (f"Ranked with run {run.id}: the pictures whose class the model doubts most come first. "
            "Click a picture to see it, then delete it, move it to another class, or keep it.")
    return [r.to_dict() for r in rows], note


def _details(row: dict | None) -> str:
    if not row:
        return "Click a picture to act on it."
    src = row["source"] or "unknown"
    return (f"**Item** `{row['item']}`  \n**Class:** {row['label']}  \n"
            f"**Model says:** {row['predicted']} ({pct(row['confidence'])})  \n"
            f"**Loss:** {row['loss']:.3f}  \n**From:** {src}")


def create_review_tab(ctx: UIContext) -> dict:
    c: dict = {}
    c["note"] = gr.Markdown("Train a model first; then the pictures most likely to be wrong appear here.",
                            elem_id="review-note")
    # Choices are fixed when the app is built and refreshed per visitor when the tab opens; an API
    # caller never opens the tab, so the dropdowns accept any value and the handlers check it.
    with gr.Row():
        c["filter"] = gr.Dropdown(choices=[ALL, *ctx.project.labels()], value=ALL, label="Class", scale=2,
                                  allow_custom_value=True, elem_id="review-filter")
        c["refresh"] = gr.Button("Refresh", scale=1, elem_id="review-refresh")
    c["rows"] = gr.State([])
    # The chosen item's id, kept in a hidden textbox rather than a State so that the
    # delete/relabel/keep endpoints take it as a parameter (the API has no gallery to click).
    # Ids are opaque and checked by the project, whoever sends them.
    c["selected"] = gr.Textbox(visible=False, label="Item", elem_id="review-selected")
    with gr.Row():
        with gr.Column(scale=3):
            c["gallery"] = gr.Gallery(label="Most suspicious first", columns=5, height="auto", allow_preview=False,
                                      elem_id="review-gallery")
        with gr.Column(scale=1):
            c["details"] = gr.Markdown(_details(None), elem_id="review-details")
            c["delete"] = gr.Button("Delete (to trash)", variant="stop", elem_id="review-delete")
            with gr.Row():
                c["move_to"] = gr.Dropdown(choices=ctx.project.labels(), label="Move to class", scale=2,
                                           allow_custom_value=True, elem_id="review-move-to")
                c["move"] = gr.Button("Move", scale=1, elem_id="review-move")
            c["keep"] = gr.Button("Keep (it is right)", elem_id="review-keep")
            with gr.Row():
                c["undo"] = gr.Button("Undo", elem_id="review-undo")
                c["redo"] = gr.Button("Redo", elem_id="review-redo")
            c["status"] = gr.Markdown(elem_id="review-status")

    def view(label, status=""):
        rows, note = load_rows(ctx, label)
        gallery = [(str(ctx.project.thumbnail(ctx.project.item(r["item"]))), _caption(review.ReviewRow(**r)))
                   for r in rows]
        labels = ctx.project.labels()
        return (note, rows, None, gallery, _details(None), gr.Dropdown(choices=[ALL, *labels]),
                gr.Dropdown(choices=labels), status)

    outs = [c["note"], c["rows"], c["selected"], c["gallery"], c["details"], c["filter"], c["move_to"], c["status"]]

    @handler
    def refresh(label):
        return view(label)

    c["refresh"].click(refresh, [c["filter"]], outs, api_name="review")
    c["filter"].input(refresh, [c["filter"]], outs, api_visibility="private")

    def select(rows, evt: gr.SelectData):
        row = rows[evt.index] if rows and evt.index is not None and evt.index < len(rows) else None
        return (row["item"] if row else None), _details(row), gr.Dropdown(value=row["predicted"] if row else None)

    c["gallery"].select(select, [c["rows"]], [c["selected"], c["details"], c["move_to"]], api_visibility="private")

    def _need(item):
        if not item:
            raise gr.Error("Click a picture first.")
        return item

    @handler
    def delete(item, label):
        a = ctx.project.delete([_need(item)])
        return view(label, f"{a.summary.capitalize()}. Undo brings it back.")

    @handler
    def move(item, to, label):
        if not to:
            raise gr.Error("Choose the class to move the picture to.")
        a = ctx.project.relabel([_need(item)], to)
        return view(label, a.summary.capitalize() + ".")

    @handler
    def keep(item, label):
        a = ctx.project.keep([_need(item)])
        return view(label, a.summary.capitalize() + "; it will not be shown again.")

    @handler
    def undo(label):
        a = ctx.project.undo()
        return view(label, f"Undone: {a.summary}.")

    @handler
    def redo(label):
        a = ctx.project.redo()
        return view(label, f"Redone: {a.summary}.")

    c["delete"].click(delete, [c["selected"], c["filter"]], outs, api_name="delete")
    c["move"].click(move, [c["selected"], c["move_to"], c["filter"]], outs, api_name="relabel")
    c["keep"].click(keep, [c["selected"], c["filter"]], outs, api_name="keep")
    c["undo"].click(undo, [c["filter"]], outs, api_name="undo")
    c["redo"].click(redo, [c["filter"]], outs, api_name="redo")
    c["on_select"] = (refresh, [c["filter"]], outs)
    return c
