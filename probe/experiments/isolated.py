"""The gate decides outside user code: each probe runs in a child process, the parent judges.

``probe check`` and ``probe run`` (from the ``probe`` command) start one child per spec
(``probe.experiments.child``; ``--jobs N`` runs N side by side). The child imports the user's
modules, calls the factory, runs forward and backward, and sends back plain data (the measured
statistics as JSON; ``probe.experiments.wire``). The parent never imports the user's modules:
it decodes the numbers, runs the rules itself and decides the exit code. A model that calls
``os._exit(0)`` in forward, registers ``atexit`` handlers or patches ``probe.judge`` changes its
own process only: a child that ends without a report is a failure of that spec (exit 3, named).

Cost: a child is a fresh interpreter that imports torch (about 1.5 s on a laptop CPU); the
parent no longer needs torch for the run, so one spec costs about the start-up of the
interpreter and of probe more than in one process (docs/reliability.md has the measurement).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from probe.experiments.batch import Failure
from probe.spec import Spec

if TYPE_CHECKING:
    from probe.records import Run, Stats

# the most a child may send (a report of 10,000 rows is a few MB): more is not a report
MAX_REPORT_BYTES = 256 * 2**20
Progress = Callable[[int, int, int], None]  # (job index, done, total) as the child reports it


@dataclass(frozen=True)
class Job:
    """What one child is asked to do (pickled to its stdin: the parent's bytes, read by the child)."""

    spec: Spec
    label: str
    layer_by_layer: bool = False
    weights: str | None = None  # a saved state dict loaded over the init (probe run --weights)
    histograms: bool = False  # also bin each row's output for --plot / --tensorboard
    guard_memory: bool = False  # the memory estimate runs user code: the child makes it
    max_memory: float | None = None
    progress: bool = False
    debug: bool = False
    threads: int | None = None  # intra-op threads when several children share the cores
    explicit_threads: int | None = None  # probe --threads N
    fd: int = -1  # the pipe the child writes its messages on


@dataclass(frozen=True)
class Outcome:
    """A child's answer: the statistics it measured (with the histograms its job asked for), or why
    there are none."""

    stats: Stats | None = None
    failure: Failure | None = None


def runs_user_code(spec: Spec) -> bool:
    """The spec names code that probe imports and calls (a factory, an inputs function, a
    transformers model): its memory estimate is made in the child too."""
    return spec.model.own_model or spec.model.inputs is not None


def job_for(spec: Spec, label: str, max_memory: float | None = None, **options: Any) -> Job:
    """A ``Job`` for ``spec`` with the thread and debug settings of this invocation."""
    from probe.measurement.threads import explicit_threads

    debug = bool(os.environ.get("PROBE_DEBUG")) or bool(options.pop("debug", False))
    threads = explicit_threads()
    guard = runs_user_code(spec)
    return Job(spec, label, guard_memory=guard, max_memory=max_memory, debug=debug, explicit_threads=threads, **options)


def check_isolated(
    specs: Sequence[Spec],
    labels: Sequence[str],
    step: Callable[[str], None] | None,
    jobs: int,
    max_memory: float | None,
    debug: bool = False,
) -> tuple[list[Run], list[Failure]]:
    """``batch.check_each`` with each spec in a child: the runs judged here, and the failures
    (``debug``: a child prints the traceback of its failure)."""
    from probe.judge.rules import evaluate
    from probe.records import Run

    work = [job_for(s, label, max_memory, debug=debug) for s, label in zip(specs, labels, strict=True)]
    outcomes = run_children(work, jobs, done=(lambda i: step(labels[i])) if step else None)
    runs, failures = [], []
    for spec, label, outcome in zip(specs, labels, outcomes, strict=True):
        if outcome.stats is None:
            assert outcome.failure is not None
            failures.append(outcome.failure)
        else:
            verdict = evaluate(outcome.stats)  # the rules run here, never in the child
            runs.append(Run(label, outcome.stats, verdict, spec.init.weight.name, spec.model.activation.name))
    return runs, failures


def run_children(
    work: Sequence[Job], jobs: int = 1, progress: Progress | None = None, done: Callable[[int], None] | None = None
) -> list[Outcome]:
    """One child per job, up to ``jobs`` at once; ``done(i)`` as job ``i``'s answer is read (in
    order). Ctrl-C or SIGTERM in the parent ends every child before the exception goes on."""
    from concurrent.futures import ThreadPoolExecutor

    from probe.experiments.parallel import _terminate_as_interrupt

    workers = max(1, min(jobs, len(work)))
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    children = _Children()
    with _terminate_as_interrupt(), ThreadPoolExecutor(workers, thread_name_prefix="probe-child") as pool:
        futures: list[Any] = []
        results = []
        try:
            for i, job in enumerate(work):
                futures.append(pool.submit(_one, replace(job, threads=threads), i, children, progress))
            for i, future in enumerate(futures):
                results.append(future.result())
                if done:
                    done(i)
        except BaseException:
            for future in futures:
                future.cancel()
            children.stop()
            raise
    return results


class _Children:
    """The children started by one ``run_children`` call, so an interrupt ends them all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: list[subprocess.Popen[bytes]] = []
        self.stopping = False

    def start(self, fd: int) -> subprocess.Popen[bytes] | None:
        import signal

        with self.lock:
            if self.stopping:
                return None
            # started with SIGINT blocked (a signal mask survives fork and exec): a Ctrl-C while the
            # child's interpreter starts would print "Fatal Python error"; the child then ignores it
            masked = hasattr(signal, "pthread_sigmask")
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}) if masked else None
            try:
                child = subprocess.Popen(_command(), stdin=subprocess.PIPE, stdout=2, pass_fds=(fd,))
            finally:
                if previous is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            self.running.append(child)
            return child

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for child in self.running:
                if child.poll() is None:
                    child.kill()


def _command() -> list[str]:
    """The child's command line: this interpreter, the ``probe`` package this process runs, and
    not the working folder first on ``sys.path`` (a folder named ``probe`` there must not shadow it;
    the user's modules are found as in the parent, ``probe.model.user_model.load_object``)."""
    import probe

    root = os.path.dirname(os.path.dirname(os.path.abspath(probe.__file__)))
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if p != '']; "
        f"sys.path.insert(0, {root!r}) if {root!r} not in sys.path else None; "
        "from probe.experiments.child import main; main()"
    )
    return [sys.executable, "-c", code]


def _one(job: Job, index: int, children: _Children, progress: Progress | None) -> Outcome:
    import pickle

    read_fd, write_fd = os.pipe()
    try:
        child = children.start(write_fd)
    finally:
        os.close(write_fd)  # the child holds its own copy: the pipe ends when the child does
    with os.fdopen(read_fd, "rb") as pipe:
        if child is None:
            return Outcome(failure=Failure(job.label, 3, "stopped before it started"))
        try:
            assert child.stdin is not None
            child.stdin.write(pickle.dumps(replace(job, fd=write_fd)))
            child.stdin.close()
        except OSError:  # the child is already gone: its status says why
            pass
        answer = _read(pipe, index, progress)
        if answer is _TOO_LONG:
            child.kill()
    return _outcome(job, answer, child.wait())


_TOO_LONG = object()


def _read(pipe: Any, index: int, progress: Progress | None) -> Any:
    """The child's first answer (stats or failure); progress events passed on as they come."""
    answer, read = None, 0
    for raw in iter(lambda: pipe.readline(MAX_REPORT_BYTES + 1), b""):
        read += len(raw)
        if read > MAX_REPORT_BYTES:
            return _TOO_LONG
        try:
            message = json.loads(raw)
        except ValueError:
            continue  # not a line of probe's (the user's code wrote on the pipe): ignored
        if not isinstance(message, dict):
            continue
        event = message.get("progress")
        if isinstance(event, list) and len(event) == 2 and all(type(v) is int for v in event):
            if progress is not None:
                progress(index, event[0], event[1])
        elif answer is None and ("stats" in message or "failure" in message):
            answer = message
    return answer


def _outcome(job: Job, answer: Any, status: int) -> Outcome:
    from probe.experiments.wire import WireError, decode
    from probe.records import Stats

    if answer is _TOO_LONG:
        return Outcome(failure=Failure(job.label, 3, f"its probe process sent over {MAX_REPORT_BYTES} bytes"))
    if answer is not None and "stats" in answer:
        try:
            stats = decode(Stats, answer["stats"], {"spec": job.spec})
        except WireError as exc:
            return Outcome(failure=Failure(job.label, 3, f"its probe process sent a malformed report: {exc}"))
        return Outcome(stats)
    failure = answer.get("failure") if answer is not None else None
    if isinstance(failure, dict) and isinstance(failure.get("message"), str):
        code = failure.get("exit_code")
        return Outcome(
            failure=Failure(job.label, code if type(code) is int and code in (2, 3) else 3, failure["message"])
        )
    return Outcome(failure=Failure(job.label, 3, f"its probe process ended without a report ({_status(status)})"))


def _status(status: int) -> str:
    if status >= 0:
        return f"exit status {status}: the code it ran ended the process"
    import signal

    try:
        name = signal.Signals(-status).name
    except ValueError:
        name = f"signal {-status}"
    hint = ", as the system ends a process out of memory" if name == "SIGKILL" else ""
    return f"killed by {name}{hint}"
