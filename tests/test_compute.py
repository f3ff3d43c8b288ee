"""Classify's forward passes run on one thread per process, whichever server thread asked (tl_app.compute)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tl_app.compute import on_compute_thread
from tl_app.predict import model_for, predict_files


def test_predictions_asked_from_several_threads_run_their_passes_on_one(trained_project):
    model, _, _ = model_for(trained_project)
    ran_on = []
    hook = model[0].register_forward_hook(  # the body: its pass is the forward
        lambda *_: ran_on.append(threading.get_ident()))
    pictures = sorted(p for p in trained_project.root.rglob("*.jpg") if "thumbs" not in p.parts)[:4]
    try:
        with ThreadPoolExecutor(4) as pool:  # as a web server's worker threads ask
            answers = list(pool.map(lambda f: predict_files(trained_project, [f])[0], pictures))
    finally:
        hook.remove()
    assert all(a.label and not a.error for a in answers)
    asked_from = threading.get_ident()
    assert len(ran_on) == 4 and len(set(ran_on)) == 1 and ran_on[0] != asked_from


def test_the_main_thread_runs_its_own_work_and_errors_come_back_to_the_caller():
    assert on_compute_thread(threading.get_ident) == threading.get_ident()  # a command line: no hand-over

    def boom():
        raise ValueError("not a picture")

    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="not a picture"):
            pool.submit(on_compute_thread, boom).result()
        # a call from the compute thread itself runs there at once (no wait on its own queue)
        nested = pool.submit(on_compute_thread, lambda: on_compute_thread(threading.get_ident)).result()
        assert nested == pool.submit(on_compute_thread, threading.get_ident).result()


def test_one_blas_thread_holds_blas_to_one_thread_and_puts_the_setting_back():
    import numpy as np
    from threadpoolctl import threadpool_info

    from tl_app.compute import one_blas_thread

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    with one_blas_thread():
        assert blas_threads() == {1}
        np.ones((300, 300)) @ np.ones((300, 300))
    assert blas_threads() == before


def test_a_forked_child_gets_a_compute_thread_of_its_own():
    import multiprocessing

    with ThreadPoolExecutor(1) as pool:  # the parent's compute thread exists
        pool.submit(on_compute_thread, threading.get_ident).result()
    ctx = multiprocessing.get_context("fork")  # as spaces' ZeroGPU worker is started
    out = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(out,), daemon=True)
    child.start()
    try:
        assert out.get(timeout=60) == "answered"
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()


def _in_child(out) -> None:
    with ThreadPoolExecutor(1) as pool:  # a thread of the child asks, as a training's thread would
        out.put(pool.submit(on_compute_thread, lambda: "answered").result())
