"""Progress with the time left, and Stop, for the long steps: the shared estimate, the CLI and the UI.

The estimate is tested on a clock the test moves (no timing); the fronts with an import of
large pictures that takes seconds to read, so that its progress can be seen and stopped.
"""

from __future__ import annotations

import re
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import imagegen
from tl_app.jobs import Progress, ProgressLine, StopToken, TimeLeft, progress_words, time_left_words

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


# --- the shared estimate --------------------------------------------------------------------------
def test_nothing_is_estimated_until_there_is_enough_data_then_the_rate_gives_the_time_left():
    clock = Clock()
    eta = TimeLeft(clock=clock)
    assert eta.update(0, 100) is None          # nothing done yet
    clock.t += 5                               # set-up (opening a zip, loading a model) is not counted
    assert eta.update(1, 100) is None          # the first step starts the clock
    clock.t += 1
    assert eta.update(3, 100) is None          # 1 s of data: too little to say
    for _ in range(4):                         # then 2 steps a second
        clock.t += 1
        left = eta.update(eta_done := (3 + 2 * (_ + 1)), 100)
    assert left == pytest.approx((100 - eta_done) / 2.0)
    assert eta.update(100, 100) == 0


def test_the_estimate_follows_a_change_of_pace_without_jumping_at_one_slow_step():
    clock = Clock()
    eta = TimeLeft(clock=clock)
    done = 0
    for _ in range(10):                        # 10 steps a second
        clock.t += 1
        done += 10
        eta.update(done, 1000)
    steady = eta.seconds
    assert steady == pytest.approx((1000 - done) / 10.0)
    clock.t += 1                               # one slow second: the figure moves, but not 10-fold
    eta.update(done + 1, 1000)
    assert steady < eta.seconds < 3 * steady
    for _ in range(20):                        # the new pace (1 a second) holds: the estimate gets there
        clock.t += 1
        done += 1
        eta.update(done + 1, 1000)
    assert eta.seconds == pytest.approx(1000 - done - 1, rel=0.05)


def test_a_count_that_starts_over_restarts_the_estimate():
    clock = Clock()
    eta = TimeLeft(clock=clock)
    for d in range(1, 10):
        clock.t += 1
        eta.update(d * 10, 100)
    assert eta.seconds is not None
    clock.t += 1
    assert eta.update(1, 50) is None           # a new phase counts from 1 again


@pytest.mark.parametrize("seconds, words", [
    (None, ""), (3, "a few seconds left"), (42, "about 40 s left"), (61, "about 1 min left"),
    (95, "about 1 min 40 s left"), (170, "about 3 min left"), (3600 + 600, "about 1 h 10 min left"),
    (7200, "about 2 h left")])
def test_time_left_is_said_the_way_a_person_says_it(seconds, words):
    assert time_left_words(seconds) == words


def test_progress_words_name_the_count_and_add_the_time_left_only_while_work_remains():
    assert progress_words(120, 500, 130, "pictures") == "120 of 500 pictures, about 2 min left"
    assert progress_words(1200, 5000, None, "files") == "1,200 of 5,000 files"
    assert progress_words(500, 500, 0, "pictures") == "500 of 500 pictures"
    clock = Clock()
    line = ProgressLine("links", estimator=TimeLeft(clock=clock))
    texts = []
    for d in range(1, 8):
        clock.t += 1
        texts.append(line(Progress(d * 5, 100)))
    assert texts[0] == "5 of 100 links" and texts[-1] == "35 of 100 links, about 15 s left"


# --- the CLI ---------------------------------------------------------------------------------------
def _cli(*args, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tl_app", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, **kw)


def test_the_cli_import_prints_its_progress_with_the_time_left_and_ctrl_c_stops_it_keeping_what_is_in(tmp_path):
    src = imagegen.slow_pictures(tmp_path / "big" / "gradient", 60)
    proj = tmp_path / "proj"
    p = _cli("import", proj, src.parent, "--json")
    lines: list[str] = []
    # Read stderr as it comes; once the time left is shown, press Ctrl-C.
    for line in p.stderr:
        lines.append(line)
        if " left" in line and "files read" in line:
            p.send_signal(2)  # SIGINT, as Ctrl-C
            break
    rest_out, rest_err = p.communicate(timeout=120)
    text = "".join(lines) + rest_err
    assert p.returncode == 0, text
    assert "Traceback" not in text
    shown = [ln for ln in lines if "files read" in ln]
    assert any(" of 60 files read, " in ln and ln.rstrip().endswith(" left") for ln in shown), text
    assert "stopping after this picture; the pictures imported so far stay" in text
    import json

    rep = json.loads(rest_out)
    assert rep["stopped"] is True and rep["files"] == 60 and rep["read"] < 60
    assert rep["imported"] == 1 and rep["duplicates"] == rep["read"] - 1  # every copy after the first is one
    from tl_app.project import Project

    assert len(Project.open(proj).items()) == 1


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
def test_ctrl_c_in_a_terminal_stops_an_import_on_helper_processes_keeping_what_is_in(tmp_path):
    """From 1,000 files the import decodes on helper processes; Ctrl-C in a terminal reaches every
    process of the program: the import stops as it does on threads, and says what it kept."""
    from tl_app import importer
    from tl_app.project import Project

    src = tmp_path / "big"
    imagegen.class_folder(src, per_class=importer._PROCESSES_FROM // 2, size=(40, 40), classes=("red", "blue"))
    # After the small ones, slow enough to be stopped: the time left is printed only after a couple of seconds
    # of data, and two helpers got through 40 of these before the Ctrl-C in one whole run.
    imagegen.slow_pictures(src / "zslow", 100)
    proj = tmp_path / "proj"
    p = _cli("import", proj, src, "--json", start_new_session=True)  # a process group of its own, as a terminal's
    lines: list[str] = []
    total = importer._PROCESSES_FROM + 100
    for line in p.stderr:
        lines.append(line)
        read = re.search(r"([\d,]+) of [\d,]+ files read", line)
        if " left" in line and read and int(read.group(1).replace(",", "")) < total - 50:
            os.killpg(p.pid, 2)  # SIGINT to every process of the group, as Ctrl-C in a terminal
            break
    rest_out, rest_err = p.communicate(timeout=120)
    text = "".join(lines) + rest_err
    assert p.returncode == 0 and "Traceback" not in text, text
    assert "stopping after this picture; the pictures imported so far stay" in text
    import json

    rep = json.loads(rest_out)
    # The helpers decode ahead of the count printed: in about 1 run in 10 they had read every file when
    # "993 of 1,100 files read" was printed, and the Ctrl-C found the import at its end. Then it ends whole.
    assert rep["files"] == total and (rep["stopped"] is True and rep["read"] < total
                                      or rep["stopped"] is False and rep["read"] == total), (rep, text)
    assert rep["imported"] == len(Project.open(proj).items()) >= 1


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
def test_ctrl_c_while_the_helper_processes_start_prints_no_traceback(tmp_path):
    """The fork server loads Python and the picture modules in the first fraction of a second; a Ctrl-C
    then reached it too and printed its traceback under the import's "stopping" line."""
    import json

    from tl_app import importer

    src = imagegen.class_folder(tmp_path / "big", per_class=importer._PROCESSES_FROM // 2 + 50, size=(40, 40),
                                classes=("red", "blue"))
    for k, delay in enumerate((0.15, 0.2, 0.25, 0.3, 0.4)):  # where 4 of 5 printed one, before
        p = _cli("import", tmp_path / f"proj{k}", src, "--json", start_new_session=True)
        time.sleep(delay)
        os.killpg(p.pid, 2)  # SIGINT to every process of the group, as Ctrl-C in a terminal
        out, err = p.communicate(timeout=120)
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err)
        files = 2 * (importer._PROCESSES_FROM // 2 + 50)
        if p.returncode == 130:  # before the CLI listened for Ctrl-C: it ends at once, with a word
            assert err.strip().endswith("interrupted"), err
        elif p.returncode == -2:  # after the import, as the program ended (it no longer listens): ended by it
            assert f"{files:,} of {files:,} files read" in err, (delay, err)
        else:
            assert p.returncode == 0 and json.loads(out)["files"] == files, (delay, p.returncode, err)


# --- the UI ----------------------------------------------------------------------------------------
def test_the_ui_import_shows_the_time_left_and_its_stop_ends_it_keeping_what_is_in(tmp_path):
    """Through gradio_client: the progress the page shows says "left"; Stop ends the import, Undo takes it out."""
    from gradio_client import Client

    from e2e.harness import serve

    src = imagegen.slow_pictures(tmp_path / "big" / "gradient", 60)
    with serve(tmp_path / "proj") as srv:
        c = Client(srv.url, verbose=False, download_files=False)
        job = c.submit(str(src.parent), api_name="/import_folder")
        seen: list[tuple] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not job.done():
            st = job.status()
            for pu in (getattr(st, "progress_data", None) or []):
                seen.append((pu.index, pu.length, pu.unit, pu.desc))
            if any(" left" in (d or "") for *_, d in seen):
                break
            time.sleep(0.2)
        # The page's progress bar: "24/60 files", and the words "Importing, about 10 s left".
        assert any(n == 60 and unit == "files" and d.startswith("Importing, ") and d.endswith(" left")
                   for _, n, unit, d in seen), seen
        assert c.predict(api_name="/stop_import").startswith("**Stopping the import")
        out = job.result(timeout=60)
        result = out[-1]
        assert "stopped after" in result and "of 60 files" in result and "Undo removes" in result
        assert len(srv.project.items()) == 1
        assert c.predict(api_name="/stop_import") == "Nothing is importing."
        # The stopped import is one step of the history.
        assert srv.project.history()[0].kind == "add"


# --- Review and export: stopped, nothing half-done is shown -----------------------------------------
def test_a_stopped_review_says_so_returns_nothing_half_judged_and_the_next_one_is_whole(project, tmp_path):
    from tl_app import review
    from tl_app.errors import Stopped
    from tl_app.importer import import_files

    src = imagegen.class_folder(tmp_path / "src", per_class=30, size=(48, 48))
    import_files(project, [src])
    review._ROWS.clear()
    stop = StopToken()
    stages: list[str] = []

    def stop_at_copies(p: Progress) -> None:
        stages.append(p.message)
        if p.message == "finding copies":  # asked as the copies are being compared (nothing cached yet)
            stop.set()

    with pytest.raises(Stopped, match="Review was stopped before it judged every picture; nothing is shown"):
        review.queue(project, progress=stop_at_copies, stop=stop)
    # It ended at the first picture the stage would have measured (its first count of pictures, 0 of 60).
    assert stages == ["reading the pictures", "finding copies", "checking new pictures"]
    seen: list[Progress] = []
    q = review.queue(project, progress=seen.append)  # not the stopped answer: computed whole
    assert q.run is None and q.counts["quality"] == 60  # every picture judged (48 px: each one "tiny")
    assert [p.message for p in seen if p.unit == "stages"] == ["reading the pictures", "finding copies",
                                                                 "checking picture quality", "done"]
    assert seen[-1].done == seen[-1].total == 3
    # Within "finding copies", the new pictures measured, counted.
    counts = [(p.message, p.done, p.total) for p in seen if p.unit == "pictures"]
    assert ("checking new pictures", 50, 60) in counts and ("fingerprinting new pictures", 50, 60) in counts
