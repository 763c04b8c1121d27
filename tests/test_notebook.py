"""A report in a notebook, as a user meets it: executed by a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import re
import sys

import pytest

from tests.conftest import REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

SETUP = """
import torch, probe
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(
    nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
    nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10),
)
with torch.no_grad():
    for m in model:
        if isinstance(m, nn.Linear):
            m.weight.mul_(1e-3)   # a broken init: the signal vanishes
            m.bias.zero_()
report = probe.measure(model, (16,), batch_size=32)
"""


def _run(*cells: str) -> list[list[dict]]:
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(SETUP), *(nbformat.v4.new_code_cell(c) for c in cells)]
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name=NATIVE_KERNEL_NAME, resources={"metadata": {"path": str(REPO)}}
    )
    client.execute(env={"PYTHONPATH": str(REPO), "PATH": str(REPO / ".venv" / "bin")}, cwd=str(REPO))
    return [cell.outputs for cell in nb.cells[1:]]


@pytest.mark.skipif(sys.platform == "win32", reason="kernel start-up")
def test_a_report_displays_once_whole_and_prints_as_text() -> None:
    shown, printed, text = _run("report", "print(report)", "len(report.text(width=80))")
    # the report cell displays once: one rich display (its HTML table), nothing printed beside it
    assert len(shown) == 1 and shown[0]["output_type"] == "execute_result", shown
    html = shown[0]["data"]["text/html"]
    plain = re.sub(r"<[^>]+>", "", html)
    assert "…" not in plain  # no number or name cut
    assert "vanishing" in plain and "try:" in plain
    # print(report) and report.text() are the table as text, not a display sent elsewhere
    assert len(printed) == 1 and printed[0]["output_type"] == "stream" and "vanishing" in printed[0]["text"]
    assert int(text[0]["data"]["text/plain"]) > 200
