"""Casting and checking of run-config values: the forms TOML and a CLI produce, and reusable range checks.

Kept apart from ``config.RunConfig`` so that the configuration itself reads as a list of
settings; each check returns True or the reason a value is refused.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A run-config key is unknown, has the wrong type, or an invalid value."""


def unknown_keys(given: Iterable[str], known: Iterable[str], *, where: str = "config key") -> str:
    """The message for keys not in ``known``, each with its closest known keys (a typo names its fix)."""
    known = list(known)
    parts = []
    for key in sorted(given):
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        parts.append(f"'{key}'" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""))
    return f"unknown {where}(s): {', '.join(parts)}"


def choice(options: tuple[str, ...]) -> Any:
    return lambda v: v in options or f"must be one of {', '.join(options)}"


def at_least(low: float) -> Any:
    return lambda v: v >= low or f"must be >= {low}"


def positive(v: float) -> bool | str:
    return (v > 0 and math.isfinite(v)) or "must be a finite number > 0"


def fraction(v: float) -> bool | str:
    return 0.0 <= v < 1.0 or "must be in [0, 1)"


def budget(v: float) -> bool | str:
    return v > 0 or "must be > 0 (inf = no differential privacy)"


def probability(v: float) -> bool | str:
    return 0.0 < v < 1.0 or "must be in (0, 1)"


def unit(v: float) -> bool | str:
    return 0.0 < v <= 1.0 or "must be in (0, 1]"


def cast(key: str, raw: Any, kind: type) -> Any:
    """Cast one value to the field's type, accepting the forms TOML and a CLI produce."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
    elif kind is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
            if math.isnan(value):
                raise ConfigError(f"config key '{key}' is NaN")
            return value
        if isinstance(raw, str):
            try:
                return cast(key, float(raw), float)
            except ValueError:
                pass
    elif kind is str and isinstance(raw, str):
        return raw
    raise ConfigError(f"config key '{key}' = {raw!r}: expected {kind.__name__}")


def parse_owners(text: str) -> dict[int, int]:
    """``"node-id:partition ..."`` (spaces or commas between pairs) -> {partition: node id}.

    Raises
    ------
    ConfigError
        On a malformed pair, a negative number, or a node or partition named twice.
    """
    owners: dict[int, int] = {}
    for pair in text.replace(",", " ").split():
        node, sep, part = pair.partition(":")
        if not (sep and node.isdigit() and part.isdigit()):
            raise ConfigError(f"'{pair}' is not node-id:partition (two non-negative integers)")
        if int(part) in owners or int(node) in owners.values():
            raise ConfigError(f"'{pair}': every node and every partition may be named once")
        owners[int(part)] = int(node)
    return owners


def owner_map(text: str) -> bool | str:
    try:
        parse_owners(text)
    except ConfigError as err:
        return str(err)
    return True
