"""FP16 precision hazards (rules TC301-TC304): pure detection functions over an ``ir.Model``.

The rule registry (:mod:`tclint.rules`) wraps these; they know nothing about selection or output.

- TC301 fp16-constant-out-of-range: a float32 constant has values above FP16's max (65504) or
  non-zero values that flush to zero.
- TC302 fp16-norm-epsilon-underflow: the epsilon of a decomposed norm (``Add(var, eps)`` feeding
  Sqrt/Reciprocal/Div/Pow) is below FP16's smallest normal value (6.1e-5).
- TC303 fp16-no-kernel: an op has no FP16 kernel on the chosen provider (it will run float32
  with Casts around it, or fall back to another device).
- TC304 fp16-overflow-prone-op: Softmax/Exp/Pow/ReduceSum/ReduceSumSquare/ReduceMean/ReduceProd
  over a long axis, likely to overflow in FP16.

Weights are never read in bulk: only constants of at most :data:`SMALL_TENSOR_BYTES` (1 MB) are
inspected for values (TC301, TC302), so linting a model with tens of GB of external weights reads
none of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from tclint import specs

#: Constants larger than this are never read by the hazard checks.
SMALL_TENSOR_BYTES = 1 << 20
#: Reductions over at least this many elements (or Pow with exponent >= 2 on unbounded input)
#: are flagged as overflow-prone by TC304.
LONG_REDUCTION = 1024

#: TC301 reports values that flush to zero only in small constants (scales, epsilons) or when
#: at least this fraction of a tensor's non-zero values flush.
FLUSH_SMALL_TENSOR = 16
FLUSH_FRACTION = 0.01

_FLOATS = (ir.DataType.FLOAT, ir.DataType.DOUBLE)
TensorProto_FLOAT, TensorProto_DOUBLE = 1, 11  # onnx.TensorProto.FLOAT / DOUBLE
_OVERFLOW_OPS = {"Softmax", "Exp", "Pow", "ReduceSum", "ReduceSumSquare", "ReduceMean",
                 "ReduceProd", "ReduceL2", "ReduceLogSumExp"}


@dataclass(frozen=True)
class Hazard:
    code: str
    node_name: str
    op_type: str
    message: str
    dims: dict = field(default_factory=dict)


def find_fp16_hazards(model: ir.Model, *, provider: str = "cuda", dtype: str = "fp16") -> list[Hazard]:
    """All TC30x hazards of ``model`` for ``provider`` (nodes of subgraphs included).

    Reads only constants of at most 1 MB (:data:`SMALL_TENSOR_BYTES`); never loads weights.
    """
    fmt = specs.FLOAT_FORMATS[dtype]
    table = specs.kernel_table(provider, dtype)
    functions = {(f.domain, f.name) for f in model.functions.values()}
    out: list[Hazard] = []
    with np.errstate(all="ignore"):  # corrupt constants must not print numpy warnings
        out += _constants_out_of_range(model, fmt)
        for node in model.graph.all_nodes():
            out += _norm_epsilon(node, fmt)
            if (node.domain, node.op_type) not in functions:  # a call: its body has the kernels
                out += _no_kernel(node, table, dtype, provider)
            out += _overflow_prone(node)
    return out


# --------------------------------------------------------------------------------------------
def small_constant(value: ir.Value | None) -> np.ndarray | None:
    """The values of an inline float constant of at most 1 MB, else None (nothing is read).

    Tensors in external data are never read: ``check`` looks at structure and dims only."""
    if value is None or value.const_value is None or value.dtype not in _FLOATS:
        return None
    tensor = value.const_value
    if isinstance(tensor, ir.ExternalTensor) or getattr(tensor, "reads_files", False):
        return None
    if tensor.dtype not in _FLOATS or tensor.nbytes > SMALL_TENSOR_BYTES:
        return None
    try:
        with np.errstate(all="ignore"):
            return np.asarray(tensor.numpy(), dtype=np.float64)
    except Exception:  # noqa: BLE001 - unreadable external data: not this check's business
        return None


def small_ints(value: ir.Value | None) -> list[int] | None:
    """The values of an inline integer constant of at most 1 MB, else None (nothing is read:
    a tensor in external data, a FIFO or a missing file behind it, is never opened)."""
    if value is None or value.const_value is None:
        return None
    tensor = value.const_value
    if isinstance(tensor, ir.ExternalTensor) or getattr(tensor, "reads_files", False):
        return None
    try:
        if not tensor.dtype.is_integer() or tensor.nbytes > SMALL_TENSOR_BYTES:
            return None
        return [int(a) for a in np.asarray(tensor.numpy()).reshape(-1)]
    except Exception:  # noqa: BLE001 - a corrupt constant: not this check's business
        return None


def _screen_constants(model: ir.Model, fmt) -> set[int]:
    """Ids of the initializers :func:`_constants_out_of_range` must look at one by one.

    Inline float tensors (raw bytes, as exporters write them, or typed ``float_data``) are
    screened together, in one numpy pass over their concatenated values: only those with a value
    out of range, or one that flushes to zero, are returned. Anything else (other storage, sizes
    the dims disagree with) is returned as is, to be looked at one by one. A model of a million tiny constants costs one pass instead of a million conversions."""
    slow: set[int] = set()
    groups: dict[int, tuple[list[int], list[bytes]]] = {TensorProto_FLOAT: ([], []), TensorProto_DOUBLE: ([], [])}
    typed_ids: list[int] = []
    typed_counts: list[int] = []
    typed_values: list[float] = []
    for graph in model.graphs():
        for value in graph.initializers.values():
            tensor = value.const_value
            if tensor is None or isinstance(tensor, ir.ExternalTensor):
                continue
            proto = getattr(tensor, "raw", None) if isinstance(tensor, ir.serde.TensorProtoTensor) else None
            if proto is None or proto.data_type not in groups or proto.data_location != 0:
                slow.add(id(value))
                continue
            itemsize = 4 if proto.data_type == TensorProto_FLOAT else 8
            n = math.prod(proto.dims)
            if n * itemsize > SMALL_TENSOR_BYTES:
                continue  # never read (small_constant's limit)
            data = proto.raw_data
            if data and len(data) == n * itemsize:
                ids, chunks = groups[proto.data_type]
                ids.append(id(value))
                chunks.append(data)
                continue
            typed = proto.float_data if proto.data_type == TensorProto_FLOAT else proto.double_data
            if not data and len(typed) == n:
                if n:
                    typed_ids.append(id(value))
                    typed_counts.append(n)
                    typed_values.extend(typed)
                continue
            if data or n:
                slow.add(id(value))  # a size the dims disagree with: looked at one by one
    flagged = set(slow)
    if typed_ids:
        flagged.update(_out_of_range(np.asarray(typed_values, np.float64), typed_ids, typed_counts, fmt))
    for code, (ids, chunks) in groups.items():
        if ids:
            itemsize = 4 if code == TensorProto_FLOAT else 8
            a = np.frombuffer(b"".join(chunks), dtype=f"<f{itemsize}").astype(np.float64)
            flagged.update(_out_of_range(a, ids, [len(c) // itemsize for c in chunks], fmt))
    return flagged


def _out_of_range(a: np.ndarray, ids: list[int], counts: list[int], fmt) -> set[int]:
    """Ids whose segment of ``a`` (``counts`` values each) holds a finite value above the
    format's max or a non-zero one below its smallest subnormal."""
    with np.errstate(all="ignore"):
        owner = np.repeat(np.arange(len(ids)), counts)
        mag = np.abs(a)
        hit = np.isfinite(a) & ((mag > fmt.max_finite) | ((a != 0) & (mag < fmt.min_subnormal)))
    return {ids[i] for i in np.unique(owner[hit])}


def _constants_out_of_range(model: ir.Model, fmt) -> Iterator[Hazard]:
    seen = set()
    candidates = _screen_constants(model, fmt)
    for graph in model.graphs():
        for value in graph.initializers.values():
            if id(value) in seen or id(value) not in candidates:
                continue
            seen.add(id(value))
            a = small_constant(value)
            if a is None or a.size == 0:
                continue
            finite = a[np.isfinite(a)]
            big = int(np.sum(np.abs(finite) > fmt.max_finite))
            tiny = int(np.sum((finite != 0) & (np.abs(finite) < fmt.min_subnormal)))
            nonzero = int(np.count_nonzero(finite))
            if tiny and a.size > FLUSH_SMALL_TENSOR and tiny < FLUSH_FRACTION * nonzero:
                tiny = 0  # a few weights among many flushing to 0 change nothing measurable
            if not big and not tiny:
                continue
            users = [u.node for u in value.uses()]
            node = users[0] if users else None
            parts = []
            if big:
                parts.append(f"{big} value(s) above {fmt.name} max {fmt.max_finite:g} "
                             f"(largest {float(np.max(np.abs(finite))):.3g})")
            if tiny:
                parts.append(f"{tiny} non-zero value(s) below {fmt.min_subnormal:.3g} flush to 0")
            yield Hazard(
                "TC301", (node.name or "") if node else (value.name or ""), node.op_type if node else "",
                f"constant {value.name!r}: " + "; ".join(parts),
                {"tensor": value.name, "size": int(a.size), "above_max": big, "flush_to_zero": tiny},
            )


def _norm_epsilon(node: ir.Node, fmt) -> Iterator[Hazard]:
    if node.op_type != "Add" or not node.outputs:
        return
    if not any(u.node.op_type in ("Sqrt", "Reciprocal", "Div", "Pow") for u in node.outputs[0].uses()):
        return
    for value in node.inputs:
        a = small_constant(value)
        if a is None or a.size != 1:
            continue
        eps = float(a.reshape(-1)[0])
        if 0 < abs(eps) < fmt.min_normal:
            yield Hazard(
                "TC302", node.name or "", node.op_type,
                f"norm epsilon {eps:.3g} is below the smallest normal {fmt.name} value "
                f"{fmt.min_normal:.3g}" + (" and flushes to 0" if abs(eps) < fmt.min_subnormal else ""),
                {"epsilon": eps, "min_normal": fmt.min_normal},
            )


def _no_kernel(node: ir.Node, table: specs.KernelTable, dtype: str, provider: str) -> Iterator[Hazard]:
    touches_float = any(v is not None and v.dtype == ir.DataType.FLOAT for v in (*node.inputs, *node.outputs))
    if not touches_float or node.op_type in ("Constant",) or table.has_kernel(node.domain, node.op_type):
        return
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
    yield Hazard(
        "TC303", node.name or "", node.op_type,
        f"{op} has no {dtype} kernel on {provider}: it stays float32 with Casts around it",
        {"provider": provider, "dtype": dtype, "source": table.source},
    )


def _reduced_elements(node: ir.Node) -> int | None:
    x = node.inputs[0] if node.inputs else None
    if x is None or x.shape is None:
        return None
    dims = list(x.shape)
    if node.op_type == "Softmax":
        axis = node.attributes.get_int("axis", -1)
        axes = [axis]
    else:
        attr = node.attributes.get("axes")
        if attr is not None:
            axes = list(attr.value)
        elif len(node.inputs) > 1 and node.inputs[1] is not None:
            values = small_ints(node.inputs[1])
            if values is None:
                return None  # axes computed at run time, or stored in external data (never read)
            axes = values
        else:
            axes = list(range(len(dims)))
    total = 1
    for a in axes:
        d = dims[a] if -len(dims) <= a < len(dims) else None
        if not isinstance(d, int):
            return None
        total *= d
    return total


def _overflow_prone(node: ir.Node) -> Iterator[Hazard]:
    if node.op_type not in _OVERFLOW_OPS or node.domain not in ("", "ai.onnx"):
        return
    if not node.inputs or node.inputs[0] is None or node.inputs[0].dtype != ir.DataType.FLOAT:
        return
    if node.op_type == "Pow":
        a = small_constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if a is None or a.size != 1 or float(a.reshape(-1)[0]) < 2:
            return
        exp = float(a.reshape(-1)[0])
        yield Hazard("TC304", node.name or "", node.op_type,
                     f"Pow(x, {exp:g}) overflows FP16 once |x| > {65504 ** (1 / exp):.3g}",
                     {"exponent": exp})
        return
    if node.op_type == "Exp":
        yield Hazard("TC304", node.name or "", node.op_type,
                     "Exp overflows FP16 for inputs above 11.1", {})
        return
    n = _reduced_elements(node)
    if n is None or n < LONG_REDUCTION:
        return
    what = "Softmax (exp/sum)" if node.op_type == "Softmax" else node.op_type
    yield Hazard("TC304", node.name or "", node.op_type,
                 f"{what} over {n} elements is likely to overflow or lose precision in FP16",
                 {"reduced_elements": n})
