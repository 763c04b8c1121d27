"""Run independent probes in worker processes: ``parallel_map`` for ``compare``, ``check`` and
``sweep`` (any list of picklable work items and a module-level function).

Workers are started with ``spawn`` (a fresh interpreter: safe whether or not the parent already
imported torch or started threads) and each gets an equal share of the CPU's intra-op threads, so
``--jobs N`` does not oversubscribe the machine. Results come back in input order; the first
error raised by a worker is re-raised in the parent (a ``ProbeError`` keeps its exit code).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from probe.errors import Terminated

T = TypeVar("T")
R = TypeVar("R")


def _init_worker(threads: int, explicit: int | None = None) -> None:
    import signal

    # Ctrl-C reaches every process of the terminal's group: the parent alone answers it (exit 130,
    # one line) and stops the workers, which would otherwise each print a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # born with SIGINT blocked (see parallel_map): now ignored
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import torch

    from probe.measurement.threads import set_threads

    torch.set_num_threads(threads)
    set_threads(explicit)  # --threads reaches the workers (a spawned process starts afresh)


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], jobs: int = 1, done: Callable[[int], None] | None = None
) -> list[R]:
    """``[fn(x) for x in items]``, in up to ``jobs`` worker processes when ``jobs > 1``.

    ``done(i)`` is called in the parent as item ``i`` finishes (in input order). With one job or
    one item everything runs in this process (no start-up cost).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(items) <= 1:
        out = []
        for i, item in enumerate(items):
            out.append(fn(item))
            if done:
                done(i)
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from probe.measurement.threads import explicit_threads

    workers = min(jobs, len(items))
    threads = max(1, (os.cpu_count() or 1) // workers)
    explicit = explicit_threads()
    ctx = multiprocessing.get_context("spawn")
    with (
        ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads, explicit)) as pool,
        _terminate_as_interrupt(),
    ):
        futures: list[Any] = []
        results = []
        try:
            futures = _submit_all(pool, fn, items)  # a Ctrl-C held back here arrives at its end
            for i, future in enumerate(futures):
                results.append(future.result())
                if done:
                    done(i)
        except BaseException as exc:
            for f in futures:
                f.cancel()
            if isinstance(exc, KeyboardInterrupt):
                _stop_workers(pool)
            raise
    return results


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """While workers run, SIGTERM (what a CI cancel sends) raises ``Terminated`` in the parent, so
    the workers are ended with it instead of living on (main thread only; restored after)."""
    import signal
    import threading

    def on_term(signum: int, frame: Any) -> None:
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop_workers(pool: object) -> None:
    """End the workers now (Ctrl-C) instead of waiting for the probes they are running."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if callable(terminate):
        terminate()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def _submit_all(pool: Any, fn: Callable[[T], R], items: Sequence[T]) -> list[Any]:
    """Submit every item; the workers start here. They start with SIGINT blocked (a signal mask
    survives fork and exec): a Ctrl-C while a worker's interpreter starts would otherwise end it
    with "Fatal Python error" on the terminal. The parent's own Ctrl-C is only delayed until the
    submissions are done."""
    import signal
    import threading

    masked = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else None
    try:
        return [pool.submit(fn, item) for item in items]
    finally:
        if previous is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
