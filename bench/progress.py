"""Progress and Stop of the long steps: how soon Stop takes effect, what is kept, and how good the time left is.

Builds a synthetic project (``--images`` pictures of ``--size`` px in 4 classes), then for each step
starts it, asks it to stop part-way and prints the seconds from the request to the step's end (goal:
at most 5 s), what it kept, and the time-left estimate it gave against the time the finished step
really took from that point (an unstopped run of the same step, measured in the same run).

  import   import_files of the whole folder: stopped 3 s in; kept = pictures in the project
  cli      `python -m tl_app import` as a process, Ctrl-C once it prints a time left
  review   the duplicate and quality queue (no model): stopped as its first stage ends
  dataset  export_dataset of the project: stopped 1 s in; a zip must not be left behind

    .venv/bin/python bench/progress.py [--images 20000] [--size 96]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_pictures(folder: Path, n: int, size: int) -> Path:
    import imagegen

    return imagegen.class_folder(folder, per_class=max(1, n // 3), classes=("red", "blue", "green"),
                                 size=(size, size), seed=7)


def timed_stop(work, *, after: float | None = None, when=None):
    """Run ``work(progress, stop)`` in a thread; stop it ``after`` s or when ``when(progress)``.

    Returns (seconds from Stop to the end or None, result, [(time, estimated seconds left)], end time).
    """
    from tl_app.jobs import StopToken, TimeLeft

    stop = StopToken()
    box: dict = {}
    eta = TimeLeft()
    lefts: list[tuple[float, float]] = []   # (time, seconds left) as estimated
    asked: list[float] = []

    def progress(p) -> None:
        left = eta.update(p.done, p.total)
        if left is not None:
            lefts.append((time.monotonic(), left))
        if when is not None and not asked and when(p):
            asked.append(time.monotonic())
            stop.set()

    def run():
        try:
            box["result"] = work(progress, stop)
        except Exception as e:  # noqa: BLE001 - a stop may end the step with an exception: that is its answer
            box["result"] = e

    t = threading.Thread(target=run)
    t.start()
    if after is not None:
        t.join(after)
        if t.is_alive():
            asked.append(time.monotonic())
            stop.set()
    t.join()
    end = time.monotonic()
    return (end - asked[0] if asked else None), box.get("result"), lefts, end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20000)  # the import takes a few seconds even when idle
    ap.add_argument("--size", type=int, default=96)
    args = ap.parse_args()

    from tl_app.importer import import_files
    from tl_app.project import Project
    from tl_app.review import queue
    from tl_app.share.archive import export_dataset

    tmp = Path(tempfile.mkdtemp(prefix="tl-bench-progress-"))
    try:
        src = make_pictures(tmp / "src", args.images, args.size)
        n = sum(1 for _ in src.rglob("*.png"))
        print(f"{n} pictures of {args.size} px in {src}")

        # The whole import, unstopped: how long it takes, and the time left it gave against the truth.
        full = Project.open(tmp / "full", create=True)
        t0 = time.monotonic()
        _, rep, lefts, end = timed_stop(lambda progress, stop: import_files(full, [src], progress=progress,
                                                                             stop=stop))
        print(f"import, whole:    {rep.imported} pictures in {end - t0:.1f} s ({rep.imported / (end - t0):.0f}/s)")
        for share in (0.25, 0.5, 0.75):
            if lefts:
                t, est = lefts[min(len(lefts) - 1, int(len(lefts) * share))]
                print(f"  {t - t0:5.1f} s in: said {est:5.1f} s left, took {end - t:5.1f} s")

        # Stopped a third of the way through (as long as the whole import took above).
        part = Project.open(tmp / "part", create=True)
        after = max(0.2, (end - t0) / 3)
        lat, rep, _, _ = timed_stop(lambda progress, stop: import_files(part, [src], progress=progress, stop=stop),
                                    after=after)
        kept = len(part.items())
        if lat is None:
            print(f"import, stopped:  finished before the Stop {after:.1f} s in ({rep.imported} imported)")
        else:
            print(f"import, stopped:  ended {lat:.2f} s after Stop ({after:.1f} s in); {rep.imported} imported, {kept} "
                  f"in the project ({'the same' if kept == rep.imported else 'DIFFERENT'}), undo step: "
                  f"{part.history()[0].summary!r}")

        # The CLI: Ctrl-C once a time left is printed.
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        p = subprocess.Popen([sys.executable, "-m", "tl_app", "import", str(tmp / "cli"), str(src), "--json"],
                             stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        shown = ""
        for line in p.stderr:
            if " left" in line:
                shown = line.strip()
                asked = time.monotonic()
                p.send_signal(signal.SIGINT)
                break
        out, _ = p.communicate(timeout=300)
        print(f"cli import:       printed {shown!r}; exited {time.monotonic() - asked:.2f} s after Ctrl-C "
              f"(status {p.returncode})" if shown else "cli import:       finished before any time left was printed")

        # Review (duplicates and quality, no model) on the whole project: stopped as the first stage ends.
        from tl_app import review

        review._ROWS.clear()
        lat, res, _, _ = timed_stop(lambda progress, stop: queue(full, progress=progress, stop=stop),
                                    when=lambda p: p.done >= 1)
        print(f"review, stopped:  ended {lat:.2f} s after Stop: {type(res).__name__}: {res}")
        review._ROWS.clear()
        t0 = time.monotonic()
        _, q, _, end = timed_stop(lambda progress, stop: queue(full, progress=progress, stop=stop))
        print(f"review, whole:    {end - t0:.1f} s ({q.summary()})")

        # The dataset zip: stopped 1 s in.
        out = tmp / "dataset.zip"
        lat, res, _, _ = timed_stop(lambda progress, stop: export_dataset(full, out, progress=progress, stop=stop),
                                    after=1.0)
        left_behind = [p.name for p in tmp.iterdir() if p.name.startswith(".dataset") or p.name == "dataset.zip"]
        print(f"dataset, stopped: ended {lat:.2f} s after Stop: {res}; files left: {left_behind or 'none'}"
              if lat is not None else f"dataset:          finished in under 1 s ({res})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
