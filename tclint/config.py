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
import math
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
DTYPES = ("fp16", "bf16", "tf32", "int8", "fp8")


def find_pyproject(start: str | os.PathLike) -> Path | None:
    here = Path(start).resolve()
    if here.is_file():
        here = here.parent
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------------------------
# The schema: every value's type and range, checked once when the file is read
# --------------------------------------------------------------------------------------------
class _Bad(Exception):
    """A value that does not fit the schema: what was expected (and, inside a table, which
    entry: ``sub`` and its value)."""

    def __init__(self, why: str, sub: str | None = None, value=None):
        super().__init__(why)
        self.sub, self.value = sub, value


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _str(choices=None):
    def check(value):
        if not isinstance(value, str):
            raise _Bad("expected a string" + (f": one of {', '.join(choices)}" if choices else ""))
        if choices and value.strip().lower() not in choices:
            raise _Bad(f"expected one of {', '.join(choices)}")
        return value
    return check


def _bool(value):
    if not isinstance(value, bool):
        raise _Bad("expected true or false")
    return value


def _fraction(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise _Bad("expected a fraction between 0 and 1 (e.g. 0.01)")
    return float(value)


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Bad("expected a positive integer")
    return value


def _codes(value):
    from tclint.rules import validate_prefixes

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise _Bad('expected a rule code or prefix, or a list of them (e.g. ["TC1", "TC201"])')
    items = [v.strip() for item in items for v in item.split(",") if v.strip()]
    try:
        return validate_prefixes(items)
    except UsageError as exc:
        raise _Bad(str(exc)) from None


def _raise_bad(why: str):
    raise _Bad(why)


def _dims(value):
    if not isinstance(value, dict):
        raise _Bad('expected a table of dim names and positive integers (e.g. { batch = 8 })')
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _Bad("expected a positive integer", k, v)
    return dict(value)


def _input_shapes(value):
    if not isinstance(value, dict):
        raise _Bad('expected a table of input names and shapes (e.g. { image = "1x3x224x224" })')
    out = {}
    for k, v in value.items():
        if isinstance(v, str):
            try:
                out[k] = parse_input_shape(f"{k}:{v}")[1]
            except UsageError:
                raise _Bad('expected a shape like "1x3x224x224"', k, v) from None
        elif isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v):
            out[k] = tuple(v)
        else:
            raise _Bad('expected a shape like "1x3x224x224" or [1, 3, 224, 224]', k, v)
    return out


def _calibration(value):
    if not isinstance(value, str) or not value.strip():
        raise _Bad("expected the path of a calibration table (JSON)")
    return value


def _arch(value):
    from tclint.specs import get_gpu

    if not isinstance(value, str):
        raise _Bad("expected a GPU name such as a100, or an architecture such as sm80")
    try:
        get_gpu(value)
    except UsageError as exc:
        raise _Bad(str(exc).replace("--arch ", "")) from None
    return value


def _providers():
    from tclint.specs import PROVIDERS

    return PROVIDERS


SCHEMA = {
    "arch": _arch,
    "dtype": _str(DTYPES),
    "strict": _bool,
    "dims": _dims,
    "input-shapes": _input_shapes,
    "hot-threshold": _fraction,
    "quantization-threshold": _fraction,
    "vocab-multiple": _positive_int,
    "select": lambda v: _codes(v) or _raise_bad("selects no rule: give at least one code or prefix (ALL for every rule)"),
    "ignore": _codes,
    "fail-on": _str(FAIL_ON),
    "calibration": _calibration,
    "provider": lambda v: _str(_providers())(v),
}


def _finite_nonnegative(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise _Bad("expected a finite number >= 0")
    return float(value)


def _names(value):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad("expected a list of names")
    return value


#: [tool.tclint.convert], read by ``tclint convert``
CONVERT_SCHEMA = {
    "dtype": _str(("fp16", "bf16")),
    "provider": lambda v: _str(_providers())(v),
    "block-ops": _names,
    "block-nodes": _names,
    "rtol": _finite_nonnegative,
    "atol": _finite_nonnegative,
    "metric": _str(("allclose", "max-rel")),
    "keep-io-types": _bool,
}


def _fail(where, key: str, value, why: str):
    raise UsageError(f"{where}: [tool.tclint] {key} = {_shown(value)}: {why}")


def _validate_table(table: dict, where, prefix: str = "") -> dict:
    """The table's values converted to CheckOptions fields; UsageError naming file, key, value."""
    out = {}
    for key, value in table.items():
        if key in ("overrides", "models", "convert"):
            continue
        if key not in SCHEMA:
            raise UsageError(f"{where}: unknown [tool.tclint] key {prefix}{key!r}")
        try:
            out[_KEYS[key]] = SCHEMA[key](value)
        except _Bad as exc:
            if exc.sub is not None:
                _fail(where, f"{prefix}{key}.{exc.sub}", exc.value, str(exc))
            _fail(where, prefix + key, value, str(exc))
    return out


def validate_config(table, where) -> dict:
    """Check the whole ``[tool.tclint]`` table (overrides and ``convert`` included) once."""
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [tool.tclint] = {_shown(table)}: expected a table")
    _validate_table(table, where)
    for key in ("models",):
        if key in table:
            raise UsageError(f"{where}: [tool.tclint] models belongs in a [[tool.tclint.overrides]] entry")
    overrides = table.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, dict) for o in overrides):
        _fail(where, "overrides", overrides, "expected [[tool.tclint.overrides]] tables")
    for i, override in enumerate(overrides):
        prefix = f"overrides[{i}]."
        models = override.get("models")
        if models is None:
            raise UsageError(f"{where}: [tool.tclint] {prefix}models is missing (glob patterns of models)")
        if isinstance(models, str):
            models = [models]
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            _fail(where, prefix + "models", override["models"], "expected a list of glob patterns")
        for key in override:
            if key in ("overrides", "convert"):
                raise UsageError(f"{where}: [tool.tclint] {prefix}{key} cannot be nested in an override")
        _validate_table(override, where, prefix)
    convert = table.get("convert", {})
    if not isinstance(convert, dict):
        _fail(where, "convert", convert, "expected a [tool.tclint.convert] table")
    for key, value in convert.items():
        if key not in CONVERT_SCHEMA:
            raise UsageError(f"{where}: unknown [tool.tclint.convert] key {key!r}")
        try:
            CONVERT_SCHEMA[key](value)
        except _Bad as exc:
            raise UsageError(f"{where}: [tool.tclint.convert] {key} = {_shown(value)}: {exc}") from None
    return table


_CACHE: dict[tuple, dict] = {}


def load_config(pyproject: Path | None) -> dict:
    """The validated ``[tool.tclint]`` table of ``pyproject`` ({} without one). Read and checked
    once per file and run; any error is one UsageError naming the file, the key and the value."""
    if pyproject is None:
        return {}
    from tclint.io import not_a_regular_file

    problem = not_a_regular_file(pyproject)
    if problem:
        raise UsageError(f"cannot read {pyproject}: {problem}")
    st = os.stat(pyproject)
    key = (os.path.realpath(pyproject), st.st_mtime_ns, st.st_size)
    if key in _CACHE:
        return _CACHE[key]
    try:
        with open(pyproject, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read {pyproject}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {pyproject}: not UTF-8 text (TOML files are UTF-8)") from None
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise UsageError(f"cannot read {pyproject}: {' '.join(str(exc).split()) or 'too deeply nested'}") from None
    tool = data.get("tool", {})
    if not isinstance(tool, dict):
        raise UsageError(f"{pyproject}: [tool] = {_shown(tool)}: expected a table")
    table = validate_config(tool.get("tclint", {}), pyproject)
    _CACHE[key] = table
    return table


def _convert(table: dict, where: str) -> dict:
    return _validate_table(table, where)


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
        patterns = [patterns] if isinstance(patterns, str) else patterns
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
