"""Training processes started by the app: followed from any page, stopped by the right person, never left behind.

Real training processes (``python -m tl_app train``) on small seeded pictures; ``ps``
shows what the operating system still holds after each one ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

import imagegen
from tl_app import runs
from tl_app.access import Visitor, may_stop_training
from tl_app.errors import TrainerBusy
from tl_app.importer import import_files
from tl_app.runner import EventReader, current_job, fail_abandoned_runs, request_stop, start_training
from tl_app.train import TrainConfig

pytestmark = pytest.mark.slow

LONG = TrainConfig(size=64, epochs=20, pretrained=False, batch_size=4)


def _children() -> list[tuple[int, str, str]]:
    """(pid, state, command) of every process this test process started and the system still holds."""
    out = subprocess.run(["ps", "-o", "pid=,stat=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
    rows = []
    for line in out.stdout.splitlines():
        pid, stat, args = line.strip().split(None, 2)
        if not args.startswith("ps "):
            rows.append((int(pid), stat, args))
    return rows


def _training_children() -> list[tuple[int, str, str]]:
    return [c for c in _children() if "tl_app" in c[2] or c[1].startswith("Z")]


def _wait_for(predicate, timeout: float = 120.0):
    end = time.time() + timeout
    while time.time() < end:
        v = predicate()
        if v:
            return v
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def pictures(project, tmp_path):
    import_files(project, [imagegen.class_folder(tmp_path / "src", per_class=30)])
    return project


def _started(job) -> None:
    """Wait until the training has run its first batch."""
    assert _wait_for(lambda: any(ev.get("type") == "batch" for ev in EventReader(job.events_path).read())), \
        "the training never reached its first batch"


def test_a_finished_run_is_not_running_anywhere_and_leaves_no_process(pictures):
    project = pictures
    job = start_training(project, TrainConfig(size=32, epochs=1, pretrained=False), owner=Visitor(session="a"))
    assert current_job(project) is job
    assert job.wait(180), "the training did not end"
    run = runs.get_run(project, job.run_id)
    assert run.status == "finished" and run.has_model
    assert current_job(project) is None
    assert [r for r in runs.list_runs(project) if r.status == "running"] == []
    assert _training_children() == []  # ended and reaped: no zombie, nothing left behind


def test_a_process_that_dies_is_reaped_and_its_run_recorded_as_failed(pictures):
    project = pictures
    job = start_training(project, LONG, owner=Visitor(session="a"))
    _started(job)
    os.kill(job.proc.pid, signal.SIGKILL)  # as an out-of-memory killer would
    assert job.wait(60)
    run = runs.get_run(project, job.run_id)
    assert run.status == "failed" and "ended with code" in run.reason
    fail_abandoned_runs(project)
    assert runs.get_run(project, job.run_id).status == "failed"
    assert _training_children() == []


def test_a_process_killed_before_it_recorded_its_run_leaves_a_failed_run_not_an_error(pictures):
    """Killed at once (before it wrote anything): the page and the history get a failed run, with why."""
    project = pictures
    job = start_training(project, TrainConfig(size=32, epochs=1, pretrained=False), owner=Visitor(session="a"))
    os.kill(job.proc.pid, signal.SIGKILL)  # at once: the process has not even imported the app yet
    assert job.wait(60)
    run = runs.get_run(project, job.run_id)
    assert run.status == "failed" and "ended" in run.reason and run.mode == "finetune" and run.arch == "resnet18"
    assert current_job(project) is None and _training_children() == []


def test_any_follower_sees_the_events_from_the_start_and_the_owner_stops(pictures):
    project = pictures
    ann, bob = Visitor(session="ann"), Visitor(session="bob")
    job = start_training(project, LONG, owner=ann)
    with pytest.raises(TrainerBusy):
        start_training(project, LONG, owner=bob)
    _started(job)
    # A page opened now (a reload) reads every event from the run's start, then follows.
    seen = []
    for new in current_job(project).follow(0.2):
        seen += new
        if any(ev.get("type") == "batch" for ev in new):
            break
    assert seen[0]["type"] == "start" and seen[0]["run"] == job.run_id
    # On a shared server another visitor may not stop it; its owner may, from any page of theirs.
    refused = request_stop(project, bob, shared=True)
    assert not refused.stopping and "Only the person who started it can stop it" in refused.message
    assert job.stop_requested is None
    answer = request_stop(project, ann, shared=True)
    assert answer.stopping and answer.message == f"Stopping {job.title} after the current batch…"
    assert job.wait(120)
    assert runs.get_run(project, job.run_id).status == "stopped"
    assert request_stop(project, ann, shared=True).message == "Nothing is training."
    assert _training_children() == []


def test_who_may_stop_a_training():
    ann_page1, ann_page2 = Visitor(session="1"), Visitor(session="2")
    # On one's own computer (not shared, no login) every page is the same person.
    assert may_stop_training(ann_page1, ann_page2, shared=False)
    # A shared server without login can only tell pages apart.
    assert not may_stop_training(ann_page1, ann_page2, shared=True)
    assert may_stop_training(ann_page1, Visitor(session="1"), shared=True)
    # With a login, the same user name is the same person, on any page; another user is not.
    assert may_stop_training(Visitor("ann", "1"), Visitor("ann", "2"), shared=True)
    assert may_stop_training(Visitor("ann", "1"), Visitor("ann", "2"), shared=False)
    assert not may_stop_training(Visitor("ann", "1"), Visitor("bob", "1"), shared=False)
    assert not may_stop_training(Visitor("ann", "1"), Visitor(None, "1"), shared=False)
    # A training started on the command line: the computer's owner may stop it from the page; visitors may not.
    assert may_stop_training(None, ann_page1, shared=False)
    assert not may_stop_training(None, ann_page1, shared=True)
    assert not may_stop_training(None, Visitor("ann", "1"), shared=False)


def test_a_command_line_training_is_followed_and_stopped_from_the_app(pictures, tmp_path):
    """A training the app did not start (the CLI, or before a restart) is shown, and Stop reaches it."""
    import sys

    project = pictures
    run_id = runs.new_run_id()
    rdir = runs.run_dir(project, run_id)
    rdir.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    proc = subprocess.Popen([sys.executable, "-m", "tl_app", "train", str(project.root), "--no-pretrained",
                             "--size", "64", "--epochs", "20", "--batch-size", "4", "--run-id", run_id,
                             "--events", str(rdir / "events.jsonl"), "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        job = _wait_for(lambda: current_job(project), 120)
        assert job is not None and job.job_id == run_id and job.owner is None
        assert job.title == runs.get_run(project, run_id).name
        assert not request_stop(project, Visitor(session="x"), shared=True).stopping
        assert request_stop(project, Visitor(session="x"), shared=False).stopping
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert runs.get_run(project, run_id).status == "stopped" and current_job(project) is None
