"""How the app holds up on a large project: import, quick-mode features, Review and first paint.

Makes a synthetic project itself (photo-like scenes of at least 64 px in 10 classes, one
picture in 50 a cropped copy of another) and prints, each against a baseline measured in
the same run on the same cores:

- import: pictures per second of ``import_files`` against a plain decode-resize-encode
  loop (Pillow: open, RGB, fit in 1024 px, JPEG at the app's quality, sha256) on the same
  cores: the fastest of that loop on as many threads as the import uses, on as many
  processes, and on one thread (goal: at least 0.7x). The loops and an import into a new
  project are alternated, two rounds, and the better of each is taken: the other work on
  shared cores changes within seconds, and a baseline timed only before the import took
  that change as the import's. Everything written before an import is written out to disk
  first (``os.sync``, untimed): the import's syncs are of the whole file system, and once
  waited for the files of the writing loop timed just before it. The loop writes nothing,
  the import writes a file per picture (on this machine's disk creating a file costs from
  20 us to 300 us, by where the folder is and what was deleted near it in the last minutes);
  the loop on threads writing each picture to a file is printed beside it;
- quick-mode features: on a sample of 512 pictures, the app's feature computing against
  a plain loop over the same pictures (decode, resize, forward of the same network body),
  alternated; then pictures per second from the start of a quick training until its
  features are computed (pictures read and decoded included) against a plain torch
  forward of the same body on random tensors (goal: at least 0.8x);
- review: the whole queue (every reason) once with nothing cached (fingerprints and
  quality measured), then from the caches on disk (goal: at most 60 s), then again in
  the same process (what the Review tab's next view costs);
- first paint through the HTTP API (gradio_client on loopback): the page itself, the
  Search tab's gallery of a class, the Review tab's first answer and its whole queue,
  the Classify tab's model card;
- peak resident memory of each stage (each runs in its own process).

The features stages keep freed memory for the next pass as the served app and the command line do
(:func:`tl_app.features.keep_freed_memory`); their baselines run in the same process, with it too.

Usage: ``python bench/scale.py [--n 50000] [--side 96] [--size 224] [--work DIR] [--keep]``
(``--n 5000`` finishes in a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = [f"class{i}" for i in range(10)]
#: Pictures the features' side-by-side comparison runs on.
SAMPLE = 512
#: Rounds of the import stage (the plain loops, then an import into a new project; the better of each).
ROUNDS = 2


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# --- the synthetic pictures ----------------------------------------------------------------------
def _make_chunk(args) -> int:
    start, stop, side, src = args
    import imagegen

    size = (side, side * 3 // 4) if side * 3 // 4 >= 64 else (side * 4 // 3, side)
    for i in range(start, stop):
        if i % 50 == 49:  # a copy of the one before, cropped a little
            im = imagegen.scene(i - 1, size=size)
            w, h = im.size
            im = im.crop((w // 30, h // 30, w - w // 30, h - h // 30))
        else:
            im = imagegen.scene(i, size=size)
        d = Path(src) / CLASSES[i % len(CLASSES)]
        im.save(d / f"picture {i:06d}.jpg", quality=90)
    return stop - start


def make_source(src: Path, n: int, side: int) -> None:
    from concurrent.futures import ProcessPoolExecutor

    for c in CLASSES:
        (src / c).mkdir(parents=True, exist_ok=True)
    step = 1000
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_make_chunk, [(s, min(n, s + step), side, str(src)) for s in range(0, n, step)]))


# --- stages (each in its own process) -------------------------------------------------------------
def _encoded(f: Path) -> bytes:
    """The plain loop's work on one picture: decode, RGB, fit in the stored size, JPEG."""
    import io

    from PIL import Image

    from tl_app import config

    with Image.open(f) as im:
        im = im.convert("RGB")
        im.thumbnail((config.MAX_STORED_SIDE, config.MAX_STORED_SIDE))
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=config.JPEG_QUALITY)
    return out.getvalue()


def _plain(f: Path) -> str:
    """The plain loop: :func:`_encoded`, then sha256."""
    import hashlib

    return hashlib.sha256(_encoded(f)).hexdigest()


def _plain_chunk(files: list) -> list:
    return [_plain(f) for f in files]


def stage_import(work: Path) -> dict:
    """Plain decode-resize-encode loops, then the app's import of the same files."""
    import hashlib
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from tl_app.features import freeze_loaded_objects
    from tl_app.importer import import_files
    from tl_app.project import Project

    freeze_loaded_objects()  # as both fronts do once their modules are loaded
    files = sorted((work / "src").rglob("*.jpg"))
    workers = max(1, min(4, os.cpu_count() or 1))  # what import_files uses
    # Nothing is deleted here: what is in the way goes to work/set-aside, deleted with the work folder.
    # ext4 without a journal (this machine's disk) passes over the inodes of files deleted in the last
    # minutes each time it creates a file (``recently_deleted``): an import timed just after 50,000
    # files were deleted nearby ran several times slower than the same import on a quiet disk.
    aside = work / "set-aside"
    aside.mkdir(exist_ok=True)
    proj = work / "project"
    if proj.exists():
        proj.rename(aside / f"project-{time.time_ns()}")

    def plain_loops() -> dict:
        """The plain loop on threads, on processes and on one thread: pictures per second of each."""
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_plain, files))
        threads = len(files) / (time.perf_counter() - t)
        # The same loop on as many processes as the import has workers (started inside the timing, as
        # the import's are): on 2 cores, threads of small pictures are held back by Python's lock.
        t = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_plain_chunk, [files[i:i + 16] for i in range(0, len(files), 16)]))
        processes = len(files) / (time.perf_counter() - t)
        t = time.perf_counter()
        for f in files[: max(1, len(files) // 10)]:
            _plain(f)
        return {"threads": threads, "processes": processes,
                "one thread": max(1, len(files) // 10) / (time.perf_counter() - t)}

    def one_import(where: Path) -> tuple[float, object]:
        # Files written before (the writing loop's, the last import's) are written out now, not during
        # the import, whose first sync of a batch (syncfs: the whole file system) would wait for them.
        if hasattr(os, "sync"):
            os.sync()
        t = time.perf_counter()
        rep = import_files(Project.open(where, create=True), [work / "src"])
        return rep.imported / (time.perf_counter() - t), rep

    # Alternated, the better of each: the load of other work on shared cores changes within seconds,
    # and a baseline timed only before the import (or an import timed only after it) took the change.
    rounds: list[dict] = []
    for r in range(ROUNDS):
        rates = plain_loops()
        if r == 0:
            # The same, each picture also written to a file of its own (what any import must at least do).
            out_dir = aside / f"plain-out-{time.time_ns()}"
            out_dir.mkdir()

            def plain_write(f: Path) -> None:
                data = _encoded(f)
                (out_dir / f"{hashlib.sha256(data).hexdigest()}.jpg").write_bytes(data)

            t = time.perf_counter()
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(plain_write, files))
            write_rate = len(files) / (time.perf_counter() - t)
        last = r == ROUNDS - 1  # the project the next stages use is the last one
        rate, rep = one_import(proj if last else aside / f"project-{time.time_ns()}")
        rounds.append({**rates, "import": rate})
    rates = {k: max(x[k] for x in rounds) for k in ("threads", "processes", "one thread")}
    best = max(rates, key=rates.get)
    import_rate = max(x["import"] for x in rounds)
    return {"pictures": len(files), "imported": rep.imported, "duplicates": rep.duplicates,
            "refused": len(rep.rejected), "import_s": rep.imported / import_rate, "import_rate": import_rate,
            "plain_rate": rates["threads"], "plain_proc_rate": rates["processes"],
            "plain_one_thread_rate": rates["one thread"], "plain_best": best, "plain_best_rate": rates[best],
            "plain_write_rate": write_rate, "rounds": rounds,
            "workers": workers, "peak_mb": _peak_mb()}


def _side_by_side(project, size: int) -> dict:
    """The same network on the same pictures, side by side on a sample: a plain loop (Pillow decodes and
    resizes each picture on this thread, then one forward per batch) against the app's feature
    computing (quick.compute_features on features.Pictures, as quick training calls it), alternated
    twice so that a change of load on the shared cores hits both alike; the better of each."""
    import numpy as np
    import torch
    from PIL import Image

    from tl_app import config, quick
    from tl_app.features import Pictures
    from tl_app.models import create_body

    body = create_body(config.DEFAULT_ARCH, pretrained=True).eval().to(memory_format=torch.channels_last)
    sample = [project.path_of(it) for it in project.items()[:SAMPLE]]
    mean = torch.tensor(config.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(config.IMAGENET_STD).view(1, 3, 1, 1)
    bs = config.DEFAULT_BATCH_SIZE

    def plain_loop() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(sample), bs):
                arr = np.stack([np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
                                for f in sample[s:s + bs]])
                xb = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255)
                fm = body(((xb - mean) / std).contiguous(memory_format=torch.channels_last))
                torch.cat([torch.amax(fm, dim=(2, 3)), torch.mean(fm, dim=(2, 3))], 1).numpy()
        return len(sample) / (time.perf_counter() - t)

    def app_features() -> float:
        t = time.perf_counter()
        quick.compute_features(body, Pictures(sample, size), batch_size=bs)
        return len(sample) / (time.perf_counter() - t)

    side: dict = {"plain": [], "app": []}
    for _ in range(2):
        side["plain"].append(plain_loop())
        side["app"].append(app_features())
    return {"sample": len(sample), "sample_plain_rate": max(side["plain"]), "sample_app_rate": max(side["app"])}


def stage_sample(work: Path, size: int) -> dict:
    """Only the side-by-side comparison of the features stage (no training)."""
    from tl_app.features import keep_freed_memory
    from tl_app.project import Project

    keep_freed_memory()  # as in the features stage
    _offline_weights(work)
    return {**_side_by_side(Project.open(work / "project"), size), "peak_mb": _peak_mb()}


def _offline_weights(work: Path) -> None:
    """Quick mode needs pretrained weights: offline, random ones under torchvision's file name (as the tests
    do; the speed is the same)."""
    import torch
    import torchvision

    ckpt = Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth"
    if not ckpt.exists():
        home = work / "torch_home"
        (home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
        if not (home / "hub" / "checkpoints" / ckpt.name).exists():
            torch.manual_seed(0)
            torch.save(torchvision.models.resnet18().state_dict(), home / "hub" / "checkpoints" / ckpt.name)
        os.environ["TORCH_HOME"] = str(home)
        torch.hub.set_dir(str(home / "hub"))


def stage_features(work: Path, size: int) -> dict:
    """A plain torch forward of the network body, then a quick training (its features phase timed)."""
    import torch
    import torchvision

    from tl_app import config
    from tl_app.features import keep_freed_memory
    from tl_app.project import Project
    from tl_app.train import TrainConfig, train

    keep_freed_memory()  # as the served app and the command line run (the baseline, in this process, too)
    _offline_weights(work)
    body = torch.nn.Sequential(*list(torchvision.models.resnet18().children())[:-2]).eval()
    body = body.to(memory_format=torch.channels_last)
    x = torch.randn(32, 3, size, size).contiguous(memory_format=torch.channels_last)

    def forward_rate() -> float:
        with torch.inference_mode():
            body(x)  # warm-up
            t, done = time.perf_counter(), 0
            while done < 256:
                body(x)
                done += 32
            return done / (time.perf_counter() - t)

    plain_before = forward_rate()

    project = Project.open(work / "project")
    n = len(project.items())

    side = _side_by_side(project, size)
    marks: dict = {}

    def events(e: dict) -> None:
        if e.get("type") == "phase" and e.get("phase") == "features":
            marks.setdefault("first", time.perf_counter())
            if e.get("done") == e.get("total"):
                marks["done"] = time.perf_counter()
                marks["total"] = e.get("total")

    t0 = time.perf_counter()
    rep = train(project, TrainConfig(arch=config.DEFAULT_ARCH, quick=True, pretrained=True, size=size, epochs=2),
                events=events)
    total_s = time.perf_counter() - t0
    plain_rate = max(plain_before, forward_rate())  # before and after: the better, on a machine others share
    feats = marks.get("total") or n
    to_features = (marks.get("done", t0) - t0) or float("nan")
    return {**side, "pictures": n, "status": rep.status, "train_s": total_s, "features_s": to_features,
            "features_rate": feats / to_features, "plain_forward_rate": plain_rate,
            "forward_only_rate": (feats / (marks["done"] - marks["first"])) if "first" in marks else None,
            "peak_mb": _peak_mb()}


def stage_review(work: Path) -> dict:
    """The whole review queue: nothing cached, then from the caches on disk, then again in this process."""
    from tl_app import quality, review
    from tl_app.project import Project

    project = Project.open(work / "project")
    out = {"pictures": len(project.items())}
    for name in ("cold", "disk", "memory"):
        if name == "cold":
            shutil.rmtree(project.cache_dir / "fingerprints.db", ignore_errors=True)
            for f in project.cache_dir.glob("*.db*"):
                if f.name.startswith(("fingerprints", "quality")):
                    f.unlink()
            for f in project.cache_dir.glob("matches-*.npz"):  # the last duplicate search
                f.unlink()
        if name in ("cold", "disk"):  # the caches in memory go; those on disk stay after "cold"
            review._MATCHES.clear()
            review._ROWS.clear()
            review._SCORES.clear()
            quality._MEMO.clear()
        t = time.perf_counter()
        q = review.queue(project, top=48)
        groups = review.duplicate_groups(project)  # the Review tab asks for both
        out[f"{name}_s"] = time.perf_counter() - t
    out.update(summary=q.summary(), rows=q.total, groups=len(groups), peak_mb=_peak_mb())
    return out


def stage_paint(work: Path) -> dict:
    """First paint of each tab through the HTTP API, against a server on loopback."""
    import socket
    import urllib.request

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from gradio_client import Client

    from tl_app.ui.app import launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = time.perf_counter()
    demo = launch(work / "project", host="127.0.0.1", port=port, block=False)
    out = {"start_s": time.perf_counter() - t}
    url = f"http://127.0.0.1:{port}/"
    try:
        t = time.perf_counter()
        urllib.request.urlopen(url, timeout=60).read()
        out["page_s"] = time.perf_counter() - t
        client = Client(url, verbose=False, download_files=False)  # what the page gets: links, not files
        t = time.perf_counter()
        gallery = client.predict(CLASSES[0], api_name="/browse")[0]
        out["search_gallery_s"], out["search_gallery_pictures"] = time.perf_counter() - t, len(gallery)
        t = time.perf_counter()
        more = client.predict(CLASSES[0], "", api_name="/browse_more")[0]
        out["search_more_s"], out["search_more_pictures"] = time.perf_counter() - t, len(more)
        t = time.perf_counter()
        job = client.submit("All classes", "", "", "strict", None, api_name="/review")
        while not job.outputs() and not job.done():
            time.sleep(0.02)
        out["review_first_s"] = time.perf_counter() - t
        job.result()
        out["review_full_s"] = time.perf_counter() - t
        t = time.perf_counter()
        client.predict("All classes", "", "", "strict", None, api_name="/review")
        out["review_again_s"] = time.perf_counter() - t
        t = time.perf_counter()
        client.predict(api_name="/model_card")
        out["classify_s"] = time.perf_counter() - t
    finally:
        demo.close()
    out["peak_mb"] = _peak_mb()
    return out


STAGES = {"import": stage_import, "features": stage_features, "sample": stage_sample, "review": stage_review,
          "paint": stage_paint}


def _run_stage(name: str, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--stage", name, "--work", str(work), "--size", str(args.size)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        sys.stderr.write(res.stdout[-3000:] + res.stderr[-3000:])
        raise SystemExit(f"stage {name} failed")
    return json.loads(lines[-1])


def _print_sample(r: dict, size: int) -> None:
    """The features stage's side-by-side figure (printed by the sample stage and the features stage)."""
    print(f"features of the same {r['sample']} pictures at {size} px, side by side: the app's "
          f"{r['sample_app_rate']:.1f}/s against a plain loop (decode, resize, forward) "
          f"{r['sample_plain_rate']:.1f}/s: {r['sample_app_rate'] / r['sample_plain_rate']:.2f}x (goal >= 0.8x)",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000, help="pictures in the project (default 50,000)")
    ap.add_argument("--side", type=int, default=96, help="longer side of the pictures in px (at least 86)")
    ap.add_argument("--size", type=int, default=224, help="picture size of the quick training's network")
    ap.add_argument("--work", type=Path, default=None, help="folder for the pictures and the project")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work folder, and what the import stage set aside in it (its set-aside folder)")
    ap.add_argument("--skip", default="", help="stages to skip, comma-separated (import,features,review,paint); "
                    "sample: the features stage's side-by-side alone, without the quick training (skip features)")
    ap.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:  # a child process: one stage, its figures as one line of JSON
        fn = STAGES[args.stage]
        print(json.dumps(fn(args.work, args.size) if args.stage in ("features", "sample") else fn(args.work)),
              flush=True)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="tl-scale-"))
    skip = set(filter(None, args.skip.split(",")))
    print(f"{args.n:,} pictures of {args.side} px in {work} ({os.cpu_count()} cores)", flush=True)
    try:
        if not (work / "src").is_dir():
            t = time.perf_counter()
            make_source(work / "src", args.n, args.side)
            print(f"made the pictures in {time.perf_counter() - t:.0f} s", flush=True)
        if "import" not in skip:
            r = _run_stage("import", work, args)
            print(f"import (the better of {len(r['rounds'])} rounds): {r['import_rate']:.0f} pictures/s "
                  f"({r['imported']:,} in {r['import_s']:.1f} s, "
                  f"{r['duplicates']} exact duplicates) against the fastest plain decode-resize-encode loop on "
                  f"the same cores ({r['plain_best']}) {r['plain_best_rate']:.0f}/s: "
                  f"{r['import_rate'] / r['plain_best_rate']:.2f}x (goal >= 0.7x); the loop on {r['workers']} "
                  f"threads {r['plain_rate']:.0f}/s ({r['import_rate'] / r['plain_rate']:.2f}x), on {r['workers']} "
                  f"processes {r['plain_proc_rate']:.0f}/s ({r['import_rate'] / r['plain_proc_rate']:.2f}x), on one "
                  f"thread {r['plain_one_thread_rate']:.0f}/s; the loop on {r['workers']} threads writing each "
                  f"picture to a file {r['plain_write_rate']:.0f}/s: {r['import_rate'] / r['plain_write_rate']:.2f}x; "
                  f"peak memory {r['peak_mb']:.0f} MB", flush=True)
            for i, x in enumerate(r["rounds"]):
                print(f"  round {i + 1}: import {x['import']:.0f}/s; plain loop on threads {x['threads']:.0f}/s, "
                      f"processes {x['processes']:.0f}/s, one thread {x['one thread']:.0f}/s: "
                      f"{x['import'] / max(x['threads'], x['processes'], x['one thread']):.2f}x the fastest",
                      flush=True)
        if "features" in skip and "sample" not in skip:
            r = _run_stage("sample", work, args)
            _print_sample(r, args.size)
        if "features" not in skip:
            r = _run_stage("features", work, args)
            _print_sample(r, args.size)
            fwd = f", forward phase alone {r['forward_only_rate']:.1f}/s" if r.get("forward_only_rate") else ""
            print(f"quick-mode features at {args.size} px: {r['features_rate']:.1f} pictures/s from the start of "
                  f"training (reading and decoding included{fwd}) against a plain torch forward "
                  f"{r['plain_forward_rate']:.1f}/s: {r['features_rate'] / r['plain_forward_rate']:.2f}x "
                  f"(goal >= 0.8x); whole quick training {r['train_s']:.0f} s ({r['status']}); "
                  f"peak memory {r['peak_mb']:.0f} MB", flush=True)
        if "review" not in skip:
            r = _run_stage("review", work, args)
            print(f"review queue of {r['pictures']:,} pictures (every reason; {r['summary']}; {r['groups']} "
                  f"duplicate groups): nothing cached {r['cold_s']:.1f} s, from the caches on disk "
                  f"{r['disk_s']:.1f} s (goal <= 60 s), again in the same process {r['memory_s']:.2f} s; "
                  f"peak memory {r['peak_mb']:.0f} MB", flush=True)
        if "paint" not in skip:
            r = _run_stage("paint", work, args)
            print(f"first paint through the HTTP API: app start {r['start_s']:.1f} s, page {r['page_s']:.2f} s, "
                  f"Search gallery {r['search_gallery_s']:.2f} s ({r['search_gallery_pictures']} pictures; "
                  f"'more' {r['search_more_s']:.2f} s, {r['search_more_pictures']}), Review first answer "
                  f"{r['review_first_s']:.2f} s (whole queue {r['review_full_s']:.1f} s, next view "
                  f"{r['review_again_s']:.2f} s), Classify {r['classify_s']:.2f} s; peak memory "
                  f"{r['peak_mb']:.0f} MB", flush=True)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
        elif not args.keep:
            shutil.rmtree(work / "set-aside", ignore_errors=True)


if __name__ == "__main__":
    main()
