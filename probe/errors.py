"""The errors probe raises on purpose.

Every user-facing failure is a ``ProbeError`` with a one-line message; the CLI catches it once,
prints it in red and exits with ``exit_code``. Anything else that escapes is a bug.
"""

from __future__ import annotations


class ProbeError(Exception):
    """Base of all expected failures; ``exit_code`` is what the CLI returns."""

    exit_code = 2


class SpecError(ProbeError):
    """The spec (YAML or CLI override) is invalid. ``path`` is the dotted key path, if any."""

    exit_code = 2

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


class BuildError(ProbeError):
    """The network described by a valid spec could not be built or initialized."""

    exit_code = 2


class RunError(ProbeError):
    """The probe could not run: device unavailable, out of memory, a failing forward pass."""

    exit_code = 3


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
