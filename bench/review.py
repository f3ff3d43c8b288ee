"""Finding wrong labels and outliers: our review against fastai's validation-only ranking, per variant.

Data: scikit-learn's digits (1797 pictures of 8x8) upscaled to 64 px, with labels made wrong in
several ways (one variant per line). Both sides train resnet18 from scratch at 64 px for the same
epochs, as whole processes:

  baseline  a plain fastai script (DataBlock, vision_learner(pretrained=False), fine_tune), then
            ``Interpretation.top_losses`` (it ranks the validation split only)
  ours      ``python -m tl_app train`` then ``python -m tl_app review --kind label``

K is the number of wrong labels; recall@K is the share of them in the top K of a ranking. The cost
is our time (train + review) over the baseline's training alone, both as whole processes, in CPU
time (the work done: other jobs on a shared machine stretch wall time by a factor that changes from
minute to minute) and in wall time. Goals at a cost <= 1.5x: recall@K >= 0.93 on random flips and
>= 0.85 on systematic ones (stretch 0.95 / 0.90).

The flags: Review counts "N probably in the wrong class" and "N outliers". For each variant the
bench prints the precision and recall of those flagged sets, and of the rules Review used before on
the same run (a label flagged when its neighbours in the final features vote for another class; an
outlier at a robust z-score above 4 of the distance to 5 neighbours in those features); "the ranking
before" is the recall@K of those neighbours' votes.

With --quick, each variant also trains quick mode in a project of its own. The machine is offline,
so its "pretrained" body is resnet18 with random weights (a weights file): features that know
nothing of digits.
Variants with ``foreign`` pictures add pictures of no class at all (letters, noise, shapes), filed
under random classes, and measure the outlier flag on them; they are left out of the label figures.

Variants marked held out were never run while the ranking was tuned; they say whether the figures
hold on data the ranking was not tuned on.

    .venv/bin/python bench/review.py                       # every variant (about 90 s each)
    .venv/bin/python bench/review.py --variant sys-20      # one (or a comma list); results are kept
    .venv/bin/python bench/review.py --summary             # the table of every variant measured so far
    .venv/bin/python bench/review.py --list                # the variants
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "out" / "review.json"

BASELINE = r'''
import sys, json
from fastai.vision.all import *
path, size, epochs, k = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dls = DataBlock(
    blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
    splitter=RandomSplitter(valid_pct=0.2, seed=42), get_y=parent_label,
    item_tfms=[Resize(size, method='squish')]
).dataloaders(path, bs=64)
learn = vision_learner(dls, resnet18, metrics=error_rate, pretrained=False)
learn.fine_tune(epochs - 1)
interp = Interpretation.from_learner(learn)
losses, idxs = interp.top_losses(k)
files = [str(dls.valid_ds.items[i]) for i in idxs]
print(json.dumps({"top": files, "error_rate": float(learn.validate()[1])}))
'''

#: Look-alike digits: a systematic error files some pictures of the first under the second.
LOOK_ALIKE = ((1, 7), (3, 8), (4, 9), (5, 6))


@dataclass(frozen=True)
class Variant:
    """One way of making labels wrong. ``systematic``: (from, to) pairs, each filing ``rate`` of ``from`` as ``to``."""

    name: str
    upscale: str = "bilinear"       # how 8x8 becomes 64 px: bilinear or nearest
    seed: int = 0
    random: float = 0.0             # share of pictures filed under a uniformly chosen other class
    systematic: tuple = ()
    rate: float = 0.0
    copies: int = 0                 # recompressed copies (JPEG quality 30-95) filed under another class
    foreign: int = 0                # pictures of no class (letters, noise, shapes) filed under random classes
    held_out: bool = False
    kind: str = "random"            # which goal applies: random or systematic

    def describe(self) -> str:
        parts = [f"{self.upscale}, seed {self.seed}"]
        if self.systematic:
            pairs = ", ".join(f"{a}->{b}" for a, b in self.systematic)
            parts.append(f"{self.rate:.0%} of {pairs}")
        if self.random:
            parts.append(f"{self.random:.0%} random flips")
        if self.copies:
            parts.append(f"{self.copies} recompressed copies in another class")
        if self.foreign:
            parts.append(f"{self.foreign} pictures of no class")
        return "; ".join(parts)


VARIANTS = {v.name: v for v in (
    Variant("bilinear-5", "bilinear", 0, random=0.05),
    Variant("nearest-5", "nearest", 1, random=0.05),
    Variant("copies", "nearest", 2, random=0.05, copies=10),
    Variant("random-2", "bilinear", 3, random=0.02),
    Variant("random-20", "nearest", 4, random=0.20),
    Variant("web", "bilinear", 5, random=0.02, systematic=((1, 7), (3, 8)), rate=0.25, kind="systematic"),
    Variant("sys-10", "nearest", 6, random=0.02, systematic=LOOK_ALIKE, rate=0.10, kind="systematic"),
    Variant("sys-20", "bilinear", 7, random=0.02, systematic=LOOK_ALIKE, rate=0.20, kind="systematic"),
    Variant("sys-30", "nearest", 8, random=0.02, systematic=LOOK_ALIKE, rate=0.30, kind="systematic"),
    Variant("foreign", "bilinear", 9, random=0.05, foreign=36),
    # Never run while tuning: other seeds, other pairs (the reverse directions), another mix.
    Variant("heldout-random", "nearest", 21, random=0.10, copies=10, foreign=30, held_out=True),
    Variant("heldout-sys", "bilinear", 22, random=0.02, systematic=((7, 1), (8, 3), (9, 4), (6, 5)), rate=0.20,
            held_out=True, kind="systematic"),
)}

GOALS = {"random": (0.93, 0.95), "systematic": (0.85, 0.90)}


# --- the data ------------------------------------------------------------------------------------
def _foreign_picture(i: int, rng):
    """A 64 px picture of no digit: a letter in the digits' own style, noise, or a shape."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    kind = i % 3
    if kind == 0:  # a letter, drawn large, then seen at 8x8 like the digits
        letter = "ABCEFHKLMNPRTUWXYZ"[int(rng.integers(0, 18))]
        im = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(im).text((32, 32), letter, fill=255, anchor="mm", stroke_width=4, stroke_fill=255,
                                font=ImageFont.load_default(size=int(rng.integers(40, 52))))
        small = np.asarray(im.filter(ImageFilter.GaussianBlur(2)).resize((8, 8), Image.Resampling.BOX), float)
        small = Image.fromarray((small / max(small.max(), 1) * 255).astype(np.uint8), "L")
        method = Image.Resampling.BILINEAR if rng.random() < 0.5 else Image.Resampling.NEAREST
        return small.resize((64, 64), method).convert("RGB")
    if kind == 1:  # noise: grey or coloured, coarse or fine
        cell = int(rng.choice([1, 4, 8]))
        shape = (64 // cell, 64 // cell, 3 if rng.random() < 0.5 else 1)
        arr = rng.integers(0, 256, shape).astype(np.uint8)
        arr = np.repeat(np.repeat(arr, cell, 0), cell, 1)
        return Image.fromarray(arr.squeeze(), "RGB" if shape[2] == 3 else "L").convert("RGB")
    im = Image.new("RGB", (64, 64), tuple(int(c) for c in rng.integers(0, 120, 3)))  # a shape on a background
    d = ImageDraw.Draw(im)
    fill = tuple(int(c) for c in rng.integers(120, 256, 3))
    x0, y0 = (int(v) for v in rng.integers(2, 28, 2))
    x1, y1 = (int(v) for v in rng.integers(36, 62, 2))
    [d.ellipse, d.rectangle, lambda box, fill: d.polygon([(box[0], box[3]), ((box[0] + box[2]) // 2, box[1]),
                                                          (box[2], box[3])], fill=fill)][int(rng.integers(0, 3))](
        (x0, y0, x1, y1), fill=fill)
    return im


def build_dataset(root: Path, v: Variant) -> dict[str, str]:
    """Write the variant's pictures in a folder per (possibly wrong) label.

    Returns file name -> what is wrong with it: "" (nothing), "flip", "copy" or "foreign".
    """
    import io

    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(v.seed)
    n = len(d.target)
    labels = d.target.astype(int).copy()
    wrong = np.zeros(n, dtype=bool)
    for a, b in v.systematic:
        idx = np.flatnonzero(d.target == a)
        pick = rng.choice(idx, size=int(round(v.rate * len(idx))), replace=False)
        labels[pick], wrong[pick] = b, True
    if v.random:
        free = np.flatnonzero(~wrong)
        pick = rng.choice(free, size=int(round(v.random * n)), replace=False)
        labels[pick] = (d.target[pick] + rng.integers(1, 10, len(pick))) % 10
        wrong[pick] = True
    method = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}[v.upscale]
    truth: dict[str, str] = {}
    pictures = {}

    def save(im, label: int, name: str, what: str, **kw):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        im.save(root / str(label) / name, **kw)
        truth[name] = what

    for i, img in enumerate(d.images):
        arr = (img / 16.0 * 255).astype(np.uint8)
        pictures[i] = Image.fromarray(arr, "L").resize((64, 64), method).convert("RGB")
        save(pictures[i], int(labels[i]), f"d{i:04d}.png", "flip" if wrong[i] else "")
    for j, i in enumerate(rng.choice(np.flatnonzero(~wrong), size=v.copies, replace=False)):
        buf = io.BytesIO()
        pictures[int(i)].save(buf, format="JPEG", quality=int(rng.integers(30, 96)))
        other = int((d.target[i] + rng.integers(1, 10)) % 10)
        save(Image.open(io.BytesIO(buf.getvalue())), other, f"c{j:03d}_of_d{int(i):04d}.jpg", "copy", quality=95)
    for j in range(v.foreign):
        save(_foreign_picture(j, rng), int(rng.integers(0, 10)), f"f{j:03d}.png", "foreign")
    return truth


# --- running both sides ------------------------------------------------------------------------
def run(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """``(wall seconds, CPU seconds, stdout)`` of a whole process."""
    import resource

    t = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"failed: {' '.join(cmd[:4])}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - t, cpu, out.stdout


def _pr(flagged: set, positive: set) -> dict:
    hit = len(flagged & positive)
    return {"flagged": len(flagged), "hits": hit, "positives": len(positive),
            "precision": hit / len(flagged) if flagged else None,
            "recall": hit / len(positive) if positive else None}


def _label_figures(rows: list[dict], name_of: dict, wrong: set, foreign: set, k: int) -> dict:
    rows = [r for r in rows if name_of[r["item"]] not in foreign]
    hits = sum(name_of[r["item"]] in wrong for r in rows[:k])
    return {"recall": hits / k, "hits": hits,
            "flag": _pr({name_of[r["item"]] for r in rows if r.get("flagged")}, wrong),
            "unsure": sum(1 for r in rows if r["predicted"] != r["label"] and not r.get("flagged"))}


def measure_quick(work: Path, truth: dict, env: dict) -> dict:
    """Quick mode on the same pictures, in a project of its own. The machine is offline, so the
    "pretrained" body is resnet18 with random weights given as a weights file: features that know
    nothing of digits, let alone of their labels."""
    import torch
    import torchvision

    from tl_app.importer import import_files
    from tl_app.project import Project

    wrong = {n for n, w in truth.items() if w in ("flip", "copy")}
    foreign = {n for n, w in truth.items() if w == "foreign"}
    weights = work / "random_resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    proj = Project.open(work / "proj_quick", create=True)
    import_files(proj, [work / "digits"])
    name_of = {it.id: Path(it.source).name for it in proj.items()}
    py = sys.executable
    t_train, _, _ = run([py, "-m", "tl_app", "train", str(proj.root), "--quick", "--weights", str(weights), "--size", "64",
                      "--json"], env)
    t_review, _, out = run([py, "-m", "tl_app", "review", str(proj.root), "--kind", "label", "--json"], env)
    res = _label_figures(json.loads(out), name_of, wrong, foreign, len(wrong))
    _, _, out = run([py, "-m", "tl_app", "review", str(proj.root), "--kind", "outliers", "--json"], env)
    flag_out = {name_of[r["item"]] for r in json.loads(out) if r["reason"] == "outlier"}
    res.update(seconds=t_train + t_review, outlier_flag=_pr(flag_out, foreign) if foreign else None,
               outlier_flag_count=len(flag_out))
    return res


def measure(v: Variant, epochs: int, work: Path, *, keep: bool = False, quick: bool = False) -> dict:
    """Train both sides on the variant's data and return its figures."""
    import numpy as np

    from tl_app import runs
    from tl_app.importer import import_files
    from tl_app.project import Project

    truth = build_dataset(work / "digits", v)
    wrong = {n for n, w in truth.items() if w in ("flip", "copy")}
    foreign = {n for n, w in truth.items() if w == "foreign"}
    k = len(wrong)
    env = dict(os.environ, TL_OFFLINE="1", PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore",
               TORCH_HOME=str(work / "torch_home"), GRADIO_ANALYTICS_ENABLED="False")
    py = sys.executable
    subprocess.run([py, "-c", "import fastai.vision.all"], env=env, check=True)  # warm the file cache

    (work / "baseline.py").write_text(BASELINE)
    t_base, c_base, out = run([py, str(work / "baseline.py"), str(work / "digits"), "64", str(epochs), str(k + len(foreign))],
                      env)
    base = json.loads(out.strip().splitlines()[-1])
    # fastai's top losses hold pictures of no class too; they are not wrong labels here, so they are
    # skipped and the top K of the rest counted (the same for our ranking).
    base_top = [Path(f).name for f in base["top"] if Path(f).name not in foreign][:k]
    base_hits = sum(n in wrong for n in base_top)

    proj = Project.open(work / "proj", create=True)
    import_files(proj, [work / "digits"])
    name_of = {it.id: Path(it.source).name for it in proj.items()}
    t_train, c_train, out = run([py, "-m", "tl_app", "train", str(proj.root), "--no-pretrained", "--size", "64",
                        "--epochs", str(epochs - 1), "--batch-size", "64", "--json"], env)
    run_id = json.loads(out)["run"]
    t_review, c_review, out = run([py, "-m", "tl_app", "review", str(proj.root), "--kind", "label", "--json"], env)
    rows = [r for r in json.loads(out) if name_of[r["item"]] not in foreign]
    ours_hits = sum(name_of[r["item"]] in wrong for r in rows[:k])
    acc = runs.get_run(proj, run_id).metrics.get("accuracy")
    _, _, out = run([py, "-m", "tl_app", "review", str(proj.root), "--kind", "outliers", "--json"], env)
    outlier_rows = [r for r in json.loads(out) if r["reason"] == "outlier"]

    flag_label = {name_of[r["item"]] for r in rows if r.get("flagged")}
    # The rules Review used before, on the same run: a label flagged when its neighbours in the final
    # features vote for another class; an outlier at a robust z above 4 of the distance to 5 neighbours there.
    from tl_app import review

    vocab = runs.read_json(proj, run_id, "scores.json")["vocab"]
    snap = runs.read_json(proj, run_id, "snapshot.json")["items"]
    emb = np.load(runs.run_dir(proj, run_id) / "embeddings.npy").astype(np.float32)
    labels = np.array([vocab.index(x["label"]) for x in snap])
    votes = review.knn_class_probs(emb, labels, len(vocab))
    naive = {name_of[x["item"]] for x, p, lab in zip(snap, votes, labels)
             if p.argmax() != lab and name_of[x["item"]] not in foreign}
    before_rank = sorted((x for x in zip(snap, votes, labels) if name_of[x[0]["item"]] not in foreign),
                         key=lambda x: x[1][x[2]])[:k]
    before_hits = sum(name_of[x["item"]] in wrong for x, _, _ in before_rank)
    z_before = review.outlier_scores(emb, k=5)
    before_out = {name_of[x["item"]] for x, zi in zip(snap, z_before) if zi > 4.0}
    flag_out = {name_of[r["item"]] for r in outlier_rows if r.get("flagged", True)}
    res = {"variant": asdict(v), "k": k, "n": len(truth), "epochs": epochs,
           "baseline": {"recall": base_hits / k, "hits": base_hits, "seconds": t_base, "cpu_seconds": c_base,
                        "valid_error": base["error_rate"]},
           "ours": {"recall": ours_hits / k, "hits": ours_hits, "train_seconds": t_train,
                    "review_seconds": t_review, "cpu_seconds": c_train + c_review, "valid_accuracy": acc,
                    "before_recall": before_hits / k},
           "cost": (t_train + t_review) / t_base, "cpu_cost": (c_train + c_review) / c_base,
           "wrong_flag": _pr(flag_label, wrong), "naive_flag": _pr(naive, wrong),
           "unsure": sum(1 for r in rows if r["predicted"] != r["label"] and not r.get("flagged")),
           "outlier_flag": _pr(flag_out, foreign) if foreign else None,
           "outlier_before": _pr(before_out, foreign) if foreign else None,
           "outlier_flag_count": len(flag_out),
           "when": time.strftime("%Y-%m-%d %H:%M")}
    if quick:
        res["quick"] = measure_quick(work, truth, env)
    if keep:
        res["project"] = str(proj.root)
    return res


# --- printing -------------------------------------------------------------------------------------
def _f(x, fmt="{:.2f}") -> str:
    return "–" if x is None else fmt.format(x)


def line(r: dict) -> str:
    v = Variant(**{**r["variant"], "systematic": tuple(tuple(p) for p in r["variant"]["systematic"])})
    lo, hi = GOALS[v.kind]
    cost = r.get("cpu_cost", r["cost"])
    ok = "met" if r["ours"]["recall"] >= lo and cost <= 1.5 else "MISSED"
    wf, nf, of = r["wrong_flag"], r["naive_flag"], r["outlier_flag"]
    s = (f"{v.name:<15}{' (held out)' if v.held_out else ''}: {v.describe()}\n"
         f"    recall@{r['k']}: ours {r['ours']['recall']:.2f} ({r['ours']['hits']}/{r['k']}), "
         f"fastai valid-only {r['baseline']['recall']:.2f} ({r['baseline']['hits']}/{r['k']}), "
         f"the ranking before {_f(r['ours'].get('before_recall'))}; "
         f"cost {cost:.2f}x in CPU time, {r['cost']:.2f}x in wall time (train {r['ours']['train_seconds']:.0f} s + "
         f"review {r['ours']['review_seconds']:.1f} s / fastai {r['baseline']['seconds']:.0f} s); "
         f"goal {lo:.2f} at <= 1.5x: {ok}\n"
         f"    'wrong class' flags: {wf['flagged']}, precision {_f(wf['precision'])}, recall {_f(wf['recall'])}, "
         f"{r['unsure']} more shown as unsure "
         f"(the rule before: {nf['flagged']}, precision {_f(nf['precision'])}, recall {_f(nf['recall'])})")
    if of is not None:
        ob = r.get("outlier_before") or {}
        s += (f"\n    outlier flags: {of['flagged']}, precision {_f(of['precision'])}, recall {_f(of['recall'])} "
              f"({of['positives']} pictures of no class; the rule before: {ob.get('flagged')}, precision "
              f"{_f(ob.get('precision'))}, recall {_f(ob.get('recall'))})")
    elif r.get("outlier_flag_count"):
        s += f"\n    outlier flags: {r['outlier_flag_count']} (none of them is a picture of no class)"
    q = r.get("quick")
    if q:
        s += (f"\n    quick mode (a random body): recall@{r['k']} {q['recall']:.2f} in {q['seconds']:.0f} s; "
              f"'wrong class' flags {q['flag']['flagged']}, precision {_f(q['flag']['precision'])}, "
              f"recall {_f(q['flag']['recall'])}, {q['unsure']} unsure")
        if q.get("outlier_flag"):
            s += (f"; outlier flags {q['outlier_flag']['flagged']}, precision {_f(q['outlier_flag']['precision'])},"
                  f" recall {_f(q['outlier_flag']['recall'])}")
        elif q.get("outlier_flag_count"):
            s += f"; {q['outlier_flag_count']} outlier flags"
    return s


def summary(results: dict) -> str:
    head = (f"{'variant':<16}{'K':>4} {'ours':>5} {'fastai':>6} {'cpu':>6} {'wall':>6}  {'goal':>5}  "
            f"{'flags':>5} {'prec':>5} {'rec':>5}  {'outl':>4} {'prec':>5} {'rec':>5}")
    out = [head, "-" * len(head)]
    for name in VARIANTS:
        r = results.get(name)
        if r is None:
            continue
        v = VARIANTS[name]
        wf, of = r["wrong_flag"], r["outlier_flag"]
        lo, _ = GOALS[v.kind]
        out.append(f"{name + ('*' if v.held_out else ''):<16}{r['k']:>4} {r['ours']['recall']:>5.2f} "
                   f"{r['baseline']['recall']:>6.2f} {r.get('cpu_cost', r['cost']):>5.2f}x {r['cost']:>5.2f}x  "
                   f"{lo:>5.2f}  {wf['flagged']:>5} "
                   f"{_f(wf['precision']):>5} {_f(wf['recall']):>5}  "
                   f"{(of or {}).get('flagged', r.get('outlier_flag_count', 0)):>4} "
                   f"{_f((of or {}).get('precision')):>5} {_f((of or {}).get('recall')):>5}")
    out.append("* held out: never run while the ranking was tuned. ours/fastai: recall@K of the label ranking; "
               "cpu/wall: our train + review over one plain fastai training, in CPU and wall time; goal: recall@K "
               "wanted at <= 1.5x; flags: 'probably in the wrong class'; outl: outlier flags (precision and recall "
               "on pictures of no class where a variant has some).")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="", help="comma-separated variant names (default: all)")
    ap.add_argument("--epochs", type=int, default=5, help="total epochs (fine_tune's frozen one included)")
    ap.add_argument("--summary", action="store_true", help="print the table of the results kept so far")
    ap.add_argument("--list", action="store_true", help="list the variants")
    ap.add_argument("--results", type=Path, default=RESULTS, help=f"where results are kept (default {RESULTS})")
    ap.add_argument("--keep", action="store_true", help="keep the projects (their path is in the results)")
    ap.add_argument("--quick", action="store_true", help="also measure quick mode (a random body: no weights offline)")
    args = ap.parse_args()

    if args.list:
        for v in VARIANTS.values():
            print(f"{v.name:<15} {'held out ' if v.held_out else ''}{v.describe()}")
        return
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    if args.summary:
        print(summary(results))
        return
    names = [n.strip() for n in args.variant.split(",") if n.strip()] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; --list shows them")
    print(f"bench/review.py: scikit-learn digits at 64 px, resnet18 from scratch, {args.epochs} epochs, both sides")
    for name in names:
        work = Path(tempfile.mkdtemp(prefix=f"bench_review_{name}_"))
        r = measure(VARIANTS[name], args.epochs, work, keep=args.keep, quick=args.quick)
        print(line(r), flush=True)
        results = json.loads(args.results.read_text()) if args.results.is_file() else {}
        results[name] = r
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(results, indent=1))
        if not args.keep:
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    print()
    print(summary(results))


if __name__ == "__main__":
    main()
