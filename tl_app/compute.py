"""One thread per process for the network's forward passes that answer people (Classify, its heatmaps).

Why: torch on CPU runs each layer on a team of OpenMP threads, and each thread that starts torch
work gets a team of its own, which lives as long as that thread. Once the teams together hold more
threads than the machine has cores, OpenMP stops letting idle team threads wait for the next layer
and puts them to sleep instead, and every layer then waits for its helpers to wake: on 2 cores one
picture through resnet18 took 21 ms from a server's worker thread against 14.5 ms when every pass
ran on one thread (bench/classify.py measures it). A web server answers each request on whichever
of its worker threads is free, so without this each of them grew a team.

:func:`on_compute_thread` runs a function on the one thread and returns (or raises) its result.
Called on the main thread, it runs there instead: a command-line program is one thread already, and
its Ctrl-C must stop the work, not only the wait. Nothing starts at import time.

:func:`one_blas_thread` keeps numpy's BLAS (OpenBLAS) on the calling thread for small matrix products:
its own worker threads keep spinning for about a tenth of a second after each product, and on 2
cores that took a core from whatever came next (bulk Classify decoded its next pictures 1.4x slower
after each batch's none-of-these score).
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_pool: Optional[ThreadPoolExecutor] = None
_thread_ident: Optional[int] = None
_at_fork = False


def _mark() -> None:
    global _thread_ident
    _thread_ident = threading.get_ident()


def _forget_after_fork() -> None:
    """In a forked child the compute thread does not exist (only the thread that forked does): the
    child starts its own when it needs one. (Spaces' ZeroGPU worker is such a child.)"""
    global _lock, _pool, _thread_ident
    _lock, _pool, _thread_ident = threading.Lock(), None, None


def on_compute_thread(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` on this process's compute thread (inline on the main thread or on it)."""
    global _pool, _at_fork
    if threading.get_ident() == _thread_ident or threading.current_thread() is threading.main_thread():
        return fn(*args, **kwargs)
    with _lock:
        if _pool is None:
            if not _at_fork and hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_forget_after_fork)  # once: the child keeps the hook
                _at_fork = True
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tl-compute", initializer=_mark)
    return _pool.submit(fn, *args, **kwargs).result()


_blas = None


@contextlib.contextmanager
def one_blas_thread():
    """Run numpy's BLAS on one thread inside the block (the process's setting is put back after).

    The library lookup (0.24 ms; the switch itself takes microseconds) is done again only when modules
    were imported since the last one: an import may have loaded another BLAS (SciPy brings its own).
    """
    global _blas
    import sys

    if _blas is None or _blas[0] != len(sys.modules):
        try:
            import numpy  # noqa: F401 - its BLAS must be loaded before the lookup
            from threadpoolctl import ThreadpoolController
        except ImportError:  # a dependency of scikit-learn (fastai): without it, BLAS keeps its threads
            yield
            return
        controller = ThreadpoolController()
        _blas = (len(sys.modules), controller)  # counted after the lookup's own imports
    with _blas[1].limit(limits=1, user_api="blas"):
        yield
