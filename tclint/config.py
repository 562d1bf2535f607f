"""Options for ``tclint check`` and ``fix``: defaults < ``[tool.tclint]`` in the nearest
pyproject.toml < per-model overrides in that table < command-line flags.

    [tool.tclint]
    arch = "a100"
    dtype = "fp16"
    hot-threshold = 0.01
    select = ["TC1", "TC2"]
    ignore = ["TC110"]
    fail-on = "hot"
    dims = { batch = 8, seq = 512 }
    input-shapes = { image = "1x3x224x224" }

    [[tool.tclint.overrides]]
    models = ["models/llm/*.onnx"]
    dims = { seq = 2048 }
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from tclint.errors import UsageError
from tclint.load import parse_input_shape

FAIL_ON = ("hot", "advice", "any", "none")  # meanings: tclint.lint
FORMATS = ("table", "json", "sarif", "github")


@dataclass(frozen=True)
class CheckOptions:
    arch: str = "a100"
    dtype: str | None = None  # None: the model's own precision, fp16 for float32 models
    strict: bool = False
    dims: dict[str, int] = field(default_factory=dict)
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    hot_threshold: float = 0.01
    quantization_threshold: float = 0.5
    vocab_multiple: int = 64
    select: list[str] = field(default_factory=lambda: ["ALL"])
    ignore: list[str] = field(default_factory=list)
    fail_on: str = "hot"
    calibration: str | None = None
    provider: str = "cuda"  # execution provider whose FP16 kernels TC303 checks
    symbolic_inference: bool = True

    def __post_init__(self):
        if self.fail_on not in FAIL_ON:
            raise UsageError(f"--fail-on must be one of {', '.join(FAIL_ON)}")
        if not 0 <= self.hot_threshold <= 1:
            raise UsageError("--hot-threshold is a fraction between 0 and 1 (e.g. 0.01)")
        if not 0 <= self.quantization_threshold <= 1:
            raise UsageError("--quantization-threshold is a fraction between 0 and 1")


_KEYS = {
    "arch": "arch", "dtype": "dtype", "strict": "strict", "dims": "dims",
    "input-shapes": "input_shapes", "hot-threshold": "hot_threshold",
    "quantization-threshold": "quantization_threshold", "vocab-multiple": "vocab_multiple",
    "select": "select", "ignore": "ignore", "fail-on": "fail_on", "calibration": "calibration", "provider": "provider",
}


def find_pyproject(start: str | os.PathLike) -> Path | None:
    here = Path(start).resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def load_config(pyproject: Path | None) -> dict:
    if pyproject is None:
        return {}
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read {pyproject}: {exc}") from None
    return data.get("tool", {}).get("tclint", {})


def _convert(table: dict, where: str) -> dict:
    out = {}
    for key, value in table.items():
        if key in ("overrides", "models", "convert"):
            continue  # per-model overrides; [tool.tclint.convert] belongs to `tclint convert`
        if key not in _KEYS:
            raise UsageError(f"{where}: unknown [tool.tclint] key {key!r}")
        name = _KEYS[key]
        if name == "input_shapes":
            value = {k: (parse_input_shape(f"{k}:{v}")[1] if isinstance(v, str) else tuple(v))
                     for k, v in value.items()}
        if name == "dims":
            value = {k: int(v) for k, v in value.items()}
        if name in ("select", "ignore") and isinstance(value, str):
            value = [value]
        out[name] = value
    return out


def resolve_options(model_path: str | os.PathLike, cli: dict, *, config_path: Path | None = None) -> CheckOptions:
    """Merge defaults, config and per-model overrides, and command-line values (non-None)."""
    pyproject = config_path or find_pyproject(model_path)
    table = load_config(pyproject)
    where = str(pyproject)
    merged: dict = _convert(table, where)
    base = pyproject.parent if pyproject else Path.cwd()
    try:
        rel = Path(model_path).resolve().relative_to(base).as_posix()
    except ValueError:
        rel = Path(model_path).as_posix()
    for override in table.get("overrides", []):
        patterns = override.get("models", [])
        if any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(Path(model_path).name, p) for p in patterns):
            over = _convert(override, where)
            for key in ("dims", "input_shapes"):
                if key in over:
                    over[key] = {**merged.get(key, {}), **over[key]}
            merged.update(over)
    for key, value in cli.items():
        if value is None:
            continue
        if key in ("dims", "input_shapes"):
            if value:
                merged[key] = {**merged.get(key, {}), **value}
            continue
        merged[key] = value
    known = {f.name for f in dataclasses.fields(CheckOptions)}
    return CheckOptions(**{k: v for k, v in merged.items() if k in known})
