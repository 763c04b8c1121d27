"""Small validation primitives shared by the spec and the registries.

Kept free of torch and YAML so that registries (activations, init strategies) can declare their
parameters as data and the spec can validate them before anything heavy is imported.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from probe.errors import SpecError, SpecErrors, echo


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"did you mean 'relu'? "`` when a close match exists, else an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'? " if close else ""


def unknown(kind: str, word: object, choices: Iterable[str], path: str, owner: str = "") -> SpecError:
    """The error for an unknown name or key, with a suggestion and the valid choices."""
    options = sorted(choices)
    hint = did_you_mean(str(word), options)
    of = f" of {owner}" if owner else ""
    sep = f"; {hint}" if hint else " "
    return SpecError(f"unknown {kind} {echo(word)}{of}{sep}(valid: {', '.join(options)})", path)


def type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


# No size, count or seed of a probe comes near 2^31: a larger integer is a typo or an attack, and
# beyond 2^63 torch itself fails with C++ frames instead of a message.
INT_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Param:
    """One named parameter of an activation or init strategy.

    ``kind`` is ``"float"``, ``"int"``, ``"bool"``, ``"str"``, ``"float_or_auto"``, ``"mapping"``
    (string keys) or ``"shape"`` (a list of positive integers, or ``"3,32,32"``).
    """

    kind: str
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    nullable: bool = False
    help: str = ""
    # inf is a legitimate "no limit" for upper thresholds only (max_std: inf); NaN never is
    allow_inf: bool = False

    def check(self, value: Any, path: str) -> Any:
        """Return ``value`` converted to this parameter's type, or raise ``SpecError``."""
        if value is None:
            if self.nullable:
                return None
            raise SpecError(f"must not be null (expected {self.kind})", path)
        if self.kind == "float_or_auto" and value == "auto":
            return "auto"
        if self.kind in ("float", "float_or_auto"):
            value = as_float(value, path)
            if math.isnan(value) or (math.isinf(value) and not self.allow_inf):
                allowed = "a finite number or inf" if self.allow_inf else "a finite number"
                raise SpecError(f"expected {allowed}, got {echo(value)}", path)
        elif self.kind == "int":
            value = as_int(value, path)
            if self.maximum is None and abs(value) > INT_LIMIT:
                raise SpecError(f"must be at most {INT_LIMIT:,} (2^31 - 1), got {echo(value)}", path)
        elif self.kind == "bool":
            if not isinstance(value, bool):
                raise SpecError(f"expected true or false, got {type_name(value)} {echo(value)}", path)
        elif self.kind == "mapping":
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise SpecError(f"expected a mapping with string keys, got {type_name(value)}", path)
            value = dict(value)
        elif self.kind == "shape":
            value = as_shape(value, path)
        elif self.kind == "str":
            if not isinstance(value, str):
                raise SpecError(f"expected a string, got {type_name(value)} {echo(value)}", path)
            if self.choices and value not in self.choices:
                raise unknown("value", value, self.choices, path)
        if self.minimum is not None and (value < self.minimum or (self.exclusive_minimum and value == self.minimum)):
            bound = ">" if self.exclusive_minimum else ">="
            raise SpecError(f"must be {bound} {self.minimum:g}, got {echo(value)}", path)
        if self.maximum is not None and value > self.maximum:
            raise SpecError(f"must be <= {self.maximum:g}, got {echo(value)}", path)
        return value


def as_float(value: Any, path: str) -> float:
    """A number, as the JSON Schema says: the spec's YAML reads ``1e-3`` as one (YAML 1.2's numbers,
    ``yaml_text.NUMBERS``); a string is refused, quoted digits included, so probe and an editor agree."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    hint = " (write the number without quotes)" if isinstance(value, str) and _numeric(value) else ""
    raise SpecError(f"expected a number, got {type_name(value)} {echo(value)}{hint}", path)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def as_shape(value: Any, path: str) -> tuple[int, ...]:
    """``[3, 32, 32]``, ``"3,32,32"`` or ``128`` -> ``(3, 32, 32)``: one sample's shape, no batch."""
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",") if p.strip()]
        try:
            parts = [int(p) for p in parts]
        except ValueError:
            raise SpecError(f"expected comma-separated integers like 3,32,32, got {echo(value)}", path) from None
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise SpecError(f"expected a list of integers like [3, 32, 32], got {type_name(value)}", path)
    if not parts or not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= INT_LIMIT for p in parts):
        raise SpecError(f"expected positive integers like [3, 32, 32], got {echo(value)}", path)
    return tuple(parts)


def as_int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise SpecError(f"expected an integer, got {type_name(value)} {echo(value)}", path)
    return value


def check_params(params: Mapping[str, Any], schema: Mapping[str, Param], owner: str, path: str) -> dict[str, Any]:
    """Validate a mapping of parameters against ``schema`` and fill in defaults."""
    out: dict[str, Any] = {}
    errors = SpecErrors()  # every unknown key and bad value, not only the first
    for key in params:
        if key not in schema:
            sub = f"{path}.{key}" if path else str(key)
            with errors.catch():
                if not schema:
                    raise SpecError(f"{owner} takes no parameters, got {echo(key)}", sub)
                raise unknown("key", key, schema.keys(), sub, owner)
    for key, param in schema.items():
        sub = f"{path}.{key}" if path else key
        with errors.catch():
            out[key] = param.check(params[key], sub) if key in params else param.default
    errors.check()
    return out
