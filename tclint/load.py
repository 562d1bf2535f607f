"""Loading models and resolving their shapes, without reading weights.

``load_model`` reads structure only: onnx-ir keeps external tensors lazy (``ExternalTensor.shape``
does no I/O), so a model with tens of GB of external weights loads in milliseconds, and a model
whose external data file is missing still loads (``check`` needs only dims).

``resolve_shapes`` binds user-given symbolic dims, then runs ONNX shape inference with data
propagation, then onnxruntime's symbolic shape inference where ONNX's stops (com.microsoft ops,
Reshape to computed shapes). Both see the model with its large initializers turned into typed
graph inputs, so they never see weight bytes.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnx_ir as ir

from tclint.errors import InputError, UsageError
from tclint.io import set_base_dir

logger = logging.getLogger(__name__)

#: Initializers larger than this are hidden from the proto-based shape inference tools.
_SMALL_TENSOR_BYTES = 1024


# --------------------------------------------------------------------------------------------
# Parsing the user's dim bindings
# --------------------------------------------------------------------------------------------
_SHAPE_RE = re.compile(r"^\s*(?P<name>.+?)\s*:\s*(?P<shape>\[?[\d\s,x\*]*\]?)\s*$")


def parse_dim(text: str) -> tuple[str, int]:
    """``batch=8`` -> ("batch", 8)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--dim expects NAME=VALUE, got {text!r}")
    try:
        number = int(value.strip())
    except ValueError:
        raise UsageError(f"--dim {text!r}: {value.strip()!r} is not an integer") from None
    if number < 1:
        raise UsageError(f"--dim {text!r}: dims must be positive")
    return name.strip(), number


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Accept the three spellings users know: ``image:1x3x224x224`` (trtexec),
    ``image:[1,3,224,224]`` (polygraphy) and ``image:1,3,224,224`` (onnxsim)."""
    # The name itself may contain ':' (e.g. "input:0" from TF exports): split at the last one.
    name, sep, shape = text.rpartition(":")
    if not sep or not name:
        raise UsageError(f"--input-shape expects NAME:SHAPE (e.g. image:1x3x224x224), got {text!r}")
    body = shape.strip()
    if body.startswith("[") and body.endswith("]"):
        body = body[1:-1]
    parts = [p for p in re.split(r"[x,\s]+", body) if p]
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: shape must be integers, e.g. 1x3x224x224") from None
    if any(d < 0 for d in dims):
        raise UsageError(f"--input-shape {text!r}: dims must not be negative")
    return name.strip(), dims


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load_model(path: str | os.PathLike) -> ir.Model:
    """Load a model's structure with lazy weights. Raises InputError with a one-line reason."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p}: is a directory, not an ONNX file")
    if not stat.S_ISREG(st.st_mode):
        # reading a FIFO blocks until someone writes to it; a device may never end
        raise InputError(f"{p}: not a regular file (a FIFO, device or socket), not an ONNX file")
    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError as exc:
        raise InputError(f"{p}: cannot read: {exc.strerror}") from None
    if not head:
        raise InputError(f"{p}: empty file, not an ONNX model")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError / RuntimeWarning variants
        raise InputError(f"{p}: not a valid ONNX model (truncated or not ONNX: {_first_line(exc)})") from None
    _validate_proto(p, proto)
    sparse = _take_sparse_initializers(p, proto)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as exc:
        raise InputError(f"{p}: malformed ONNX model: {_first_line(exc)}") from None
    # every external tensor (initializers, Constant tensors, functions) resolves against the
    # model's folder, never the current directory
    set_base_dir(model, str(p.resolve().parent))
    _attach_sparse_initializers(p, model, sparse)
    _check_opsets(p, model)
    _check_function_calls(p, model)
    return model


def _check_function_calls(path: Path, model: ir.Model) -> None:
    """Model-local functions must not call themselves, directly or through others (the ONNX
    checker rejects it; expanding or padding one would never end)."""
    functions = {(f.domain, f.name): f for f in model.functions.values()}
    if not functions:
        return
    calls: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for key, fn in functions.items():
        calls[key] = {(n.domain, n.op_type) for n in ir.traversal.RecursiveGraphIterator(fn)
                      if (n.domain, n.op_type) in functions}
    state: dict[tuple[str, str], int] = {}  # 1: on the current path, 2: done

    def name(key):
        return f"{key[0]}::{key[1]}" if key[0] else key[1]

    for root in calls:
        if state.get(root):
            continue
        stack = [(root, iter(sorted(calls[root])))]
        path_keys = [root]
        state[root] = 1
        while stack:
            key, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[key] = 2
                stack.pop()
                path_keys.pop()
                continue
            if state.get(nxt) == 1:
                cycle = path_keys[path_keys.index(nxt):] + [nxt]
                raise InputError(f"{path}: model-local function {name(nxt)} calls itself "
                                 f"({' -> '.join(map(name, cycle))}); ONNX functions cannot be recursive")
            if not state.get(nxt):
                state[nxt] = 1
                stack.append((nxt, iter(sorted(calls[nxt]))))
                path_keys.append(nxt)


# --------------------------------------------------------------------------------------------
# sparse_initializer: onnx-ir reads only dense initializers
# --------------------------------------------------------------------------------------------
#: A sparse initializer is made dense (for fix and convert, which rewrite weights) up to this size.
SPARSE_DENSE_LIMIT_BYTES = 1 << 31


def _take_sparse_initializers(path: Path, proto: onnx.ModelProto) -> list[onnx.SparseTensorProto]:
    """Move the main graph's sparse initializers out of the proto, leaving a dense placeholder
    (name, type, dims, no data) for each, so that the IR sees the weight and its shape."""
    for sub in _subgraphs(proto.graph):
        if sub.sparse_initializer:
            raise InputError(f"{path}: sparse_initializer inside a subgraph is not supported")
    sparse = list(proto.graph.sparse_initializer)
    if not sparse:
        return []
    names = {t.name for t in proto.graph.initializer}
    for sp in sparse:
        name = sp.values.name
        if not name or name in names:
            raise InputError(f"{path}: sparse_initializer {name!r} has no name or repeats a dense one")
        if any(d < 0 for d in sp.dims):
            raise InputError(f"{path}: sparse_initializer {name!r} has a negative dim {list(sp.dims)}")
        try:
            ir.DataType(sp.values.data_type)
        except ValueError:
            raise InputError(f"{path}: sparse_initializer {name!r} has an unknown data type") from None
        placeholder = proto.graph.initializer.add()
        placeholder.name, placeholder.data_type = name, sp.values.data_type
        placeholder.dims.extend(sp.dims)
    del proto.graph.sparse_initializer[:]
    return sparse


def _subgraphs(graph: onnx.GraphProto):
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else (
                list(attr.graphs) if attr.type == onnx.AttributeProto.GRAPHS else [])
            for sub in subs:
                yield sub
                yield from _subgraphs(sub)


class SparseInitializer(ir.LazyTensor):
    """A sparse initializer seen as the dense tensor it stands for; its values are made dense
    only when read (fix, convert, the verification); ``check`` needs its dims only.
    ``reads_files``: its values are in external data (the hazard rules never read those)."""

    def __init__(self, path: Path, sp: onnx.SparseTensorProto):
        self.reads_files = any(t.data_location == onnx.TensorProto.EXTERNAL for t in (sp.values, sp.indices))
        super().__init__(lambda: _densify(path, sp), ir.DataType(sp.values.data_type),
                         ir.Shape(list(sp.dims)), cache=True, name=sp.values.name)


def _attach_sparse_initializers(path: Path, model: ir.Model, sparse) -> None:
    for sp in sparse:
        value = model.graph.initializers[sp.values.name]
        value.const_value = SparseInitializer(path, sp)


def _densify(path: Path, sp: onnx.SparseTensorProto) -> ir.Tensor:
    import numpy as np
    from onnx import numpy_helper

    name = sp.values.name
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in (sp.values, sp.indices)):
        raise InputError(f"{path}: sparse_initializer {name!r} keeps its values in external data, "
                         "which tclint does not read; store it dense")
    dims = tuple(sp.dims)
    n = math.prod(dims)
    dtype = ir.DataType(sp.values.data_type)
    if n * max(dtype.itemsize, 1) > SPARSE_DENSE_LIMIT_BYTES:
        raise InputError(f"{path}: sparse_initializer {name!r} of dims {list(dims)} is too large "
                         "to make dense")
    try:
        values = numpy_helper.to_array(sp.values).reshape(-1)
        indices = numpy_helper.to_array(sp.indices).astype(np.int64)
    except Exception as exc:  # noqa: BLE001 - corrupt tensors
        raise InputError(f"{path}: sparse_initializer {name!r} cannot be read: {_first_line(exc)}") from None
    if indices.ndim == 2 and indices.shape[1] == len(dims) and len(dims) > 0:
        if np.any(indices < 0) or np.any(indices >= np.asarray(dims)):
            raise InputError(f"{path}: sparse_initializer {name!r} has indices outside its dims")
        flat = np.ravel_multi_index(tuple(indices.T), dims) if len(indices) else indices.reshape(-1)
    elif indices.ndim == 1:
        flat = indices
    else:
        raise InputError(f"{path}: sparse_initializer {name!r} has indices of shape {list(indices.shape)}")
    if len(flat) != len(values) or (len(flat) and (flat.min() < 0 or flat.max() >= n)):
        raise InputError(f"{path}: sparse_initializer {name!r}: {len(values)} values, {len(flat)} "
                         f"indices, some outside its {n} elements")
    dense = np.zeros(n, dtype=values.dtype)
    dense[flat] = values
    return ir.Tensor(dense.reshape(dims), name=name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _validate_proto(path: Path, proto: onnx.ModelProto) -> None:
    """Protobuf happily parses random bytes into an empty message: insist on a real model."""
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        if not proto.opset_import and not proto.ir_version:
            raise InputError(f"{path}: not an ONNX model (no graph, no opset)")
        raise InputError(f"{path}: the model has an empty graph")
    if not proto.graph.output:
        raise InputError(f"{path}: the graph has no outputs")
    for vi in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value < 0:
                    # some exporters write -1 for "dynamic": treat any negative dim as unknown
                    logger.info("%s: dim %d of %r treated as unknown", path, d.dim_value, vi.name)
                    d.ClearField("dim_value")
    for tensor in proto.graph.initializer:
        try:
            ir.DataType(tensor.data_type)
        except ValueError:
            raise InputError(f"{path}: initializer {tensor.name!r} has an unknown data type "
                             f"{tensor.data_type}") from None
        if any(d < 0 for d in tensor.dims):
            raise InputError(f"{path}: initializer {tensor.name!r} has a negative dim {list(tensor.dims)}")
    # proto2 strings that are not valid UTF-8 come back as bytes: the file is corrupt
    nodes = [n for f in proto.functions for n in _proto_nodes(f.node)]
    for node in [*_proto_nodes(proto.graph.node), *nodes]:
        if not all(isinstance(t, str) for t in (node.op_type, node.domain, node.name, *node.input, *node.output)):
            raise InputError(f"{path}: a node has a name or op type that is not valid UTF-8 (corrupt file)")
    seen: set[str] = set()
    for node in proto.graph.node:
        for out in node.output:
            if out and out in seen:
                raise InputError(f"{path}: value {out!r} is produced twice (duplicate name)")
            if out:
                seen.add(out)


def _proto_nodes(nodes):
    """Nodes of a graph and of every subgraph (If/Loop/Scan bodies) inside it."""
    for node in nodes:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _proto_nodes(attr.g.node)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _proto_nodes(sub.node)


def _check_opsets(path: Path, model: ir.Model) -> None:
    max_opset = onnx.defs.onnx_opset_version()
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    if opset is None:
        # A graph made only of custom-domain ops has no default opset; anything else needs one.
        if any(n.domain in ("", "ai.onnx") for n in model.graph.all_nodes()):
            raise InputError(f"{path}: the model does not import the default ONNX opset")
        return
    if opset > max_opset:
        raise InputError(
            f"{path}: opset {opset} is newer than this onnx ({onnx.__version__}) supports "
            f"(max {max_opset}); upgrade onnx"
        )
    if opset < 1:
        raise InputError(f"{path}: invalid opset version {opset}")
    functions = {(f.domain, f.name) for f in model.functions.values()}
    for node in model.graph.all_nodes():
        if node.domain not in ("", "ai.onnx") or (node.domain, node.op_type) in functions:
            continue
        try:
            onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            where = f" (node {node.name!r})" if node.name else ""
            raise InputError(
                f"{path}: unsupported op {node.op_type!r} in opset {opset}{where}"
            ) from None


# --------------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------------
@dataclass
class ShapeResolution:
    """What shape resolution did, for the report."""

    bound: dict[str, int] = field(default_factory=dict)
    unused_bindings: list[str] = field(default_factory=list)
    onnx_inference: bool = False
    symbolic_inference: bool = False
    notes: list[str] = field(default_factory=list)


def bind_inputs(
    model: ir.Model,
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Iterable[int]] | None = None,
) -> ShapeResolution:
    """Replace symbolic input dims by the user's values. Checks names, ranks and fixed dims."""
    dims = dict(dims or {})
    input_shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    result = ShapeResolution()
    inputs = {v.name: v for v in model.graph.inputs if not v.is_initializer()}
    for name, shape in input_shapes.items():
        if name not in inputs:
            known = ", ".join(sorted(inputs)) or "none"
            raise InputError(f"--input-shape names {name!r}, which is not a model input (inputs: {known})")
        value = inputs[name]
        if value.shape is not None:
            if len(value.shape) != len(shape):
                raise InputError(
                    f"--input-shape {name}: rank {len(shape)} given, the model declares rank "
                    f"{len(value.shape)} ({_fmt_shape(value.shape)})"
                )
            for declared, given in zip(value.shape, shape):
                if isinstance(declared, int) and declared != given:
                    raise InputError(
                        f"--input-shape {name}: {list(shape)} conflicts with the model's "
                        f"fixed shape {_fmt_shape(value.shape)}"
                    )
                if isinstance(declared, ir.SymbolicDim) and declared.value:
                    result.bound.setdefault(declared.value, given)
        value.shape = ir.Shape(list(shape))
    used: set[str] = set()
    for value in inputs.values():
        if value.shape is None:
            continue
        new_dims = []
        changed = False
        for d in value.shape:
            if isinstance(d, ir.SymbolicDim) and d.value in dims:
                new_dims.append(dims[d.value])
                used.add(d.value)
                changed = True
            else:
                new_dims.append(d)
        if changed:
            value.shape = ir.Shape(new_dims)
    result.bound.update({k: v for k, v in dims.items() if k in used})
    result.unused_bindings = sorted(set(dims) - used)
    for name in result.unused_bindings:
        logger.warning("--dim %s matches no symbolic input dim", name)
    return result


def _fmt_shape(shape: ir.Shape) -> str:
    return "[" + ",".join(str(d) if isinstance(d, int) else (d.value or "?") for d in shape) + "]"


def resolve_shapes(
    model: ir.Model,
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Iterable[int]] | None = None,
    symbolic: bool = True,
) -> ShapeResolution:
    """Bind inputs, then infer every value's shape in place (structure only, no weights)."""
    result = bind_inputs(model, dims=dims, input_shapes=input_shapes)
    result.onnx_inference = _onnx_inference(model, result)
    if symbolic and _has_unknown_dims(model):
        result.symbolic_inference = _ort_symbolic_inference(model, result)
    return result


def _has_unknown_dims(model: ir.Model) -> bool:
    for node in model.graph.all_nodes():
        for value in node.outputs:
            if value.shape is None:
                return True
            if any(not isinstance(d, int) for d in value.shape):
                return True
    return False


def _stripped_proto(model: ir.Model) -> onnx.ModelProto:
    """Serialize the model for the proto-based shape inference tools, without weight bytes and
    without anything they could read from disk: large or external initializers become typed
    graph inputs, and a Constant node whose tensor lives in external data becomes a typed input
    too (onnxruntime's symbolic inference would open its file relative to the current directory).

    The IR is not modified. Small inline initializers (the values shape inference needs) are
    copied as the TensorProtos they were read from, in one bulk copy: a model with a million tiny
    constants is not serialized one value at a time."""
    graph = model.graph
    listed = set(graph.inputs)  # a set: `in graph.inputs` is a list scan (quadratic on big graphs)
    hidden: list[ir.Value] = []
    keep: list[ir.Value] = []
    raws: list[onnx.TensorProto] = []
    bits: dict[int, int] = {}
    outputs = set(graph.outputs)
    for value in graph.initializers.values():
        if value not in listed and value not in outputs and not value.uses():
            continue  # read by nothing: shape inference has no use for it
        tensor = value.const_value
        raw = getattr(tensor, "raw", None) if isinstance(tensor, ir.serde.TensorProtoTensor) else None
        if isinstance(raw, onnx.TensorProto) and raw.data_location != onnx.TensorProto.EXTERNAL:
            # sized from the proto itself: TensorProtoTensor.shape builds a new Shape per call
            if raw.data_type not in bits:
                bits[raw.data_type] = _bitwidth(raw.data_type)
            if (math.prod(raw.dims) * bits[raw.data_type] + 7) // 8 > _SMALL_TENSOR_BYTES:
                hidden.append(value)
            elif raw.name == value.name and not tensor.metadata_props:
                raws.append(raw)
            else:
                keep.append(value)
        elif (tensor is None or isinstance(tensor, ir.ExternalTensor) or getattr(tensor, "reads_files", False)
              or _nbytes(tensor) > _SMALL_TENSOR_BYTES):
            hidden.append(value)
        else:
            keep.append(value)
    shapes = []
    for value in hidden:  # typed inputs: the tools need the dims, never the bytes
        tensor = value.const_value
        if tensor is not None and (value.shape is None or value.dtype is None):
            shapes.append((value, value.shape, value.dtype))
            if value.shape is None:
                value.shape = tensor.shape
            if value.dtype is None:
                value.dtype = tensor.dtype
    view = ir.GraphView([*graph.inputs, *(v for v in hidden if v not in listed)], graph.outputs,
                        nodes=graph, initializers=keep, name=graph.name,
                        opset_imports=graph.opset_imports, doc_string=graph.doc_string)
    model.graph = view  # type: ignore[assignment] - serialize_model reads .graph only
    try:
        proto = ir.serde.serialize_model(model)
    finally:
        model.graph = graph
        for value, shape, dtype in shapes:
            value.shape, value.dtype = shape, dtype
    proto.graph.initializer.extend(raws)
    _hide_external_constants(proto)
    return proto


def _bitwidth(data_type: int) -> int:
    try:
        return ir.DataType(data_type).bitwidth
    except (TypeError, ValueError):
        return 1 << 40  # unknown: hidden (its bytes cannot be sized)


def _nbytes(tensor) -> int:
    try:
        return tensor.nbytes
    except (TypeError, ValueError):
        return 1 << 62


def _hide_external_constants(proto: onnx.ModelProto) -> None:
    """Constant nodes (in the graph, its subgraphs and functions) whose tensor is in external
    data: in the main graph and subgraphs they become typed inputs of the main graph (subgraphs
    see outer-scope names); in functions their tensor loses its data (inference of that node
    then fails, which is reported as a note, instead of a file being opened)."""
    ext = onnx.TensorProto.EXTERNAL

    def external(node) -> onnx.TensorProto | None:
        if node.op_type != "Constant" or node.domain not in ("", "ai.onnx"):
            return None
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == ext:
                return attr.t
        return None

    def walk(graph: onnx.GraphProto) -> None:
        kept = []
        changed = False
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        walk(sub)
                elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == ext \
                        and external(node) is None:
                    _drop_data(attr.t)
            t = external(node)
            if t is not None and node.output:
                proto.graph.input.append(onnx.helper.make_tensor_value_info(
                    node.output[0], t.data_type, list(t.dims)))
                changed = True
                continue
            kept.append(node)
        if changed:
            del graph.node[:]
            graph.node.extend(kept)
        for init in graph.initializer:  # subgraph initializers in external data: dims only
            if init.data_location == ext and graph is not proto.graph:
                _drop_data(init)

    walk(proto.graph)
    for fn in proto.functions:
        for node in fn.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_location == ext:
                    _drop_data(attr.t)


def _drop_data(t: onnx.TensorProto) -> None:
    t.data_location = onnx.TensorProto.DEFAULT
    del t.external_data[:]


def _merge_shapes(model: ir.Model, inferred: onnx.ModelProto) -> int:
    """Copy inferred types/shapes into the IR where they know more than we do."""
    known: dict[str, onnx.TypeProto] = {}
    _collect_value_info(inferred.graph, known)
    updated = 0
    for value in _all_values(model):
        t = known.get(value.name)
        if t is None or not t.HasField("tensor_type"):
            continue
        tt = t.tensor_type
        if value.dtype is None and tt.elem_type:
            value.dtype = ir.DataType(tt.elem_type)
        if not tt.HasField("shape"):
            continue
        new = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                new.append(d.dim_value)
            else:
                new.append(ir.SymbolicDim(d.dim_param or None))
        if _known_count(new) > _known_count(value.shape):
            value.shape = ir.Shape(new)
            updated += 1
    return updated


def _collect_value_info(graph: onnx.GraphProto, known: dict[str, onnx.TypeProto]) -> None:
    """Value infos of a graph and of every subgraph (If/Loop/Scan bodies) inside it."""
    for vi in list(graph.input) + list(graph.value_info) + list(graph.output):
        known.setdefault(vi.name, vi.type)
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _collect_value_info(attr.g, known)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _collect_value_info(sub, known)


def _known_count(dims) -> int:
    if dims is None:
        return -1
    return sum(1 for d in dims if isinstance(d, int))


def _all_values(model: ir.Model):
    for graph in model.graphs():
        yield from graph.inputs
        for node in graph:
            yield from node.outputs


def _onnx_inference(model: ir.Model, result: ShapeResolution) -> bool:
    try:
        proto = _stripped_proto(model)
        inferred = onnx.shape_inference.infer_shapes(
            proto, check_type=False, strict_mode=False, data_prop=True
        )
    except Exception as exc:
        result.notes.append(f"ONNX shape inference failed: {_first_line(exc)}")
        logger.info("ONNX shape inference failed: %s", exc)
        return False
    _merge_shapes(model, inferred)
    return True


def _ort_symbolic_inference(model: ir.Model, result: ShapeResolution) -> bool:
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        return False
    try:
        proto = _stripped_proto(model)
        # Symbolic inference refuses inputs without shapes; it also logs loudly: keep it quiet.
        ort_logger = logging.getLogger("onnxruntime.tools.symbolic_shape_infer")
        level = ort_logger.level
        ort_logger.setLevel(logging.CRITICAL)
        try:
            inferred = _symbolic_infer(SymbolicShapeInference, proto)
        finally:
            ort_logger.setLevel(level)
    except Exception as exc:
        result.notes.append(f"onnxruntime symbolic shape inference failed: {_first_line(exc)}")
        logger.info("symbolic shape inference failed: %s", exc)
        return False
    if inferred is None:
        return False
    _merge_shapes(model, inferred)
    return True


#: ORT's symbolic inference repeats passes while auto-merging dims; on some malformed graphs
#: (e.g. an input of UNDEFINED element type feeding a MatMul) it never stops. Real models need
#: a handful of passes.
_MAX_SYMBOLIC_PASSES = 32


def _symbolic_infer(sym_cls, proto: onnx.ModelProto) -> onnx.ModelProto | None:
    """``SymbolicShapeInference.infer_shapes`` with a bound on its passes and without its side
    effect: on incomplete inference the original saves ``sym_shape_infer_temp.onnx`` (with
    external data) into the current directory. Same arguments as before (auto_merge,
    guess_output_rank); raises on failure as the original does."""
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if not opset or opset < 7:  # the original refuses these too
        return None
    sym = sym_cls(2**31 - 1, True, True, 0)
    sym._preprocess(proto)
    complete = False
    for _ in range(_MAX_SYMBOLIC_PASSES):
        if not sym.run_:
            break
        complete = sym._infer_impl()
    else:
        raise RuntimeError(f"no fixed point after {_MAX_SYMBOLIC_PASSES} passes")
    sym._update_output_from_vi()
    if not complete:
        raise RuntimeError("Incomplete symbolic shape inference")
    return sym.out_mp_
