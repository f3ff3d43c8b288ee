"""Review: the items most likely to be wrong, whatever the reason, most suspicious first.

One queue; every row has a reason and a score between 0 and 1 (higher: look sooner):

- ``label``: the class is probably wrong. Every item, training and validation
  alike, is judged by evidence that does not come from a model memorising it:
  its nearest neighbours in the trained network's feature space (the item itself
  left out) and, for quick runs, heads trained on the other folds. Measured on
  scikit-learn's digits with 5% of labels flipped (``bench/review.py``).
- ``duplicate``: the same picture twice, in one class or in two: a copy found by
  :mod:`tl_app.dupes` (re-encoded, resized, cropped, framed or with text on it).
  Rows point at the first picture of their group; the loose view adds mirrored
  copies and possible near copies (which are never counted as problems).
- ``outlier``: far from every other picture in the network's feature space.
- ``quality``: broken, almost flat, very dark, blurred or tiny pictures (:mod:`tl_app.quality`, no model needed).

An item with several reasons is listed once in the whole queue, under its
highest score, with the others named beside it (``also``); the counts count
every reason, and each reason's own list (``kind``/``reason``) has every item.

The functions here read what a run recorded and return rows; they never change
the dataset. The fronts act through :class:`~tl_app.project.Project`, so every
decision is undoable, and items a person kept are left out.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from . import runs
from .errors import RunNotFound, TLError
from .project import Action, Item, Project

#: The reasons a row can have, in the order the UI lists them.
REASONS = ("label", "duplicate", "outlier", "quality")
#: What ``--kind`` selects.
KINDS = {"label": ("label",), "duplicates": ("duplicate",), "outliers": ("outlier", "quality"), "all": REASONS}
#: How a reason reads to a person.
REASON_NAMES = {"label": "wrong class?", "duplicate": "duplicate", "outlier": "outlier", "quality": "poor picture"}

#: Neighbours consulted for an item's label, and how fast their weight falls with distance
#: (measured on digits, bench/review.py: k of 5-20, plain or weighted votes).
KNN = 15
KNN_TEMPERATURE = 0.1
#: Robust z-score (distance to neighbours, in median absolute deviations) above which an item is an outlier.
OUTLIER_Z = 4.0


@dataclass
class ReviewRow:
    """One suspicious item: why, how sure, and what the model thinks it is."""

    item: str
    path: str
    source: str
    label: str
    predicted: Optional[str]
    confidence: Optional[float]
    loss: Optional[float]
    score: float
    reason: str = "label"
    detail: str = ""
    valid: Optional[bool] = None
    duplicate_of: Optional[str] = None
    duplicate_of_source: Optional[str] = None
    name: str = ""                               # the picture's file name, as a person knows it
    match: Optional[str] = None                  # duplicates: same, overlay, mirrored or possible
    group: Optional[str] = None                  # duplicates: the first picture of the group
    also: list[str] = field(default_factory=list)  # the item's other flagged reasons

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.reason != "duplicate":
            for k in ("duplicate_of", "duplicate_of_source", "match", "group"):
                d.pop(k)
        return d


def picture_name(it: Item) -> str:
    """The name a person knows a picture by: the file name it came under (never an item id)."""
    from urllib.parse import unquote

    src = (it.source or "").split("?")[0].split("#")[0].rstrip("/\\")
    name = unquote(src.replace("\\", "/").rsplit("/", 1)[-1]) if src else ""
    return name or it.file.rsplit("/", 1)[-1]


# --- evidence from arrays (framework-free, like cleanlab's functions) ------------------------
def _unit(emb):
    import numpy as np

    emb = np.asarray(emb, dtype=np.float32)
    return emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9)


def nearest_neighbours(emb, k: int, *, chunk: int = 2048):
    """``(index, similarity)`` of each row's ``k`` nearest other rows (cosine), in chunks of rows."""
    import numpy as np

    u = _unit(emb)
    n = len(u)
    k = max(0, min(k, n - 1))
    idx = np.zeros((n, k), dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    if k == 0:
        return idx, sim
    for s in range(0, n, chunk):
        S = u[s:s + chunk] @ u.T
        S[np.arange(len(S)), np.arange(s, s + len(S))] = -np.inf  # never one's own neighbour
        part = np.argpartition(-S, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(S, part, 1)
        order = np.argsort(-ps, axis=1)
        idx[s:s + chunk] = np.take_along_axis(part, order, 1)
        sim[s:s + chunk] = np.take_along_axis(ps, order, 1)
    return idx, sim


def knn_class_probs(emb, labels, n_classes: int, *, k: int = KNN, temperature: float = KNN_TEMPERATURE,
                    neighbours=None):
    """For each row, the weighted share of each class among its ``k`` nearest neighbours, itself left out.

    An item's own label never votes for it, so a picture filed in the wrong
    class is judged by the pictures that look like it. Closer neighbours weigh
    more (``exp(similarity / temperature)``).
    """
    import numpy as np

    labels = np.asarray(labels)
    idx, sim = neighbours if neighbours is not None else nearest_neighbours(emb, k)
    n, k = idx.shape
    counts = np.zeros((n, n_classes))
    if k:
        w = np.exp((sim - 1.0) / temperature)  # shifted by the largest possible similarity: no overflow
        np.add.at(counts, (np.repeat(np.arange(n), k), labels[idx].ravel()), w.ravel())
    alpha = 0.01 * counts.sum(1, keepdims=True) / max(k, 1) + 1e-12  # a little smoothing: no class is impossible
    return (counts + alpha) / (counts.sum(1, keepdims=True) + alpha * n_classes)


def combine_probs(*estimates):
    """Geometric mean of probability estimates, renormalised (missing ones are skipped)."""
    import numpy as np

    logs = [np.log(np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1.0)) for p in estimates if p is not None]
    if not logs:
        raise ValueError("no estimate")
    z = np.mean(logs, axis=0)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def label_evidence(emb, labels, n_classes: int, *, oof_probs=None, k: int = KNN):
    """Out-of-sample class probabilities for every item, from neighbours (and out-of-fold heads when given).

    Returns an array (N, n_classes); ``1 - probs[i, labels[i]]`` is item i's
    label score. Chosen by measurement (``bench/review.py --signals``): on digits
    with 5% of labels flipped, neighbours in the trained body's feature space
    found about 9 in 10 flipped labels; the loss tracked over epochs about 2 in 3
    and the final model's own loss 7 in 10 (it has partly learned the wrong labels).
    """
    return combine_probs(knn_class_probs(emb, labels, n_classes, k=k), oof_probs)


def outlier_scores(emb, *, k: int = 5, neighbours=None):
    """Robust z-score of each row's mean cosine distance to its ``k`` nearest neighbours."""
    import numpy as np

    if len(emb) < 3:
        return np.zeros(len(emb))
    _, sim = neighbours if neighbours is not None else nearest_neighbours(emb, k)
    dist = 1.0 - sim[:, :k].mean(1)
    med = np.median(dist)
    mad = np.median(np.abs(dist - med)) * 1.4826 + 1e-6
    return (dist - med) / mad


# --- the run's evidence -------------------------------------------------------------------
@dataclass
class Evidence:
    """What a run recorded for review: out-of-sample probabilities and features per item."""

    run: runs.Run
    vocab: list[str]
    probs: dict[str, list[float]] = field(default_factory=dict)   # item -> review probabilities
    suspect: dict[str, float] = field(default_factory=dict)       # item -> label score at training time
    trained_label: dict[str, str] = field(default_factory=dict)   # item -> label the run saw
    valid: dict[str, bool] = field(default_factory=dict)
    emb_items: list[str] = field(default_factory=list)
    embeddings: object = None                                     # (len(emb_items), D) array or None


def load_evidence(project: Project, run: runs.Run) -> Evidence:
    """Read a run's review evidence; items the run never saw are scored by its model on the spot."""
    import numpy as np

    scores = runs.read_json(project, run.id, "scores.json") or {"vocab": [], "items": []}
    ev = Evidence(run=run, vocab=list(scores["vocab"]))
    for s in scores["items"]:
        ev.probs[s["item"]] = s.get("review") or s["probs"]
        if s.get("suspect") is not None:
            ev.suspect[s["item"]] = float(s["suspect"])
        ev.trained_label[s["item"]] = s.get("label", "")
        ev.valid[s["item"]] = s.get("valid")
    efile = runs.run_dir(project, run.id) / "embeddings.npy"
    if efile.is_file():
        emb = np.load(efile, allow_pickle=False)
        ids = (runs.read_json(project, run.id, "snapshot.json") or {}).get("items", [])
        if len(ids) == len(emb):
            ev.emb_items = [s["item"] for s in ids]
            ev.embeddings = emb.astype(np.float32)
    return ev


def _complete(project: Project, ev: Evidence, items: list[Item]) -> None:
    """Score (and embed) the items added since the run with the run's model: it never saw them."""
    import numpy as np

    unscored = [it.id for it in items if it.id not in ev.probs]
    need_emb = ev.embeddings is not None and any(it.id not in set(ev.emb_items) for it in items)
    if not unscored and not need_emb:
        return
    from .predict import embed_items

    known = set(ev.emb_items)
    todo = sorted(set(unscored) | ({it.id for it in items if it.id not in known} if need_emb else set()))
    probs, emb, vocab = embed_items(project, todo, run_id=ev.run.id)
    ev.vocab = ev.vocab or vocab
    for iid, p in zip(todo, probs):
        if iid not in ev.probs:
            ev.probs[iid] = [float(x) for x in p]
            ev.valid[iid] = None
    if need_emb:
        extra = [(iid, e) for iid, e in zip(todo, emb) if iid not in known]
        if extra:
            ev.emb_items = ev.emb_items + [iid for iid, _ in extra]
            ev.embeddings = np.concatenate([ev.embeddings, np.stack([e for _, e in extra]).astype(np.float32)])


# --- the queue ------------------------------------------------------------------------------
def rank(project: Project, *, top: Optional[int] = None, label: Optional[str] = None, kind: str = "all",
         reason: Optional[str] = None, run_id: Optional[str] = None, include_kept: bool = False,
         loose: bool = False) -> list[ReviewRow]:
    """Active items that need a look, most suspicious first.

    Args:
        kind: ``label``, ``duplicates``, ``outliers`` (with quality problems) or ``all``.
        reason: only rows with this reason (narrower than ``kind``).
        label: only items of this class.
        run_id: the run whose evidence to use (default: the active run).
        loose: duplicates include mirrored copies and possible near copies.

    With several reasons an item appears once, under its most pressing one,
    its other reasons in ``also``; ``kind="label"`` ranks every item.
    ``label`` rows need a trained run (:class:`RunNotFound` otherwise), as do
    outliers; duplicates and quality problems do not.
    """
    if kind not in KINDS:
        raise TLError(f"Unknown kind '{kind}'; choose one of {', '.join(KINDS)}.")
    reasons = [r for r in KINDS[kind] if reason in (None, "", r)]
    run = runs.get_run(project, run_id) if run_id else runs.active_run(project)
    if run is None and kind == "label":
        raise RunNotFound("Review needs a trained model to judge labels: train one first in the Train tab.")
    rows = _rows(project, run, reasons, label=label, include_kept=include_kept, loose=loose)
    return _ordered(rows, once=len(reasons) > 1)[:top] if top else _ordered(rows, once=len(reasons) > 1)


def _ordered(rows: list[ReviewRow], *, once: bool) -> list[ReviewRow]:
    """Most suspicious first; with ``once``, each item only under its highest-scoring reason.

    The reasons left out are named on the row that stays (``also``), so a wrong
    class is never hidden behind a duplicate row, or the other way round.
    """
    rows = sorted(rows, key=lambda r: (-r.score, r.item))
    if once:
        others: dict[str, list[str]] = {}
        for r in rows:
            if flagged(r):
                others.setdefault(r.item, []).append(r.reason)
        seen: set[str] = set()
        kept = []
        for r in rows:
            if r.item in seen:
                continue
            seen.add(r.item)
            r.also = [x for x in others.get(r.item, []) if x != r.reason]
            kept.append(r)
        rows = kept
    return rows


def _rows(project: Project, run: Optional[runs.Run], reasons, *, label: Optional[str],
          include_kept: bool = False, loose: bool = False) -> list[ReviewRow]:
    """Every row for the given reasons (an item may have several), in no particular order."""
    kept = set() if include_kept else project.kept()
    every = [it for it in project.items() if it.id not in kept]
    shown = [it for it in every if label in (None, "", it.label)]
    if not shown:
        return []
    ev = None
    if run is not None:
        ev = load_evidence(project, run)
        _complete(project, ev, every)
    ids = {it.id for it in shown}
    rows: list[ReviewRow] = []
    if "label" in reasons and ev is not None:
        rows += _label_rows(project, ev, shown)
    if "duplicate" in reasons:
        rows += _duplicate_rows(project, every, ids, ev, loose=loose)
    if "outlier" in reasons and ev is not None:
        rows += _outlier_rows(project, ev, every, ids)
    if "quality" in reasons:
        rows += _quality_rows(project, shown, ev)
    return rows


def _opinion(ev: Optional[Evidence], it: Item) -> tuple[Optional[str], Optional[float], Optional[float]]:
    """(predicted, confidence, loss against the current label) from the evidence, if any."""
    if ev is None or it.id not in ev.probs or not ev.vocab:
        return None, None, None
    probs = ev.probs[it.id]
    best = max(range(len(probs)), key=probs.__getitem__)
    p_label = probs[ev.vocab.index(it.label)] if it.label in ev.vocab else 0.0
    return ev.vocab[best], round(float(probs[best]), 4), round(max(0.0, -math.log(max(p_label, 1e-12))), 4)


def _row(project: Project, it: Item, ev: Optional[Evidence], *, score: float, reason: str, detail: str,
         **extra) -> ReviewRow:
    predicted, confidence, loss = _opinion(ev, it)
    return ReviewRow(item=it.id, path=str(project.path_of(it)), source=it.source, label=it.label,
                     predicted=predicted, confidence=confidence, loss=loss, score=round(float(score), 4),
                     reason=reason, detail=detail, valid=ev.valid.get(it.id) if ev else None,
                     name=picture_name(it), **extra)


def _label_rows(project: Project, ev: Evidence, items: list[Item]) -> list[ReviewRow]:
    rows = []
    for it in items:
        predicted, confidence, loss = _opinion(ev, it)
        if predicted is None:
            continue
        if it.label not in ev.vocab:
            score = 1.0
            detail = f"The model was trained without the class '{it.label}'; train again to judge it."
        else:
            probs = ev.probs[it.id]
            # The score recorded at training time holds for the label the run saw; after a
            # relabel the item is judged against its new label by the same probabilities.
            score = ev.suspect.get(it.id) if ev.trained_label.get(it.id) == it.label else None
            if score is None:
                score = 1.0 - probs[ev.vocab.index(it.label)]
            detail = (f"Looks like '{predicted}' ({confidence:.0%}), not '{it.label}'." if predicted != it.label
                      else f"Looks like '{it.label}' ({confidence:.0%}).")
        rows.append(_row(project, it, ev, score=score, reason="label", detail=detail))
    return rows


def _duplicate_rows(project: Project, every: list[Item], shown: set[str], ev: Optional[Evidence], *,
                    loose: bool = False) -> list[ReviewRow]:
    """One row per picture that is a copy of another, pointing at the first picture of its group."""
    return [row for g in duplicate_groups(project, every, loose=loose, ev=ev) for row in g.rows
            if row.item in shown]


@dataclass
class DuplicateGroup:
    """Pictures that are copies of one another: the first one added, then the others with their rows."""

    first: Item
    others: list[Item]
    rows: list[ReviewRow]          # one per picture of ``others``, in the same order
    kind: str                      # the weakest link: same, overlay, mirrored or possible

    @property
    def items(self) -> list[Item]:
        return [self.first, *self.others]


_MATCHES: dict = {}  # the last matches found, by fingerprints and looseness
#: How sure a duplicate row is, by the kind of copy and whether the two are in one class.
_DUP_SCORE = {"same": (0.85, 0.97), "overlay": (0.83, 0.95), "mirrored": (0.55, 0.6), "possible": (0.35, 0.4)}


def duplicate_groups(project: Project, items: Optional[list[Item]] = None, *, loose: bool = False,
                     ev: Optional[Evidence] = None) -> list[DuplicateGroup]:
    """Groups of copies among ``items`` (active items a person has not kept, by default).

    Strict groups hold confirmed copies only (:data:`tl_app.dupes.COPY_KINDS`);
    with ``loose``, mirrored copies join them and each possible near copy makes
    a group of two (never chained). Broken and flat pictures are left out: they
    are shown as poor pictures.
    """
    from . import dupes
    from .quality import problems

    if items is None:
        kept = project.kept()
        items = [it for it in project.items() if it.id not in kept]
    bad = {iid for iid, p in problems(project, items).items() if p.kind in ("broken", "flat")}
    items = sorted((it for it in items if it.id not in bad), key=lambda it: (it.added, it.id))
    prints = dupes.item_fingerprints(project, items)
    items = [it for it in items if it.id in prints]
    if len(items) < 2:
        return []
    key = (tuple(it.sha256 for it in items), loose)
    matches = _MATCHES.get(key)
    if matches is None:  # the Review tab asks twice per view (queue and groups): once is enough
        matches = dupes.find_matches([prints[it.id] for it in items], mirrored=loose)
        _MATCHES.clear()
        _MATCHES[key] = matches
    # Confirmed copies (and, loose, mirrored ones) join groups; a possible near copy only ever pairs two
    # pictures, so that look-alikes never chain into a group whose "keep one" would trash them all.
    kinds = tuple(dupes.COPY_KINDS) + ((dupes.MIRRORED,) if loose else ())
    strongest: dict[int, dict[int, str]] = {}
    for m in matches:
        if m.kind in kinds:
            strongest.setdefault(m.a, {})[m.b] = m.kind
            strongest.setdefault(m.b, {})[m.a] = m.kind
    order = {k: i for i, k in enumerate((dupes.SAME, dupes.OVERLAY, dupes.MIRRORED, dupes.POSSIBLE))}
    member_sets = dupes.groups(len(items), matches, kinds)
    out, in_group = [], {}
    for members in member_sets:
        members.sort()  # items are in the order they were added: the first one is the original
        for j in members:
            in_group[j] = members[0]
        kinds_of = []
        for j in members[1:]:
            links = strongest.get(j, {})
            kinds_of.append(links.get(members[0]) or min((k for i, k in links.items() if i in members),
                                                         key=order.__getitem__, default=dupes.SAME))
        out.append(_group(project, ev, [items[j] for j in members], kinds_of))
    if loose:
        paired = set()
        for m in matches:
            if m.kind != dupes.POSSIBLE or in_group.get(m.a, m.a) == in_group.get(m.b, m.b):
                continue
            if m.b in in_group and in_group[m.b] != m.b:
                continue  # the later picture is already a copy in a group: that row stands
            if (m.a, m.b) in paired:
                continue
            paired.add((m.a, m.b))
            out.append(_group(project, ev, [items[m.a], items[m.b]], [dupes.POSSIBLE]))
    out.sort(key=lambda g: -max(r.score for r in g.rows))
    return out


def _group(project: Project, ev: Optional[Evidence], members: list[Item], kinds: list[str]) -> DuplicateGroup:
    """A group from its pictures (the first added first) and the kind of copy each other one is."""
    first = members[0]
    rows = []
    name = f"“{picture_name(first)}”"
    for it, kind in zip(members[1:], kinds):
        same_class = it.label == first.label
        where = "in the same class" if same_class else f"in class '{first.label}'"
        detail = {
            "same": f"The same picture as {name} {where}.",
            "overlay": f"The same picture as {name} {where}, except for text or a mark on one of them.",
            "mirrored": f"A mirrored copy of {name} {where}.",
            "possible": f"Possible near copy of {name} {where}: they look alike, but the app is not "
                        "sure they are the same picture. Compare them side by side.",
        }[kind]
        rows.append(_row(project, it, ev, score=_DUP_SCORE[kind][0 if same_class else 1], reason="duplicate",
                         detail=detail, duplicate_of=first.id, duplicate_of_source=first.source, match=kind,
                         group=first.id))
    order = ("same", "overlay", "mirrored", "possible")
    weakest = max(kinds, key=order.index) if kinds else "same"
    return DuplicateGroup(first, members[1:], rows, weakest)


def keep_one(project: Project, group: list[str], keep: str) -> Action:
    """Keep ``keep`` and move the other pictures of a duplicate group to the trash, in one undoable step."""
    from .errors import InputError

    ids = list(dict.fromkeys(group))
    if keep not in ids:
        raise InputError("Choose the picture to keep among the pictures of the group.")
    others = [i for i in ids if i != keep]
    if not others:
        raise InputError("This group has only one picture; there is nothing to trash.")
    name = picture_name(project.item(keep))
    n = len(others)
    return project.delete(others, summary=f"kept “{name}” and moved {n} cop{'ies' if n != 1 else 'y'} of it "
                                          "to the trash")


def _outlier_rows(project: Project, ev: Evidence, every: list[Item], shown: set[str]) -> list[ReviewRow]:
    import numpy as np

    if ev.embeddings is None:
        return []
    pos = {iid: i for i, iid in enumerate(ev.emb_items)}
    live = [it for it in every if it.id in pos]
    if len(live) < 8:
        return []
    emb = ev.embeddings[[pos[it.id] for it in live]]
    z = outlier_scores(emb)
    rows = []
    for it, zi in zip(live, z):
        if it.id in shown and zi > OUTLIER_Z:
            score = min(0.95, 0.5 + 0.04 * float(zi))
            rows.append(_row(project, it, ev, score=score, reason="outlier",
                             detail=f"Unlike the other pictures ({zi:.0f}x further from its nearest "
                                    f"neighbours than usual); is it one of your classes at all?"))
    return rows


def _quality_rows(project: Project, items: list[Item], ev: Optional[Evidence]) -> list[ReviewRow]:
    from .quality import problems

    found = problems(project, items)
    return [_row(project, it, ev, score=found[it.id].score, reason="quality", detail=found[it.id].detail)
            for it in items if it.id in found]


def confusion(rows: list[ReviewRow], vocab: list[str]) -> tuple[list[str], list[list[int]], dict]:
    """Confusion matrix of current labels (rows) against the review's predictions (columns).

    Returns ``(labels, counts, cells)`` where ``cells[(actual, predicted)]`` lists
    the item ids behind a cell, most suspicious first.
    """
    labels = list(vocab)
    for r in rows:
        if r.label not in labels:
            labels.append(r.label)
    at = {v: i for i, v in enumerate(labels)}
    counts = [[0] * len(labels) for _ in labels]
    cells: dict[tuple[str, str], list[str]] = {}
    for r in sorted(rows, key=lambda r: -r.score):
        if r.predicted is None:
            continue
        counts[at[r.label]][at[r.predicted]] += 1
        cells.setdefault((r.label, r.predicted), []).append(r.item)
    return labels, counts, cells


# --- what the Review tab shows ------------------------------------------------------------------
@dataclass
class Queue:
    """The review queue as a person sees it: filtered rows, counts per reason, and the confusion matrix."""

    run: Optional[runs.Run]
    rows: list[ReviewRow]
    counts: dict[str, int]
    labels: list[str] = field(default_factory=list)
    matrix: list[list[int]] = field(default_factory=list)
    cells: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One sentence on what needs a look."""
        parts = [f"{n} {one if n == 1 else many}" for one, many, n in (
            ("probably in the wrong class", "probably in the wrong class", self.counts.get("label", 0)),
            ("duplicate", "duplicates", self.counts.get("duplicate", 0)),
            ("outlier", "outliers", self.counts.get("outlier", 0)),
            ("poor picture", "poor pictures", self.counts.get("quality", 0))) if n]
        return ", ".join(parts) if parts else "nothing stands out"


def flagged(row: ReviewRow) -> bool:
    """Whether a row is a problem rather than just a place in the ranking.

    A label row is one when the evidence disputes the label; a duplicate row when
    the copy is confirmed (a mirrored or possible near copy is only shown).
    """
    if row.reason == "label":
        return row.predicted is not None and row.predicted != row.label
    if row.reason == "duplicate":
        return row.match in ("same", "overlay")
    return True


def queue(project: Project, *, label: Optional[str] = None, reason: Optional[str] = None,
          cell: Optional[tuple[str, str]] = None, top: Optional[int] = None, loose: bool = False) -> Queue:
    """The queue for the Review tab: every reason, filtered by class, reason or confusion cell.

    ``cell`` is ``(actual, predicted)``: only the items of that confusion-matrix
    cell, most suspicious first. Without a trained run, the queue holds
    duplicates and poor pictures only. ``counts`` counts each reason on its
    own: an item both misfiled and a copy counts in both.
    """
    if reason not in (None, "", *REASONS):
        raise TLError(f"Unknown reason '{reason}'; choose one of {', '.join(REASONS)}.")
    run = runs.active_run(project)
    rows = _rows(project, run, REASONS, label=label, loose=loose)
    counts = {r: 0 for r in REASONS}
    for r in rows:
        if flagged(r):
            counts[r.reason] += 1
    everything = _ordered(rows, once=True)
    q = Queue(run=run, rows=[], counts=counts)
    label_rows = _ordered([r for r in rows if r.reason == "label"], once=False)
    if run is not None:
        vocab = (runs.read_json(project, run.id, "scores.json") or {}).get("vocab", [])
        q.labels, q.matrix, q.cells = confusion(label_rows, vocab)
    if cell is not None:
        by = {r.item: r for r in label_rows}
        picked = [by[i] for i in q.cells.get(tuple(cell), [])]
    elif reason:
        picked = _ordered([r for r in rows if r.reason == reason], once=False)
    else:
        picked = everything
    q.rows = picked[:top] if top else picked
    return q
