"""The top-level API: load a spec, probe it, judge it (what `probe run` and `probe check` do)."""

import probe

spec = probe.load("configs/lab1_he_relu.yaml", overrides={"model.depth": 20})
report = probe.run_probe(spec)  # per-layer statistics: report.layers
verdict = probe.evaluate(report)  # the health rules: verdict.healthy, verdict.problems
print(f"{spec.name}: {len(report.layers)} layers, last std {report.last.std:.4f}, healthy {verdict.healthy}")
for layer in report.layers[:3]:
    print(f"  {layer.name}: std {layer.std:.4f}, grad std {layer.grad_std:.4f}, dead units {layer.dead_units:.2f}")

tiny = probe.parse({"init": {"weight": "tiny"}})  # a spec from a dict: every other key has its default
print([problem.message for problem in probe.evaluate(probe.run_probe(tiny)).problems])

layered = probe.run_layerwise(spec)  # --layer-by-layer: the same report, one block in memory at a time
print(f"layer by layer: last std {layered.last.std:.4f}")

for run in probe.check(["configs/lab1_he_relu.yaml", "configs/lab1_tiny_relu.yaml"]):
    print(run.label, "healthy" if run.verdict.healthy else "unhealthy")
