"""The GEMM view: every GEMM-like layer of a model as one record, computed once.

Rules, the cost model, the fixer and the report all read these records; nothing else
re-derives M/N/K. The mapping follows NVIDIA's guides (see ../shared/docs/domain.md):

1. MatMul [.., M, K] x [K, N] with a constant 2-D weight: M = product of all leading dims.
   Both operands activations (attention): a batched GEMM, batch = the broadcast leading dims.
2. Gemm: honours transA/transB.
3. Conv / ConvTranspose (1-D/2-D/3-D, grouped, depthwise), NCHW, weight [K, C/g, R, S]: implicit
   GEMM with M = N*P*Q, N = K/g, K = (C/g)*R*S, repeated g times.
4. Integer and quantized variants (MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv), Einsum
   contractions of two operands, LSTM/GRU/RNN gate GEMMs (input and recurrent), and the
   com.microsoft FusedMatMul, FusedConv, NhwcConv, Attention, MultiHeadAttention,
   GroupQueryAttention, MatMulNBits, DynamicQuantizeMatMul, MatMulIntegerToFloat.

Ops the view does not understand are counted in ``ModelView.uncovered`` (never dropped).
Weights are recognised where exporters put them (see :func:`is_constant`); only shapes are read.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import onnx_ir as ir

#: Ops whose output is a constant when their data input is (PyTorch exports linear weights as
#: Transpose(W), tied LM heads as Transpose(embedding), quantized weights as DequantizeLinear(W)).
CONSTANT_PASSTHROUGH = frozenset(
    {"Transpose", "Cast", "Reshape", "Identity", "DequantizeLinear", "Squeeze", "Unsqueeze",
     "Flatten", "QuantizeLinear", "CastLike", "Expand", "Slice", "Concat", "Mul", "Add", "Div",
     "Sub", "Neg", "Gather"}
)

#: ONNX element types -> tclint precision names, for models already in reduced precision.
_PRECISION_OF = {
    ir.DataType.FLOAT16: "fp16",
    ir.DataType.BFLOAT16: "bf16",
    ir.DataType.INT8: "int8",
    ir.DataType.UINT8: "int8",
    ir.DataType.FLOAT8E4M3FN: "fp8",
    ir.DataType.FLOAT8E4M3FNUZ: "fp8",
    ir.DataType.FLOAT8E5M2: "fp8",
    ir.DataType.FLOAT8E5M2FNUZ: "fp8",
}

#: Ops that only reinterpret a tensor (no kernel, or a no-copy view in the runtimes).
VIEW_OPS = frozenset(
    {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Shape", "Size", "Constant",
     "ConstantOfShape", "Dropout", "If", "Loop", "Scan", "Optional", "OptionalGetElement",
     "OptionalHasElement", "SequenceConstruct", "SequenceAt", "SequenceEmpty", "SequenceInsert",
     "SequenceLength", "SplitToSequence", "ConcatFromSequence"}
)

#: Non-default-domain ops the view knows to be element-wise or normalisation (costed by bytes).
KNOWN_MEMORY_OPS = frozenset(
    {("com.microsoft", op) for op in (
        "SkipLayerNormalization", "SkipSimplifiedLayerNormalization", "LayerNormalization",
        "SimplifiedLayerNormalization", "BiasGelu", "FastGelu", "Gelu", "QuickGelu", "BiasAdd",
        "BiasSplitGelu", "RotaryEmbedding", "GroupNorm", "Trilu", "EmbedLayerNormalization",
        "BiasSoftmax", "QuantizeLinear", "DequantizeLinear", "GatherBlockQuantized",
        "SkipGroupNorm", "Irfft", "Rfft", "NhwcMaxPool", "QLinearAdd", "QLinearMul",
        "QLinearSigmoid", "QLinearLeakyRelu", "QLinearGlobalAveragePool", "QLinearAveragePool",
        "QLinearConcat", "QLinearSoftmax", "QuickGelu", "Inverse", "Range", "DynamicQuantizeLinear")}
    | {("ai.onnx.ml", op) for op in ("ZipMap", "LabelEncoder", "Normalizer", "Scaler", "ArrayFeatureExtractor", "Binarizer", "Imputer", "OneHotEncoder", "FeatureVectorizer", "CastMap", "DictVectorizer")}
)


@dataclass(frozen=True)
class ConvInfo:
    """Channel view of a convolution (per the NCHW/NHWC layout it runs in)."""

    c: int | None  # input channels
    k: int | None  # output channels
    groups: int
    kernel: tuple[int, ...]
    layout: str  # "NCHW" or "NHWC"
    first_layer: bool  # its input comes from a graph input through element-wise ops only
    transpose: bool = False

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.c is not None and self.groups == self.c

    @property
    def c_per_group(self) -> int | None:
        return None if self.c is None else self.c // self.groups

    @property
    def k_per_group(self) -> int | None:
        return None if self.k is None else self.k // self.groups


#: Below this many outputs a projection is a small classifier head, not a vocab (rule TC104 and
#: the pad pass's vocab multiple both read it here).
VOCAB_MIN_N = 512


@dataclass(frozen=True)
class Layer:
    """One GEMM (or a batch of identical GEMMs) in the model."""

    op: str  # "MatMul", "com.microsoft.Attention", ...
    name: str  # stable label: node name, or op(first output) for unnamed nodes
    path: str  # name qualified by enclosing subgraphs, e.g. "loop_1/body/fc"
    part: str  # "" or which GEMM of a multi-GEMM op ("qkv", "qk", "pv", "input", "recurrent")
    m: int | None
    n: int | None
    k: int | None
    batch: int | None  # number of independent GEMMs of this shape (incl. groups)
    precision: str  # "fp16" for a float32 model checked as fp16, or the model's own precision
    elem_bytes: float
    #: where each dim comes from, e.g. {"M": "X[0]*X[1] (activation)", "N": "W[1] (weight)"}
    sources: dict[str, str]
    #: symbolic names of dims that are still unknown, e.g. {"M": "batch*seq"}
    unresolved: dict[str, str]
    #: which dims come from weights (fixable in the model): subset of {"M", "N", "K"}
    weight_dims: frozenset[str]
    #: elements of A, B and C moved (None when a dim is unknown)
    elements: float | None = None
    role: str = ""  # "lm_head", "attention_qk", "attention_pv", "attention_proj", ""
    conv: ConvInfo | None = None
    node: ir.Node | None = field(default=None, compare=False, repr=False, hash=False)

    @property
    def label(self) -> str:
        return f"{self.path}[{self.part}]" if self.part else self.path

    @property
    def is_vocab_projection(self) -> bool:
        """An output/vocab projection (an LM head): N is a vocab, padded to a larger multiple."""
        return self.role == "lm_head" and self.n is not None and self.n >= VOCAB_MIN_N

    @property
    def flops(self) -> float | None:
        if None in (self.m, self.n, self.k, self.batch):
            return None
        return 2.0 * self.m * self.n * self.k * self.batch

    @property
    def bytes_moved(self) -> float | None:
        """Operands and result read/written once (implicit GEMM: activations, not im2col)."""
        return None if self.elements is None else self.elements * self.elem_bytes


@dataclass(frozen=True)
class MemoryOp:
    """A non-GEMM node, costed by the bytes it moves."""

    op: str
    path: str
    bytes_moved: float | None
    folded: bool  # all inputs constant, or a view op: runtimes do not launch a kernel for it
    node: ir.Node | None = field(default=None, compare=False, repr=False, hash=False)


@dataclass
class ModelView:
    layers: list[Layer]
    memory_ops: list[MemoryOp]
    #: op -> count of nodes the view does not understand (custom ops, unparsable GEMMs)
    uncovered: Counter
    #: symbolic dim name -> number of layers it leaves unresolved
    unresolved_symbols: Counter
    float_dtype: str  # "float32", "float16", ... : the model's main float type
    node_count: int


# --------------------------------------------------------------------------------------------
# Constants: where exporters put weights
# --------------------------------------------------------------------------------------------
class _ConstCache:
    def __init__(self) -> None:
        self.memo: dict[int, bool] = {}

    def is_constant(self, value: ir.Value | None, depth: int = 0) -> bool:
        if value is None:
            return False
        key = id(value)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = False  # cycle guard
        result = self._compute(value, depth)
        self.memo[key] = result
        return result

    def _compute(self, value: ir.Value, depth: int) -> bool:
        if value.const_value is not None:
            return True  # initializer (also old-opset ones listed as graph inputs)
        producer = value.producer()
        if producer is None or depth > 64:
            return False
        op = producer.op_type
        if producer.domain not in ("", "ai.onnx"):
            return False
        if op == "Constant":
            return True
        if op == "ConstantOfShape":
            return self.is_constant(producer.inputs[0], depth + 1) if producer.inputs else True
        if op in CONSTANT_PASSTHROUGH:
            data = [v for v in producer.inputs if v is not None]
            return bool(data) and all(self.is_constant(v, depth + 1) for v in data)
        return False


def _root_of_constant(value: ir.Value | None) -> ir.Value | None:
    """Follow a value already known to be constant back through its producers' first inputs
    to the initializer it comes from (None if the chain ends elsewhere)."""
    seen = 0
    while value is not None and value.const_value is None and seen < 16:
        p = value.producer()
        if p is None or not p.inputs:
            return None
        value = p.inputs[0]
        seen += 1
    return value


def weight_root(value: ir.Value | None) -> ir.Value | None:
    """The initializer a weight input comes from, through the ops exporters put in front of
    weights (``Transpose`` of a tied embedding, ``Cast``, ``DequantizeLinear``: see
    :data:`CONSTANT_PASSTHROUGH`; at most 8 of them); None for an activation or a computed
    constant. Cheap on activations: the walk ends at their first non-passthrough op."""
    root, seen = value, 0
    while root is not None and root.const_value is None and seen < 8:
        p = root.producer()  # a short walk first: activations end it at their first real op
        if p is None or p.op_type not in CONSTANT_PASSTHROUGH or p.domain not in ("", "ai.onnx") \
                or not p.inputs:
            return None
        root, seen = p.inputs[0], seen + 1
    if root is None or root.const_value is None:
        return None
    return root if _ConstCache().is_constant(value) else None


def _dtype_name(value: ir.Value | None) -> ir.DataType | None:
    if value is None:
        return None
    if value.dtype is not None:
        return value.dtype
    if value.const_value is not None:
        return value.const_value.dtype
    return None


def _shape(value: ir.Value | None) -> list[int | str | None] | None:
    """Dims as ints where known, the symbol name (or None) where not."""
    if value is None:
        return None
    shape = value.shape
    if shape is None and value.const_value is not None:
        shape = value.const_value.shape
    if shape is None:
        return None
    out: list[int | str | None] = []
    for d in shape:
        if isinstance(d, int):
            out.append(d)
        else:
            out.append(getattr(d, "value", None))
    return out


#: Work (M*N*K*batch) or element counts beyond this cannot be costed in floating point
#: (a float overflows at ~2**1024; the cost model multiplies by tiles, bytes and FLOPs/element).
_MAX_COUNT = 2**900


def _check_countable(path: str, what: str, *counts) -> None:
    """Raise InputError when dims are so large that FLOP or byte counts would overflow a float."""
    known = [abs(c) for c in counts if isinstance(c, int)]
    if known and math.prod(known) > _MAX_COUNT:
        from tclint.errors import InputError

        raise InputError(f"{path}: {what} too large to count FLOPs or bytes (product over 2^900); "
                         "is a dim corrupt?")


def _big(value) -> str:
    """A dim for a message: huge ones as a power of two."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"~2^{value.bit_length() - 1}"
    return str(value)


def _prod(dims) -> int | None:
    total = 1
    for d in dims:
        if not isinstance(d, int):
            return None
        total *= d
    return total


def _sym(dims) -> str:
    return "*".join(str(d) if d is not None else "?" for d in dims) or "1"


# --------------------------------------------------------------------------------------------
# Building the view
# --------------------------------------------------------------------------------------------
def node_label(node: ir.Node) -> str:
    """A name that is stable across runs: the node name, or op(first output) when unnamed."""
    if node.name:
        return node.name
    out = next((v.name for v in node.outputs if v is not None and v.name), "")
    return f"{node.op_type}({out})" if out else node.op_type


def iter_nodes(graph: ir.Graph | ir.Function, prefix: str = "") -> Iterator[tuple[str, ir.Node]]:
    """Every node with its path, recursing into If/Loop/Scan bodies."""
    for node in graph:
        path = f"{prefix}{node_label(node)}"
        yield path, node
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                yield from iter_nodes(attr.value, f"{path}/{attr.name}/")
            elif attr.type == ir.AttributeType.GRAPHS:
                for i, g in enumerate(attr.value):
                    yield from iter_nodes(g, f"{path}/{attr.name}[{i}]/")


class _Builder:
    def __init__(self, model: ir.Model, *, compute_precision: str) -> None:
        self.model = model
        self.const = _ConstCache()
        self.compute_precision = compute_precision
        self.layers: list[Layer] = []
        self.memory_ops: list[MemoryOp] = []
        self.uncovered: Counter = Counter()
        self.unresolved: Counter = Counter()
        self.first_layer_memo: dict[int, bool] = {}
        self.tied_weights = self._gathered_weights()

    # --- helpers -------------------------------------------------------------------------
    def precision_of(self, *values: ir.Value | None) -> str:
        for v in values:
            dt = _dtype_name(v)
            if dt in _PRECISION_OF:
                return _PRECISION_OF[dt]
        return self.compute_precision

    def _gathered_weights(self) -> set[int]:
        """Roots of weights also used by a Gather (tied input embedding / LM head)."""
        roots: set[int] = set()
        for node in self.model.graph.all_nodes():
            if node.op_type == "Gather" and node.inputs and node.inputs[0] is not None:
                if node.inputs[0].const_value is not None:
                    roots.add(id(node.inputs[0]))
        return roots

    def _weight_root(self, value: ir.Value | None) -> ir.Value | None:
        return _root_of_constant(value)

    def is_first_layer(self, value: ir.Value | None, depth: int = 0) -> bool:
        """True if ``value`` comes from a graph input through element-wise/layout ops only."""
        if value is None or depth > 16:
            return False
        if value.is_graph_input() and value.const_value is None:
            return True
        producer = value.producer()
        if producer is None:
            return False
        if producer.op_type not in {
            "Cast", "Sub", "Div", "Mul", "Add", "Transpose", "Identity", "Pad", "Clip",
            "BatchNormalization", "Resize", "Upsample", "Reshape", "DequantizeLinear",
            "QuantizeLinear", "Unsqueeze", "Slice",
        }:
            return False
        data = [v for v in producer.inputs if v is not None and not self.const.is_constant(v)]
        return bool(data) and all(self.is_first_layer(v, depth + 1) for v in data)

    def reaches_output_projection(self, node: ir.Node) -> bool:
        """Output flows (through element-wise/reshape ops) to a graph output or a
        Softmax/LogSoftmax/ArgMax/TopK over the N axis: an output/vocab projection."""
        frontier = list(node.outputs)
        for _ in range(6):
            nxt = []
            for v in frontier:
                if v is None:
                    continue
                if v.is_graph_output():
                    return True
                for user, _idx in v.uses():
                    if user.op_type in {"Softmax", "LogSoftmax", "ArgMax", "TopK", "ArgMin"}:
                        return True
                    if user.op_type in {"Add", "Reshape", "Cast", "Identity", "Mul", "Div",
                                        "Transpose", "Squeeze", "Flatten", "Tanh"}:
                        nxt.extend(user.outputs)
            frontier = nxt
        return False

    def add(self, node: ir.Node, path: str, *, m, n, k, batch, sources, weight_dims,
            precision, part="", role="", conv=None, m_sym="", n_sym="", k_sym="", batch_sym="",
            elements: float | None = None):
        # a negative dim (corrupt attributes, e.g. a kernel larger than its padded input) is unknown
        m, n, k, batch = (None if isinstance(v, int) and v < 0 else v for v in (m, n, k, batch))
        _check_countable(path, f"dims M={_big(m)} N={_big(n)} K={_big(k)} batch={_big(batch)} are",
                         m, n, k, batch)
        unresolved = {}
        for dim, val, sym in (("M", m, m_sym), ("N", n, n_sym), ("K", k, k_sym), ("batch", batch, batch_sym)):
            if val is None:
                unresolved[dim] = sym or "?"
        for name in _symbols(unresolved.values()):
            self.unresolved[name] += 1
        from tclint.specs import PRECISIONS  # local: specs imports nothing from here

        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        self.layers.append(Layer(
            op=op, name=node_label(node), path=path, part=part, m=m, n=n, k=k, batch=batch,
            precision=precision, elem_bytes=PRECISIONS[precision].bytes, sources=sources,
            unresolved=unresolved, weight_dims=frozenset(weight_dims), role=role, conv=conv,
            node=node, elements=elements if elements is not None else _gemm_elements(
                m, n, k, batch, weight_dims),
        ))

    # --- the ops -------------------------------------------------------------------------
    def visit(self, path: str, node: ir.Node) -> None:
        domain = node.domain or ""
        key = (domain if domain != "ai.onnx" else "", node.op_type)
        handler = _HANDLERS.get(key)
        if handler is not None:
            try:
                ok = handler(self, node, path)
            except (IndexError, ValueError, TypeError, ZeroDivisionError, KeyError):
                ok = False
            if ok is False:
                self.uncovered[_op_name(node)] += 1
            return
        if key[0] == "" or key in KNOWN_MEMORY_OPS:
            self.memory_ops.append(self._memory_op(node, path))
            return
        self.uncovered[_op_name(node)] += 1

    def _memory_op(self, node: ir.Node, path: str) -> MemoryOp:
        data_inputs = [v for v in node.inputs if v is not None]
        folded = node.op_type in VIEW_OPS or (
            bool(data_inputs) and all(self.const.is_constant(v) for v in data_inputs)
        )
        total = 0.0
        known = True
        for v in [*data_inputs, *node.outputs]:
            if v is None:
                continue
            dims = _shape(v)
            numel = _prod(dims) if dims is not None else None
            dt = _dtype_name(v)
            if numel is None or dt is None:
                known = False
                continue
            _check_countable(path, f"tensor {v.name!r} is", numel)
            total += numel * elem_bytes(dt, self.compute_precision)
        return MemoryOp(op=_op_name(node), path=path, bytes_moved=total if known else (total or None),
                        folded=folded, node=node)

    def matmul_like(self, node: ir.Node, path: str, a: ir.Value, b: ir.Value, *, trans_a=False,
                    trans_b=False, precision: str | None = None, part="", role="") -> bool:
        sa, sb = _shape(a), _shape(b)
        if sa is None or sb is None or not sa or not sb:
            if sb is not None and len(sb) >= 2 and self.const.is_constant(b):
                # activation shape unknown: K/N still come from the weight
                kdim, ndim = (sb[-1], sb[-2]) if trans_b else (sb[-2], sb[-1])
                self.add(node, path, m=None, n=_int(ndim), k=_int(kdim), batch=1,
                         sources={"N": "weight", "K": "weight"}, weight_dims={"N", "K"},
                         precision=precision or self.precision_of(a, b), part=part,
                         role=role or self._role(node, b), m_sym="?")
                return True
            return False
        if len(sa) == 1:
            sa = [1, sa[0]]
        if len(sb) == 1:
            sb = [sb[0], 1]
        if trans_a:
            sa = [*sa[:-2], sa[-1], sa[-2]]
        if trans_b:
            sb = [*sb[:-2], sb[-1], sb[-2]]
        b_const = self.const.is_constant(b)
        a_const = self.const.is_constant(a)
        precision = precision or self.precision_of(a, b)
        role = role or self._role(node, b)
        if b_const and len(sb) == 2:
            lead = sa[:-1]
            m = _prod(lead)
            self.add(node, path, m=m, n=_int(sb[1]), k=_int(sa[-1]) or _int(sb[0]), batch=1,
                     sources={"M": f"input0[{_sym(lead)}] (activation, leading dims flattened)",
                              "N": "input1[1] (weight)", "K": "input1[0] (weight)"},
                     weight_dims={"N", "K"}, precision=precision, part=part, role=role,
                     m_sym=_sym(lead))
            return True
        if a_const and len(sa) == 2 and not b_const:
            lead_b = sb[:-2]
            batch = _prod(lead_b)
            self.add(node, path, m=_int(sa[0]), n=_int(sb[-1]), k=_int(sa[1]), batch=batch,
                     sources={"M": "input0[0] (weight)", "K": "input0[1] (weight)",
                              "N": "input1[-1] (activation)"},
                     weight_dims={"M", "K"}, precision=precision, part=part, role=role,
                     n_sym=str(sb[-1]), batch_sym=_sym(lead_b))
            return True
        # batched GEMM: broadcast leading dims
        la, lb = sa[:-2], sb[:-2]
        lead = _broadcast(la, lb)
        batch = _prod(lead) if lead is not None else None
        if role == "":
            role = "attention_pv" if self._after_softmax(a) else "attention_qk"
        self.add(node, path, m=_int(sa[-2]), n=_int(sb[-1]), k=_int(sa[-1]) or _int(sb[-2]),
                 batch=batch,
                 sources={"M": "input0[-2] (activation)", "N": "input1[-1] (activation)",
                          "K": "input0[-1] (activation)", "batch": "broadcast leading dims"},
                 weight_dims=set() if not b_const else {"N", "K"}, precision=precision,
                 part=part, role=role, m_sym=str(sa[-2]), n_sym=str(sb[-1]),
                 k_sym=str(sa[-1]), batch_sym=_sym(lead or []))
        return True

    def _after_softmax(self, value: ir.Value | None, depth: int = 0) -> bool:
        if value is None or depth > 4:
            return False
        p = value.producer()
        if p is None:
            return False
        if p.op_type in {"Softmax", "LogSoftmax"}:
            return True
        if p.op_type in {"Cast", "Dropout", "Identity", "Where", "Mul", "Reshape"}:
            return self._after_softmax(p.inputs[0] if p.inputs else None, depth + 1)
        return False

    def _role(self, node: ir.Node, weight: ir.Value | None) -> str:
        if weight is not None and self.const.is_constant(weight):
            root = self._weight_root(weight)
            if root is not None and id(root) in self.tied_weights:
                return "lm_head"
            if self.reaches_output_projection(node):
                return "lm_head"
        return ""

    def conv_like(self, node: ir.Node, path: str, x: ir.Value, w: ir.Value, *,
                  layout: str = "NCHW", transpose: bool = False, precision: str | None = None) -> bool:
        sx, sw = _shape(x), _shape(w)
        if sw is None or len(sw) < 3:
            return False
        groups = attr_int(node, "group", 1)
        kernel = tuple(d if isinstance(d, int) else 0 for d in sw[2:])
        if transpose:
            c = _int(sw[0])
            k = _int(sw[1]) * groups if isinstance(sw[1], int) else None
        else:
            k = _int(sw[0])
            c = _int(sw[1]) * groups if isinstance(sw[1], int) else None
        ks = attr_ints(node, "kernel_shape")
        if layout == "NHWC" and not transpose and (ks is None or list(sw[1:-1]) == ks):
            # com.microsoft.NhwcConv: onnxruntime's kernel reads W as [K, kH, kW, C/g]
            kernel = tuple(d if isinstance(d, int) else 0 for d in sw[1:-1])
            c = _int(sw[-1]) * groups if isinstance(sw[-1], int) else None
        if sx is not None and len(sx) == len(sw):
            cx = sx[-1] if layout == "NHWC" else sx[1]
            if isinstance(cx, int):
                c = cx
        out = _shape(node.outputs[0]) if node.outputs else None
        if (out is None or len(out) != len(sw)) and sx is not None and len(sx) == len(sw) and not transpose:
            out = _conv_output_shape(node, sx, kernel, layout, k)
        if out is not None and len(out) == len(sw):
            spatial_out = out[1:-1] if layout == "NHWC" else out[2:]
            n_img = out[0]
            m = _prod([n_img, *spatial_out])
            m_sym = _sym([n_img, *spatial_out])
        else:
            m, m_sym = None, "N*P*Q"
        ci = ConvInfo(c=c, k=k, groups=groups, kernel=kernel, layout=layout,
                      first_layer=self.is_first_layer(x), transpose=transpose)
        spatial = math.prod(kernel) if all(kernel) else None
        x_n, w_n, y_n = _prod(sx or [None]), _prod(sw), _prod(out or [None])
        for count in (x_n, w_n, y_n):
            _check_countable(path, "tensor sizes are", count)
        elements = float(x_n + w_n + y_n) if None not in (x_n, w_n, y_n) else None
        n_gemm = None if k is None else k // groups
        k_gemm = None if c is None or spatial is None else (c // groups) * spatial
        self.add(node, path, m=m, n=n_gemm, k=k_gemm, batch=groups,
                 sources={"M": "N*P*Q (batch x output pixels)", "N": "K/g (weight dim 0)",
                          "K": "C/g*R*S (weight dim 1 x kernel)"},
                 weight_dims={"N", "K"}, precision=precision or self.precision_of(x, w),
                 conv=ci, m_sym=m_sym, elements=elements)
        return True


def _conv_output_shape(node: ir.Node, sx: list, kernel: tuple, layout: str, k) -> list | None:
    """Output shape of a (non-transposed) conv from its attributes, for ops shape inference
    does not know (com.microsoft.NhwcConv)."""
    spatial = sx[1:-1] if layout == "NHWC" else sx[2:]
    n = len(spatial)
    if not all(isinstance(d, int) for d in spatial) or not all(kernel):
        return None
    strides = list(attr_ints(node, "strides") or [1] * n)
    dil = list(attr_ints(node, "dilations") or [1] * n)
    pads = list(attr_ints(node, "pads") or [0] * (2 * n))
    auto = attr_str(node, "auto_pad", "NOTSET")
    out = []
    for i, d in enumerate(spatial):
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-d // strides[i]))
        else:
            eff = dil[i] * (kernel[i] - 1) + 1
            out.append((d + pads[i] + pads[i + n] - eff) // strides[i] + 1)
    return [sx[0], *out, k] if layout == "NHWC" else [sx[0], k, *out]


def attr_ints(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return [int(v) for v in attr.value] if attr is not None else None


def _gemm_elements(m, n, k, batch, weight_dims) -> float | None:
    if None in (m, n, k, batch):
        return None
    shared_b = "N" in weight_dims or "M" in weight_dims  # a weight is read once for all batches
    b = k * n if shared_b else k * n * batch
    return float(m * k * batch + b + m * n * batch)


def _symbols(values) -> list[str]:
    """Symbol names in dim expressions; names made up by shape inference (unk__N) become "?"."""
    names = []
    for v in values:
        for part in re.split(r"[*+\-/() ]+", str(v)):
            part = part.strip()
            if not part or part.isdigit():
                continue
            names.append("?" if part.startswith("unk__") or part == "None" else part)
    return sorted(set(names))


def _int(d) -> int | None:
    return d if isinstance(d, int) else None


def _broadcast(a: list, b: list) -> list | None:
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + list(a)
    b = [1] * (n - len(b)) + list(b)
    out = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif isinstance(x, int) and isinstance(y, int):
            raise ValueError("leading dims do not broadcast")
        else:
            out.append(x if isinstance(x, int) else y)
    return out


def attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return int(attr.value) if attr is not None else default


def attr_str(node: ir.Node, name: str, default: str) -> str:
    attr = node.attributes.get(name)
    if attr is None:
        return default
    v = attr.value
    return v.decode() if isinstance(v, bytes) else str(v)


def _op_name(node: ir.Node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def elem_bytes(dt: ir.DataType, compute_precision: str) -> float:
    if dt == ir.DataType.FLOAT:
        # a float32 model is checked as the precision it will be converted to
        return 4.0 if compute_precision == "tf32" else 2.0
    try:
        return dt.itemsize
    except Exception:
        return 4.0


def _inp(node: ir.Node, i: int) -> ir.Value | None:
    return node.inputs[i] if len(node.inputs) > i else None


# --- handlers: (domain, op) -> fn(builder, node, path) -> bool|None --------------------------
def _matmul(b: _Builder, node, path):
    return b.matmul_like(node, path, node.inputs[0], node.inputs[1])


def _matmul_int(b: _Builder, node, path):
    return b.matmul_like(node, path, node.inputs[0], node.inputs[1], precision="int8")


def _qlinear_matmul(b: _Builder, node, path):
    return b.matmul_like(node, path, node.inputs[0], node.inputs[3], precision="int8")


def _gemm(b: _Builder, node, path):
    return b.matmul_like(node, path, node.inputs[0], node.inputs[1],
                         trans_a=bool(attr_int(node, "transA", 0)),
                         trans_b=bool(attr_int(node, "transB", 0)))


def _fused_matmul(b: _Builder, node, path):
    return b.matmul_like(node, path, node.inputs[0], node.inputs[1],
                         trans_a=bool(attr_int(node, "transA", 0)),
                         trans_b=bool(attr_int(node, "transB", 0)))


def _conv(b: _Builder, node, path):
    return b.conv_like(node, path, node.inputs[0], node.inputs[1])


def _conv_transpose(b: _Builder, node, path):
    return b.conv_like(node, path, node.inputs[0], node.inputs[1], transpose=True)


def _conv_int(b: _Builder, node, path):
    return b.conv_like(node, path, node.inputs[0], node.inputs[1], precision="int8")


def _qlinear_conv(b: _Builder, node, path):
    return b.conv_like(node, path, node.inputs[0], node.inputs[3], precision="int8")


def _nhwc_conv(b: _Builder, node, path):
    return b.conv_like(node, path, node.inputs[0], node.inputs[1], layout="NHWC")


def _einsum(b: _Builder, node, path):
    eq = attr_str(node, "equation", "").replace(" ", "")
    if "->" not in eq or len(node.inputs) != 2 or "..." in eq:
        return False
    lhs, out = eq.split("->")
    terms = lhs.split(",")
    if len(terms) != 2:
        return False
    ta, tb = terms
    sa, sb = _shape(node.inputs[0]), _shape(node.inputs[1])
    if sa is None or sb is None or len(sa) != len(ta) or len(sb) != len(tb):
        return False
    size: dict[str, int | None] = {}
    for letters, shape in ((ta, sa), (tb, sb)):
        for ch, d in zip(letters, shape):
            if isinstance(d, int):
                size[ch] = d
            else:
                size.setdefault(ch, None)
    batch_l = [c for c in ta if c in tb and c in out]
    k_l = [c for c in ta if c in tb and c not in out]
    m_l = [c for c in ta if c not in tb and c in out]
    n_l = [c for c in tb if c not in ta and c in out]
    if not k_l:
        return False  # an outer product or reduction, not a GEMM
    dim = lambda ls: _prod([size.get(c) for c in ls])  # noqa: E731
    w_const = b.const.is_constant(node.inputs[1])
    b.add(node, path, m=dim(m_l), n=dim(n_l), k=dim(k_l), batch=dim(batch_l),
          sources={"M": f"{''.join(m_l)} of {ta}", "N": f"{''.join(n_l)} of {tb}",
                   "K": f"{''.join(k_l)} (contracted)", "batch": "".join(batch_l) or "1"},
          weight_dims={"N", "K"} if w_const else set(),
          precision=b.precision_of(*node.inputs), m_sym="".join(m_l), n_sym="".join(n_l),
          k_sym="".join(k_l), batch_sym="".join(batch_l))
    return True


def _rnn(gates: int):
    def handler(b: _Builder, node, path):
        x, w = node.inputs[0], node.inputs[1]
        sx, sw = _shape(x), _shape(w)
        if sw is None or len(sw) != 3:
            return False
        hidden = attr_int(node, "hidden_size", 0) or (
            sw[1] // gates if isinstance(sw[1], int) else None)
        dirs = _int(sw[0]) or 1
        layout = attr_int(node, "layout", 0)
        seq = batch = None
        if sx is not None and len(sx) == 3:
            seq, batch = (sx[0], sx[1]) if layout == 0 else (sx[1], sx[0])
        seq_i, batch_i = _int(seq), _int(batch)
        n = gates * hidden if hidden else None
        prec = b.precision_of(x, w)
        m_in = seq_i * batch_i if seq_i and batch_i else None
        b.add(node, path, m=m_in, n=n, k=_int(sw[2]), batch=dirs, part="input",
              sources={"M": "seq*batch", "N": f"{gates}*hidden", "K": "input_size (W)"},
              weight_dims={"N", "K"}, precision=prec, m_sym=f"{seq}*{batch}")
        b.add(node, path, m=batch_i, n=n, k=hidden,
              batch=(seq_i * dirs) if seq_i else None, part="recurrent",
              sources={"M": "batch", "N": f"{gates}*hidden", "K": "hidden (R)",
                       "batch": "seq steps x directions"},
              weight_dims={"N", "K"}, precision=prec, m_sym=str(batch), batch_sym=str(seq))
        return True

    return handler


def _attention_gemms(b: _Builder, node, path, *, batch, seq, kv_seq, heads, head, prec,
                     sym_b="batch", sym_s="seq"):
    bh = batch * heads if batch and heads else None
    src = {"M": "sequence", "N": "kv sequence", "K": "head_dim", "batch": "batch x heads"}
    b.add(node, path, m=seq, n=kv_seq, k=head, batch=bh, part="qk", role="attention_qk",
          sources=src, weight_dims=set(), precision=prec, m_sym=sym_s, n_sym=sym_s,
          k_sym="head_dim", batch_sym=f"{sym_b}*heads")
    b.add(node, path, m=seq, n=head, k=kv_seq, batch=bh, part="pv", role="attention_pv",
          sources={"M": "sequence", "N": "head_dim", "K": "kv sequence", "batch": "batch x heads"},
          weight_dims=set(), precision=prec, m_sym=sym_s, k_sym=sym_s,
          batch_sym=f"{sym_b}*heads")


def _ms_attention(b: _Builder, node, path):
    x, w = node.inputs[0], node.inputs[1]
    sx, sw = _shape(x), _shape(w)
    heads = attr_int(node, "num_heads", 0)
    if sw is None or len(sw) != 2 or not heads:
        return False
    qkv = node.attributes.get("qkv_hidden_sizes")
    hidden = int(qkv.value[0]) if qkv is not None else (sw[1] // 3 if isinstance(sw[1], int) else None)
    batch = seq = None
    if sx is not None and len(sx) == 3:
        batch, seq = _int(sx[0]), _int(sx[1])
    prec = b.precision_of(x, w)
    b.add(node, path, m=batch * seq if batch and seq else None, n=_int(sw[1]), k=_int(sw[0]),
          batch=1, part="qkv", role="attention_proj",
          sources={"M": "batch*seq", "N": "3*hidden (weight)", "K": "input hidden (weight)"},
          weight_dims={"N", "K"}, precision=prec, m_sym="batch*seq")
    head = hidden // heads if hidden else None
    _attention_gemms(b, node, path, batch=batch, seq=seq, kv_seq=seq, heads=heads, head=head, prec=prec)
    return True


def _mha(b: _Builder, node, path):
    q = node.inputs[0]
    k = _inp(node, 1)
    sq = _shape(q)
    heads = attr_int(node, "num_heads", 0)
    if sq is None or not heads:
        return False
    batch, seq = _int(sq[0]), _int(sq[1])
    kv = seq
    sk = _shape(k)
    if sk is not None and len(sk) >= 2 and isinstance(sk[-2 if len(sk) == 4 else 1], int):
        kv = sk[-2] if len(sk) == 4 else sk[1]
    if len(sq) == 3:
        hidden = _int(sq[2])
        head = hidden // heads if hidden else None
    else:  # packed [B, S, N, 3, H] / [B, N, S, H]
        head = _int(sq[-1])
    _attention_gemms(b, node, path, batch=batch, seq=seq, kv_seq=kv, heads=heads, head=head,
                     prec=b.precision_of(q))
    return True


def _gqa(b: _Builder, node, path):
    q = node.inputs[0]
    sq = _shape(q)
    heads = attr_int(node, "num_heads", 0)
    kv_heads = attr_int(node, "kv_num_heads", heads)
    if sq is None or len(sq) != 3 or not heads:
        return False
    hidden = _int(sq[2])
    packed = _inp(node, 1) is None
    head = None
    if hidden:
        head = hidden // (heads + 2 * kv_heads) if packed else hidden // heads
    _attention_gemms(b, node, path, batch=_int(sq[0]), seq=_int(sq[1]), kv_seq=_int(sq[1]),
                     heads=heads, head=head, prec=b.precision_of(q))
    return True


def _matmul_nbits(b: _Builder, node, path):
    a = node.inputs[0]
    sa = _shape(a)
    n, k = attr_int(node, "N", 0), attr_int(node, "K", 0)
    if not n or not k:
        return False
    lead = sa[:-1] if sa else []
    b.add(node, path, m=_prod(lead) if sa else None, n=n, k=k, batch=1,
          sources={"M": "input0 leading dims (activation)", "N": "attribute N", "K": "attribute K"},
          weight_dims={"N", "K"}, precision=b.precision_of(a), m_sym=_sym(lead),
          role=b._role(node, None))
    return True


def _dyn_quant_matmul(b: _Builder, node, path):
    return b.matmul_like(node, path, node.inputs[0], node.inputs[1], precision="int8")


MS = "com.microsoft"
_HANDLERS = {
    ("", "MatMul"): _matmul,
    ("", "Gemm"): _gemm,
    ("", "MatMulInteger"): _matmul_int,
    ("", "QLinearMatMul"): _qlinear_matmul,
    ("", "Conv"): _conv,
    ("", "ConvTranspose"): _conv_transpose,
    ("", "ConvInteger"): _conv_int,
    ("", "QLinearConv"): _qlinear_conv,
    ("", "Einsum"): _einsum,
    ("", "LSTM"): _rnn(4),
    ("", "GRU"): _rnn(3),
    ("", "RNN"): _rnn(1),
    (MS, "FusedMatMul"): _fused_matmul,
    (MS, "FusedConv"): _conv,
    (MS, "NhwcConv"): _nhwc_conv,
    (MS, "QLinearConv"): _qlinear_conv,
    (MS, "Attention"): _ms_attention,
    (MS, "MultiHeadAttention"): _mha,
    (MS, "GroupQueryAttention"): _gqa,
    (MS, "MatMulNBits"): _matmul_nbits,
    (MS, "DynamicQuantizeMatMul"): _dyn_quant_matmul,
    (MS, "MatMulIntegerToFloat"): _dyn_quant_matmul,
}

#: Ops the view turns into GEMM records (for docs and coverage reports).
GEMM_OPS = sorted(f"{d}.{o}" if d else o for d, o in _HANDLERS)


def model_float_dtype(model: ir.Model) -> str:
    """The model's main floating-point type, from its graph inputs, outputs and initializers."""
    counts: Counter = Counter()
    for v in [*model.graph.inputs, *model.graph.outputs]:
        if v.dtype is not None and v.dtype.is_floating_point():
            counts[v.dtype] += 1
    for v in model.graph.initializers.values():
        dt = v.const_value.dtype if v.const_value is not None else v.dtype
        if dt is not None and dt.is_floating_point():
            counts[dt] += 4
    if not counts:
        return "float32"
    dt = counts.most_common(1)[0][0]
    return {ir.DataType.FLOAT: "float32", ir.DataType.DOUBLE: "float64"}.get(dt, dt.name.lower())


def build_view(model: ir.Model, *, compute_precision: str = "fp16") -> ModelView:
    """Walk every node (subgraphs and model-local function bodies included) once."""
    b = _Builder(model, compute_precision=compute_precision)
    functions = {(f.domain, f.name, f.overload): f for f in model.functions.values()}
    count = 0
    for path, node in iter_nodes(model.graph):
        count += 1
        fn = functions.get((node.domain, node.op_type, node.overload))
        if fn is not None:
            count += _visit_function(b, functions, fn, f"{path}/", set(), node)
            continue
        b.visit(path, node)
    return ModelView(layers=b.layers, memory_ops=b.memory_ops, uncovered=b.uncovered,
                     unresolved_symbols=b.unresolved, float_dtype=model_float_dtype(model),
                     node_count=count)


def _visit_function(b: _Builder, functions, fn: ir.Function, prefix: str, stack: set,
                    call: ir.Node) -> int:
    """Walk a model-local function's body as called by ``call``: its parameters take the call
    site's shapes and constness for the duration of the walk."""
    key = (fn.domain, fn.name, fn.overload)
    if key in stack:
        return 0
    stack = stack | {key}
    saved = []
    for param, arg in zip(fn.inputs, call.inputs):
        saved.append((param, param.shape, param.dtype, b.const.memo.get(id(param))))
        if arg is not None:
            if arg.shape is not None:
                param.shape = arg.shape
            if param.dtype is None and arg.dtype is not None:
                param.dtype = arg.dtype
            b.const.memo[id(param)] = b.const.is_constant(arg)
    count = 0
    try:
        for path, node in iter_nodes(fn, prefix):
            count += 1
            inner = functions.get((node.domain, node.op_type, node.overload))
            if inner is not None:
                count += _visit_function(b, functions, inner, f"{path}/", stack, node)
            else:
                b.visit(path, node)
    finally:
        for param, shape, dtype, memo in saved:
            param.shape, param.dtype = shape, dtype
            if memo is None:
                b.const.memo.pop(id(param), None)
            else:
                b.const.memo[id(param)] = memo
    return count
