"""Channels-last (NHWC) layout for chains of convolutions, as an onnx-ir pass.

Tensor Core convolutions run in NHWC; an NCHW model pays a transpose around every conv inside
the runtime (domain.md section 2). :class:`NhwcLayoutPass` rewrites the model once so that
whole chains of convs, and the channel-wise ops between them, run channels-last with
``com.microsoft.NhwcConv`` (onnxruntime's CUDA contrib op), keeping a Transpose only where a
chain starts and where its result leaves it.

``com.microsoft.NhwcConv`` facts this module relies on (checked against onnxruntime's source):

- X and Y are NHWC; attributes are Conv's (group, pads, strides, dilations, kernel_shape,
  auto_pad); T is float16, float or double.
- W is **[M, kH, kW, C/group]** (OHWI), not Conv's [M, C/group, kH, kW]: the contrib schema's
  doc text is copied from Conv, but onnxruntime's own ``transformers/fusion_nhwc_conv.py``
  transposes W with perm [0, 2, 3, 1] before emitting NhwcConv, ``tools/symbolic_shape_infer.py``
  reads the kernel from ``W_shape[1:-1]`` for NhwcConv, and the CUDA kernel marks a constant W of
  a com.microsoft NhwcConv as already NHWC (``W_already_nhwc``; only the internal
  ``com.ms.internal.nhwc`` Conv transposes W itself in PrePack).
- Only the CUDA provider has a kernel: :func:`expand_nhwc_conv` turns each NhwcConv back into
  Transpose-Conv-Transpose so that the CPU provider can check the numbers.
- ``com.microsoft.NhwcMaxPool`` exists but is int8/uint8 only, so float pooling is expressed
  with standard ops (see the pass docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from tclint.passes import unique_name
from tclint.view import attr_int, attr_ints, attr_str

logger = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
NCHW_TO_NHWC = (0, 2, 3, 1)
NHWC_TO_NCHW = (0, 3, 1, 2)
#: NCHW axis -> the same axis in NHWC
_AXIS_TO_NHWC = (0, 3, 1, 2)

#: Element-wise ops with one data input (extra inputs, e.g. Clip's min/max, are scalars).
UNARY_OPS = frozenset({
    "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
    "Softplus", "Softsign", "ThresholdedRelu", "Gelu", "Mish", "Clip", "Identity", "Dropout",
    "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Cast", "Floor", "Ceil", "Round",
    "Sign", "Sin", "Cos",
})
#: Broadcasting element-wise ops (two or more data inputs).
BROADCAST_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Max", "Min", "Sum", "Mean"})
POOL_OPS = frozenset({"MaxPool", "AveragePool"})
GLOBAL_POOL_OPS = {"GlobalAveragePool": "ReduceMean", "GlobalMaxPool": "ReduceMax"}
#: ConstantOfShape outputs up to this size are evaluated (BN parameters, per-channel scales)
_MAX_FOLDED_ELEMENTS = 1 << 16
_CONV_DTYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE})


@dataclass(frozen=True)
class LayoutChange:
    """What one run of :class:`NhwcLayoutPass` did."""

    #: Conv nodes now running as com.microsoft.NhwcConv
    convs_converted: int
    #: activation Transposes the pass added that remain in the model (entrances and exits)
    transposes_inserted: int
    #: Transposes of the input model removed because they cancelled against the new layout
    transposes_removed: int
    #: graph inputs whose declared shape is now [N, H, W, C] (the model's signature changed)
    inputs_nhwc: tuple[str, ...] = ()
    #: other nodes now running channels-last (activations, pooling, BN, Concat, ...)
    ops_channels_last: int = 0
    #: BatchNormalization nodes folded into the preceding NhwcConv's weights and bias
    batchnorms_folded: int = 0
    #: exits where the tensor is [N, 1, 1, C]: a free Reshape instead of a Transpose
    reshape_exits: int = 0
    #: Conv nodes left in NCHW, with the reason: (node, reason)
    convs_skipped: tuple[tuple[str, str], ...] = ()

    @property
    def modified(self) -> bool:
        return bool(self.convs_converted or self.inputs_nhwc or self.transposes_removed)


class NhwcLayoutPass(ir.passes.InPlacePass):
    """Run chains of 2-D convolutions channels-last with com.microsoft.NhwcConv.

    Nodes are visited in topological order (main graph only; If/Loop/Scan bodies and functions
    stay as they are). A node joins the channels-last region when it has a rewrite below and,
    except for Conv, at least one data input that is already channels-last. Rewrite cases:

    1. Conv with a 4-D constant weight and a float type: ``com.microsoft.NhwcConv`` with the same
       attributes (``kernel_shape`` made explicit) and the weight transposed once to
       [M, kH, kW, C/g] (an initializer, computed lazily at save time; a weight that is not an
       initializer gets a constant Transpose node that onnxruntime folds). Other Convs (1-D/3-D,
       computed weights) stay NCHW and are listed in :attr:`LayoutChange.convs_skipped`.
    2. Element-wise ops with one data input (Relu, Clip, Sigmoid, Tanh, LeakyRelu, HardSwish,
       Cast, Dropout without a used mask, ...): unchanged, they are layout-agnostic.
    3. Broadcasting ops (Add, Sub, Mul, Div, Pow, PRelu, Max, Min, Sum, Mean): channels-last
       activations are used as they are (a residual Add of two NHWC tensors, a
       squeeze-excitation Mul of [N,H,W,C] by [N,1,1,C]); a constant of rank <= 4 is transposed
       the same way (a per-channel [C,1,1] becomes [C]); an NCHW activation of rank 4 from
       outside the region gets one entrance Transpose.
    4. BatchNormalization (inference form, constant parameters): folded into the preceding
       NhwcConv's weight and bias when that conv feeds only the BN; otherwise
       ``Mul(x, s) + t`` with per-channel [C] constants (s = scale/sqrt(var+eps),
       t = B - mean*s).
    5. MaxPool / AveragePool (2-D, one output): no float NHWC pooling op exists
       (com.microsoft.NhwcMaxPool is int8/uint8 only), so the [N,H,W,C] tensor is pooled as a
       [N,1,H,W,C] volume with a 3-D pool of kernel [kH,kW,1] (strides [sH,sW,1], pads
       [t,l,0,b,r,0], dilations [dH,dW,1]): Unsqueeze -> Pool3D -> Squeeze. Exact (the extra
       axis has kernel 1, stride 1, no padding, so ceil_mode and count_include_pad behave as in
       2-D), and one pass over the data instead of Transpose -> Pool -> Transpose (two extra
       full copies).
    6. GlobalAveragePool / GlobalMaxPool: ``ReduceMean`` / ``ReduceMax`` over axes [1, 2],
       keepdims=1 (exact, a standard op on every provider).
    7. Concat: the axis is mapped to its channels-last position (channels: 1 -> 3).
    8. Entrances: an NCHW tensor entering the region gets one ``Transpose(perm=[0,2,3,1])``,
       shared by all its channels-last consumers. With ``nhwc_inputs=True``, a 4-D graph input
       from which a Conv is reached through the ops above is declared [N,H,W,C] instead (the
       model's input signature changes on purpose), so no entrance Transpose remains.
    9. Exits: a channels-last tensor read by anything else (Flatten, Reshape, Gemm, Resize,
       a graph output, ...) gets one ``Transpose(perm=[0,3,1,2])`` shared by all such readers;
       when its spatial dims are known to be 1 ([N,1,1,C] after global pooling and 1x1 convs)
       a ``Reshape`` to [N,C,1,1] (no data movement) is used instead. Graph outputs keep their
       names, dtypes and shapes.
    10. Transpose pairs that compose to the identity (a model's own NHWC->NCHW input
        Transpose followed by an entrance, an exit followed by the model's own
        NCHW->NHWC Transpose) are removed.
    11. The ``com.microsoft`` opset (version 1) is imported when an NhwcConv is emitted.

    After :meth:`call`, :attr:`change` holds a :class:`LayoutChange`.
    """

    def __init__(self, *, nhwc_inputs: bool = False) -> None:
        super().__init__()
        self.nhwc_inputs = nhwc_inputs
        self.change: LayoutChange | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.change = _Rewriter(model, nhwc_inputs=self.nhwc_inputs).run()
        logger.info(
            "NHWC layout: %d convs converted, %d transposes inserted, %d removed, inputs %s",
            self.change.convs_converted, self.change.transposes_inserted,
            self.change.transposes_removed, list(self.change.inputs_nhwc) or "unchanged",
        )
        return ir.passes.PassResult(model, modified=self.change.modified)


def to_nhwc(model: ir.Model, *, nhwc_inputs: bool = False) -> LayoutChange:
    """Run :class:`NhwcLayoutPass` on ``model`` in place and return what it changed."""
    p = NhwcLayoutPass(nhwc_inputs=nhwc_inputs)
    p(model)
    assert p.change is not None
    return p.change


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------
def _perm_shape(shape: ir.Shape | None, perm: Sequence[int]) -> ir.Shape | None:
    if shape is None or len(shape) != len(perm):
        return None
    dims = list(shape)
    return ir.Shape([dims[p] for p in perm])


def _value(name: str, like: ir.Value, shape: ir.Shape | None) -> ir.Value:
    """A new value with ``like``'s type when its shape is known (a typed value without a shape
    trips onnxruntime's symbolic shape inference on conv outputs)."""
    return ir.Value(name=name, type=like.type if shape is not None else None, shape=shape)


def _rank(value: ir.Value) -> int | None:
    if value.shape is not None:
        return len(value.shape)
    if value.const_value is not None:
        return len(value.const_value.shape)
    return None


def _const_tensor(value: ir.Value | None, *, fixed_inputs: bool = False) -> ir.TensorProtocol | None:
    """The value's constant tensor: an initializer, a Constant node, or a small ConstantOfShape
    (how old model-zoo exports store parameters). An initializer that is also a graph input can
    be fed at run time, so it is not constant, except in IR version < 4 models
    (``fixed_inputs``), where every initializer is listed as an input and cannot be overridden
    (onnxruntime's ``Graph::CanOverrideInitializer`` is ``ir_version >= 4``)."""
    if value is None or (value.is_graph_input() and not (fixed_inputs and value.is_initializer())):
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:
        return None
    if tensor is not None:
        return tensor
    producer = value.producer()
    if producer is not None and producer.op_type == "ConstantOfShape" and producer.domain == "":
        shape = _const_tensor(producer.inputs[0], fixed_inputs=fixed_inputs) if producer.inputs else None
        if shape is None:
            return None
        dims = [int(d) for d in shape.numpy().reshape(-1)]
        if int(np.prod(dims)) > _MAX_FOLDED_ELEMENTS:
            return None
        fill = producer.attributes.get("value")
        fill_arr = fill.value.numpy().reshape(-1) if fill is not None else np.zeros(1, np.float32)
        return ir.tensor(np.full(dims, fill_arr[0], dtype=fill_arr.dtype))
    if producer is not None and producer.op_type in ("Unsqueeze", "Reshape", "Identity") and producer.domain == "":
        # exporters reshape per-channel parameters: Unsqueeze(scale, axes=[1, 2]) -> [C, 1, 1]
        ins = [_const_tensor(v, fixed_inputs=fixed_inputs) for v in producer.inputs if v is not None]
        if not ins or any(t is None for t in ins) or ins[0].size > _MAX_FOLDED_ELEMENTS:
            return None
        data = ins[0].numpy()
        if producer.op_type == "Identity":
            return ir.tensor(data)
        if producer.op_type == "Reshape":
            if len(ins) != 2 or 0 in ins[1].numpy():
                return None
            return ir.tensor(data.reshape([int(d) for d in ins[1].numpy()]))
        axes = attr_ints(producer, "axes")
        if axes is None and len(ins) == 2:
            axes = [int(a) for a in ins[1].numpy().reshape(-1)]
        if axes is None:
            return None
        rank = data.ndim + len(axes)
        for a in sorted(a % rank for a in axes):
            data = np.expand_dims(data, a)
        return ir.tensor(data)
    return None


def _used_outputs(node: ir.Node) -> list[int]:
    return [i for i, v in enumerate(node.outputs) if v.uses() or v.is_graph_output()]


def _is_identity(perm: Sequence[int]) -> bool:
    return list(perm) == list(range(len(perm)))


def _lazy(func: Callable[[], np.ndarray], dtype: ir.DataType, shape: Sequence[int], name: str) -> ir.LazyTensor:
    return ir.LazyTensor(lambda: ir.tensor(func(), name=name), dtype=dtype, shape=ir.Shape(list(shape)),
                         name=name)


# --------------------------------------------------------------------------------------------
# The rewrite
# --------------------------------------------------------------------------------------------
class _Rewriter:
    def __init__(self, model: ir.Model, *, nhwc_inputs: bool) -> None:
        self.model = model
        self.graph = model.graph
        self.nhwc_inputs = nhwc_inputs
        #: IR < 4: initializers are listed as graph inputs and are constants
        self.fixed_inputs = model.ir_version is not None and model.ir_version < 4
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        self.names: set[str] = set()
        for node in self.graph.all_nodes():
            if node.name:
                self.names.add(node.name)
            for v in node.outputs:
                if v.name:
                    self.names.add(v.name)
        for v in [*self.graph.inputs, *self.graph.outputs, *self.graph.initializers.values()]:
            if v.name:
                self.names.add(v.name)
        #: NCHW value of the original graph -> its channels-last twin
        self.nhwc: dict[ir.Value, ir.Value] = {}
        #: channels-last values whose H and W are known to be 1
        self.spatial_one: set[ir.Value] = set()
        self.region: list[ir.Node] = []  # original nodes replaced
        self.new_nodes: set[ir.Node] = set()
        self.pending: list[ir.Node] = []  # new nodes to insert before the node being rewritten
        self.entrances: dict[ir.Value, ir.Value] = {}
        self.const_cache: dict[tuple[int, bool], ir.Value] = {}
        self.weight_cache: dict[ir.Value, ir.Value] = {}
        self.inserted_transposes: set[ir.Node] = set()
        #: NhwcConv node -> (its OHWI weight initializer, created by this pass)
        self.conv_weights: dict[ir.Node, ir.Value] = {}
        self.replaced_initializers: set[ir.Value] = set()
        self.convs = 0
        self.ops = 0
        self.folded = 0
        self.reshape_exits = 0
        self.skipped: list[tuple[str, str]] = []
        self.inputs_nhwc: list[str] = []

    def _const(self, value: ir.Value | None) -> ir.TensorProtocol | None:
        return _const_tensor(value, fixed_inputs=self.fixed_inputs)

    def _const_bias(self, conv: ir.Node) -> ir.TensorProtocol | None:
        return self._const(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else None

    def _drop_initializer(self, value: ir.Value) -> None:
        """Remove an initializer nothing reads any more (and its IR < 4 graph-input entry)."""
        if value.uses() or value.is_graph_output() or not value.is_initializer():
            return
        if value.is_graph_input():
            if not self.fixed_inputs:
                return  # a real, feedable input: part of the signature
            self.graph.inputs.remove(value)
        self.graph.initializers.pop(value.name, None)

    # --- naming and value creation ------------------------------------------------------
    def _name(self, hint: str) -> str:
        return unique_name(self.names, hint or "nhwc")

    def _nhwc_value(self, like: ir.Value) -> ir.Value:
        """A new channels-last value mirroring the NCHW value ``like`` (dtype, permuted shape)."""
        shape = _perm_shape(like.shape, NCHW_TO_NHWC) if like.type is not None else None
        return _value(self._name(f"{like.name or 'value'}_nhwc"), like, shape)

    def _initializer(self, tensor: ir.TensorProtocol, hint: str) -> ir.Value:
        name = self._name(hint)
        tensor.name = name
        value = ir.Value(name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(list(tensor.shape)),
                         const_value=tensor)
        self.graph.register_initializer(value)
        if self.fixed_inputs:
            self.graph.inputs.append(value)
        return value

    def _ints(self, values: Sequence[int], hint: str) -> ir.Value:
        return self._initializer(ir.tensor(np.asarray(values, dtype=np.int64)), hint)

    def _add(self, node: ir.Node) -> ir.Node:
        if not node.name:
            node.name = self._name(f"{node.op_type}_nhwc")
        self.pending.append(node)
        self.new_nodes.add(node)
        return node

    def _transpose(self, x: ir.Value, perm: Sequence[int], out: ir.Value) -> ir.Node:
        node = ir.Node("", "Transpose", [x], attributes=[ir.AttrInt64s("perm", list(perm))],
                       outputs=[out], name=self._name(f"Transpose_{x.name or 'x'}"))
        self.inserted_transposes.add(node)
        self.new_nodes.add(node)
        return node

    # --- inputs of region nodes ---------------------------------------------------------
    def _enter(self, value: ir.Value) -> ir.Value:
        """The channels-last twin of an NCHW 4-D tensor from outside the region."""
        if value in self.nhwc:
            return self.nhwc[value]
        if value not in self.entrances:
            out = self._nhwc_value(value)
            self.pending.append(self._transpose(value, NCHW_TO_NHWC, out))
            self.entrances[value] = out
        return self.entrances[value]

    def _nhwc_const(self, value: ir.Value, *, keep_rank: bool) -> ir.Value | None:
        """A constant laid out channels-last for broadcasting against NHWC tensors."""
        tensor = self._const(value)
        if tensor is None or len(tensor.shape) > 4:
            return None
        shape = [int(d) for d in tensor.shape]
        if not keep_rank and all(d == 1 for d in shape):
            return value  # a scalar broadcasts the same in any layout
        key = (id(value), keep_rank)
        if key in self.const_cache:
            return self.const_cache[key]
        full = [1] * (4 - len(shape)) + shape
        new_shape = [full[p] for p in NCHW_TO_NHWC]
        if not keep_rank:
            while len(new_shape) > 1 and new_shape[0] == 1:
                new_shape = new_shape[1:]

        def compute(t=tensor, full=full, new_shape=new_shape):
            return t.numpy().reshape(full).transpose(NCHW_TO_NHWC).reshape(new_shape)

        hint = f"{value.name or 'const'}_nhwc"
        out = self._initializer(_lazy(compute, tensor.dtype, new_shape, hint), hint)
        self.const_cache[key] = out
        return out

    def _classify(self, value: ir.Value | None, *, keep_rank: bool) -> str | None:
        """How a data input can be fed to a channels-last node, or None if it cannot."""
        if value is None:
            return None
        if value in self.nhwc:
            return "nhwc"
        tensor = self._const(value)
        if tensor is not None:
            if len(tensor.shape) > 4 or (keep_rank and len(tensor.shape) != 4):
                return None
            return "const"
        if _rank(value) == 4:
            return "enter"
        return None

    def _feed(self, value: ir.Value, kind: str, *, keep_rank: bool) -> ir.Value:
        if kind == "nhwc":
            return self.nhwc[value]
        if kind == "const":
            out = self._nhwc_const(value, keep_rank=keep_rank)
            assert out is not None
            return out
        return self._enter(value)

    def _is_spatial_one(self, value: ir.Value, kind: str) -> bool:
        if kind == "nhwc":
            return self.nhwc[value] in self.spatial_one
        if kind == "const":
            tensor = self._const(value)
            full = [1] * (4 - len(tensor.shape)) + [int(d) for d in tensor.shape]
            return full[2] == 1 and full[3] == 1
        return _known_spatial_one(value)

    def _output(self, old: ir.Value, new: ir.Value, *, spatial_one: bool = False) -> None:
        self.nhwc[old] = new
        if spatial_one or _known_spatial_one(old):
            self.spatial_one.add(new)

    # --- the walk -----------------------------------------------------------------------
    def run(self) -> LayoutChange:
        graph = self.graph
        graph.sort()
        if any(n.op_type == "Conv" and n.outputs[0].shape is None for n in graph):
            # shapes let every new value carry its NHWC shape (the view and onnxruntime's
            # symbolic inference of NhwcConv need them); structure only, weights are not read
            from tclint.errors import TclintError
            from tclint.load import resolve_shapes

            try:
                resolve_shapes(self.model)
            except TclintError as exc:
                logger.info("shape inference before the NHWC rewrite failed: %s", exc)
        transposes_before = {n for n in graph if n.op_type == "Transpose" and n.domain == ""}
        if self.nhwc_inputs:
            for x in graph.inputs:
                if x.is_initializer() or x.shape is None or len(x.shape) != 4:
                    continue
                if x.dtype is None or not x.dtype.is_floating_point() or not _reaches_conv(x):
                    continue
                self.nhwc[x] = x
                self.inputs_nhwc.append(x.name)
        handlers = {
            "Conv": self._conv, "BatchNormalization": self._batchnorm, "Concat": self._concat,
            **{op: self._unary for op in UNARY_OPS}, **{op: self._broadcast for op in BROADCAST_OPS},
            **{op: self._pool for op in POOL_OPS}, **{op: self._global_pool for op in GLOBAL_POOL_OPS},
        }
        for node in list(graph):
            handler = handlers.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                continue
            self.pending = []
            if handler(node):
                graph.insert_before(node, self.pending)
                self.region.append(node)
            else:
                assert not self.pending, "a handler that declines must not create nodes"
        self._add_exits()
        for x in graph.inputs:
            if x in self.nhwc and self.nhwc[x] is x:
                x.shape = _perm_shape(x.shape, NCHW_TO_NHWC)
        self._remove_region()
        removed_original = self._cancel_transposes(transposes_before)
        if any(n.op_type == "NhwcConv" and n.domain == MS_DOMAIN for n in graph):
            self.model.opset_imports.setdefault(MS_DOMAIN, 1)
        graph.sort()
        inserted = sum(1 for n in self.inserted_transposes if n.graph is graph)
        return LayoutChange(
            convs_converted=self.convs, transposes_inserted=inserted,
            transposes_removed=removed_original, inputs_nhwc=tuple(self.inputs_nhwc),
            ops_channels_last=self.ops, batchnorms_folded=self.folded,
            reshape_exits=self.reshape_exits, convs_skipped=tuple(self.skipped),
        )

    # --- handlers: return True when the node was rewritten --------------------------------
    def _conv(self, node: ir.Node) -> bool:
        label = node.name or node.op_type
        x, w = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        if x is None or w is None:
            return False
        w_tensor = self._const(w)
        w_shape = _weight_shape(node, w, w_tensor)
        if w_shape is None or len(w_shape) != 4:
            self.skipped.append((label, "not a 2-D convolution (weight is not 4-D)"))
            return False
        dtype = w_tensor.dtype if w_tensor is not None else (w.dtype or x.dtype)
        if dtype is not None and dtype not in _CONV_DTYPES:
            self.skipped.append((label, f"NhwcConv has no kernel for {dtype}"))
            return False
        if w_tensor is not None and w.is_initializer():
            w_new = self._ohwi_initializer(w, w_tensor)
        elif _is_constant(w):
            w_new = self._nhwc_value(w)
            if w_new.type is not None and all(isinstance(d, int) for d in w_shape):
                w_new.shape = ir.Shape([w_shape[p] for p in NCHW_TO_NHWC])
            weight_t = ir.Node("", "Transpose", [w], attributes=[ir.AttrInt64s("perm", list(NCHW_TO_NHWC))],
                               outputs=[w_new], name=self._name(f"Transpose_{w.name or 'w'}_ohwi"))
            self._add(weight_t)
        else:
            self.skipped.append((label, "weight is computed at run time"))
            return False
        x_new = self._feed(x, "nhwc" if x in self.nhwc else "enter", keep_rank=True)
        attrs = list(node.attributes.values())
        if "kernel_shape" not in node.attributes and all(isinstance(d, int) for d in w_shape[2:]):
            attrs.append(ir.AttrInt64s("kernel_shape", [int(d) for d in w_shape[2:]]))
        y = node.outputs[0]
        y_new = self._nhwc_value(y)
        inputs = [x_new, w_new, *node.inputs[2:3]]
        conv = self._add(ir.Node(MS_DOMAIN, "NhwcConv", inputs, attributes=attrs, outputs=[y_new],
                                 name=self._name(f"{node.name}_nhwc" if node.name else "NhwcConv")))
        if w_tensor is not None and w.is_initializer():
            self.conv_weights[conv] = w_new
        kernel = list(w_shape[2:])
        pads = attr_ints(node, "pads") or [0, 0, 0, 0]
        one = (x in self.nhwc and self.nhwc[x] in self.spatial_one and kernel == [1, 1]
               and not any(pads) and attr_str(node, "auto_pad", "NOTSET") in ("NOTSET", "VALID"))
        self._output(y, y_new, spatial_one=one)
        self.convs += 1
        return True

    def _ohwi_initializer(self, w: ir.Value, tensor: ir.TensorProtocol) -> ir.Value:
        if w not in self.weight_cache:
            shape = [int(tensor.shape[p]) for p in NCHW_TO_NHWC]
            hint = f"{w.name or 'weight'}_ohwi"
            lazy = _lazy(lambda t=tensor: np.ascontiguousarray(t.numpy().transpose(NCHW_TO_NHWC)),
                         tensor.dtype, shape, hint)
            self.weight_cache[w] = self._initializer(lazy, hint)
            self.replaced_initializers.add(w)
        return self.weight_cache[w]

    def _unary(self, node: ir.Node) -> bool:
        x = node.inputs[0] if node.inputs else None
        if x is None or x not in self.nhwc or _used_outputs(node) != [0]:
            return False
        y = node.outputs[0]
        y_new = self._nhwc_value(y)
        self._add(ir.Node(node.domain, node.op_type, [self.nhwc[x], *node.inputs[1:]],
                          attributes=list(node.attributes.values()), outputs=[y_new],
                          name=self._name(f"{node.name}_nhwc" if node.name else "")))
        self._output(y, y_new, spatial_one=self.nhwc[x] in self.spatial_one)
        self.ops += 1
        return True

    def _broadcast(self, node: ir.Node) -> bool:
        if len(node.outputs) != 1:
            return False
        kinds = [self._classify(v, keep_rank=False) for v in node.inputs]
        if None in kinds or "nhwc" not in kinds:
            return False
        one = all(self._is_spatial_one(v, k) for v, k in zip(node.inputs, kinds))
        inputs = [self._feed(v, k, keep_rank=False) for v, k in zip(node.inputs, kinds)]
        y = node.outputs[0]
        y_new = self._nhwc_value(y)
        self._add(ir.Node(node.domain, node.op_type, inputs, attributes=list(node.attributes.values()),
                          outputs=[y_new], name=self._name(f"{node.name}_nhwc" if node.name else "")))
        self._output(y, y_new, spatial_one=one)
        self.ops += 1
        return True

    def _concat(self, node: ir.Node) -> bool:
        kinds = [self._classify(v, keep_rank=True) for v in node.inputs]
        if None in kinds or "nhwc" not in kinds:
            return False
        axis = attr_int(node, "axis", 1)
        if not -4 <= axis < 4:
            return False
        one = all(self._is_spatial_one(v, k) for v, k in zip(node.inputs, kinds))
        inputs = [self._feed(v, k, keep_rank=True) for v, k in zip(node.inputs, kinds)]
        y = node.outputs[0]
        y_new = self._nhwc_value(y)
        self._add(ir.Node("", "Concat", inputs, attributes=[ir.AttrInt64("axis", _AXIS_TO_NHWC[axis % 4])],
                          outputs=[y_new], name=self._name(f"{node.name}_nhwc" if node.name else "")))
        self._output(y, y_new, spatial_one=one)
        self.ops += 1
        return True

    def _batchnorm(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        if (x not in self.nhwc or _used_outputs(node) != [0] or attr_int(node, "training_mode", 0)
                or not attr_int(node, "spatial", 1)):  # opset < 9 per-activation BN
            return False
        params = [self._const(v) for v in node.inputs[1:5]]
        if len(params) != 4 or any(p is None or len(p.shape) != 1 for p in params):
            return False
        scale, bias, mean, var = (p.numpy().astype(np.float64) for p in params)
        eps = float(node.attributes["epsilon"].value) if "epsilon" in node.attributes else 1e-5
        s = scale / np.sqrt(var + eps)
        t = bias - mean * s
        y = node.outputs[0]
        producer = self.nhwc[x].producer()
        foldable = producer in self.conv_weights and (
            len(producer.inputs) < 3 or producer.inputs[2] is None or self._const_bias(producer) is not None)
        if foldable and len(x.uses()) == 1 and not x.is_graph_output():
            self._fold_into_conv(producer, s, t)
            self._output(y, self.nhwc[x])
            self.folded += 1
            self.ops += 1
            return True
        np_dtype = params[0].numpy().dtype
        s_v = self._initializer(ir.tensor(s.astype(np_dtype)), f"{node.name or 'bn'}_scale_nhwc")
        t_v = self._initializer(ir.tensor(t.astype(np_dtype)), f"{node.name or 'bn'}_shift_nhwc")
        mid = _value(self._name(f"{y.name or 'bn'}_scaled_nhwc"), y, _perm_shape(y.shape, NCHW_TO_NHWC))
        self._add(ir.Node("", "Mul", [self.nhwc[x], s_v], outputs=[mid],
                          name=self._name(f"{node.name}_mul_nhwc" if node.name else "")))
        y_new = self._nhwc_value(y)
        self._add(ir.Node("", "Add", [mid, t_v], outputs=[y_new],
                          name=self._name(f"{node.name}_add_nhwc" if node.name else "")))
        self._output(y, y_new, spatial_one=self.nhwc[x] in self.spatial_one)
        self.ops += 1
        return True

    def _fold_into_conv(self, conv: ir.Node, s: np.ndarray, t: np.ndarray) -> None:
        w_old = self.conv_weights[conv]
        w_tensor = w_old.const_value
        b_tensor = self._const_bias(conv)
        np_dtype = np.dtype(w_tensor.dtype.numpy())
        hint = f"{w_old.name}_bn"

        def weight(wt=w_tensor, s=s):
            return (wt.numpy().astype(np.float64) * s[:, None, None, None]).astype(np_dtype)

        w_new = self._initializer(_lazy(weight, w_tensor.dtype, list(w_tensor.shape), hint), hint)
        b0 = b_tensor.numpy().astype(np.float64) if b_tensor is not None else np.zeros_like(s)
        b_new = self._initializer(ir.tensor((b0 * s + t).astype(np_dtype)), f"{hint}_bias")
        conv.replace_input_with(1, w_new)
        if len(conv.inputs) < 3:
            conv.resize_inputs(3)
        conv.replace_input_with(2, b_new)
        self.conv_weights[conv] = w_new
        self._drop_initializer(w_old)

    def _pool(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        kernel = attr_ints(node, "kernel_shape")
        if x not in self.nhwc or kernel is None or len(kernel) != 2 or _used_outputs(node) != [0]:
            return False
        strides = attr_ints(node, "strides") or [1, 1]
        pads = attr_ints(node, "pads") or [0, 0, 0, 0]
        attrs = [ir.AttrInt64s("kernel_shape", [*kernel, 1]), ir.AttrInt64s("strides", [*strides, 1]),
                 ir.AttrInt64s("pads", [pads[0], pads[1], 0, pads[2], pads[3], 0])]
        dilations = attr_ints(node, "dilations")
        if dilations is not None:
            attrs.append(ir.AttrInt64s("dilations", [*dilations, 1]))
        for name in ("auto_pad", "ceil_mode", "count_include_pad", "storage_order"):
            if name in node.attributes:
                attrs.append(node.attributes[name])
        y = node.outputs[0]
        x5 = ir.Value(name=self._name(f"{x.name or 'x'}_nhwc5d"))
        self._add(self._unsqueeze_node(self.nhwc[x], x5))
        y5 = ir.Value(name=self._name(f"{y.name or 'y'}_nhwc5d"))
        self._add(ir.Node("", node.op_type, [x5], attributes=attrs, outputs=[y5],
                          name=self._name(f"{node.name}_nhwc" if node.name else "")))
        y_new = self._nhwc_value(y)
        self._add(self._squeeze_node(y5, y_new))
        self._output(y, y_new)
        self.ops += 1
        return True

    def _unsqueeze_node(self, x: ir.Value, out: ir.Value) -> ir.Node:
        if self.opset >= 13:
            return ir.Node("", "Unsqueeze", [x, self._ints([1], "axes_1")], outputs=[out])
        return ir.Node("", "Unsqueeze", [x], attributes=[ir.AttrInt64s("axes", [1])], outputs=[out])

    def _squeeze_node(self, x: ir.Value, out: ir.Value) -> ir.Node:
        if self.opset >= 13:
            return ir.Node("", "Squeeze", [x, self._ints([1], "axes_1")], outputs=[out])
        return ir.Node("", "Squeeze", [x], attributes=[ir.AttrInt64s("axes", [1])], outputs=[out])

    def _global_pool(self, node: ir.Node) -> bool:
        x = node.inputs[0]
        if x not in self.nhwc or _rank(x) not in (None, 4):
            return False
        op = GLOBAL_POOL_OPS[node.op_type]
        y = node.outputs[0]
        y_new = self._nhwc_value(y)
        keep = ir.AttrInt64("keepdims", 1)
        if self.opset >= 18:
            reduce = ir.Node("", op, [self.nhwc[x], self._ints([1, 2], "axes_hw")], attributes=[keep],
                             outputs=[y_new])
        else:
            reduce = ir.Node("", op, [self.nhwc[x]], attributes=[ir.AttrInt64s("axes", [1, 2]), keep],
                             outputs=[y_new])
        reduce.name = self._name(f"{node.name}_nhwc" if node.name else f"{op}_nhwc")
        self._add(reduce)
        self._output(y, y_new, spatial_one=True)
        self.ops += 1
        return True

    # --- exits, removal, clean-up -------------------------------------------------------
    def _add_exits(self) -> None:
        graph = self.graph
        region = set(self.region)
        for old, new in list(self.nhwc.items()):
            outside = [(user, i) for user, i in old.uses()
                       if user not in region and user not in self.new_nodes]
            out_positions = [i for i, v in enumerate(graph.outputs) if v is old]
            if not outside and not out_positions:
                continue
            if old is new:  # a graph input made NHWC, still read in NCHW by someone
                exit_value = ir.Value(name=self._name(f"{old.name}_nchw"), type=old.type, shape=old.shape)
            else:
                exit_value = ir.Value(name=self._name(f"{old.name or 'value'}_nchw"), type=old.type,
                                      shape=old.shape)
            if new in self.spatial_one:
                shape = self._ints([0, -1, 1, 1], "shape_nchw_1x1")
                exit_node = ir.Node("", "Reshape", [new, shape], outputs=[exit_value],
                                    name=self._name(f"Reshape_{new.name}_nchw"))
                self.new_nodes.add(exit_node)
                self.reshape_exits += 1
            else:
                exit_node = self._transpose(new, NHWC_TO_NCHW, exit_value)
            producer = new.producer()
            if producer is not None:
                graph.insert_after(producer, exit_node)
            else:
                graph.insert_before(next(iter(graph)), exit_node)
            for user, i in outside:
                user.replace_input_with(i, exit_value)
            if out_positions:
                name = old.name
                old.name = self._name(f"{name}_replaced")
                exit_value.name = name
                for i in out_positions:
                    graph.outputs[i] = exit_value

    def _remove_region(self) -> None:
        graph = self.graph
        # initializers (weights, BN parameters, constants) only the removed nodes read
        consts = {v for node in self.region for v in node.inputs if v is not None and v.is_initializer()}
        graph.remove(self.region, safe=True)
        for w in consts | self.replaced_initializers:
            self._drop_initializer(w)

    def _cancel_transposes(self, original: set[ir.Node]) -> int:
        """Remove Transpose pairs that compose to the identity; count removed original ones."""
        graph = self.graph
        removed_original = 0
        changed = True
        while changed:
            changed = False
            for node in list(graph):
                if node.graph is not graph or node.op_type != "Transpose" or node.domain != "":
                    continue
                src = node.inputs[0]
                first = src.producer() if src is not None else None
                if first is None or first.op_type != "Transpose" or first.domain != "":
                    continue
                p1, p2 = attr_ints(first, "perm"), attr_ints(node, "perm")
                if p1 is None or p2 is None or len(p1) != len(p2):
                    continue
                if not _is_identity([p1[i] for i in p2]):
                    continue
                out = node.outputs[0]
                origin = first.inputs[0]
                if out.is_graph_output():
                    if origin.is_graph_input() or origin.is_graph_output() or origin.producer() is None:
                        continue  # would need an Identity to keep the output's name
                    name = out.name
                    out.name = self._name(f"{name}_replaced")
                    origin.name = name
                    origin.shape, origin.type = out.shape, out.type
                out.replace_all_uses_with(origin, replace_graph_outputs=True)
                graph.remove(node, safe=True)
                removed_original += node in original
                if not first.outputs[0].uses() and not first.outputs[0].is_graph_output():
                    graph.remove(first, safe=True)
                    removed_original += first in original
                changed = True
        return removed_original


def _weight_shape(conv: ir.Node, w: ir.Value, tensor: ir.TensorProtocol | None) -> list | None:
    """The conv weight's dims (ints or None), or only its rank from ``kernel_shape``."""
    if tensor is not None:
        return [int(d) for d in tensor.shape]
    if w.shape is not None:
        return [d if isinstance(d, int) else None for d in w.shape]
    kernel = attr_ints(conv, "kernel_shape")
    return None if kernel is None else [None, None, *kernel]


def _known_spatial_one(value: ir.Value) -> bool:
    shape = value.shape
    return shape is not None and len(shape) == 4 and shape[2] == 1 and shape[3] == 1


def _is_constant(value: ir.Value) -> bool:
    from tclint.view import _ConstCache  # the view's notion of "a weight"

    return _ConstCache().is_constant(value)


def _reaches_conv(x: ir.Value) -> bool:
    """A Conv with a 4-D weight is reached from ``x`` through ops the pass rewrites."""
    passable = UNARY_OPS | BROADCAST_OPS | POOL_OPS | set(GLOBAL_POOL_OPS) | {"BatchNormalization", "Concat"}
    seen: set[ir.Value] = set()
    frontier = [x]
    while frontier:
        v = frontier.pop()
        if v in seen:
            continue
        seen.add(v)
        for user, idx in v.uses():
            if user.domain not in ("", "ai.onnx"):
                continue
            if user.op_type == "Conv" and idx == 0:
                w = user.inputs[1] if len(user.inputs) > 1 else None
                if w is not None and len(_weight_shape(user, w, _const_tensor(w)) or ()) == 4:
                    return True
            elif user.op_type in passable:
                frontier.extend(user.outputs[:1])
    return False


# --------------------------------------------------------------------------------------------
# Verification helper: NhwcConv -> Transpose-Conv-Transpose
# --------------------------------------------------------------------------------------------
def expand_nhwc_conv(model: ir.Model) -> ir.Model:
    """A copy of ``model`` where each com.microsoft.NhwcConv is Transpose(NHWC->NCHW) ->
    Conv -> Transpose(NCHW->NHWC), with its [M, kH, kW, C/g] weight back in Conv's
    [M, C/g, kH, kW] layout, so that onnxruntime's CPU provider (no NhwcConv kernel) can run it.
    The input model is not modified (tensors are shared, not copied)."""
    out = model.clone()
    graph = out.graph
    names = {v.name for n in graph.all_nodes() for v in n.outputs if v.name}
    names |= {v.name for v in [*graph.inputs, *graph.initializers.values()] if v.name}
    names |= {n.name for n in graph.all_nodes() if n.name}

    def fresh(hint: str) -> str:
        return unique_name(names, hint)

    weights: dict[ir.Value, ir.Value] = {}
    for node in list(graph):
        if node.op_type != "NhwcConv" or node.domain != MS_DOMAIN:
            continue
        x, w = node.inputs[0], node.inputs[1]
        y = node.outputs[0]
        new_nodes: list[ir.Node] = []
        x_nchw = _value(fresh(f"{x.name}_nchw"), x, _perm_shape(x.shape, NHWC_TO_NCHW))
        new_nodes.append(ir.Node("", "Transpose", [x], attributes=[ir.AttrInt64s("perm", list(NHWC_TO_NCHW))],
                                 outputs=[x_nchw], name=fresh(f"{node.name}_in_nchw")))
        if w in weights:
            w_oihw = weights[w]
        elif w.const_value is not None and w.is_initializer() and not w.is_graph_input():
            t = w.const_value
            name = fresh(f"{w.name}_oihw")
            shape = [int(t.shape[p]) for p in NHWC_TO_NCHW]
            tensor = _lazy(lambda t=t: np.ascontiguousarray(t.numpy().transpose(NHWC_TO_NCHW)), t.dtype, shape, name)
            w_oihw = ir.Value(name=name, type=ir.TensorType(t.dtype), shape=ir.Shape(shape), const_value=tensor)
            graph.register_initializer(w_oihw)
            if out.ir_version is not None and out.ir_version < 4:
                graph.inputs.append(w_oihw)  # IR < 4 lists every initializer as an input
            weights[w] = w_oihw
        else:
            w_oihw = ir.Value(name=fresh(f"{w.name}_oihw"), type=w.type,
                              shape=_perm_shape(w.shape, NHWC_TO_NCHW) if w.type is not None else None)
            new_nodes.append(ir.Node("", "Transpose", [w], attributes=[ir.AttrInt64s("perm", list(NHWC_TO_NCHW))],
                                     outputs=[w_oihw], name=fresh(f"{node.name}_w_oihw")))
            weights[w] = w_oihw
        y_nchw = _value(fresh(f"{y.name}_nchw"), y, _perm_shape(y.shape, NHWC_TO_NCHW))
        new_nodes.append(ir.Node("", "Conv", [x_nchw, w_oihw, *node.inputs[2:]],
                                 attributes=list(node.attributes.values()), outputs=[y_nchw],
                                 name=fresh(f"{node.name}_conv")))
        y_new = ir.Value(name=fresh(f"{y.name}_nhwc"), type=y.type, shape=y.shape)
        new_nodes.append(ir.Node("", "Transpose", [y_nchw], attributes=[ir.AttrInt64s("perm", list(NCHW_TO_NHWC))],
                                 outputs=[y_new], name=fresh(f"{node.name}_out_nhwc")))
        graph.insert_before(node, new_nodes)
        if y.is_graph_output():
            name = y.name
            y.name = fresh(f"{name}_replaced")
            y_new.name = name
        y.replace_all_uses_with(y_new, replace_graph_outputs=True)
        graph.remove(node, safe=True)
    fixed_inputs = out.ir_version is not None and out.ir_version < 4
    for w in weights:
        if not w.is_initializer() or w.uses() or w.is_graph_output():
            continue
        if w.is_graph_input():
            if not fixed_inputs:
                continue
            graph.inputs.remove(w)
        graph.initializers.pop(w.name, None)
    return out
