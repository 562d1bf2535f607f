"""Model rewrites as onnx-ir passes."""

from __future__ import annotations


def unique_name(names: set[str], base: str) -> str:
    """``base``, or ``base_1``, ``base_2``, ... : the first not in ``names`` (which it joins)."""
    name, i = base, 1
    while name in names:
        name = f"{base}_{i}"
        i += 1
    names.add(name)
    return name
