"""``tclint convert``: FP16/BF16 conversion of a model file, verified on onnxruntime before writing.

Pipeline: load (weights stay lazy) -> :class:`tclint.passes.fp16.ConvertFloat16Pass` (optionally
with the float32 keep-list found by :mod:`tclint.passes.mixed_precision`, ``auto=True``) ->
check the result loads in onnxruntime (CPU) and compare its outputs with float32 -> write
atomically. The input file is never modified.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from tclint import specs
from tclint.errors import InputError, TclintError, UsageError, VerificationError
from tclint.io import (
    external_tensors,
    model_weight_bytes,
    refuse_overwriting_model_output,
    require_readable_weights,
    stage_model,
)
from tclint.passes.fp16 import ConvertFloat16Pass, KeptNode, NormEpsilon, TensorClamp
from tclint.runtime import session_options
from tclint.verify import cpu_session, random_tensor

logger = logging.getLogger(__name__)

#: Above this many weight bytes the converted model is not loaded into onnxruntime from memory.
_VERIFY_LIMIT_BYTES = 1 << 30

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class ConvertReport:
    """What ``convert_model`` did and measured."""

    input: str
    output: str | None
    dtype: str
    provider: str
    keep_io_types: bool
    nodes_total: int
    nodes_low_precision: int
    #: nodes left in float32 and why (no kernel, blocked, norm epsilon, --auto)
    kept: tuple[KeptNode, ...]
    #: constants with values outside the low-precision range, per tensor
    clamps: tuple[TensorClamp, ...]
    #: decomposed-norm epsilons that flush to zero in low precision: raised, or kept float32
    norm_epsilons: tuple[NormEpsilon, ...]
    constants_converted: int
    casts_in_input: int
    casts_in_output: int
    casts_inserted: int
    casts_removed: int
    #: onnxruntime CPU loaded the converted model (None: not checked, model too large)
    loads_in_ort: bool | None
    #: max |fp16 - fp32| / max |fp32| over all outputs and samples (None: not measured)
    max_rel_error: float | None
    max_abs_error: float | None
    seconds: float
    #: --auto: validation runs and what was kept (None without --auto)
    auto: dict | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def convert_model(
    path_or_model: str | os.PathLike | ir.Model,
    out_path: str | os.PathLike | None = None,
    *,
    dtype: str = "fp16",
    keep_io_types: bool = True,
    block_ops: Iterable[str] = (),
    block_nodes: Iterable[str] = (),
    provider: str = "cuda",
    auto: bool = False,
    inputs: str | os.PathLike | Sequence[Feeds] | None = None,
    rtol: float = 1e-2,
    atol: float = 1e-3,
    metric: str = "allclose",
    verify: bool = True,
    keep_norm_epsilon: bool = False,
    external_data: bool | None = None,
    progress: Callable[[str], None] | None = None,
) -> ConvertReport:
    """Convert a float32 model to ``dtype`` for ``provider`` and (if ``out_path``) write it.

    ``path_or_model``: a model path (the file is never modified) or an ``ir.Model`` (converted
    in place). ``inputs``: an ``.npz`` path (one array per graph input; an extra leading axis
    holds several samples) or a list of feed dicts; random inputs are used when absent.
    ``keep_norm_epsilon``: keep the Add/Sqrt of a norm epsilon that flushes to zero in float32
    instead of raising the epsilon to the smallest subnormal.
    ``auto``: find nodes to keep in float32 so that outputs stay within tolerance of float32
    (``metric="allclose"``: numpy.allclose with ``rtol``/``atol`` per element; ``"max-rel"``:
    max |fp16 - fp32| / max |fp32| <= ``rtol`` per output) (see :mod:`tclint.passes.mixed_precision`).
    Raises :class:`InputError` (bad model, missing external data, bad inputs) and
    :class:`VerificationError` (the converted model does not load in onnxruntime).
    """
    start = time.perf_counter()
    say = progress or (lambda _message: None)
    if metric not in METRICS:
        raise UsageError(f"unknown --metric {metric!r}; known: {', '.join(METRICS)}")
    if dtype not in specs.FLOAT_FORMATS:
        raise UsageError(f"unknown --dtype {dtype!r}; known: {', '.join(specs.FLOAT_FORMATS)}")
    if provider not in specs.PROVIDERS:
        raise UsageError(f"unknown --provider {provider!r}; known: {', '.join(specs.PROVIDERS)}")
    say("loading")
    model, label = _load(path_or_model)
    if out_path is not None:
        models = [] if isinstance(path_or_model, ir.Model) else [(path_or_model, model)]
        refuse_overwriting_model_output(out_path, models=models)
    if external_data is None and external_tensors(model):
        external_data = True  # external data in, external data out (every dtype, converted or not)
    weight_bytes = model_weight_bytes(model)
    small = weight_bytes <= _VERIFY_LIMIT_BYTES
    if auto and not verify:
        raise UsageError("--auto runs the model: it cannot be combined with --no-verify")
    feeds = _feeds(model, inputs) if verify and small else []
    reference = None
    if verify and small:
        say("loading the float32 model in onnxruntime")
        try:
            ref_session = _session(model, label)
        except VerificationError as exc:
            raise InputError(str(exc).replace("the converted model", "the input model")) from None
    if feeds:
        say("running the float32 model")
        try:
            reference = [_run_session(ref_session, f) for f in feeds]
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
            if inputs is not None:
                raise InputError(f"{label}: the float32 model does not run on the given inputs: "
                                 f"{_one_line(exc)}") from None
            logger.warning("the float32 model does not run on random inputs (%s); outputs are "
                           "not compared (give --inputs)", _one_line(exc))
            feeds = []
    if auto and not feeds:
        raise UsageError("--auto needs inputs the model runs on: give --inputs")

    auto_info = None
    keep_nodes: dict[str, str] = {}
    if auto:
        if not small:
            raise UsageError("--auto needs a model under 1 GB of weights (it runs it on CPU)")
        from tclint.passes.mixed_precision import find_fp32_nodes

        result = find_fp32_nodes(
            model, feeds, dtype=dtype, provider=provider, keep_io_types=keep_io_types,
            block_ops=block_ops, block_nodes=block_nodes, rtol=rtol, atol=atol, metric=metric,
            progress=progress,
        )
        keep_nodes = dict(result.keep)
        auto_info = result.to_dict()

    conv = ConvertFloat16Pass(
        dtype=dtype, keep_io_types=keep_io_types, block_ops=block_ops, block_nodes=block_nodes,
        keep_nodes=keep_nodes, provider=provider, keep_norm_epsilon=keep_norm_epsilon,
    )
    say(f"converting to {dtype}")
    try:
        conv(model)
    except ValueError as exc:
        raise InputError(f"{label}: cannot convert: {exc}") from None
    stats = conv.stats
    assert stats is not None

    loads = max_rel = max_abs = None
    written = None
    with contextlib.ExitStack() as stack:
        staged = None
        if out_path is not None:
            say(f"writing {out_path}")
            staged = stack.enter_context(stage_model(model, out_path, external_data=external_data))
        if verify and small:
            # on the files as written (they sit in the output's folder), when there are files
            say("checking the result in onnxruntime")
            session = _session(model, label) if staged is None else _session_file(staged.path, label)
            loads = True
            if feeds and reference is not None and not _has_low_random_ops(model):
                try:
                    got = [_run_session(session, f) for f in feeds]
                except Exception as exc:  # noqa: BLE001
                    raise VerificationError(f"{label}: the converted model fails on inputs the float32 "
                                            f"model runs on: {_one_line(exc)}") from None
                max_abs, max_rel = _errors(reference, got)
            del session
        if staged is not None:
            written = staged.commit()
    return ConvertReport(
        input=label,
        output=str(written) if written is not None else None,
        dtype=dtype,
        provider=provider,
        keep_io_types=keep_io_types,
        nodes_total=stats.nodes_total,
        nodes_low_precision=stats.nodes_low_precision,
        kept=stats.kept,
        clamps=stats.clamps,
        norm_epsilons=stats.norm_epsilons,
        constants_converted=stats.constants_converted,
        casts_in_input=stats.casts_in_input,
        casts_in_output=stats.casts_in_output,
        casts_inserted=stats.casts_inserted,
        casts_removed=stats.casts_removed,
        loads_in_ort=loads,
        max_rel_error=max_rel,
        max_abs_error=max_abs,
        seconds=time.perf_counter() - start,
        auto=auto_info,
    )


# --------------------------------------------------------------------------------------------
# Loading, inputs, running
# --------------------------------------------------------------------------------------------
def _load(path_or_model) -> tuple[ir.Model, str]:
    if isinstance(path_or_model, ir.Model):
        return path_or_model, path_or_model.graph.name or "<model>"
    path = Path(path_or_model)
    try:
        from tclint.load import load_model
    except ImportError:  # pragma: no cover - load.py is the lead's; fall back to onnx-ir
        load_model = None
    if load_model is not None:
        model = load_model(path)
    else:  # pragma: no cover
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        try:
            model = ir.load(path)
        except Exception as exc:  # noqa: BLE001 - any parse failure is bad input
            raise InputError(f"{path}: not a readable ONNX model ({exc})") from None
    _check_initializer_types(model, path)
    require_readable_weights(model, path)
    _infer_types(model)
    return model, str(path)


def _infer_types(model: ir.Model) -> None:
    """Fill in the element type of values the model does not annotate (an onnxruntime-optimized
    BERT has no value_info: the FP16 pass must know that EmbedLayerNormalization's output is
    float to convert the Attention reading it consistently). Shapes are left as they were."""
    values = [v for n in model.graph.all_nodes() for v in n.outputs]
    if all(v.dtype is not None for v in values):
        return
    from tclint.load import resolve_shapes

    shapes = {v: v.shape for v in [*model.graph.inputs, *values]}
    try:
        resolve_shapes(model)
    except TclintError as exc:  # types stay unknown: the pass works as before
        logger.info("type inference before conversion failed: %s", exc)
    finally:
        for v, shape in shapes.items():
            v.shape = shape


def _check_initializer_types(model: ir.Model, label) -> None:
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            dtype = tensor.dtype if tensor is not None else value.dtype
            if dtype is None or dtype == ir.DataType.UNDEFINED:
                raise InputError(f"{label}: initializer {value.name!r} has no element type")


def load_feeds(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read inputs {path}: {exc}") from None


def _feeds(model: ir.Model, inputs) -> list[Feeds]:
    graph_inputs = [v for v in model.graph.inputs if not v.is_initializer()]
    if inputs is None:
        logger.warning("no --inputs given: comparing outputs on one random input")
        return [random_feeds(model)]
    if isinstance(inputs, (str, os.PathLike)):
        arrays = load_feeds(inputs)
        names = {v.name for v in graph_inputs}
        unknown = sorted(set(arrays) - names)
        missing = sorted(names - set(arrays))
        if unknown or missing:
            raise InputError(
                f"{inputs}: arrays must match the graph inputs; "
                f"unknown: {unknown or '-'}, missing: {missing or '-'}"
            )
        samples: list[Feeds] = []
        counts = set()
        for v in graph_inputs:
            a = arrays[v.name]
            rank = len(v.shape) if v.shape is not None else a.ndim
            counts.add(a.shape[0] if a.ndim == rank + 1 else None)
        if len(counts) != 1:
            raise InputError(f"{inputs}: inputs disagree on the number of samples")
        n = counts.pop()
        if n is None:
            return [{k: _as_input_dtype(model, k, a) for k, a in arrays.items()}]
        for i in range(n):
            samples.append({k: _as_input_dtype(model, k, a[i]) for k, a in arrays.items()})
        return samples
    return [dict(f) for f in inputs]


def _as_input_dtype(model: ir.Model, name: str, array: np.ndarray) -> np.ndarray:
    for v in model.graph.inputs:
        if v.name == name and v.dtype is not None:
            try:
                return np.asarray(array, dtype=v.dtype.numpy())
            except (TypeError, ValueError) as exc:
                raise InputError(f"input {name!r} cannot be given as {v.dtype}: {exc}") from None
    return array


def random_feeds(model: ir.Model, *, seed: int = 0) -> Feeds:
    """One random input per graph input (symbolic dims set to 1; integers in [0, 2))."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in model.graph.inputs:
        if v.is_initializer():
            continue
        dims = [d if isinstance(d, int) else 1 for d in (v.shape or [])]
        try:
            dtype = np.dtype(v.dtype.numpy()) if v.dtype is not None else np.dtype(np.float32)
        except TypeError:
            raise InputError(f"graph input {v.name!r} has element type {v.dtype}, which has no "
                             "numpy equivalent") from None
        feeds[v.name] = random_tensor(rng, dims, dtype)
    return feeds


def _session(model: ir.Model, label: str, *, disable_optimizations: bool = False):
    import onnxruntime as ort

    options = session_options()
    if disable_optimizations:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        if any(n.op_type == "NhwcConv" and n.domain == "com.microsoft" for n in model.graph):
            # no CPU kernel (a --layout nhwc model): run the equivalent Transpose-Conv-Transpose
            from tclint.passes.layout import expand_nhwc_conv

            model = expand_nhwc_conv(model)
        if any(isinstance(v.const_value, ir.ExternalTensor) for g in model.graphs()
               for v in g.initializers.values()):
            model = model.clone()
            ir.external_data.load_to_model(model)
        data = ir.to_proto(model).SerializeToString()
        return cpu_session(data, options)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        raise VerificationError(
            f"{label}: the converted model does not load in onnxruntime: {exc}"
        ) from None


def _session_file(path: Path, label: str):
    """An onnxruntime session on a written model file, its external data read from beside it
    (a --layout nhwc model, whose NhwcConv has no CPU kernel, runs as Transpose-Conv-Transpose
    after being read back from those files)."""
    try:
        from tclint.load import load_model

        written = load_model(path)
        if any(n.op_type == "NhwcConv" and n.domain == "com.microsoft" for n in written.graph):
            from tclint.passes.layout import expand_nhwc_conv

            written = expand_nhwc_conv(written)
            ir.external_data.load_to_model(written)
            return cpu_session(ir.to_proto(written).SerializeToString(), session_options())
        return cpu_session(str(path), session_options())
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        raise VerificationError(
            f"{label}: the converted model does not load in onnxruntime from its folder: {_one_line(exc)}"
        ) from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def _has_low_random_ops(model: ir.Model) -> bool:
    """onnxruntime's CPU provider aborts (not raises) on FP16/BF16 random ops: do not run them."""
    return any(
        n.op_type.startswith("Random") and n.outputs[0].dtype not in (None, ir.DataType.FLOAT)
        for n in model.graph.all_nodes()
    )


def _run_session(session, feeds: Feeds) -> list[np.ndarray]:
    names = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def _errors(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> tuple[float, float]:
    max_abs = max_rel = 0.0
    for ref_outs, got_outs in zip(reference, got):
        for r, g in zip(ref_outs, got_outs):
            if not np.issubdtype(np.asarray(r).dtype, np.floating):
                continue
            r = np.asarray(r, np.float64)
            g = np.asarray(g, np.float64)
            if not np.all(np.isfinite(g)) and np.all(np.isfinite(r)):
                return float("inf"), float("inf")
            diff = float(np.max(np.abs(r - g))) if r.size else 0.0
            scale = float(np.max(np.abs(r))) if r.size else 0.0
            max_abs = max(max_abs, diff)
            max_rel = max(max_rel, diff / scale if scale else diff)
    return max_abs, max_rel


METRICS = ("allclose", "max-rel")


def within_tolerance(reference, got, *, rtol: float, atol: float, metric: str = "allclose") -> bool:
    """Every float output of every sample within tolerance (NaN/inf always fail).

    ``allclose``: ``numpy.allclose(got, ref, rtol, atol)``; ``max-rel``: the largest error
    relative to the output's largest magnitude, ``max|got - ref| / max|ref| <= rtol``.
    """
    for ref_outs, got_outs in zip(reference, got):
        for r, g in zip(ref_outs, got_outs):
            r = np.asarray(r)
            if not np.issubdtype(r.dtype, np.floating):
                continue
            g = np.asarray(g, np.float64)
            r = r.astype(np.float64)
            if not np.all(np.isfinite(g)):
                return False
            if metric == "max-rel":
                scale = float(np.max(np.abs(r))) if r.size else 0.0
                if r.size and float(np.max(np.abs(g - r))) > rtol * scale + atol * (scale == 0):
                    return False
            elif not np.allclose(g, r, rtol=rtol, atol=atol):
                return False
    return True


# --------------------------------------------------------------------------------------------
# Formatting (pure functions)
# --------------------------------------------------------------------------------------------
def format_table(report: ConvertReport) -> str:
    from tabulate import tabulate

    lines = [
        f"{report.input} -> {report.output or '(not written)'}: {report.dtype} for {report.provider}",
        f"  nodes: {report.nodes_low_precision} of {report.nodes_total} in {report.dtype}, "
        f"{len(report.kept)} kept float32",
        f"  casts: {report.casts_in_input} in input, {report.casts_in_output} in output "
        f"({report.casts_inserted} inserted, {report.casts_removed} redundant removed)",
    ]
    if report.loads_in_ort is not None:
        err = "not compared" if report.max_rel_error is None else (
            f"max rel error {report.max_rel_error:.3g}, max abs error {report.max_abs_error:.3g}"
        )
        lines.append(f"  onnxruntime CPU: loads and runs; {err}")
    lines.append(f"  time: {report.seconds:.2f} s")
    if report.kept:
        rows = [(k.name, k.op_type, k.reason) for k in report.kept]
        lines += ["", "Kept in float32:", tabulate(rows, headers=["node", "op", "why"])]
    if report.norm_epsilons:
        rows = [(e.node, f"{e.value:.3g}", e.action) for e in report.norm_epsilons]
        lines += ["", f"Norm epsilons that flush to zero in {report.dtype}:",
                  tabulate(rows, headers=["node", "epsilon", "action"])]
    if report.clamps:
        rows = [(c.tensor, c.size, c.clamped, c.raised) for c in report.clamps]
        lines += ["", f"Constants outside the {report.dtype} range:",
                  tabulate(rows, headers=["tensor", "values", "clamped to max", "raised from ~0"])]
    if report.auto:
        a = report.auto
        lines += ["", f"--auto: {len(a['keep'])} nodes kept float32 after {a['validations']} "
                  f"validation runs ({a['seconds']:.1f} s); within tolerance: {a['within_tolerance']}; "
                  f"emulated {report.dtype} error {a['max_rel_error']:.3g} "
                  f"(all-{report.dtype}: {a['baseline_rel_error']:.3g})"]
    return "\n".join(lines) + "\n"


def format_json(report: ConvertReport) -> str:
    import json

    return json.dumps(report.to_dict(), indent=2, default=str) + "\n"


def parse_names(values: Iterable[str] | None) -> list[str]:
    """``--block-op A,B --block-op C`` -> [A, B, C]."""
    out: list[str] = []
    for v in values or ():
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


__all__ = [
    "ConvertReport", "convert_model", "format_json", "format_table", "random_feeds",
    "within_tolerance", "load_feeds", "parse_names", "METRICS",
]
