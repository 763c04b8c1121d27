"""probe.measure on a model object: its report, its rows, and the verdict lines of a broken init."""

import torch
from torch import nn

import probe

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
report = probe.measure(model, torch.randn(256, 32))
print(repr(report))
for layer in report.layers:
    print(f"  {layer.name} {layer.module_type}: std {layer.std:.4f}, grad std {layer.grad_std:.4f}")

with torch.no_grad():  # weights 100x too small, biases zero
    for name, p in model.named_parameters():
        p.mul_(0.01) if name.endswith("weight") else p.zero_()
report = probe.measure(model, (32,), batch_size=256)  # inputs as one sample's shape
print(repr(report))
print("\n".join(report.verdict_lines()))
