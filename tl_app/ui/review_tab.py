"""Tab 2: the pictures most likely to be wrong; select some, then delete, relabel or keep them, with undo.

Wiring only: the queue comes from :func:`tl_app.review.queue`, actions go through
the project (every one undoable) and Retrain through the same training process
as the Train tab.
"""

from __future__ import annotations

import dataclasses

import gradio as gr
import pandas as pd

from .. import review, runs
from ..runner import start_training
from ..train import TrainConfig
from ..errors import InputError
from .adapters import UIContext, handler, pct

ALL = "All classes"
EVERY_REASON = "Every reason"
#: Reason filter choices: (what a person reads, the core's reason).
REASON_CHOICES = [(EVERY_REASON, ""), ("Wrong class?", "label"), ("Duplicates", "duplicate"),
                  ("Outliers", "outlier"), ("Poor pictures", "quality")]
SHOWN = 48
TICK = "☑ "

#: Keyboard shortcuts of the Review tab: key -> button elem_id (active while the tab is shown and
#: the focus is not in a text field). Read by app.py for the page's <head>.
SHORTCUTS = {"d": "review-delete", "p": "review-accept", "k": "review-keep", "a": "review-select-all",
             "escape": "review-clear", "u": "review-undo", "z": "review-undo", "y": "review-redo"}
SHORTCUT_HELP = ("Keys: **A** select all shown · **Esc** clear · **D** delete · **P** move to the prediction · "
                 "**K** keep · **U**/**Z** undo · **Y** redo")


def _cell_value(cell: str | None) -> tuple[str, str] | None:
    """A confusion-matrix cell kept as "actual → predicted" in a hidden textbox."""
    if not cell or " → " not in cell:
        return None
    actual, predicted = cell.split(" → ", 1)
    return actual, predicted


def _ids(selected: str | None) -> list[str]:
    return [s for s in (selected or "").replace(" ", "").split(",") if s]


def _caption(r: dict, selected: set[str]) -> str:
    tick = TICK if r["item"] in selected else ""
    if r["reason"] == "label":
        if r["predicted"] == r["label"]:
            return f"{tick}{r['label']} ✓ {pct(r['confidence'])}"
        if not r.get("flagged", True):  # weak evidence: the app does not claim another class
            return f"{tick}{r['label']} · unsure"
        return f"{tick}{r['label']} → {r['predicted']}? {pct(r['confidence'])}"
    return f"{tick}{r['label']} · {review.REASON_NAMES[r['reason']]}"


def _details(rows: list[dict], selected: list[str], last: str | None) -> str:
    if not selected:
        return "Click pictures to select them (click again to unselect)."
    by = {r["item"]: r for r in rows}
    row = by.get(last) if last in selected else by.get(selected[-1])
    head = f"**{len(selected)} selected.**  \n" if len(selected) > 1 else ""
    if row is None:
        return head
    guess = f"{row['predicted']} ({pct(row['confidence'])})" if row["predicted"] else "–"
    return (f"{head}**Item** `{row['item']}`  \n**Class:** {row['label']}  \n**Model says:** {guess}  \n"
            f"**Why:** {review.REASON_NAMES[row['reason']]}: {row['detail']}  \n"
            f"**From:** {row['source'] or 'unknown'}")


def _matrix(q: review.Queue) -> pd.DataFrame:
    if not q.labels:
        return pd.DataFrame()
    df = pd.DataFrame(q.matrix, columns=[f"→ {x}" for x in q.labels])
    df.insert(0, "class \\ looks like", q.labels)
    return df


def create_review_tab(ctx: UIContext) -> dict:
    c: dict = {}
    c["note"] = gr.Markdown("Train a model first; then the pictures most likely to be wrong appear here.",
                            elem_id="review-note")
    # Choices are fixed when the app is built and refreshed per visitor when the tab opens; an API
    # caller never opens the tab, so the dropdowns accept any value and the handlers check it.
    with gr.Row():
        c["filter"] = gr.Dropdown(choices=[ALL, *ctx.project.labels()], value=ALL, label="Class", scale=2,
                                  allow_custom_value=True, elem_id="review-filter")
        c["reason"] = gr.Dropdown(choices=REASON_CHOICES, value="", label="Reason", scale=2,
                                  elem_id="review-reason")
        c["refresh"] = gr.Button("Refresh", scale=1, elem_id="review-refresh")
        c["retrain"] = gr.Button("Retrain", scale=1, variant="primary", elem_id="review-retrain")
        c["retrain_stop"] = gr.Button("Stop training", scale=1, variant="stop", visible=False,
                                      elem_id="review-retrain-stop")
    c["rows"] = gr.State([])
    c["last"] = gr.State(None)
    c["job"] = gr.State(None)
    # The chosen items' ids ("id,id,...") and the confusion cell ("actual → predicted") live in hidden
    # textboxes rather than States so that the endpoints take them as parameters (the API has no
    # gallery to click). Ids are opaque and checked by the project, whoever sends them.
    c["selected"] = gr.Textbox(visible=False, label="Items", elem_id="review-selected")
    c["cell"] = gr.Textbox(visible=False, label="Cell", elem_id="review-cell")
    with gr.Row():
        with gr.Column(scale=3):
            c["gallery"] = gr.Gallery(label="Most suspicious first", columns=6, height="auto", allow_preview=False,
                                      elem_id="review-gallery")
            gr.Markdown(SHORTCUT_HELP, elem_id="review-keys")
        with gr.Column(scale=1):
            c["details"] = gr.Markdown(_details([], [], None), elem_id="review-details")
            with gr.Row():
                c["select_all"] = gr.Button("Select all shown", size="sm", elem_id="review-select-all")
                c["clear"] = gr.Button("Clear selection", size="sm", elem_id="review-clear")
            c["delete"] = gr.Button("Delete (to trash)", variant="stop", elem_id="review-delete")
            c["accept"] = gr.Button("Move to the model's class", elem_id="review-accept")
            with gr.Row():
                c["move_to"] = gr.Dropdown(choices=ctx.project.labels(), label="Move to class", scale=2,
                                           allow_custom_value=True, elem_id="review-move-to")
                c["move"] = gr.Button("Move", scale=1, elem_id="review-move")
            c["keep"] = gr.Button("Keep (it is right)", elem_id="review-keep")
            with gr.Row():
                c["undo"] = gr.Button("Undo", elem_id="review-undo")
                c["redo"] = gr.Button("Redo", elem_id="review-redo")
            c["status"] = gr.Markdown(elem_id="review-status")
    with gr.Accordion("Confusion matrix: click a cell to see its pictures", open=False):
        c["matrix"] = gr.Dataframe(label="Class (rows) against what the pictures look like (columns), every picture",
                                   interactive=False, elem_id="review-matrix")
        c["cell_note"] = gr.Markdown(elem_id="review-cell-note")

    def _gallery(rows: list[dict], selected: set[str]):
        by_id = {it.id: it for it in ctx.project.items()}
        return [(str(ctx.project.thumbnail(by_id[r["item"]])), _caption(r, selected))
                for r in rows if r["item"] in by_id]

    def view(label, reason, cell, status=""):
        """Everything the tab shows, recomputed: after any action the queue is current."""
        cls = None if label in (None, "", ALL) else label
        q = review.queue(ctx.project, label=cls, reason=reason or None, cell=_cell_value(cell), top=SHOWN)
        rows = [r.to_dict() for r in q.rows]
        if q.run is None:
            note = ("No trained model yet: showing duplicates and poor pictures only. Train a model to find "
                    "pictures in the wrong class.") if rows else \
                "Train a model first; then the pictures most likely to be wrong appear here."
        else:
            note = (f"Ranked with run {q.run.id}: {q.summary()}. Every picture was judged by pictures like it, "
                    "not by a model that learned it.")
        labels = ctx.project.labels()
        cell_note = f"Showing the cell **{cell}**. Change the class or reason filter to see the whole queue." \
            if _cell_value(cell) else ""
        return (note, rows, "", None, _gallery(rows, set()), _details(rows, [], None),
                gr.Dropdown(choices=[ALL, *labels]), gr.Dropdown(choices=labels), status, _matrix(q), cell_note)

    outs = [c["note"], c["rows"], c["selected"], c["last"], c["gallery"], c["details"], c["filter"], c["move_to"],
            c["status"], c["matrix"], c["cell_note"]]
    filters = [c["filter"], c["reason"], c["cell"]]

    @handler
    def refresh(label, reason, cell):
        return view(label, reason, cell)

    c["refresh"].click(refresh, filters, outs, api_name="review")

    def refilter(label, reason):
        return ("", *view(label, reason, ""))

    for dd in (c["filter"], c["reason"]):
        dd.input(handler(refilter), [c["filter"], c["reason"]], [c["cell"], *outs], api_visibility="private")

    def toggle(rows, selected, evt: gr.SelectData):
        ids = _ids(selected)
        if rows and evt.index is not None and evt.index < len(rows):
            item = rows[evt.index]["item"]
            ids = [i for i in ids if i != item] if item in ids else [*ids, item]
            last = item
        else:
            last = None
        chosen = set(ids)
        first = next((r for r in rows if r["item"] == last), None)
        return (",".join(ids), last, _gallery(rows, chosen), _details(rows, ids, last),
                gr.Dropdown(value=first["predicted"]) if first and first["predicted"] else gr.skip())

    sel_outs = [c["selected"], c["last"], c["gallery"], c["details"], c["move_to"]]
    c["gallery"].select(toggle, [c["rows"], c["selected"]], sel_outs, api_visibility="private")

    def select_all(rows):
        ids = [r["item"] for r in rows]
        return ",".join(ids), None, _gallery(rows, set(ids)), _details(rows, ids, None), gr.skip()

    def clear(rows):
        return "", None, _gallery(rows, set()), _details(rows, [], None), gr.skip()

    c["select_all"].click(select_all, [c["rows"]], sel_outs, api_visibility="private")
    c["clear"].click(clear, [c["rows"]], sel_outs, api_visibility="private")

    def _need(selected) -> list[str]:
        ids = _ids(selected)
        if not ids:
            raise InputError("Click a picture first (or Select all shown).")
        return ids

    @handler
    def delete(selected, label, reason, cell):
        a = ctx.project.delete(_need(selected))
        return view(label, reason, cell, f"{a.summary.capitalize()}. Undo brings {'it' if len(a.items) == 1 else 'them'} back.")

    @handler
    def move(selected, to, label, reason, cell):
        if not to:
            raise InputError("Choose the class to move the pictures to.")
        a = ctx.project.relabel(_need(selected), to)
        return view(label, reason, cell, a.summary.capitalize() + ".")

    @handler
    def accept(selected, label, reason, cell):
        """Move each selected picture to the class the model gives it (one undoable action per class)."""
        ids = _need(selected)
        q = review.rank(ctx.project, kind="label")
        guess = {r.item: r.predicted for r in q}
        by_class: dict[str, list[str]] = {}
        for i in ids:
            p = guess.get(i)
            if p and p != ctx.project.item(i).label:
                by_class.setdefault(p, []).append(i)
        if not by_class:
            raise InputError("The model agrees with the class of every selected picture; nothing to move.")
        done = [ctx.project.relabel(items, to).summary for to, items in by_class.items()]
        return view(label, reason, cell, "; ".join(done).capitalize() + ".")

    @handler
    def keep(selected, label, reason, cell):
        a = ctx.project.keep(_need(selected))
        return view(label, reason, cell, a.summary.capitalize() + "; they will not be shown again."
                    if len(a.items) > 1 else a.summary.capitalize() + "; it will not be shown again.")

    @handler
    def undo(label, reason, cell):
        a = ctx.project.undo()
        return view(label, reason, cell, f"Undone: {a.summary}.")

    @handler
    def redo(label, reason, cell):
        a = ctx.project.redo()
        return view(label, reason, cell, f"Redone: {a.summary}.")

    c["delete"].click(delete, [c["selected"], *filters], outs, api_name="delete")
    c["move"].click(move, [c["selected"], c["move_to"], *filters], outs, api_name="relabel")
    c["accept"].click(accept, [c["selected"], *filters], outs, api_name="relabel_to_prediction")
    c["keep"].click(keep, [c["selected"], *filters], outs, api_name="keep")
    c["undo"].click(undo, filters, outs, api_name="undo")
    c["redo"].click(redo, filters, outs, api_name="redo")

    @handler
    def open_cell(evt: gr.SelectData):
        """A click on a confusion-matrix cell: show the pictures behind it."""
        q = review.queue(ctx.project)
        row, col = (evt.index if isinstance(evt.index, (list, tuple)) else (None, None))
        if row is None or col is None or col == 0 or row >= len(q.labels) or col - 1 >= len(q.labels):
            return gr.skip()
        return f"{q.labels[row]} → {q.labels[col - 1]}"

    c["matrix"].select(open_cell, None, c["cell"], api_visibility="private").then(
        handler(lambda label, reason, cell: view(label, reason, cell)), filters, outs, api_visibility="private")

    @handler
    def retrain(label, reason, cell, progress=gr.Progress()):
        """Train again with the settings of the run in use, on the pictures as they are now."""
        run = runs.active_run(ctx.project)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in (run.config if run else {}).items() if k in fields})
        tp = start_training(ctx.project, cfg)
        ctx.jobs[tp.run_id] = tp
        first = [gr.skip()] * len(outs)
        first[outs.index(c["status"])] = f"Retraining (run {tp.run_id})…"
        yield (tp.run_id, gr.Button(visible=True), *first)
        try:
            for new in tp.follow(0.5):
                for ev in new:
                    if ev.get("type") == "batch":
                        progress((ev["done"], ev["total"]), desc=f"Retraining, epoch {ev['epoch'] + 1} of {ev['epochs']}")
                    elif ev.get("type") == "phase" and ev.get("total"):
                        progress((ev["done"], ev["total"]), desc="Retraining")
        finally:
            ctx.jobs.pop(tp.run_id, None)
        result = tp.result()
        if result.status == "finished":
            runs.set_active_run(ctx.project, result.id)
            msg = f"Retrained: run {result.id}, accuracy {pct(result.metrics.get('accuracy'))}. The queue is up to date."
        else:
            msg = f"Run {result.id} {result.status}" + (f": {result.reason}" if result.reason else ".")
        yield (None, gr.Button(visible=False), *view(label, reason, cell, msg))

    c["retrain"].click(retrain, filters, [c["job"], c["retrain_stop"], *outs], api_name="retrain",
                       show_progress_on=[c["status"]])

    @handler
    def stop_retrain(job):
        tp = ctx.jobs.get(job) if job else None
        if tp is None:
            return "Nothing is retraining."
        tp.stop()
        return f"Stopping run {tp.run_id} after the current batch…"

    c["retrain_stop"].click(stop_retrain, [c["job"]], [c["status"]], api_visibility="private", queue=False)

    c["on_select"] = (refresh, filters, outs)
    return c
