"""What a run's classes are called now, after classes were renamed, merged or deleted.

A model keeps the class names it was trained with (its vocab, in ``model.json``,
``scores.json``, ``report.json``); those files are never rewritten, so the model's
hash still checks. Instead, every front reads a run's names through
:func:`class_map`, which replays the class changes made since the run's snapshot
(the project's class-change log, see :meth:`tl_app.project.Project.class_log`):

- a renamed class answers with its new name ("cat" -> "cats");
- classes merged into one answer as that one, their probabilities summed
  ("husky" + "malamute" -> "dog");
- a deleted class stays a class of the model, named ``deleted class 'x'``. Its
  probability is neither dropped nor spread over the others: a picture of a class the
  user deleted would then be called another class with a confidence the model never
  had. Classify shows the model's honest answer and Review says that the picture looks
  like a deleted class instead of flagging it as filed in the wrong class. If a class of
  the same name is made again, the model's class is taken to be that one;
- a class a change made and an undo split again (merge undone after training) is
  named ``former class 'x'``: the model cannot tell its parts apart.

Undo and redo are entries of the log too, so undoing a rename brings the old name
back, and a change made before the run was trained (the run already knows the new
name) is never applied twice. Runs recorded before the log existed are read from the
time they started.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence

from . import runs
from .project import ClassStep, Project

DELETED = "deleted class '{}'"
FORMER = "former class '{}'"


@dataclass
class ClassMap:
    """A run's classes (``vocab``, the model's output order) and what each is called now (``names``).

    ``classes`` holds each name once, in the model's order (merged classes take the
    place of the first of them); ``gone`` the names that are not classes of the project
    now (deleted or split), with the model's own name for each.
    """

    vocab: list[str]
    names: list[str]
    gone: dict[str, str] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys(self.names))

    @property
    def changed(self) -> bool:
        return self.names != self.vocab

    def is_class(self, name: Optional[str]) -> bool:
        """Whether ``name`` (one of :attr:`classes`) is a class of the project, not a deleted or split one."""
        return name is not None and name not in self.gone

    def index(self) -> list[int]:
        """For each model class, its column in :attr:`classes`."""
        at = {n: i for i, n in enumerate(self.classes)}
        return [at[n] for n in self.names]

    def group(self, probs):
        """Probabilities over the model's classes (rows of ``len(vocab)``) summed into :attr:`classes`."""
        import numpy as np

        p = np.asarray(probs, dtype=np.float64)
        if not self.changed:
            return p
        out = np.zeros(p.shape[:-1] + (len(self.classes),))
        for j, c in enumerate(self.index()):
            out[..., c] += p[..., j]
        return out

    def as_dict(self, row: Sequence[float], digits: int = 6) -> dict[str, float]:
        """One row of probabilities as ``{class now: probability}``."""
        return {n: round(float(x), digits) for n, x in zip(self.classes, self.group(row))}

    def group_noise(self, noise, prior):
        """A noise matrix over the model's classes (``noise[true, label]``) over :attr:`classes`.

        A merged class's row is its parts' rows weighted by ``prior`` (how many pictures of
        each the run had), its column their columns summed; rows still sum to one.
        """
        import numpy as np

        N = np.asarray(noise, dtype=np.float64)
        if not self.changed:
            return N
        M = np.zeros((len(self.vocab), len(self.classes)))
        M[np.arange(len(self.vocab)), self.index()] = 1.0
        w = np.asarray(prior, dtype=np.float64) + 1e-9
        out = M.T @ ((w[:, None] * N) @ M)
        return out / out.sum(1, keepdims=True)


def replay(steps: Sequence[ClassStep]) -> list[ClassStep]:
    """The log entries that still count: an undo cancels its change (and a redo its undo) when
    both are in ``steps``; otherwise the entry stays, to be applied in order."""
    active: list[ClassStep] = []
    for st in steps:
        j = next((i for i in range(len(active) - 1, -1, -1) if active[i].action == st.action), None)
        if j is not None and active[j].step != st.step:
            del active[j]
        else:
            active.append(st)
    return active


def resolve(vocab: Sequence[str], steps: Sequence[ClassStep], current: Optional[Sequence[str]] = None) -> ClassMap:
    """Apply class changes (log entries, oldest first) to a model's class names.

    ``current`` is the project's classes now: a name is matched to its stored spelling
    (letter case ignored), and a deleted class made again under its name is that class.
    Without ``current`` (names at some past point) the names are only followed.
    """
    by_fold = {c.casefold(): c for c in current or []}
    active = replay(steps)
    names, gone = [], {}
    for v in vocab:
        cur, fate = v, None
        for st in active:
            key = cur if cur in st.names else next((k for k in st.names if k.casefold() == cur.casefold()), None)
            if key is None:
                continue
            to = st.names[key]
            if to is None or isinstance(to, list):
                fate = DELETED if to is None else FORMER
                break
            cur = to
        if current is not None and cur.casefold() in by_fold:
            names.append(by_fold[cur.casefold()])
        elif current is None and fate is None:
            names.append(cur)
        else:  # deleted, split, or (after a history the log does not hold) no longer a class
            shown = (fate or FORMER).format(cur)
            names.append(shown)
            gone[shown] = cur
    return ClassMap(list(vocab), names, gone)


#: Where each run's snapshot stands in the class-change log, by the snapshot file's path, size and
#: time: a snapshot lists every picture of the run (megabytes at 50,000 pictures), and each prediction
#: needs only this one number of it. A snapshot written anew (another size or time) is read anew.
_positions: dict[tuple, Optional[int]] = {}
_positions_lock = threading.Lock()


def _position(project: Project, run: runs.Run) -> tuple[Optional[int], Optional[float]]:
    path = runs.run_dir(project, run.id) / "snapshot.json"
    try:
        st = path.stat()
    except OSError:
        return None, run.created
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _positions_lock:
        if key in _positions:
            pos = _positions[key]
            return (pos, None) if pos is not None else (None, run.created)
    snap = runs.read_json(project, run.id, "snapshot.json")
    pos = snap["class_log"] if isinstance(snap, dict) and isinstance(snap.get("class_log"), int) else None
    with _positions_lock:
        if len(_positions) >= 64:
            _positions.pop(next(iter(_positions)))
        _positions[key] = pos
    return (pos, None) if pos is not None else (None, run.created)


def class_map(project: Project, run: runs.Run, vocab: Optional[Sequence[str]] = None, *,
              at: Optional[runs.Run] = None) -> ClassMap:
    """The run's classes as the project calls them now (or as ``at``, a later run, called them).

    ``vocab`` defaults to the model's own (``model.json``). The one way every front
    (Classify, ``predict``, Review, the model card, the choice of run) reads a run's names.
    """
    if vocab is None:
        vocab = _model_vocab(project, run)
    after, after_time = _position(project, run)
    upto = None
    if at is not None:
        upto, _ = _position(project, at)
        if upto is None:  # a run recorded before the log: its names as it saw them are unknown
            return ClassMap(list(vocab), list(vocab))
    if after is None:
        steps = [s for s in project.class_log(after_time=after_time) if upto is None or s.seq <= upto]
    else:
        steps = project.class_log(after=after, upto=upto)
    return resolve(vocab, steps, None if at is not None else project.labels())


def _model_vocab(project: Project, run: runs.Run) -> list[str]:
    import json

    for name in ("model.json", "scores.json", "snapshot.json"):
        p = runs.run_dir(project, run.id) / name
        if p.is_file():
            vocab = json.loads(p.read_text(encoding="utf-8")).get("vocab")
            if vocab:
                return list(vocab)
    return []
