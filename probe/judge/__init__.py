"""Stage 4: ``Report`` -> ``Verdict``: the health rules, mean-field theory, depth limits, advice."""
