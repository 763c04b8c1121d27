"""The child process of an isolated probe (``probe.experiments.isolated``): it runs the user's code.

Started by the parent with a pickled ``Job`` on stdin (the parent's own bytes) and a pipe to
write on, it measures the job's spec (the memory estimate of a user model included, which calls
its factory on the meta device) and sends plain data, one JSON object a line: ``progress``
events, then ``stats`` (with ``histograms`` when asked) or a ``failure`` (exit 2 or 3 and the
message). It never judges: the parent does. Whatever the user's code does here (``os._exit``,
``atexit``, patching probe's modules) ends or changes this process only; a child that ends without
a report is a failure the parent names.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from probe.experiments.isolated import Job


def main() -> None:
    """The child's whole life: read the job, run it, report (the process exits after)."""
    import pickle
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent answers Ctrl-C and ends its children
    if hasattr(signal, "pthread_sigmask"):  # started with SIGINT blocked (see isolated.start): now ignored
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    job: Job = pickle.loads(sys.stdin.buffer.read())
    _end_with_parent(os.getppid())
    out = os.fdopen(job.fd, "w", encoding="utf-8")
    try:
        message = _run(job, lambda done, total: _send(out, {"progress": [done, total]}))
    except BaseException as exc:  # every way the user's code can fail is reported
        message = {"failure": _failure(exc, job.debug)}
    _send(out, message)
    out.close()


def _run(job: Job, progress: Any) -> dict[str, Any]:
    from probe.experiments.wire import encode

    _threads(job)
    from probe.measurement.once import built_once

    check = None
    if job.guard_memory and built_once(job.spec, job.layer_by_layer):
        check = _check_built(job)  # estimated from the model the run builds: the factory runs once
    elif job.guard_memory:
        from probe.measurement.memory import LARGE_RUN_BYTES, check_memory

        est = check_memory(job.spec, job.max_memory, layerwise=job.layer_by_layer)
        if est is not None and est.total >= LARGE_RUN_BYTES:
            print(f"{job.spec.name}: {est.line()}", file=sys.stderr)
    state = None
    if job.weights is not None:
        from pathlib import Path

        from probe.experiments.fix import load_weights

        state = load_weights(Path(job.weights))
    if job.layer_by_layer:
        from probe.measurement.layerwise import check_layerwise, return_large_allocations_to_the_os, run_layerwise

        check_layerwise(job.spec)
        return_large_allocations_to_the_os()  # this process is ours
        stats = run_layerwise(job.spec, progress if job.progress else None, check=check)
    else:
        from probe.measurement.run import run_probe

        on_progress = progress if job.progress else None
        stats = run_probe(job.spec, on_progress, state_dict=state, check=check, histograms=job.histograms)
    return {"stats": encode(stats, skip=("spec",))}  # with the first batch's histograms, where asked


def _check_built(job: Job) -> Any:
    """The memory guard of a user model, given the estimate of the model the run builds."""
    from probe.measurement.once import guarded

    def check(est: Any) -> None:
        line = guarded(job.spec, est, job.max_memory, job.layer_by_layer)
        if line is not None:
            print(line, file=sys.stderr)

    return check


def _threads(job: Job) -> None:
    from probe.measurement.threads import set_threads

    set_threads(job.explicit_threads)  # --threads reaches the child (a new process starts afresh)
    if job.threads is not None:  # several children side by side share the cores
        import torch

        torch.set_num_threads(job.threads)


def _failure(exc: BaseException, debug: bool) -> dict[str, Any]:
    """Exit 2 (the input is wrong) or 3 (the run failed), and the message, as the guard would
    print them; a probe error class the user's code defined is the user's failure (3)."""
    from probe.errors import ProbeError, exit_code_of, first_line, is_probes_own, user_code_error

    if debug:
        import traceback

        traceback.print_exception(exc)
    if isinstance(exc, ProbeError) and is_probes_own(exc):
        return {"exit_code": exit_code_of(exc), "message": str(exc)}
    if isinstance(exc, Exception):
        return {"exit_code": 3, "message": f"unexpected error: {type(exc).__name__}: {first_line(exc)}"}
    return {"exit_code": 3, "message": str(user_code_error(exc, "the code probe ran"))}


def _send(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message) + "\n")
    out.flush()


def _end_with_parent(parent: int) -> None:
    """A daemon thread ending this process when its parent is gone (killed with SIGKILL, which no
    handler sees): a child must not run on, unseen, after the command that started it."""
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="probe-parent-watch").start()


if __name__ == "__main__":
    main()
