"""What exporting costs and what the export gives: export time, parity, onnxruntime against torch per picture.

Trains a quick run on bench/train.py's drawn shapes (resnet18 with random weights from a temporary
TORCH_HOME: the machine is offline, and neither time nor parity depends on the values), exports the
bundle (ONNX conversion and the parity check included) and prints its parity figures. Then, in the
same process and on the same held-out pictures, the time per picture of the app's torch model
(``predict_pixels``, CPU, its batch of 64) against the exported model on onnxruntime (``predict.py``,
its batch of 32): the network alone on pixels already prepared, and end to end from the files
(the app's Classify path against ``predict.py``'s, both re-encoding as for a new picture). Each
timing is the median of ``--repeats``, torch and onnxruntime taking turns.

    .venv/bin/python bench/export.py [--images 150] [--size 224] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tl_bench_export_"))
    os.environ.update(TL_OFFLINE="1", TORCH_HOME=str(tmp / "torch_home"), PYTHONWARNINGS="ignore")

    import numpy as np
    import torch

    from train import random_weights, shapes_project
    from tl_app import runs
    from tl_app.predict import model_for, probs_for_files
    from tl_app.share.bundle import export_bundle, load_standalone, parity_pictures
    from tl_app.train import TrainConfig, load_image_for_model, predict_pixels, train

    random_weights(tmp / "torch_home")
    project = shapes_project(tmp, args.images)
    rep = train(project, TrainConfig(size=args.size, quick=True))
    assert rep.status == "finished", rep
    print(f"{args.images} pictures (320-640 px JPEGs), quick run of resnet18 at {args.size} px; "
          f"torch {torch.__version__} on {torch.get_num_threads()} threads")

    t0 = time.perf_counter()
    res = export_bundle(project, tmp / "bundle")
    export_s = time.perf_counter() - t0
    p = res.parity
    print(f"export (load, ONNX conversion, parity check, card): {export_s:.1f} s; "
          f"model.onnx {(res.out / 'model.onnx').stat().st_size / 1e6:.1f} MB")
    print(f"parity: {p.pictures} pictures ({p.heldout} held out), each as stored and as a new file: "
          f"max |diff| {p.max_abs_diff:.2e}, top-1 agreement {p.top1_agreement:.0%}")

    held = [x.path for x in parity_pictures(project, res.run, at_least=0)]
    model, spec, _ = model_for(project, res.run)
    _, clf = load_standalone(res.out)
    pixels = np.stack([np.asarray(load_image_for_model(f, spec.size)) for f in held])
    import onnxruntime as ort

    print(f"timing on the {len(held)} held-out pictures, median of {args.repeats}; onnxruntime {ort.__version__}")

    def clock(fn) -> float:
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) / len(held) * 1000

    predict_pixels(model, pixels, spec), clf.probs(pixels)  # warm up both
    net_t, net_o, e2e_t, e2e_o = [], [], [], []
    for _ in range(args.repeats):
        net_t.append(clock(lambda: predict_pixels(model, pixels, spec)))
        net_o.append(clock(lambda: clf.probs(pixels)))
        e2e_t.append(clock(lambda: probs_for_files(project, _new(held, tmp), run_id=res.run)))
        e2e_o.append(clock(lambda: clf.probs(np.stack([clf.prepare(f) for f in _new(held, tmp)]))))
    for label, t, o in (("network only", net_t, net_o), ("end to end from files", e2e_t, e2e_o)):
        mt, mo = statistics.median(t), statistics.median(o)
        print(f"  {label:<22} torch {mt:6.2f} ms/picture   onnxruntime {mo:6.2f} ms/picture   "
              f"ratio {mo / mt:.2f}x")
    runs.list_runs(project)  # the project stays readable: nothing above changed it


_NEW: dict = {}


def _new(held: list[Path], tmp: Path) -> list[Path]:
    """The held-out pictures as new files (PNG copies the project does not hold): the re-encoding path."""
    if not _NEW:
        from PIL import Image

        folder = tmp / "new"
        folder.mkdir()
        for i, f in enumerate(held):
            with Image.open(f) as im:
                im.convert("RGB").save(folder / f"{i}.png")
        _NEW["files"] = sorted(folder.glob("*.png"))
    return _NEW["files"]


if __name__ == "__main__":
    main()
