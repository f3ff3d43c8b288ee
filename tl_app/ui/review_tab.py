"""Tab 2: the pictures most likely to be wrong; select some, then delete, relabel or keep them, with undo.

Wiring only: the queue comes from :func:`tl_app.review.queue`, duplicate groups from
:func:`tl_app.review.duplicate_groups`, actions go through the project (every one
undoable) and Retrain through the same training process as the Train tab. Pictures
are captioned by their file name and class, never by an item id.
"""

from __future__ import annotations

import dataclasses

import gradio as gr
import pandas as pd

from .. import review, runs
from ..project import source_name
from ..errors import GpuUnavailable, InputError, PreflightError, Stopped, TrainerBusy
from ..jobs import ProgressLine, TimeLeft, time_left_words
from ..runner import request_stop, start_training
from ..train import TrainConfig
from .adapters import UIContext, owner_only, pct
from .progress import session_stop, stop_session

ALL = "All classes"
EVERY_REASON = "Every reason"
#: Reason filter choices: (what a person reads, the core's reason).
REASON_CHOICES = [(EVERY_REASON, ""), ("Wrong class?", "label"), ("Duplicates", "duplicate"),
                  ("Outliers", "outlier"), ("Poor pictures", "quality")]
SHOWN = 48
#: From this many pictures the tab first says it is looking, then shows the queue (which takes seconds).
LARGE = 5000
TICK = "☑ "
KEEP = "✓ keep · "
#: The strict/loose control of duplicates: (what a person reads, loose?).
DUP_MODES = [("Strict: confirmed copies only", "strict"),
             ("Loose: also mirrored copies and possible near copies", "loose")]
#: How each kind of copy reads in a group's captions.
MATCH_WORDS = {"same": "same picture", "overlay": "text or a mark differs", "mirrored": "mirrored",
               "possible": "possible near copy"}

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


def _short(name: str, n: int = 26) -> str:
    """A file name cut in the middle when it is long (the extension stays)."""
    return name if len(name) <= n else f"{name[:n // 2 - 1]}…{name[-(n // 2):]}"


def _caption(r: dict, selected: set[str]) -> str:
    """What a picture is shown with: its file name and class, and why it is in the queue."""
    tick = TICK if r["item"] in selected else ""
    also = f" · also {', '.join(review.REASON_NAMES[a] for a in r['also'])}" if r.get("also") else ""
    name = _short(r.get("name") or "")
    if r["reason"] == "label":
        if r["predicted"] == r["label"]:
            guess = f"{r['label']} ✓ {pct(r['confidence'])}"
        elif not r.get("flagged", True):  # weak evidence: the app does not claim another class
            guess = f"{r['label']} · unsure"
        else:
            guess = f"{r['label']} → {r['predicted']}? {pct(r['confidence'])}"
        return f"{tick}{name} · {guess}{also}"
    return f"{tick}{name} · {r['label']} · {review.REASON_NAMES[r['reason']]}{also}"


def _details(rows: list[dict], selected: list[str], last: str | None) -> str:
    if not selected:
        return "Click pictures to select them (click again to unselect)."
    by = {r["item"]: r for r in rows}
    row = by.get(last) if last in selected else by.get(selected[-1])
    head = f"**{len(selected)} selected.**  \n" if len(selected) > 1 else ""
    if row is None:
        return head
    guess = f"{row['predicted']} ({pct(row['confidence'])})" if row["predicted"] else "–"
    also = (f"  \n**Also:** {', '.join(review.REASON_NAMES[a] for a in row['also'])}" if row.get("also") else "")
    return (f"{head}**Picture:** {row.get('name') or '–'}  \n**Class:** {row['label']}  \n**Model says:** {guess}  \n"
            f"**Why** ({review.REASON_NAMES[row['reason']]}): {row['detail']}{also}  \n"
            f"**From:** {source_name(row['source']) or 'unknown'}")


def _group_choices(groups: list[review.DuplicateGroup]) -> list[tuple[str, str]]:
    """The duplicate groups as dropdown choices, named by their first picture (value: its item id)."""
    out = []
    for i, g in enumerate(groups, 1):
        n = len(g.items)
        words = "" if g.kind == "same" else f" ({MATCH_WORDS[g.kind]})"
        out.append((f"{i}. {_short(review.picture_name(g.first), 30)} and {n - 1} "
                    f"cop{'ies' if n > 2 else 'y'}{words}", g.first.id))
    return out


def _group_view(ctx, groups: list[review.DuplicateGroup], chosen: str | None, keep: str | None):
    """(gallery, ids, keep, note, box) for the group whose first picture is ``chosen`` (else the first group).

    ``box`` shows the group's pictures and its Keep button only when there is a group.
    """
    g = next((g for g in groups if g.first.id == chosen), groups[0] if groups else None)
    if g is None:
        return ([], "", "", "No copies found. Pictures that are the same picture twice would be grouped here.",
                gr.Column(visible=False))
    keep = keep if keep in {it.id for it in g.items} else g.first.id
    kinds = {r.item: r.match for r in g.rows}
    gallery = []
    for it in g.items:
        what = "" if it.id == g.first.id else f" · {MATCH_WORDS[kinds.get(it.id, 'same')]}"
        cap = f"{KEEP if it.id == keep else ''}{_short(review.picture_name(it), 22)} · {it.label} · " \
              f"{it.width}×{it.height}{what}"
        gallery.append((str(ctx.project.thumbnail(it)), cap))
    first = review.picture_name(g.first)
    note = (f"**{len(g.items)} pictures** side by side, “{first}” first (it was added first). Click the one to "
            f"keep (now: “{review.picture_name(next(it for it in g.items if it.id == keep))}”), then move the "
            "others to the trash in one step; Undo brings them back.")
    return gallery, ",".join(it.id for it in g.items), keep, note, gr.Column(visible=True)


def _more_button(left: int):
    """The gallery's "Show more" button: there while the queue holds pictures the gallery does not show."""
    return gr.Button(f"Show {min(SHOWN, left)} more (of {left:,} not shown)" if left > 0 else "Show more",
                     visible=left > 0)


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
        # While the queue of a large project is computed (seconds to a minute with nothing cached).
        c["review_stop"] = gr.Button("Stop", scale=1, variant="stop", visible=False, elem_id="review-stop")
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
            c["more"] = gr.Button("Show more", visible=False, size="sm", elem_id="review-more")
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
    with gr.Accordion("Duplicate groups: compare the copies side by side", open=True, elem_id="review-groups"):
        with gr.Row():
            c["dup_mode"] = gr.Radio(DUP_MODES, value="strict", label="Which copies", scale=2,
                                     elem_id="review-dup-mode")
            c["group"] = gr.Dropdown(choices=[], label="Group", scale=3, allow_custom_value=True,
                                     elem_id="review-group")
        c["group_note"] = gr.Markdown(elem_id="review-group-note")
        with gr.Column(visible=False) as c["group_box"]:  # shown when there is a group
            c["group_gallery"] = gr.Gallery(label="The pictures of the group", columns=6, height="auto",
                                            object_fit="contain", allow_preview=False,
                                            elem_id="review-group-gallery")
            c["group_keep"] = gr.Button("Keep the chosen picture, move the others to the trash", variant="stop",
                                        elem_id="review-group-keep")
        # The group's item ids and the one to keep, as hidden textboxes: the endpoint takes them as parameters.
        c["group_ids"] = gr.Textbox(visible=False, label="Group items", elem_id="review-group-ids")
        c["group_choice"] = gr.Textbox(visible=False, label="Keep", elem_id="review-group-choice")
    with gr.Accordion("Confusion matrix: click a cell to see its pictures", open=False):
        c["matrix"] = gr.Dataframe(label="Class (rows) against what the pictures look like (columns), every picture",
                                   interactive=False, wrap=True, elem_id="review-matrix")
        c["cell_note"] = gr.Markdown(elem_id="review-cell-note")

    def _gallery(rows: list[dict], selected: set[str]):
        by_id = ctx.project.items_by_id(r["item"] for r in rows)
        return [(str(ctx.project.thumbnail(by_id[r["item"]])), _caption(r, selected))
                for r in rows if r["item"] in by_id]

    def view(label, reason, cell, mode="strict", group=None, status="", *, top=SHOWN, progress=None, stop=None):
        """Everything the tab shows, recomputed: after any action the queue is current.

        The gallery holds the ``top`` most suspicious pictures; "Show more" asks for the next ones.
        ``progress`` (a ``gr.Progress``) shows the stage the queue is at, with the time left.
        """
        cls = None if label in (None, "", ALL) else label
        loose = mode == "loose"
        q = review.queue(ctx.project, label=cls, reason=reason or None, cell=_cell_value(cell), top=top,
                         loose=loose, stop=stop, **({"progress": _stages(progress)} if progress is not None else {}))
        groups = review.duplicate_groups(ctx.project, loose=loose)
        g_gallery, g_ids, g_keep, g_note, g_box = _group_view(ctx, groups, group, None)
        rows = [r.to_dict() for r in q.rows]
        if q.run is None:
            note = ("No trained model yet: showing duplicates and poor pictures only. Train a model to find "
                    "pictures in the wrong class.") if rows else \
                "Train a model first; then the pictures most likely to be wrong appear here."
        elif q.partial:
            note = (f"Ranked with {q.run.name}: {q.summary()}. That training was stopped before it checked "
                    "every picture, so it cannot tell which pictures are in the wrong class or which are "
                    "outliers: none is flagged, and the pictures are in order of how hard the model found "
                    "them. Train to the end (or choose a finished run in the Train tab) to find them.")
        else:
            note = (f"Ranked with {q.run.name}: {q.summary()}. Every picture was judged by pictures like it, "
                    "not by a model that learned it.")
        labels = ctx.project.labels()
        cell_note = f"Showing the cell **{cell}**. Change the class or reason filter to see the whole queue." \
            if _cell_value(cell) else ""
        chosen = g_ids.split(",")[0] if g_ids else None
        return (note, rows, "", None, _gallery(rows, set()), _details(rows, [], None),
                gr.Dropdown(choices=[ALL, *labels]), gr.Dropdown(choices=labels), status, _matrix(q), cell_note,
                gr.Dropdown(choices=_group_choices(groups), value=chosen), g_gallery, g_ids, g_keep, g_note, g_box,
                _more_button(q.total - len(rows)))

    # Outputs of every view (new ones at the end: API callers read them by position).
    outs = [c["note"], c["rows"], c["selected"], c["last"], c["gallery"], c["details"], c["filter"], c["move_to"],
            c["status"], c["matrix"], c["cell_note"], c["group"], c["group_gallery"], c["group_ids"],
            c["group_choice"], c["group_note"], c["group_box"], c["more"]]
    filters = [c["filter"], c["reason"], c["cell"], c["dup_mode"], c["group"]]

    def _stages(progress):
        """The queue's stages on the page's progress bar: "Review: finding copies (1 of 3 stages done)",
        and within a stage the pictures it measures: "Review: finding copies, about 20 s left" (1200/3000)."""
        line, eta, stage = ProgressLine("stages done"), TimeLeft(), [""]

        def report(p) -> None:
            if p.unit == "pictures":
                left = time_left_words(eta.update(p.done, p.total))
                progress((p.done, max(p.total, 1)), desc=f"Review: {stage[0]}" + (f", {left}" if left else ""),
                         unit="pictures")
                return
            stage[0] = p.message
            words = line(p)
            if p.done < p.total:
                progress((p.done, p.total), desc=f"Review: {p.message} ({words})")

        return report

    @owner_only(ctx, "review the pictures", quiet=True)
    def refresh(label, reason, cell, mode="strict", group=None, request: gr.Request = None,
                progress=gr.Progress()):
        n = sum(ctx.project.label_counts().values())
        if n < LARGE:
            yield (*view(label, reason, cell, mode, group, progress=progress), gr.skip())
            return
        # The tab paints at once; the queue of a large project follows when it is ready, and Stop ends it
        # between two pictures it measures (what is measured by then is kept for the next look).
        with session_stop(ctx, "review", request) as stop:
            yield (f"Looking through {n:,} pictures for the ones that need a look… (Stop ends it; what is "
                   "measured by then is kept for the next look)", *[gr.skip()] * (len(outs) - 1),
                   gr.Button(visible=True))
            try:
                shown = view(label, reason, cell, mode, group, progress=progress, stop=stop)
            except Stopped:
                said = [gr.skip()] * len(outs)
                said[0] = ("**Review stopped.** Nothing is shown as judged. The pictures measured so far are kept: "
                           "Refresh goes on from there.")
                said[outs.index(c["status"])] = ""  # "Stopping the review…" is done
                yield (*said, gr.Button(visible=False))
                return
            except Exception:  # said by the handler; the Stop button goes
                yield (*[gr.skip()] * len(outs), gr.Button(visible=False))
                raise
        yield (*shown, gr.Button(visible=False))

    # The queue's progress on the gallery it fills (not on every output of the view).
    c["refresh"].click(refresh, filters, [*outs, c["review_stop"]], api_name="review",
                       show_progress_on=[c["gallery"]])

    @owner_only(ctx, "stop a review")
    def stop_review(request: gr.Request = None):
        """Stop this window's Review queue at its next picture (its measures so far are kept)."""
        return "Stopping the review…" if stop_session(ctx, "review", request) else "Nothing is being reviewed."

    # queue=False: a Stop must not wait behind the review it stops.
    c["review_stop"].click(stop_review, None, [c["status"]], api_name="stop_review", queue=False)

    @owner_only(ctx, "review the pictures")
    def more(label, reason, cell, mode, group, rows, selected):
        """The next pictures of the queue below those shown (the selection stays)."""
        out = list(view(label, reason, cell, mode, group, top=len(rows or []) + SHOWN))
        shown = {r["item"] for r in out[1]}
        ids = [i for i in _ids(selected) if i in shown]
        out[2], out[4], out[5] = ",".join(ids), _gallery(out[1], set(ids)), _details(out[1], ids, None)
        out[11] = gr.skip()  # the group chosen below stays
        return tuple(out)

    c["more"].click(more, [*filters, c["rows"], c["selected"]], outs, api_name="review_more")

    @owner_only(ctx, "review the pictures")
    def refilter(label, reason, mode, group):
        return ("", *view(label, reason, "", mode, group))

    for dd in (c["filter"], c["reason"], c["dup_mode"]):
        dd.input(refilter, [c["filter"], c["reason"], c["dup_mode"], c["group"]], [c["cell"], *outs],
                 api_visibility="private")

    @owner_only(ctx, "review the pictures")
    def show_group(mode, group):
        """Another group chosen: its pictures side by side, the first one chosen to keep."""
        groups = review.duplicate_groups(ctx.project, loose=mode == "loose")
        return _group_view(ctx, groups, group, None)

    g_outs = [c["group_gallery"], c["group_ids"], c["group_choice"], c["group_note"], c["group_box"]]
    c["group"].input(show_group, [c["dup_mode"], c["group"]], g_outs, api_visibility="private")

    @owner_only(ctx, "review the pictures")
    def choose_keep(ids, mode, group, evt: gr.SelectData):
        """A click on a picture of the group: that one is kept."""
        members = [i for i in (ids or "").split(",") if i]
        if evt.index is None or evt.index >= len(members):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        groups = review.duplicate_groups(ctx.project, loose=mode == "loose")
        return _group_view(ctx, groups, members[0], members[evt.index])

    c["group_gallery"].select(choose_keep, [c["group_ids"], c["dup_mode"], c["group"]], g_outs,
                              api_visibility="private")

    @owner_only(ctx, "select pictures")
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
                gr.Dropdown(value=first["predicted"]) if first and first["predicted"]
                and ctx.project.find_label(first["predicted"]) else gr.skip())

    sel_outs = [c["selected"], c["last"], c["gallery"], c["details"], c["move_to"]]
    c["gallery"].select(toggle, [c["rows"], c["selected"]], sel_outs, api_visibility="private")

    @owner_only(ctx, "select pictures")
    def select_all(rows):
        ids = [r["item"] for r in rows]
        return ",".join(ids), None, _gallery(rows, set(ids)), _details(rows, ids, None), gr.skip()

    @owner_only(ctx, "select pictures")
    def clear(rows):
        return "", None, _gallery(rows, set()), _details(rows, [], None), gr.skip()

    c["select_all"].click(select_all, [c["rows"]], sel_outs, api_visibility="private")
    c["clear"].click(clear, [c["rows"]], sel_outs, api_visibility="private")

    def _need(selected) -> list[str]:
        ids = _ids(selected)
        if not ids:
            raise InputError("Click a picture first (or Select all shown).")
        return ids

    @owner_only(ctx, "delete pictures")
    def delete(selected, label, reason, cell, mode="strict", group=None):
        a = ctx.project.delete(_need(selected))
        return view(label, reason, cell, mode, group,
                    f"{a.summary.capitalize()}. Undo brings {'it' if len(a.items) == 1 else 'them'} back.")

    @owner_only(ctx, "move pictures")
    def move(selected, to, label, reason, cell, mode="strict", group=None):
        if not to:
            raise InputError("Choose the class to move the pictures to.")
        a = ctx.project.relabel(_need(selected), to)
        return view(label, reason, cell, mode, group, a.summary.capitalize() + ".")

    @owner_only(ctx, "delete copies")
    def keep_group(ids, keep, label, reason, cell, mode="strict", group=None):
        """Keep one picture of a duplicate group and move the others to the trash (one undoable step)."""
        members = [i for i in (ids or "").split(",") if i]
        if len(members) < 2:
            raise InputError("Choose a group of copies first.")
        a = review.keep_one(ctx.project, members, keep or members[0])
        n = len(a.items)
        return view(label, reason, cell, mode, None,
                    f"{a.summary[0].upper()}{a.summary[1:]}. Undo brings {'it' if n == 1 else 'them'} back.")

    @owner_only(ctx, "move pictures")
    def accept(selected, label, reason, cell, mode="strict", group=None):
        """Move each selected picture to the class the model gives it (one undoable action per class)."""
        ids = _need(selected)
        q = review.rank(ctx.project, kind="label")
        guess = {r.item: r.predicted for r in q}
        by_class: dict[str, list[str]] = {}
        gone = []
        for i in ids:
            p = guess.get(i)
            if p and p != ctx.project.item(i).label:
                if ctx.project.find_label(p) is None:  # a class deleted since the model was trained
                    gone.append(p)
                    continue
                by_class.setdefault(p, []).append(i)
        if not by_class and gone:
            raise InputError(f"The model's guess for the selected pictures is the {gone[0]}, which is no longer a "
                             "class: delete the pictures or move them to a class yourself.")
        if not by_class:
            raise InputError("The model agrees with the class of every selected picture; nothing to move.")
        done = [ctx.project.relabel(items, to).summary for to, items in by_class.items()]
        return view(label, reason, cell, mode, group, "; ".join(done).capitalize() + ".")

    @owner_only(ctx, "mark pictures as right")
    def keep(selected, label, reason, cell, mode="strict", group=None):
        a = ctx.project.keep(_need(selected))
        return view(label, reason, cell, mode, group, a.summary.capitalize() + "; they will not be shown again."
                    if len(a.items) > 1 else a.summary.capitalize() + "; it will not be shown again.")

    @owner_only(ctx, "undo changes")
    def undo(label, reason, cell, mode="strict", group=None):
        a = ctx.project.undo()
        return view(label, reason, cell, mode, group, f"Undone: {a.summary}.")

    @owner_only(ctx, "redo changes")
    def redo(label, reason, cell, mode="strict", group=None):
        a = ctx.project.redo()
        return view(label, reason, cell, mode, group, f"Redone: {a.summary}.")

    c["delete"].click(delete, [c["selected"], *filters], outs, api_name="delete")
    c["move"].click(move, [c["selected"], c["move_to"], *filters], outs, api_name="relabel")
    c["accept"].click(accept, [c["selected"], *filters], outs, api_name="relabel_to_prediction")
    c["keep"].click(keep, [c["selected"], *filters], outs, api_name="keep")
    c["undo"].click(undo, filters, outs, api_name="undo")
    c["redo"].click(redo, filters, outs, api_name="redo")
    c["group_keep"].click(keep_group, [c["group_ids"], c["group_choice"], *filters], outs, api_name="keep_one")

    @owner_only(ctx, "review the pictures")
    def open_cell(evt: gr.SelectData):
        """A click on a confusion-matrix cell: show the pictures behind it."""
        q = review.queue(ctx.project)
        row, col = (evt.index if isinstance(evt.index, (list, tuple)) else (None, None))
        if row is None or col is None or col == 0 or row >= len(q.labels) or col - 1 >= len(q.labels):
            return gr.skip()
        return f"{q.labels[row]} → {q.labels[col - 1]}"

    @owner_only(ctx, "review the pictures")
    def show_cell(label, reason, cell, mode, group):
        return view(label, reason, cell, mode, group)

    c["matrix"].select(open_cell, None, c["cell"], api_visibility="private").then(
        show_cell, filters, outs, api_visibility="private")

    @owner_only(ctx, "train models")
    def retrain(label, reason, cell, mode="strict", group=None, request: gr.Request = None):
        """Train again with the settings of the run in use, on the pictures as they are now.

        The new run replaces the one in use only if it does better (the core decides); the
        status line is the progress, as in the Train tab.
        """
        from .progress import JobWatch
        from .train_tab import choice_text

        run = runs.active_run(ctx.project)
        fields = {f.name for f in dataclasses.fields(TrainConfig)}
        cfg = TrainConfig(**{k: v for k, v in (run.config if run else {}).items() if k in fields})
        try:
            tp = start_training(ctx.project, cfg, owner=ctx.visitor(request))
        except (TrainerBusy, PreflightError) as e:
            raise InputError(str(e)) from None
        watch = JobWatch(f"Retraining ({tp.title})")
        status_at = outs.index(c["status"])

        def status_only(text: str) -> tuple:
            first = [gr.skip()] * len(outs)
            first[status_at] = text
            return (tp.run_id, gr.Button(visible=True), *first)

        yield status_only(watch.status)
        for new in tp.follow(0.5):
            for ev in new:
                watch.add(ev)
            if new:
                yield status_only(f"Stopping {tp.title} after the current batch…" if tp.stop_requested
                                  else watch.status)
        tp.wait()
        refused = getattr(tp, "not_started", None)
        if refused is not None:  # ZeroGPU lent no GPU: nothing ran, nothing recorded
            msg = str(refused)
            if isinstance(refused, GpuUnavailable):
                msg += " To retrain on the CPU: in the Train tab, press Train, then “Train on the CPU instead”."
            yield (None, gr.Button(visible=False), *view(label, reason, cell, mode, group, msg))
            return
        result = runs.get_run(ctx.project, tp.run_id)
        name = runs.run_names(runs.list_runs(ctx.project)).get(result.id, result.name)
        if result.status == "finished":
            msg = (f"Retrained: {name}, {pct(result.accuracy)} right on its held-out pictures. "
                   + choice_text(ctx, result).replace(" below", " in the Train tab") + " The queue is up to date.")
        else:
            msg = f"{name} {result.status}" + (f": {result.reason}" if result.reason else ".")
        yield (None, gr.Button(visible=False), *view(label, reason, cell, mode, group, msg))

    c["retrain"].click(retrain, filters, [c["job"], c["retrain_stop"], *outs], api_name="retrain",
                       show_progress="hidden", concurrency_id="trainer", concurrency_limit=16)

    @owner_only(ctx, "stop trainings")
    def stop_retrain(job, request: gr.Request):
        answer = request_stop(ctx.project, ctx.visitor(request), shared=ctx.shared, job_id=job or None)
        return "Nothing is retraining." if answer.message == "Nothing is training." else answer.message

    c["retrain_stop"].click(stop_retrain, [c["job"]], [c["status"]], api_visibility="private", queue=False)

    c["on_select"] = (refresh, filters, [*outs, c["review_stop"]])
    c["select_opts"] = dict(show_progress_on=[c["gallery"]])
    return c
