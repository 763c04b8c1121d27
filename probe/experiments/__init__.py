"""Experiments built on the probe: compare/check batches, sweeps, training, LSUV fix, parameter inspection."""
