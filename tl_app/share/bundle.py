"""The model out of the app: a bundle (safetensors, ONNX, ``predict.py``, card) and a classify-only Space.

An export must give the app's answers. Preprocessing mismatches are how exports
usually fail, so the bundle ships the app's pipeline as ``predict.py`` (Pillow and
numpy only: upright, RGB, at most 1024 px, re-encoded as JPEG, decoded, squished
to the input size, normalised) and every export is checked before it is written:
the run's held-out pictures (all of them, topped up with its other pictures to
:data:`PARITY_PICTURES` where the run has that many) go through the app's own
classify path on torch and through the exported ``predict.py`` on onnxruntime. The
export is refused (:class:`ExportRefused`) if any probability differs by more than
:data:`MAX_ABS_DIFF` or any top-1 class differs. The figures go into the card.

Layout of a bundle::

    model.safetensors   the whole network's weights (body and head; tensors only)
    model.json          architecture, classes (vocab), input size, resize, mean/std, the pipeline's settings
    model.onnx          input "pixels" (batch, 3, size, size) float32 normalised; output "probs" (batch, classes)
    predict.py          python predict.py IMAGE... --json
    pictures.sha256     the project's pictures by hash: predict.py reads these as stored, as the app does
    confusion.png       the held-out confusion matrix
    README.md           the model card, with the parity figures

A Space holds ``app.py``, ``requirements.txt`` (no torch), ``predict.py``, ``model.onnx``,
``model.json``, ``space.json``, ``examples/`` (held-out pictures), ``confusion.png`` and
``README.md`` (the card under the Space's front matter).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .. import config, runs
from ..errors import ExportRefused, InputError, RunNotFound, Stopped
from ..jobs import StopToken
from ..model_card import OWN, UNKNOWN, WEB, ModelCard, model_card
from ..models import ModelSpec, load_model
from ..project import Project

#: The largest difference in any probability an export may show against the app.
MAX_ABS_DIFF = 1e-4
#: Pictures the parity check uses at least, where the run has that many.
PARITY_PICTURES = 32
#: Held-out pictures copied into a Space as examples.
SPACE_EXAMPLES = 6
STANDALONE = Path(__file__).resolve().parents[2] / "standalone"  # programs an export ships, outside the app's package
ProgressFn = Callable[[str], None]


def _no_progress(_msg: str) -> None:
    pass


# --- the parity report --------------------------------------------------------------------------
@dataclass
class Parity:
    """How the export's answers compare with the app's on the same pictures.

    ``pictures`` were compared, ``heldout`` of them held out by the run; ``max_abs_diff`` is the
    largest difference in any class probability, ``top1_agreement`` the share of pictures
    whose most likely class is the same; ``differing`` names the pictures whose top-1 differs.
    """

    pictures: int
    heldout: int
    max_abs_diff: float
    top1_agreement: float
    differing: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.pictures > 0 and self.max_abs_diff <= MAX_ABS_DIFF and not self.differing

    def to_dict(self) -> dict:
        return {"pictures": self.pictures, "max_abs_diff": self.max_abs_diff, "top1_agreement": self.top1_agreement}

    def describe(self) -> str:
        """The figures in a sentence."""
        return (f"on {self.pictures} pictures ({self.heldout} held out), the largest difference in a probability "
                f"was {self.max_abs_diff:.1e} and the most likely class was the same for "
                f"{self.top1_agreement:.0%}")


def compare(app_probs, export_probs, names: list[str], *, heldout: int | None = None) -> Parity:
    """The parity figures of two probability arrays (pictures x classes) for the same pictures."""
    import numpy as np

    a = np.asarray(app_probs, dtype=np.float64)
    b = np.asarray(export_probs, dtype=np.float64)
    if a.shape != b.shape:
        raise ExportRefused(f"The export answers with {b.shape[-1] if b.ndim == 2 else '?'} classes for "
                            f"{len(b)} pictures, the app with {a.shape[-1]} for {len(a)}.")
    if not len(a):
        return Parity(0, 0, 0.0, 0.0)
    differ = [n for n, x, y in zip(names, a.argmax(1), b.argmax(1)) if x != y]
    return Parity(pictures=len(a), heldout=len(a) if heldout is None else heldout,
                  max_abs_diff=float(np.abs(a - b).max()), top1_agreement=round(1 - len(differ) / len(a), 6),
                  differing=differ)


def require_parity(parity: Parity) -> Parity:
    """Refuse an export whose answers are not the app's (:class:`ExportRefused`, in plain words)."""
    if parity.pictures == 0:
        raise ExportRefused("The export was not written: there is no picture of this run left to check it on.")
    if parity.passed:
        return parity
    why = []
    if parity.differing:
        shown = ", ".join(parity.differing[:3]) + (f" and {len(parity.differing) - 3} more"
                                                    if len(parity.differing) > 3 else "")
        why.append(f"it names another class than the app for {len(parity.differing)} of {parity.pictures} "
                   f"pictures ({shown})")
    if parity.max_abs_diff > MAX_ABS_DIFF:
        why.append(f"a probability differs from the app's by {parity.max_abs_diff:.1e} (at most {MAX_ABS_DIFF:.0e} "
                   "is allowed)")
    raise ExportRefused("The export was not written because it would not give the app's answers: "
                        + "; ".join(why) + ". Nothing was changed; please report this problem.")


# --- what the export checks against -----------------------------------------------------------
@dataclass
class _Picture:
    path: Path
    label: str
    heldout: bool


def parity_pictures(project: Project, run_id: str, at_least: int = PARITY_PICTURES) -> list[_Picture]:
    """The run's held-out pictures still on disk, then its other pictures until there are ``at_least``."""
    snap = runs.read_json(project, run_id, "snapshot.json") or {}
    held, other = [], []
    for it in snap.get("items") or []:
        found = project.find_sha(it.get("sha256", "")) if it.get("sha256") else None
        if found is None:
            continue
        path = project.path_of(found)
        if path.is_file():
            (held if it.get("valid") else other).append(_Picture(path, it["label"], bool(it.get("valid"))))
    return held + other[:max(0, at_least - len(held))]


def _as_new_files(pictures: list[_Picture], folder: Path) -> list[Path]:
    """Each picture saved again as a PNG (the same pixels, bytes the project does not hold): a new picture."""
    from PIL import Image

    out = []
    for i, p in enumerate(pictures):
        dest = folder / f"{i:04d}.png"
        with Image.open(p.path, formats=["JPEG"]) as im:
            im.convert("RGB").save(dest, format="PNG")
        out.append(dest)
    return out


def load_standalone(folder: Path):
    """The exported ``predict.py`` of ``folder`` as a module, and its classifier on that folder's model."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tl_export_predict_{abs(hash(str(folder)))}", folder / "predict.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, mod.Classifier(folder)


def check_export(project: Project, run_id: str, folder: Path, pictures: list[_Picture]) -> Parity:
    """The app's Classify path (torch) against the exported ``predict.py`` on onnxruntime, picture by picture.

    Each picture is classified twice by both: as the file the project stores (read as stored)
    and as a new file with the same pixels (re-encoded first), the two branches of the pipeline.
    Both must agree; the figures are the worse of the two.
    """
    import tempfile

    import numpy as np

    from ..predict import probs_for_files

    _, clf = load_standalone(folder)
    names = [p.path.name for p in pictures]
    with tempfile.TemporaryDirectory(prefix="tl_parity_") as tmp:
        new = _as_new_files(pictures, Path(tmp))
        files = [p.path for p in pictures] + new
        mine, _ = probs_for_files(project, files, run_id=run_id)
        theirs = clf.probs(np.stack([clf.prepare(f) for f in files]))
    both = compare(mine, theirs, names + [f"{n} (as a new file)" for n in names])
    return Parity(len(pictures), sum(p.heldout for p in pictures), both.max_abs_diff,
                  round(1 - len({d.split(" (as")[0] for d in both.differing}) / len(pictures), 6) if pictures else 0.0,
                  both.differing)


# --- writing the files ---------------------------------------------------------------------------
def write_onnx(model, spec: ModelSpec, dest: Path) -> None:
    """``model.onnx``: normalised pixels in, probabilities out, any batch size (torch's dynamo exporter)."""
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixels):
            return torch.softmax(self.net(pixels), 1)

    net = WithSoftmax(model).eval()
    example = torch.zeros(2, 3, spec.size, spec.size)  # batch 2: a batch of 1 would be specialised
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            program = torch.onnx.export(net, (example,), None, dynamo=True, input_names=["pixels"],
                                        output_names=["probs"], external_data=False, verbose=False,
                                        dynamic_shapes={"pixels": {0: torch.export.Dim("batch")}})
            program.save(str(dest), external_data=False)
    except Exception as e:  # noqa: BLE001 - any converter failure is the same problem for the user
        print(log.getvalue(), file=sys.stderr)
        raise ExportRefused(f"The model could not be converted to ONNX ({type(e).__name__}); nothing was "
                            "written.") from None


def _bundle_spec(spec: ModelSpec, names: Optional[list[str]] = None) -> ModelSpec:
    """model.json of an export: the app's spec (readable by the app) with the pipeline predict.py follows.

    ``names`` are the model's classes as the project calls them now (see :mod:`tl_app.class_map`):
    a renamed class answers with its new name; merged classes share one name and ``predict.py``
    sums their probabilities, as the app does.
    """
    return ModelSpec(arch=spec.arch, vocab=list(names or spec.vocab), size=spec.size, head=spec.head, mean=spec.mean,
                     std=spec.std, resize=spec.resize, hidden=spec.hidden, extra={"export": {
                         "onnx": "model.onnx", "input": "pixels", "output": "probs", "stored": "pictures.sha256",
                         "input_layout": "NCHW float32: RGB / 255, minus mean, divided by std",
                         "pipeline": {"formats": list(config.ALLOWED_FORMATS), "min_side": config.MIN_SIDE,
                                      "max_side": config.MAX_STORED_SIDE, "max_bytes": config.MAX_IMPORT_BYTES,
                                      "jpeg_quality": config.JPEG_QUALITY, "resample": "bilinear",
                                      "steps": ["open (JPEG, PNG, WEBP, GIF, BMP only)", "EXIF orientation",
                                                "first frame", "8-bit RGB, transparency on white",
                                                f"longer side at most {config.MAX_STORED_SIDE} px (Lanczos)",
                                                f"re-encode as JPEG quality {config.JPEG_QUALITY}",
                                                f"decode (JPEG draft at {spec.size} px)",
                                                f"resize the whole picture to {spec.size}x{spec.size} (bilinear)",
                                                "normalise with mean and std"]}}})


def _write_stored(project: Project, dest: Path) -> None:
    """``pictures.sha256``: the project's stored pictures, which the app reads as stored (not re-encoded)."""
    shas = sorted({it.sha256 for status in ("active", "deleted", "missing") for it in project.items(status=status)})
    dest.write_text("# sha256 of the pictures the app stored: predict.py reads these files as the app does, "
                    "without re-encoding them\n" + "".join(f"{h}\n" for h in shas), encoding="ascii")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnx", "onnxruntime", "onnxscript", "pillow", "numpy", "gradio"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _pct(x) -> str:
    return "–" if x is None else f"{x:.0%}"


def _date(t: float | None) -> str:
    return time.strftime("%d %b %Y %H:%M", time.localtime(t)) if t else "–"


def card_text(card: ModelCard, run: runs.Run, report: dict, parity: Parity, *, versions: dict,
              images: int) -> str:
    """The model card as Markdown: classes, held-out figures, pictures and their origins, settings, parity."""
    cfg = run.config or {}
    names = ", ".join(c.name for c in card.classes)
    lines = [f"# {card.run}", "",
             f"An image classifier with {len(card.classes)} classes, trained with tl_app on {_date(card.trained)} "
             f"and exported on {_date(time.time())}.", "",
             f"**Classes:** {names}.", "",
             f"**Held-out accuracy:** {_pct(card.accuracy)} right on {card.heldout} pictures it never learned from "
             f"(it learned from {card.learned_from}; {images} pictures in all).", "",
             "| class | learned from | held-out pictures | precision | recall |", "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {c.name} | {c.learned_from} | {c.checked} | {_pct(c.precision)} | {_pct(c.recall)} |"
              for c in card.classes]
    lines += ["", "Precision: of the held-out pictures it put in a class, how many belong there. Recall: of a "
                  "class's held-out pictures, how many it found.", "",
              "![Confusion matrix](confusion.png)", "", "## Where the pictures came from", ""]
    total = sum(o.pictures for o in card.origins) or 1
    for o in card.origins:
        share = f"{o.pictures} picture{'s' if o.pictures != 1 else ''} ({o.pictures / total:.0%})"
        if o.kind == WEB:
            lic = ", ".join(f"{n} {'with no licence filter' if not k else f'searched with the licence filter {k!r}'}"
                            for k, n in o.licences) or "no licence filter"
            sites = ", ".join(f"{h} ({n})" for h, n in o.sites[:10]) + (
                f" and {len(o.sites) - 10} more sites" if len(o.sites) > 10 else "")
            lines.append(f"- {share} from web image searches ({', '.join(o.engines) or 'search engine unknown'})"
                         + (f" for {', '.join(repr(q) for q in o.queries[:10])}" if o.queries else "")
                         + (f"; from {sites}" if sites else "") + f". Licences: {lic}; each picture's licence is "
                         "its web site's own: check it before you publish the pictures.")
        elif o.kind == OWN:
            lines.append(f"- {share} from the owner's own files (their licence is the owner's).")
        elif o.kind == UNKNOWN:
            lines.append(f"- {share} with no record of where they came from.")
    mode = runs.MODE_NAMES.get(run.mode, run.mode)
    weights = ("ImageNet weights" if cfg.get("pretrained", True) and not cfg.get("weights")
               else "the owner's own weights" if cfg.get("weights") else "random weights (from scratch)")
    lines += ["", "## Training", "",
              f"- {mode} of {run.arch}, starting from {weights}; input {cfg.get('size', '?')} px, the whole picture "
              "resized to a square (bilinear), normalised with ImageNet's mean and std.",
              f"- {cfg.get('epochs', '?')} epoch{'' if cfg.get('epochs') == 1 else 's'}"
              + (" after a warm-up epoch" if run.mode == "finetune" else "")
              + f", batch size {cfg.get('batch_size', '?')}, learning rate {cfg.get('lr') or 'the default'}, "
              f"{int(float(cfg.get('valid_pct', config.VALID_PCT)) * 100)}% of the pictures held out, seed "
              f"{cfg.get('seed', '?')}" + (f", early stopping after {cfg['patience']} epochs" if cfg.get("patience")
                                           else "") + ".",
              f"- Trained on {report.get('device', '?')}" + (f" in {run.seconds:.0f} s" if run.seconds else "")
              + f"; finished {_date(run.finished)}. Run id `{run.id}`.", "",
              "## Using it", "",
              "```bash", "pip install onnxruntime pillow numpy", "python predict.py picture.jpg another.png --json",
              "```", "",
              "`predict.py` applies the app's own preprocessing (see `model.json`: upright, RGB, at most "
              f"{config.MAX_STORED_SIDE} px, re-encoded as JPEG quality {config.JPEG_QUALITY}, decoded, squished to "
              f"{cfg.get('size', '?')} px, normalised). `model.onnx` takes the normalised pixels (any batch size) "
              "and gives the probabilities; `model.safetensors` holds the same weights for PyTorch.", "",
              "## Parity with the app", "",
              f"Checked when exported: {parity.describe()}, comparing the app (PyTorch {versions.get('torch', '?')}) "
              f"with `predict.py` on onnxruntime {versions.get('onnxruntime', '?')} (Pillow "
              f"{versions.get('pillow', '?')}). An export is refused when a probability differs by more than "
              f"{MAX_ABS_DIFF:.0e} or a most likely class differs.", "",
              "Each picture was checked twice: as the file the app stored (the app reads its own pictures as "
              "stored; `pictures.sha256` lists them so that `predict.py` does too) and as a new file with the same "
              "pixels (re-encoded first, as the app does with a picture it is given).", ""]
    return "\n".join(lines)


@dataclass
class ExportResult:
    """What an export wrote: where, in which format, for which run, with its parity figures."""

    out: Path
    format: str
    run: str
    run_name: str
    parity: Parity
    seconds: float
    files: list[str]

    def to_dict(self) -> dict:
        return {"out": str(self.out), "format": self.format, "run": self.run, "run_name": self.run_name,
                "parity": self.parity.to_dict(), "seconds": round(self.seconds, 2), "files": self.files}


def _target(out: Path) -> Path:
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not an empty folder: choose a new folder for the export.")
    if not out.parent.is_dir():
        raise InputError(f"The folder {out.parent} does not exist: create it first, or choose another place.")
    return out


def _finish(tmp: Path, out: Path) -> None:
    if out.exists():
        out.rmdir()  # empty, checked before
    os.replace(tmp, out)


def _export_run(project: Project, run_id: Optional[str]):
    run = runs.get_run(project, run_id) if run_id else runs.active_run(project)
    if run is None:
        raise RunNotFound("There is no trained model to export yet: train one first.")
    if not run.has_model:
        raise RunNotFound(f"{run.name} has no model to export ({run.status}).")
    return run


#: The stages of an export, as its progress counts them (each reported by name as it starts).
STAGES = 4


def _export(project: Project, out: Path, fmt: str, run_id: Optional[str], progress: ProgressFn,
            stop: Optional[StopToken] = None) -> ExportResult:
    t0 = time.perf_counter()

    def stage(message: str) -> None:  # a Stop takes effect between stages; the partial folder goes
        if stop is not None and stop.is_set():
            raise Stopped("The export was stopped; nothing was written.")
        progress(message)

    out = _target(out)
    run = _export_run(project, run_id)
    name = runs.run_names(runs.list_runs(project)).get(run.id, run.name)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        stage(f"Loading {name}")
        model, spec = load_model(runs.run_dir(project, run.id), run.model_sha256, project.root)
        pictures = parity_pictures(project, run.id)
        from ..class_map import class_map

        names = class_map(project, run, spec.vocab).names
        (tmp / "model.json").write_text(_bundle_spec(spec, names).to_json(), encoding="utf-8")
        _write_stored(project, tmp / "pictures.sha256")
        shutil.copyfile(STANDALONE / "predict.py", tmp / "predict.py")
        stage("Converting the model to ONNX")
        write_onnx(model, spec, tmp / "model.onnx")
        stage(f"Checking the export against the app on {len(pictures)} pictures")
        parity = require_parity(check_export(project, run.id, tmp, pictures))
        report = runs.read_json(project, run.id, "report.json") or {}
        card = model_card(project, run.id)
        from ..train import confusion_figure

        if report.get("confusion"):
            confusion_figure(report).savefig(tmp / "confusion.png")
        stage("Writing the model card and files")
        text = card_text(card, run, report, parity, versions=_versions(), images=card.learned_from + card.heldout)
        if fmt == "bundle":
            from safetensors.torch import save_file

            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(tmp / "model.safetensors"), metadata={"arch": spec.arch})
            front = ["---", "library_name: onnx", "pipeline_tag: image-classification",
                     "tags: [image-classification, onnx, tl_app]", "---", ""]  # how the Hub lists a model
            (tmp / "README.md").write_text("\n".join(front) + text, encoding="utf-8")
        else:
            _space_files(tmp, card, text, [p for p in pictures if p.heldout] or pictures)
        if stop is not None and stop.is_set():
            raise Stopped("The export was stopped; nothing was written.")
        _finish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    return ExportResult(out, fmt, run.id, name, parity, time.perf_counter() - t0, files)


def _space_title(card: ModelCard) -> str:
    names = " or ".join(c.name for c in card.classes) if len(card.classes) <= 3 else ""
    title = f"{names.capitalize()}?" if names and len(names) <= 28 else f"Image classifier ({len(card.classes)} classes)"
    return title[:30]


def _space_files(folder: Path, card: ModelCard, text: str, examples: list[_Picture]) -> None:
    """app.py, requirements.txt, README.md with front matter, space.json and examples/ of a Space."""
    v = _versions()
    shutil.copyfile(STANDALONE / "app.py", folder / "app.py")
    (folder / "requirements.txt").write_text(
        "# The exact versions the export's parity was checked with (Pillow decodes JPEG bit for bit the same).\n"
        f"gradio=={v.get('gradio', '6.31.0')}\nonnxruntime=={v.get('onnxruntime', '1.32.0')}\n"
        f"pillow=={v.get('pillow', '12.3.0')}\nnumpy>=1.26\n", encoding="utf-8")
    title = _space_title(card)
    front = ["---", f"title: {json.dumps(title, ensure_ascii=False)}", "emoji: 🖼️", "colorFrom: blue", "colorTo: green",
             "sdk: gradio", f"sdk_version: {v.get('gradio', '6.31.0')}", "app_file: app.py", "pinned: false",
             "short_description: " + json.dumps(f"Classifies pictures: {', '.join(c.name for c in card.classes)}"[:60],
                                                ensure_ascii=False), "---", ""]
    (folder / "README.md").write_text("\n".join(front) + text, encoding="utf-8")
    summary = (f"Drop a picture: the model says which of its {len(card.classes)} classes it shows "
               f"({', '.join(c.name for c in card.classes)}). {_pct(card.accuracy)} right on {card.heldout} "
               "held-out pictures.")
    (folder / "space.json").write_text(json.dumps({"title": title, "summary": summary}, ensure_ascii=False),
                                       encoding="utf-8")
    ex = folder / "examples"
    ex.mkdir()
    per: dict[str, int] = {}
    for p in examples:
        if sum(per.values()) >= SPACE_EXAMPLES:
            break
        if per.get(p.label, 0) >= max(1, SPACE_EXAMPLES // max(1, len(card.classes))):
            continue
        per[p.label] = per.get(p.label, 0) + 1
        shutil.copyfile(p.path, ex / f"{_safe(p.label)}-{per[p.label]}.jpg")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "class"


# --- entry points --------------------------------------------------------------------------------
def export_bundle(project: Project, out: Path | str, *, run_id: Optional[str] = None,
                  progress: ProgressFn = _no_progress, stop: Optional[StopToken] = None) -> ExportResult:
    """Write the bundle of a run (default: the run in use) into the new folder ``out``.

    Refused with :class:`ExportRefused` when the parity check fails; nothing is left behind then.
    ``progress`` gets each of the :data:`STAGES` stages by name as it starts; ``stop`` ends the
    export before the next stage with :class:`Stopped`, leaving nothing behind either.
    """
    return _export(project, Path(out), "bundle", run_id, progress, stop)


def export_space(project: Project, out: Path | str, *, run_id: Optional[str] = None,
                 progress: ProgressFn = _no_progress, stop: Optional[StopToken] = None) -> ExportResult:
    """Write a classify-only Gradio Space for a run into the new folder ``out`` (checked like a bundle)."""
    return _export(project, Path(out), "space", run_id, progress, stop)


def zip_folder(folder: Path, dest: Path) -> Path:
    """A zip of ``folder``'s files (paths relative to it), for a download."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    os.replace(tmp, dest)
    return dest
