"""Review: the items most likely to be wrong, whatever the reason, most suspicious first.

One queue; every row has a reason and a score between 0 and 1 (higher: look sooner):

- ``label``: the class may be wrong. Every item, training and validation alike,
  is ranked by the probability that its label is wrong, from evidence that never
  learned its label: its nearest neighbours (the item itself left out) in the
  network's features, also in features from before the network could memorise
  labels (a full run's frozen epoch), and heads trained without it (k-fold);
  confident learning then estimates how labels go wrong in this dataset, so a
  systematic error (a quarter of the 1s filed as 7) is found although a flipped
  item's look-alikes share its wrong label. Only a probable error is flagged
  ("probably in the wrong class"); where the evidence is weak, or the model often
  confuses the two classes, the row says the app is unsure. Measured on digits
  with random and systematic errors (``bench/review.py``).
- ``duplicate``: the same picture twice, in one class or in two: a copy found by
  :mod:`tl_app.dupes` (re-encoded, resized, cropped, framed or with text on it).
  Rows point at the first picture of their group; the loose view adds mirrored
  copies and possible near copies (which are never counted as problems).
- ``outlier``: far from every other picture, in features the network could not
  fit to labels (measured with pictures of no class among digits).
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
from .class_map import ClassMap, class_map
from .errors import RunNotFound, Stopped, TLError
from .jobs import Progress, ProgressFn, StopToken, no_progress, step_scope
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
#: The least rate at which any class is assumed to be filed under any other (see label_noise).
NOISE_FLOOR = 1e-3
#: A label is counted "probably in the wrong class" when the probability that it is wrong is above this.
FLAG_WRONG = 0.5
#: How well two classes must be told apart (see judge_labels: 1 never confused, 0 a coin toss)
#: before the app says which of the two a picture belongs to.
TELL_APART = 0.6
#: Modified z-score (distance to neighbours, in median absolute deviations) above which an item is an
#: outlier: 3.5, the usual cut (Iglewicz and Hoaglin, 1993).
OUTLIER_Z = 3.5
#: Neighbours an item's distance to the others is measured by, for outliers.
OUTLIER_K = 15


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
    #: Counted as a problem ("probably in the wrong class", an outlier, ...); a label row that is
    #: only a place in the ranking, or where the app is unsure, is not.
    flagged: bool = True

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
    # A block of similarities is (chunk x n), and its partition's indices twice that in bytes: at most
    # 4M entries (about 100 MB with its temporaries), however many pictures (2048 rows of 50,000 was 1.6 GB).
    chunk = max(16, min(chunk, (1 << 22) // n))
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


@dataclass
class LabelEvidence:
    """What the evidence says about every item's label (arrays in item order).

    ``probs``: out-of-sample class probabilities (neighbours, out-of-fold heads), which still
    carry the dataset's label noise. ``noise[c, j]``: how often a picture of class c is filed
    under class j, estimated from the whole dataset. ``clean``: what each picture looks like
    once those known confusions are taken out. ``wrong``: the probability that an item's
    label is wrong, its score in the ranking.
    """

    probs: object
    noise: object
    clean: object
    wrong: object
    rival: object = None
    apart: object = None

    @property
    def score(self):
        """The ranking score: ``wrong``, held at :data:`FLAG_WRONG` where the item's class and its rival
        are too often confused to say which is right."""
        import numpy as np

        return np.where(self.apart >= TELL_APART, self.wrong, np.minimum(self.wrong, FLAG_WRONG))


def label_noise(probs, labels, n_classes: int, *, floor: float = NOISE_FLOOR):
    """``noise[c, j]``: how often a picture of class c carries label j, by confident learning.

    As in cleanlab (Northcutt et al., 2021), an item clearly looks like class c when its
    out-of-sample probability of c reaches c's threshold (the mean probability of c over the
    items labelled c; the highest such class wins). Among the items that clearly look like c,
    the share filed under j estimates ``noise[c, j]``. Every rate is at least ``floor``: any
    label can go wrong.
    """
    import numpy as np

    P = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    C = n_classes
    thresh = np.array([P[y == c, c].mean() if (y == c).any() else np.inf for c in range(C)])
    above = P >= thresh - 1e-12
    ok = above.any(1)
    looks = np.where(above, P, -1.0).argmax(1)
    counts = np.zeros((C, C))  # counts[looks like, label]
    np.add.at(counts, (looks[ok], y[ok]), 1.0)
    seen = counts.sum(1) > 0
    noise = np.eye(C)  # a class nothing clearly looks like: no evidence of noise
    noise[seen] = counts[seen] / counts[seen].sum(1, keepdims=True)
    noise = np.maximum(noise, floor)
    return noise / noise.sum(1, keepdims=True)


def clean_probs(probs, noise, *, iters: int = 100):
    """The class probabilities ``p`` whose noisy version ``p @ noise`` best matches ``probs`` (per row).

    Neighbours' votes carry the label noise: among pictures of 1s where a quarter are filed
    as 7, a 1 gets a quarter of its votes for 7. This takes known confusions out (maximum
    likelihood on the simplex, by EM), so a 1 filed as 7 reads as a 1.
    """
    import numpy as np

    P = np.asarray(probs, dtype=np.float64)
    p = P.copy()
    for _ in range(iters):
        p = p * ((P / np.maximum(p @ noise, 1e-12)) @ noise.T)
        p /= p.sum(1, keepdims=True)
    return p


def wrong_label_probability(clean, labels, noise):
    """For each item, the probability that its label is wrong, given what it looks like and the noise.

    Bayes' rule: P(true class c | picture, label j) is proportional to ``clean[c] * noise[c, j]``.
    A 1 filed as 7 where 1s are often filed as 7 is judged a 1; a picture that looks half like
    its class is not, where its class is rarely confused with the other.
    """
    import numpy as np

    clean = np.asarray(clean, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    joint = clean * noise[:, y].T
    return 1.0 - joint[np.arange(len(y)), y] / np.maximum(joint.sum(1), 1e-300)


def judge_labels(clean, labels, noise):
    """``(wrong, rival, apart)`` per item: the probability that its label is wrong, the class it most
    looks like besides its label, and how well the noise lets those two classes be told apart.

    ``apart`` is the determinant of the two classes' noise restricted to them (1: never
    confused; 0: labels between them are a coin toss). Two-way confusion is what two classes the
    network cannot tell apart look like (say a quarter of each filed as the other), and there the
    neighbours' votes are too noisy to say which label is right; one-way confusion (a quarter of
    the 1s filed as 7, never the reverse) is label noise that can be undone.
    """
    import numpy as np

    clean = np.asarray(clean, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    wrong = wrong_label_probability(clean, y, noise)
    other = clean.copy()
    other[np.arange(len(y)), y] = -1.0
    rival = other.argmax(1) if clean.shape[1] > 1 else y
    a = noise[y, y] / (noise[y, y] + noise[y, rival])
    b = noise[rival, rival] / (noise[rival, rival] + noise[rival, y])
    return wrong, rival, a + b - 1.0


def label_evidence(emb, labels, n_classes: int, *, oof_probs=None, early=None, k: int = KNN,
                   neighbours=None, early_neighbours=None) -> LabelEvidence:
    """Every item's label judged by evidence that never learned it; see :class:`LabelEvidence`.

    ``emb``: the run's features; ``early``: features from before the network could memorise
    its labels (a full run's body after the frozen epoch); ``oof_probs``: probabilities from
    heads that never saw the item (k-fold), or a list of such from several heads. Neighbours in each feature space (the item left
    out) and the heads are combined (geometric mean), then confident learning estimates how
    labels go wrong in this dataset and each item gets the probability that its own label is
    wrong. Chosen by measurement (``bench/review.py``): on digits with random flips,
    neighbours alone found about 9 in 10; with systematic flips (a quarter of the 1s filed as
    7), they found 2 in 3, since an item's look-alikes share its wrong label; the noise
    estimate lifts both above 0.93.

    ``neighbours`` / ``early_neighbours``: :func:`nearest_neighbours` of ``emb`` / ``early`` at ``k``, when
    the caller has them already (see :func:`evidence_and_outliers`).
    """
    estimates = [knn_class_probs(emb, labels, n_classes, k=k, neighbours=neighbours)]
    if early is not None:
        estimates.append(knn_class_probs(early, labels, n_classes, k=k, neighbours=early_neighbours))
    estimates += list(oof_probs) if isinstance(oof_probs, (list, tuple)) else [oof_probs]
    P = combine_probs(*estimates)
    noise = label_noise(P, labels, n_classes)
    clean = clean_probs(P, noise)
    return LabelEvidence(P, noise, clean, *judge_labels(clean, labels, noise))


def outlier_scores(emb, *, k: int = OUTLIER_K, neighbours=None):
    """Robust z-score of each row's mean cosine distance to its ``k`` nearest neighbours.

    Measured in features the network could not fit to each picture's label (``bench/review.py``,
    pictures of no class among digits): in a fully trained network's features an odd picture
    sits among the class it was filed under, in the features of its frozen epoch it stands out.
    """
    import numpy as np

    if len(emb) < 3:
        return np.zeros(len(emb))
    _, sim = neighbours if neighbours is not None else nearest_neighbours(emb, k)
    dist = 1.0 - sim[:, :k].mean(1)
    med = np.median(dist)
    mad = np.median(np.abs(dist - med)) * 1.4826 + 1e-6
    return (dist - med) / mad


def evidence_and_outliers(emb, labels, n_classes: int, *, oof_probs=None, early=None):
    """``(label_evidence(...), outlier_scores(early or emb))`` as a training records them, each feature
    space's nearest neighbours searched once (at 50,000 pictures one search is most of a minute here)."""
    nb = nearest_neighbours(emb, KNN)
    early_nb = nearest_neighbours(early, KNN) if early is not None else None
    ev = label_evidence(emb, labels, n_classes, oof_probs=oof_probs, early=early, neighbours=nb,
                        early_neighbours=early_nb)
    base, base_nb = (emb, nb) if early is None else (early, early_nb)
    return ev, outlier_scores(base, neighbours=base_nb if OUTLIER_K == KNN else None)


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
    embeddings: object = None                                     # (len(emb_items), D) array (mapped from disk) or None
    outlier: dict[str, float] = field(default_factory=dict)       # item -> outlier score at training time
    noise: object = None                                          # noise[true, label] (see label_noise) or None
    clean: dict = field(default_factory=dict)                     # item -> probabilities with the noise taken out
    classes: Optional[ClassMap] = None                            # the model's classes -> ``vocab`` (named as now)
    #: a run stopped before its check of every picture: its probabilities come from pictures it was
    #: learning, so it cannot tell a wrong label (nothing is flagged; see :func:`stopped_early`)
    partial: bool = False
    _judged: dict = field(default_factory=dict, repr=False)       # (item, label) -> judge()'s answer

    def is_class(self, name: Optional[str]) -> bool:
        """Whether ``name`` (of ``vocab``) is a class of the project, not one deleted or split since the run."""
        return self.classes is None or self.classes.is_class(name)

    def named(self, name: str) -> str:
        """A class of ``vocab`` for a sentence: 'x', or the deleted class 'x' (or the former class 'x')."""
        if self.is_class(name):
            return f"'{name}'"
        return f"the {name}"

    def settle(self) -> None:
        """Take the dataset's label noise out of every item's probabilities (see clean_probs), once."""
        import numpy as np

        if len(self.clean) >= len(self.probs):  # every item settled (asked once per row: keep it O(1))
            return
        ids = [i for i in self.probs if i not in self.clean]
        P = np.asarray([self.probs[i] for i in ids], dtype=np.float64)
        self.clean.update(zip(ids, clean_probs(P, self.noise) if self.noise is not None else P))

    def judge(self, item: str, label: str) -> tuple[float, bool]:
        """``(probability that label is wrong for item, whether the app can tell)``: see judge_labels."""
        got = self._judged.get((item, label))
        if got is not None:
            return got
        j = self.vocab.index(label)
        if self.partial:  # a model that learned the picture: a ranking, never a judgment
            return 1.0 - float(self.probs[item][j]), False
        if self.noise is None:  # a run recorded before the noise estimate
            return 1.0 - float(self.probs[item][j]), True
        self.settle()
        wrong, _, apart = judge_labels([self.clean[item]], [j], self.noise)
        return float(wrong[0]), bool(apart[0] >= TELL_APART)

    def judge_many(self, pairs: list[tuple[str, str]]) -> None:
        """Judge many ``(item, label)`` pairs at once (one array operation, not one per item) and
        remember the answers for :meth:`judge`: a queue of 50,000 pictures asks three times per row."""
        import numpy as np

        if self.noise is None or self.partial:
            return
        at = {v: i for i, v in enumerate(self.vocab)}
        pairs = [(i, lab) for i, lab in pairs if i in self.probs and lab in at and (i, lab) not in self._judged]
        if not pairs:
            return
        self.settle()
        clean = np.asarray([self.clean[i] for i, _ in pairs], dtype=np.float64)
        wrong, _, apart = judge_labels(clean, [at[lab] for _, lab in pairs], self.noise)
        self._judged.update({p: (float(w), bool(a >= TELL_APART)) for p, w, a in zip(pairs, wrong, apart)})


_SCORES: dict = {}  # the last scores.json read: (path, time, size) -> its content


def _scores(project: Project, run_id: str) -> Optional[dict]:
    """A run's ``scores.json``, read once while it stays the same file (50,000 rows take seconds to parse)."""
    f = runs.run_dir(project, run_id) / "scores.json"
    try:
        st = f.stat()
    except OSError:
        return None
    key = (str(f), st.st_mtime_ns, st.st_size)
    if key not in _SCORES:
        _SCORES.clear()
        _SCORES[key] = runs.read_json(project, run_id, "scores.json")
    return _SCORES[key]


def stopped_early(project: Project, run: Optional[runs.Run]) -> bool:
    """Whether ``run`` was stopped before its check of every picture: Review can rank by it but
    cannot tell which pictures are in the wrong class, nor which are outliers."""
    return run is not None and (_scores(project, run.id) or {}).get("review_pass") == "skipped"


def load_evidence(project: Project, run: runs.Run) -> Evidence:
    """Read a run's review evidence; items the run never saw are scored by its model on the spot."""
    import numpy as np

    scores = _scores(project, run.id) or {"vocab": [], "items": []}
    ev = Evidence(run=run, vocab=list(scores["vocab"]), partial=scores.get("review_pass") == "skipped")
    if scores.get("noise"):
        ev.noise = np.asarray(scores["noise"], dtype=np.float64)
    for s in scores["items"]:
        ev.probs[s["item"]] = s.get("review") or s["probs"]
        if s.get("suspect") is not None:
            ev.suspect[s["item"]] = float(s["suspect"])
        ev.trained_label[s["item"]] = s.get("label", "")
        if s.get("outlier") is not None:
            ev.outlier[s["item"]] = float(s["outlier"])
        ev.valid[s["item"]] = s.get("valid")
    efile = runs.run_dir(project, run.id) / "embeddings.npy"
    if efile.is_file():
        # Mapped, not read: only pictures added since the run need the features (50,000 pictures: 100 MB).
        # Every use converts them to float32 as they are read, which is what converting them first gave.
        emb = np.load(efile, mmap_mode="r", allow_pickle=False)
        ids = (runs.read_json(project, run.id, "snapshot.json") or {}).get("items", [])
        if len(ids) == len(emb):
            ev.emb_items = [s["item"] for s in ids]
            ev.embeddings = emb
    if ev.vocab:
        _rename(ev, class_map(project, run, ev.vocab))
    return ev


def _rename(ev: Evidence, cmap: ClassMap) -> None:
    """Read the evidence in the classes as they are called now: probabilities of merged classes
    summed, the noise matrix merged likewise, the labels the run saw renamed."""
    ev.classes = cmap
    if not cmap.changed:
        return
    import numpy as np

    if ev.noise is not None:
        seen = [ev.trained_label.get(i) for i in ev.probs]
        prior = np.array([sum(1 for x in seen if x == v) for v in cmap.vocab], dtype=np.float64)
        ev.noise = cmap.group_noise(ev.noise, prior)
    ev.probs = {i: [float(x) for x in cmap.group(p)] for i, p in ev.probs.items()}
    now = dict(zip(cmap.vocab, cmap.names))
    ev.trained_label = {i: now.get(x, x) for i, x in ev.trained_label.items()}
    ev.vocab = cmap.classes


def _complete(project: Project, ev: Evidence, items: list[Item]) -> None:
    """Score (and embed) the items added since the run with the run's model: it never saw them."""
    import numpy as np

    unscored = [it.id for it in items if it.id not in ev.probs]
    known = set(ev.emb_items)
    need_emb = ev.embeddings is not None and any(it.id not in known for it in items)
    if not unscored and not need_emb:
        return
    from .predict import embed_items

    todo = sorted(set(unscored) | ({it.id for it in items if it.id not in known} if need_emb else set()))
    probs, emb, vocab = embed_items(project, todo, run_id=ev.run.id)
    if ev.classes is None:  # the run recorded no scores: its model's own classes, named as now
        ev.vocab = list(vocab)
        _rename(ev, class_map(project, ev.run, vocab))
    for iid, p in zip(todo, probs):
        if iid not in ev.probs:
            ev.probs[iid] = [float(x) for x in ev.classes.group(p)]
            ev.valid[iid] = None
    if need_emb:
        extra = [(iid, e) for iid, e in zip(todo, emb) if iid not in known]
        if extra:
            ev.emb_items = ev.emb_items + [iid for iid, _ in extra]
            ev.embeddings = np.concatenate([np.asarray(ev.embeddings, dtype=np.float32),
                                            np.stack([e for _, e in extra]).astype(np.float32)])


# --- the queue ------------------------------------------------------------------------------
def rank(project: Project, *, top: Optional[int] = None, label: Optional[str] = None, kind: str = "all",
         reason: Optional[str] = None, run_id: Optional[str] = None, include_kept: bool = False,
         loose: bool = False, progress: ProgressFn = no_progress, stop: Optional[StopToken] = None) -> list[ReviewRow]:
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

    ``progress`` gets the stages of the work (:func:`review_stages`, ``unit="stages"``) and, within
    a stage that measures new pictures, their count (``unit="pictures"``); ``stop`` ends it with
    :class:`Stopped` (what was measured is cached): no ranking is returned half-judged.
    """
    if kind not in KINDS:
        raise TLError(f"Unknown kind '{kind}'; choose one of {', '.join(KINDS)}.")
    reasons = [r for r in KINDS[kind] if reason in (None, "", r)]
    run = runs.get_run(project, run_id) if run_id else runs.active_run(project)
    if run is None and kind == "label":
        raise RunNotFound("Review needs a trained model to judge labels: train one first in the Train tab.")
    rows = _rows(project, run, reasons, label=label, include_kept=include_kept, loose=loose, progress=progress,
                 stop=stop)
    return _ordered(rows, once=len(reasons) > 1)[:top] if top else _ordered(rows, once=len(reasons) > 1)


def _ordered(rows: list[ReviewRow], *, once: bool) -> list[ReviewRow]:
    """Most suspicious first; with ``once``, each item only under its highest-scoring reason.

    The reasons left out are named on the row that stays (``also``), so a wrong
    class is never hidden behind a duplicate row, or the other way round.
    """
    rows = sorted(rows, key=lambda r: (-r.score, -(r.loss or 0.0), r.item))
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


_ROWS: dict = {}  # the last rows computed, by what they depend on (see _rows)


def _rows(project: Project, run: Optional[runs.Run], reasons, *, label: Optional[str],
          include_kept: bool = False, loose: bool = False, progress: ProgressFn = no_progress,
          stop: Optional[StopToken] = None) -> list[ReviewRow]:
    """Every row for the given reasons (an item may have several), in no particular order.

    The last answer is kept for as long as nothing in the project's database changed: the
    Review tab asks again on every view, and at 50,000 pictures an answer takes seconds.
    """
    key = (str(project.root), project.revision(), run.id if run else None, tuple(reasons), label, include_kept,
           loose)
    if _ROWS.get("key") == key:
        return list(_ROWS["rows"])
    try:
        # The caches filled on the way (fingerprints, quality) report their pictures and stop with it.
        with step_scope(stop, progress):
            rows = _compute_rows(project, run, reasons, label=label, include_kept=include_kept, loose=loose,
                                 progress=progress, stop=stop)
    except Stopped:
        raise Stopped(REVIEW_STOPPED) from None
    if project.revision() == key[1]:  # nothing was written meanwhile
        _ROWS.clear()
        _ROWS.update(key=key, rows=rows)
    return list(rows)


REVIEW_STOPPED = "Review was stopped before it judged every picture; nothing is shown as judged."


def review_stages(run: Optional[runs.Run], reasons) -> list[str]:
    """The stages of computing the queue, in order, as its progress names them."""
    out = ["reading the pictures"]
    if run is not None:
        out += ["reading the model's evidence", "judging every picture's class"]
    out += [name for reason, name in (("label", "ranking the classes"), ("duplicate", "finding copies"),
                                      ("outlier", "finding outliers"), ("quality", "checking picture quality"))
            if reason in reasons and (run is not None or reason in ("duplicate", "quality"))]
    return out


def _compute_rows(project: Project, run: Optional[runs.Run], reasons, *, label: Optional[str],
                  include_kept: bool = False, loose: bool = False, progress: ProgressFn = no_progress,
                  stop: Optional[StopToken] = None) -> list[ReviewRow]:
    stages = review_stages(run, reasons)

    def stage(name: str) -> None:  # a Stop between stages: nothing half-judged is returned (or kept)
        if stop is not None and stop.is_set():
            raise Stopped(REVIEW_STOPPED)
        progress(Progress(stages.index(name), len(stages), name, unit="stages"))

    stage("reading the pictures")
    kept = set() if include_kept else project.kept()
    every = [it for it in project.items() if it.id not in kept]
    shown = [it for it in every if label in (None, "", it.label)]
    if not shown:
        return []
    ev = None
    if run is not None:
        stage("reading the model's evidence")
        ev = load_evidence(project, run)
        _complete(project, ev, every)
        stage("judging every picture's class")
        ev.judge_many([(it.id, it.label) for it in every])
    ids = {it.id for it in shown}
    rows: list[ReviewRow] = []
    if "label" in reasons and ev is not None:
        stage("ranking the classes")
        rows += _label_rows(project, ev, shown)
    if "duplicate" in reasons:
        stage("finding copies")
        rows += _duplicate_rows(project, every, ids, ev, loose=loose)
    if "outlier" in reasons and ev is not None:
        stage("finding outliers")
        rows += _outlier_rows(project, ev, every, ids)
    if "quality" in reasons:
        stage("checking picture quality")
        rows += _quality_rows(project, shown, ev)
    if stop is not None and stop.is_set():
        raise Stopped(REVIEW_STOPPED)
    progress(Progress(len(stages), len(stages), "done", unit="stages"))
    return rows


def _label_score(ev: Evidence, it: Item) -> tuple[float, float, bool]:
    """``(score, probability that the label is wrong, whether the app can tell)`` for an item whose
    label the run knows; the score is held at FLAG_WRONG where it cannot tell."""
    wrong, apart = ev.judge(it.id, it.label)
    if ev.noise is None and ev.trained_label.get(it.id) == it.label and it.id in ev.suspect:
        wrong = ev.suspect[it.id]  # a run recorded before the noise estimate: its own score
    return (wrong if apart else min(wrong, FLAG_WRONG)), wrong, apart


def _opinion(ev: Optional[Evidence], it: Item) -> tuple[Optional[str], Optional[float], Optional[float]]:
    """(predicted, confidence, loss of the current label) from the evidence, if any.

    The prediction is the class the item most likely is once the labels' noise is taken out, its
    confidence the share of the evidence that points there; the loss is ``-log`` of the probability
    that the label is right, as the label score judges it (so the label ranking is also an order of losses).
    """
    if ev is None or it.id not in ev.probs or not ev.vocab:
        return None, None, None
    probs = ev.probs[it.id]
    score, apart = (_label_score(ev, it)[::2]) if it.label in ev.vocab else (1.0, False)
    ev.settle()
    # Where the label's class and its rival are too often confused, taking the noise out says more
    # than the evidence does: the evidence's own choice is shown.
    guess = ev.clean[it.id] if apart else probs
    best = max(range(len(guess)), key=guess.__getitem__)
    return ev.vocab[best], round(float(probs[best]), 4), round(max(0.0, -math.log(max(1.0 - score, 1e-12))), 4)


def _row(project: Project, it: Item, ev: Optional[Evidence], *, score: float, reason: str, detail: str,
         **extra) -> ReviewRow:
    predicted, confidence, loss = _opinion(ev, it)
    return ReviewRow(item=it.id, path=str(project.path_of(it)), source=it.source, label=it.label,
                     predicted=predicted, confidence=confidence, loss=loss, score=round(float(score), 4),
                     reason=reason, detail=detail, valid=ev.valid.get(it.id) if ev else None,
                     name=picture_name(it), **extra)


def _label_rows(project: Project, ev: Evidence, items: list[Item]) -> list[ReviewRow]:
    """Every item with the probability that its label is wrong; only a probable error is flagged.

    A row is flagged ("probably in the wrong class") when that probability is above
    :data:`FLAG_WRONG` and the model tells the two classes apart; otherwise a picture
    that looks somewhat like another class says that the app is unsure.
    """
    rows = []
    for it in items:
        predicted, confidence, loss = _opinion(ev, it)
        if predicted is None:
            continue
        if it.label not in ev.vocab:
            score, flag = 1.0, False
            detail = f"The model was trained without the class '{it.label}'; train again to judge it."
        elif not ev.is_class(predicted):
            # The evidence points at a class deleted (or split) since the run: the model cannot say which
            # of the project's classes the picture belongs to, so it is shown, not counted as misfiled.
            score, wrong, _ = _label_score(ev, it)
            score, flag = min(score, FLAG_WRONG), False
            if wrong > FLAG_WRONG:
                what = ("delete it too if it is one" if predicted.startswith("deleted")
                        else "move it if it belongs elsewhere")
                detail = (f"Looks like {ev.named(predicted)} ({confidence:.0%}), not '{it.label}': {what}. "
                          f"Train again to judge it among your classes.")
            else:
                detail = (f"Unsure: it looks somewhat like {ev.named(predicted)} ({confidence:.0%}), which the "
                          f"model still knows; train again to judge it among your classes.")
        else:
            # Judged against the current label, so a relabel counts at once.
            score, wrong, apart = _label_score(ev, it)
            flag = score > FLAG_WRONG
            if ev.partial and predicted != it.label:
                detail = (f"Unsure: it looks somewhat like '{predicted}' ({confidence:.0%}) to a model that was "
                          "stopped while it learned these pictures; train to the end to judge its class.")
            elif ev.partial:
                detail = f"Looks like '{it.label}' ({confidence:.0%}) to a model that was stopped early."
            elif flag and predicted != it.label:
                detail = f"Looks like '{predicted}' ({confidence:.0%}), not '{it.label}'."
            elif flag:
                detail = (f"Probably not '{it.label}' ({wrong:.0%}): pictures like it that are filed as "
                          f"'{it.label}' are often something else.")
            elif predicted != it.label and not apart:
                detail = (f"Unsure: it looks somewhat like '{predicted}' ({confidence:.0%}), but the model often "
                          f"confuses '{predicted}' and '{it.label}', so it cannot say which is right.")
            elif predicted != it.label:
                detail = (f"Unsure: it looks somewhat like '{predicted}' ({confidence:.0%}), but the evidence is "
                          f"too weak to say that '{it.label}' is wrong.")
            else:
                detail = f"Looks like '{it.label}' ({confidence:.0%})."
        rows.append(_row(project, it, ev, score=score, reason="label", detail=detail, flagged=flag))
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


#: looseness -> (content hashes of the pictures compared, their matches, those of the pictures offered): the last search
_MATCHES: dict = {}
_KIND_CODES = ("same", "overlay", "mirrored", "possible")


def _matches_file(project: Project, loose: bool):
    return project.cache_dir / f"matches-{'loose' if loose else 'strict'}.npz"


def _dupes_code() -> str:
    """What made a search's matches: the copy finder's own source (a change to it is a new search)."""
    import hashlib
    from pathlib import Path

    from . import dupes

    if "code" not in _CODE:
        _CODE["code"] = hashlib.sha256(Path(dupes.__file__).read_bytes()).hexdigest()[:16]
    return _CODE["code"]


_CODE: dict = {}


def _save_matches(project: Project, loose: bool, entry: tuple) -> None:
    """Keep the last search on disk (``cache/matches-*.npz``, derived data: safe to delete), so that
    Review after a restart of the app, or in another process, reads it instead of searching again."""
    import os
    import threading

    import numpy as np

    shas, matches, offered = entry
    f = _matches_file(project, loose)
    tmp = f.with_name(f".{f.name}.{os.getpid()}.{threading.get_ident()}.tmp")  # two visitors may save at once
    try:
        f.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, code=np.array(_dupes_code()), shas=np.array(shas, dtype="S64"),
                     offered=np.array(offered, dtype="S64"),
                     a=np.array([m.a for m in matches], dtype=np.int64), b=np.array([m.b for m in matches], dtype=np.int64),
                     kind=np.array([_KIND_CODES.index(m.kind) for m in matches], dtype=np.int8),
                     difference=np.array([m.difference for m in matches], dtype=np.float64),
                     identical=np.array([m.identical for m in matches], dtype=bool))
        os.replace(tmp, f)
    except OSError:  # a cache: without it the next visit searches again
        tmp.unlink(missing_ok=True)


def _load_matches(project: Project, loose: bool) -> Optional[tuple]:
    """The last search kept on disk, if the copy finder that made it is this one."""
    import numpy as np

    from . import dupes

    try:
        with np.load(_matches_file(project, loose), allow_pickle=False) as z:
            if str(z["code"]) != _dupes_code():
                return None
            shas = tuple(x.decode() for x in z["shas"].tolist())
            offered = tuple(x.decode() for x in z["offered"].tolist())
            matches = [dupes.Match(a, b, _KIND_CODES[k], d, i) for a, b, k, d, i in zip(
                z["a"].tolist(), z["b"].tolist(), z["kind"].tolist(), z["difference"].tolist(), z["identical"].tolist())]
    except (OSError, ValueError, KeyError, IndexError):
        return None
    return shas, matches, offered


def _known_matches(shas: tuple, prints: list, loose: bool) -> list:
    """:func:`tl_app.dupes.find_matches` on these pictures, reusing the last search where it can.

    The Review tab asks twice per view (queue and groups), and after each delete or keep
    the pictures are those of the last search less a few: at 50,000 pictures a new search
    takes most of a minute, so then the last matches are kept for the pictures still here
    and only the groups that lost a picture are searched again (a deleted picture may have
    been what joined two others). New pictures need a new search.
    """
    from . import dupes

    last = _MATCHES.get(loose)
    if last is not None and last[0] == shas:
        return last[1]
    pos = {sha: i for i, sha in enumerate(shas)}
    if last is None or len(pos) != len(shas) or not set(shas) <= set(last[0]) or len(shas) < 2:
        matches = dupes.find_matches(prints, mirrored=loose)
    else:
        old, old_matches = last[0], last[1]
        found = {}
        for m in old_matches:
            a, b = pos.get(old[m.a]), pos.get(old[m.b])
            if a is not None and b is not None:  # the pictures keep their order: a < b still
                found[(a, b)] = dupes.Match(a, b, m.kind, m.difference, m.identical)
        for g in dupes.groups(len(old), old_matches, (dupes.SAME, dupes.OVERLAY, dupes.MIRRORED, dupes.POSSIBLE)):
            rest = [pos[old[j]] for j in g if old[j] in pos]
            if len(rest) == len(g) or len(rest) < 2:
                continue
            for m in dupes.find_matches([prints[j] for j in rest], mirrored=loose):
                a, b = rest[m.a], rest[m.b]
                if (a, b) not in found or _STRENGTH[m.kind] > _STRENGTH[found[(a, b)].kind]:
                    found[(a, b)] = dupes.Match(a, b, m.kind, m.difference, m.identical)
        matches = sorted(found.values(), key=lambda m: (m.a, m.b))
    _MATCHES[loose] = (shas, matches, None)
    return matches


_STRENGTH = {"same": 3, "overlay": 2, "mirrored": 1, "possible": 0}
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
    offered = tuple(it.sha256 for it in items)
    last = _MATCHES.get(loose)
    if last is None or last[2] != offered:  # the last search of any process, kept on disk
        kept = _load_matches(project, loose)
        if kept is not None:
            _MATCHES[loose] = last = kept
    if last is not None and last[2] == offered:  # the same pictures as last time: not a fingerprint read
        compared = set(last[0])
        items = [it for it in items if it.sha256 in compared]
        matches = last[1]
    else:
        prints = dupes.item_fingerprints(project, items)
        items = [it for it in items if it.id in prints]
        if len(items) < 2:
            return []
        shas = tuple(it.sha256 for it in items)
        matches = _known_matches(shas, [prints[it.id] for it in items], loose)
        _MATCHES[loose] = (shas, matches, offered)
        _save_matches(project, loose, _MATCHES[loose])
    if len(items) < 2:
        return []
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
    """Pictures far from every other: scored when the run trained (see outlier_scores); pictures
    added since are measured in the run's features on the spot."""
    import numpy as np

    z = {it.id: ev.outlier[it.id] for it in every if it.id in ev.outlier}
    if len(z) < len(every) and ev.embeddings is not None:
        pos = {iid: i for i, iid in enumerate(ev.emb_items)}
        live = [it for it in every if it.id in pos]
        if len(live) >= 8:
            fresh = outlier_scores(np.asarray(ev.embeddings[[pos[it.id] for it in live]], dtype=np.float32))
            z.update({it.id: float(zi) for it, zi in zip(live, fresh) if it.id not in z})
    if len(every) < 8:
        return []
    rows = []
    for it in every:
        zi = z.get(it.id)
        if it.id in shown and zi is not None and zi > OUTLIER_Z:
            score = min(0.95, 0.5 + 0.04 * zi)
            rows.append(_row(project, it, ev, score=score, reason="outlier",
                             detail="Unlike the other pictures: even the most similar ones are much further from "
                                    "it than is usual here. Is it one of your classes at all?"))
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
    #: rows in the whole filtered queue (``rows`` holds the ``top`` first of them)
    total: int = 0
    #: the run was stopped before its check of every picture (see :func:`stopped_early`)
    partial: bool = False

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

    A label row is one when the evidence says the label is probably wrong (not where the app
    is unsure); a duplicate row when the copy is confirmed (a mirrored or possible near copy
    is only shown).
    """
    if row.reason == "duplicate":
        return row.match in ("same", "overlay")
    return row.flagged


def queue(project: Project, *, label: Optional[str] = None, reason: Optional[str] = None,
          cell: Optional[tuple[str, str]] = None, top: Optional[int] = None, loose: bool = False,
          progress: ProgressFn = no_progress, stop: Optional[StopToken] = None) -> Queue:
    """The queue for the Review tab: every reason, filtered by class, reason or confusion cell.

    ``cell`` is ``(actual, predicted)``: only the items of that confusion-matrix
    cell, most suspicious first. Without a trained run, the queue holds
    duplicates and poor pictures only. ``counts`` counts each reason on its
    own: an item both misfiled and a copy counts in both. ``progress`` and ``stop`` as for :func:`rank`.
    """
    if reason not in (None, "", *REASONS):
        raise TLError(f"Unknown reason '{reason}'; choose one of {', '.join(REASONS)}.")
    run = runs.active_run(project)
    rows = _rows(project, run, REASONS, label=label, loose=loose, progress=progress, stop=stop)
    counts = {r: 0 for r in REASONS}
    for r in rows:
        if flagged(r):
            counts[r.reason] += 1
    everything = _ordered(rows, once=True)
    q = Queue(run=run, rows=[], counts=counts, partial=stopped_early(project, run))
    label_rows = _ordered([r for r in rows if r.reason == "label"], once=False)
    if run is not None:
        vocab = (_scores(project, run.id) or {}).get("vocab", [])
        q.labels, q.matrix, q.cells = confusion(label_rows, class_map(project, run, vocab).classes if vocab else [])
    if cell is not None:
        by = {r.item: r for r in label_rows}
        picked = [by[i] for i in q.cells.get(tuple(cell), [])]
    elif reason:
        picked = _ordered([r for r in rows if r.reason == reason], once=False)
    else:
        picked = everything
    q.rows = picked[:top] if top else picked
    q.total = len(picked)
    return q
