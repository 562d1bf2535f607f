"""Exact Tensor Core padding of conv channels and GEMM dims, done in the weights.

The pass reads like Inductor's ``pad_mm``, at model level:

alignment (:func:`alignment`) -> padded length (:func:`padded_length`) -> CAN pad (:func:`can_pad`,
safety: the weight is a stored initializer the pass may rewrite) -> SHOULD pad
(:func:`plan_padding`, profit from :mod:`tclint.cost` on the whole plan: what each padded dim
gains in its layer and its consumers, net of the wider tensors it carries and of every inserted
Slice/Pad) -> rewrite (zero filters, carried channel maps, zero weight rows, Slices where needed).

``plan_padding`` is also what ``tclint check`` runs (in :func:`tclint.lint.analyse`, no rewrite,
no weight read): a finding fails the gate only when the padding this planner would do saves at
least ``--hot-threshold`` of the model's time, so check and fix make one decision.

Rewrite cases, in plain words:

1. Conv with output channels K (per group) not a multiple of the alignment: zero filters (and zero
   bias) are appended per group. Grouped convs keep their group structure.
2. The padded channels flow on through channel-wise ops, whose per-channel parameters are padded
   too: activations, Clip, BatchNormalization (scale 0, bias 0, mean 0, var 1) and
   InstanceNormalization (scale 0, bias 0), Add/Sub/Mul/Div/Max/Min/Sum with per-channel
   constants (Div pads its divisor with 1), pooling, Resize, Pad on other axes, Dropout,
   Identity, Cast, reductions and Softmax over other axes, Transpose/Unsqueeze/Squeeze (the map
   follows the axis), Slice/Split on other axes, and Add/Mul/Sum joining two tensors padded the
   same way. Padded channels hold finite values (zero filters give zeros; only ops that map
   finite values to finite values carry them).
3. A padded tensor that reaches a conv pads that conv's input channels with zero weights (per
   group; a depthwise conv gets one more zero group per padded channel). A padded tensor that
   reaches a MatMul/Gemm on its reduction axis pads the weight with zero rows.
4. A Concat along channels carries a channel map (where each original channel now sits), so a
   DenseNet-style concat of padded pieces needs no Slice; a Flatten (or Reshape to [N, -1]) of a
   padded [N, C, H, W] tensor carries the map into the next Gemm, whose padded rows are zero.
5. Anything else (Reshape, Softmax/reductions over channels, LayerNorm, Slice/Split of the
   channels, a graph output, ops the pass does not know) gets the original channels back through
   one Slice (or a Gather when the map is not a prefix), shared by all such consumers. A graph
   output keeps its name, type and shape.
6. First layer: a 3-channel image gets a 4th zero channel through a Pad node inside the graph
   (the model's inputs are unchanged) and the first conv a zero input channel.
7. MatMul/Gemm with a stored weight and N not aligned: zero weight columns (and bias); an LM head
   / vocab projection pads N to ``vocab_multiple`` (64) and its logits are sliced back before
   anything reads them. A weight shared with an embedding Gather (tied LM head) is padded as a
   copy for the head: the Gather keeps the original table, so negative and out-of-range token
   ids keep their meaning (Gather accepts [-V, V-1]).

Weights stay lazy: only the padded ones become :class:`onnx_ir.LazyTensor` (computed when saved).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from tclint.cost import LayerCost, layer_cost, layer_multiple, padded_length
from tclint.passes import unique_name
from tclint.view import VOCAB_MIN_N, Layer, MemoryOp, elem_bytes, node_label


logger = logging.getLogger(__name__)

__all__ = ["VOCAB_MIN_N", "PadChannelsPass", "PadPlan", "SeedDecision", "can_pad",
           "padded_length", "plan_padding", "topological_order"]

#: Ops that map finite values to finite values channel by channel, with no channel parameters.
_UNARY = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu", "Celu",
    "Gelu", "Erf", "Abs", "Neg", "Clip", "Identity", "Dropout", "Cast", "Softsign", "Sin", "Cos",
    "Floor", "Ceil", "Round", "Sign", "Mish", "ThresholdedRelu", "Shrink", "Swish",
})
#: Binary/variadic element-wise ops and the fill value for a padded per-channel constant.
_ELEMENTWISE_FILL = {"Add": 0.0, "Sub": 0.0, "Mul": 0.0, "Div": 1.0, "Max": 0.0, "Min": 0.0,
                     "Sum": 0.0, "Mean": 0.0, "PRelu": 0.0}
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
                    "GlobalLpPool"})
_REDUCES = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd",
                      "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare",
                      "ReduceLogSum"})


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PadChange:
    """One GEMM-like node whose weights were padded."""

    node: str
    op: str
    dims_before: dict[str, int]
    dims_after: dict[str, int]
    extra_flops: float | None  # per inference, with the analysed shapes (None: M unknown)
    extra_params: int
    reason: str  # which finding(s) / what carried the padding here

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "before": self.dims_before,
                "after": self.dims_after, "extra_flops": self.extra_flops,
                "extra_params": self.extra_params, "reason": self.reason}


@dataclass(frozen=True)
class InsertedNode:
    name: str
    op: str
    reason: str

    def to_dict(self) -> dict:
        return {"name": self.name, "op": self.op, "reason": self.reason}


@dataclass(frozen=True)
class SkippedLayer:
    node: str
    op: str
    dims: dict[str, int | None]
    reason: str

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "dims": self.dims, "reason": self.reason}


@dataclass(frozen=True)
class PadResult:
    changes: tuple[PadChange, ...]
    inserted: tuple[InsertedNode, ...]
    skipped: tuple[SkippedLayer, ...]
    #: (value, axis, new size) of every value whose shape the pass changed
    resized: tuple[tuple[ir.Value, int, int], ...] = ()


# --------------------------------------------------------------------------------------------
# Alignment and padded lengths (pure helpers, shared with the rules and the cost model)
# --------------------------------------------------------------------------------------------
def alignment(layer: Layer, target, *, vocab_multiple: int = 64) -> int:
    """The multiple a layer's weight dims should have (the same tiers the rules check)."""
    return layer_multiple(layer, target, vocab_multiple=vocab_multiple)


def is_vocab_projection(layer: Layer) -> bool:
    return layer.is_vocab_projection


# --------------------------------------------------------------------------------------------
# Channel maps
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ChannelMap:
    """Where the original channels of a padded tensor sit: ``pos[i]`` is the position of
    original channel ``i`` along ``axis`` (negative, counted from the end) of size ``padded``."""

    axis: int
    size: int
    padded: int
    pos: np.ndarray
    seeds: frozenset = frozenset()

    def same_layout(self, other: ChannelMap) -> bool:
        return (self.axis == other.axis and self.padded == other.padded
                and self.size == other.size and np.array_equal(self.pos, other.pos))

    @property
    def is_prefix(self) -> bool:
        return bool(np.array_equal(self.pos, np.arange(self.size)))


def _prefix_map(axis: int, size: int, padded: int, seeds=frozenset()) -> ChannelMap:
    return ChannelMap(axis, size, padded, np.arange(size), frozenset(seeds))


def _grouped_map(axis: int, groups: int, per_group: int, per_group_padded: int, seeds) -> ChannelMap:
    o = np.arange(groups * per_group)
    pos = (o // per_group) * per_group_padded + o % per_group
    return ChannelMap(axis, groups * per_group, groups * per_group_padded, pos, frozenset(seeds))


# --------------------------------------------------------------------------------------------
# Weights: where a GEMM's weight is stored, and whether the pass may rewrite it
# --------------------------------------------------------------------------------------------
@dataclass
class WeightRef:
    init: ir.Value  # the initializer holding the values
    transposed: bool  # the node reads Transpose(init) (perm [1, 0])
    transpose_node: ir.Node | None = None
    tied_gather: bool = False  # other uses are Gather(axis=0) reading rows (they keep the table)


def resolve_weight(value: ir.Value | None, graph: ir.Graph) -> tuple[WeightRef | None, str]:
    """The stored initializer behind a weight input, or (None, why not)."""
    if value is None:
        return None, "no weight input"
    chain_node = None
    transposed = False
    producer = value.producer()
    if value.const_value is None and producer is not None:
        if producer.op_type == "Transpose" and producer.domain in ("", "ai.onnx"):
            perm = producer.attributes.get("perm")
            src = producer.inputs[0]
            if perm is None or list(perm.value) != [1, 0] or src is None:
                return None, "weight is behind a Transpose that is not a 2-D transpose"
            if len(value.uses()) != 1:
                return None, "the transposed weight is shared by several nodes"
            chain_node, transposed, value = producer, True, src
            producer = value.producer()
        if producer is not None and value.const_value is None:
            if producer.op_type == "ConstantOfShape":
                return None, ("weight is computed by ConstantOfShape (no stored values); "
                              "tclint pads stored weights only")
            return None, f"weight is computed by {producer.op_type}, not stored"
    if value.const_value is None:
        return None, "weight is not a constant"
    if value.is_graph_input():
        return None, "weight is also a graph input (callers may override it)"
    if value.name not in graph.initializers or graph.initializers[value.name] is not value:
        return None, "weight is not an initializer of the main graph"
    expected = chain_node if chain_node is not None else None
    others = [(n, i) for n, i in value.uses() if n is not expected]
    tied = False
    if expected is not None and others:
        if all(n.op_type == "Gather" and i == 0 and _attr(n, "axis", 0) == 0 for n, i in others):
            tied = True
        else:
            return None, "weight is shared with other nodes"
    elif expected is None and len(value.uses()) > 1:
        return None, "weight is shared by several nodes"
    return WeightRef(value, transposed, chain_node, tied), ""


class MalformedModelError(ValueError):
    """The model is not valid ONNX where the pass needs to read it (e.g. a list as ``group``)."""


def _attr(node: ir.Node, name: str, default):
    a = node.attributes.get(name)
    if a is None:
        return default
    v = a.value
    v = v.decode() if isinstance(v, bytes) else v
    if isinstance(default, int) and not isinstance(v, int):
        raise MalformedModelError(f"node {node_label(node)!r}: attribute {name!r} must be an "
                                  f"integer, got {type(v).__name__}")
    return v


def _int_list(value) -> list[int] | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def _static_shape(value: ir.Value | None) -> list[int] | None:
    if value is None:
        return None
    shape = value.shape
    if shape is None and value.const_value is not None:
        shape = value.const_value.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    return [int(d) for d in shape]


def _rank(value: ir.Value | None) -> int | None:
    if value is None:
        return None
    shape = value.shape if value.shape is not None else (
        value.const_value.shape if value.const_value is not None else None)
    return None if shape is None else len(shape)


def _dim(value: ir.Value | None, axis: int):
    shape = value.shape if value is not None else None
    if shape is None and value is not None and value.const_value is not None:
        shape = value.const_value.shape
    if shape is None or not -len(shape) <= axis < len(shape):
        return None
    d = shape[axis]
    return int(d) if isinstance(d, int) else None


def _const_tensor(value: ir.Value | None):
    """The stored tensor behind a constant value (initializer or Constant node), no I/O."""
    if value is None:
        return None
    try:
        return ir.convenience.get_const_tensor(value)
    except (ValueError, TypeError):
        return None


#: The planner reads the values of small constants only (axes, pads, sizes, scales): never
#: external data, never a weight. ``check`` plans too and must stay structure-only.
_SMALL_CONST = 4096


def _const_array(value: ir.Value | None) -> np.ndarray | None:
    """A small in-memory constant's values, for planning (None: not one)."""
    tensor = _const_tensor(value)
    if tensor is None or isinstance(tensor, ir.ExternalTensor):
        return None
    try:
        if tensor.size > _SMALL_CONST:
            return None
        return np.asarray(tensor.numpy())
    except (ValueError, TypeError):  # stored bytes that do not match the declared type/shape
        return None


def _read_const(value: ir.Value | None) -> np.ndarray | None:
    """A constant's values, for rewriting (reads external data: only ``fix`` calls it)."""
    tensor = _const_tensor(value)
    if tensor is None:
        return None
    try:
        return np.asarray(tensor.numpy())
    except (ValueError, TypeError):
        return None


def _const_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The shape of a constant's values (None: not a readable constant). In-memory tensors are
    read (their stored length must match the declared dims); external ones are not opened."""
    if not _is_const(value):
        return None
    tensor = _const_tensor(value)
    if tensor is None:
        return None
    if isinstance(tensor, ir.ExternalTensor):
        return tuple(int(d) for d in tensor.shape)
    try:
        return np.asarray(tensor.numpy()).shape
    except (ValueError, TypeError):
        return None


def _is_const(value: ir.Value | None) -> bool:
    if value is None:
        return False
    if value.const_value is not None:
        return not value.is_graph_input()
    p = value.producer()
    return p is not None and p.op_type == "Constant"


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------
@dataclass
class _Seed:
    """A layer dim the pass wants to pad: "out" (conv K / GEMM N) or "in" (first-layer C)."""

    key: str  # unique id (label + kind)
    layer: Layer
    kind: str
    size: int
    padded: int
    cost: LayerCost | None


@dataclass
class _GemmEdit:
    node: ir.Node
    weight: WeightRef
    kind: str  # "conv", "matmul", "gemm"
    in_map: ChannelMap | None = None
    out_map: ChannelMap | None = None
    groups_after: int | None = None
    depthwise: bool = False
    input_pad: tuple[int, int] | None = None  # (original C, padded C) through a Pad node
    input_seed: str = ""  # the seed that asked for the input Pad
    seeds: frozenset = frozenset()


@dataclass
class _Plan:
    states: dict[ir.Value, ChannelMap] = field(default_factory=dict)
    edits: dict[ir.Node, _GemmEdit] = field(default_factory=dict)
    #: (node, input index, fill value, map, axis of the constant) -> pad that constant
    const_pads: list[tuple[ir.Node, int, float, ChannelMap, int]] = field(default_factory=list)
    #: (node, input index) -> replace a constant by a new one (Resize sizes) with a new array
    const_replace: list[tuple[ir.Node, int, np.ndarray]] = field(default_factory=list)
    #: value -> [(consumer, input index)] reading the original channels (None: graph output)
    restores: dict[ir.Value, list[tuple[ir.Node | None, int]]] = field(default_factory=dict)
    #: a reason string per restored value, for the report
    restore_why: dict[ir.Value, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # seed key -> why

    def seeds_of_restores(self) -> dict[str, list[ir.Value]]:
        out: dict[str, list[ir.Value]] = {}
        for v in self.restores:
            for s in self.states[v].seeds:
                out.setdefault(s, []).append(v)
        return out


# --------------------------------------------------------------------------------------------
# The decision: CAN pad, then SHOULD pad, judged on the whole plan
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedDecision:
    """What the planner decided for one dim it could pad (a layer's K/N, or a first layer's C)."""

    key: str  # "<layer label>#out" or "<layer label>#in"
    layer: str  # layer label
    op: str
    kind: str  # "out" (conv K, GEMM N) or "in" (a first layer's image channels)
    size: int
    padded: int
    status: str  # "fix", "no-gain" or "unsafe" (see tclint.rules.FIX_STATUSES)
    #: estimated net saving of padding it (gains minus inserted nodes and extra work), seconds;
    #: 0 for "unsafe" (no plan could be made)
    saving_s: float
    gain_s: float  # the alignment gains alone
    reason: str  # "" when padded
    #: the batch size from which the padding pays ("no-gain" only; None: not within 1024x)
    pays_from: int | None = None

    def to_dict(self) -> dict:
        return {"key": self.key, "layer": self.layer, "op": self.op, "kind": self.kind,
                "size": self.size, "padded": self.padded, "status": self.status,
                "saving_us": round(self.saving_s * 1e6, 3), "reason": self.reason,
                "pays_from": self.pays_from}


@dataclass
class PadPlan:
    """What the pad pass would do to a model and why: the one decision ``check``'s gate and
    ``tclint fix`` share (:func:`plan_padding`). Planning reads structure and shapes only."""

    plan: _Plan  # channel maps, edits and restores of the seeds kept
    seeds: dict[str, _Seed]  # the seeds kept (padded by the rewrite)
    decisions: dict[str, SeedDecision]  # every candidate seed, kept or not
    #: layer label -> the kept seeds whose padding reaches its input dim (conv C, GEMM K)
    carried: dict[str, frozenset[str]]
    #: layer label -> (why its input dim stays misaligned, the seeds whose padding would set it)
    unfixed: dict[str, tuple[str, tuple[str, ...]]]
    skipped: tuple[SkippedLayer, ...]
    total_s: float  # the model's estimated time before
    saving_s: float  # the kept plan's estimated net saving
    batch: int  # the batch the estimate is for (pays_from is in these units)

    @property
    def padded(self) -> bool:
        return bool(self.plan.edits or self.plan.restores)


def topological_order(graph: ir.Graph) -> list[ir.Node]:
    """The graph's nodes in a topological order (stable: the listed order where it is one).
    Values read inside a node's subgraphs count as its inputs. Raises :class:`MalformedModelError`
    on a cycle."""
    nodes = list(graph)
    index = {n: i for i, n in enumerate(nodes)}
    preds: dict[ir.Node, set] = {n: set() for n in nodes}
    for n in nodes:
        for v in _node_reads(n):
            p = v.producer() if v is not None else None
            if p is not None and p in index and p is not n:
                preds[n].add(p)
    users: dict[ir.Node, list] = {n: [] for n in nodes}
    for n, ps in preds.items():
        for p in ps:
            users[p].append(n)
    import heapq

    waiting = {n: len(ps) for n, ps in preds.items()}
    ready = [index[n] for n in nodes if waiting[n] == 0]
    heapq.heapify(ready)
    order: list[ir.Node] = []
    while ready:
        n = nodes[heapq.heappop(ready)]
        order.append(n)
        for u in users[n]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, index[u])
    if len(order) != len(nodes):
        stuck = next(n for n in nodes if waiting[n] > 0)
        raise MalformedModelError(f"the graph has a cycle (through node {node_label(stuck)!r})")
    return order


def _node_reads(node: ir.Node):
    yield from node.inputs
    for attr in node.attributes.values():
        graphs = []
        if attr.type == ir.AttributeType.GRAPH:
            graphs = [attr.value]
        elif attr.type == ir.AttributeType.GRAPHS:
            graphs = list(attr.value)
        for g in graphs:
            for inner in g.all_nodes():
                yield from inner.inputs


def plan_padding(
    model: ir.Model,
    layers: Iterable[tuple[Layer, LayerCost | None]],
    target,
    *,
    memory_ops: Iterable[MemoryOp] = (),
    total_s: float | None = None,
    vocab_multiple: int = 64,
    only: set[str] | None = None,
    force: bool = False,
) -> PadPlan:
    """CAN pad (:func:`can_pad`), then SHOULD pad, for every misaligned layer dim; nothing is
    rewritten and no weight is read.

    SHOULD pad judges the plan as a whole: the channel maps are propagated through the graph
    (:class:`_Planner`), and each padded dim is credited with what its padding changes in the
    cost model (:class:`_PlanCost`): the layer itself, the consumers whose input dim its padding
    fixes (or makes bigger), the channel-wise ops that carry the wider tensor, and every
    Slice/Gather/Pad the plan inserts. Dims whose net saving is not above :data:`MIN_NET_SAVING`
    of the model's time are dropped (with the reason, and the batch from which they would pay)
    and the rest is planned again, until every dim kept pays. ``force`` keeps every dim that can
    be padded. :func:`tclint.lint.analyse` calls this for ``check``'s gate and ``tclint fix``
    rewrites the plan it returns: one decision.

    ``layers``: the GEMM view's layers with their costs; ``memory_ops``: the view's other nodes
    (for the carried padding's extra bytes); ``only``: layer labels, or seed keys
    (``label#out``, ``label#in``), to consider (None: every misaligned layer).
    """
    with _weights_not_inputs(model):
        return _plan_padding(model, list(layers), target, memory_ops=memory_ops, total_s=total_s,
                             vocab_multiple=vocab_multiple, only=only, force=force)


class _weights_not_inputs:
    """IR version < 4 requires every initializer to be listed as a graph input too; those are
    weights, not inputs callers feed: hide them while planning or rewriting, list them again
    after (in their original order, followed by new initializers)."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.old_ir = model.ir_version is not None and model.ir_version < 4
        self.listed: list[ir.Value] = []

    def __enter__(self):
        if self.old_ir:
            self.listed = [v for v in self.model.graph.inputs if v.is_initializer()]
            for v in self.listed:
                self.model.graph.inputs.remove(v)
        return self

    def __exit__(self, *exc) -> None:
        if self.old_ir:
            graph = self.model.graph
            present = set(graph.initializers.values())
            for v in [*self.listed, *graph.initializers.values()]:
                if v in present and v not in graph.inputs:
                    graph.inputs.append(v)


def _plan_padding(model: ir.Model, layers: list, target, *, memory_ops, total_s, vocab_multiple,
                  only, force) -> PadPlan:
    graph = model.graph
    estimator = _PlanCost(layers, memory_ops, target)
    if total_s is None:
        total_s = sum(c.time_s for _, c in layers if c is not None)
    batch = _batch_of(graph)
    order: list[ir.Node] | None = None
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
    all_seeds: dict[str, _Seed] = {}
    seeds: dict[str, _Seed] = {}
    decisions: dict[str, SeedDecision] = {}
    for layer, cost in layers:
        for seed in _seeds_of(layer, cost, target, vocab_multiple):
            if only is not None and layer.label not in only and seed.key not in only:
                continue
            all_seeds[seed.key] = seed
            why = can_pad(layer, seed.kind, graph)
            if not why and seed.padded > _MAX_CHANNELS:
                why = f"{seed.size} channels: too many to plan"
            if why:
                decisions[seed.key] = _decision(seed, "unsafe", why)
            else:
                seeds[seed.key] = seed
    while True:
        if not seeds:
            plan, credit = _Plan(), _Credit()
            break
        if order is None:
            order = topological_order(graph)
        plan = _Planner(graph, seeds, opset, order).run()
        if plan.skipped:  # the planner met something it cannot pad: drop, plan again
            for key, why in plan.skipped.items():
                decisions[key] = _decision(all_seeds[key], "unsafe", why)
                seeds.pop(key, None)
            continue
        credit = estimator.credit(plan, seeds)
        if force:
            break
        floor = MIN_NET_SAVING * total_s
        losing = [k for k in seeds if credit.net(k) <= floor]
        if not losing:
            break
        pays = _pays_from(estimator, plan, seeds, losing, batch, floor)
        for key in losing:
            seed = seeds.pop(key)
            assumed = seed.cost is not None and seed.cost.assumed
            reason = _no_gain_reason(credit, key, batch, assumed, total_s)
            decisions[key] = _decision(seed, "no-gain", reason,
                                       saving_s=credit.net(key), gain_s=credit.gain[key],
                                       pays_from=pays.get(key))
    for key, seed in seeds.items():
        decisions[key] = _decision(seed, "fix", "", saving_s=credit.net(key), gain_s=credit.gain[key])
    carried = {}
    for node, edit in plan.edits.items():
        if edit.in_map is not None and edit.input_pad is None:
            entry = estimator.by_node.get(node)
            if entry is not None and _carried_aligns(entry[0], edit, target):
                carried[entry[0].label] = frozenset(edit.in_map.seeds)
    unfixed = _unfixed_inputs(layers, plan, seeds, target)
    rows: dict[tuple[str, str], SkippedLayer] = {}
    for key, d in decisions.items():
        if d.status != "fix":
            layer = all_seeds[key].layer
            rows.setdefault((layer.label, d.reason), SkippedLayer(
                node=layer.label, op=layer.op, dims=_layer_dims(layer), reason=d.reason))
    by_label = {layer.label: layer for layer, _ in layers}
    for label, (why, _producer) in unfixed.items():
        layer = by_label[label]
        rows.setdefault((label, why), SkippedLayer(node=label, op=layer.op,
                                                   dims=_layer_dims(layer), reason=why))
    return PadPlan(plan=plan, seeds=seeds, decisions=decisions, carried=carried, unfixed=unfixed,
                   skipped=tuple(rows.values()), total_s=total_s,
                   saving_s=sum(credit.net(k) for k in seeds), batch=batch)


def _decision(seed: _Seed, status: str, reason: str, *, saving_s: float = 0.0,
              gain_s: float = 0.0, pays_from: int | None = None) -> SeedDecision:
    return SeedDecision(key=seed.key, layer=seed.layer.label, op=seed.layer.op, kind=seed.kind,
                        size=seed.size, padded=seed.padded, status=status, saving_s=saving_s,
                        gain_s=gain_s, reason=reason, pays_from=pays_from)


def _no_gain_reason(credit: _Credit, key: str, batch: int, assumed: bool, total_s: float) -> str:
    gain, loss = credit.gain[key], credit.loss[key]
    at = f" at batch {batch}" + (" (unbound dims taken as 1: bind them with --dim)" if assumed else "")
    if gain <= 0:
        return (f"does not pay{at}: the cost model estimates no gain from aligning it "
                f"(its cost is {credit.bound.get(key, 'not compute')}-bound)")
    if gain > loss:
        share = (gain - loss) / total_s if total_s > 0 else 0.0
        return (f"does not pay{at}: saves {(gain - loss) * 1e6:.2f} us net ({share:.2%} of the "
                f"model's time), below the {MIN_NET_SAVING:.1%} a rewrite is worth")
    return (f"does not pay{at}: saves {gain * 1e6:.2f} us, the inserted Slice/Pad nodes and "
            f"wider tensors cost {loss * 1e6:.2f} us")


#: SHOULD pad keeps a dim only when its net saving is above this share of the model's estimated
#: time: below it the gain is within the cost model's error (its factors are estimates,
#: tclint.specs), and a rewrite that changes nothing measurable is not worth making.
#: (Inductor's pad_mm asks for a 10% gain on the GEMM itself, measured; this is the model-level,
#: estimated counterpart.)
MIN_NET_SAVING = 1e-3


#: Channel maps hold one position per channel: a dim above this is not planned (no real layer
#: has it; a corrupt model may claim 2^40).
_MAX_CHANNELS = 1 << 24

#: "pays from batch N" costs every layer again per scale: not searched on huge graphs.
_PAYS_FROM_MAX_LAYERS = 5000

#: "pays from batch N" is searched over these multiples of the bound batch.
_PAYS_FROM_SCALES = (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _pays_from(estimator: _PlanCost, plan: _Plan, seeds, keys: list[str], batch: int,
               floor_s: float) -> dict[str, int]:
    """The smallest batch (a power-of-two multiple of the bound one) at which each seed pays:
    its net saving clears the floor, scaled with the batch like the model's time."""
    found: dict[str, int] = {}
    todo = set(keys)
    if len(estimator.by_node) > _PAYS_FROM_MAX_LAYERS:
        return found
    for scale in _PAYS_FROM_SCALES:
        if not todo:
            break
        credit = estimator.credit(plan, seeds, scale=scale)
        floor_at_scale = MIN_NET_SAVING * estimator.total(scale)
        for key in list(todo):
            if credit.net(key) > floor_at_scale:
                found[key] = batch * scale
                todo.discard(key)
    return found


def _batch_of(graph: ir.Graph) -> int:
    """The batch the estimate is for: the leading dim of the first graph input, 1 when unknown."""
    for v in graph.inputs:
        if v.is_initializer() or v.shape is None or len(v.shape) == 0:
            continue
        d = v.shape[0]
        return int(d) if isinstance(d, int) and d > 0 else 1
    return 1


def _seeds_of(layer: Layer, cost: LayerCost | None, target, vocab_multiple: int) -> list[_Seed]:
    out = []
    align = alignment(layer, target, vocab_multiple=vocab_multiple)
    ci = layer.conv
    if ci is not None:
        if ci.depthwise or ci.transpose:
            return out
        kg = ci.k_per_group
        p = padded_length(kg, align)
        if p:
            out.append(_Seed(f"{layer.label}#out", layer, "out", kg, p, cost))
        if ci.first_layer and ci.groups == 1 and ci.c is not None and 1 <= ci.c < 4:
            out.append(_Seed(f"{layer.label}#in", layer, "in", ci.c, 4, cost))
        return out
    if "N" in layer.weight_dims and layer.part == "":
        p = padded_length(layer.n, align)
        if p:
            out.append(_Seed(f"{layer.label}#out", layer, "out", layer.n, p, cost))
    return out


def _carried_aligns(layer: Layer, edit: _GemmEdit, target) -> bool:
    """The carried channel map leaves the consumer's input dim (per group) aligned."""
    if edit.in_map is None:
        return False
    groups = edit.groups_after or (layer.conv.groups if layer.conv is not None else 1)
    if layer.conv is not None and layer.conv.depthwise:
        return True
    per_group = edit.in_map.padded // max(1, groups)
    return not padded_length(per_group, target.multiple(layer.precision))


def _unfixed_inputs(layers, plan: _Plan, seeds: dict[str, _Seed],
                    target) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Layers whose input dim (conv C, GEMM K) stays misaligned: it is set by the producer,
    which the plan does not pad. Said in the report rather than left silent."""
    padded = {s.layer.node for s in seeds.values()}
    label_of = {layer.node: layer.label for layer, _ in layers if layer.node is not None}
    out: dict[str, tuple[str, str]] = {}
    for layer, _cost in layers:
        node = layer.node
        if layer.conv is not None:
            ci = layer.conv
            if ci.depthwise or (ci.first_layer and ci.groups == 1 and (ci.c or 0) <= 4):
                continue
            dim, name = ci.c_per_group, "C"
        elif "K" in layer.weight_dims and layer.part == "":
            dim, name = layer.k, "K"
        else:
            continue
        if not padded_length(dim, target.multiple(layer.precision)) or node is None:
            continue
        edit = plan.edits.get(node)
        still = ""
        if edit is not None and edit.in_map is not None:
            if _carried_aligns(layer, edit, target):
                continue
            still = f" (padded to {edit.in_map.padded // max(1, edit.groups_after or 1)}, still misaligned)"
        producer = _channel_source(node.inputs[0] if node.inputs else None)
        where = f"{producer.op_type} {node_label(producer)!r}" if producer is not None else "a graph input"
        sources = _gemm_sources(node.inputs[0] if node.inputs else None)
        seed_keys = tuple(f"{label_of[p]}#out" for p in sources if p in label_of)
        if still:
            why = f"{name}={dim}{still} comes from {where}, not all of whose producers are padded"
        elif producer is not None and producer in padded:
            why = f"{name}={dim} comes from {where}, whose padding cannot reach it"
        elif producer is not None and _edit_kind(producer) is not None:
            why = f"{name}={dim} comes from {where}, which is not padded"
        else:
            why = f"{name}={dim} comes from {where}; tclint pads it only through a padded producer"
        out[layer.label] = (why, seed_keys)
    return out


def _gemm_sources(value: ir.Value | None, limit: int = 256) -> list[ir.Node]:
    """The convs/GEMMs whose output channels reach ``value`` through channel-wise ops, joins
    (Add, Mul, Concat, ...) included: the producers whose padding would set its channels."""
    found: list[ir.Node] = []
    seen: set = set()
    stack = [value]
    while stack and len(seen) < limit:
        v = stack.pop()
        if v is None or v in seen:
            continue
        seen.add(v)
        p = v.producer()
        if p is None:
            continue
        if _edit_kind(p) is not None:
            found.append(p)
            continue
        op = p.op_type
        if op in _UNARY or op in _POOLS or op in _ELEMENTWISE_FILL or op in (
                "BatchNormalization", "InstanceNormalization", "Resize", "Pad", "Flatten",
                "Squeeze", "Unsqueeze", "Concat", "Transpose"):
            stack.extend(i for i in p.inputs if i is not None and not _is_const(i))
    return found


class _Credit:
    """Per seed: estimated seconds gained and lost by the plan."""

    def __init__(self) -> None:
        from collections import defaultdict

        self.gain: dict[str, float] = defaultdict(float)
        self.loss: dict[str, float] = defaultdict(float)
        self.bound: dict[str, str] = {}

    def add(self, keys, seconds: float) -> None:
        keys = sorted(keys)
        if not keys or seconds == 0:
            return
        share = seconds / len(keys)
        for k in keys:
            if share > 0:
                self.gain[k] += share
            else:
                self.loss[k] -= share

    def net(self, key: str) -> float:
        return self.gain[key] - self.loss[key]


class _PlanCost:
    """The cost model applied to a plan (no rewrite): what each padded dim changes.

    1. Each edited conv/GEMM is costed again with its padded dims (:func:`tclint.cost.layer_cost`):
       first its own padding (its K/N, a first layer's C), credited to its own seed; then the
       input dim carried from its producer, credited to the producer's seeds. Extra FLOPs show
       up as a loss, an aligned dim as a gain.
    2. A channel-wise op carrying a padded tensor moves ``padded/size`` times the bytes.
    3. Every Slice/Gather (restore) and Pad (first layer) copies its tensor once, plus a launch.

    ``scale`` multiplies the batch (M of every layer, activation bytes): "pays from batch N".
    """

    def __init__(self, layers, memory_ops, target) -> None:
        self.target = target
        self.launch_s = target.constants.launch_overhead_s.value
        self.layers = list(layers)
        self.by_node = {layer.node: (layer, cost) for layer, cost in self.layers
                        if layer.node is not None and layer.part == ""}
        self.memory = {op.node: op for op in memory_ops if op.node is not None}

    def total(self, scale: float) -> float:
        """The model's estimated time at ``scale`` times the batch."""
        launch = self.launch_s
        t = sum(self._time(layer, cost, scale) for layer, cost in self.layers)
        for op in self.memory.values():
            if not op.folded:
                t += (op.bytes_moved or 0.0) * scale / self.target.bandwidth + launch
        return t

    def label_of(self, node: ir.Node) -> str | None:
        entry = self.by_node.get(node)
        return entry[0].label if entry is not None else None

    def credit(self, plan: _Plan, seeds: dict[str, _Seed], *, scale: float = 1.0) -> _Credit:
        credit = _Credit()
        for node, edit in plan.edits.items():
            entry = self.by_node.get(node)
            if entry is None:
                continue
            layer, cost = entry
            own = {k for k in edit.seeds if k in seeds and seeds[k].layer.node is node}
            carried = set(edit.in_map.seeds) - own if edit.in_map is not None and edit.input_pad is None else set()
            base = self._time(layer, cost, scale)
            t_own = self._time(_padded_layer(layer, edit, own=True, carried=False), None, scale) if own else base
            t_all = self._time(_padded_layer(layer, edit, own=bool(own), carried=True), None, scale) if carried else t_own
            credit.add(own, base - t_own)
            credit.add(carried, t_own - t_all)
            for k in own:
                if cost is not None:
                    credit.bound.setdefault(k, cost.bound)
        bw = self.target.bandwidth
        for value, state in plan.states.items():
            producer = value.producer()
            op = self.memory.get(producer) if producer is not None else None
            if op is None or op.folded or not op.bytes_moved or state.size <= 0:
                continue
            extra = op.bytes_moved * scale * (state.padded / state.size - 1.0) / bw
            credit.add(state.seeds, -extra)
        for value in plan.restores:
            state = plan.states[value]
            credit.add(state.seeds, -self._move_cost(value, state, scale))
        for edit in plan.edits.values():
            if edit.input_pad is not None and edit.input_seed:
                credit.add({edit.input_seed}, -self._move_cost(edit.node.inputs[0], None, scale))
        return credit

    def _time(self, layer: Layer, cost: LayerCost | None, scale: float) -> float:
        if cost is not None and scale == 1.0:
            return cost.time_s
        return layer_cost(_scaled(layer, scale) if scale != 1.0 else layer, self.target).time_s

    def _move_cost(self, value: ir.Value, state: ChannelMap | None, scale: float) -> float:
        """A Slice/Gather/Pad copies the tensor once: read + write at the DRAM bandwidth."""
        shape = _static_shape(value)
        if shape is None:
            return self.launch_s
        n = float(np.prod(shape)) * scale
        # bytes as the view counts them: a float32 model runs in the checked precision
        elem = elem_bytes(value.dtype, self.target.dtype) if value.dtype is not None else 2.0
        if state is not None:
            n = n * state.padded / max(state.size, 1)
        return 2 * n * elem / self.target.bandwidth + self.launch_s


def _scaled(layer: Layer, scale: float) -> Layer:
    """The layer at ``scale`` times the batch: M and the activations grow, the weight does not."""
    import dataclasses

    m = (layer.m if layer.m is not None else 1) * scale
    m = int(round(m))
    elements = None
    if layer.conv is not None and layer.elements is not None and layer.m:
        w, y = _conv_parts(layer)
        x = layer.elements - w - y
        elements = (x + y) * scale + w
    return dataclasses.replace(layer, m=m, elements=elements)


def _conv_parts(layer: Layer) -> tuple[float, float]:
    """(weight, output) elements of a conv layer record."""
    ci = layer.conv
    k = ci.k or 0
    w = float(k * (layer.k or 0))  # K x C/g x R x S
    y = float((layer.m or 1) * k)  # N x P x Q x K
    return w, y


def _padded_layer(layer: Layer, edit: _GemmEdit, *, own: bool, carried: bool) -> Layer:
    """The layer record with the dims the edit pads (``own``: its own seed's; ``carried``: the
    input dim its producer's padding reaches)."""
    import dataclasses

    ci = layer.conv
    if ci is not None:
        c0, k0, g0 = ci.c, ci.k, ci.groups
        if c0 is None or k0 is None or not g0 or c0 % g0:
            return layer
        c, k, g = c0, k0, g0
        if own and edit.out_map is not None and not edit.depthwise:
            k = edit.out_map.padded
        if own and edit.input_pad is not None:
            c = edit.input_pad[1]
        if carried and edit.in_map is not None and edit.input_pad is None:
            c = edit.in_map.padded
            if edit.depthwise and edit.out_map is not None:
                k, g = edit.out_map.padded, edit.groups_after or g0
        spatial = (layer.k or 0) // max(1, c0 // g0)
        elements = None
        if layer.elements is not None:
            w, y = _conv_parts(layer)
            x = layer.elements - w - y
            elements = x * c / c0 + k * (c // g) * spatial + y * k / k0
        conv = dataclasses.replace(ci, c=c, k=k, groups=g)
        return dataclasses.replace(layer, n=k // g, k=(c // g) * spatial or layer.k, batch=g,
                                   conv=conv, elements=elements)
    n, k = layer.n, layer.k
    if own and edit.out_map is not None and n is not None:
        n = edit.out_map.padded
    if carried and edit.in_map is not None and k is not None:
        k = k * edit.in_map.padded // max(1, edit.in_map.size)
    elements = None
    if layer.m is not None and n is not None and k is not None:
        b = layer.batch or 1
        elements = float(layer.m * k * b + k * n + layer.m * n * b)
    return dataclasses.replace(layer, n=n, k=k, elements=elements)


class PadChannelsPass(ir.passes.InPlacePass):
    """Pad misaligned conv channels and GEMM dims in the weights (see the module docstring).

    ``layers``: the GEMM view's layers with their costs (``Analysis.cost.layers``) for the model
    this pass will run on; ``target``: the :class:`tclint.specs.Target` of the check;
    ``memory_ops``: the view's other nodes (the carried padding's cost).
    ``only``: layer labels or seed keys to fix (what ``check`` reported); None pads every
    misaligned layer. ``force``: pad even where the cost model says padding does not pay.
    ``plan``: a :class:`PadPlan` already made for this model (``check``'s, in ``Analysis``): the
    pass rewrites exactly that. After ``call``, :attr:`result` holds what was changed, inserted
    and skipped, and :attr:`pad_plan` the plan.
    """

    def __init__(self, layers: Iterable[tuple[Layer, LayerCost | None]], target, *,
                 vocab_multiple: int = 64, only: set[str] | None = None, force: bool = False,
                 memory_ops: Iterable[MemoryOp] = (), plan: PadPlan | None = None) -> None:
        super().__init__()
        self.layers = list(layers)
        self.target = target
        self.vocab_multiple = vocab_multiple
        self.only = only
        self.force = force
        self.memory_ops = list(memory_ops)
        self.pad_plan = plan
        self.result: PadResult | None = None

    # ---- pass protocol --------------------------------------------------------------------
    def requires(self, model: ir.Model) -> None:
        self._signature = _signature(model)

    def ensures(self, model: ir.Model) -> None:
        """Graph inputs (other than weights) and outputs keep their names, types and shapes."""
        if _signature(model) != self._signature:
            raise ir.passes.PostconditionError("the graph's input/output signature changed")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.pad_plan is None:
            self.pad_plan = plan_padding(model, self.layers, self.target,
                                         memory_ops=self.memory_ops,
                                         vocab_multiple=self.vocab_multiple, only=self.only,
                                         force=self.force)
        pp = self.pad_plan
        with _weights_not_inputs(model):
            self.result = _Rewriter(model, pp.plan, pp.seeds, self.layers).apply(pp.skipped)
        return ir.passes.PassResult(model, modified=bool(self.result.changes or self.result.inserted))


def _signature(model: ir.Model) -> tuple:
    def key(v: ir.Value):
        shape = None if v.shape is None else tuple(
            d if isinstance(d, int) else getattr(d, "value", None) for d in v.shape)
        return v.name, v.dtype, shape

    inputs = tuple(key(v) for v in model.graph.inputs if not v.is_initializer())
    return inputs, tuple(key(v) for v in model.graph.outputs)


def _layer_dims(layer: Layer) -> dict[str, int | None]:
    if layer.conv is not None:
        return {"C": layer.conv.c, "K": layer.conv.k, "groups": layer.conv.groups}
    return {"M": layer.m, "N": layer.n, "K": layer.k}


def can_pad(layer: Layer, kind: str, graph: ir.Graph) -> str:
    """Why the pass cannot pad this layer's weights safely ("" if it can)."""
    node = layer.node
    if node is None:
        return "no node"
    if node.graph is not graph:
        return "inside a subgraph or function (not rewritten)"
    op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    if op not in ("Conv", "MatMul", "Gemm"):
        return f"{op} weights are not padded by tclint fix"
    w_index = 1
    ref, why = resolve_weight(node.inputs[w_index] if len(node.inputs) > 1 else None, graph)
    if ref is None:
        return why
    shape = ref.init.const_value.shape
    if op == "Conv":
        if ref.transposed or len(shape) < 3:
            return "conv weight is not [K, C/g, ...]"
        if len(node.inputs) > 2 and node.inputs[2] is not None \
                and _const_shape(node.inputs[2]) != (int(shape[0]),):
            return "conv bias is not a constant of shape [K]"
        out = node.outputs[0]
        if _rank(out) is None:
            return "output rank unknown"
        if kind == "in" and _rank(node.inputs[0]) is None:
            return "input rank unknown"
        return ""
    if len(shape) != 2:
        return "weight is not 2-D"
    if op == "Gemm":
        if _attr(node, "transA", 0):
            return "Gemm with transA=1"
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            n = int(shape[0] if _attr(node, "transB", 0) != ref.transposed else shape[1])
            if _const_shape(node.inputs[2]) not in ((), (1,), (n,), (1, n)):
                return "Gemm C is not a per-column constant"
    if ref.tied_gather and ref.transposed is False:
        return "weight is shared with a Gather"
    return ""


def _channel_source(value: ir.Value | None) -> ir.Node | None:
    """The node that decides a tensor's channels: walk back through channel-wise ops."""
    for _ in range(64):
        if value is None:
            return None
        producer = value.producer()
        if producer is None:
            return None
        op = producer.op_type
        if op in _UNARY or op in _POOLS or op in ("BatchNormalization", "InstanceNormalization",
                                                  "Resize", "Pad", "Flatten", "Squeeze"):
            value = producer.inputs[0] if producer.inputs else None
            continue
        return producer
    return None


def _edit_kind(node: ir.Node) -> str | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    return {"Conv": "conv", "MatMul": "matmul", "Gemm": "gemm"}.get(node.op_type)


# --------------------------------------------------------------------------------------------
# Planning: propagate channel maps through the graph
# --------------------------------------------------------------------------------------------
class _Planner:
    def __init__(self, graph: ir.Graph, seeds: dict[str, _Seed], opset: int,
                 order: list[ir.Node] | None = None) -> None:
        self.graph = graph
        self.order = order if order is not None else topological_order(graph)
        self.opset = opset
        self.plan = _Plan()
        self.out_seeds: dict[ir.Node, _Seed] = {}
        self.in_seeds: dict[ir.Node, _Seed] = {}
        for s in seeds.values():
            (self.out_seeds if s.kind == "out" else self.in_seeds)[s.layer.node] = s

    def run(self) -> _Plan:
        for node in self.order:  # producers before consumers, whatever the listed order
            self.visit(node)
        states = self.plan.states
        for value in self.graph.outputs:
            if value in states:
                self.restore(value, None, 0, "graph output")
        # a padded value read inside a subgraph (outer scope) gets the original channels
        for value in list(states):
            for user, idx in value.uses():
                if user.graph is not self.graph:
                    self.restore(value, user, idx, "read inside a subgraph")
        return self.plan

    # ---- helpers --------------------------------------------------------------------------
    def state(self, value: ir.Value | None) -> ChannelMap | None:
        return None if value is None else self.plan.states.get(value)

    def restore(self, value: ir.Value, node: ir.Node | None, index: int, why: str) -> None:
        self.plan.restores.setdefault(value, []).append((node, index))
        self.plan.restore_why.setdefault(value, why)

    def restore_all(self, node: ir.Node, why: str) -> None:
        for i, v in enumerate(node.inputs):
            if self.state(v) is not None:
                self.restore(v, node, i, why)

    def set_out(self, node: ir.Node, state: ChannelMap, index: int = 0) -> None:
        self.plan.states[node.outputs[index]] = state

    def channel_pos(self, state: ChannelMap, value: ir.Value) -> int | None:
        r = _rank(value)
        return None if r is None else r + state.axis

    def skip_seed(self, node: ir.Node, why: str) -> None:
        seed = self.out_seeds.pop(node, None)
        if seed is not None:
            self.plan.skipped[seed.key] = why
        seed = self.in_seeds.pop(node, None)
        if seed is not None:
            self.plan.skipped[seed.key] = why

    # ---- dispatch -------------------------------------------------------------------------
    def visit(self, node: ir.Node) -> None:
        kind = _edit_kind(node)
        has_state = any(self.state(v) is not None for v in node.inputs)
        if kind is not None and (has_state or node in self.out_seeds or node in self.in_seeds):
            self.visit_gemm(node, kind)
            return
        if not has_state:
            return
        op = node.op_type if node.domain in ("", "ai.onnx") else None
        handler = {
            "BatchNormalization": self.visit_batchnorm,
            "InstanceNormalization": self.visit_instancenorm,
            "Concat": self.visit_concat,
            "Flatten": self.visit_flatten,
            "Reshape": self.visit_reshape,
            "Squeeze": self.visit_squeeze,
            "Unsqueeze": self.visit_unsqueeze,
            "Transpose": self.visit_transpose,
            "Slice": self.visit_slice,
            "Split": self.visit_split,
            "Resize": self.visit_resize,
            "Upsample": self.visit_resize,
            "Pad": self.visit_pad,
            "Softmax": self.visit_softmax,
            "LogSoftmax": self.visit_softmax,
        }.get(op or "")
        if handler is not None:
            handler(node)
        elif op in _UNARY:
            self.visit_unary(node)
        elif op in _ELEMENTWISE_FILL:
            self.visit_elementwise(node)
        elif op in _POOLS:
            self.visit_pool(node)
        elif op in _REDUCES:
            self.visit_reduce(node)
        else:
            self.restore_all(node, f"read by {node.op_type}")

    # ---- GEMM-like nodes ------------------------------------------------------------------
    def visit_gemm(self, node: ir.Node, kind: str) -> None:
        ref, why = resolve_weight(node.inputs[1] if len(node.inputs) > 1 else None, self.graph)
        x = node.inputs[0]
        s = self.state(x)
        if ref is None:
            self.skip_seed(node, why)
            self.restore_all(node, f"{node.op_type} weight cannot be padded: {why}")
            return
        for i, v in enumerate(node.inputs[1:], start=1):
            if self.state(v) is not None:
                self.restore(v, node, i, f"{node.op_type} input {i}")
        if kind == "conv":
            self.visit_conv(node, ref, s)
        else:
            self.visit_matmul(node, ref, s, kind)

    def visit_conv(self, node: ir.Node, ref: WeightRef, s: ChannelMap | None) -> None:
        x, y = node.inputs[0], node.outputs[0]
        w_shape = list(ref.init.const_value.shape)
        k, cg = int(w_shape[0]), int(w_shape[1])
        g = int(_attr(node, "group", 1))
        c = cg * g
        rank = _rank(y)
        edit = _GemmEdit(node, ref, "conv", groups_after=g)
        seeds: set = set()
        depthwise = g > 1 and cg == 1 and g == c
        if s is not None:
            ok = rank is not None and s.axis == 1 - rank and s.size == c
            if ok and g > 1 and not depthwise:
                pg = s.padded // g
                ok = s.padded % g == 0 and bool(np.all(s.pos // pg == np.arange(c) // cg))
            if not ok:
                self.restore(x, node, 0, "conv input channels cannot carry this channel map")
                s = None
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if g < 1 or k % g:
            self.skip_seed(node, f"group={g} does not divide K={k}")
            self.restore_all(node, "conv with inconsistent groups")
            return
        if s is not None and depthwise and bias is not None and _const_shape(bias) != (k,):
            self.restore(x, node, 0, "depthwise conv bias is not a constant")
            s = None
        if s is not None:
            edit.in_map = s
            seeds |= s.seeds
            if depthwise:
                edit.depthwise = True
                mult = k // g
                edit.groups_after = s.padded
                o = np.arange(k)
                pos = s.pos[o // mult] * mult + o % mult
                edit.out_map = ChannelMap(1 - rank, k, s.padded * mult, pos, s.seeds)
        in_seed = self.in_seeds.get(node)
        if in_seed is not None and s is None:
            edit.input_pad = (in_seed.size, in_seed.padded)
            edit.input_seed = in_seed.key
            edit.in_map = _prefix_map(1 - rank, in_seed.size, in_seed.padded, {in_seed.key})
            seeds.add(in_seed.key)
        out_seed = self.out_seeds.get(node)
        if out_seed is not None and not depthwise:
            kg = k // g
            edit.out_map = _grouped_map(1 - rank, g, kg, out_seed.padded, {out_seed.key})
            seeds.add(out_seed.key)
        if edit.in_map is None and edit.out_map is None:
            return
        edit.seeds = frozenset(seeds)
        self.plan.edits[node] = edit
        if edit.out_map is not None:
            self.set_out(node, edit.out_map)

    def visit_matmul(self, node: ir.Node, ref: WeightRef, s: ChannelMap | None, kind: str) -> None:
        x = node.inputs[0]
        edit = _GemmEdit(node, ref, kind)
        seeds: set = set()
        if s is not None:
            ok = s.axis == -1 and (kind == "matmul" or not _attr(node, "transA", 0))
            if ok and kind == "matmul" and (_rank(x) or 0) < 2:
                ok = False
            if not ok:
                self.restore(x, node, 0, f"{node.op_type} reads these channels on another axis")
            else:
                edit.in_map = s
                seeds |= s.seeds
        out_seed = self.out_seeds.get(node)
        if out_seed is not None:
            edit.out_map = _prefix_map(-1, out_seed.size, out_seed.padded, {out_seed.key})
            seeds.add(out_seed.key)
        if edit.in_map is None and edit.out_map is None:
            return
        edit.seeds = frozenset(seeds)
        self.plan.edits[node] = edit
        if edit.out_map is not None:
            self.set_out(node, edit.out_map)

    # ---- channel-wise ops -----------------------------------------------------------------
    def _single_state(self, node: ir.Node) -> ChannelMap | None:
        """The data input's state; every other stateful input is restored."""
        s = self.state(node.inputs[0])
        for i, v in enumerate(node.inputs[1:], start=1):
            if self.state(v) is not None:
                self.restore(v, node, i, f"{node.op_type} parameter input")
        if s is None:
            return None
        used_extra = [o for o in node.outputs[1:] if o is not None and (o.uses() or o.is_graph_output())]
        if used_extra:
            self.restore(node.inputs[0], node, 0, f"{node.op_type} extra output is used")
            return None
        return s

    def visit_unary(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is not None:
            self.set_out(node, s)

    def visit_pool(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        if r is None or s.axis != 1 - r:
            self.restore(node.inputs[0], node, 0, f"{node.op_type} pools over the padded axis")
            return
        self.set_out(node, s)

    def visit_batchnorm(self, node: ir.Node) -> None:
        self._norm(node, fills=(0.0, 0.0, 0.0, 1.0))

    def visit_instancenorm(self, node: ir.Node) -> None:
        self._norm(node, fills=(0.0, 0.0))

    def _norm(self, node: ir.Node, fills) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        params = node.inputs[1:1 + len(fills)]
        if r is None or s.axis != 1 - r or len(params) != len(fills) \
                or not all(_const_shape(p) == (s.size,) for p in params):
            self.restore(node.inputs[0], node, 0, f"{node.op_type} parameters are not per-channel constants")
            return
        for i, fill in enumerate(fills, start=1):
            self.plan.const_pads.append((node, i, fill, s, 0))
        self.set_out(node, s)

    def visit_elementwise(self, node: ir.Node) -> None:
        op = node.op_type
        states = [(i, self.state(v)) for i, v in enumerate(node.inputs) if self.state(v) is not None]
        ref = states[0][1]
        why = None
        if any(not st.same_layout(ref) for _, st in states):
            why = f"{op} joins tensors padded differently"
        if op == "Div" and any(i == 1 for i, _ in states):
            why = "Div by a padded tensor (padded channels would divide by zero)"
        if op == "PRelu" and any(i == 1 for i, _ in states):
            why = "PRelu slope is a padded tensor"
        pads = []
        if why is None:
            out_rank = _rank(node.outputs[0])
            for i, v in enumerate(node.inputs):
                if v is None or self.state(v) is not None:
                    continue
                cshape = _const_shape(v)
                if _is_const(v) and cshape is None:
                    why = f"{op} operand {i} is an unreadable constant"
                    break
                r = len(cshape) if cshape is not None else _rank(v)
                if r is None:
                    why = f"{op} operand {i} has an unknown rank"
                    break
                ax = r + ref.axis
                if ax < 0:
                    continue
                d = cshape[ax] if cshape is not None else _dim(v, ax)
                if d == 1:
                    continue
                if cshape is not None and d == ref.size:
                    pads.append(i)
                    continue
                why = f"{op} operand {i} has the original channels"
                break
            if why is None and out_rank is not None and any(
                    _rank(node.inputs[i]) != out_rank for i, _ in states):
                why = f"{op} broadcasts the padded tensor to a higher rank"
        if why is not None:
            for i, _ in states:
                self.restore(node.inputs[i], node, i, why)
            return
        for i in pads:
            self.plan.const_pads.append((node, i, _ELEMENTWISE_FILL[op], ref,
                                         len(_const_shape(node.inputs[i])) + ref.axis))
        self.set_out(node, ref)

    def visit_concat(self, node: ir.Node) -> None:
        out = node.outputs[0]
        r = _rank(out)
        states = [self.state(v) for v in node.inputs]
        ref = next(s for s in states if s is not None)
        axis = int(_attr(node, "axis", 0))
        if r is None:
            self.restore_all(node, "Concat rank unknown")
            return
        axis = axis - r if axis >= 0 else axis
        if axis != ref.axis:
            if all(s is not None and s.same_layout(ref) for s in states):
                self.set_out(node, ref)
            else:
                self.restore_all(node, "Concat along another axis joins padded and unpadded tensors")
            return
        pos, size, padded, seeds = [], 0, 0, set()
        for v, s in zip(node.inputs, states):
            if s is None:
                d = _dim(v, axis)
                if d is None:
                    self.restore_all(node, "Concat operand size unknown")
                    return
                s = _prefix_map(axis, d, d)
            if s.axis != axis:
                self.restore_all(node, "Concat operands padded on different axes")
                return
            pos.append(s.pos + padded)
            size += s.size
            padded += s.padded
            seeds |= s.seeds
        self.set_out(node, ChannelMap(axis, size, padded, np.concatenate(pos), frozenset(seeds)))

    def _flatten_map(self, node: ir.Node, s: ChannelMap, first_axis: int) -> ChannelMap | None:
        shape = _static_shape(node.inputs[0])
        if shape is None:
            return None
        cp = len(shape) + s.axis
        if cp != first_axis:
            return None
        inner = int(np.prod(shape[cp + 1:])) if cp + 1 < len(shape) else 1
        if s.padded * inner > _MAX_CHANNELS:
            return None
        pos = (s.pos[:, None] * inner + np.arange(inner)[None, :]).ravel()
        return ChannelMap(-1, s.size * inner, s.padded * inner, pos, s.seeds)

    def visit_flatten(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        axis = int(_attr(node, "axis", 1))
        if r is not None and axis < 0:
            axis += r
        m = self._flatten_map(node, s, axis)
        if m is None:
            self.restore(node.inputs[0], node, 0, "Flatten mixes the padded axis with others")
            return
        self.set_out(node, m)

    def visit_reshape(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        target = _const_array(node.inputs[1])
        m = None
        if target is not None and target.ndim == 1 and len(target) == 2 and target[1] == -1 \
                and _attr(node, "allowzero", 0) == 0:
            shape = _static_shape(node.inputs[0])
            if shape is not None and target[0] in (0, shape[0]):
                m = self._flatten_map(node, s, 1)
        if m is None:
            self.restore(node.inputs[0], node, 0, "Reshape")
            return
        self.set_out(node, m)

    def visit_squeeze(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        axes = _int_list(_attr(node, "axes", None))
        if axes is None and len(node.inputs) > 1:
            arr = _const_array(node.inputs[1])
            axes = None if arr is None else [int(a) for a in arr]
        if r is None or axes is None:
            self.restore(node.inputs[0], node, 0, "Squeeze with unknown axes")
            return
        axes = [a + r if a < 0 else a for a in axes]
        cp = r + s.axis
        if cp in axes:
            self.restore(node.inputs[0], node, 0, "Squeeze of the channel axis")
            return
        new_axis = s.axis + sum(1 for a in axes if a > cp)
        self.set_out(node, ChannelMap(new_axis, s.size, s.padded, s.pos, s.seeds))

    def _axes(self, node: ir.Node, input_index: int) -> list[int] | None:
        """``axes`` from the attribute (older opsets) or a constant input (newer ones)."""
        axes = _int_list(_attr(node, "axes", None))
        if axes is None and len(node.inputs) > input_index and node.inputs[input_index] is not None:
            arr = _const_array(node.inputs[input_index])
            axes = None if arr is None else [int(a) for a in arr.ravel()]
        return axes

    def visit_unsqueeze(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r_out = _rank(node.outputs[0])
        axes = self._axes(node, 1)
        r_in = _rank(node.inputs[0])
        if r_out is None or r_in is None or axes is None:
            self.restore(node.inputs[0], node, 0, "Unsqueeze with unknown axes")
            return
        axes = sorted(a + r_out if a < 0 else a for a in axes)
        kept = [i for i in range(r_out) if i not in axes]  # output positions of input dims
        if len(kept) != r_in:
            self.restore(node.inputs[0], node, 0, "Unsqueeze with inconsistent axes")
            return
        new_pos = kept[r_in + s.axis]
        self.set_out(node, ChannelMap(new_pos - r_out, s.size, s.padded, s.pos, s.seeds))

    def visit_transpose(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        perm = _int_list(_attr(node, "perm", None))
        if r is not None and perm is None:
            perm = list(range(r))[::-1]
        if r is None or perm is None or sorted(perm) != list(range(r)):
            self.restore(node.inputs[0], node, 0, "Transpose with unknown perm")
            return
        new_pos = perm.index(r + s.axis)
        self.set_out(node, ChannelMap(new_pos - r, s.size, s.padded, s.pos, s.seeds))

    def visit_slice(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        if self.opset < 10:
            axes = _int_list(_attr(node, "axes", None))
            if axes is None and r is not None:
                starts = _int_list(_attr(node, "starts", None)) or []
                axes = list(range(len(starts)))
        elif len(node.inputs) > 3 and node.inputs[3] is not None:
            arr = _const_array(node.inputs[3])
            axes = None if arr is None else [int(a) for a in arr.ravel()]
        else:
            arr = _const_array(node.inputs[1]) if len(node.inputs) > 1 else None
            axes = None if arr is None else list(range(arr.size))
        if r is None or axes is None or (r + s.axis) in [a + r if a < 0 else a for a in axes]:
            self.restore(node.inputs[0], node, 0, "Slice of the padded axis")
            return
        self.set_out(node, s)

    def visit_split(self, node: ir.Node) -> None:
        s = self.state(node.inputs[0])
        for i, v in enumerate(node.inputs[1:], start=1):
            if self.state(v) is not None:
                self.restore(v, node, i, "Split sizes")
        if s is None:
            return
        r = _rank(node.inputs[0])
        axis = int(_attr(node, "axis", 0))
        if r is None or (axis + r if axis < 0 else axis) == r + s.axis:
            self.restore(node.inputs[0], node, 0, "Split along the padded axis")
            return
        for i, out in enumerate(node.outputs):
            if out is not None:
                self.set_out(node, s, i)

    def visit_resize(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        cp = None if r is None else r + s.axis
        sizes_idx = 3 if node.op_type == "Resize" else None
        scales_idx = 2 if node.op_type == "Resize" else 1
        if node.op_type == "Resize" and self.opset < 11:
            scales_idx, sizes_idx = 1, None
        ok = cp is not None
        if ok and len(node.inputs) > scales_idx and node.inputs[scales_idx] is not None:
            scales = _const_array(node.inputs[scales_idx])
            if scales is not None and scales.size:
                ok = scales.size == r and float(scales[cp]) == 1.0
            elif scales is None:
                ok = False
        if ok and sizes_idx is not None and len(node.inputs) > sizes_idx and node.inputs[sizes_idx] is not None:
            sizes = _const_array(node.inputs[sizes_idx])
            if sizes is None or "axes" in node.attributes or sizes.size != r or int(sizes[cp]) != s.size:
                ok = False
            else:
                new = sizes.copy()
                new[cp] = s.padded
                self.plan.const_replace.append((node, sizes_idx, new))
        if not ok:
            self.restore(node.inputs[0], node, 0, f"{node.op_type} resizes the channel axis")
            return
        self.set_out(node, s)

    def visit_pad(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        if self.opset >= 11:
            pads = _const_array(node.inputs[1]) if len(node.inputs) > 1 else None
            has_axes = len(node.inputs) > 3 and node.inputs[3] is not None
        else:
            pads = _int_list(_attr(node, "pads", None))
            pads = None if pads is None else np.asarray(pads)
            has_axes = False
        if r is None or pads is None or has_axes or pads.size != 2 * r:
            self.restore(node.inputs[0], node, 0, "Pad with unknown pads")
            return
        cp = r + s.axis
        if pads[cp] != 0 or pads[cp + r] != 0:
            self.restore(node.inputs[0], node, 0, "Pad on the channel axis")
            return
        self.set_out(node, s)

    def visit_softmax(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        default = -1 if self.opset >= 13 else 1
        axis = int(_attr(node, "axis", default))
        if r is None or self.opset < 13:
            self.restore(node.inputs[0], node, 0, f"{node.op_type} over the padded axis")
            return
        if (axis - r if axis >= 0 else axis) == s.axis:
            self.restore(node.inputs[0], node, 0, f"{node.op_type} over the padded axis")
            return
        self.set_out(node, s)

    def visit_reduce(self, node: ir.Node) -> None:
        s = self._single_state(node)
        if s is None:
            return
        r = _rank(node.inputs[0])
        axes = _int_list(_attr(node, "axes", None))
        if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
            arr = _const_array(node.inputs[1])
            axes = None if arr is None else [int(a) for a in arr.ravel()]
        if r is None or not axes or int(_attr(node, "keepdims", 1)) != 1:
            self.restore(node.inputs[0], node, 0, f"{node.op_type} over the padded axis")
            return
        axes = [a + r if a < 0 else a for a in axes]
        if r + s.axis in axes:
            self.restore(node.inputs[0], node, 0, f"{node.op_type} over the padded axis")
            return
        self.set_out(node, s)


# --------------------------------------------------------------------------------------------
# Rewriting
# --------------------------------------------------------------------------------------------
class _Rewriter:
    def __init__(self, model: ir.Model, plan: _Plan, seeds: dict[str, _Seed], layers) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
        self.plan = plan
        self.seeds = seeds
        self.layer_of = {layer.node: layer for layer, _ in layers if layer.node is not None}
        self.names = {v.name for v in _all_values(self.graph) if v.name}
        self.inserted: list[InsertedNode] = []
        self.changes: list[PadChange] = []
        self.resized: list[tuple[ir.Value, int, int]] = []
        self.unused: set[ir.Value] = set()

    def unique(self, base: str) -> str:
        return unique_name(self.names, base)

    def initializer(self, base: str, tensor) -> ir.Value:
        value = ir.Value(name=self.unique(base), shape=ir.Shape(list(tensor.shape)),
                         type=ir.TensorType(tensor.dtype), const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def apply(self, skipped: tuple[SkippedLayer, ...]) -> PadResult:
        declared = {v: v.shape for v in self.graph.outputs}  # a restored output keeps its own
        for edit in self.plan.edits.values():
            self.rewrite_gemm(edit)
        for node, index, fill, state, axis in self.plan.const_pads:
            self.pad_constant(node, index, fill, state, axis)
        for node, index, array in self.plan.const_replace:
            old = node.inputs[index]
            new = self.initializer(f"{old.name or 'const'}_padded", ir.tensor(array))
            node.replace_input_with(index, new)
            self.unused.add(old)
        for value, state in self.plan.states.items():
            self.resize(value, state)
        for value, users in self.plan.restores.items():
            self.insert_restore(value, users, declared.get(value))
        for value in self.unused:
            if value.name in self.graph.initializers and not value.uses() \
                    and not value.is_graph_output() and not value.is_graph_input():
                self.graph.initializers.pop(value.name)
        return PadResult(tuple(self.changes), tuple(self.inserted), skipped, tuple(self.resized))

    # ---- values ---------------------------------------------------------------------------
    def resize(self, value: ir.Value, state: ChannelMap) -> None:
        self.resized.append((value, state.axis, state.padded))
        if value.shape is None:
            return
        dims = list(value.shape)
        ax = len(dims) + state.axis
        if not 0 <= ax < len(dims):
            return
        dims[ax] = state.padded
        value.shape = ir.Shape(dims)

    def insert_restore(self, value: ir.Value, users: list[tuple[ir.Node | None, int]],
                       declared: ir.Shape | None = None) -> None:
        state = self.plan.states[value]
        producer = value.producer()
        if state.is_prefix:
            name = self.unique(f"{value.name}_restore")
            if self.opset < 10:  # Slice-1: starts/ends/axes are attributes
                rank = len(value.shape) if value.shape is not None else None
                axis = state.axis if rank is None else rank + state.axis
                node = ir.node("Slice", [value], {"starts": [0], "ends": [state.size],
                                                  "axes": [axis]}, name=name)
            else:
                starts = self.initializer(f"{value.name}_slice_starts", ir.tensor(np.array([0], np.int64)))
                ends = self.initializer(f"{value.name}_slice_ends", ir.tensor(np.array([state.size], np.int64)))
                axes = self.initializer(f"{value.name}_slice_axes", ir.tensor(np.array([state.axis], np.int64)))
                node = ir.node("Slice", [value, starts, ends, axes], name=name)
        else:
            idx = self.initializer(f"{value.name}_channel_map", ir.tensor(state.pos.astype(np.int64)))
            node = ir.node("Gather", [value, idx], {"axis": state.axis},
                           name=self.unique(f"{value.name}_restore"))
        out = node.outputs[0]
        out.dtype = value.dtype
        if value.shape is not None:
            dims = list(value.shape)
            dims[len(dims) + state.axis] = state.size
            out.shape = ir.Shape(dims)
        if producer is not None:
            self.graph.insert_after(producer, node)
        else:
            self.graph.insert_before(next(iter(self.graph)), node)
        graph_output = any(u is None for u, _ in users)
        for user, index in users:
            if user is not None:
                user.replace_input_with(index, out)
        if graph_output:
            out.shape = declared
            name = value.name
            value.name = self.unique(f"{name}_padded")
            out.name = name
            self.names.add(name)
            for i, o in enumerate(self.graph.outputs):
                if o is value:
                    self.graph.outputs[i] = out
        else:
            out.name = self.unique(f"{value.name}_restored")
        why = self.plan.restore_why.get(value, "")
        self.inserted.append(InsertedNode(node.name, node.op_type,
                                          f"restore {state.size} of {state.padded} channels of "
                                          f"{value.name!r} ({why})"))

    # ---- constants ------------------------------------------------------------------------
    def pad_constant(self, node: ir.Node, index: int, fill: float, state: ChannelMap, ax: int) -> None:
        old = node.inputs[index]
        array = _read_const(old)
        shape = list(array.shape)
        shape[ax] = state.padded
        new = np.full(shape, fill, dtype=array.dtype)
        sl = [slice(None)] * array.ndim
        sl[ax] = state.pos
        new[tuple(sl)] = array
        value = self.initializer(f"{old.name or node.name + '_param'}_padded", ir.tensor(new))
        node.replace_input_with(index, value)
        self.unused.add(old)

    # ---- GEMM weights ---------------------------------------------------------------------
    def rewrite_gemm(self, edit: _GemmEdit) -> None:
        node, ref = edit.node, edit.weight
        tensor = ref.init.const_value
        shape = [int(d) for d in tensor.shape]
        dtype = tensor.dtype
        if edit.kind == "conv":
            new_shape, compute = self._conv_weight(edit, shape, tensor)
        else:
            new_shape, compute = self._matrix_weight(edit, shape, tensor)
        lazy = ir.LazyTensor(compute, dtype=dtype, shape=ir.Shape(new_shape), cache=True)
        groups_before = int(_attr(node, "group", 1))
        before = self._dims(edit, shape, groups_before)
        # A weight also read by a Gather (a tied embedding) keeps its table for the Gather:
        # padding it in place would change what negative ids read (-1 would be a zero row) and
        # accept ids in [V, V_pad). The head reads a padded copy.
        new_init = self.initializer(f"{ref.init.name}_padded", lazy)
        first = ref.transpose_node if ref.transpose_node is not None else node
        first.replace_input_with(0 if ref.transpose_node is not None else 1, new_init)
        self.unused.add(ref.init)
        if ref.transpose_node is not None:
            t_out = ref.transpose_node.outputs[0]
            t_out.shape = ir.Shape([new_shape[1], new_shape[0]])
            self.resized.append((t_out, -2, new_shape[1]))
            self.resized.append((t_out, -1, new_shape[0]))
        if edit.kind == "conv" and edit.groups_after is not None:
            if edit.groups_after != int(_attr(node, "group", 1)):
                node.attributes["group"] = ir.AttrInt64("group", edit.groups_after)
        self._pad_bias(edit)
        if edit.input_pad is not None:
            self._insert_input_pad(edit)
        after = self._dims(edit, new_shape, edit.groups_after or groups_before)
        layer = self.layer_of.get(node)
        extra_flops = None
        if layer is not None and layer.flops is not None and layer.m is not None:
            extra_flops = self._flops(edit, new_shape, layer) - self._flops(edit, shape, layer)
        extra_params = int(np.prod(new_shape) - np.prod(shape))
        if ref.init.uses():  # still read by the Gather: the padded head is a copy
            extra_params = int(np.prod(new_shape))
        if edit.out_map is not None and len(node.inputs) > 2 and node.inputs[2] is not None:
            extra_params += edit.out_map.padded - edit.out_map.size
        reasons: list[str] = []
        carried: list[str] = []
        for key in sorted(edit.seeds):
            s = self.seeds.get(key)
            if s is None:
                continue
            if s.layer.node is node:
                reasons.append(f"{'C' if s.kind == 'in' else ('K' if edit.kind == 'conv' else 'N')}"
                               f" {s.size} -> {s.padded}")
            else:
                carried.append(s.layer.label)
        self.changes.append(PadChange(
            node=node_label(node) if layer is None else layer.label, op=node.op_type,
            dims_before=before, dims_after=after, extra_flops=extra_flops,
            extra_params=extra_params, reason="; ".join([*dict.fromkeys(reasons), *_carried(carried)])))

    @staticmethod
    def _dims(edit: _GemmEdit, shape: list[int], groups: int) -> dict[str, int]:
        if edit.kind == "conv":
            return {"C": shape[1] * groups, "K": shape[0], "groups": groups}
        k, n = (shape[1], shape[0]) if _is_nk(edit) else (shape[0], shape[1])
        return {"K": k, "N": n}

    @staticmethod
    def _flops(edit: _GemmEdit, shape: list[int], layer: Layer) -> float:
        m = layer.m or 0
        if edit.kind == "conv":
            spatial = int(np.prod(shape[2:])) if len(shape) > 2 else 1
            return 2.0 * m * shape[0] * shape[1] * spatial
        return 2.0 * m * shape[0] * shape[1]

    def _conv_weight(self, edit: _GemmEdit, shape: list[int], tensor):
        k, cg = shape[0], shape[1]
        g = int(_attr(edit.node, "group", 1))
        kg = k // g
        out_pos = edit.out_map.pos if edit.out_map is not None else np.arange(k)
        k_new = edit.out_map.padded if edit.out_map is not None else k
        depthwise = edit.depthwise
        if edit.in_map is None:
            cg_new = cg
            in_local = [np.arange(cg)] * g
        elif depthwise:
            cg_new = 1
            in_local = [np.array([0])] * g
        else:
            pg = edit.in_map.padded // g
            cg_new = pg
            in_local = [edit.in_map.pos[grp * cg:(grp + 1) * cg] - grp * pg for grp in range(g)]
        new_shape = [k_new, cg_new, *shape[2:]]

        def compute():
            w = tensor.numpy()
            out = np.zeros(new_shape, dtype=w.dtype)
            if depthwise:
                out[out_pos, 0] = w[:, 0]
            else:
                for grp in range(g):
                    rows = out_pos[grp * kg:(grp + 1) * kg]
                    out[rows[:, None], in_local[grp][None, :]] = w[grp * kg:(grp + 1) * kg]
            return ir.tensor(out)

        return new_shape, compute

    def _matrix_weight(self, edit: _GemmEdit, shape: list[int], tensor):
        nk = _is_nk(edit)  # stored as [N, K]
        k, n = (shape[1], shape[0]) if nk else (shape[0], shape[1])
        k_pos = edit.in_map.pos if edit.in_map is not None else np.arange(k)
        n_pos = edit.out_map.pos if edit.out_map is not None else np.arange(n)
        k_new = edit.in_map.padded if edit.in_map is not None else k
        n_new = edit.out_map.padded if edit.out_map is not None else n
        new_shape = [n_new, k_new] if nk else [k_new, n_new]

        def compute():
            w = tensor.numpy()
            out = np.zeros(new_shape, dtype=w.dtype)
            if nk:
                out[n_pos[:, None], k_pos[None, :]] = w
            else:
                out[k_pos[:, None], n_pos[None, :]] = w
            return ir.tensor(out)

        return new_shape, compute

    def _pad_bias(self, edit: _GemmEdit) -> None:
        node = edit.node
        if edit.out_map is None or edit.kind == "matmul" or len(node.inputs) < 3 or node.inputs[2] is None:
            return
        old = node.inputs[2]
        b = _read_const(old)
        if b is None:
            return
        if b.ndim == 0 or b.size == 1:
            return  # a scalar broadcasts over the padded columns
        flat = b.reshape(-1)
        new = np.zeros(edit.out_map.padded, dtype=b.dtype)
        new[edit.out_map.pos] = flat
        if b.ndim == 2:
            new = new.reshape(1, -1)
        value = self.initializer(f"{old.name or node.name + '_bias'}_padded", ir.tensor(new))
        node.replace_input_with(2, value)
        self.unused.add(old)

    def _insert_input_pad(self, edit: _GemmEdit) -> None:
        node = edit.node
        x = node.inputs[0]
        rank = _rank(x)
        c, p = edit.input_pad
        pads = np.zeros(2 * rank, np.int64)
        pads[rank + 1] = p - c
        name = self.unique(f"{x.name}_pad_channels")
        if self.opset < 11:  # Pad-2: pads is an attribute
            pad = ir.node("Pad", [x], {"mode": "constant", "pads": [int(p) for p in pads]}, name=name)
        else:
            pads_v = self.initializer(f"{x.name}_channel_pads", ir.tensor(pads))
            pad = ir.node("Pad", [x, pads_v], {"mode": "constant"}, name=name)
        out = pad.outputs[0]
        out.name = self.unique(f"{x.name}_c{p}")
        out.dtype = x.dtype
        if x.shape is not None:
            dims = list(x.shape)
            dims[1] = p
            out.shape = ir.Shape(dims)
        self.graph.insert_before(node, pad)
        node.replace_input_with(0, out)
        self.inserted.append(InsertedNode(pad.name, "Pad",
                                          f"zero input channels {c} -> {p} for {node_label(node)} "
                                          "(first layer; model inputs unchanged)"))


def _carried(labels: list[str]) -> list[str]:
    labels = list(dict.fromkeys(labels))
    if not labels:
        return []
    if len(labels) <= 2:
        return [f"carried from {', '.join(labels)}"]
    return [f"carried from {labels[0]} and {len(labels) - 1} more"]


def _is_nk(edit: _GemmEdit) -> bool:
    """The stored 2-D weight is [N, K] (Gemm transB=1, or MatMul reading Transpose(W))."""
    if edit.kind == "gemm":
        return bool(_attr(edit.node, "transB", 0)) != edit.weight.transposed
    return edit.weight.transposed


def _all_values(graph: ir.Graph):
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph.all_nodes():
        yield from node.outputs
