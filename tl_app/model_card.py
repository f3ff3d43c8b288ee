"""The model card: what anyone may know about the model Classify uses.

Its classes, how it did on the held-out pictures it never learned from
(accuracy, confusion matrix, precision and recall per class) and where its
pictures came from, counted by kind (web searches with their words, engines
and sites; the owner's own files) without any file name or server path. A
visitor of a shared app sees this and nothing else of the project. Classes are
named as the project names them now (:mod:`tl_app.class_map`), with the changes
since training said in words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional
from urllib.parse import urlsplit

from . import runs
from .class_map import ClassMap, class_map
from .project import Project

WEB, OWN, UNKNOWN = "web", "own", "unknown"


@dataclass
class ClassFigures:
    """One class of the model: pictures it learned from, held-out pictures checked, and how it did on them."""

    name: str
    learned_from: int
    checked: int
    precision: Optional[float] = None
    recall: Optional[float] = None


@dataclass
class Origin:
    """Where some of the model's pictures came from.

    ``kind`` is :data:`WEB` (found by a web search and downloaded), :data:`OWN` (the
    owner's own files: uploads, zips, folders) or :data:`UNKNOWN` (no record left).
    For web pictures: the search words, engines and the sites they came from (most first), and
    the licence filter each search asked for (``licences``, most first; "" when none was asked).
    """

    kind: str
    pictures: int
    queries: list[str] = field(default_factory=list)
    engines: list[str] = field(default_factory=list)
    sites: list[tuple[str, int]] = field(default_factory=list)
    licences: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class ModelCard:
    """What the model Classify uses is, how well it did, and what it learned from."""

    run: str                       # the run's name ("Quick · resnet18 · 25 Nov 14:02")
    arch: str
    mode: str
    trained: Optional[float]       # when the run ended (seconds since the epoch)
    accuracy: Optional[float]
    heldout: int
    learned_from: int
    classes: list[ClassFigures]
    confusion_labels: list[str]
    confusion: list[list[int]]
    origins: list[Origin]
    #: The classes changed since training, in words ("'cat' is now 'cats'"), empty when none did.
    changes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _origins(project: Project, item_ids: list[str]) -> list[Origin]:
    web: list[dict] = []
    own = unknown = 0
    known = {it.id: it for status in ("active", "deleted", "missing") for it in project.items(status=status)}
    for iid in item_ids:
        it = known.get(iid)
        if it is None:
            unknown += 1
            continue
        src = it.source or ""
        if src.startswith(("http://", "https://")):
            web.append({**(it.meta or {}), "url": src})
        elif src:
            own += 1
        else:
            unknown += 1
    out = []
    if web:
        queries = Counter(m.get("query") for m in web if m.get("query"))
        engines = Counter(m.get("engine") for m in web if m.get("engine"))
        sites: Counter = Counter()
        for m in web:
            try:
                host = (urlsplit(m.get("page_url") or m["url"]).hostname or "").lower()
            except ValueError:
                host = ""
            if host:
                sites[host.removeprefix("www.")] += 1
        licences = Counter("" if (m.get("license") or "any") == "any" else str(m["license"]) for m in web)
        out.append(Origin(WEB, len(web), [q for q, _ in queries.most_common()], [e for e, _ in engines.most_common()],
                          sites.most_common(), licences.most_common()))
    if own:
        out.append(Origin(OWN, own))
    if unknown:
        out.append(Origin(UNKNOWN, unknown))
    return out


def model_card(project: Project, run_id: Optional[str] = None) -> Optional[ModelCard]:
    """The card of the model Review and Classify use now, or of the run ``run_id`` (None before the first model)."""
    run = runs.get_run(project, run_id) if run_id else runs.active_run(project)
    if run is None:
        return None
    rep = runs.read_json(project, run.id, "report.json") or {}
    snap = runs.read_json(project, run.id, "snapshot.json") or {}
    items = list(snap.get("items") or []) if isinstance(snap, dict) else []
    vocab = list(snap.get("vocab") or []) if isinstance(snap, dict) else []
    per_class = rep.get("per_class") or {}
    conf = rep.get("confusion") or {}
    names = vocab or list(conf.get("labels") or []) or list(per_class)
    # Named as the project names its classes now: renamed, merged (figures summed) or deleted since.
    cmap = class_map(project, run, names)
    now = dict(zip(cmap.vocab, cmap.names))
    learned = Counter(now.get(it["label"], it["label"]) for it in items if not it.get("valid"))
    checked = Counter(now.get(it["label"], it["label"]) for it in items if it.get("valid"))
    labels, matrix = list(conf.get("labels") or []), [list(r) for r in conf.get("matrix") or []]
    accuracy = rep.get("accuracy", run.accuracy)
    if cmap.changed:
        if labels and len(matrix) == len(labels):
            lmap = class_map(project, run, labels)
            at = dict(zip(lmap.vocab, lmap.index()))
            k = len(lmap.classes)
            grouped = [[0] * k for _ in range(k)]
            for i, row in enumerate(matrix):
                for j, n in enumerate(row):
                    grouped[at[labels[i]]][at[labels[j]]] += int(n)
            labels, matrix = lmap.classes, grouped
            total = sum(map(sum, grouped))
            accuracy = round(sum(grouped[i][i] for i in range(k)) / total, 4) if total else accuracy
            per_class = {}
            for i, n in enumerate(labels):
                col, row = sum(r[i] for r in grouped), sum(grouped[i])
                per_class[n] = {"precision": round(grouped[i][i] / col, 4) if col else None,
                                "recall": round(grouped[i][i] / row, 4) if row else None}
        else:
            per_class = {now.get(k, k): v for k, v in per_class.items()}
    classes = [ClassFigures(n, learned.get(n, 0), checked.get(n, 0), (per_class.get(n) or {}).get("precision"),
                            (per_class.get(n) or {}).get("recall")) for n in cmap.classes]
    return ModelCard(run=runs.run_names(runs.list_runs(project)).get(run.id, run.name), arch=run.arch, mode=run.mode,
                     trained=run.finished, accuracy=accuracy,
                     heldout=int(rep.get("valid_items") or sum(checked.values())),
                     learned_from=int(rep.get("train_items") or sum(learned.values())), classes=classes,
                     confusion_labels=labels, confusion=matrix,
                     origins=_origins(project, [it["item"] for it in items]), changes=describe_changes(cmap))


def describe_changes(cmap: ClassMap) -> list[str]:
    """The model's classes that are called otherwise now, in words, one sentence part per class now."""
    out = []
    for name in cmap.classes:
        was = [v for v, n in zip(cmap.vocab, cmap.names) if n == name]
        if was == [name]:
            continue
        if not cmap.is_class(name):
            gone = cmap.gone[name]
            out.append(f"'{gone}' was deleted" if name.startswith("deleted") else
                       f"'{gone}' was split into other classes")
        elif len(was) == 1:
            out.append(f"'{was[0]}' is now '{name}'")
        else:
            out.append(f"{_quoted(was)} are now one class, '{name}'")
    return out


def _quoted(names: list[str]) -> str:
    q = [f"'{x}'" for x in names]
    return ", ".join(q[:-1]) + " and " + q[-1]
