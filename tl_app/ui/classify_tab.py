"""Tab 4: drop pictures, see the top predictions with their confidence; and the model card.

Everything here is for visitors too: on a shared app it is all they see. The
card is :func:`tl_app.model_card.model_card`; a shared app limits the pictures
each visitor classifies (:class:`tl_app.access.Allowance`, by address).
"""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from .. import config, runs
from ..errors import InputError, LimitReached
from ..model_card import OWN, UNKNOWN, WEB, ModelCard, model_card
from ..predict import predict_files
from .adapters import UIContext, for_anyone, pct, upload_paths
from .classify_bulk import create_bulk_section, picked_row
from .classify_picture import chosen_picture, create_picture_actions
from .programs import PATH as PROGRAMS_PATH


def model_note(ctx: UIContext) -> str:
    run = runs.active_run(ctx.project)
    if run is None:
        return "No model yet: train one in the Train tab first." if ctx.access.everyone_owner else \
            "There is no model yet: the owner of this app has not trained one."
    acc = run.accuracy
    text = f"Using {run.name}" + (f", {acc:.0%} right on its held-out pictures." if acc is not None else ".")
    if ctx.access.everyone_owner:
        text += " The Train tab says why this model and lets you choose another."
    else:
        text += " More about it under “About this model”."
    return text


def prediction_label(shown: str, index: int, total: int) -> str:
    """The Prediction box's title: which picture it shows, and how to see another."""
    if total <= 1:
        return f"Prediction for {shown}"
    return f"Prediction for {shown} ({index + 1} of {total}; click another picture below to see its prediction)"


def label_value(p: dict):
    """What the Prediction box shows for one picture: its top classes, or, when the run's
    none-of-these rule says it is like none of them, "Not one of: ..." with its nearest class."""
    if not p.get("unknown"):
        return p["probs"]
    names = list(p["probs"])
    shown = ", ".join(names[:6]) + (f" or {len(names) - 6} more" if len(names) > 6 else "")
    return f"Not one of: {shown} (nearest: {p['label']} {p['confidence']:.0%})"


def caption(p) -> str:
    """A gallery caption: the picture's name and its class, or that it is none of them."""
    if p.unknown:
        return f"{p.file}: not one of these (nearest: {p.label} {p.confidence:.0%})"
    return f"{p.file}: {p.label} {p.confidence:.0%}"


# --- the model card -------------------------------------------------------------------------
def _names(items: list[str], n: int = 8) -> str:
    shown = ", ".join(f"“{x}”" for x in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def card_markdown(card: ModelCard | None) -> str:
    """The card in words: the model, its classes and held-out figures, where its pictures came from."""
    if card is None:
        return "No model yet: once one is trained, this says what it knows and how well it did."
    when = time.strftime("%d %b %Y", time.localtime(card.trained)) if card.trained else "–"
    lines = [f"**{card.run}**, trained {when}: **{pct(card.accuracy)} right** on {card.heldout} held-out pictures "
             f"it never learned from (it learned from {card.learned_from}).",
             "", f"**Classes ({len(card.classes)}):** " + ", ".join(c.name for c in card.classes) + ".", ""]
    if card.changes:
        lines += [f"**Changed since it was trained:** {'; '.join(card.changes)}. Its answers use the classes' "
                  "names of today; train again for a model that learned the classes as they are.", ""]
    if any(c.checked for c in card.classes):
        lines.append("**Per class** (precision: of the held-out pictures it put in the class, how many belong there; "
                     "recall: of the class's held-out pictures, how many it found):")
        lines += [f"- **{c.name}**: learned from {c.learned_from}, checked on {c.checked}: precision "
                  f"{pct(c.precision)}, recall {pct(c.recall)}" for c in card.classes]
        lines.append("")
    lines.append("**Where the pictures came from:**")
    total = sum(o.pictures for o in card.origins) or 1
    for o in card.origins:
        share = f"{o.pictures} picture{'s' if o.pictures != 1 else ''} ({o.pictures / total:.0%})"
        if o.kind == WEB:
            found = f", found with {', '.join(o.engines)}" if o.engines else ""
            words = f" for {_names(o.queries)}" if o.queries else ""
            sites = ""
            if o.sites:
                top = ", ".join(f"{h} ({n})" for h, n in o.sites[:3])
                sites = f"; from {len(o.sites)} web site{'s' if len(o.sites) != 1 else ''}, most from {top}"
            lines.append(f"- {share} from web image searches{found}{words}{sites}. Their licences are the sites' own.")
        elif o.kind == OWN:
            lines.append(f"- {share} from the owner's own files.")
        elif o.kind == UNKNOWN:
            lines.append(f"- {share} with no record of where they came from.")
    return "\n".join(lines)


def confusion_table(card: ModelCard | None) -> pd.DataFrame:
    """The card's confusion matrix as a table (rows: actual class; columns: what the model said)."""
    if card is None or not card.confusion_labels:
        return pd.DataFrame()
    cm = pd.DataFrame(card.confusion, columns=list(card.confusion_labels))
    cm.insert(0, "actual \\ predicted", card.confusion_labels)
    return cm


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
    # Hidden until there are pictures (an empty gallery is a large empty box); the box, not the
    # gallery, is shown and hidden, so that the API's output stays the list of pictures.
    with gr.Column(visible=False) as c["gallery_box"]:
        c["gallery"] = gr.Gallery(label="All pictures: click one to see its prediction above", columns=6,
                                  height="auto", fit_columns=False, allow_preview=False, elem_id="classify-gallery")
    c["errors"] = gr.Markdown(elem_id="classify-errors")
    # Filled at the end (their events follow the ones below): the picture's actions, and bulk classification.
    c["actions_slot"] = gr.Column()
    c["bulk_slot"] = gr.Column()
    with gr.Accordion("About this model", open=not ctx.access.everyone_owner, elem_id="model-card"):
        first = model_card(ctx.project)
        c["card"] = gr.Markdown(card_markdown(first), elem_id="model-card-text")
        with gr.Column(visible=bool(first and first.confusion)) as c["card_box"]:
            c["card_confusion"] = gr.Dataframe(confusion_table(first),
                                               label="Confusion matrix of the held-out pictures (rows: actual "
                                                     "class; columns: what the model said)",
                                               interactive=False, wrap=True, elem_id="model-card-confusion")
        gr.Markdown(f"**From a program:** send a picture as the body of a POST to `{PROGRAMS_PATH}`; the answer is "
                    "JSON: the class, its confidence, every class's probability and whether it is none of them. With "
                    f"this page's address in place of ADDRESS (such as `http://127.0.0.1:{config.DEFAULT_PORT}`): "
                    f"`curl --data-binary @cat.jpg \"ADDRESS{PROGRAMS_PATH}?name=cat.jpg\"`",
                    elem_id="model-card-programs")

    @for_anyone
    def classify(files, request: gr.Request = None):
        paths, names = upload_paths(files)
        if not paths:
            return model_note(ctx), gr.Label(value=None, label="Prediction"), [], [], "", gr.Column(visible=False)
        ctx.count_classified(ctx.visitor(request), len(paths))
        preds = predict_files(ctx.project, paths, names=names)
        gallery, errors, good = [], [], []
        for path, p in zip(paths, preds):
            if p.error:
                errors.append(f"- `{p.file}`: {p.error}")
                continue
            good.append(p.to_dict())
            gallery.append((path, caption(p)))
        err = ("Not classified:\n" + "\n".join(errors)) if errors else ""
        if not good:
            return model_note(ctx), gr.Label(value=None, label="Prediction"), [], [], err, gr.Column(visible=False)
        first = good[0]
        return (model_note(ctx), gr.Label(value=label_value(first), label=prediction_label(first["file"], 0, len(good))),
                good, gallery, err, gr.Column(visible=True))

    c["classified"] = c["files"].change(classify, [c["files"]],
                                         [c["note"], c["label"], c["predictions"], c["gallery"], c["errors"],
                                          c["gallery_box"]],
                                         api_name="classify")

    @for_anyone
    def select(preds, evt: gr.SelectData):
        if preds and evt.index is not None and evt.index < len(preds):
            p = preds[evt.index]
            return gr.Label(value=label_value(p), label=prediction_label(p["file"], evt.index, len(preds)))
        return gr.skip()

    c["gallery"].select(select, [c["predictions"]], [c["label"]], api_visibility="private")

    # For programs: one picture in, its prediction out, answered at once (not queued: Gradio serves
    # it at POST /gradio_api/run/predict after an upload). The page does not use it. The same answer in one
    # request (the picture as the body): tl_app/ui/programs.py.
    c["api_picture"] = gr.File(visible=False)
    c["api_prediction"] = gr.JSON(visible=False)

    @for_anyone
    def predict(picture, request: gr.Request = None) -> dict:
        """The prediction for one picture: file, label, confidence, probs, unknown, unknown_score
        (or error, naming why the file is not a picture), as ``predict --json`` gives it."""
        paths, names = upload_paths(picture)
        try:  # only programs call it: a refusal is an error of the call (the page's way is a warning)
            if len(paths) != 1:
                raise InputError("Send one picture.")
            ctx.count_classified(ctx.visitor(request))
        except (InputError, LimitReached) as e:
            raise gr.Error(str(e), print_exception=False) from None
        with ctx.predict_slots:  # unqueued: two forwards at a time, as the queue allows
            [p] = predict_files(ctx.project, paths, names=names)
        return p.to_dict()

    c["api_picture"].change(predict, [c["api_picture"]], [c["api_prediction"]], api_name="predict", queue=False)

    @for_anyone
    def refresh():
        """The model in use and its card, as they are now."""
        card = model_card(ctx.project)
        return (model_note(ctx), card_markdown(card), confusion_table(card),
                gr.Column(visible=bool(card and card.confusion)))

    c["on_select"] = (refresh, [], [c["note"], c["card"], c["card_confusion"], c["card_box"]])
    c["api_card"] = refresh
    with c["actions_slot"]:
        c["picture"] = create_picture_actions(ctx, c)
    with c["bulk_slot"]:
        c["bulk"] = create_bulk_section(ctx)
    wire_table_rows(ctx, c, c["picture"], c["bulk"])
    return c


def wire_table_rows(ctx: UIContext, c: dict, a: dict, b: dict) -> None:
    """A click on a row of the bulk table: that picture's prediction in the Prediction box, and the
    actions (Why?, Add to the dataset) act on it; the page scrolls up to them."""

    @for_anyone
    def pick_table_row(kept, evt: gr.SelectData):
        got = picked_row(kept, evt.row_value)
        if got is None:  # a refused file (its row says why), or no result
            return (gr.skip(),) * (1 + len(a["chosen"]))
        pred, path = got
        box = gr.Label(value=label_value(pred), label=f"Prediction for {pred['file']} (a row of the table below)")
        return (box, *chosen_picture(ctx, pred, path))

    b["table"].select(pick_table_row, [b["result"]], [c["label"], *a["chosen"]], api_visibility="private").then(
        None, js="() => document.getElementById('picture-actions')?.scrollIntoView({block: 'center'})")
