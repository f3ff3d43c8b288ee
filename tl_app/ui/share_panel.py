"""The Train tab's "Take it with you" panel: the dataset and the project as zip files, a project zip
restored, and publishing to the Hugging Face Hub. Wiring only: the work is in :mod:`tl_app.share`.

Restoring a project zip: the app serves one project, chosen when it starts. When that
project is empty (no pictures, no runs) the zip is restored into it and the page shows
it at once, which is what someone starting afresh expects. Otherwise nothing of theirs
is touched: on this computer the zip becomes a new project beside the current one and
the panel says how to open it; on a shared server (a Space) it is refused, since a
project beside it could not be opened there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import gradio as gr

from ..errors import InputError, Stopped
from ..project import Project
from .adapters import UIContext, owner_only
from .progress import gr_progress, progress_slot, session_stop, stop_session

TARGETS = [("The model (ONNX bundle and card)", "model"), ("A classify-only Space", "space"),
           ("The dataset (pictures and metadata.csv)", "dataset")]


def _export_dir() -> Path:
    """Where this server writes zips to hand to the browser (overwritten each time: one of each kind)."""
    base = Path(tempfile.gettempdir())
    d = base / f"tl_app-exports-{os.getpid()}"
    if not d.exists():  # the first export of this server: remove what servers that have ended left (whole-project zips are big)
        for old in base.glob("tl_app-exports-*"):
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def _beside(project: Project, zip_name: str) -> Path:
    """A new folder next to the current project, named after the zip."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(zip_name).stem).strip("-") or "restored"
    base = project.root.parent
    for n in range(1, 1000):
        cand = base / (stem if n == 1 else f"{stem}-{n}")
        if not cand.exists():
            return cand
    raise InputError("No free folder name for the restored project; remove some old ones.")


def create_share_panel(ctx: UIContext) -> dict:
    """Widgets and events of the panel; returns its components (``share_*``) for tests."""
    c: dict = {}
    with gr.Accordion("Take it with you: the dataset, the whole project, the Hugging Face Hub", open=False,
                      elem_id="share-panel"):
        gr.Markdown("**Download** the labelled pictures as a dataset zip (a folder per class and `metadata.csv`, "
                    "read by Hugging Face `datasets`, torchvision and Keras), or the whole project (pictures, trash "
                    "and undo history, runs) to pick it up again later or on another computer.")
        with gr.Row():
            c["share_dataset"] = gr.Button("Dataset zip", elem_id="share-dataset-button")
            c["share_project"] = gr.Button("Whole project zip", elem_id="share-project-button")
            c["share_stop"] = gr.Button("Stop", variant="stop", visible=False, elem_id="share-stop")
        c["share_progress"], c["share_bar"] = progress_slot("share-progress")
        c["share_file"] = gr.File(label="Your download", interactive=False, elem_id="share-file")
        c["share_note"] = gr.Markdown(elem_id="share-note")
        gr.Markdown("**Restore a project zip.** Into this app's project when it is still empty; otherwise as a new "
                    "project beside it (your pictures here are not touched). The page takes zips up to 50 MB; for a "
                    "larger one: `python -m tl_app import ZIP --as FOLDER`.")
        c["share_zip"] = gr.File(label="Project zip", file_types=[".zip"], file_count="single", type="filepath",
                                 height=140, elem_id="share-restore-file")
        c["share_restore"] = gr.Button("Restore", elem_id="share-restore-button")
        c["share_restored"] = gr.Markdown(elem_id="share-restored")
        gr.Markdown("**Publish to the Hugging Face Hub** with your token: the one you signed in with, `HF_TOKEN`, or "
                    "`hf auth login` on this computer.")
        with gr.Row():
            c["share_target"] = gr.Radio(TARGETS, value="dataset", label="What", elem_id="share-target")
            c["share_repo"] = gr.Textbox(label="Repository", placeholder="cats-and-dogs or your-org/cats-and-dogs",
                                         elem_id="share-repo")
            c["share_private"] = gr.Checkbox(True, label="Private", elem_id="share-private",
                                             info="Only you can see it (an existing repository keeps its setting).")
        c["share_publish"] = gr.Button("Publish", variant="primary", elem_id="share-publish-button")
        c["share_status"] = gr.Markdown(elem_id="share-status")

    def _zip(write, desc: str, unit: str, after: str, request, progress):
        """Write a zip with progress and a Stop (nothing is left behind when stopped); yields the panel's outputs."""
        try:
            with session_stop(ctx, "export", request) as stop:
                yield gr.skip(), "", gr.Button(visible=True), gr.Column(visible=True)
                rep = write(progress=gr_progress(progress, desc, unit), stop=stop)
        except Stopped:
            yield None, "**Stopped.** No zip was written.", gr.Button(visible=False), gr.Column(visible=False)
            return
        except Exception:  # an error says so in its message; the progress line and Stop go
            yield gr.skip(), gr.skip(), gr.Button(visible=False), gr.Column(visible=False)
            raise
        yield str(rep.out), rep.summary() + after, gr.Button(visible=False), gr.Column(visible=False)

    @owner_only(ctx, "export the dataset")
    def export_dataset_zip(request: gr.Request = None, progress=gr.Progress()):
        from ..share.archive import export_dataset

        out = _export_dir() / f"{ctx.project.root.name or 'project'}-dataset.zip"
        yield from _zip(lambda **kw: export_dataset(ctx.project, out, **kw), "Writing the dataset zip", "pictures",
                        "", request, progress)

    @owner_only(ctx, "export the project")
    def export_project_zip(request: gr.Request = None, progress=gr.Progress()):
        from ..share.archive import export_project

        out = _export_dir() / f"{ctx.project.root.name or 'project'}-project.zip"
        yield from _zip(lambda **kw: export_project(ctx.project, out, **kw), "Writing the project zip", "files",
                        " Restore it with the panel below, or `python -m tl_app import ZIP --as FOLDER`.",
                        request, progress)

    zip_outs = [c["share_file"], c["share_note"], c["share_stop"], c["share_progress"]]
    c["share_dataset"].click(export_dataset_zip, None, zip_outs, api_name="export_dataset",
                             show_progress_on=[c["share_bar"]])
    c["share_project"].click(export_project_zip, None, zip_outs, api_name="export_project",
                             show_progress_on=[c["share_bar"]])

    @owner_only(ctx, "stop exports")
    def stop_zip(request: gr.Request = None):
        return "**Stopping…** No half-written zip is left." if stop_session(ctx, "export", request) \
            else "Nothing is being written."

    c["share_stop"].click(stop_zip, None, [c["share_note"]], api_name="stop_zip", queue=False)

    @owner_only(ctx, "restore a project")
    def restore(path: Optional[str], progress=gr.Progress()):
        from ..share.archive import project_is_empty, restore_project

        if not path:
            raise InputError("Choose a project zip first (one written by 'Whole project zip').")
        name = Path(path).name
        if project_is_empty(ctx.project):
            rep = restore_project(path, ctx.project.root, progress=gr_progress(progress, "Restoring the project"))
            where = "It is this app's project now: open the other tabs to see it."
        elif ctx.shared:
            raise InputError("This app's project already holds pictures or runs, and a shared app serves only it: a "
                             "project zip can be restored here only into an empty project.")
        else:
            dest = _beside(ctx.project, name)
            rep = restore_project(path, dest, progress=gr_progress(progress, "Restoring the project"))
            where = (f"It is a new project in `{dest}` (this app still shows its own project). To open it: "
                     f"`./scripts/run --project \"{dest}\"` or `python -m tl_app serve --project \"{dest}\"`.")
        notes = "".join(f"\n- {n}" for n in rep.notes)
        return None, f"{rep.summary()} {where}{notes}"

    c["share_restore"].click(restore, [c["share_zip"]], [c["share_zip"], c["share_restored"]],
                             api_name="restore_project")

    @owner_only(ctx, "publish to the Hugging Face Hub")
    def publish(target: str, repo: str, private: bool, token: gr.OAuthToken | None = None, progress=gr.Progress()):
        from ..share.publish import PublishFailed, publish as push

        try:
            rep = push(ctx.project, target, repo, private=bool(private), token=token.token if token else None,
                       progress=gr_progress(progress, "Preparing the dataset", "pictures"))
        except PublishFailed as e:  # offline, refused: said in the panel, nothing else changes
            return f"Not published. {e}"
        return f"{rep.summary()} [Open it]({rep.url})"

    c["share_publish"].click(publish, [c["share_target"], c["share_repo"], c["share_private"]], [c["share_status"]],
                             api_name="publish", concurrency_limit=1, concurrency_id="publish")
    return c
