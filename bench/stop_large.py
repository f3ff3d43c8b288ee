"""Stop during an import of large pictures: seconds from Stop to the import's end (goal: at most 5 s).

A task under way on a helper holds up to 32 pictures at first, and a large PNG takes a tenth of a
second or more to decode: an import that waited for its tasks took seconds to stop. Makes ``--n``
pictures of 2400x1800 px itself (a few distinct ones and byte copies: every copy is decoded in full
before it is found to be a duplicate), starts ``import_files`` on helper processes, asks it to stop
after ``--after`` seconds, and prints how long it took to end and what it kept.

    .venv/bin/python bench/stop_large.py [--n 1200] [--after 1,3,6]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1200, help="pictures (helpers start from 1,000)")
    ap.add_argument("--after", default="1,3,6", help="seconds after the start to ask for Stop, comma-separated")
    args = ap.parse_args()
    import imagegen
    from tl_app.importer import import_files
    from tl_app.jobs import StopToken
    from tl_app.project import Project

    work = Path(tempfile.mkdtemp(prefix="tl-stop-large-"))
    try:
        base = []
        for i in range(24):
            f = work / "src" / "a" / f"s{i:03d}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            imagegen.scene(i, size=(2400, 1800)).save(f)
            base.append(f)
        for k in range(args.n - len(base)):
            d = work / "src" / "ab"[k % 2]
            d.mkdir(exist_ok=True)
            shutil.copyfile(base[k % len(base)], d / f"c{k:04d}.png")
        for after in (float(x) for x in args.after.split(",")):
            project = Project.open(work / f"project-{after}", create=True)
            stop, out = StopToken(), {}

            def run() -> None:
                out["report"] = import_files(project, [work / "src"], stop=stop)
                out["end"] = time.perf_counter()

            t = threading.Thread(target=run)
            t.start()
            time.sleep(after)
            asked = time.perf_counter()
            stop.set()
            t.join()
            rep = out["report"]
            print(f"Stop {after:g} s after the start: the import ended {out['end'] - asked:.2f} s later "
                  f"(goal <= 5 s); {rep.read} of {rep.files} files read, {rep.imported} pictures kept, "
                  f"stopped: {rep.stopped}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
