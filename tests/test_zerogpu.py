"""ZeroGPU wiring, with the real ``spaces`` package installed.

Off ZeroGPU (``SPACES_ZERO_GPU`` unset, as here) ``spaces.GPU`` gives the function back and
the GPU path of the runner trains in this process, on the CPU. On ZeroGPU ``spaces`` first
asks Hugging Face's device API for a GPU: a loopback stand-in for that API
(tests/zerogpu_api.py) refuses the way the real one does, so that ``spaces``' own code
raises its own errors, the app's real Train handler turns them into a plain message, and
"Train on the CPU instead" trains. No GPU is granted or pretended anywhere: there is none here.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

import imagegen
from tl_app import runs, zerogpu
from tl_app.access import Visitor
from tl_app.errors import GpuQuotaExhausted, GpuUnavailable, TrainerBusy
from tl_app.importer import import_files
from tl_app.runner import EventReader, GpuTraining, current_job, request_stop, start_training
from tl_app.train import TrainConfig
from zerogpu_api import NO_GPU, QUOTA, TOO_LONG, ZeroGpuApi, ip_token, zerogpu_app

SMALL = TrainConfig(size=32, epochs=1, pretrained=False, batch_size=8)
LONG = TrainConfig(size=64, epochs=20, pretrained=False, batch_size=4)


@pytest.fixture
def pictures(project, tmp_path):
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=24)])
    return project


def _events(job) -> list[dict]:
    return EventReader(job.events_path).read()


def _children() -> list[str]:
    out = subprocess.run(["ps", "-o", "args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "tl_app" in line]


# --- the GPU time asked for ----------------------------------------------------------------------------
def test_the_gpu_time_asked_for_grows_with_pictures_epochs_size_and_network():
    full = TrainConfig(arch="resnet18", epochs=1, size=224)
    # A few hundred pictures need far less than a minute of GPU: the floor, for the worker's start.
    assert zerogpu.gpu_seconds(full, 300) == zerogpu.MIN_SECONDS
    assert zerogpu.gpu_seconds(full, 0) == zerogpu.MIN_SECONDS
    big = dict(limit=10_000)  # without the cap, to see the estimate itself
    base = zerogpu.gpu_seconds(full, 3000, **big)
    assert base > zerogpu.MIN_SECONDS
    assert zerogpu.gpu_seconds(full, 6000, **big) > base                       # more pictures
    assert zerogpu.gpu_seconds(replace(full, epochs=5), 3000, **big) > base     # more epochs
    assert zerogpu.gpu_seconds(replace(full, size=448), 3000, **big) > base     # bigger pictures
    assert zerogpu.gpu_seconds(replace(full, arch="resnet50"), 3000, **big) > base  # a bigger network
    # Quick mode computes each picture's features once: far less than fine-tuning, and only the missing ones.
    quick = replace(full, quick=True)
    assert zerogpu.gpu_seconds(quick, 6000, **big) < zerogpu.gpu_seconds(full, 6000, **big)
    assert zerogpu.gpu_seconds(quick, 6000, to_embed=100, **big) < zerogpu.gpu_seconds(quick, 6000, **big)
    # Never more than ZeroGPU lends at once (300 s by default, TL_GPU_MAX_SECONDS otherwise).
    huge = replace(full, epochs=20, size=512, arch="convnext_tiny")
    assert zerogpu.gpu_seconds(huge, 5000) == zerogpu.MAX_SECONDS == zerogpu.max_seconds({})
    assert zerogpu.max_seconds({"TL_GPU_MAX_SECONDS": "120"}) == 120
    assert zerogpu.max_seconds({"TL_GPU_MAX_SECONDS": "soon"}) == zerogpu.MAX_SECONDS
    # The estimate of an ordinary fine-tuning (2,000 pictures, 5 epochs at 224 px) stays in minutes, not hours.
    assert 60 <= zerogpu.gpu_seconds(replace(full, epochs=5), 2000, **big) <= 300


def test_on_zerogpu_reads_the_variable_as_spaces_does():
    assert zerogpu.on_zerogpu({"SPACES_ZERO_GPU": "true"}) and zerogpu.on_zerogpu({"SPACES_ZERO_GPU": "1"})
    assert not zerogpu.on_zerogpu({}) and not zerogpu.on_zerogpu({"SPACES_ZERO_GPU": "false"})


# --- off ZeroGPU: spaces.GPU does nothing -----------------------------------------------------------------
def test_off_zerogpu_spaces_gives_the_training_function_back():
    import spaces
    from spaces.config import Config

    assert not zerogpu.on_zerogpu() and not Config.zero_gpu
    assert zerogpu.gpu_task() is zerogpu.run_training  # the decorator did nothing
    assert spaces.GPU(duration=lambda job: 1)(zerogpu.run_training) is zerogpu.run_training
    assert not zerogpu.prepare()


@pytest.mark.slow
def test_the_gpu_path_trains_in_this_process_and_records_the_run(pictures):
    project = pictures
    job = start_training(project, SMALL, owner=Visitor(session="ann"), borrow_gpu=True)
    assert isinstance(job, GpuTraining) and current_job(project) is job
    assert job.wait(300), "the training did not end"
    run = runs.get_run(project, job.run_id)
    assert run.status == "finished" and run.has_model and run.config["cpu"] is False
    events = _events(job)
    asked = zerogpu.gpu_seconds(SMALL, len(project.items()))
    # The page first hears that a GPU is asked for (and for how long), then the run's own events.
    assert events[0]["phase"] == "gpu_wait" and events[0]["seconds"] == asked == job.seconds
    assert events[1]["type"] == "start" and events[1]["run"] == job.run_id
    assert any(ev.get("phase") == "device" and ev["device"].startswith("CPU") for ev in events)
    assert events[-1]["type"] == "end" and events[-1]["status"] == "finished"
    assert current_job(project) is None
    assert _children() == []  # no training process: the work ran where spaces.GPU was called


@pytest.mark.slow
def test_a_gpu_training_is_stopped_like_any_other_and_holds_the_trainer(pictures):
    project = pictures
    ann, bob = Visitor(session="ann"), Visitor(session="bob")
    job = start_training(project, LONG, owner=ann, borrow_gpu=True)
    with pytest.raises(TrainerBusy):
        start_training(project, LONG, owner=bob)
    end = time.time() + 120
    while not any(ev.get("type") == "batch" for ev in _events(job)) and time.time() < end:
        time.sleep(0.1)
    assert not request_stop(project, bob, shared=True).stopping
    assert request_stop(project, ann, shared=True).stopping
    assert job.wait(120)
    run = runs.get_run(project, job.run_id)
    assert run.status == "stopped" and "GPU time" not in run.reason  # the person's stop, at the next batch


@pytest.mark.slow
def test_a_training_longer_than_its_gpu_time_stops_itself_and_keeps_its_best_epoch(pictures):
    """ZeroGPU takes the GPU back when the time asked for is up: the training ends first, keeping its work."""
    import fastai.learner  # noqa: F401 - loaded before the clock starts, as in a warm worker

    project = pictures
    run_id = runs.new_run_id()
    rdir = runs.run_dir(project, run_id)
    rdir.mkdir(parents=True)
    job = zerogpu.GpuJob(str(project.root), run_id, replace(SMALL, epochs=100, size=96), str(rdir / "events.jsonl"),
                         seconds=45)  # stops 15 s (the margin) before its 45 s: after 30 s, epochs done by then
    # (100 epochs at 96 px take minutes even on an idle machine: at 32 px they once ended in 26 s.)
    t0 = time.time()
    out = zerogpu.run_training(job)
    assert time.time() - t0 < 90
    run = runs.get_run(project, run_id)
    assert out["status"] == run.status == "stopped" and run.has_model, out
    assert run.reason.startswith("stopped when the GPU time asked for (45 s) was nearly up; the model after epoch")
    events = EventReader(rdir / "events.jsonl").read()
    assert any(ev.get("phase") == "gpu_time" and "nearly up" in ev["message"] for ev in events)


def _fork_worker(jobs, results):
    """What spaces does in its worker: take a pickled job, run it in a thread, send back a pickled result."""
    job = jobs.get()
    with ThreadPoolExecutor() as pool:
        results.put(pool.submit(zerogpu.run_training, job).result())


@pytest.mark.slow
def test_the_job_and_its_result_cross_a_fork_as_in_spaces_worker(pictures):
    """Arguments and results are plain data, and the training works in a process forked from this one."""
    project = pictures
    run_id = runs.new_run_id()
    rdir = runs.run_dir(project, run_id)
    rdir.mkdir(parents=True)
    job = zerogpu.GpuJob(str(project.root), run_id, SMALL, str(rdir / "events.jsonl"), seconds=120)
    assert pickle.loads(pickle.dumps(job)) == job
    ctx = multiprocessing.get_context("fork")  # what spaces uses
    jobs, results = ctx.Queue(), ctx.Queue()
    worker = ctx.Process(target=_fork_worker, args=(jobs, results), daemon=True)
    worker.start()
    try:
        jobs.put(job)
        out = results.get(timeout=300)
    finally:
        worker.join(30)
        if worker.is_alive():
            worker.kill()
    assert out["status"] == "finished" and out["run"] == run_id
    run = runs.get_run(project, run_id)  # written to the project by the other process
    assert run.status == "finished" and run.has_model and (rdir / "model.safetensors").exists()


# --- what spaces raises when it lends no GPU, in plain words ------------------------------------------------
class _Headers(dict):
    """Request headers as spaces reads them (a mapping with attributes)."""


class _Request:
    def __init__(self, headers: dict):
        self.headers = _Headers(headers)


def _refused(api: ZeroGpuApi, monkeypatch, request=None, seconds: int = 90):
    """The error spaces' own client raises when the stand-in API refuses a GPU."""
    from spaces.config import Config
    from spaces.zero import client

    monkeypatch.setattr(Config, "zero_device_api_url", api.url)
    with pytest.raises(Exception) as caught:
        client.schedule(task_id=1, request=request, duration=timedelta(seconds=seconds))
    return caught.value


def test_a_used_up_quota_a_too_long_request_and_no_free_gpu_read_plainly(monkeypatch):
    with ZeroGpuApi(QUOTA, left=12, wait=3540) as api:
        signed_in = _refused(api, monkeypatch, _Request({"x-ip-token": ip_token()}))
        assert signed_in.title == "ZeroGPU quota exceeded"  # spaces' own words, for the record
        err = zerogpu.refusal(signed_in, seconds=90)
        assert isinstance(err, GpuQuotaExhausted)
        assert str(err) == ("Your GPU time on Hugging Face is used up for now (this training asks for 90 s; 12 s "
                            "are left). It comes back after 59 min. You can train on the CPU instead (slower, and "
                            "it uses no GPU time), or try again later.")
        anonymous = zerogpu.refusal(_refused(api, monkeypatch), seconds=90)
        assert isinstance(anonymous, GpuQuotaExhausted) and "used up for now" in str(anonymous)
        assert "subscribe" not in str(err).lower() and "http" not in str(err)  # no sales pitch, no links
        api.mode = TOO_LONG
        err = zerogpu.refusal(_refused(api, monkeypatch, _Request({"x-ip-token": ip_token()})), seconds=90)
        assert type(err) is GpuUnavailable and "more GPU time (90 s) than ZeroGPU lends at once" in str(err)
        api.mode = NO_GPU
        err = zerogpu.refusal(_refused(api, monkeypatch), seconds=90)
        assert type(err) is GpuUnavailable and "no GPU free" in str(err) and "on the CPU instead" in str(err)
        assert [p["durationSeconds"] for p in api.schedules()] == ["90"] * 4
    assert zerogpu.refusal(ValueError("something else")) is None


# --- through the real Train handler on a ZeroGPU server --------------------------------------------------------
@pytest.mark.slow
def test_on_zerogpu_a_used_up_quota_is_said_plainly_and_training_on_the_cpu_works(pictures, tmp_path):
    from gradio_client import Client

    project = pictures
    form = dict(mode="full", epochs=1, size=32, pretrained=False)
    with ZeroGpuApi(QUOTA, left=12, wait=3540) as api:
        proc, url = zerogpu_app(project.root, api.url, tmp_path / "app.log")
        try:
            c = Client(url, verbose=False, download_files=False, headers={"x-ip-token": ip_token()})
            out = c.predict(**form, api_name="/train")
            status = out[0]  # the button "Train on the CPU instead" appears too: see tests/e2e/test_zerogpu_page.py
            assert status.startswith("Your GPU time on Hugging Face is used up for now (this training asks for "
                                     f"{zerogpu.MIN_SECONDS} s; 12 s are left). It comes back after 59 min."), status
            assert "You can train on the CPU instead" in status
            # The GPU was asked for with the duration computed from the pictures and epochs, for this visitor.
            (asked,) = api.schedules()
            cfg = TrainConfig(epochs=1, size=32, pretrained=False)
            assert int(asked["durationSeconds"]) == zerogpu.gpu_seconds(cfg, len(project.items()))
            assert asked["token"] == ip_token()
            assert runs.list_runs(project) == [] and not any(project.runs_dir.glob("*"))  # nothing recorded
            # The same settings on the CPU: a training process, which ZeroGPU does not count.
            out = c.predict(**form, api_name="/train_cpu")
            run = runs.list_runs(project)[0]
            assert run.status == "finished" and run.config["cpu"] is True and run.has_model, run
            assert out[0].startswith(f"{run.name} finished in "), out[0]
            assert runs.read_json(project, run.id, "report.json")["device"].startswith("CPU")
            assert len(api.schedules()) == 1  # the CPU training asked ZeroGPU for nothing
            assert "ZeroGPU: each training borrows a GPU" in (tmp_path / "app.log").read_text(errors="replace")
        finally:
            proc.terminate()
            proc.wait(30)
