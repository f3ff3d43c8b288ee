"""Rankings of items whose label is likely wrong. Returns rows; never changes the dataset.

The ranking reads the probabilities a run recorded for every item
(``scores.json``) and scores each item against its *current* label, so a
relabel takes effect at once. Items added after the run are scored with the
run's model on the spot; items a person marked "keep" are left out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from . import runs
from .errors import RunNotFound
from .project import Project


@dataclass
class ReviewRow:
    """One suspicious item, with the model's opinion of it."""

    item: str
    path: str
    source: str
    label: str
    predicted: str
    confidence: float
    loss: float
    score: float
    reason: str = "label"
    valid: Optional[bool] = None

    def to_dict(self) -> dict:
        return asdict(self)


def rank(project: Project, *, top: Optional[int] = None, label: Optional[str] = None,
         run_id: Optional[str] = None, include_kept: bool = False) -> list[ReviewRow]:
    """Active items, most likely mislabelled first (highest loss against the current label)."""
    run = runs.get_run(project, run_id) if run_id else runs.active_run(project)
    if run is None:
        raise RunNotFound("Review needs a trained model: train one first in the Train tab.")
    scores = runs.read_json(project, run.id, "scores.json") or {"vocab": [], "items": []}
    vocab: list[str] = scores["vocab"]
    by_item = {s["item"]: s for s in scores["items"]}
    kept = set() if include_kept else project.kept()
    items = [it for it in project.items(label=label) if it.id not in kept]
    unscored = [it.id for it in items if it.id not in by_item]
    if unscored:
        from .predict import predict_items

        probs, vocab2 = predict_items(project, unscored, run_id=run.id)
        vocab = vocab or vocab2
        for iid, p in zip(unscored, probs):
            by_item[iid] = {"item": iid, "probs": [float(x) for x in p], "valid": None}
    rows = []
    for it in items:
        s = by_item[it.id]
        probs = s["probs"]
        best = max(range(len(probs)), key=probs.__getitem__)
        p_label = probs[vocab.index(it.label)] if it.label in vocab else 0.0
        loss = max(0.0, -math.log(max(p_label, 1e-12)))
        rows.append(ReviewRow(item=it.id, path=str(project.path_of(it)), source=it.source, label=it.label,
                              predicted=vocab[best], confidence=round(probs[best], 4), loss=round(loss, 4),
                              score=round(1.0 - p_label, 4), valid=s.get("valid")))
    rows.sort(key=lambda r: -r.loss)
    return rows[:top] if top else rows
