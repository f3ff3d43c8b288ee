"""Download speed: our concurrent downloader against a plain sequential fetch, side by side.

120 pictures on 4 loopback hosts (distinct servers on 127.0.0.1-4, run by
``tests/badserver.py`` in a separate process), each answer delayed by 250 ms
like a far-away host. ``download_to_project`` fetches them into a fresh
project; then a plain loop fetches the same links one after another with
urllib and writes each to a file. Prints both times, the speed-up
and how many pictures arrived for each. Goal: at least 8x, and all 120.

    python bench/download.py [--images 120] [--hosts 4] [--latency 0.25]

Nothing leaves this computer: the servers listen on loopback only, and
``TL_ALLOW_HOSTS`` (set here) lets exactly those host:port pairs through the
fetcher's address guard.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tl_app.download import download_to_project, tasks_from_urls  # noqa: E402
from tl_app.project import Project  # noqa: E402


def urls_for(bases: list[str], n: int) -> list[str]:
    """``n`` links, grouped by host (the order that starves a naive per-host limit)."""
    per = -(-n // len(bases))
    return [f"{b}/img/{i}.jpg" for b in bases for i in range(per)][:n]


def sequential(urls: list[str], dest: Path) -> int:
    """The baseline: one link after another, each written to a file."""
    got = 0
    for i, u in enumerate(urls):
        with urllib.request.urlopen(u, timeout=30) as r:  # noqa: S310 - loopback test servers only
            data = r.read()
        (dest / f"{i}.jpg").write_bytes(data)
        got += 1
    return got


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.25, help="seconds added to every answer")
    args = ap.parse_args(argv)

    # The servers run in their own process, as remote hosts would: their work is not ours.
    per = -(-args.images // args.hosts)
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "badserver.py"), "--hosts", str(args.hosts),
                             "--latency", str(args.latency), "--warm", str(per)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hosts = [proc.stdout.readline().strip() for _ in range(args.hosts)]
    os.environ["TL_ALLOW_HOSTS"] = ",".join(hosts)
    urls = urls_for([urlunsplit(("http", h, "", "", "")) for h in hosts], args.images)
    try:
        with tempfile.TemporaryDirectory(prefix="tl_bench_") as tmp:
            tmp = Path(tmp)
            project = Project.open(tmp / "proj", create=True)
            t0 = time.perf_counter()
            rep = download_to_project(project, "bench", tasks_from_urls(urls))
            ours = time.perf_counter() - t0
            ours_n = len(project.items(label="bench"))

            seq_dir = tmp / "seq"
            seq_dir.mkdir()
            t0 = time.perf_counter()
            seq_n = sequential(urls, seq_dir)
            seq = time.perf_counter() - t0
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)

    print(f"{len(urls)} pictures on {args.hosts} loopback hosts, {args.latency * 1000:.0f} ms per answer")
    print(f"{'':24}{'seconds':>10}{'arrived':>10}")
    print(f"{'sequential (urllib)':24}{seq:>10.2f}{seq_n:>10}")
    print(f"{'download_to_project':24}{ours:>10.2f}{ours_n:>10}")
    rounds = -(-len(urls) // 16)
    print(f"speed-up: {seq / ours:.1f}x (goal >= 8x); floor at 16 at a time: {rounds * args.latency:.2f} s; "
          f"report: {rep.summary()}")
    if rep.rejected:
        for r in rep.rejected[:5]:
            print(f"  refused: {r['url']}: {r['reason']}")
    ok = seq / ours >= 8 and ours_n == len(urls) and seq_n == len(urls)
    print("goal met" if ok else "GOAL NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
