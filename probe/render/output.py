"""The one way probe writes a file the user named (``-o``, ``--junit``, ``--save``, html, plots).

What a user expects of a command-line tool, whatever the path is:

- ``-`` is standard output.
- A character device (``/dev/null``, a terminal), a FIFO or a socket is written through: never
  replaced by a regular file.
- A symbolic link is followed: its target is written and the link stays a link.
- A regular file (new or existing) is replaced atomically: a temporary file in the same folder is
  written, flushed to disk (``fsync``) and renamed over the path, so a failure never leaves half a
  file. The new file gets the old file's permissions, or for a new file those the umask allows
  (as ``open`` would give), never the temporary file's 0600.
- A regular file with other hard links is written in place, so every link keeps seeing the new
  content: its space is reserved first (``posix_fallocate``), so a full disk refuses the write
  and leaves the old report whole; then it is overwritten and cut to the new length.
- A path that is this process's own standard output or error, or one of its open descriptors
  (``/dev/stdout``, ``/dev/stderr``, ``/proc/self/fd/N``, ``/dev/fd/N``), is written to that
  descriptor, whatever it points at: a log file the shell opened for appending (``>> log.txt``)
  keeps its earlier lines.
- A replaced file keeps its owner and group (where the process may set them) as well as its mode.

``check_output_path`` refuses a path that cannot be written (a folder, a missing or read-only
folder) before any work is done, naming the option.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from pathlib import Path

from probe.errors import ProbeError, SpecError

STDOUT = "-"


class OutputError(ProbeError):
    """Writing an output failed after the work was done (disk full, permissions changed)."""

    exit_code = 3


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == STDOUT


def _target(path: Path) -> Path:
    """``path`` with ``~`` expanded and symbolic links followed (a dangling link: its target)."""
    return Path(os.path.realpath(path.expanduser()))


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


def check_output_path(path: Path | str | None, option: str) -> None:
    """Raise ``SpecError`` (exit 2) naming ``option`` when ``path`` cannot be written."""
    if path is None or is_stdout(path):
        return
    given = Path(path).expanduser()
    try:
        st = os.stat(given)  # through links, including /dev/stdout -> /proc/self/fd/1 -> a pipe
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise SpecError(f"cannot use {path}: {exc.strerror}", option) from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise SpecError(f"{path} is a directory; give a file path", option)
    if st is not None and not stat.S_ISREG(st.st_mode):  # a device, FIFO or socket: written through
        if not os.access(given, os.W_OK):
            raise SpecError(f"{path} is not writable", option)
        return
    target = _target(given)
    folder = target.parent
    if not folder.is_dir():
        raise SpecError(f"folder {folder} does not exist", option)
    if st is not None and not os.access(target, os.W_OK):
        raise SpecError(f"{path} is not writable", option)
    in_place = st is not None and st.st_nlink > 1
    if not in_place and not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError(f"folder {folder} is not writable", option)


def write_text(path: Path | str, text: str, option: str = "--output") -> Path:
    """Write ``text`` (UTF-8) to ``path`` as described in the module docstring."""
    return write_bytes(path, text.encode("utf-8"), option)


def write_bytes(path: Path | str, data: bytes, option: str = "--output") -> Path:
    """Write ``data`` to ``path`` as described in the module docstring; returns the path written."""
    if is_stdout(path):
        _write_stdout(data)
        return Path(STDOUT)
    check_output_path(path, option)
    given = Path(path).expanduser()
    try:
        try:
            st: os.stat_result | None = os.stat(given)
        except FileNotFoundError:
            st = None
        fd = _own_descriptor(given, st)
        if fd == 1:
            _write_stdout(data)
        elif fd is not None:
            _write_descriptor(fd, data)
        elif st is not None and not stat.S_ISREG(st.st_mode):
            _write_through(given, data)  # opened by its own name: /proc/self/fd/N links resolve only so
        elif st is not None and st.st_nlink > 1:
            _write_in_place(given, data)
        else:
            _replace(_target(given), data, st)
    except OSError as exc:
        raise OutputError(f"{option}: cannot write {path}: {exc.strerror or exc}") from None
    return Path(path)


def _write_stdout(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _own_descriptor(given: Path, st: os.stat_result | None) -> int | None:
    """The descriptor of this process that ``given`` names (/dev/stdout, /proc/self/fd/N,
    /dev/fd/N), or whose file it is (standard output or error): written to as it is open."""
    import re

    match = re.fullmatch(rf"/(?:proc/(?:self|{os.getpid()})/fd|dev/fd)/(\d+)", str(given))
    if match:
        return int(match.group(1))
    named = {"/dev/stdout": 1, "/dev/stderr": 2}.get(str(given))
    if named is not None:
        return named
    if st is None or not stat.S_ISREG(st.st_mode):
        return None
    for fd in (1, 2):  # a path to the very file the shell redirected stdout/stderr to
        try:
            own = os.fstat(fd)
        except OSError:
            continue
        if (own.st_dev, own.st_ino) == (st.st_dev, st.st_ino):
            return fd
    return None


def _write_descriptor(fd: int, data: bytes) -> None:
    if fd == 2:
        sys.stderr.flush()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_in_place(target: Path, data: bytes) -> None:
    """A hard-linked file, rewritten where it is: the space is reserved before a byte changes."""
    fd = os.open(target, os.O_WRONLY)
    try:
        if data and hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, len(data))  # ENOSPC here: the old report is untouched
        view, offset = memoryview(data), 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_through(target: Path, data: bytes) -> None:
    with open(target, "wb") as fh:  # devices and FIFOs: no temporary file, no rename
        fh.write(data)
        fh.flush()
        if stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            os.fsync(fh.fileno())


def _replace(target: Path, data: bytes, old: os.stat_result | None) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), (0o666 & ~_umask()) if old is None else stat.S_IMODE(old.st_mode))
            if old is not None and hasattr(os, "fchown"):
                # root rewriting a user's report: the user keeps it (a user may not give a file away:
                # theirs stays theirs, as a new file would)
                with contextlib.suppress(PermissionError):
                    os.fchown(fh.fileno(), old.st_uid, old.st_gid)
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # the rename itself reaches the disk with the folder's entry
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
