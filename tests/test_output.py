"""The one output writer (probe.render.output) and the CLI options that go through it."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probe.errors import SpecError
from probe.render.output import check_output_path, write_bytes, write_text

TINY = ["--set", "model.depth=2", "--set", "model.width=8", "--set", "data.batch_size=8", "--set", "run.device=cpu"]


def test_new_file_gets_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "hello")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]  # no temporary file left behind


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("old")
    path.chmod(0o604)
    write_text(path, "new")
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o604


def test_symlink_is_followed_and_stays_a_link(tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_hard_link_is_written_in_place(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    first.write_text("old")
    second = tmp_path / "b.txt"
    os.link(first, second)
    write_text(first, "new")
    assert second.read_text() == "new" and first.stat().st_ino == second.stat().st_ino


def test_fifo_is_written_through(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_text(fifo, "through")
        assert os.read(reader, 100) == b"through"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_character_device_is_never_replaced() -> None:
    before = os.stat("/dev/null")
    write_bytes(Path("/dev/null"), b"x" * 10)
    after = os.stat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino


def test_dash_is_stdout(capfdbinary: Any) -> None:
    write_text("-", "to stdout\n")
    assert capfdbinary.readouterr().out == b"to stdout\n"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d, "is a directory"),
        (lambda d: d / "missing" / "x.txt", "does not exist"),
    ],
    ids=["directory", "missing-folder"],
)
def test_bad_paths_are_refused_naming_the_option(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(SpecError, match=f"--junit: .*{message}"):
        check_output_path(make(tmp_path), "--junit")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(SpecError, match="not writable"):
            check_output_path(folder / "x.txt", "-o")
    finally:
        folder.chmod(0o700)


def test_cli_refuses_a_bad_output_before_running(cli: Callable[..., Any], tmp_path: Path) -> None:
    # a spec that would take long is never run: the path is checked while parsing
    result = cli("run", "configs/lab1_tiny_relu.yaml", "-o", str(tmp_path / "nope" / "r.json"), "-f", "json")
    assert result.exit_code == 2
    assert "--output" in result.output and "does not exist" in result.output


def test_cli_output_dash_is_stdout(cli: Callable[..., Any]) -> None:
    result = cli("run", "configs/lab1_tiny_relu.yaml", *TINY, "-f", "json", "-o", "-")
    assert result.exit_code == 0 and result.stdout.lstrip().startswith("{")


def test_cli_output_through_a_symlink(cli: Callable[..., Any], tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("")
    (tmp_path / "link.json").symlink_to(target)
    result = cli("run", "configs/lab1_tiny_relu.yaml", *TINY, "-f", "json", "-o", str(tmp_path / "link.json"))
    assert result.exit_code == 0 and (tmp_path / "link.json").is_symlink()
    assert '"layers"' in target.read_text()


def test_check_bad_junit_path_is_exit_2_before_the_run(cli: Callable[..., Any], tmp_path: Path) -> None:
    result = cli("check", "configs/lab1_tiny_relu.yaml", "--junit", str(tmp_path))
    assert result.exit_code == 2 and "--junit" in result.output and "directory" in result.output


def test_junit_write_failure_keeps_the_gate_exit_1(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from probe.render import output

    def full_disk(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "_replace", full_disk)
    # tiny_relu at depth 8 vanishes: the gate says 1 and a failed --junit must not change it
    result = cli("check", "configs/lab1_tiny_relu.yaml", "--junit", str(tmp_path / "j.xml"))
    assert result.exit_code == 1
    assert "--junit" in result.output and "No space left" in result.output
    result = cli("check", "configs/lab1_tiny_relu.yaml", "-f", "json", "-o", str(tmp_path / "r.json"))
    assert result.exit_code == 1 and "--output" in result.output and "No space left" in result.output
    healthy = cli("check", "configs/lab1_he_relu.yaml", "-f", "json", "-o", str(tmp_path / "r.json"))
    assert healthy.exit_code == 3  # nothing else to report: the failed write is the answer


def test_fix_save_goes_through_the_writer(cli: Callable[..., Any], tmp_path: Path) -> None:
    target = tmp_path / "w.pt"
    target.write_bytes(b"")
    target.chmod(0o640)
    result = cli("fix", "configs/lab1_tiny_relu.yaml", *TINY, "--save", str(target))
    assert result.exit_code == 0, result.output  # LSUV makes this small network healthy
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.stat().st_size > 0
    bad = cli("fix", "configs/lab1_tiny_relu.yaml", *TINY, "--save", str(tmp_path / "no" / "w.pt"))
    assert bad.exit_code == 2 and "--save" in bad.output


def test_dev_stdout_into_a_pipe_is_written_through() -> None:
    """``-o /dev/stdout`` when stdout is a pipe: /dev/stdout -> /proc/self/fd/1 -> 'pipe:[N]', a
    name that exists only when opened through the link."""
    import subprocess
    import sys

    code = "from probe.render.output import write_text; write_text('/dev/stdout', 'through the pipe')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "through the pipe"
    assert os.path.islink("/dev/stdout")


@pytest.mark.parametrize("command", [["run"], ["check"], ["run", "-f", "markdown"], ["run", "-f", "csv"]])
def test_escape_sequences_in_a_spec_name_do_not_reach_the_terminal(
    cli: Any, tmp_path: Path, command: list[str]
) -> None:
    """A name holding ESC [2J (clear screen) is shown escaped, in every command and format."""
    spec = tmp_path / "evil.yaml"
    spec.write_text('name: "evil\\e[2Jname"\nmodel: {depth: 6, width: 8}\ninit: {weight: tiny}\n')
    result = cli(*command, str(spec))
    assert result.exit_code in (0, 1), result.output
    assert "\x1b" not in result.output
    if command != ["check"]:  # check names the file, not the spec
        assert "evil\\x1b[2Jname" in result.output


# ---- issue 23, items 10-12 -------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/dev/stdout", "/proc/self/fd/1"])
def test_writing_to_our_own_stdout_keeps_what_the_log_already_holds(tmp_path: Path, target: str) -> None:
    """`probe ... -o /dev/stdout >> log.txt`: the report is appended to the log, not written over it."""
    import subprocess
    import sys

    from tests.conftest import REPO

    log = tmp_path / "log.txt"
    log.write_text("earlier line\n")
    script = f"from probe.render.output import write_text; write_text({target!r}, 'the report\\n')"
    with open(log, "a") as out:
        done = subprocess.run([sys.executable, "-c", script], stdout=out, cwd=REPO, timeout=60)
    assert done.returncode == 0
    assert log.read_text() == "earlier line\nthe report\n"


def test_a_replaced_report_keeps_its_owner(tmp_path: Path) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    report = tmp_path / "report.json"
    report.write_text("old")
    os.chown(report, 4321, 4322)
    write_text(report, "new")
    st = report.stat()
    assert report.read_text() == "new" and (st.st_uid, st.st_gid) == (4321, 4322)


def test_a_hard_linked_report_on_a_full_disk_is_left_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from probe.render.output import OutputError

    report = tmp_path / "report.json"
    report.write_text("the old report, whole")
    os.link(report, tmp_path / "other-name.json")

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OutputError, match="No space left on device"):
        write_text(report, "a new report, longer than the old one")
    assert report.read_text() == "the old report, whole" == (tmp_path / "other-name.json").read_text()
    monkeypatch.undo()
    write_text(report, "short")
    assert (tmp_path / "other-name.json").read_text() == "short"
