"""The real exports in tests/data/exports (written by tests/make_exports.py), for the tests.

    from tests.exports import EXPORTS, export_path, feeds, params

    @pytest.mark.parametrize("export", params())           # every export, id = file stem
    def test_something(export): path = export_path(export["file"]) ...

Each entry of ``EXPORTS`` is one file's record from manifest.json: model, exporter, opset,
inputs with symbolic dims (batch, seq), the odd dims it carries, external data, and the
findings a user should expect (``expect``: code, dims, and the module the node belongs to).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

DIR = Path(__file__).resolve().parent / "data" / "exports"
MANIFEST: dict = json.loads((DIR / "manifest.json").read_text())
EXPORTS: list[dict] = MANIFEST["exports"]
BY_FILE: dict[str, dict] = {e["file"]: e for e in EXPORTS}

#: sizes to run the exports at: not the ones they were traced with (batch 2, seq 8)
RUN_SIZES = {"batch": 2, "seq": 16}


def export_path(name: str) -> Path:
    """Path of an export by file name (``gpt2_dynamo.onnx``) or stem (``gpt2_dynamo``)."""
    file = name if name.endswith(".onnx") else f"{name}.onnx"
    if file not in BY_FILE:
        raise KeyError(f"{name} is not in {DIR / 'manifest.json'}")
    return DIR / file


def params(where=None, *, marks=None) -> list:
    """pytest params of the exports (all, or those for which ``where(entry)`` is true), with
    the file stem as id. ``marks(entry)`` may return marks (e.g. an xfail) per export."""
    return [pytest.param(e, id=e["file"].removesuffix(".onnx"),
                         marks=(marks(e) if marks else ()) or ())
            for e in EXPORTS if where is None or where(e)]


def families() -> dict[str, list[dict]]:
    """family -> its exports (gpt2 -> dynamo and legacy, bert_mlm -> ... and the ORT one)."""
    out: dict[str, list[dict]] = {}
    for e in EXPORTS:
        out.setdefault(e["family"], []).append(e)
    return out


def shape(entry_value: dict, sizes: dict[str, int] | None = None) -> tuple[int, ...]:
    """A manifest input/output shape with its symbolic dims bound."""
    sizes = {**RUN_SIZES, **(sizes or {})}
    return tuple(sizes[d] if isinstance(d, str) else d for d in entry_value["shape"])


def feeds(entry: dict, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for an export: int64 ids from the manifest's ranges, float images from N(0, 1).

    The same recipe as tests/make_exports.py's ``example``: same seed, same arrays.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for value in entry["inputs"]:
        dims = shape(value, sizes)
        if value["dtype"].startswith("int"):
            low, high = entry["input_ranges"][value["name"]]
            out[value["name"]] = rng.integers(low, high, size=dims, dtype=value["dtype"])
        else:
            out[value["name"]] = rng.standard_normal(dims).astype(value["dtype"])
    return out
