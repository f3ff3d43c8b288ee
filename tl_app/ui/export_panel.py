"""The Train tab's export section: a run's model as a bundle or a classify-only Space, as zip downloads.

The work is :mod:`tl_app.share.bundle`'s (which checks the export against the app and
refuses one that would answer differently); this module only wires widgets. Owners only.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr

from .. import runs
from ..errors import Stopped
from ..jobs import StopToken
from ..share.bundle import STAGES, ExportResult, export_bundle, export_space, zip_folder
from .adapters import UIContext, owner_only, pct
from .progress import progress_slot, session_stop, stop_session

WHAT = {"bundle": "Model bundle", "space": "Space"}
#: Zips older than this are removed at the next export (Gradio serves its own copy of each).
KEEP_SECONDS = 3600


def _fresh_folder() -> Path:
    """A new temporary folder for one export; the folders of exports over an hour old are removed."""
    base = Path(tempfile.gettempdir()) / "tl_app_exports"
    base.mkdir(exist_ok=True)
    for old in base.iterdir():
        try:
            if time.time() - old.stat().st_mtime > KEEP_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(dir=base))


def export_choices(ctx: UIContext) -> tuple[list[tuple[str, str]], str | None]:
    """Runs with a model, by name and accuracy (the run in use first marked), and the run in use."""
    all_runs = runs.list_runs(ctx.project)
    names = runs.run_names(all_runs)
    active = runs.active_run(ctx.project)
    choices = [(f"{names[r.id]} ({pct(r.accuracy)})" + (", in use" if active and r.id == active.id else ""), r.id)
               for r in all_runs if r.has_model]
    return choices, active.id if active else None


def export_zip(ctx: UIContext, fmt: str, run_id: str | None, *, progress=lambda message: None,
               stop: StopToken | None = None) -> tuple[Path, ExportResult]:
    """Export a run into a fresh temporary folder and zip it; the zip's path (for a download) and the report.

    ``progress`` gets each stage's name; ``stop`` ends the export between stages, leaving nothing behind.
    """
    tmp = _fresh_folder()
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", ctx.project.root.name).strip("-") or "model"
    try:
        fn = export_bundle if fmt == "bundle" else export_space
        rep = fn(ctx.project, tmp / fmt, run_id=run_id or None, progress=progress, stop=stop)
        dest = zip_folder(rep.out, tmp / f"{stem}-{rep.run}-{fmt}.zip")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(rep.out, ignore_errors=True)
    return dest, rep


def result_text(rep: ExportResult) -> str:
    p = rep.parity
    how = ("unzip it and run `python predict.py picture.jpg --json` (needs onnxruntime, Pillow and numpy)"
           if rep.format == "bundle" else
           "unzip it into a new Gradio Space on Hugging Face (or run `python app.py`); it needs no PyTorch")
    return (f"**{WHAT[rep.format]} of {rep.run_name} ready** ({rep.seconds:.0f} s): {how}.  \n"
            f"**Same answers as the app:** checked on {p.pictures} pictures ({p.heldout} held out): the largest "
            f"difference in a probability was {p.max_abs_diff:.1e}, and the most likely class was the same for "
            f"{p.top1_agreement:.0%}. The figures are in the zip's README.md too.")


def create_export_panel(ctx: UIContext) -> dict:
    c: dict = {}
    with gr.Accordion("Export the model", open=False, elem_id="export-panel") as c["export_box"]:
        gr.Markdown("Take a model out of the app: a **bundle** (ONNX and safetensors weights, `predict.py` with the "
                    "app's own preprocessing, and a model card) or a **Space** (a small classify-only app for "
                    "Hugging Face, without PyTorch). Every export is checked against the app on the run's held-out "
                    "pictures and refused if it would answer differently.")
        choices, active = export_choices(ctx) if ctx.access.everyone_owner else ([], None)
        c["export_run"] = gr.Dropdown(choices=choices, value=active, label="Run to export", allow_custom_value=True,
                                      elem_id="export-run")
        with gr.Row():
            c["export_bundle"] = gr.Button("Export bundle (zip)", elem_id="export-bundle-button")
            c["export_space"] = gr.Button("Export Space (zip)", elem_id="export-space-button")
            c["export_stop"] = gr.Button("Stop export", variant="stop", visible=False, elem_id="export-stop")
        c["export_progress"], c["export_bar"] = progress_slot("export-progress")
        c["export_status"] = gr.Markdown(elem_id="export-status")
        c["export_file"] = gr.File(label="Download", visible=False, interactive=False, elem_id="export-file")

    @owner_only(ctx, "see the runs", quiet=True)
    def runs_now():
        choices, active = export_choices(ctx)
        return gr.Dropdown(choices=choices, value=active)

    c["export_box"].expand(runs_now, None, [c["export_run"]], api_visibility="private")

    def make(fmt: str):
        @owner_only(ctx, "export models")
        def export(run_id: str | None = None, request: gr.Request = None, progress=gr.Progress()):
            stages = [0]

            def stage(message: str) -> None:  # the export's stages, counted: "Converting the model to ONNX (2 of 4)"
                stages[0] += 1
                progress((stages[0] - 1, STAGES), desc=f"{message} ({stages[0]} of {STAGES})")

            try:
                with session_stop(ctx, "export", request) as stop:
                    yield "", gr.File(visible=False), gr.Button(visible=True), gr.Column(visible=True)
                    path, rep = export_zip(ctx, fmt, run_id, progress=stage, stop=stop)
            except Stopped:
                yield ("**Export stopped.** Nothing was written.", gr.File(visible=False), gr.Button(visible=False),
                       gr.Column(visible=False))
                return
            except Exception:
                # An export refused (or failed) says so in its message; the progress line and Stop go.
                yield gr.skip(), gr.skip(), gr.Button(visible=False), gr.Column(visible=False)
                raise
            yield (result_text(rep), gr.File(value=str(path), visible=True), gr.Button(visible=False),
                   gr.Column(visible=False))

        export.__name__ = f"export_{fmt}"
        return export

    outs = [c["export_status"], c["export_file"], c["export_stop"], c["export_progress"]]
    opts = dict(concurrency_id="export", concurrency_limit=1, show_progress_on=[c["export_bar"]])
    c["export_bundle"].click(make("bundle"), [c["export_run"]], outs, api_name="export_bundle", **opts)
    c["export_space"].click(make("space"), [c["export_run"]], outs, api_name="export_space", **opts)

    @owner_only(ctx, "stop exports")
    def stop_export(request: gr.Request = None):
        return "**Stopping the export…** Nothing is left half-written." if stop_session(ctx, "export", request) \
            else "Nothing is being exported."

    c["export_stop"].click(stop_export, None, [c["export_status"]], api_name="stop_export", queue=False)
    return c
