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
- ``duplicate``: the same picture twice (perceptual hash), in one class or in two.
- ``outlier``: far from every other picture, in features the network could not
  fit to labels (measured with pictures of no class among digits).
- ``quality``: broken, tiny, blank or very dark pictures (no model needed).

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
from .project import Item, Project

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
#: Stored pictures whose shorter side is under this many pixels are "tiny".
TINY_SIDE = 64
#: Luminance (0-255) spread under which a picture is "blank", mean under which it is "very dark".
BLANK_STD = 6.0
DARK_MEAN = 28.0
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
    #: Counted as a problem ("probably in the wrong class", an outlier, ...); a label row that is
    #: only a place in the ranking, or where the app is unsure, is not.
    flagged: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.reason != "duplicate":
            d.pop("duplicate_of")
            d.pop("duplicate_of_source")
        return d


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


def label_evidence(emb, labels, n_classes: int, *, oof_probs=None, early=None, k: int = KNN) -> LabelEvidence:
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
    """
    estimates = [knn_class_probs(emb, labels, n_classes, k=k)]
    if early is not None:
        estimates.append(knn_class_probs(early, labels, n_classes, k=k))
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


# --- picture quality ----------------------------------------------------------------------
@dataclass
class Quality:
    """Brightness statistics of a stored picture (luminance 0-255), or why it cannot be read."""

    mean: float = 0.0
    std: float = 0.0
    error: str = ""


def measure_quality(path) -> Quality:
    """Mean and spread of a stored picture's luminance, read at a small size."""
    from PIL import Image, ImageStat

    try:
        with Image.open(path, formats=["JPEG"]) as im:
            im.draft("L", (64, 64))
            g = im.convert("L")
            g.thumbnail((64, 64))
            st = ImageStat.Stat(g)
            return Quality(mean=float(st.mean[0]), std=float(st.stddev[0]))
    except FileNotFoundError:
        return Quality(error="its file is missing")
    except (OSError, ValueError, SyntaxError) as e:
        return Quality(error=f"it can no longer be read ({type(e).__name__})")


def _quality_table(project: Project) -> None:
    with project._write() as con:
        con.execute("CREATE TABLE IF NOT EXISTS quality(sha256 TEXT PRIMARY KEY, mean REAL NOT NULL,"
                    " std REAL NOT NULL)")


def item_quality(project: Project, items: list[Item]) -> dict[str, Quality]:
    """Quality per item id, measured once per content hash and cached in the project database."""
    _quality_table(project)
    with project._read() as con:
        known = {r["sha256"]: Quality(r["mean"], r["std"]) for r in con.execute("SELECT * FROM quality")}
    out, new = {}, []
    for it in items:
        q = known.get(it.sha256)
        if q is None:
            q = measure_quality(project.path_of(it))
            if not q.error:  # a failure may be temporary: measure again next time
                new.append((it.sha256, q.mean, q.std))
                known[it.sha256] = q
        out[it.id] = q
    if new:
        with project._write() as con:
            con.executemany("INSERT OR REPLACE INTO quality(sha256, mean, std) VALUES(?,?,?)", new)
    return out


def quality_problem(it: Item, q: Quality) -> Optional[tuple[float, str]]:
    """``(score, detail)`` when a picture is broken, blank, very dark or tiny; None when it is fine."""
    if q.error:
        return 1.0, f"Broken picture: {q.error}."
    if q.std < BLANK_STD:
        return 0.9, f"Nearly blank: one flat colour (contrast {q.std:.1f} of 255)."
    if q.mean < DARK_MEAN:
        return 0.75, f"Very dark (average brightness {q.mean:.0f} of 255)."
    side = min(it.width, it.height)
    if side < TINY_SIDE:
        return 0.6, f"Tiny: {it.width}×{it.height} pixels; the network sees little detail."
    return None


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
    outlier: dict[str, float] = field(default_factory=dict)       # item -> outlier score at training time
    noise: object = None                                          # noise[true, label] (see label_noise) or None
    clean: dict = field(default_factory=dict)                     # item -> probabilities with the noise taken out

    def settle(self) -> None:
        """Take the dataset's label noise out of every item's probabilities (see clean_probs), once."""
        import numpy as np

        ids = [i for i in self.probs if i not in self.clean]
        if not ids:
            return
        P = np.asarray([self.probs[i] for i in ids], dtype=np.float64)
        self.clean.update(zip(ids, clean_probs(P, self.noise) if self.noise is not None else P))

    def judge(self, item: str, label: str) -> tuple[float, bool]:
        """``(probability that label is wrong for item, whether the app can tell)``: see judge_labels."""
        j = self.vocab.index(label)
        if self.noise is None:  # a run recorded before the noise estimate
            return 1.0 - float(self.probs[item][j]), True
        self.settle()
        wrong, _, apart = judge_labels([self.clean[item]], [j], self.noise)
        return float(wrong[0]), bool(apart[0] >= TELL_APART)


def load_evidence(project: Project, run: runs.Run) -> Evidence:
    """Read a run's review evidence; items the run never saw are scored by its model on the spot."""
    import numpy as np

    scores = runs.read_json(project, run.id, "scores.json") or {"vocab": [], "items": []}
    ev = Evidence(run=run, vocab=list(scores["vocab"]))
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
         reason: Optional[str] = None, run_id: Optional[str] = None, include_kept: bool = False) -> list[ReviewRow]:
    """Active items that need a look, most suspicious first.

    Args:
        kind: ``label``, ``duplicates``, ``outliers`` (with quality problems) or ``all``.
        reason: only rows with this reason (narrower than ``kind``).
        label: only items of this class.
        run_id: the run whose evidence to use (default: the active run).

    With several reasons an item appears once, under its most pressing one.
    ``label`` rows need a trained run (:class:`RunNotFound` otherwise), as do
    outliers; duplicates and quality problems do not.
    """
    if kind not in KINDS:
        raise TLError(f"Unknown kind '{kind}'; choose one of {', '.join(KINDS)}.")
    reasons = [r for r in KINDS[kind] if reason in (None, "", r)]
    run = runs.get_run(project, run_id) if run_id else runs.active_run(project)
    if run is None and kind == "label":
        raise RunNotFound("Review needs a trained model to judge labels: train one first in the Train tab.")
    rows = _rows(project, run, reasons, label=label, include_kept=include_kept)
    return _ordered(rows, once=len(reasons) > 1)[:top] if top else _ordered(rows, once=len(reasons) > 1)


def _ordered(rows: list[ReviewRow], *, once: bool) -> list[ReviewRow]:
    """Most suspicious first; with ``once``, each item only under its highest-scoring reason."""
    rows = sorted(rows, key=lambda r: (-r.score, -(r.loss or 0.0), r.item))
    if once:
        seen: set[str] = set()
        rows = [r for r in rows if not (r.item in seen or seen.add(r.item))]
    return rows


def _rows(project: Project, run: Optional[runs.Run], reasons, *, label: Optional[str],
          include_kept: bool = False) -> list[ReviewRow]:
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
        rows += _duplicate_rows(project, every, ids, ev)
    if "outlier" in reasons and ev is not None:
        rows += _outlier_rows(project, ev, every, ids)
    if "quality" in reasons:
        rows += _quality_rows(project, shown, ev)
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
                     reason=reason, detail=detail, valid=ev.valid.get(it.id) if ev else None, **extra)


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
        else:
            # Judged against the current label, so a relabel counts at once.
            score, wrong, apart = _label_score(ev, it)
            flag = score > FLAG_WRONG
            if flag and predicted != it.label:
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


def _duplicate_rows(project: Project, every: list[Item], shown: set[str], ev: Optional[Evidence]) -> list[ReviewRow]:
    """Each picture that looks the same as one added before it, pointing at the first one."""
    import numpy as np

    from .dupes import NEAR_DISTANCE, item_hashes

    # A perceptual hash of a blank or very dark picture says little (they all look alike); those
    # are shown as poor pictures instead.
    q = item_quality(project, every)
    every = [it for it in every if not q[it.id].error and q[it.id].std >= BLANK_STD and q[it.id].mean >= DARK_MEAN]
    if len(every) < 2:
        return []
    hashes = item_hashes(project, every)
    order = sorted(every, key=lambda it: (it.added, it.id))  # the first one added is "the original"
    h = np.array([hashes[it.id] for it in order], dtype=np.uint64)
    rows = []
    for j in range(1, len(order)):
        it = order[j]
        if it.id not in shown:
            continue
        d = np.bitwise_count(h[:j] ^ h[j])
        i = int(np.argmin(d))
        if d[i] > NEAR_DISTANCE:
            continue
        first = order[i]
        same = first.label == it.label
        dist = int(d[i])
        score = (0.85 if same else 0.97) - 0.02 * dist
        where = f"in the same class" if same else f"in class '{first.label}'"
        look = "the same picture as" if dist == 0 else "nearly the same picture as"
        rows.append(_row(project, it, ev, score=score, reason="duplicate",
                         detail=f"Looks {look} item {first.id} {where}.",
                         duplicate_of=first.id, duplicate_of_source=first.source))
    return rows


def _outlier_rows(project: Project, ev: Evidence, every: list[Item], shown: set[str]) -> list[ReviewRow]:
    """Pictures far from every other: scored when the run trained (see outlier_scores); pictures
    added since are measured in the run's features on the spot."""
    import numpy as np

    z = {it.id: ev.outlier[it.id] for it in every if it.id in ev.outlier}
    if len(z) < len(every) and ev.embeddings is not None:
        pos = {iid: i for i, iid in enumerate(ev.emb_items)}
        live = [it for it in every if it.id in pos]
        if len(live) >= 8:
            fresh = outlier_scores(ev.embeddings[[pos[it.id] for it in live]])
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
    rows = []
    q = item_quality(project, items)
    for it in items:
        problem = quality_problem(it, q[it.id])
        if problem:
            rows.append(_row(project, it, ev, score=problem[0], reason="quality", detail=problem[1]))
    return rows


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
        parts = [f"{n} {what}" for what, n in (
            ("probably in the wrong class", self.counts.get("label", 0)),
            ("duplicates", self.counts.get("duplicate", 0)),
            ("outliers", self.counts.get("outlier", 0)),
            ("poor pictures", self.counts.get("quality", 0))) if n]
        return ", ".join(parts) if parts else "nothing stands out"


def flagged(row: ReviewRow) -> bool:
    """Whether a row is a problem rather than just a place in the ranking (a label the evidence disputes)."""
    return row.flagged


def queue(project: Project, *, label: Optional[str] = None, reason: Optional[str] = None,
          cell: Optional[tuple[str, str]] = None, top: Optional[int] = None) -> Queue:
    """The queue for the Review tab: every reason, filtered by class, reason or confusion cell.

    ``cell`` is ``(actual, predicted)``: only the items of that confusion-matrix
    cell, most suspicious first. Without a trained run, the queue holds
    duplicates and poor pictures only.
    """
    if reason not in (None, "", *REASONS):
        raise TLError(f"Unknown reason '{reason}'; choose one of {', '.join(REASONS)}.")
    run = runs.active_run(project)
    rows = _rows(project, run, REASONS, label=label)
    everything = _ordered(rows, once=True)
    counts = {r: 0 for r in REASONS}
    for r in everything:
        if flagged(r):
            counts[r.reason] += 1
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
