"""A spec read from a pipe: a named pipe nothing writes to is refused in bounded time (issue 23,
item 21); one written to is read as it comes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from probe.spec import yaml_text

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")


def test_a_named_pipe_with_no_writer_is_exit_2_not_a_hang(
    cli: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yaml_text, "PIPE_WAIT_S", 0.5)
    fifo = tmp_path / "x.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    result = cli("run", str(fifo))
    assert result.exit_code == 2, result.output
    assert "is a pipe that nothing wrote to in 0.5 s" in " ".join(result.output.split())
    assert time.monotonic() - started < 30  # before: open() waited for a writer forever


def test_a_named_pipe_written_after_a_while_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from probe import spec as spec_mod

    monkeypatch.setattr(yaml_text, "PIPE_WAIT_S", 20.0)
    fifo = tmp_path / "x.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        time.sleep(0.3)
        with open(fifo, "w") as fh:  # blocks until the reader has opened it
            fh.write("name: piped\nmodel: {depth: 3}\n")
            fh.flush()
            time.sleep(0.2)  # in two parts, the second after a pause
            fh.write("data: {batch_size: 8}\n")

    writer = threading.Thread(target=write)
    writer.start()
    spec = spec_mod.load(fifo)
    writer.join()
    assert (spec.name, spec.model.depth, spec.data.batch_size) == ("piped", 3, 8)
