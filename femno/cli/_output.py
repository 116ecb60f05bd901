"""Small output helpers shared by the sub-commands: JSON and aligned tables."""

from __future__ import annotations

import json
import math

import numpy as np


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/Inf
    return value


def print_json(obj) -> None:
    """Print one JSON object on stdout (NaN/Inf become null)."""
    print(json.dumps(_jsonable(obj), indent=2, allow_nan=False))


def format_value(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}"
        return f"{value:.3e}"
    return str(value)


def print_table(rows, *, title: str | None = None) -> None:
    """Print ``(key, value)`` rows as an aligned two-column table."""
    rows = [(str(k), format_value(v)) for k, v in rows]
    width = max((len(k) for k, _ in rows), default=0)
    if title:
        print(title)
        print("-" * max(len(title), width + 20))
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
