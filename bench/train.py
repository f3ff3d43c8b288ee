"""Training speed against the fastai course notebook, whole processes included, in one run.

Baseline (the seeds' notebook code, run as its own process): DataBlock + vision_learner(resnet18)
+ fine_tune(1) on the project's image folder, 224 px, squish. Ours, also as processes of the CLI:

  quick    `python -m tl_app train P --quick`           first model, features computed
  retrain  the same after deleting one picture           features cached
  full     `python -m tl_app train P --epochs 1`         fastai fine-tuning, same epochs

Both load the same resnet18 weights file from a temporary TORCH_HOME (random values: the machine is
offline, and speed does not depend on the values). Goals: quick <= 0.5x, retrain <= 0.15x of the
baseline's wall time; full fine-tuning speed >= 0.95x the baseline's (stretch 1.2x).

    .venv/bin/python bench/train.py [--images 390] [--size 224] [--repeat 1]
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
import sys
from fastai.vision.all import *
path = Path(sys.argv[1])
dls = DataBlock(
    blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
    splitter=RandomSplitter(valid_pct=0.2, seed=42), get_y=parent_label,
    item_tfms=[Resize(int(sys.argv[2]), method='squish')]
).dataloaders(path, bs=32)
learn = vision_learner(dls, resnet18, metrics=error_rate)
learn.fine_tune(1)
print("error_rate", float(learn.validate()[1]))
'''


def random_weights(torch_home: Path) -> None:
    """resnet18 with random weights where torchvision looks for its pretrained file (the machine is
    offline): quick mode runs its real loading path; time does not depend on the values."""
    import torch
    import torchvision

    ckpt = Path(torch_home) / "hub" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), ckpt / "resnet18-f37072fd.pth")


def shapes_project(work: Path, n: int, seed: int = 0):
    """A project of ``n`` drawn-shape pictures (see :func:`make_pictures`) in ``work/project``."""
    from tl_app.importer import import_files
    from tl_app.project import Project

    make_pictures(work / "pictures", n, seed=seed)
    project = Project.open(work / "project", create=True)
    import_files(project, [work / "pictures"])
    return project


def make_pictures(root: Path, n: int, seed: int = 0) -> None:
    """n photo-sized JPEGs in 3 classes of drawn shapes on noisy backgrounds."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    classes = ["circle", "square", "triangle"]
    for k in range(n):
        c = classes[k % 3]
        w, h = int(rng.integers(320, 640)), int(rng.integers(240, 480))
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        im = Image.fromarray(arr).resize((w, h))
        d = ImageDraw.Draw(im)
        cx, cy, r = w // 2 + int(rng.integers(-40, 40)), h // 2 + int(rng.integers(-30, 30)), int(min(w, h) * 0.3)
        col = tuple(int(x) for x in rng.integers(0, 255, 3))
        if c == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=col)
        elif c == "square":
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=col)
        else:
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=col)
        (root / c).mkdir(parents=True, exist_ok=True)
        im.save(root / c / f"{k}.jpg", quality=90)


def timed(cmd: list[str], env: dict, label: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    dt = time.perf_counter() - t
    if out.returncode != 0:
        print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{label} failed")
    return dt, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=390)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each; the median is reported")
    args = ap.parse_args()

    import torch

    from tl_app.importer import import_files
    from tl_app.project import Project

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    random_weights(work / "torch_home")
    env = dict(os.environ, TORCH_HOME=str(work / "torch_home"), TL_OFFLINE="1", PYTHONPATH=str(ROOT),
               PYTHONWARNINGS="ignore", GRADIO_ANALYTICS_ENABLED="False")
    make_pictures(work / "src", args.images)
    py = sys.executable
    subprocess.run([py, "-c", "import fastai.vision.all, torchvision"], env=env, check=True)  # warm the file cache

    results: dict[str, list[float]] = {"baseline": [], "quick": [], "retrain": [], "full": []}
    info = {}
    for r in range(args.repeat):
        proj = Project.open(work / f"proj{r}", create=True)
        import_files(proj, [work / "src"])
        (work / "baseline.py").write_text(BASELINE)
        dt, out = timed([py, str(work / "baseline.py"), str(proj.images_dir), str(args.size)], env, "baseline")
        results["baseline"].append(dt)
        train = [py, "-m", "tl_app", "train", str(proj.root), "--size", str(args.size), "--json"]
        dt, out = timed(train + ["--quick"], env, "quick")
        results["quick"].append(dt)
        info["quick"] = json.loads(out)["metrics"]
        proj.delete([proj.items()[0].id])
        dt, out = timed(train + ["--quick"], env, "retrain")
        results["retrain"].append(dt)
        info["retrain"] = json.loads(out)["metrics"]
        dt, out = timed(train + ["--epochs", "1"], env, "full")
        results["full"].append(dt)
        info["full"] = json.loads(out)["metrics"]

    med = {k: sorted(v)[len(v) // 2] for k, v in results.items()}
    b = med["baseline"]
    print(f"bench/train.py: {args.images} pictures, resnet18, {args.size} px, {torch.get_num_threads()} CPU threads, "
          f"median of {args.repeat}")
    print(f"  baseline (fastai notebook, fine_tune(1)): {b:6.1f} s")
    print(f"  quick, first model:      {med['quick']:6.1f} s   ratio {med['quick'] / b:.2f}x  (goal <= 0.50x)  "
          f"features computed: {info['quick'].get('features_computed')}")
    print(f"  quick, after a delete:   {med['retrain']:6.1f} s   ratio {med['retrain'] / b:.2f}x  (goal <= 0.15x)  "
          f"features computed: {info['retrain'].get('features_computed')}")
    print(f"  full fine-tuning:        {med['full']:6.1f} s   speed {b / med['full']:.2f}x the baseline's "
          f"(goal >= 0.95x, stretch 1.2x)")


if __name__ == "__main__":
    main()
