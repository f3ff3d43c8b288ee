"""Training streams pictures from disk: its memory does not grow with the number of pictures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent

#: Run in a process of its own, so that its peak resident memory is its own: trains at 224 px and
#: stops after a fixed number of training batches (the same work whatever the number of pictures).
RUN = r'''
import json, resource, sys
from pathlib import Path
from tl_app.jobs import StopToken
from tl_app.project import Project
from tl_app.train import TrainConfig, train
import fastai.vision.all  # noqa: F401 - loaded before the baseline is read, as train() would
proj = Project.open(Path(sys.argv[1]))
stop, batches = StopToken(), []
def events(ev):
    if ev["type"] == "batch" and ev["train"]:
        batches.append(ev)
        if len(batches) >= int(sys.argv[2]):
            stop.set()
rep = train(proj, TrainConfig(size=224, epochs=1, pretrained=False, batch_size=8), stop=stop, events=events)
print(json.dumps({"status": rep.status, "batches": len(batches),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
'''


def _pictures(root: Path, start: int, n: int) -> Path:
    """n distinct 224 px pictures (smooth colour ramps with noise) in 2 classes."""
    for k in range(start, start + n):
        rng = np.random.default_rng(k)
        label = ("warm", "cold")[k % 2]
        base = rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, 224)[None, :, None] * rng.integers(-120, 120, 3)
        arr = np.clip(base + ramp + rng.normal(0, 25, (224, 224, 3)), 0, 255).astype(np.uint8)
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(root / label / f"{k}.jpg", quality=90)
    return root


def _peak(proj: Path, batches: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="2")
    out = subprocess.run([sys.executable, "-c", RUN, str(proj), str(batches)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_training_memory_does_not_grow_with_the_number_of_pictures(tmp_path):
    from tl_app.importer import import_files
    from tl_app.project import Project

    proj = Project.open(tmp_path / "proj", create=True)
    import_files(proj, [_pictures(tmp_path / "a", 0, 300)])
    small = _peak(proj.root, 12)
    import_files(proj, [_pictures(tmp_path / "b", 300, 1700)])
    assert len(list(proj.items())) == 2000
    large = _peak(proj.root, 12)
    assert small["status"] == large["status"] == "stopped" and small["batches"] == large["batches"] == 12
    # Held in one array, 1,700 more pictures at 224 px would be 256 MB more (2,000: 301 MB).
    array_mb = 1700 * 224 * 224 * 3 / 2**20
    growth = large["peak_mb"] - small["peak_mb"]
    assert growth < array_mb / 4, (small, large)
