"""The experiments, the theory and LSUV from Python (the modules behind `train`, `sweep`, `advise`,
`inspect`, `run --theory` and `fix`)."""

import tempfile
from pathlib import Path

import torch

import probe
from probe import spec
from probe.experiments import fix, inspect_params, sweep, train
from probe.judge import advice, theory
from probe.model.build import build

# train: the seed's Lab 2 network, two inits
results = train.train_many(train.lab2_spec(), ["zeros", "he"], train.TrainSettings())
print([(r.label, round(r.end_loss, 3), round(r.val_accuracy, 3)) for r in results])

# sweep: the first depth at which an init breaks a rule
grid = sweep.sweep(spec.parse({}), ["tiny", "he"], depths=[4, 8, 16])
print("tiny first fails at depth", grid.first_failing_depth("tiny"))

# advice and inspect
print(advice.mismatch(spec.parse({"model": {"activation": "tanh"}, "init": {"weight": "he"}})))
print("mismatched parameters:", inspect_params.inspect(spec.load("configs/lab1_he_relu.yaml")).mismatches)

# theory: the mean-field prediction beside the measurement
xavier_tanh = probe.load("configs/lab1_xavier_tanh.yaml")
prediction = theory.predict(xavier_tanh)  # .layers, .reason (why there is none, if there is none)
print([round(layer.expected_std, 4) for layer in prediction.layers])
comparisons = theory.compare(probe.run_probe(xavier_tanh), prediction)  # z-scores, .departs
print("departs:", [c.name for c in comparisons if c.departs])

# LSUV: the API behind `probe fix`; the fixed weights load with plain torch
tiny_relu = probe.load("configs/lab1_tiny_relu.yaml")
fixed = fix.fix(tiny_relu)  # .lsuv.layers (one scale per layer), .before, .after
print([round(layer.scale, 3) for layer in fixed.lsuv.layers])
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "fixed.pt"
    torch.save(fixed.state_dict, path)
    model = build(tiny_relu).model
    model.load_state_dict(torch.load(path))
    report = probe.run_probe(tiny_relu, state_dict=torch.load(path))
    print(round(report.last.std, 4), probe.evaluate(report).healthy)
