"""Regenerate every output block in README.md and docs/ from the real command (`make docs-examples`).

A block to generate is marked by an HTML comment naming its command, at the start of a line, right
before a fenced block (an indented marker, such as an example of one in a list, is left alone):

    <!-- probe-example: probe run configs/lab1_tiny_relu.yaml -->
    ```console
    $ probe run configs/lab1_tiny_relu.yaml
    ...what the command prints...
    ```

The command is ``probe ARGS`` (what ``python -m probe ARGS`` prints) or ``python FILE.py`` (a snippet
under docs/, e.g. an API example that a page includes). End it with ``# exit N`` when it is meant to
exit with N (``check`` on an unhealthy spec): another exit code is an error, never a silent rewrite.

Every command runs at a fixed width (COLUMNS), with colors off and one thread, from a scratch folder
per document that sees the repository's configs/, tests/ and docs/, so what it writes (report.json,
pictures, saved weights) lands there. The blocks of one document run in order (a later block may
use what an earlier one saved). What varies between runs (elapsed times, the scratch folder's path)
is normalized below. The documents are shared among ``--jobs`` worker processes, each of which
imports torch once and calls the ``probe`` console script's entry point in-process; ``--fresh``
runs one process per command instead (slower; both print the same).

    python scripts/docs_examples.py           rewrite the stale blocks
    python scripts/docs_examples.py --check   list the stale blocks, exit 1 if any (the test runs this)
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COLUMNS = 160  # tables fit any width (issue 11 §3); at 160 the docs show every table with its full headers
TIMEOUT_S = 120
# One thread: the same sums in the same order on any machine, and no thread waiting on a busy one
# (on a shared 2-core machine, two-thread runs took 20x longer in bursts).
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# what a scratch folder links to, so the commands' relative paths work as they do from the repository root
LINKED = ("configs", "tests", "docs")

MARKER = re.compile(
    r"(?P<marker>^<!-- probe-example: (?P<command>[^\n]+?) -->\n)"
    r"(?P<fence>```(?P<lang>[\w-]*)\n)(?P<body>.*?)(?P<close>^```[ \t]*$)",
    flags=re.S | re.M,
)
EXPECTED_EXIT = re.compile(r"\s+#\s*exit (\d+)\s*$")
NORMALIZE = (
    # a run's own time: the one number that differs between two identical runs
    (re.compile(r'("elapsed_s": )[0-9.e-]+'), r"\g<1>0.0"),
    (re.compile(r'( time=")[0-9.]+(")'), r"\g<1>0.000\g<2>"),
)


@dataclass(frozen=True)
class Example:
    """One marked block: where it is, its command and what it shows now."""

    path: Path
    command: str  # as written in the marker, without the exit comment
    expected_exit: int
    start: int  # of the block's body in the file's text
    end: int
    body: str


def documents() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def shown(path: Path) -> str:
    """A document's name in messages: relative to the repository when it is in it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def examples(path: Path, text: str) -> list[Example]:
    found = []
    for match in MARKER.finditer(text):
        command = match.group("command").strip()
        expected = EXPECTED_EXIT.search(command)
        if expected:
            command = command[: expected.start()].strip()
        found.append(
            Example(
                path=path,
                command=command,
                expected_exit=int(expected.group(1)) if expected else 0,
                start=match.start("body"),
                end=match.start("close"),
                body=match.group("body"),
            )
        )
    return found


def argv(command: str) -> list[str]:
    """The process to start for a marker's command."""
    words = shlex.split(command)
    if words[0] == "probe":
        return [sys.executable, "-m", "probe", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    raise SystemExit(f"probe-example: a command starts with 'probe' or 'python', not {command!r}")


def environment(extra_path: Path | None = None) -> dict[str, str]:
    """A fixed width, no colors, one thread; `extra_path` first on the import path (for `--model tests...`)."""
    env = {**os.environ, "COLUMNS": str(COLUMNS), "NO_COLOR": "1", "TERM": "dumb", "PYTHONHASHSEED": "0", **THREADS}
    env.pop("FORCE_COLOR", None)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(extra_path), env.get("PYTHONPATH", "")) if p)
    return env


def run_fresh(command: str, scratch: Path) -> tuple[str, int]:
    """(everything printed, stdout and stderr as they came; exit code) of one command in its own process."""
    done = subprocess.run(
        argv(command),
        cwd=scratch,
        env=environment(scratch),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
    )
    return done.stdout, done.returncode


def run_in_worker(jobs: list[tuple[Path, list[str]]]) -> list[list[tuple[str, int]]]:
    """Run several documents' commands, each document in its scratch folder and in order, in one worker
    process that imports torch once (see `worker`)."""
    request = [{"folder": str(folder), "commands": commands} for folder, commands in jobs]
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker"],
        cwd=REPO,
        env=environment(),
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S * max(1, sum(len(commands) for _, commands in jobs)),
    )
    if done.returncode != 0:
        raise RuntimeError(f"the example worker failed:\n{done.stdout}\n{done.stderr}")
    return [[(output, code) for output, code in results] for results in json.loads(done.stdout)]


def worker() -> None:
    """Run the documents' commands on stdin ([{"folder", "commands"}, ...]); print their [output, exit code]s.

    `probe ARGS` calls the `probe` console script's own entry point (found through the package's
    metadata, so it follows wherever the CLI module lives) with stdout and stderr captured, from the
    document's scratch folder: what it prints is what `python -m probe ARGS` prints there, without
    paying torch's import once per command. `python FILE` runs in its own process (a snippet may
    start worker processes of its own)."""
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="probe")
    entry = script.load()
    real_stdout = sys.stdout
    answers = []
    for job in json.loads(sys.stdin.read()):
        folder = Path(job["folder"])
        os.chdir(folder)
        sys.path.insert(0, str(folder))  # as PYTHONPATH does for a fresh process
        results = []
        for command in job["commands"]:
            if command.startswith("probe "):
                results.append(_run_entry(entry, shlex.split(command)[1:]))
            else:
                results.append(run_fresh(command, folder))
        sys.path.remove(str(folder))
        # modules imported from this scratch folder (tests.models_for_tests, ...) leave with it: the next
        # document imports its own copy, as its own process would (probe refuses code outside the project)
        for name in [n for n, m in sys.modules.items() if _imported_from(m, folder)]:
            del sys.modules[name]
        answers.append(results)
    os.chdir(REPO)
    real_stdout.write(json.dumps(answers))


def _imported_from(module: object, folder: Path) -> bool:
    """The module (or namespace package, which has a path and no file) lies in ``folder``."""
    places = [getattr(module, "__file__", None) or ""]
    path = getattr(module, "__path__", None)
    if isinstance(path, (list, tuple)) or type(path).__name__ == "_NamespacePath":  # not torch's odd objects
        places += [str(p) for p in path]
    return any(str(place).startswith(str(folder)) for place in places)


def _run_entry(entry: Callable[[], object], args: list[str]) -> tuple[str, int]:
    captured = io.StringIO()
    code = 0
    saved_argv = sys.argv
    sys.argv = ["probe", *args]
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            entry()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            captured.write(stop.code + "\n")
    finally:
        sys.argv = saved_argv
    return captured.getvalue(), code


def block(example: Example, output: str, code: int, scratch: Path) -> str:
    """What the block should hold: the command line, then everything it printed, normalized."""
    if code != example.expected_exit:
        where = f"{shown(example.path)}: {example.command}"
        raise RuntimeError(
            f"{where}: exit code {code}, expected {example.expected_exit} "
            f"(mark an intended one with '# exit N' in the marker)\n{output}"
        )
    for pattern, replacement in NORMALIZE:
        output = pattern.sub(replacement, output)
    output = output.replace(str(scratch.resolve()), ".").replace(str(scratch), ".")
    lines = [line.rstrip() for line in output.rstrip("\n").splitlines()]
    return "\n".join([f"$ {example.command}", *lines]) + "\n"


@dataclass
class Document:
    path: Path
    text: str
    examples: list[Example]
    scratch: Path


def balanced(documents: list[Document], buckets: int) -> list[list[Document]]:
    """Documents in `buckets` groups of about equal example counts (largest first, to the lightest group)."""
    groups: list[list[Document]] = [[] for _ in range(max(1, min(buckets, len(documents))))]
    for document in sorted(documents, key=lambda d: len(d.examples), reverse=True):
        min(groups, key=lambda g: sum(len(d.examples) for d in g)).append(document)
    return [group for group in groups if group]


def outputs(documents: list[Document], jobs: int, fresh: bool) -> dict[Path, list[tuple[str, int]]]:
    """Every document's commands run: {path: [(output, exit code), ...]} in the order of its examples."""
    with_examples = [d for d in documents if d.examples]

    def run_group(group: list[Document]) -> list[list[tuple[str, int]]]:
        if fresh:
            return [[run_fresh(e.command, d.scratch) for e in d.examples] for d in group]
        return run_in_worker([(d.scratch, [e.command for e in d.examples]) for d in group])

    groups = balanced(with_examples, jobs)
    with ThreadPoolExecutor(max_workers=len(groups) or 1) as pool:
        answers = list(pool.map(run_group, groups))
    found: dict[Path, list[tuple[str, int]]] = {d.path: [] for d in documents}
    for group, results in zip(groups, answers, strict=True):
        for document, result in zip(group, results, strict=True):
            found[document.path] = result
    return found


def stale_blocks(document: Document, results: list[tuple[str, int]]) -> list[tuple[Example, str]]:
    stale = []
    for example, (output, code) in zip(document.examples, results, strict=True):
        body = block(example, output, code, document.scratch)
        if body != example.body:
            stale.append((example, body))
    return stale


def rewritten(text: str, stale: list[tuple[Example, str]]) -> str:
    for example, body in sorted(stale, key=lambda pair: pair[0].start, reverse=True):
        text = text[: example.start] + body + text[example.end :]
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale blocks, change nothing")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes side by side")
    parser.add_argument("--fresh", action="store_true", help="one process per command (slower; the reference)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("files", nargs="*", type=Path, help="only these documents (default: all)")
    options = parser.parse_args()
    if options.worker:
        worker()
        return 0
    paths = [p.resolve() for p in options.files] or documents()
    stale_total = count = 0
    with tempfile.TemporaryDirectory(prefix="probe-docs-") as tmp:
        docs = []
        for index, path in enumerate(paths):
            scratch = Path(tmp) / str(index)  # one per document: what one writes, another never sees
            scratch.mkdir()
            for name in LINKED:
                (scratch / name).symlink_to(REPO / name)
            text = path.read_text()
            docs.append(Document(path, text, examples(path, text), scratch))
        results = outputs(docs, options.jobs, options.fresh)
        for document in docs:
            count += len(document.examples)
            stale = stale_blocks(document, results[document.path])
            name = shown(document.path)
            for example, body in stale:
                stale_total += 1
                print(f"{name}: stale output of `{example.command}`")
                if options.check:
                    diff = difflib.unified_diff(
                        example.body.splitlines(), body.splitlines(), "shown", "printed now", lineterm="", n=1
                    )
                    print("\n".join(list(diff)[:40]))
            if stale and not options.check:
                document.path.write_text(rewritten(document.text, stale))
    if options.check and stale_total:
        print(
            f"{stale_total} of {count} output blocks differ from what the commands print now: run `make docs-examples`"
        )
        return 1
    if stale_total:
        print(f"rewrote {stale_total} of {count} output blocks in {len(paths)} documents")
    else:
        print(f"all {count} output blocks in {len(paths)} documents are current")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RuntimeError as failure:  # a command failed or exited unexpectedly: its output says why
        print(f"docs_examples: {failure}", file=sys.stderr)
        sys.exit(1)
