"""What Classify costs against the bare network, measured side by side in one run.

1. Bulk: pictures per second of :func:`tl_app.classify.classify_many` on a folder of photo-sized
   JPEGs (reading, the import pipeline, decoding, batches of 32), against a plain torch forward
   of the same network, batches of 32, on the same pictures already decoded (goal >= 0.8x).
2. One picture through the HTTP API (its bytes as the body of ``POST /api/predict``, against the app
   served by its own process on loopback), against the forward of that one decoded picture (goal
   <= 2x); Gradio's own API (an upload, then ``POST /gradio_api/run/predict``) and the page's
   ``/classify`` through gradio_client are printed beside it.
3. The heatmap (:func:`tl_app.explain.explain`) against one prediction (``predict_files``) of the
   same picture (goal <= 5x).

The baselines run the network as trained. The app runs it with each batch norm folded into the
convolution before it (:func:`tl_app.models.fold_batchnorm`, the same answers to 1e-5, about a tenth
faster on CPU); the bulk figure also prints the folded network's own speed, so that what reading
and decoding cost shows apart from that gain.

Pictures are bench/train.py's drawn shapes; the model is a quick run on resnet18 with random
weights (a temporary TORCH_HOME: the machine is offline; time does not depend on the values),
trained on 100 pictures so that its none-of-these rule is recorded and every prediction timed
here computes it, as a user's would (with the 60 pictures of the first version the run held out
12, fewer than the rule needs, and the app skipped that work). Medians of repeated runs; the
model is loaded once, and each side called a few times, before anything is timed. The bench
and the served app both keep torch's default threads (one per core), and both keep the memory a
forward frees for the next one (:func:`tl_app.features.keep_freed_memory`, which the app sets when
it starts: by default each single-picture forward took ~10,000 fresh pages from the kernel, about
20 ms of system time; a baseline left with that would be slower than the app's own forward, which
no longer pays it). The one-picture forward is the same decoded picture at the model's size,
each timed right after an untimed one (its best case: a forward that follows another); each side
is called in turn, one call at a time (see :func:`_medians`), 41 of each by default.

    .venv/bin/python bench/classify.py [--images 256] [--size 224] [--repeat 41]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]


def _medians(a, b, repeat: int, *, b_warm: bool = False) -> tuple[float, float]:
    """Median times of ``a`` and ``b``, called in turn one call each, so that a busy moment of a shared
    machine hits both alike (blocks of 7 calls, as before, let a burst of another program's work land
    on one side only: the same code measured 2x to 12x). A pause of 50 ms comes before each call, so
    that the other's threads are idle first (a forward's thread pool spins for up to ~20 ms after it).
    With ``b_warm`` each timed call of ``b`` follows an untimed one: its best case (a forward that
    follows another), so the pause does not make the baseline slower."""
    ta, tb = [], []
    for _ in range(repeat):
        for fn, out, warm in ((a, ta, False), (b, tb, b_warm)):
            time.sleep(0.05)
            if warm:
                fn()
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


_ECHO_APP = """
import os, sys
import gradio as gr
with gr.Blocks() as demo:
    f = gr.File()
    out = gr.Label()
    f.change(lambda x: {"nothing": 1.0}, f, out, api_name="echo")
demo.queue(default_concurrency_limit=2)
demo.launch(server_name="127.0.0.1", server_port=int(os.environ["PORT"]), quiet=True)
"""


@contextlib.contextmanager
def _served(args: list[str], **env):
    """Serve a Gradio app (``python ARGS``, port in ``$PORT``) in its own process on loopback; yield its URL."""
    import socket
    import subprocess
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env={**os.environ, **env, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"the server {args} ended before it answered")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256, help="pictures in the bulk folder")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=41, help="runs of each single-picture timing")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tl_bench_classify_"))
    os.environ.update(TL_OFFLINE="1", TORCH_HOME=str(tmp / "torch_home"), PYTHONWARNINGS="ignore",
                      GRADIO_ANALYTICS_ENABLED="False")

    import numpy as np
    import torch

    from train import make_pictures, random_weights, shapes_project
    from tl_app.classify import classify_many, gather
    from tl_app.explain import explain
    from tl_app.features import keep_freed_memory
    from tl_app.models import load_model
    from tl_app.predict import model_for, open_set_for, picture_pixels, predict_files
    from tl_app.runs import run_dir
    from tl_app.train import TrainConfig, train

    keep_freed_memory()  # as the served app does: the baselines get the same memory setting
    random_weights(tmp / "torch_home")
    project = shapes_project(tmp, 100, seed=1)
    rep = train(project, TrainConfig(quick=True, size=args.size))
    assert rep.status == "finished", rep
    make_pictures(tmp / "bulk", args.images, seed=2)
    folder = tmp / "bulk"
    files = sorted(folder.rglob("*.jpg"))
    folded, spec, run = model_for(project)  # the app's: batch norms folded into the convolutions
    model, _ = load_model(run_dir(project, run.id), run.model_sha256, project.root)  # the network as trained
    rule = open_set_for(project, run.id)
    assert rule is not None, "the run recorded no none-of-these rule: the timings would leave out its work"
    print(f"model: quick run, resnet18 at {spec.size} px, {len(spec.vocab)} classes, none-of-these rule on "
          f"({rule.rule.held_out} held out); torch threads {torch.get_num_threads()}; {os.cpu_count()} cores")

    # 1. bulk against the bare forward on the same decoded pictures
    pixels = np.stack([picture_pixels(project, f, spec.size) for f in files])
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    model.eval()

    def forward(px, net=model) -> None:
        with torch.inference_mode():
            for s in range(0, len(px), 32):
                x = torch.from_numpy(px[s:s + 32]).permute(0, 3, 1, 2).float().div_(255)
                # channels_last, as the app feeds it: on CPU a batch of one is many times slower without it
                torch.softmax(net(((x - mean) / std).contiguous(memory_format=torch.channels_last)), 1)

    forward(pixels[:32])  # warm-up
    classify_many(project, gather([folder])[:32])
    forward(pixels[:32], folded)
    t_bulk = t_fwd = t_folded = 0.0
    for _ in range(2):  # alternate, so that a busy moment of the machine hits all three
        t0 = time.perf_counter()
        res = classify_many(project, gather([folder]))
        t_bulk += time.perf_counter() - t0
        t0 = time.perf_counter()
        forward(pixels)
        t_fwd += time.perf_counter() - t0
        t0 = time.perf_counter()
        forward(pixels, folded)
        t_folded += time.perf_counter() - t0
    assert len(res.classified) == len(files), res.summary()
    bulk_ps, fwd_ps, folded_ps = (2 * len(files) / t for t in (t_bulk, t_fwd, t_folded))
    print(f"\n1. bulk, {len(files)} JPEGs of 320-640 px (folder -> table):")
    print(f"   classify_many       {bulk_ps:7.1f} pictures/s")
    print(f"   plain torch forward {fwd_ps:7.1f} pictures/s (same network, same decoded pictures, batches of 32)")
    print(f"   ratio               {bulk_ps / fwd_ps:7.2f}x   (goal >= 0.8x)")
    print(f"   for comparison: the app's network (batch norms folded into the convolutions) alone "
          f"{folded_ps:.1f} pictures/s; classify_many is {bulk_ps / folded_ps:.2f}x of it (the cost of reading, "
          f"decoding and the none-of-these features)")

    # 2. one picture through the HTTP API against its forward. The app is served by its own process
    # (as `python app.py` serves it), so that the client's work does not share this process's GIL
    # and threads with the server's. The API a program uses: the picture as the body of
    # POST /api/predict (one request). For comparison: Gradio's own API (upload, then POST
    # /gradio_api/run/predict, not queued), the page's /classify through gradio_client (queued, and
    # the client's own round trip), and that round trip alone (an app whose one endpoint does nothing).
    import httpx
    from gradio_client import Client, handle_file

    from e2e.harness import predict_api, predict_http

    one = files[0]
    one_px = pixels[:1]
    with _served(["app.py"], TL_PROJECT=str(project.root)) as app_url, \
            _served(["-c", _ECHO_APP]) as echo_url, httpx.Client(timeout=60) as http:
        client = Client(app_url, verbose=False, download_files=False)
        echo = Client(echo_url, verbose=False, download_files=False)
        for _ in range(3):  # warm-up: model loaded, caches filled
            assert predict_api(app_url, one, client=http).json()["label"]
            assert predict_http(app_url, one, client=http)["data"][0]["label"]
            client.predict([handle_file(one)], api_name="/classify")
            echo.predict(handle_file(one), api_name="/echo")
        t_api, t_one_fwd = _medians(lambda: predict_api(app_url, one, client=http), lambda: forward(one_px),
                                    args.repeat, b_warm=True)
        t_gradio_api, _ = _medians(lambda: predict_http(app_url, one, client=http), lambda: None, args.repeat)
        t_page, _ = _medians(lambda: client.predict([handle_file(one)], api_name="/classify"), lambda: None,
                             args.repeat)
        t_echo, _ = _medians(lambda: echo.predict(handle_file(one), api_name="/echo"), lambda: None, args.repeat)
    print(f"\n2. one picture ({one.name}), median of {args.repeat}:")
    print(f"   HTTP /api/predict   {t_api * 1000:7.1f} ms  (the picture as the body of one POST, loopback; "
          f"the app in its own process)")
    print(f"   plain torch forward {t_one_fwd * 1000:7.1f} ms")
    print(f"   ratio               {t_api / t_one_fwd:7.2f}x   (goal <= 2x)")
    print(f"   for comparison, Gradio's own API (upload, then POST /gradio_api/run/predict) "
          f"{t_gradio_api * 1000:.1f} ms ({t_gradio_api / t_one_fwd:.2f}x);")
    print(f"   through gradio_client: the page's /classify {t_page * 1000:.1f} ms "
          f"({t_page / t_one_fwd:.2f}x); gradio_client's own round trip (an endpoint that does nothing) "
          f"{t_echo * 1000:.1f} ms ({t_echo / t_one_fwd:.2f}x)")

    # 3. the heatmap against one prediction
    explain(project, one)
    t_heat, t_pred = _medians(lambda: explain(project, one), lambda: predict_files(project, [one]), args.repeat)
    print(f"\n3. heatmap of one picture, median of {args.repeat}:")
    print(f"   explain (Grad-CAM)  {t_heat * 1000:7.1f} ms")
    print(f"   predict_files       {t_pred * 1000:7.1f} ms")
    print(f"   ratio               {t_heat / t_pred:7.2f}x   (goal <= 5x)")


if __name__ == "__main__":
    main()
