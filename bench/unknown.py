"""None of these: does the app's score tell pictures of unseen kinds from pictures of its classes?

Each dataset is split by class: the known classes are imported into a project and trained on
(``tl_app.train.train``, the app's own path: quick and full runs), the other classes are never
seen and are presented as unknown. Known pictures kept out of the project (20% per class) are the
known side of the test. Figures, for the app's score and for max-softmax alone, from the same run:

  AUROC     how well the score ranks unknown above known test pictures (0.5: chance)
  caught    share of unknown test pictures above the threshold the run recorded (set so that 95%
            of its own held-out known pictures are accepted); "known ok" is the share of known
            test pictures accepted at that threshold (close to 95% when the threshold is honest)

Other scores are printed on the same pictures for comparison: energy alone; the second version (k-NN in
the last four stages, with and without energy) and the first (k-NN in the pooled last stage); the app's
version 3 (k-NN in every layer, stem included, plus energy; tl_app/openset.py) with its learnt weights
(leave-one-class-out on held-out known pictures), with equal weights, without energy, and each layer
alone. The app's own answer (``predict_files``: ``unknown``) is counted too, to check it agrees with the
recomputed figure; the weights it learnt and its bank's bytes per training picture are printed.

Datasets: scikit-learn's digits (0-6 known, 7-9 unknown), upscaled to 64 px; and drawn shapes (each
class a shape in its own colour, random size, place and turn, on a dark noisy background; 6 classes
known, 2 held out: a ring and a star in hues between known ones). Full runs: resnet18 from scratch (pretrained=False), 64 px, few epochs. Quick runs
need pretrained weights and the machine is offline, so their "pretrained" body is resnet18 with
RANDOM weights placed in a temporary TORCH_HOME under torchvision's file name: features that know
nothing of pictures. Real pretrained weights would do better; the quick figures are a floor.

    .venv/bin/python bench/unknown.py                    # both datasets, quick and full (a few minutes)
    .venv/bin/python bench/unknown.py --data digits --mode full
    .venv/bin/python bench/unknown.py --data digits --unknown 0,1,2 --out unknown-heldout.json   # held-out check
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UNKNOWN_SHAPES = ("ring", "star")


# --- data -----------------------------------------------------------------------------------------
def digits(seed: int = 0):
    """``[(PIL image, class name)]`` of scikit-learn's 1797 digits at 64 px, and the unknown classes."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for img, t in zip(d.images, d.target):
        arr = (img / 16.0 * 255).astype(np.uint8)
        out.append((Image.fromarray(arr, "L").resize((64, 64), Image.Resampling.BILINEAR).convert("RGB"), str(t)))
    return out, {"7", "8", "9"}


def _shape(draw, kind: str, cx: float, cy: float, r: float, rot: float, fill) -> None:
    import math

    def poly(points):
        c, s = math.cos(rot), math.sin(rot)
        draw.polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in points], fill=fill)

    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(r / 3)))
    elif kind == "square":
        poly([(-r, -r), (r, -r), (r, r), (-r, r)])
    elif kind == "diamond":
        poly([(0, -r), (0.6 * r, 0), (0, r), (-0.6 * r, 0)])
    elif kind == "triangle":
        poly([(0, -r), (0.87 * r, 0.5 * r), (-0.87 * r, 0.5 * r)])
    elif kind == "hbar":
        poly([(-r, -0.3 * r), (r, -0.3 * r), (r, 0.3 * r), (-r, 0.3 * r)])
    elif kind == "cross":
        w = 0.3 * r
        poly([(-r, -w), (r, -w), (r, w), (-r, w)])
        poly([(-w, -r), (w, -r), (w, r), (-w, r)])
    elif kind == "star":
        pts = []
        for i in range(10):
            a = math.pi / 5 * i - math.pi / 2
            rr = r if i % 2 == 0 else 0.45 * r
            pts.append((rr * math.cos(a), rr * math.sin(a)))
        poly(pts)


#: The drawn classes: a shape in a colour (hue in degrees). Held out: two of them, whose hues lie
#: between known ones and whose shapes (ring, star) look like known ones (circle, cross).
SHAPE_CLASSES = {"circle": ("circle", 0), "square": ("square", 45), "triangle": ("triangle", 135),
                 "cross": ("cross", 180), "hbar": ("hbar", 225), "diamond": ("diamond", 315),
                 "ring": ("ring", 90), "star": ("star", 270)}


def shapes(per_class: int = 100, seed: int = 0):
    """Drawn shapes, each class a shape in its own colour (hue +-12 degrees, random saturation and
    brightness), at a random size, place and turn on a dark noisy background; and the unknown classes."""
    import colorsys
    import math

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for name, (kind, hue) in SHAPE_CLASSES.items():
        for _ in range(per_class):
            bg = rng.integers(0, 90, 3)
            arr = np.clip(bg + rng.integers(-25, 26, (64, 64, 3)), 0, 255).astype(np.uint8)
            im = Image.fromarray(arr, "RGB")
            h = ((hue + rng.uniform(-12, 12)) % 360) / 360
            fg = colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
            r = float(rng.uniform(12, 26))
            cx, cy = (float(v) for v in rng.uniform(r + 2, 62 - r, 2))
            _shape(ImageDraw.Draw(im), kind, cx, cy, r, float(rng.uniform(0, 2 * math.pi)),
                   tuple(int(255 * c) for c in fg))
            out.append((im, name))
    return out, set(UNKNOWN_SHAPES)


DATASETS = {"digits": digits, "shapes": shapes}


# --- figures ------------------------------------------------------------------------------------------
def auroc(known, unknown) -> float:
    """Probability that an unknown picture scores above a known one (ties count half)."""
    from sklearn.metrics import roc_auc_score

    import numpy as np

    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def _embed_files(project, run_id: str, files: list[Path]):
    """``(logits, pooled features, layer features, version-2 stage features)`` of picture files through the
    app's predict pipeline."""
    import numpy as np

    from tl_app.features import embed_with_stages
    from tl_app.predict import _as_stored, _pixels_from_bytes, model_for

    model, spec, _ = model_for(project, run_id)
    px = np.stack([_pixels_from_bytes(_as_stored(project, f), spec.size) for f in files])
    return (*embed_with_stages(model, px, spec), embed_with_stages(model, px, spec, kind="stages")[2])


def _embed_items(project, run_id: str):
    """The run's items in a clean pass: ``(logits, pooled, stage features)`` and which rows are held out."""
    import json

    import numpy as np

    from tl_app import runs
    from tl_app.features import embed_with_stages
    from tl_app.predict import _item_pixels, model_for

    rdir = runs.run_dir(project, run_id)
    snap = json.loads((rdir / "snapshot.json").read_text())
    valid = np.array([it["valid"] for it in snap["items"]])
    model, spec, _ = model_for(project, run_id)
    ids = [it["item"] for it in snap["items"]]
    labels = np.array([spec.vocab.index(it["label"]) for it in snap["items"]])
    px = _item_pixels(project, ids, spec.size)
    return ((*embed_with_stages(model, px, spec), embed_with_stages(model, px, spec, kind="stages")[2]),
            valid, labels)


def measure(name: str, mode: str, work: Path, *, epochs: int, seed: int = 0,
            unknown_classes: Optional[set] = None) -> dict:
    """Train on the dataset's known classes and score known and unknown test pictures.

    ``unknown_classes`` replaces the dataset's own held-out classes (a split the rule was not tuned on).
    """
    import numpy as np

    from tl_app import openset, runs
    from tl_app.importer import import_files
    from tl_app.predict import predict_files
    from tl_app.project import Project
    from tl_app.train import TrainConfig, train

    pics, unknown = DATASETS[name](seed=seed)
    if unknown_classes:
        names = {c for _, c in pics}
        if not set(unknown_classes) < names:
            raise SystemExit(f"--unknown: {name} has the classes {sorted(names)}")
        unknown = set(unknown_classes)
    rng = np.random.default_rng(seed)
    src, test = work / "src", work / "test"
    known_test, unknown_test = [], []
    by_class: dict[str, list] = {}
    for im, c in pics:
        by_class.setdefault(c, []).append(im)
    for c, ims in sorted(by_class.items()):
        if c in unknown:
            for j, im in enumerate(ims):
                f = test / f"u_{c}_{j}.png"
                f.parent.mkdir(parents=True, exist_ok=True)
                im.save(f)
                unknown_test.append(f)
            continue
        order = rng.permutation(len(ims))
        n_test = len(ims) // 5
        for r, j in enumerate(order):
            dest = (test / f"k_{c}_{j}.png") if r < n_test else (src / c / f"{j}.png")
            dest.parent.mkdir(parents=True, exist_ok=True)
            ims[j].save(dest)
            if r < n_test:
                known_test.append(dest)
    proj = Project.open(work / "proj", create=True)
    import_files(proj, [src])
    cfg = TrainConfig(size=64, epochs=epochs, quick=mode == "quick", pretrained=True if mode == "quick" else False)
    t0 = time.perf_counter()
    rep = train(proj, cfg)
    seconds = time.perf_counter() - t0
    assert rep.status == "finished", rep
    rule = openset.OpenSet.from_dict(runs.read_json(proj, rep.run, openset.FILE))

    # The app's answer, as a user gets it.
    preds = predict_files(proj, known_test + unknown_test)
    app_known = np.array([p.unknown for p in preds[:len(known_test)]], dtype=bool)
    app_unknown = np.array([p.unknown for p in preds[len(known_test):]], dtype=bool)
    app_scores = np.array([p.unknown_score for p in preds], dtype=np.float64)
    correct = np.mean([p.label == Path(p.file).name.split("_")[1] for p in preds[:len(known_test)]])

    # Every combination on the same pictures: the run's training rows as the bank, its held-out rows
    # (to set each variant's normalisation, weights and threshold), the test pictures. Feature spaces:
    # "layers" (the app's, version 3), "stages" (version 2) and "pooled" (the head's input, version 1).
    (ilog, ipool, ilayer, istage), valid, labels = _embed_items(proj, rep.run)
    klog, kpool, klayer, kstage = _embed_files(proj, rep.run, known_test)
    ulog, upool, ulayer, ustage = _embed_files(proj, rep.run, unknown_test)
    vlog = ilog[valid]
    variants = {}

    def note(key, r, sk, su):
        variants[key] = {"auroc": auroc(sk, su), "caught": float((su > r.threshold).mean()),
                         "known_ok": float((sk <= r.threshold).mean())}

    for parts in (("msp",), ("energy",)):
        r = openset.fit(ipool[~valid], ipool[valid], vlog, parts=parts)
        note(parts[0], r, r.combine(openset.raw_parts(None, kpool, klog, 1, parts)),
             r.combine(openset.raw_parts(None, upool, ulog, 1, parts)))
    for fs, (items, kf, uf) in {"stages (v2)": (istage, kstage, ustage), "pooled (v1)": (ipool, kpool, upool)}.items():
        for parts in (("knn",), ("knn", "energy")):
            r = openset.fit(items[~valid], items[valid], vlog, parts=parts, k=1)
            bank_n = openset.l2_normalise(items[~valid])
            note("+".join(parts) + f" {fs} k=1", r, r.combine(openset.raw_parts(bank_n, kf, klog, 1, parts)),
                 r.combine(openset.raw_parts(bank_n, uf, ulog, 1, parts)))
    # Version 3: the app's weights (leave-one-class-out), all parts alike, each layer alone.
    bank = ilayer[~valid].astype(np.float16)
    app_rule = openset.fit_layers(bank, labels[~valid], ilayer[valid], labels[valid], vlog, rule.widths)
    vraw = openset.layer_raw_parts(bank, ilayer[valid], vlog, app_rule)
    kraw = openset.layer_raw_parts(bank, klayer, klog, app_rule)
    uraw = openset.layer_raw_parts(bank, ulayer, ulog, app_rule)
    weightings = {"layers (v3), learnt weights": app_rule.weights,
                  "layers (v3), equal weights": {p: 1.0 for p in app_rule.parts},
                  "layers (v3) k-NN only, equal": {p: float(p != "energy") for p in app_rule.parts}}
    weightings.update({f"layer {p} alone": {q: float(q == p) for q in app_rule.parts} for p in app_rule.parts[:-1]})
    for key, w in weightings.items():
        r = openset.OpenSet(app_rule.parts, 1, app_rule.norm, 0.0, app_rule.held_out, app_rule.bank,
                            features="layers", widths=app_rule.widths, weights=w)
        r.threshold = openset.threshold_for(r.combine(vraw))
        note(key, r, r.combine(kraw), r.combine(uraw))
    weights = " ".join(f"{p}={w:.2f}" for p, w in app_rule.weights.items())
    app_key = f"v{rule.version} {rule.features}"
    return {"data": name, "unknown": sorted(unknown), "mode": mode, "epochs": epochs if mode == "full" else None, "seconds": seconds,
            "known_classes": len(by_class) - len(unknown), "unknown_classes": len(unknown),
            "train": rule.bank, "held_out": rule.held_out, "known_test": len(known_test),
            "unknown_test": len(unknown_test), "accuracy_known_test": float(correct), "weights": weights,
            "bank_bytes_per_picture": 2 * int(sum(rule.widths)),
            "app": {"key": app_key, "auroc": auroc(app_scores[:len(known_test)], app_scores[len(known_test):]),
                    "caught": float(app_unknown.mean()), "known_ok": float(1 - app_known.mean())},
            "variants": variants}


def report(r: dict) -> str:
    msp, app = r["variants"]["msp"], r["app"]
    lines = [f"{r['data']} (unknown: {', '.join(r['unknown'])}) · {r['mode']}" + (f" ({r['epochs']} epochs from scratch)" if r["mode"] == "full" else
                                             " (body: resnet18 with RANDOM weights, offline)")
             + f": {r['known_classes']} known classes ({r['train']} training + {r['held_out']} held-out pictures), "
             f"{r['unknown_classes']} unknown; test {r['known_test']} known + {r['unknown_test']} unknown; "
             f"known test accuracy {r['accuracy_known_test']:.1%}; trained in {r['seconds']:.0f} s",
             f"  {'score':<38} {'AUROC':>6} {'caught':>7} {'known ok':>9}",
             f"  {'app (' + app['key'] + ')':<38} {app['auroc']:6.3f} {app['caught']:7.1%} {app['known_ok']:9.1%}"
             f"   <- predict_files' own answer",
             f"  {'max-softmax':<38} {msp['auroc']:6.3f} {msp['caught']:7.1%} {msp['known_ok']:9.1%}   <- baseline"]
    for k, v in r["variants"].items():
        if k != "msp":
            lines.append(f"  {k:<38} {v['auroc']:6.3f} {v['caught']:7.1%} {v['known_ok']:9.1%}")
    lines.append(f"  the app's weights: {r['weights']}; bank {r['bank_bytes_per_picture']} bytes per picture")
    ok = app["auroc"] >= 0.90 and app["auroc"] > msp["auroc"]
    lines.append(f"  goal (AUROC >= 0.90 and above max-softmax): {'met' if ok else 'NOT met'}")
    return "\n".join(lines)


def hue_check(seed: int = 0) -> float:
    """AUROC of the nearest training picture by mean foreground hue alone, on the drawn shapes (same split
    sizes as :func:`measure`): whether the held-out shapes can be told apart at all by a simple cue."""
    import numpy as np

    pics, unknown = shapes(seed=seed)

    def hue(im):  # the shape is bright (value >= 0.7); the background stays under 115 of 255
        a = np.asarray(im.convert("HSV")).reshape(-1, 3).astype(float)
        h = a[a[:, 2] > 150, 0] / 255 * 2 * np.pi
        return np.array([np.cos(h).mean(), np.sin(h).mean()])

    X = np.stack([hue(im) for im, _ in pics])
    is_unknown = np.array([c in unknown for _, c in pics])
    known = np.flatnonzero(~is_unknown)
    np.random.default_rng(seed).shuffle(known)
    test, bank = known[:len(known) // 5], known[len(known) // 5:]

    def nearest(q):
        return np.sqrt(((X[q][:, None] - X[bank][None]) ** 2).sum(-1)).min(1)

    return auroc(nearest(test), nearest(np.flatnonzero(is_unknown)))


def _fake_pretrained(home: Path) -> None:
    """resnet18 with random weights (seed 0) where torchvision looks for its download."""
    import torch
    import torchvision

    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt / "resnet18-f37072fd.pth")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="digits,shapes")
    ap.add_argument("--mode", default="quick,full")
    ap.add_argument("--epochs", type=int, default=3, help="full runs: unfrozen epochs (after the frozen one)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary projects")
    ap.add_argument("--unknown", default="", help="held-out classes instead of the dataset's own, e.g. 0,1,2 "
                    "(a split the rule was not tuned on; one dataset only)")
    ap.add_argument("--out", default="unknown.json", help="file name under bench/out/")
    ap.add_argument("--hue-check", action="store_true", help="only: can the held-out shapes be told apart by "
                    "the mean hue of their bright pixels (nearest training picture)? Prints that AUROC")
    args = ap.parse_args()
    if args.hue_check:
        print(f"shapes: AUROC of the nearest training picture by mean foreground hue alone: {hue_check(args.seed):.3f}")
        return
    tmp = Path(tempfile.mkdtemp(prefix="tl_unknown_"))
    os.environ.update(TL_OFFLINE="1", TORCH_HOME=str(tmp / "torch_home"), PYTHONWARNINGS="ignore",
                      TL_HOME=str(tmp / "tl_home"))
    import warnings

    warnings.filterwarnings("ignore")
    _fake_pretrained(tmp / "torch_home")
    results = []
    try:
        for name in args.data.split(","):
            for mode in args.mode.split(","):
                r = measure(name, mode, tmp / f"{name}-{mode}", epochs=args.epochs, seed=args.seed,
                            unknown_classes=set(args.unknown.split(",")) if args.unknown else None)
                print(report(r), flush=True)
                results.append(r)
        out = ROOT / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        import json

        (out / args.out).write_text(json.dumps(results, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
