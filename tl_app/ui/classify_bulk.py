"""Classify tab, many pictures at once: a table, a CSV and a zip sorted into a folder per class.

Wiring only: :func:`tl_app.classify.gather` and :func:`tl_app.classify.classify_many`.
Visitors may use it (counted against their allowance on a shared app); a folder of
the server's own disk is read only for an owner, on an app that is not shared.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from ..classify import BulkResult, classify_many, gather, write_csv, write_sorted_zip
from ..errors import InputError, NotAllowed
from ..jobs import Progress
from .adapters import UIContext, for_anyone, owner_only, upload_paths

COLUMNS = ["File", "Class", "Confidence", "Top three", "None of these?", "Not classified because"]
_OUT_PREFIX = "tl_app_bulk_"


def bulk_table(result: BulkResult | None) -> pd.DataFrame:
    """The result as the table the page shows (one row per file, refused ones with their reason)."""
    rows = []
    for r in (result.rows() if result else []):
        rows.append([r["file"], r["label"] or "–", "" if r["confidence"] == "" else f"{r['confidence']:.0%}",
                     r["top3"], {"true": "yes", "false": "no"}.get(r["unknown"], "–") if not r["error"] else "",
                     r["error"]])
    return pd.DataFrame(rows, columns=COLUMNS)


def _outputs_dir() -> Path:
    """A fresh folder for one result's downloads; folders older than an hour are removed."""
    base = Path(tempfile.gettempdir())
    for old in base.glob(_OUT_PREFIX + "*"):
        try:
            if time.time() - old.stat().st_mtime > 3600:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=_OUT_PREFIX))


def create_bulk_section(ctx: UIContext) -> dict:
    b: dict = {}
    with gr.Accordion("Many pictures at once: a table, a CSV file, folders per class", open=False,
                      elem_id="bulk"):
        gr.Markdown("Drop any number of pictures or zip files of pictures: each gets a row with its class, the "
                    "model's confidence and its three likeliest classes; files that are not pictures get a row "
                    "saying why. Download the table as CSV, or the pictures sorted into a folder per class.")
        # Any file is taken: one that is not a picture gets its row with the reason (not a refused drop).
        b["files"] = gr.File(file_count="multiple", label="Drop pictures or zip files",
                             elem_id="bulk-files", height=200)
        if not ctx.shared:
            with gr.Row(equal_height=False):
                b["folder"] = gr.Textbox(label="Or classify a folder on this computer", scale=4,
                                         placeholder="/home/me/pictures/to-sort", elem_id="bulk-folder",
                                         info="Every picture in it and in its sub-folders.")
                b["folder_go"] = gr.Button("Classify folder", scale=1, min_width=140, elem_id="bulk-folder-go")
        b["summary"] = gr.Markdown(elem_id="bulk-summary")
        with gr.Column(visible=False) as b["result_box"]:
            b["table"] = gr.Dataframe(bulk_table(None), interactive=False, wrap=True, max_height=480,
                                      label="Every file (click a column's name to sort; click a row to see that "
                                            "picture above, with Why? and Add to the dataset)",
                                      elem_id="bulk-table")
            with gr.Row():
                b["csv"] = gr.DownloadButton("Download the table (CSV)", elem_id="bulk-csv")
                b["zip"] = gr.DownloadButton("Download the pictures sorted into a folder per class (zip)",
                                             elem_id="bulk-zip")
    # The result itself, kept for this page (server side): a click on a row brings up that picture.
    b["result"] = gr.State(None)
    outs = [b["summary"], b["table"], b["csv"], b["zip"], b["result_box"], b["result"]]

    def show(pictures, progress) -> tuple:
        def report(p: Progress) -> None:
            progress((p.done, max(p.total, 1)), desc="Classifying pictures")

        result = classify_many(ctx.project, pictures, progress=report)
        folder = _outputs_dir()
        csv_path = write_csv(result, folder / "classified.csv")
        zip_path = write_sorted_zip(result, folder / "sorted.zip")
        text = result.summary() + f" Model: {result.run}."
        return text, bulk_table(result), str(csv_path), str(zip_path), gr.Column(visible=True), (result, folder)

    @for_anyone
    def classify_files(files, request: gr.Request = None, progress=gr.Progress()):
        paths, names = upload_paths(files)
        if not paths:
            return "", bulk_table(None), None, None, gr.Column(visible=False), None
        pictures = gather(paths, names=names, folders=False)
        ctx.count_classified(ctx.visitor(request), len(pictures))
        return show(pictures, progress)

    b["files"].change(classify_files, [b["files"]], outs, api_name="classify_many")

    if "folder" in b:
        @owner_only(ctx, "classify folders of the server")
        def classify_folder(folder: str, progress=gr.Progress()):
            if ctx.shared:  # never on a shared server, whoever asks (the box is not even there)
                raise NotAllowed("A shared app does not read folders of the server; drop the pictures instead.")
            if not folder or not folder.strip():
                raise InputError("Type the path of a folder on this computer.")
            p = Path(folder.strip()).expanduser()
            if not p.is_dir():
                raise InputError(f"{p} is not a folder on this computer.")
            return show(gather([p]), progress)

        b["folder_go"].click(classify_folder, [b["folder"]], outs, api_name="classify_folder")
        b["folder"].submit(classify_folder, [b["folder"]], outs, api_visibility="private")
    return b


def picked_row(kept, row: list | None) -> tuple[dict, str] | None:
    """The prediction and a served copy of the picture of a clicked table row, or None (refused file, no result).

    ``row`` holds the row's values as shown (the table may be sorted); the first row with the
    same file, class and confidence is the one. The picture is copied into the result's own
    folder, so that the page can show it and the actions can read it, wherever it came from
    (an upload, a zip member, a folder of the owner's computer).
    """
    if not kept or not row:
        return None
    result, folder = kept
    shown = bulk_table(result).astype(str).values.tolist()
    want = [str(v) for v in row[:len(COLUMNS)]]
    for i, values in enumerate(shown):
        if values[:3] != want[:3]:
            continue
        pred, pic = result.predictions[i], result.pictures[i]
        if pred.error:
            return None
        data = pic.read()
        name = Path(pred.file).name or f"picture-{i}"
        out = Path(folder) / "picked" / f"{i}-{name}"
        out.parent.mkdir(exist_ok=True)
        if isinstance(data, (bytes, bytearray)):
            out.write_bytes(data)
        else:
            shutil.copyfile(data, out)
        return pred.to_dict(), str(out)
    return None
