"""The last word of the pre-commit hook and the GitHub Action: a gate passes only with its report.

``python -m probe.cli.hook SPEC.yaml...`` (the hook's entry) runs ``probe check`` with a JUnit file
of its own and fails (exit 3) when the file is missing, does not parse, lacks a spec passed to it,
or records a failure under an exit code of 0. ``python -m probe.cli.hook --verify FILE OUTCOME``
(the Action's step after ``probe check``) makes the same checks on the Action's JUnit file, where
OUTCOME is that step's outcome (``success`` for exit 0). Whatever ended ``probe check`` early, a
missing report fails the commit or the job instead of passing it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

EXIT_NO_REPORT = 3


def junit_problem(path: Path, passed: bool, specs: int = 0) -> str | None:
    """Why the JUnit file at ``path`` cannot stand for a gate that ``passed`` (exit 0) over
    ``specs`` spec files (at least), or ``None`` when it can."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        return f"no readable JUnit report at {path} ({exc})"
    cases = list(root.iter("testcase"))
    if not cases or len(cases) < specs:
        return f"the JUnit report at {path} holds {len(cases)} test cases for {specs or 'some'} specs"
    failed = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
    if passed and failed:
        return f"probe check passed while its JUnit report at {path} records {failed} failed specs"
    return None


def spec_files(args: list[str]) -> int:
    """How many of ``args`` are spec files (existing YAML files not given as an option's value)."""
    count = 0
    for i, arg in enumerate(args):
        after_option = i > 0 and args[i - 1].startswith("-") and "=" not in args[i - 1]
        if not after_option and arg.endswith((".yaml", ".yml")) and Path(arg).is_file():
            count += 1
    return count


def run_hook(args: list[str]) -> int:
    """``probe check ARGS --junit TMP``, then its exit code if the report stands for it, else 3."""
    with tempfile.TemporaryDirectory(prefix="probe-hook-") as folder:
        junit = Path(folder) / "probe.xml"
        code = subprocess.call([sys.executable, "-m", "probe", "check", *args, "--junit", str(junit)])
        if code == 2:  # bad input: nothing ran, so no report is expected (the message is printed)
            return code
        problem = junit_problem(junit, code == 0, spec_files(args))
    if problem is None:
        return code
    print(f"probe: error: {problem}; failing (probe check exited {code})", file=sys.stderr)
    return code if code not in (0, 1) else EXIT_NO_REPORT


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--verify"]:
        if len(args) != 3:
            print("usage: python -m probe.cli.hook --verify JUNIT.xml OUTCOME", file=sys.stderr)
            return 2
        problem = junit_problem(Path(args[1]), args[2] == "success")
        if problem is not None:
            print(f"::error::probe: {problem}", file=sys.stderr)
            return EXIT_NO_REPORT
        return 0
    return run_hook(args)


if __name__ == "__main__":
    sys.exit(main())
