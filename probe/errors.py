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
        # a key path holds the user's keys: shown escaped and capped
        super().__init__(f"{shown(path, 120)}: {message}" if path else message)


class SpecErrors:
    """Collects the independent mistakes of one spec, so that one run reports them all: each
    ``catch()`` block that raises a ``SpecError`` is recorded and validation goes on; ``check()``
    raises one ``SpecError`` listing every mistake (or the one, unchanged)."""

    def __init__(self) -> None:
        self.errors: list[SpecError] = []

    def catch(self) -> _Catch:
        return _Catch(self)

    def check(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise SpecErrorGroup(self.errors)


class _Catch:
    def __init__(self, errors: SpecErrors) -> None:
        self.errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, SpecErrorGroup):
            self.errors.errors.extend(exc.errors)
            return True
        if isinstance(exc, SpecError):
            self.errors.errors.append(exc)
            return True
        return False


class SpecErrorGroup(SpecError):
    """Several independent mistakes of one part of a spec (its message lists them all)."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = errors
        super().__init__(f"{len(errors)} mistakes in the spec:\n" + "\n".join(f"  {e}" for e in errors))


class BuildError(ProbeError):
    """The network described by a valid spec could not be built or initialized."""

    exit_code = 2


class ForwardError(BuildError):
    """The model's forward pass failed on its inputs while probe learned its layers (exit 2)."""


class RunError(ProbeError):
    """The probe could not run: device unavailable, out of memory, a failing forward pass."""

    exit_code = 3


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def shown(value: object, limit: int = 80) -> str:
    """``value`` as it may be echoed in a message: control characters escaped (an escape sequence
    in a key must not clear the terminal) and at most ``limit`` characters (a huge value, or a list
    expanded from YAML aliases, must not flood it or take long to print)."""
    if isinstance(value, str):
        text = value[: 4 * limit]
        cut = len(value) > len(text)
    else:
        import reprlib

        short = reprlib.Repr()
        short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxlong = 3, 6, 6, limit, limit
        text, cut = short.repr(value), False
    text = "".join(ch if ch.isprintable() or ch == " " else ascii(ch)[1:-1] for ch in text)
    if cut or len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def echo(value: object, limit: int = 80) -> str:
    """Like ``shown``, strings in quotes: ``'reluu'``."""
    return f"'{shown(value, limit - 2)}'" if isinstance(value, str) else shown(value, limit)


class UserCodeError(RunError):
    """The user's code (a factory, a forward pass, an inputs function) raised a ``BaseException``
    that is not an ``Exception``: ``SystemExit``, ``KeyboardInterrupt``, ``GeneratorExit``, ... A
    model calling ``sys.exit(0)`` must not turn a failing gate green (exit 3, not 0)."""

    exit_code = 3


class Interrupted(KeyboardInterrupt):
    """The user's Ctrl-C, as the CLI's SIGINT handler raises it (exit 130); any other
    KeyboardInterrupt was raised by the user's code (exit 3)."""


class Terminated(Interrupted):
    """SIGTERM (a CI job cancelled) while probe runs worker processes: they are ended with it (exit 143)."""


def user_code_error(exc: BaseException, where: str) -> BaseException:
    """The error to raise for a ``BaseException`` escaping user code at ``where``: a real Ctrl-C
    passes unchanged; anything else becomes a ``UserCodeError`` naming what was raised."""
    if isinstance(exc, Interrupted):
        return exc
    if isinstance(exc, ProbeError) and is_probes_own(exc):
        return exc
    what = type(exc).__name__
    if isinstance(exc, SystemExit):
        what = f"SystemExit({shown(exc.code, 40)})"
    elif str(exc):
        what += f": {shown(first_line(exc), 120)}"
    return UserCodeError(f"{where} raised {what}; probe stopped the run")


def exit_code_of(exc: ProbeError) -> int:
    """The exit code of one of probe's own errors, read from its class: an ``exit_code`` set on the
    instance (by the code probe ran, which can reach probe's classes) is never read, and the code is
    2 (bad input) or 3 (the run failed), never 0 or 1, whatever a class says."""
    code = type(exc).exit_code
    return code if code in (2, 3) else 3


def is_probes_own(exc: BaseException) -> bool:
    """Raised as one of probe's own error classes, not a subclass that user code defined (which could
    carry any ``exit_code``: a model must not choose the exit code of the gate that judges it)."""
    module = type(exc).__module__
    return module == "probe" or module.startswith("probe.")
