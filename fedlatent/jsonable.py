"""Strict JSON for every file fedlatent writes: no NaN or Infinity tokens, no numpy types.

``json.dumps`` writes ``Infinity``/``NaN``, which strict parsers (and ``allow_nan=False``)
refuse; run configs hold ``inf`` budgets and attack scores can be NaN. ``jsonable`` turns
non-finite floats into the strings ``"inf"``, ``"-inf"`` and ``"nan"`` (which
``RunConfig.from_run_config`` casts back), numpy scalars and arrays into plain values, and
non-string keys into strings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """``value`` with every nested part made strict-JSON serializable (see module docstring)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
