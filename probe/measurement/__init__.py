"""Stage 3: hooks -> on-device statistics -> ``Report``: the collector, the runner (one batch loop), layer by layer, memory and threads."""
