"""What choosing the run in use costs: the fair comparison's time beside each training's own, in one run.

After every finished run, the new model and the run in use are scored on the same held-out pictures
(tl_app/run_choice.py). This prints, for a quick run, a quick retrain, a full fine-tuning and a quick
retrain after it, the whole training time and the part spent comparing, with the choice made.
Pictures are bench/train.py's drawn shapes; resnet18's weights are random (a temporary TORCH_HOME:
the machine is offline, and time does not depend on the values).

    .venv/bin/python bench/run_choice.py [--images 390] [--size 224]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=390)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tl_bench_choice_"))
    os.environ.update(TL_OFFLINE="1", TORCH_HOME=str(tmp / "torch_home"), PYTHONWARNINGS="ignore")

    from train import random_weights, shapes_project
    from tl_app import runs
    from tl_app.train import TrainConfig, train

    random_weights(tmp / "torch_home")
    project = shapes_project(tmp, args.images)

    print(f"{args.images} pictures at {args.size} px; comparing = scoring both models on the same held-out pictures")
    print(f"{'run':<28} {'training':>9} {'comparing':>10} {'share':>6}  choice")

    def step(label: str, cfg: TrainConfig) -> None:
        t0 = time.perf_counter()
        rep = train(project, cfg)
        total = time.perf_counter() - t0
        rec = runs.in_use_record(project) or {}
        comparing = float(rec.get("seconds") or 0.0)
        acc = rep.metrics.get("accuracy")
        line = f"{label:<28} {total:>8.1f}s {comparing:>9.2f}s {comparing / total:>6.1%}  {rec.get('how')}"
        if rec.get("pictures"):
            new, old = ((rec["accuracy"], rec["other_accuracy"]) if rec["how"] == "better"
                        else (rec["other_accuracy"], rec["accuracy"]))
            line += f": new {new:.1%}, in use {old:.1%} on the same {rec['pictures']} pictures"
        line += f" (new run alone: {acc:.1%} on its held-out pictures)" if acc is not None else ""
        print(line)

    step("quick (first run)", TrainConfig(quick=True, size=args.size))
    project.delete([project.items()[0].id])
    step("quick retrain", TrainConfig(quick=True, size=args.size))
    step("full fine-tuning, 1 epoch", TrainConfig(epochs=1, size=args.size))
    project.delete([project.items()[0].id])
    step("quick retrain after it", TrainConfig(quick=True, size=args.size))


if __name__ == "__main__":
    main()
