"""Which run Review and Classify use: a new run replaces the one in use only if it is better.

"Better" is measured fairly: both models are scored on the same pictures, the
new run's held-out pictures that the run in use did not learn from either. When
the dataset changed between the two runs (pictures added, deleted or moved),
the run in use is scored on the new run's held-out pictures that it never trained
on, with their current classes; pictures of a class it does not know count as
wrong. The higher accuracy wins, the lower loss breaks a tie, and a tie on both
keeps the run in use. The user may still pick any run with a model.

Each model's probabilities on the pictures it was scored on are kept by content
hash in its run folder (``heldout.json``), so later comparisons rarely need to
load an older model again.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import runs
from .class_map import class_map
from .errors import TLError
from .project import Project

EventFn = Callable[[dict], None]

#: The ways a run comes to be in use (recorded with the choice).
FIRST, BETTER, KEPT, PICKED, LATEST = "first", "better", "kept", "picked", "latest"


def _no_events(_: dict) -> None:
    pass


# --- scoring a model on pictures ---------------------------------------------------------------
@dataclass
class Score:
    """How a model did on a set of pictures."""

    pictures: int
    correct: int
    loss: float                      # mean cross-entropy (probabilities clipped at 1e-6)

    @property
    def accuracy(self) -> float:
        return self.correct / self.pictures if self.pictures else 0.0


@dataclass
class Comparison:
    """Two runs scored on the same held-out pictures."""

    new: runs.Run
    old: runs.Run
    new_score: Score
    old_score: Score

    @property
    def pictures(self) -> int:
        return self.new_score.pictures

    @property
    def new_is_better(self) -> bool:
        """Higher accuracy, or the same accuracy with a lower loss; a full tie keeps the run in use."""
        if self.new_score.correct != self.old_score.correct:
            return self.new_score.correct > self.old_score.correct
        return self.new_score.loss < self.old_score.loss - 1e-9


def _snapshot(project: Project, run_id: str) -> list[dict] | None:
    snap = runs.read_json(project, run_id, "snapshot.json")
    return list(snap.get("items") or []) if isinstance(snap, dict) else None


def fair_pictures(project: Project, new: runs.Run, old: runs.Run) -> list[dict]:
    """The new run's held-out pictures that the old run did not train on: ``{"item", "label", "sha256"}``.

    Pictures are matched by content, so a picture deleted and imported again, or
    moved to another class, still counts as one the old run learned from.
    """
    new_items = _snapshot(project, new.id) or []
    old_items = _snapshot(project, old.id)
    learned = {it["sha256"] for it in old_items or [] if not it.get("valid")}
    return [it for it in new_items if it.get("valid") and it["sha256"] not in learned]


def _cache_path(project: Project, run_id: str) -> Path:
    return runs.run_dir(project, run_id) / "heldout.json"


def _read_cache(project: Project, run: runs.Run) -> dict:
    doc = runs.read_json(project, run.id, "heldout.json") if _cache_path(project, run.id).is_file() else None
    if not isinstance(doc, dict) or doc.get("model_sha256") != run.model_sha256:
        return {}
    return dict(doc.get("probs") or {})


def _write_cache(project: Project, run: runs.Run, vocab: list[str], probs: dict) -> None:
    runs.write_json(runs.run_dir(project, run.id), "heldout.json",
                    {"model_sha256": run.model_sha256, "vocab": vocab, "probs": probs})


def _model_vocab(project: Project, run: runs.Run) -> list[str]:
    spec = json.loads((runs.run_dir(project, run.id) / "model.json").read_text(encoding="utf-8"))
    return list(spec["vocab"])


def _quick_probs(project: Project, run: runs.Run, shas: list[str]) -> dict[str, list[float]]:
    """A quick run's probabilities from cached features (numpy only), for the pictures whose features are cached."""
    import numpy as np
    from safetensors.numpy import load_file

    from . import quick
    from .models import ModelSpec, _sha256

    rdir = runs.run_dir(project, run.id)
    spec = ModelSpec.from_json((rdir / "model.json").read_text(encoding="utf-8"))
    wid = spec.extra.get("weights")
    if spec.head != "linear" or not wid or _sha256(rdir / "model.safetensors") != run.model_sha256:
        return {}
    have = quick.FeatureStore(project).get(shas, quick.feature_tag(spec.arch, spec.size, wid))
    if not have:
        return {}
    t = load_file(str(rdir / "model.safetensors"))
    head = quick.LinearHead(t["1.2.weight"].T.astype(np.float32), t["1.2.bias"].astype(np.float32))
    keys = list(have)
    p = head.probs(np.stack([have[k] for k in keys]).astype(np.float32))
    return {k: [round(float(x), 6) for x in row] for k, row in zip(keys, p)}


def _network_probs(project: Project, run: runs.Run, pictures: list[dict]) -> dict[str, list[float]]:
    """Probabilities from the run's model itself, for pictures still on disk (read as training reads them,
    streamed in batches)."""
    from .errors import ItemNotFound
    from .predict import model_for
    from .features import Pictures, predict_pixels

    model, spec, _ = model_for(project, run.id)
    shas, paths = [], []
    for it in pictures:
        try:
            path = project.path_of(project.item(it["item"]))
        except ItemNotFound:
            continue
        if path.is_file():
            shas.append(it["sha256"])
            paths.append(path)
    if not shas:
        return {}
    probs = predict_pixels(model, Pictures(paths, spec.size), spec)
    return {s: [round(float(x), 6) for x in row] for s, row in zip(shas, probs)}


def check_model_files(project: Project, run: runs.Run) -> None:
    """Raise :class:`ModelFileInvalid` unless the run's model files are the ones it recorded (as loading checks)."""
    from .errors import ModelFileInvalid
    from .models import _sha256

    rdir = runs.run_dir(project, run.id)
    wfile = rdir / "model.safetensors"
    if not run.has_model or not wfile.is_file() or _sha256(wfile) != run.model_sha256:
        raise ModelFileInvalid(f"the model file of {run.name} is missing or was changed")
    spec = json.loads((rdir / "model.json").read_text(encoding="utf-8"))
    body = (spec.get("extra") or {}).get("body_file")
    if body:
        bfile = project.root / body
        if not bfile.is_file() or _sha256(bfile) != spec["extra"].get("body_sha256"):
            raise ModelFileInvalid(f"the network body {run.name} needs is missing or was changed")


def run_probabilities(project: Project, run: runs.Run, pictures: list[dict]) -> tuple[list[str], dict]:
    """``(vocab, {sha256: probs})`` of a run's model on pictures, from its cache or computed (then cached).

    Raises :class:`ModelFileInvalid` when the model's files are not the ones it recorded: a model
    that can no longer be loaded cannot stay in use on the strength of answers it gave before.
    """
    check_model_files(project, run)
    vocab = _model_vocab(project, run)
    cached = _read_cache(project, run)
    missing = [it for it in pictures if it["sha256"] not in cached]
    if missing:
        new = _quick_probs(project, run, sorted({it["sha256"] for it in missing}))
        rest = [it for it in missing if it["sha256"] not in new]
        if rest:
            new.update(_network_probs(project, run, rest))
        if new:
            cached.update(new)
            _write_cache(project, run, vocab, cached)
    return vocab, {it["sha256"]: cached[it["sha256"]] for it in pictures if it["sha256"] in cached}


def score(vocab: list[str], probs: dict, pictures: list[dict]) -> Score:
    """Accuracy and mean loss of probabilities against the pictures' labels (an unknown class is wrong)."""
    index = {v: i for i, v in enumerate(vocab)}
    correct, loss, n = 0, 0.0, 0
    for it in pictures:
        p = probs.get(it["sha256"])
        if p is None:
            continue
        n += 1
        t = index.get(it["label"])
        best = max(range(len(p)), key=p.__getitem__)
        correct += int(t is not None and best == t)
        loss += -math.log(max(p[t] if t is not None else 0.0, 1e-6))
    return Score(n, correct, loss / n if n else 0.0)


def compare(project: Project, new: runs.Run, old: runs.Run) -> Optional[Comparison]:
    """Score two runs on the same pictures (see :func:`fair_pictures`); None when there is none to use."""
    pictures = fair_pictures(project, new, old)
    if not pictures:
        return None
    new_vocab, new_probs = run_probabilities(project, new, pictures)
    old_vocab, old_probs = run_probabilities(project, old, pictures)
    # The pictures carry the classes as the new run saw them: the run in use answers with its classes
    # named as they were then (renamed or merged between the two runs), so a rename costs it nothing.
    names = class_map(project, old, old_vocab, at=new)
    if names.changed:
        old_vocab, old_probs = names.classes, {k: [float(x) for x in names.group(p)] for k, p in old_probs.items()}
    both = [it for it in pictures if it["sha256"] in new_probs and it["sha256"] in old_probs]
    if not both:
        return None
    return Comparison(new, old, score(new_vocab, new_probs, both), score(old_vocab, old_probs, both))


# --- the choice --------------------------------------------------------------------------------
@dataclass
class InUse:
    """The run Review and Classify use, and why it is that one."""

    run: runs.Run
    how: str                                  # first, better, kept, picked or latest
    accuracy: Optional[float] = None          # on the compared pictures (else on its own held-out pictures)
    pictures: Optional[int] = None            # how many pictures the comparison used
    other: Optional[runs.Run] = None          # the run it was compared with
    other_accuracy: Optional[float] = None
    note: str = ""

    def describe(self, names: dict[str, str] | None = None) -> str:
        """One sentence for people: which run is in use and why.

        "In use: Full fine-tuning · resnet18 · 25 Nov 14:02, 91% on 40 held-out pictures; the newer
        Quick · resnet18 · 25 Nov 14:05 scored 88% on the same pictures."
        """
        names = names or {}
        name = names.get(self.run.id, self.run.name)
        other = names.get(self.other.id, self.other.name) if self.other else ""
        compared = self.pictures and self.accuracy is not None and self.other_accuracy is not None
        if compared:
            on = f"{self.accuracy:.0%} on {self.pictures} held-out picture{'s' if self.pictures != 1 else ''}"
        else:
            on = f"{_pct(self.run.accuracy)} on its held-out pictures"
        text = f"In use: {name}, {on}"
        tie = compared and round(self.accuracy, 4) == round(self.other_accuracy, 4)
        if self.how == BETTER and tie:
            text += f"; it replaced {other}, which got as many right but was less sure of the right answers."
        elif self.how == BETTER and compared:
            text += f"; it replaced {other}, which scored {self.other_accuracy:.0%} on the same pictures."
        elif self.how == BETTER and other:
            text += f"; it replaced {other}" + (f" ({self.note})." if self.note else ".")
        elif self.how == KEPT and tie:
            text += (f"; the newer {other} got as many right but was less sure of the right answers, "
                     "so it was not used.")
        elif self.how == KEPT and compared:
            text += f"; the newer {other} scored {self.other_accuracy:.0%} on the same pictures, so it was not used."
        elif self.how == KEPT and other:
            text += f"; the newer {other} is not used: {self.note or 'it could not be compared fairly'}."
        elif self.how == PICKED:
            text += "; you chose it."
        elif self.how == FIRST:
            text += "; the project's first model."
        elif self.how == LATEST:
            text += "; the latest finished run."
        else:
            text += "."
        return text

    def to_dict(self) -> dict:
        return {"run": self.run.id, "name": self.run.name, "how": self.how, "accuracy": self.accuracy,
                "pictures": self.pictures, "other": self.other.id if self.other else None,
                "other_accuracy": self.other_accuracy, "note": self.note}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def in_use(project: Project) -> Optional[InUse]:
    """The run in use with the reason recorded when it was chosen (None: no model yet)."""
    run = runs.active_run(project)
    if run is None:
        return None
    rec = runs.in_use_record(project) or {}
    if rec.get("run") != run.id:  # chosen before choices were recorded with their reason, or never chosen
        return InUse(run, PICKED if runs.chosen_run_id(project) == run.id else LATEST)
    other = None
    if rec.get("other"):
        try:
            other = runs.get_run(project, rec["other"])
        except TLError:
            other = None
    return InUse(run, rec.get("how") or PICKED, rec.get("accuracy"), rec.get("pictures"), other,
                 rec.get("other_accuracy"), rec.get("note") or "")


def choose_after_training(project: Project, run_id: str, *, events: EventFn = _no_events) -> Optional[InUse]:
    """After a run finished: use it if it is better than the run in use (or if there is none); record why.

    Called by :func:`tl_app.train.train`, so the web app, Review's Retrain and the command line
    decide alike. A run that stopped early or has no model never replaces the run in use by
    itself; the user may choose it.
    """
    new = runs.get_run(project, run_id)
    if new.status != "finished" or not new.has_model:
        return in_use(project)
    old = runs.active_run(project, excluding=new.id)
    if old is None or old.id == new.id:
        runs.set_active_run(project, new.id, why={"how": FIRST})
        try:  # its answers on its held-out pictures, for the next comparison (its network is loaded now)
            run_probabilities(project, new, [it for it in _snapshot(project, new.id) or [] if it.get("valid")])
        except (TLError, OSError, ValueError, KeyError):
            pass
        return in_use(project)
    events({"type": "phase", "phase": "compare",
            "message": f"Comparing with the model in use ({old.name}) on the same held-out pictures"})
    t0 = time.time()
    try:
        cmp = compare(project, new, old)
    except (TLError, OSError, ValueError, KeyError) as e:
        # The run in use cannot be loaded any more (its files are missing or were changed): the new one is used.
        runs.set_active_run(project, new.id, why={"how": BETTER, "other": old.id,
                                                  "note": f"{old.name} could not be scored ({e})"})
        return in_use(project)
    except Exception:  # noqa: BLE001 - a finished run stays finished; the choice stays as it was, and says why
        import traceback

        (runs.run_dir(project, new.id) / "choice-error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        runs.set_active_run(project, old.id, why={
            "how": KEPT, "other": new.id,
            "note": "it could not be compared with the run in use (the error is in its folder, choice-error.txt)"})
        return in_use(project)
    if cmp is None:
        runs.set_active_run(project, old.id, why={
            "how": KEPT, "other": new.id,
            "note": "every one of its held-out pictures was used to train the run in use"})
        return in_use(project)
    winner, loser = (cmp.new_score, cmp.old_score) if cmp.new_is_better else (cmp.old_score, cmp.new_score)
    why = {"how": BETTER if cmp.new_is_better else KEPT, "other": (old if cmp.new_is_better else new).id,
           "accuracy": round(winner.accuracy, 4), "other_accuracy": round(loser.accuracy, 4),
           "pictures": cmp.pictures, "loss": round(winner.loss, 4), "other_loss": round(loser.loss, 4),
           "seconds": round(time.time() - t0, 2)}
    runs.set_active_run(project, new.id if cmp.new_is_better else old.id, why=why)
    return in_use(project)
