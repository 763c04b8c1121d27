"""YAML text -> plain Python data, bounded: the only place probe parses YAML.

``yaml.safe_load`` constructs no Python objects but the plain ones, yet a few hundred bytes can
still describe an enormous document: aliases fan out (the "billion laughs": ten aliases of ten
aliases of ... is 10^9 values, which any later walk over the data expands), and nesting thousands
of levels deep exhausts the recursion limit; a large document without aliases costs time and
memory in proportion. The loader here reads at most ``MAX_BYTES``, counts nodes as it composes
them (stopping at ``MAX_WRITTEN``), and refuses, before constructing anything, a node graph whose
expanded size or depth passes a bound far above any real spec. It also refuses duplicate keys in a mapping (YAML says keys are unique;
PyYAML silently keeps the last one) and remembers where each key was written, so that validation
errors can point at a line and column.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from probe.errors import SpecError, shown

MAX_NODES = 100_000  # scalars, lists and mappings after expanding every alias; a real spec has < 1,000
MAX_WRITTEN = 10_000  # nodes as written (an alias once), counted while composing: ~1 s of PyYAML
MAX_DEPTH = 64  # nesting levels; a real spec has < 8
MAX_BYTES = 256 * 2**10  # a spec file larger than this is not a spec (and /dev/zero never ends): read no further


class TooManyValues(Exception):
    """The composer read more than ``MAX_NODES`` nodes."""


@dataclass
class Parsed:
    """The data and, for each dotted key path (``model.depth``, ``init.rules[0].match``), where
    its key was written as ``(line, column)``, both 1-based."""

    data: Any
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: str) -> tuple[int, int] | None:
        """The position of ``path`` or of its closest written parent."""
        while path:
            if path in self.marks:
                return self.marks[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None


def parse_yaml(text: str, source: str) -> Parsed:
    """Parse ``text`` (one YAML document) within the bounds above; ``SpecError`` otherwise."""
    import yaml

    if len(text) > MAX_BYTES:  # text given directly (Python, a pipe read elsewhere): the file's bound
        raise SpecError(f"{source}: the YAML is longer than {MAX_BYTES // 2**10} KiB; a spec is a few hundred bytes")
    try:
        loader = _loader_class()(text)
    except yaml.YAMLError as exc:  # the reader refuses control characters at once
        raise SpecError(f"{source}: YAML error: {shown(str(exc).splitlines()[0], 200)}") from None
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise SpecError(f"{source}: the YAML nests deeper than {MAX_DEPTH} levels") from None
        except TooManyValues:
            raise SpecError(
                f"{source}: the YAML has more than {MAX_WRITTEN:,} values; a spec needs a few hundred"
            ) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
            raise SpecError(f"{where}: YAML syntax error: {exc.problem or exc}") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"{source}: YAML error: {exc}") from None
        if node is None:
            return Parsed(None)
        _check_size(node, source)
        marks: dict[str, tuple[int, int]] = {}
        _collect_marks(node, "", marks, source)
        try:
            data = loader.construct_document(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
            raise SpecError(f"{where}: YAML error: {exc.problem or exc}") from None
        except yaml.YAMLError as exc:
            raise SpecError(f"{source}: YAML error: {exc}") from None
        return Parsed(data, marks)
    finally:
        loader.dispose()


def _loader_class() -> type:
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        """SafeLoader whose composer stops at ``MAX_DEPTH`` levels, before Python's recursion limit,
        and at ``MAX_WRITTEN`` nodes read (an alias counts once here; ``_check_size`` expands them)."""

        _depth = 0
        _nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._nodes += 1
            if self._nodes > MAX_WRITTEN:  # counted as they are read: a huge document stops here, early
                raise TooManyValues
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    raise RecursionError
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    # Numbers as YAML 1.2 reads them, so probe and a YAML 1.2 editor checking the JSON Schema agree:
    # `1e-3` is a number (YAML 1.1: a string), `1_0`, `1:30` (base 60) and `0b101` are strings,
    # `017` is 17 (YAML 1.1: octal 15). Everything else resolves as PyYAML's SafeLoader does.
    resolvers = {
        first: [(tag, regexp) for tag, regexp in rules if not tag.endswith((":int", ":float"))]
        for first, rules in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for tag, regexp, firsts in NUMBERS:
        for first in firsts:
            resolvers.setdefault(first, []).append((tag, regexp))
    BoundedLoader.yaml_implicit_resolvers = resolvers
    BoundedLoader.add_constructor("tag:yaml.org,2002:int", _bounded_int)
    return BoundedLoader


def _numbers() -> list[tuple[str, Any, str]]:
    """YAML 1.2 core schema's int and float patterns (decimal, 0o octal, 0x hex; .inf and .nan)."""
    import re

    return [
        ("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), "-+0123456789"),
        (
            "tag:yaml.org,2002:float",
            re.compile(
                r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
            ),
            "-+0123456789.",
        ),
    ]


NUMBERS = _numbers()


def _bounded_int(loader: Any, node: Any) -> int:
    """An integer as YAML 1.2 reads it (decimal, also with leading zeros; ``0o`` octal; ``0x`` hex);
    one too long for Python to convert (over 4300 digits) is a YAML error at its line (exit 2), not
    an unexpected error."""
    import yaml

    text = str(node.value)
    try:
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)
    except ValueError:
        problem = f"an integer of {len(text)} digits is too long for a spec"
        raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


def parse_scalar(text: str) -> Any:
    """One YAML scalar as ``--set``/``--gate`` values are read: through the same loader (no base 60,
    bounded integers); text that is not valid YAML is kept as a string."""
    import yaml

    if text.strip().lower() in ("inf", "+inf", "-inf"):  # on a command line, `inf` (YAML writes .inf)
        return float(text)
    loader = _loader_class()(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError:
        return text
    finally:
        loader.dispose()


def _check_size(root: Any, source: str) -> None:
    """Refuse a graph whose alias expansion exceeds ``MAX_NODES`` (counted without expanding)."""
    import yaml

    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: Any, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_path:
            raise SpecError(f"{source}: a YAML alias refers to a node containing itself")
        if depth > MAX_DEPTH:
            raise SpecError(f"{source}: the YAML nests deeper than {MAX_DEPTH} levels (through aliases)")
        on_path.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children: list[Any] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_NODES:
                raise SpecError(
                    f"{source}: the YAML expands to more than {MAX_NODES:,} values through its aliases "
                    "(&anchor/*alias fan-out); a spec needs a few hundred"
                )
        on_path.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


def _collect_marks(node: Any, path: str, marks: dict[str, tuple[int, int]], source: str) -> None:
    """Record each key's position and refuse duplicate keys (naming both lines)."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            line = key_node.start_mark.line + 1
            key = key_node.value
            if key == "<<":  # a merge key may repeat; its keys were written elsewhere
                continue
            if key in first:
                raise SpecError(
                    f"{source}:{line}:{key_node.start_mark.column + 1}: duplicate key '{_short(key)}' "
                    f"(first on line {first[key]}, again on line {line}); YAML keys must be unique"
                )
            first[key] = line
            sub = f"{path}.{key}" if path else str(key)
            marks.setdefault(sub, (line, key_node.start_mark.column + 1))
            _collect_marks(value_node, sub, marks, source)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = f"{path}[{i}]"
            marks.setdefault(sub, (item.start_mark.line + 1, item.start_mark.column + 1))
            _collect_marks(item, sub, marks, source)


def _short(text: str) -> str:
    return shown(text, 60)


# A named pipe (mkfifo) is read only once something writes to it: with no writer, open() and read()
# would wait forever. This long for its first bytes, then a SpecError (a pipe into /dev/stdin from
# a program that writes its spec at once is read as it comes).
PIPE_WAIT_S = 30.0


def read_bounded(path: str | os.PathLike[str]) -> bytes:
    """The first ``MAX_BYTES + 1`` bytes of a spec file (more is refused by the caller): a file
    or device read at once; a pipe read without blocking, waiting at most ``PIPE_WAIT_S`` for data."""
    import stat

    if not stat.S_ISFIFO(os.stat(path).st_mode):
        with open(path, "rb") as fh:  # bounded: a device such as /dev/zero never ends
            return fh.read(MAX_BYTES + 1)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # opening a pipe with no writer blocks otherwise
    try:
        return _read_pipe(fd, str(path))
    finally:
        os.close(fd)


def _read_pipe(fd: int, path: str) -> bytes:
    import select
    import time

    chunks: list[bytes] = []
    size, deadline = 0, time.monotonic() + PIPE_WAIT_S
    while size <= MAX_BYTES:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise SpecError(
                f"spec file {path} is a pipe that nothing wrote to in {PIPE_WAIT_S:g} s (a named pipe with no "
                "writer?); give a regular file, or pipe the spec in: ... | probe check /dev/stdin"
            )
        try:
            chunk = os.read(fd, 2**16)
        except BlockingIOError:
            continue
        if not chunk:  # the writer closed it: the whole spec is in
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
