"""Checking that a rewritten model computes what the original computed.

``verify(original, rewritten)``:

1. the ONNX checker accepts the rewritten model;
2. graph inputs and outputs keep their names, element types and shapes (symbolic dims by name);
3. onnxruntime (CPU provider) gives the same outputs on random inputs (two seeds) and on the
   user's inputs (``.npz``), element by element: ``|got - ref| <= atol + rtol * (|ref| + scale)``
   where ``scale`` is the output's typical magnitude (the 90th percentile of ``|ref|``), so no
   single large value can hide errors elsewhere (:func:`compare_elementwise`). The default tolerance follows
   each output's type (:data:`DEFAULT_TOLERANCE`): padding adds exact zeros, but a kernel may
   sum in another order once a dim changes.

Random inputs: floats from N(0, 1); integer inputs that index a table (Gather indices, also
through Cast/Reshape/Unsqueeze...) over the table's whole valid range ``[-V, V-1]``, negatives
and both ends included (:func:`index_ranges`); other integers and booleans 0/1 (masks).

``com.microsoft.NhwcConv`` has no CPU kernel: a model containing it is checked through an
equivalent graph where each NhwcConv becomes Transpose-Conv-Transpose
(:func:`tclint.passes.layout.expand_nhwc_conv`).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from tclint.errors import InputError
from tclint.runtime import session_options

logger = logging.getLogger(__name__)

#: Above this many weight bytes a model goes to onnxruntime through a temporary file.
_IN_MEMORY_LIMIT = 1 << 30

Feeds = dict[str, np.ndarray]

#: (rtol, atol) per output element type: about 2 units in the last place of the type.
DEFAULT_TOLERANCE = {
    np.dtype(np.float64): (1e-9, 1e-12),
    np.dtype(np.float32): (1e-5, 1e-6),
    np.dtype(np.float16): (2e-3, 1e-4),
}
_BF16_TOLERANCE = (1.6e-2, 1e-3)

#: Random verification inputs larger than this (elements, 128 MB of float32) are refused.
_MAX_RANDOM_ELEMENTS = 1 << 25


#: The output's typical magnitude for the absolute floor: this percentile of |reference|
#: (robust to up to 10% of outliers; the maximum would let one large value hide the rest).
SCALE_PERCENTILE = 90


@dataclass(frozen=True)
class OutputDiff:
    name: str
    max_abs: float
    max_rel: float  # max over elements of |got - ref| / (|ref| + scale)
    ok: bool

    def to_dict(self) -> dict:
        return {"name": self.name, "max_abs": self.max_abs, "max_rel": self.max_rel, "ok": self.ok}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checker: bool
    signature: bool
    outputs: tuple[OutputDiff, ...]
    samples: int
    rtol: float | None  # None: by output type (DEFAULT_TOLERANCE)
    atol: float | None
    message: str  # one line: "ok" or what failed
    seconds: float

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checker": self.checker, "signature": self.signature,
                "samples": self.samples, "rtol": self.rtol, "atol": self.atol,
                "message": self.message, "seconds": round(self.seconds, 3),
                "outputs": [o.to_dict() for o in self.outputs]}


def random_tensor(rng: np.random.Generator, shape, dtype, *, index_range: int | None = None,
                  sample: int = 0, negative: bool = True) -> np.ndarray:
    """Random data for one input: standard normal floats, 0/1 integers and booleans (valid as
    indices and masks). ``index_range=V``: ids into a table of V rows, uniform over the whole
    valid range [-V, V-1] (``negative=False``: [0, V-1]), with -1, -V, V-1 and 0 placed first
    (rotated by ``sample``) so even a one-element input sees the ends."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if index_range is None or index_range < 1 or not np.issubdtype(dtype, np.integer):
        return rng.integers(0, 2, shape).astype(dtype)
    v = int(min(index_range, np.iinfo(dtype).max))
    negative = negative and np.issubdtype(dtype, np.signedinteger)
    out = rng.integers(-v if negative else 0, v, shape, endpoint=False).astype(dtype)
    ends = [-1, -v, v - 1, 0] if negative else [v - 1, 0]
    flat = out.reshape(-1)
    for j in range(min(len(ends), flat.size)):
        flat[j] = ends[(sample + j) % len(ends)]
    return out


#: Ops a table index passes through unchanged (its values), on the way to a Gather.
_INDEX_PASSTHROUGH = frozenset({"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten",
                                "Expand", "Transpose", "Slice", "Concat"})


def index_ranges(graph: onnx.GraphProto) -> dict[str, int]:
    """Graph inputs whose values index a table (input 1 of Gather/GatherElements, directly or
    through value-preserving ops) -> the smallest table size they index (the dim at the Gather's
    axis, from an initializer or a declared static shape)."""
    dims: dict[str, list] = {}
    for t in graph.initializer:
        dims[t.name] = list(t.dims)
    for vi in [*graph.input, *graph.value_info]:
        if vi.name not in dims and vi.type.tensor_type.HasField("shape"):
            dims[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                             for d in vi.type.tensor_type.shape.dim]
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value" and a.HasField("t"):
                    dims[n.output[0]] = list(a.t.dims)
    users: dict[str, list] = {}
    for n in graph.node:
        for i, name in enumerate(n.input):
            users.setdefault(name, []).append((n, i))
    inits = {t.name for t in graph.initializer}
    out: dict[str, int] = {}
    for v in graph.input:
        if v.name in inits:
            continue
        sizes = []
        frontier, seen = [v.name], set()
        while frontier:
            name = frontier.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, i in users.get(name, ()):
                if node.domain in ("", "ai.onnx") and node.op_type in ("Gather", "GatherElements") and i == 1:
                    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                    shape = dims.get(node.input[0])
                    if shape and -len(shape) <= axis < len(shape) and shape[axis]:
                        sizes.append(int(shape[axis]))
                elif node.op_type in _INDEX_PASSTHROUGH and i == 0:
                    frontier.extend(node.output)
        if sizes:
            out[v.name] = min(sizes)
    return out


def compare_elementwise(ref: np.ndarray, got: np.ndarray, rtol: float, atol: float) -> tuple[bool, float, float]:
    """Element-wise: ``|got - ref| <= atol + rtol * (|ref| + scale)``, ``scale`` the output's
    typical magnitude (:data:`SCALE_PERCENTILE` of ``|ref|``). Non-finite values must match
    exactly. Returns (ok, max abs difference, max normalised difference)."""
    r64, g64 = ref.astype(np.float64), got.astype(np.float64)
    finite = np.isfinite(r64)
    if not np.array_equal(finite, np.isfinite(g64)) or not np.array_equal(
            r64[~finite], g64[~finite], equal_nan=True):
        return False, float("inf"), float("inf")
    if not finite.any():
        return True, 0.0, 0.0
    r, g = r64[finite], g64[finite]
    mag = np.abs(r)
    scale = float(np.percentile(mag, SCALE_PERCENTILE))
    diff = np.abs(g - r)
    ok = bool(np.all(diff <= atol + rtol * (mag + scale)))
    denom = mag + scale
    rel = diff / np.where(denom > 0, denom, 1.0)
    return ok, float(diff.max()), float(rel.max())


def verify(
    original: str | os.PathLike | ir.Model,
    rewritten: ir.Model,
    *,
    inputs: str | os.PathLike | Sequence[Feeds] | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    random_samples: int = 2,
    compare: bool = True,
    nhwc_inputs: Sequence[str] = (),
) -> VerifyResult:
    """Compare ``rewritten`` with ``original`` (a path, never modified, or an ``ir.Model``).

    Random inputs bind symbolic dims from ``dims`` (others become 1) and whole shapes from
    ``input_shapes``. ``compare=False`` checks only the checker and the signature (for a
    rewrite that changed no node). ``nhwc_inputs``: 4-D inputs the rewrite declared NHWC on
    purpose (``--nhwc-inputs``): their shapes are compared permuted, and the rewritten model
    gets the same data transposed. Raises :class:`InputError` for unreadable ``inputs`` and
    when the original model cannot run in onnxruntime.
    """
    start = time.perf_counter()
    result = dict(checker=False, signature=False, outputs=(), samples=0, rtol=rtol, atol=atol)

    def done(ok: bool, message: str, **kw) -> VerifyResult:
        result.update(kw)
        return VerifyResult(ok=ok, message=message, seconds=time.perf_counter() - start, **result)

    with tempfile.TemporaryDirectory(prefix="tclint-verify-") as tmp:
        new_proto, new_src = _proto_and_source(rewritten, Path(tmp) / "rewritten.onnx")
        orig_model = original if isinstance(original, ir.Model) else None
        if orig_model is None:
            orig_proto = onnx.load(str(original), load_external_data=False)
            orig_src = str(original)
        else:
            orig_proto, orig_src = _proto_and_source(orig_model, Path(tmp) / "original.onnx")
        problem = _checker_problem(new_src if isinstance(new_src, str) else new_proto)
        if problem and not _checker_problem(orig_src if isinstance(orig_src, str) else orig_proto):
            return done(False, f"ONNX checker: {problem}")
        if problem:
            logger.info("the original model fails the ONNX checker too: %s", problem)
        result["checker"] = not problem
        problem = _signature_problem(orig_proto.graph, new_proto.graph, set(nhwc_inputs))
        if problem:
            return done(False, problem)
        result["signature"] = True
        if not compare:
            return done(True, "ok: no node changed (checker and signature only)")

        if _has_nhwc_conv(new_proto):
            new_proto, new_src = _expand_nhwc(rewritten, Path(tmp) / "expanded.onnx")

        try:
            ref_sess = _session(orig_src)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"the original model does not run in onnxruntime: {_first_line(exc)}") from None
        feeds = _runnable_feeds(ref_sess, orig_proto.graph, inputs, dims or {}, input_shapes or {},
                                random_samples)
        try:
            new_sess = _session(new_src)
        except Exception as exc:  # noqa: BLE001
            return done(False, f"the rewritten model does not load in onnxruntime: {_first_line(exc)}")
        names = [o.name for o in ref_sess.get_outputs()]
        worst: dict[str, list[float]] = {n: [0.0, 0.0, 0.0] for n in names}  # abs, scale, ok
        ok_all = True
        for feed in feeds:
            try:
                ref = ref_sess.run(None, _only(ref_sess, feed))
            except Exception as exc:  # noqa: BLE001
                raise InputError(f"the original model fails on the inputs: {_first_line(exc)}") from None
            try:
                got = new_sess.run(names, _only(new_sess, _to_nhwc(feed, nhwc_inputs)))
            except Exception as exc:  # noqa: BLE001
                return done(False, f"the rewritten model fails in onnxruntime: {_first_line(exc)}")
            for name, r, g in zip(names, ref, got):
                r, g = np.asarray(r), np.asarray(g)
                if r.shape != g.shape:
                    return done(False, f"output {name!r}: shape {list(g.shape)} != {list(r.shape)}")
                if r.dtype.kind not in "fc":
                    if not np.array_equal(r, g):
                        worst[name][2] = 1.0
                        worst[name][0] = max(worst[name][0], float("inf"))
                        ok_all = False
                    continue
                rt, at = _tolerance(r.dtype, rtol, atol)
                ok, diff, rel = compare_elementwise(r, g, rt, at)
                w = worst[name]
                w[0] = max(w[0], diff)
                w[1] = max(w[1], rel)
                if not ok:
                    w[2] = 1.0
                    ok_all = False
        diffs = tuple(OutputDiff(n, w[0], w[1], not w[2]) for n, w in worst.items())
        result["samples"] = len(feeds)
        if ok_all:
            return done(True, f"ok: {len(names)} outputs equal on {len(feeds)} inputs "
                              f"(max rel {max((d.max_rel for d in diffs), default=0):.2g})",
                        outputs=diffs)
        bad = max((d for d in diffs if not d.ok), key=lambda d: d.max_rel)
        return done(False, f"output {bad.name!r} differs: max abs {bad.max_abs:.3g}, max rel "
                           f"{bad.max_rel:.3g} ({_tolerance_text(rtol, atol)})", outputs=diffs)


# --------------------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def _tolerance(dtype: np.dtype, rtol: float | None, atol: float | None) -> tuple[float, float]:
    default = DEFAULT_TOLERANCE.get(np.dtype(dtype))
    if default is None:
        default = _BF16_TOLERANCE if "bfloat16" in str(dtype) else DEFAULT_TOLERANCE[np.dtype(np.float32)]
    return (default[0] if rtol is None else rtol, default[1] if atol is None else atol)


def _tolerance_text(rtol: float | None, atol: float | None) -> str:
    if rtol is None and atol is None:
        return ("per element, tolerance by output type: rtol 1e-5 for float32, 2e-3 for "
                "float16, of |value| + the output's typical magnitude")
    return f"rtol {'auto' if rtol is None else format(rtol, 'g')}, atol {'auto' if atol is None else format(atol, 'g')}"


def _checker_problem(model) -> str:
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        return _first_line(exc)
    return ""


def _weight_bytes(model: ir.Model) -> int:
    total = 0
    for v in model.graph.initializers.values():
        try:
            total += v.const_value.nbytes if v.const_value is not None else 0
        except (TypeError, ValueError):  # an undefined element type: the checker reports it
            continue
    return total


def _proto_and_source(model: ir.Model, path: Path) -> tuple[onnx.ModelProto, str | bytes]:
    """The model as a proto (for the checker and signature) and what onnxruntime should load."""
    external = any(isinstance(v.const_value, ir.ExternalTensor)
                   for v in model.graph.initializers.values())
    if external or _weight_bytes(model) > _IN_MEMORY_LIMIT:
        # external tensors are resolved against the model's folder: give ORT a real file
        ir.save(model, path, external_data=path.name + ".data")
        return onnx.load(str(path), load_external_data=False), str(path)
    proto = ir.serde.serialize_model(model)
    return proto, proto.SerializeToString()


def _has_nhwc_conv(proto: onnx.ModelProto) -> bool:
    return any(n.op_type == "NhwcConv" and n.domain == "com.microsoft" for n in proto.graph.node)


def _expand_nhwc(model: ir.Model, path: Path) -> tuple[onnx.ModelProto, str | bytes]:
    try:
        from tclint.passes.layout import expand_nhwc_conv
    except ImportError:
        raise InputError("the model contains com.microsoft.NhwcConv (no CPU kernel) and "
                         "tclint.passes.layout is not available to expand it") from None
    copy = model.clone()  # keeps external tensors pointing at their files (a proto round trip would not)
    expanded = expand_nhwc_conv(copy)
    return _proto_and_source(expanded, path)


def _type_key(vi: onnx.ValueInfoProto):
    t = vi.type.tensor_type
    dims = None
    if t.HasField("shape"):
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                     for d in t.shape.dim)
    return t.elem_type, dims


def _to_nhwc(feed: Feeds, names: Sequence[str]) -> Feeds:
    if not names:
        return feed
    return {k: (np.ascontiguousarray(v.transpose(0, 2, 3, 1)) if k in names and v.ndim == 4 else v)
            for k, v in feed.items()}


def _signature_problem(orig: onnx.GraphProto, new: onnx.GraphProto, nhwc: set[str] = frozenset()) -> str:
    inits = {i.name for i in orig.initializer}
    new_inits = {i.name for i in new.initializer}
    a = [(v.name, _type_key(v)) for v in orig.input if v.name not in inits]
    b = [(v.name, _type_key(v)) for v in new.input if v.name not in new_inits]
    if [n for n, _ in a] != [n for n, _ in b]:
        return f"graph inputs changed: {[n for n, _ in a]} -> {[n for n, _ in b]}"
    for (name, ta), (_, tb) in zip(a, b):
        if name in nhwc and ta[1] is not None and len(ta[1]) == 4:
            ta = (ta[0], (ta[1][0], ta[1][2], ta[1][3], ta[1][1]))
        if ta != tb:
            return f"graph input {name!r} changed type/shape: {ta} -> {tb}"
    oa = [(v.name, _type_key(v)) for v in orig.output]
    ob = [(v.name, _type_key(v)) for v in new.output]
    if [n for n, _ in oa] != [n for n, _ in ob]:
        return f"graph outputs changed: {[n for n, _ in oa]} -> {[n for n, _ in ob]}"
    for (name, ta), (_, tb) in zip(oa, ob):
        if ta[0] != tb[0] or (ta[1] is not None and tb[1] is not None and ta[1] != tb[1]):
            return f"graph output {name!r} changed type/shape: {ta} -> {tb}"
    return ""


_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.DOUBLE: np.float64,
       onnx.TensorProto.FLOAT16: np.float16, onnx.TensorProto.INT64: np.int64,
       onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT8: np.int8,
       onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.BOOL: np.bool_}


#: How random integer index inputs are drawn, in the order tried: the whole valid range of
#: the tables they index; without negatives (a model that also feeds them to an op that wants
#: non-negative values); 0/1 (a model whose ids are not free, e.g. a fixed vocabulary slice).
INDEX_MODES = ("signed", "unsigned", "binary")


def _feeds(graph: onnx.GraphProto, inputs, dims: Mapping[str, int],
           input_shapes: Mapping[str, Sequence[int]], samples: int,
           index_mode: str = "signed") -> list[Feeds]:
    inits = {i.name for i in graph.initializer}
    real = [v for v in graph.input if v.name not in inits]
    tables = index_ranges(graph) if index_mode != "binary" else {}
    feeds: list[Feeds] = []
    for seed in range(samples):
        rng = np.random.default_rng(seed)
        feed = {}
        for v in real:
            elem, shape = _type_key(v)
            if v.name in input_shapes:
                shape = tuple(input_shapes[v.name])
            shape = tuple(d if isinstance(d, int) and d >= 0 else int(dims.get(d, 1)) for d in (shape or ()))
            if any(d < 0 for d in shape) or math.prod(shape) > _MAX_RANDOM_ELEMENTS:
                raise InputError(f"input {v.name!r} of shape {list(shape)} is too large to verify "
                                 "on random data; pass --inputs (or bind smaller dims)")
            dtype = _NP.get(elem)
            if dtype is None:
                raise InputError(f"cannot make random data for input {v.name!r} "
                                 f"(type {onnx.TensorProto.DataType.Name(elem)}); pass --inputs")
            feed[v.name] = random_tensor(rng, shape, dtype, index_range=tables.get(v.name),
                                         sample=seed, negative=index_mode == "signed")
        feeds.append(feed)
    if inputs is not None:
        feeds.extend(_user_feeds(real, inputs))
    return feeds


def _runnable_feeds(ref_sess, graph: onnx.GraphProto, inputs, dims, input_shapes,
                    samples: int) -> list[Feeds]:
    """Random feeds the original model accepts, index inputs over the widest range it runs on
    (:data:`INDEX_MODES`); the user's own inputs are kept as given."""
    if not index_ranges(graph):
        return _feeds(graph, inputs, dims, input_shapes, samples)
    for mode in INDEX_MODES:
        random_feeds = _feeds(graph, None, dims, input_shapes, samples, mode)
        try:
            for feed in random_feeds:
                ref_sess.run(None, _only(ref_sess, feed))
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
            logger.info("the original model does not run on %s index inputs: %s", mode, _first_line(exc))
            continue
        if mode != "signed":
            logger.info("index inputs drawn %s: the original model rejects negative ids", mode)
        return random_feeds + (_user_feeds([v for v in graph.input if v.name not in
                                            {i.name for i in graph.initializer}], inputs)
                               if inputs is not None else [])
    return _feeds(graph, inputs, dims, input_shapes, samples, "binary")


def _user_feeds(real: list[onnx.ValueInfoProto], inputs) -> list[Feeds]:
    if not isinstance(inputs, (str, os.PathLike)):
        return [dict(f) for f in inputs]
    try:
        with np.load(inputs, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read inputs {inputs}: {_first_line(exc)}") from None
    names = {v.name for v in real}
    unknown, missing = sorted(set(arrays) - names), sorted(names - set(arrays))
    if unknown or missing:
        raise InputError(f"{inputs}: arrays must match the graph inputs; unknown: "
                         f"{unknown or '-'}, missing: {missing or '-'}")
    out: list[Feeds] = []
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in real}
    counts = {arrays[n].shape[0] if arrays[n].ndim == ranks[n] + 1 else None for n in names}
    if len(counts) != 1:
        raise InputError(f"{inputs}: inputs disagree on the number of samples")
    n = counts.pop()
    types = {v.name: _NP.get(v.type.tensor_type.elem_type) for v in real}

    def cast(name, a):
        return np.asarray(a, dtype=types[name]) if types[name] is not None else a

    if n is None:
        return [{k: cast(k, a) for k, a in arrays.items()}]
    for i in range(n):
        out.append({k: cast(k, a[i]) for k, a in arrays.items()})
    return out


#: Graph optimizers disabled in every onnxruntime CPU session tclint creates. onnxruntime 1.31's
#: CPU provider segfaults creating a session once MatmulTransposeFusion has fused a
#: Transpose(perm [1, 0, 2]) into an FP16 MatMul (a FusedMatMul with transBatchA): every FP16 ViT
#: (torchvision's attention transposes to sequence-first). Found on tests/data/exports/vit_dynamo
#: converted to FP16; the fusion is a CPU-provider rewrite, so disabling it changes no result.
CPU_DISABLED_OPTIMIZERS = ("MatmulTransposeFusion",)


def cpu_session(source, options=None):
    """An onnxruntime CPU session (see :data:`CPU_DISABLED_OPTIMIZERS`)."""
    import onnxruntime as ort

    if options is None:
        options = session_options()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(CPU_DISABLED_OPTIMIZERS))


def _session(source: str | bytes):
    return cpu_session(source)


def _only(session, feed: Feeds) -> Feeds:
    names = {i.name for i in session.get_inputs()}
    return {k: v for k, v in feed.items() if k in names}
