"""Tab 1: get pictures into the project (search the web, upload files or a zip, import a folder) and browse them."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from ..importer import ImportReport, import_files
from ..jobs import Progress
from ..errors import InputError
from .adapters import UIContext, handler, upload_paths
from .web_search import create_web_search, wire_web_search

BROWSE_LIMIT = 60


def classes_table(ctx: UIContext) -> pd.DataFrame:
    counts = ctx.project.label_counts()
    return pd.DataFrame({"Class": list(counts), "Images": list(counts.values())})


def report_markdown(rep: ImportReport) -> str:
    lines = [f"**{rep.summary()}.**"]
    if rep.rejected:
        lines.append("")
        lines.append("Refused files:")
        for r in rep.rejected[:50]:
            lines.append(f"- `{Path(r.file).name}`: {r.reason}")
        if len(rep.rejected) > 50:
            lines.append(f"- … and {len(rep.rejected) - 50} more")
    return "\n".join(lines)


def browse(ctx: UIContext, label: str | None) -> list[tuple[str, str]]:
    if not label:
        return []
    items = ctx.project.items(label=label)[-BROWSE_LIMIT:]
    return [(str(ctx.project.thumbnail(it)), it.id) for it in reversed(items)]


def create_search_tab(ctx: UIContext) -> dict:
    """Widgets and events of the Search & download tab."""
    c: dict = {}
    gr.Markdown("Name your classes and add pictures of each one, from the web or from your own files. Every "
                "picture is checked: broken files, non-images, placeholders and duplicates are refused with a "
                "reason, and nothing you add is changed on your disk.")
    with gr.Row():
        with gr.Column(scale=1):
            c["classes"] = gr.Dataframe(value=lambda: classes_table(ctx), label="Your classes", interactive=False,
                                        elem_id="classes-table")
            with gr.Row():
                c["new_class"] = gr.Textbox(label="New class", placeholder="e.g. cat", scale=3, elem_id="new-class")
                c["add_class"] = gr.Button("Add class", scale=1, elem_id="add-class")
        with gr.Column(scale=3):
            c.update(create_web_search(ctx))
    gr.Markdown("### Add your own pictures", elem_id="own-heading")
    with gr.Row():
        with gr.Column(scale=2):
            c["target"] = gr.Dropdown(choices=ctx.project.labels(), value=None, label="Add pictures to class",
                                      allow_custom_value=True, elem_id="target-class",
                                      info="Choose a class or type a new name.")
            c["files"] = gr.File(file_count="multiple", label="Drop pictures or a zip file here",
                                 file_types=["image", ".zip"], elem_id="upload-files")
            c["add_files"] = gr.Button("Add these pictures", variant="primary", elem_id="add-files")
        with gr.Column(scale=1):
            if not ctx.shared:
                with gr.Accordion("Import a folder from this computer", open=False):
                    c["folder"] = gr.Textbox(label="Folder", placeholder="/home/me/pictures/animals",
                                             info="A folder with a sub-folder per class (the sub-folder names become the classes).")
                    c["import_folder"] = gr.Button("Import folder", elem_id="import-folder")
            c["result"] = gr.Markdown(elem_id="import-result")
    with gr.Row():
        # allow_custom_value: an API caller's session never sees the refreshed choices (see review_tab).
        c["browse_class"] = gr.Dropdown(choices=ctx.project.labels(), label="Show class", allow_custom_value=True,
                                        elem_id="browse-class")
    c["gallery"] = gr.Gallery(label="Pictures (newest first)", columns=8, height="auto", allow_preview=True,
                              elem_id="browse-gallery")

    def refreshed(label=None):
        labels = ctx.project.labels()
        return (classes_table(ctx), gr.Dropdown(choices=labels, value=label),
                gr.Dropdown(choices=labels, value=label), browse(ctx, label))

    outs = [c["classes"], c["target"], c["browse_class"], c["gallery"]]

    @handler
    def add_class(name: str):
        label = ctx.project.add_label(name or "")
        return (*refreshed(label), "")

    c["add_class"].click(add_class, [c["new_class"]], [*outs, c["new_class"]], api_name="add_class")
    c["new_class"].submit(add_class, [c["new_class"]], [*outs, c["new_class"]], api_visibility="private")

    @handler
    def add_files(label: str, files, progress=gr.Progress()):
        paths, names = upload_paths(files)
        if not paths:
            raise InputError("Drop some pictures (or a zip file) first.")
        if not label:
            raise InputError("Choose the class these pictures belong to (or type a new class name).")

        def prog(p: Progress):
            progress((p.done, p.total), desc="Checking pictures")

        rep = import_files(ctx.project, paths, label=label, names=names, progress=prog)
        return (*refreshed(ctx.project.add_label(label)), report_markdown(rep), None)

    c["add_files"].click(add_files, [c["target"], c["files"]], [*outs, c["result"], c["files"]], api_name="add_files")

    if "import_folder" in c:
        @handler
        def import_folder(folder: str, progress=gr.Progress()):
            if not folder or not folder.strip():
                raise InputError("Type the path of a folder on this computer.")
            p = Path(folder.strip()).expanduser()
            if not p.is_dir():
                raise InputError(f"{p} is not a folder on this computer.")

            def prog(pr: Progress):
                progress((pr.done, pr.total), desc="Checking pictures")

            rep = import_files(ctx.project, [p], progress=prog)
            first = next(iter(rep.labels), None)
            return (*refreshed(first), report_markdown(rep))

        c["import_folder"].click(import_folder, [c["folder"]], [*outs, c["result"]], api_name="import_folder")

    @handler
    def show_class(label):
        return browse(ctx, label)

    c["browse_class"].change(show_class, [c["browse_class"]], [c["gallery"]], api_name="browse")

    def refresh(target, shown):
        # Current classes in both dropdowns, keeping what the visitor had chosen (a typed new
        # class name included) so that coming back to the tab does not empty the gallery.
        labels = ctx.project.labels()
        return (classes_table(ctx), gr.Dropdown(choices=labels, value=target or None),
                gr.Dropdown(choices=labels, value=shown if shown in labels else None))

    wire_web_search(ctx, c, refreshed)

    c["on_select"] = (refresh, [c["target"], c["browse_class"]], outs[:3])
    return c
