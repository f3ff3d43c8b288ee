"""Streaming: peak memory of a fine-tuning against the number of pictures, and how fast Stop ends it.

Each run is the CLI as a process of its own (`python -m tl_app train P --size 224 --epochs 1`); its peak
resident memory comes from the kernel (``os.wait4``). The baseline is the same command on the code of
another commit (``--baseline`` ref, default ``main``; its ``tl_app`` extracted with ``git archive`` into a
temporary folder), in the same run on the same pictures, so the two are measured under the same load.

  memory   peak resident memory of a whole fine-tuning (frozen epoch + 1 unfrozen, the passes for Review)
           at each --images count; goal: the largest at most 0.5 GB above the smallest
  stop     Ctrl-C once the first epoch has ended, on the largest count: seconds until the process exits
           with the run recorded; goal <= 5 s

    .venv/bin/python bench/stream.py [--images 300,2000] [--size 224] [--baseline main] [--no-baseline]
                                     [--src DIR] [--stop-after-batches K]

``--src`` takes the pictures from a folder of class folders (``bench/scale.py --keep`` leaves one in
``WORK/src``: 50,000 small pictures made in a minute) instead of drawing photo-sized ones, the first n
files of each count in name order, spread over the classes. ``--stop-after-batches K`` sends Ctrl-C once K
training batches are done (the app's own Stop), so that a count of 50,000, whose whole fine-tuning would
take hours here, is measured over its start, its first batches and the recording of the stopped run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def extract(ref: str, dest: Path) -> Path:
    """The ``tl_app`` package of commit ``ref``, in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "tl_app"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
    return dest


def _batches_done(events: Path) -> int:
    try:
        return events.read_text().count('"type": "batch"')
    except OSError:
        return 0


def run(code: Path, proj: Path, size: int, env: dict, *, stop_after_epoch: bool = False, events: Path,
        stop_after_batches: int = 0) -> dict:
    """One training process; its peak RSS (MB), wall time and, when stopped, seconds from Ctrl-C to exit."""
    events.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tl_app", "train", str(proj), "--size", str(size), "--epochs", "1",
           "--no-pretrained", "--json", "--events", str(events)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=str(code), env=dict(env, PYTHONPATH=str(code)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signalled = None
    if stop_after_epoch or stop_after_batches:
        while p.poll() is None:
            if (stop_after_batches and _batches_done(events) >= stop_after_batches) or (
                    stop_after_epoch and events.exists() and '"type": "epoch"' in events.read_text()):
                p.send_signal(signal.SIGINT)
                signalled = time.perf_counter()
                break
            time.sleep(0.2)
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    end = time.perf_counter()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        print(err[-3000:], file=sys.stderr)
        raise SystemExit(f"training with {code} failed")
    doc = json.loads(out)
    return {"peak_mb": usage.ru_maxrss / 1024, "seconds": end - t0, "status": doc["status"],
            "stop_s": None if signalled is None else end - signalled, "reason": doc.get("reason", "")}


def _given_pictures(src: Path) -> list[Path]:
    """The pictures of a folder of class folders, in name order, taken from each class in turn."""
    per_class = [sorted(p for p in d.iterdir() if p.is_file()) for d in sorted(src.iterdir()) if d.is_dir()]
    out = []
    for k in range(max((len(c) for c in per_class), default=0)):
        out += [c[k] for c in per_class if k < len(c)]
    return out


def _link_pictures(files: list[Path], src: Path, dest: Path) -> None:
    """The files, under their class folders, in ``dest`` (hard links where the disk allows)."""
    for f in files:
        to = dest / f.relative_to(src)
        to.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, to)
        except OSError:
            to.write_bytes(f.read_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", default="300,2000", help="picture counts, comma-separated, smallest first")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--baseline", default="main", help="the commit whose code is the baseline")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-stop", action="store_true", help="skip the Stop measurement")
    ap.add_argument("--src", type=Path, default=None,
                    help="a folder of class folders to take the pictures from (e.g. bench/scale.py's WORK/src)")
    ap.add_argument("--stop-after-batches", type=int, default=0,
                    help="stop each memory run (Ctrl-C) once this many training batches are done")
    args = ap.parse_args()
    counts = sorted(int(x) for x in args.images.split(","))

    from train import make_pictures  # bench/train.py's photo-sized pictures

    from tl_app.importer import import_files
    from tl_app.project import Project

    work = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    codes = {"streamed": ROOT}
    if not args.no_baseline:
        codes["baseline"] = extract(args.baseline, work / "baseline")
    env = dict(os.environ, TL_OFFLINE="1", PYTHONWARNINGS="ignore", GRADIO_ANALYTICS_ENABLED="False",
               PYTHONDONTWRITEBYTECODE="1")
    proj = Project.open(work / "proj", create=True)
    have, res = 0, {}
    given = _given_pictures(args.src) if args.src else None
    if given is not None and len(given) < counts[-1]:
        raise SystemExit(f"{args.src} holds {len(given)} pictures, fewer than {counts[-1]}")
    for n in counts:
        if given is None:
            make_pictures(work / f"src{n}", n - have, seed=n)
        else:
            _link_pictures(given[have:n], args.src, work / f"src{n}")
        import_files(proj, [work / f"src{n}"])
        have = len(proj.items())
        for name, code in codes.items():
            res[name, n] = r = run(code, proj.root, args.size, env, events=work / "events.jsonl",
                                   stop_after_batches=args.stop_after_batches)
            print(f"  {name:9s} {have:6d} pictures: peak {r['peak_mb']:7.0f} MB, {r['seconds']:6.1f} s"
                  + (f" ({r['status']} after {args.stop_after_batches} batches, ended {r['stop_s']:.1f} s after Ctrl-C)"
                     if args.stop_after_batches and r["stop_s"] is not None else ""),
                  flush=True)
    stops = {}
    if not args.no_stop:
        for name, code in codes.items():
            stops[name] = r = run(code, proj.root, args.size, env, stop_after_epoch=True, events=work / "events.jsonl")
            print(f"  {name:9s} Ctrl-C after epoch 1: ended {r['stop_s']:.1f} s later ({r['status']})", flush=True)

    import torch

    print(f"bench/stream.py: resnet18 fine-tuning (--epochs 1), {args.size} px, {torch.get_num_threads()} CPU threads; "
          f"baseline: {'none' if args.no_baseline else args.baseline}"
          + (f"; pictures from {args.src}" if args.src else "")
          + (f"; each run stopped after {args.stop_after_batches} batches" if args.stop_after_batches else ""))
    lo, hi = counts[0], counts[-1]
    for name in codes:
        a, b = res[name, lo], res[name, hi]
        print(f"  {name:9s} peak memory {a['peak_mb']:6.0f} MB at {lo}, {b['peak_mb']:6.0f} MB at {hi}: "
              f"+{b['peak_mb'] - a['peak_mb']:.0f} MB (goal <= +512 MB at 50,000); "
              f"time {a['seconds']:.0f} s, {b['seconds']:.0f} s")
    if "baseline" in codes:
        for n in counts:
            print(f"  at {n}: streamed / baseline wall time {res['streamed', n]['seconds'] / res['baseline', n]['seconds']:.2f}x, "
                  f"peak memory {res['streamed', n]['peak_mb'] - res['baseline', n]['peak_mb']:+.0f} MB")
    for name, r in stops.items():
        print(f"  {name:9s} Ctrl-C after the first epoch at {hi}: the process ended {r['stop_s']:.1f} s later "
              f"(goal <= 5 s); reason: {r['reason']}")


if __name__ == "__main__":
    main()
