"""FP16 / BF16 conversion as an onnx-ir pass, aware of the target runtime's kernels.

Walks the graph in topological order (Paddle's ``convert_to_mixed_precision`` algorithm): a node
runs in low precision when the target provider has a kernel for it in that precision
(:data:`tclint.specs.LOW_PRECISION_KERNELS`) and nothing blocks it; a Cast is inserted where an
input's type differs from what the node now expects. Casts are shared by every consumer of a
value (one Cast per value, type and graph), so no fan-out ever gets two of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass, NameFixPass

from tclint import specs

logger = logging.getLogger(__name__)

FLOAT = ir.DataType.FLOAT
LOW_TYPES = {"fp16": ir.DataType.FLOAT16, "bf16": ir.DataType.BFLOAT16}
_NP_LOW = {ir.DataType.FLOAT16: np.float16, ir.DataType.BFLOAT16: ml_dtypes.bfloat16}
#: (exponent bits, mantissa bits): a Cast pair through a type at least as wide on both is lossless.
_WIDTH = {
    ir.DataType.FLOAT16: (5, 10),
    ir.DataType.BFLOAT16: (8, 7),
    ir.DataType.FLOAT: (8, 23),
    ir.DataType.DOUBLE: (11, 52),
}

#: Inputs whose element type does not matter to the op (no Cast is ever inserted before them).
_ANY_TYPE_INPUTS = {
    "Shape": {0}, "Size": {0}, "Cast": {0}, "CastLike": {0, 1}, "EyeLike": {0},
    "RandomNormalLike": {0}, "RandomUniformLike": {0}, "Bernoulli": {0},
}
#: Ops whose output dtype comes from a ``dtype`` attribute (default: the input's type).
_DTYPE_ATTR_LIKE = {"EyeLike", "RandomNormalLike", "RandomUniformLike"}
#: Ops whose output dtype comes from a ``dtype`` attribute that defaults to float32.
_DTYPE_ATTR_DEFAULT_FLOAT = {"RandomNormal", "RandomUniform"}
#: Data-movement ops: they follow the type of their data input instead of forcing a Cast.
_FOLLOW_OPS = {
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Gather",
    "GatherElements", "GatherND", "Expand", "Tile", "Concat", "Split", "DepthToSpace",
    "SpaceToDepth", "Compress", "ReverseSequence", "Dropout", "Pad", "Where", "Max", "Min",
}
_CONTROL_FLOW = {"If", "Loop", "Scan"}
_NORM_EPS_CONSUMERS = {"Sqrt", "Reciprocal", "Div", "Pow"}


@dataclass(frozen=True)
class TensorClamp:
    """Values of one constant that did not fit the low-precision range."""

    tensor: str
    size: int
    #: |v| above the max finite value, set to +-max
    clamped: int
    #: 0 < |v| below ``min_positive`` (would flush to zero), raised to +-min_positive
    raised: int


@dataclass(frozen=True)
class KeptNode:
    """A node that stays float32, and why."""

    name: str
    op_type: str
    reason: str


@dataclass(frozen=True)
class NormEpsilon:
    """A decomposed-norm epsilon that flushes to zero in low precision, and what was done."""

    node: str
    value: float
    action: str


@dataclass(frozen=True)
class ConversionStats:
    """What one run of :class:`ConvertFloat16Pass` did."""

    dtype: str
    provider: str
    nodes_total: int
    nodes_low_precision: int
    kept: tuple[KeptNode, ...]
    clamps: tuple[TensorClamp, ...]
    constants_converted: int
    casts_in_input: int
    casts_in_output: int
    casts_inserted: int
    casts_removed: int
    functions_low_precision: tuple[str, ...] = ()
    #: names of the nodes that run in low precision (after unnamed nodes were named)
    low_precision_nodes: tuple[str, ...] = ()
    norm_epsilons: tuple[NormEpsilon, ...] = ()


class ConvertFloat16Pass(ir.passes.InPlacePass):
    """Convert a float32 model to FP16 (or BF16) for one execution provider.

    Rewrite cases, in the order they are applied:

    1. Constant nodes become initializers; unnamed nodes get unique names; the graph is sorted.
    2. Each node (main graph, If/Loop/Scan bodies, in topological order) is decided:
       low precision when the provider's kernel table lists it in that precision and it is not
       blocked (``block_ops``, ``block_nodes``, ``keep_nodes``), its ONNX schema allows the type,
       and (with ``keep_norm_epsilon``) it is not the ``Add`` of a norm epsilon that flushes to
       zero in FP16 (BERT's 1e-12), kept float32 with its Sqrt/Reciprocal. By default such an
       epsilon is raised to ``min_positive`` like any tiny constant; both are reported.
       Data-movement ops (Reshape, Transpose, Concat, ...) follow the type of their data input.
    3. A Cast is inserted where an input's type differs from what the node expects; one Cast
       per (value, type, graph) serves every consumer. Per-slot exceptions stay float32
       (Resize roi/scales, LayerNormalization Mean/InvStdDev: :data:`specs.FLOAT32_SLOTS`).
    4. Constants are converted once per type, clamped into range (values above the max finite
       value become +-max, tiny non-zero values become +-``min_positive`` instead of zero); the
       counts are reported per tensor. External tensors are converted lazily at save time
       (``ir.LazyTensor``), one tensor at a time.
    5. dtype attributes follow: ``Cast(to=FLOAT)``, ``RandomNormal(Like)``/``RandomUniform(Like)``/
       ``EyeLike`` ``dtype``, ``ConstantOfShape`` ``value``. Ops kept float32 whose output type
       would otherwise follow a low-precision input get an explicit ``dtype=FLOAT``.
    6. If outputs are low precision when every branch produces low precision (Casts inside the
       branches otherwise). A Loop/Scan state or scan input is low precision in the body when its
       initial value is; body outputs are cast to the state's type, scan outputs keep theirs.
       Model-local functions run in low precision when every op in them has a kernel.
    7. Graph inputs/outputs keep float32 with one Cast each (``keep_io_types``), same names.
    8. Cast clean-up: Casts to the type a value already has, lossless Cast pairs
       (fp16 -> fp32 -> fp16), duplicate Casts of one value, and Casts of constants (folded)
       are removed, including those that were in the input model.
    """

    def __init__(
        self,
        *,
        dtype: str = "fp16",
        keep_io_types: bool = True,
        block_ops: Iterable[str] = (),
        block_nodes: Iterable[str] = (),
        keep_nodes: Mapping[str, str] | None = None,
        provider: str = "cuda",
        min_positive: float | None = None,
        max_finite: float | None = None,
        keep_norm_epsilon: bool = False,
    ) -> None:
        super().__init__()
        if dtype not in LOW_TYPES:
            raise ValueError(f"dtype must be one of {sorted(LOW_TYPES)}, got {dtype!r}")
        self.dtype = dtype
        self.low = LOW_TYPES[dtype]
        self.keep_io_types = keep_io_types
        self.block_ops = frozenset(block_ops)
        self.block_nodes = frozenset(block_nodes)
        self.keep_nodes = dict(keep_nodes or {})
        self.keep_norm_epsilon = keep_norm_epsilon
        self.provider = provider
        self.table = specs.kernel_table(provider, dtype)
        fmt = specs.FLOAT_FORMATS[dtype]
        self.format = fmt
        self.max_finite = fmt.max_finite if max_finite is None else max_finite
        self.min_positive = fmt.min_subnormal if min_positive is None else min_positive
        self.stats: ConversionStats | None = None

    # ----------------------------------------------------------------------------------------
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.dtype == "bf16" and model.opset_imports.get("", 0) < 13:
            raise ValueError("bf16 needs opset 13 or later (Cast to BFLOAT16)")
        LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=0)(model)
        NameFixPass()(model)
        if any(v.dtype is None for n in model.graph.all_nodes() for v in n.outputs):
            infer_types(model)
        model.graph.sort()
        self._model = model
        self._cast_cache: dict[tuple[int, ir.DataType, int], ir.Value] = {}
        self._scopes: list[ir.Graph] = []
        self._const_cache: dict[tuple[int, ir.DataType], ir.Value] = {}
        self._replaced_constants: dict[int, ir.Value] = {}
        self._forced_fp32: dict[ir.Node, str] = {}
        self._kept: list[KeptNode] = []
        self._norm_eps: list[NormEpsilon] = []
        self._clamps: list[TensorClamp] = []
        self._low_nodes = 0
        self._low_names: list[str] = []
        self._inserted = 0
        self._counter = 0
        self._names = {v.name for v in _all_values(model) if v.name}
        casts_before = _count_casts(model)

        self._functions_low = self._convert_functions(model)
        graph = model.graph
        original_outputs = [(v, v.dtype) for v in graph.outputs]
        if not self.keep_io_types:
            for value in graph.inputs:
                if value.dtype == FLOAT:
                    _set_dtype(value, self.low)
        self._convert_graph(graph)
        self._fix_graph_outputs(graph, original_outputs)
        removed = self._cleanup_casts(model)
        self._drop_replaced_constants()
        NameFixPass()(model)
        model.graph.sort()

        casts_after = _count_casts(model)
        self.stats = ConversionStats(
            dtype=self.dtype,
            provider=self.provider,
            nodes_total=sum(1 for _ in _all_nodes(model)) - casts_after,
            nodes_low_precision=self._low_nodes,
            kept=tuple(self._kept),
            clamps=tuple(c for c in self._clamps if c.clamped or c.raised),
            constants_converted=len(self._clamps),
            casts_in_input=casts_before,
            casts_in_output=casts_after,
            casts_inserted=self._inserted,
            casts_removed=removed,
            functions_low_precision=tuple(sorted(f"{d}::{n}" for d, n, _ in self._functions_low)),
            low_precision_nodes=tuple(self._low_names),
            norm_epsilons=tuple(self._norm_eps),
        )
        logger.info(
            "converted %d nodes to %s, kept %d in float32, %d Casts",
            self._low_nodes, self.dtype, len(self._kept), casts_after,
        )
        return ir.passes.PassResult(model, modified=True)

    # ----------------------------------------------------------------------------------------
    # Decisions
    # ----------------------------------------------------------------------------------------
    def _decide(self, node: ir.Node) -> tuple[bool, str | None]:
        """(runs in low precision?, why not) for a node that touches float tensors."""
        name = node.name or ""
        if name in self.block_nodes:
            return False, "blocked by --block-node"
        if node.op_type in self.block_ops:
            return False, "blocked by --block-op"
        if name in self.keep_nodes:
            return False, self.keep_nodes[name]
        if node in self._forced_fp32:
            return False, self._forced_fp32[node]
        if node.op_type == "Cast":
            return True, None
        if _has_non_tensor_io(node):
            return False, "sequence/optional values stay float32"
        if node.domain in ("", "ai.onnx") and (
            node.op_type in _FOLLOW_OPS or not any(_is_floaty(v) for v in node.outputs)
        ):
            data = [v for v in node.inputs if _is_floaty(v)]
            if data and not any(v.dtype == self.low for v in data) and not all(
                _is_constant(v) for v in data
            ):
                return False, None  # follows its float32 input: nothing to report
            if self.table.has_kernel(node.domain, node.op_type):
                return True, None
        if not _schema_allows(node, self.low, self._model.opset_imports):
            return False, f"the ONNX schema of {_op_name(node)} has no {self.dtype} type"
        if not self.table.has_kernel(node.domain, node.op_type):
            return False, (
                f"no {self.dtype} kernel for {_op_name(node)} on {self.provider} "
                f"(source: {self.table.source.split(',')[0]})"
            )
        eps = self._norm_epsilon(node)
        if eps is not None:
            if not self.keep_norm_epsilon:
                self._norm_eps.append(NormEpsilon(node.name or "", eps, f"raised to {self.min_positive:.3g}"))
                return True, None
            reason = (
                f"norm epsilon {eps:.3g} flushes to zero in {self.dtype} (smallest value "
                f"{self.format.min_subnormal:.3g})"
            )
            self._norm_eps.append(NormEpsilon(node.name or "", eps, "kept float32"))
            for use in node.outputs[0].uses():
                if use.node.op_type in ("Sqrt", "Reciprocal"):
                    self._forced_fp32[use.node] = reason
            return False, reason
        return True, None

    def _norm_epsilon(self, node: ir.Node) -> float | None:
        """The epsilon of a decomposed norm (``Add(var, eps) -> Sqrt``) that flushes to zero.

        Subnormal epsilons (GPT-2's 1e-5) keep working in FP16 and are converted (rule TC302 still
        warns about them); only those below the smallest subnormal keep the Add and Sqrt float32.
        """
        if node.op_type != "Add" or self.format.min_normal < 1e-30:
            return None
        if not any(u.node.op_type in _NORM_EPS_CONSUMERS for u in node.outputs[0].uses()):
            return None
        for value in node.inputs:
            eps = _small_scalar(value)
            if eps is not None and 0 < abs(eps) < self.format.min_subnormal:
                return eps
        return None

    # ----------------------------------------------------------------------------------------
    # Graph walk
    # ----------------------------------------------------------------------------------------
    def _convert_graph(self, graph: ir.Graph) -> None:
        self._scopes.append(graph)
        try:
            self._convert_nodes(graph)
        finally:
            self._scopes.pop()

    def _convert_nodes(self, graph: ir.Graph) -> None:
        for node in list(graph):
            if node.domain in ("", "ai.onnx") and node.op_type in _CONTROL_FLOW:
                self._convert_control_flow(node, graph)
            elif (node.domain, node.op_type, node.overload) in self._model.functions:
                self._convert_call(node, graph)
            elif _touches_float(node):
                self._convert_node(node, graph)

    def _convert_node(self, node: ir.Node, graph: ir.Graph) -> None:
        low, reason = self._decide(node)
        if reason is not None:
            self._kept.append(KeptNode(node.name or "", _op_name(node), reason))
        slots = specs.FLOAT32_SLOTS.get(_op_key(node))
        fp32_in = slots.inputs if (slots and low) else ()
        fp32_out = slots.outputs if (slots and low) else ()
        any_type = _ANY_TYPE_INPUTS.get(node.op_type, set())
        for i, value in enumerate(node.inputs):
            if value is None or i in any_type or not _is_floaty(value):
                continue
            want = self.low if (low and i not in fp32_in) else FLOAT
            if value.dtype != want:
                node.replace_input_with(i, self._as_type(value, want, graph, node))
        if low:
            self._low_nodes += 1
            self._low_names.append(node.name or "")
            self._rewrite_dtype_attrs(node, self.low)
            if node.op_type == "CastLike":
                like = node.inputs[1]
                if like is not None and like.dtype is not None:
                    _set_dtype(node.outputs[0], like.dtype)
                return
            for k, out in enumerate(node.outputs):
                if _is_tensor(out) and out.dtype == FLOAT and k not in fp32_out:
                    _set_dtype(out, self.low)
        elif node.op_type in _DTYPE_ATTR_LIKE and node.outputs[0].dtype == FLOAT:
            # The input may now be low precision: pin the output type explicitly.
            node.attributes["dtype"] = ir.AttrInt64("dtype", int(FLOAT))

    def _rewrite_dtype_attrs(self, node: ir.Node, low: ir.DataType) -> None:
        op = node.op_type
        if op == "Cast":
            to = node.attributes.get("to")
            if to is not None and to.value == int(FLOAT):
                node.attributes["to"] = ir.AttrInt64("to", int(low))
                _set_dtype(node.outputs[0], low)
        elif op in _DTYPE_ATTR_LIKE or op in _DTYPE_ATTR_DEFAULT_FLOAT:
            if node.outputs[0].dtype == FLOAT:
                node.attributes["dtype"] = ir.AttrInt64("dtype", int(low))
        elif op == "ConstantOfShape":
            attr = node.attributes.get("value")
            if attr is None:
                array = np.zeros((1,), dtype=_NP_LOW[low])
            elif attr.value.dtype == FLOAT:
                array = attr.value.numpy().astype(_NP_LOW[low])
            else:
                return
            node.attributes["value"] = ir.AttrTensor("value", ir.tensor(array))

    def _convert_control_flow(self, node: ir.Node, graph: ir.Graph) -> None:
        if node.op_type != "If":
            self._convert_loop_or_scan(node, graph)
            return
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                self._convert_graph(attr.value)
            elif attr.type == ir.AttributeType.GRAPHS:
                for sub in attr.value:
                    self._convert_graph(sub)
        branches = [a.value for a in node.attributes.values() if a.type == ir.AttributeType.GRAPH]
        for k, out in enumerate(node.outputs):
            if out.dtype != FLOAT:
                continue
            low = all(b.outputs[k].dtype == self.low for b in branches)
            target = self.low if low else FLOAT
            for branch in branches:
                self._set_subgraph_output(branch, k, target)
            _set_dtype(out, target)

    def _convert_loop_or_scan(self, node: ir.Node, graph: ir.Graph) -> None:
        """Loop/Scan: a carried state or scan input is low precision inside the body when its
        initial value is (or is a constant); the body's outputs are cast to match."""
        body = node.attributes["body"].value
        if node.op_type == "Loop":
            outer, body_in, first_out = list(range(2, len(node.inputs))), body.inputs[2:], 1
            n_state = len(node.inputs) - 2
        else:
            scans = node.attributes.get_int("num_scan_inputs", 0)
            outer, body_in, first_out = list(range(len(node.inputs))), list(body.inputs), 0
            n_state = len(node.inputs) - scans
        targets = []
        for i, inner in zip(outer, body_in):
            value = node.inputs[i]
            target = None
            if _is_floaty(value):
                low = value.dtype == self.low or _is_constant(value)
                target = self.low if low else FLOAT
                if value.dtype != target:
                    node.replace_input_with(i, self._as_type(value, target, graph, node))
                if inner.dtype in (FLOAT, self.low):
                    _set_dtype(inner, target)
            targets.append(target)
        self._convert_graph(body)
        for j in range(n_state):
            k = first_out + j
            if targets[j] is not None and k < len(body.outputs):
                self._set_subgraph_output(body, k, targets[j])
                _set_dtype(node.outputs[j], targets[j])
        for k in range(first_out + n_state, len(body.outputs)):
            out = node.outputs[k - first_out]
            if out.dtype == FLOAT and body.outputs[k].dtype in (FLOAT, self.low):
                _set_dtype(out, body.outputs[k].dtype)

    def _set_subgraph_output(self, sub: ir.Graph, k: int, target: ir.DataType) -> None:
        value = sub.outputs[k]
        if value.dtype == target:
            return
        cast = self._make_cast(value, target)
        sub.append(cast)
        sub.outputs[k] = cast.outputs[0]

    def _fix_graph_outputs(self, graph: ir.Graph, original: list[tuple[ir.Value, ir.DataType]]) -> None:
        for k, (value, dtype) in enumerate(original):
            if dtype != FLOAT or value.is_graph_input():
                continue
            target = FLOAT if self.keep_io_types else self.low
            if value.dtype == target:
                continue
            name = value.name
            value.name = self._fresh(f"{name}_{_short(value.dtype)}")
            cast = self._make_cast(value, target, out_name=name)
            graph.append(cast)
            graph.outputs[k] = cast.outputs[0]

    # ----------------------------------------------------------------------------------------
    # Functions
    # ----------------------------------------------------------------------------------------
    def _convert_functions(self, model: ir.Model) -> set[tuple[str, str, str]]:
        low_functions = set()
        for key, function in model.functions.items():
            ok = all(
                self.table.has_kernel(n.domain, n.op_type)
                and n.op_type not in self.block_ops
                and (n.name or "") not in self.block_nodes
                for n in function.all_nodes()
                if n.op_type != "Constant"
            )
            if not ok:
                continue
            low_functions.add(key)
            for n in function.all_nodes():
                if n.op_type == "Constant":
                    attr = n.attributes.get("value")
                    if attr is not None and attr.value.dtype == FLOAT:
                        array, clamp = self._convert_array(attr.value.numpy(), f"{function.name}/{n.name}")
                        self._clamps.append(clamp)
                        n.attributes["value"] = ir.AttrTensor("value", ir.tensor(array))
                else:
                    self._rewrite_dtype_attrs(n, self.low)
        return low_functions

    def _convert_call(self, node: ir.Node, graph: ir.Graph) -> None:
        key = (node.domain, node.op_type, node.overload)
        low = key in self._functions_low and (node.name or "") not in self.block_nodes
        if not low and _touches_float(node):
            self._kept.append(KeptNode(node.name or "", _op_name(node),
                                       "function uses an op without a low-precision kernel"))
        want = self.low if low else FLOAT
        for i, value in enumerate(node.inputs):
            if value is not None and _is_floaty(value) and value.dtype != want:
                node.replace_input_with(i, self._as_type(value, want, graph, node))
        if low:
            self._low_nodes += 1
            for out in node.outputs:
                if out.dtype == FLOAT:
                    _set_dtype(out, self.low)

    # ----------------------------------------------------------------------------------------
    # Casts and constants
    # ----------------------------------------------------------------------------------------
    def _as_type(self, value: ir.Value, want: ir.DataType, graph: ir.Graph, consumer: ir.Node) -> ir.Value:
        """``value`` as ``want``: a converted constant, an existing Cast's input, or a new Cast."""
        if _is_constant(value):
            return self._constant_as(value, want)
        key = (id(value), want, id(graph))
        if key in self._cast_cache:
            return self._cast_cache[key]
        for outer in self._scopes[:-1]:
            # A Cast made earlier in an enclosing graph precedes the node being converted there
            # (the one holding this subgraph), so this subgraph can read it.
            outer_key = (id(value), want, id(outer))
            if outer_key in self._cast_cache:
                return self._cast_cache[outer_key]
        producer = value.producer()
        if (
            producer is not None
            and producer.op_type == "Cast"
            and producer.inputs[0] is not None
            and producer.inputs[0].dtype == want
            and _lossless(want, value.dtype)
        ):
            result = producer.inputs[0]  # undo our own (or the model's) widening Cast
        else:
            cast = self._make_cast(value, want)
            if producer is not None and producer.graph is graph:
                graph.insert_after(producer, cast)
            else:
                graph.insert_before(consumer, cast)
            result = cast.outputs[0]
        self._cast_cache[key] = result
        return result

    def _make_cast(self, value: ir.Value, to: ir.DataType, *, out_name: str | None = None) -> ir.Node:
        base = value.name or "value"
        self._inserted += 1
        out = ir.Value(
            name=out_name or self._fresh(f"{base}_{_short(to)}"),
            type=ir.TensorType(to),
            shape=value.shape,
        )
        return ir.Node(
            "", "Cast", [value], [ir.AttrInt64("to", int(to))],
            outputs=[out], name=self._fresh(f"Cast_{base}_{_short(to)}"),
        )

    def _constant_as(self, value: ir.Value, want: ir.DataType) -> ir.Value:
        if value.dtype == want:
            return value
        key = (id(value), want)
        if key in self._const_cache:
            return self._const_cache[key]
        tensor = value.const_value
        assert tensor is not None
        name = self._fresh(f"{value.name}_{_short(want)}")
        if want == self.low:
            new_tensor = self._convert_tensor(tensor, value.name or name, name)
        else:  # widening back to float32 (a constant that was already low precision): lossless
            np_want = np.float32 if want == FLOAT else None
            if np_want is None:
                new_tensor = ir.tensor(tensor.numpy().astype(_NP_LOW[want]), name=name)
            else:
                new_tensor = ir.tensor(tensor.numpy().astype(np_want), name=name)
        new = ir.Value(name=name, type=ir.TensorType(want), shape=value.shape, const_value=new_tensor)
        owner = value.graph if value.graph is not None else self._model.graph
        owner.register_initializer(new)
        self._const_cache[key] = new
        self._replaced_constants[id(value)] = value
        return new

    def _convert_tensor(self, tensor: ir.TensorProtocol, label: str, name: str) -> ir.TensorProtocol:
        if isinstance(tensor, ir.ExternalTensor):
            # Count now and convert again lazily at save time; unmap the file after each use,
            # so only one tensor is ever in memory.
            _, clamp = self._convert_array(tensor.numpy(), label)
            tensor.release()
            self._clamps.append(clamp)

            def convert(tensor=tensor):
                array = self._convert_array(tensor.numpy(), label)[0]
                tensor.release()
                return ir.tensor(array, name=name)

            return ir.LazyTensor(convert, dtype=self.low, shape=tensor.shape, name=name)
        array, clamp = self._convert_array(tensor.numpy(), label)
        self._clamps.append(clamp)
        return ir.tensor(array, name=name)

    def _convert_array(self, array: np.ndarray, label: str) -> tuple[np.ndarray, TensorClamp]:
        """Round to the low type; clamp what overflows, raise what would flush to zero.

        With the format's own limits this is one conversion plus integer checks on the 16-bit
        result (only the few bad elements are touched); custom limits take the slower path.
        """
        a = np.asarray(array, dtype=np.float32)
        np_low = _NP_LOW[self.low]
        fmt = self.format
        if self.max_finite != fmt.max_finite or self.min_positive != fmt.min_subnormal:
            return self._convert_array_custom(a, label)
        with np.errstate(over="ignore"):
            h = a.astype(np_low)
        af, bits = a.reshape(-1), h.reshape(-1).view(np.uint16)
        magnitude = bits & np.uint16(0x7FFF)
        inf_bits = np.uint16(0x7C00 if self.low == ir.DataType.FLOAT16 else 0x7F80)
        big = np.flatnonzero(magnitude == inf_bits)
        big = big[np.isfinite(af[big])]
        tiny = np.flatnonzero(magnitude == 0)
        tiny = tiny[af[tiny] != 0]
        if big.size or tiny.size:
            hf = h.reshape(-1)
            hf[big] = np.copysign(self.max_finite, af[big]).astype(np_low)
            hf[tiny] = np.copysign(self.min_positive, af[tiny]).astype(np_low)
        return h, TensorClamp(label, int(a.size), int(big.size), int(tiny.size))

    def _convert_array_custom(self, a: np.ndarray, label: str) -> tuple[np.ndarray, TensorClamp]:
        magnitude = np.abs(a)
        big = (magnitude > self.max_finite) & np.isfinite(a)
        tiny = (magnitude < self.min_positive) & (a != 0)
        n_big, n_tiny = int(big.sum()), int(tiny.sum())
        if n_big or n_tiny:
            a = a.copy()
            a[big] = np.sign(a[big]) * self.max_finite
            a[tiny] = np.sign(a[tiny]) * self.min_positive
        return a.astype(_NP_LOW[self.low]), TensorClamp(label, int(a.size), n_big, n_tiny)

    def _drop_replaced_constants(self) -> None:
        """Remove float32 constants that nothing reads any more; give their name to the copy."""
        for value in self._replaced_constants.values():
            if value.uses() or value.is_graph_output() or value.is_graph_input():
                continue
            owner = value.graph
            if owner is None or value.name not in owner.initializers:
                continue
            name = value.name
            del owner.initializers[name]
            copies = [self._const_cache.get((id(value), t)) for t in (self.low, FLOAT)]
            copies = [c for c in copies if c is not None]
            if len(copies) == 1 and copies[0].name in owner.initializers:
                copy = copies[0]
                del owner.initializers[copy.name]
                copy.name = name
                if copy.const_value is not None:
                    copy.const_value.name = name
                owner.register_initializer(copy)

    # ----------------------------------------------------------------------------------------
    # Cast clean-up
    # ----------------------------------------------------------------------------------------
    def _cleanup_casts(self, model: ir.Model) -> int:
        """Remove redundant Casts anywhere in the model; returns how many were removed."""
        removed = 0
        changed = True
        while changed:
            changed = False
            for graph in _all_graphs(model):
                seen: dict[tuple[int, int], ir.Value] = {}
                for node in list(graph):
                    if node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
                        continue
                    src = node.inputs[0]
                    out = node.outputs[0]
                    to_attr = node.attributes.get("to")
                    if src is None or to_attr is None or out.is_graph_output():
                        continue
                    to = ir.DataType(to_attr.value)
                    replacement = None
                    if src.dtype == to:
                        replacement = src
                    elif _is_constant(src) and src.dtype in _WIDTH and to in _WIDTH:
                        replacement = self._fold_constant_cast(src, to)
                    else:
                        inner = src.producer()
                        if (
                            inner is not None
                            and inner.op_type == "Cast"
                            and inner.inputs[0] is not None
                            and inner.inputs[0].dtype == to
                            and _lossless(to, src.dtype)
                        ):
                            replacement = inner.inputs[0]
                        elif (id(src), int(to)) in seen:
                            replacement = seen[(id(src), int(to))]
                    if replacement is None:
                        seen[(id(src), int(to))] = out
                        continue
                    ir.convenience.replace_all_uses_with(out, replacement)
                    graph.remove(node, safe=True)
                    removed += 1
                    changed = True
                # Casts left without consumers (their pair partner was bypassed)
                for node in reversed(list(graph)):
                    if (
                        node.op_type == "Cast"
                        and not node.outputs[0].uses()
                        and not node.outputs[0].is_graph_output()
                    ):
                        graph.remove(node, safe=True)
                        removed += 1
                        changed = True
        return removed

    def _fold_constant_cast(self, src: ir.Value, to: ir.DataType) -> ir.Value | None:
        if to == self.low or to == FLOAT:
            return self._constant_as(src, to)
        return None

    # ----------------------------------------------------------------------------------------
    def _fresh(self, base: str) -> str:
        name = base
        while name in self._names:
            self._counter += 1
            name = f"{base}_{self._counter}"
        self._names.add(name)
        return name


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def infer_types(model: ir.Model) -> None:
    """Fill in missing value types with ONNX shape inference (run with the weights hidden).

    Whole type objects are copied, so sequence and optional values keep their kind (onnx-ir's
    ShapeInferencePass sets ``dtype``, which turns an untyped sequence into a tensor). On
    failure the model keeps the types it has.
    """
    from onnx_ir.passes.common import _c_api_utils

    def infer(proto: onnx.ModelProto) -> onnx.ModelProto:
        return onnx.shape_inference.infer_shapes(proto, check_type=False, strict_mode=False,
                                                 data_prop=True)

    try:
        inferred = ir.serde.deserialize_model(_c_api_utils.call_onnx_api(infer, model))
    except Exception as exc:  # noqa: BLE001 - inference is best effort
        logger.info("shape inference failed (%s); using the types in the model", exc)
        return
    for graph, inferred_graph in zip(model.graphs(), inferred.graphs()):
        known = ir.convenience.create_value_mapping(inferred_graph)
        for name, value in ir.convenience.create_value_mapping(graph).items():
            other = known.get(name)
            if other is None:
                continue
            if value.type is None and other.type is not None:
                value.type = other.type
            if value.shape is None and other.shape is not None:
                value.shape = other.shape


_SCHEMA_CACHE: dict[tuple, bool] = {}


def _schema_allows(node: ir.Node, low: ir.DataType, opsets: Mapping[str, int]) -> bool:
    """False when a type variable the node would bind to ``low`` does not allow it.

    Only the type variables of the slots that change are checked (LayerNormalization's ``U``,
    bound to Mean/InvStdDev which stay float32, does not count).
    """
    domain = "" if node.domain == "ai.onnx" else node.domain
    version = node.version or opsets.get(domain)
    if version is None:
        return True
    slots = specs.FLOAT32_SLOTS.get(_op_key(node))
    fp32_in = set(slots.inputs) if slots else set()
    fp32_out = set(slots.outputs) if slots else set()
    any_type = _ANY_TYPE_INPUTS.get(node.op_type, set())
    ins = tuple(i for i, v in enumerate(node.inputs)
                if _is_floaty(v) and i not in fp32_in and i not in any_type)
    outs = tuple(i for i, v in enumerate(node.outputs) if _is_floaty(v) and i not in fp32_out)
    key = (domain, node.op_type, version, int(low), ins, outs)
    if key not in _SCHEMA_CACHE:
        try:
            schema = onnx.defs.get_schema(node.op_type, version, domain)
        except onnx.defs.SchemaError:
            _SCHEMA_CACHE[key] = True  # custom op: the kernel table decides
            return True
        want = f"tensor({'float16' if low == ir.DataType.FLOAT16 else 'bfloat16'})"
        allowed_by = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}

        def type_of(params, i):
            if not params:
                return None
            return params[min(i, len(params) - 1)].type_str

        used = {type_of(schema.inputs, i) for i in ins} | {type_of(schema.outputs, i) for i in outs}
        _SCHEMA_CACHE[key] = all(
            want in allowed_by[t] for t in used if t in allowed_by
        ) and all(t in allowed_by or t == want for t in used if t is not None)
    return _SCHEMA_CACHE[key]


def _set_dtype(value: ir.Value, dtype: ir.DataType) -> None:
    """Give ``value`` a new type object (type objects may be shared between model clones)."""
    value.type = ir.TensorType(dtype)


def _is_tensor(value: ir.Value | None) -> bool:
    """A plain tensor, or a value of unknown type (sequences and optionals are left alone)."""
    return value is not None and (value.type is None or isinstance(value.type, ir.TensorType))


def _is_floaty(value: ir.Value | None) -> bool:
    return _is_tensor(value) and value.dtype in (FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16)


def _touches_float(node: ir.Node) -> bool:
    if any(_is_floaty(v) for v in node.inputs) or any(
        _is_tensor(v) and v.dtype == FLOAT for v in node.outputs
    ):
        return True
    return False


def _has_non_tensor_io(node: ir.Node) -> bool:
    return any(v is not None and not _is_tensor(v) for v in (*node.inputs, *node.outputs))


def _is_constant(value: ir.Value) -> bool:
    return value.const_value is not None and value.is_initializer() and not value.is_graph_input()


def _small_scalar(value: ir.Value | None) -> float | None:
    if value is None or not _is_constant(value) or value.dtype not in _WIDTH:
        return None
    tensor = value.const_value
    if tensor is None or tensor.size != 1:
        return None
    return float(np.asarray(tensor.numpy(), dtype=np.float64).reshape(-1)[0])


def _lossless(narrow: ir.DataType, wide: ir.DataType | None) -> bool:
    """True if casting ``narrow`` -> ``wide`` -> ``narrow`` gives back the same values."""
    if narrow not in _WIDTH or wide not in _WIDTH:
        return False
    (e1, m1), (e2, m2) = _WIDTH[narrow], _WIDTH[wide]
    return e2 >= e1 and m2 >= m1


def _op_key(node: ir.Node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _op_name(node: ir.Node) -> str:
    return _op_key(node)


def _short(dtype: ir.DataType | None) -> str:
    return {ir.DataType.FLOAT16: "fp16", ir.DataType.BFLOAT16: "bf16", FLOAT: "fp32"}.get(
        dtype, str(dtype).lower()
    )


def _all_graphs(model: ir.Model) -> list[ir.Graph]:
    return list(model.graphs())


def _all_nodes(model: ir.Model) -> Iterable[ir.Node]:
    yield from model.graph.all_nodes()
    for function in model.functions.values():
        yield from function.all_nodes()


def _all_values(model: ir.Model) -> Iterable[ir.Value]:
    for graph in model.graphs():
        yield from graph.inputs
        yield from graph.initializers.values()
        for node in graph:
            yield from (v for v in node.outputs)


def _count_casts(model: ir.Model) -> int:
    return sum(1 for n in _all_nodes(model) if n.op_type == "Cast")

