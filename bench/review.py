"""Finding wrong labels: recall@K of our review ranking against fastai's validation-only ranking.

Data: scikit-learn's digits (1797 pictures of 8x8) upscaled to 64 px, with a seeded 5% of the labels
flipped to another digit. Both sides train resnet18 from scratch at 64 px for the same epochs:

  baseline  a plain fastai script (DataBlock, vision_learner(pretrained=False), fine_tune), then
            ``Interpretation.top_losses`` (it ranks the validation split only)
  ours      ``python -m tl_app train`` then ``python -m tl_app review --top K``

K is the number of flipped labels; recall@K is the share of them in the top K. The cost is our
wall time (train + review, whole processes) over the baseline's training alone.
Goals: recall@K >= 0.9 at a cost <= 1.5x.

    .venv/bin/python bench/review.py [--epochs 5] [--flip 0.05] [--seed 0] [--signals]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def build_dataset(root: Path, flip: float, seed: int) -> dict[str, bool]:
    """Write digits as 64 px PNGs in a folder per (possibly wrong) label; return file name -> flipped."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    n = len(d.target)
    flipped = np.zeros(n, dtype=bool)
    flipped[rng.choice(n, size=int(round(flip * n)), replace=False)] = True
    truth = {}
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        label = int(y)
        if flipped[i]:
            label = int((y + rng.integers(1, 10)) % 10)
        arr = (img / 16.0 * 255).astype(np.uint8)
        im = Image.fromarray(arr, "L").resize((64, 64), Image.Resampling.BILINEAR).convert("RGB")
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        name = f"d{i:04d}.png"
        im.save(root / str(label) / name)
        truth[name] = bool(flipped[i])
    return truth


def run(cmd: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"failed: {' '.join(cmd[:4])}")
    return time.perf_counter() - t, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5, help="total epochs (fine_tune's frozen one included)")
    ap.add_argument("--flip", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signals", action="store_true", help="also print recall@K of each candidate signal")
    args = ap.parse_args()

    from tl_app import runs
    from tl_app.importer import import_files
    from tl_app.project import Project

    work = Path(tempfile.mkdtemp(prefix="bench_review_"))
    truth = build_dataset(work / "digits", args.flip, args.seed)
    k = sum(truth.values())
    env = dict(os.environ, TL_OFFLINE="1", PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore",
               TORCH_HOME=str(work / "torch_home"), GRADIO_ANALYTICS_ENABLED="False")
    py = sys.executable
    subprocess.run([py, "-c", "import fastai.vision.all"], env=env, check=True)  # warm the file cache

    (work / "baseline.py").write_text(BASELINE)
    t_base, out = run([py, str(work / "baseline.py"), str(work / "digits"), "64", str(args.epochs), str(k)], env)
    base = json.loads(out.strip().splitlines()[-1])
    base_hits = sum(truth[Path(f).name] for f in base["top"])

    proj = Project.open(work / "proj", create=True)
    import_files(proj, [work / "digits"])
    name_of = {it.id: Path(it.source).name for it in proj.items()}
    t_train, out = run([py, "-m", "tl_app", "train", str(proj.root), "--no-pretrained", "--size", "64",
                        "--epochs", str(args.epochs - 1), "--batch-size", "64", "--json"], env)
    run_id = json.loads(out)["run"]
    t_review, out = run([py, "-m", "tl_app", "review", str(proj.root), "--kind", "label", "--top", str(k), "--json"],
                        env)
    rows = json.loads(out)
    ours_hits = sum(truth[name_of[r["item"]]] for r in rows)
    acc = runs.get_run(proj, run_id).metrics.get("accuracy")

    print(f"bench/review.py: digits upscaled to 64 px, {len(truth)} pictures, {k} labels flipped "
          f"(seed {args.seed}), resnet18 from scratch, {args.epochs} epochs")
    print(f"  fastai, validation-only top losses: recall@{k} = {base_hits / k:.2f}  ({base_hits}/{k}); "
          f"training {t_base:.1f} s, valid error {base['error_rate']:.3f}")
    print(f"  ours, every item:                   recall@{k} = {ours_hits / k:.2f}  ({ours_hits}/{k}); "
          f"train {t_train:.1f} s + review {t_review:.1f} s, valid accuracy {acc}")
    print(f"  cost: {(t_train + t_review) / t_base:.2f}x one plain fastai training (goal <= 1.5x); "
          f"recall goal >= 0.90")
    if args.signals:
        _signals(proj, run_id, truth, name_of, k)


def _signals(proj, run_id, truth, name_of, k) -> None:
    """Recall@K of each candidate signal, from what the run recorded."""
    import numpy as np

    from tl_app import runs

    losses = runs.read_json(proj, run_id, "losses.json")
    scores = runs.read_json(proj, run_id, "scores.json")
    ids = losses["items"]
    L = np.array([[np.nan if v is None else v for v in row] for row in losses["losses"]], dtype=float)
    flipped = np.array([truth[name_of[i]] for i in ids])

    def recall(score):
        order = np.argsort(-np.nan_to_num(score, nan=-1e9))
        return flipped[order[:k]].sum() / k

    print("  signals (recall@K):")
    for e in range(L.shape[0]):
        print(f"    loss in epoch {e + 1}: {recall(L[e]):.2f}")
    print(f"    mean loss over epochs: {recall(np.nanmean(L, 0)):.2f}")
    print(f"    mean loss, epochs 2+:  {recall(np.nanmean(L[1:], 0)):.2f}")
    vocab = scores["vocab"]
    by = {s["item"]: s for s in scores["items"]}
    lab = {it.id: it.label for it in proj.items()}
    final = np.array([-np.log(max(by[i]["probs"][vocab.index(lab[i])], 1e-12)) if i in by else np.nan for i in ids])
    print(f"    final scores.json loss: {recall(final):.2f}")


if __name__ == "__main__":
    main()
