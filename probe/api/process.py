"""Facts and settings of the process probing: torchrun's ranks, and the threads every run uses."""

from __future__ import annotations

from contextlib import AbstractContextManager


def world_size() -> int:
    """How many processes torchrun launched (1 outside torchrun)."""
    from probe.measurement.distributed import launched_world_size

    return launched_world_size()


def rank() -> int:
    """This process's rank under torchrun (0 outside it)."""
    from probe.measurement.distributed import launched_rank

    return launched_rank()


def writes_output() -> bool:
    """Whether this process prints and writes files: rank 0 under torchrun, or the only process."""
    from probe.measurement.distributed import output_rank

    return output_rank()


def threads_fixed(n: int | None) -> AbstractContextManager[None]:
    """Inside the block every run uses ``n`` intra-op threads (``probe --threads``); None: the policy."""
    from probe.measurement.threads import threads_fixed as fixed

    return fixed(n)
