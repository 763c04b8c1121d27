"""The README's Python example: probe.measure on a model object, healthy and then broken."""

import torch

import probe
from docs.examples.my_cnn import build

torch.manual_seed(0)
model = build()
report = probe.measure(model, torch.randn(64, 3, 32, 32))  # or (3, 32, 32): one sample's shape
print(repr(report))  # in a notebook, `report` shows the table; print(report) in a terminal

with torch.no_grad():  # a broken init: every weight 1000x too small
    for p in model.parameters():
        p.mul_(1e-3)
broken = probe.measure(model, (3, 32, 32), batch_size=64)
print("\n".join(broken.verdict_lines()))
