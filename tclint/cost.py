"""The cost model: each layer's estimated time on the chosen GPU, and what fixing it would save.

For a GEMM-like layer (one record of the GEMM view):

1. Compute: the output is cut into tiles (the tile sizes in ``specs.CostConstants.tiles``), tiles
   run in waves of ``SMs x tiles_per_sm``; the time is the number of waves times one tile's work
   at the Tensor Core peak (times the GEMM efficiency and the tile's own efficiency). The cheapest
   tile is chosen, as cuBLAS' heuristics try to. Work in partial tiles and the tail wave is the
   quantization waste (rule TC110).
2. Alignment: a dim that is not a multiple of 16 bytes, or of the GPU's required tier, divides
   the compute throughput by a documented factor (conv: C and K per group; a 3-channel first
   layer has its own factor).
3. Memory: operands and result once, at the achievable DRAM bandwidth.
4. time = max(compute, memory) + one kernel launch. Depthwise convs run on CUDA cores from memory.
5. NCHW convs that would run on Tensor Cores pay a transpose of their input and output
   (rule TC205), counted separately as ``layout_s``.

Other nodes cost their bytes at the bandwidth plus a launch; nodes that runtimes fold (constant
inputs, reshapes) cost nothing. Unknown dims are assumed to be ``assume_dim`` (1) and flagged.
Every constant comes from ``tclint.specs`` and can be replaced by a measured table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tclint.specs import Target, minimum_multiple
from tclint.view import Layer, MemoryOp, ModelView


@dataclass(frozen=True)
class LayerCost:
    time_s: float  # estimated time as the model is now (incl. layout_s)
    fixed_time_s: float  # with the layer's dims aligned (layout unchanged)
    compute_s: float
    memory_s: float
    layout_s: float  # NCHW<->NHWC transposes paid around this conv
    waste: float  # fraction of the launched Tensor Core work lost to tile/wave quantization
    tile: tuple[int, int] | None
    alignment_factor: float  # 1.0 = aligned
    bound: str  # "compute", "memory", "launch", "cuda-cores"
    assumed: bool  # some dims were unknown and assumed

    @property
    def speedup_if_fixed(self) -> float:
        """Speedup of this layer if its dims were aligned."""
        return self.time_s / self.fixed_time_s if self.fixed_time_s > 0 else 1.0

    @property
    def alignment_saving_s(self) -> float:
        return self.time_s - self.fixed_time_s


@dataclass(frozen=True)
class ModelCost:
    layers: list[tuple[Layer, LayerCost]]
    memory_s: float  # all non-GEMM nodes
    total_s: float
    target: Target

    def share(self, cost: LayerCost) -> float:
        return cost.time_s / self.total_s if self.total_s > 0 else 0.0

    @property
    def layout_s(self) -> float:
        return sum(c.layout_s for _, c in self.layers)

    def speedup_if_fixed(self, *, alignment: bool = True, layout: bool = False) -> float:
        saved = 0.0
        if alignment:
            saved += sum(c.alignment_saving_s for _, c in self.layers)
        if layout:
            saved += self.layout_s
        after = self.total_s - saved
        return self.total_s / after if after > 0 else 1.0


def _dim(value: int | None, assume: int) -> tuple[int, bool]:
    return (value, False) if value is not None else (assume, True)


def alignment_factor(dims: dict[str, int], precision: str, target: Target) -> float:
    """Throughput factor for a set of dims (``{"N": 1000, "K": 2048}``); dims of 1 are GEMV."""
    c = target.constants
    need = target.multiple(precision)
    minimum = minimum_multiple(precision)
    factor = 1.0
    for value in dims.values():
        if value is None or value <= 1:
            continue
        if value % minimum:
            factor = min(factor, c.misaligned_minimum_factor.value)
        elif value % need:
            tier = c.misaligned_strict_factor if target.strict else c.misaligned_tier_factor
            factor = min(factor, tier.value)
    return factor


def padded_length(dim: int | None, align: int) -> int:
    """The padded size of ``dim``, or 0 when it needs none (unknown, aligned, or 1), as in
    Inductor's ``pad_mm``. The one rounding rule the rules, the cost model and the pad pass use."""
    if dim is None or dim <= 1 or align <= 1 or dim % align == 0:
        return 0
    return -(-dim // align) * align


def layer_multiple(layer: Layer, target: Target, *, vocab_multiple: int = 64) -> int:
    """The multiple a layer's weight dims should have: the target's tier for its precision, and
    ``vocab_multiple`` (at least that tier) for an output/vocab projection (rule TC104)."""
    mult = target.multiple(layer.precision)
    if layer.conv is None and layer.is_vocab_projection:
        return max(vocab_multiple, mult)
    return mult


def aligned_dims(dims: dict[str, int | None], precision: str, target: Target) -> dict[str, int | None]:
    need = target.multiple(precision)
    return {k: (padded_length(v, need) or v) for k, v in dims.items()}


def checked_dims(layer: Layer) -> dict[str, int | None]:
    """The dims whose alignment matters for this layer's kernels."""
    if layer.conv is not None:
        return {"C": layer.conv.c_per_group, "K": layer.conv.k_per_group}
    return {"M": layer.m, "N": layer.n, "K": layer.k}


def _compute_time(m: int, n: int, k: int, batch: int, precision: str, target: Target):
    """Best (tile, split-K) choice: (seconds, waste, tile).

    When a problem has fewer tiles than the GPU has SM slots, cuBLAS/CUTLASS split K across
    several CTAs (split-K) rather than leave SMs idle; splits are tried in powers of two while
    each slice keeps at least ``split_k_min`` of K.
    """
    c = target.constants
    slots = target.gpu.sms * max(1, int(c.tiles_per_sm.value))
    peak = target.peak_flops(precision) * c.gemm_efficiency.value
    useful = 2.0 * m * n * k * batch
    best = None
    for (tm, tn), eff in zip(c.tiles, c.tile_efficiency):
        tiles = math.ceil(m / tm) * math.ceil(n / tn) * batch
        split = 1
        while tiles * split * 2 <= slots and k // (split * 2) >= c.split_k_min.value:
            split *= 2
        k_slice = math.ceil(k / split)
        waves = math.ceil(tiles * split / slots)
        launched = waves * slots * 2.0 * tm * tn * k_slice
        seconds = launched / (peak * eff)
        waste = max(0.0, 1.0 - useful / launched) if launched else 0.0
        if best is None or seconds < best[0]:
            best = (seconds, waste, (tm, tn))
    return best


def layer_cost(layer: Layer, target: Target, *, assume_dim: int = 1) -> LayerCost:
    c = target.constants
    m, am = _dim(layer.m, assume_dim)
    n, an = _dim(layer.n, assume_dim)
    k, ak = _dim(layer.k, assume_dim)
    batch, ab = _dim(layer.batch, assume_dim)
    assumed = am or an or ak or ab
    bw = target.bandwidth
    launch = c.launch_overhead_s.value
    elements = layer.elements
    if elements is None:
        elements = m * k * batch + k * n + m * n * batch
    memory_s = elements * layer.elem_bytes / bw
    conv = layer.conv

    if conv is not None and conv.depthwise:
        t = memory_s / c.depthwise_efficiency.value + launch
        return LayerCost(t, t, 0.0, memory_s, 0.0, 0.0, None, 1.0, "cuda-cores", assumed)

    dims = checked_dims(layer)
    factor_dims = dims
    if conv is not None and conv.first_layer and conv.groups == 1 and conv.c_per_group == 4:
        # a 4-channel first layer runs the special C=4 NHWC kernels (what TC204 asks for)
        factor_dims = {k: v for k, v in dims.items() if k != "C"}
    factor = alignment_factor(factor_dims, layer.precision, target)
    fixed_dims = aligned_dims(dims, layer.precision, target)
    if conv is not None and conv.first_layer and (conv.c_per_group or 0) < 4 and conv.groups == 1:
        factor = min(factor, c.conv_c3_factor.value)
        fixed_dims["C"] = 4  # the special C=4 NHWC kernels
    if layer.m is not None and layer.m <= 1 and conv is None:
        # a GEMV: no Tensor Cores; memory-bound whatever the alignment
        t = memory_s + launch
        bound = "memory" if memory_s > launch else "launch"
        return LayerCost(t, t, 0.0, memory_s, 0.0, 0.0, None, 1.0, bound, assumed)
    compute_s, waste, tile = _compute_time(m, n, k, batch, layer.precision, target)
    compute_now = compute_s / factor

    # fixed: pad the checked dims and run at full rate
    fm, fn, fk = m, n, k
    if conv is not None:
        spatial = k // max(1, conv.c_per_group or 1) if conv.c_per_group else 1
        fn = fixed_dims["K"] or n
        fk = (fixed_dims["C"] or 1) * spatial if conv.c_per_group else k
    else:
        fm = fixed_dims.get("M") or m
        fn = fixed_dims.get("N") or n
        fk = fixed_dims.get("K") or k
    fixed_compute, _, _ = _compute_time(fm, fn, fk, batch, layer.precision, target)
    scale = (fm * fk * batch + fk * fn + fm * fn * batch) / max(1.0, m * k * batch + k * n + m * n * batch)
    fixed_memory = memory_s * max(1.0, scale) if conv is None else memory_s * max(1.0, fn / max(n, 1))

    layout_s = 0.0
    if conv is not None and conv.layout == "NCHW" and len(conv.kernel) >= 1:
        # transposes of input and output around the NHWC Tensor Core kernel
        layout_s = c.nchw_transposes_per_conv.value * memory_s + launch

    body = max(compute_now, memory_s)
    bound = "compute" if compute_now >= memory_s else "memory"
    if launch > body:
        bound = "launch"
    time_s = body + launch + layout_s
    # Padding that would not pay (extra work > alignment gain) is left alone: no gain then.
    fixed_s = min(max(fixed_compute, fixed_memory) + launch + layout_s, time_s)
    return LayerCost(time_s, fixed_s, compute_now, memory_s, layout_s, waste, tile, factor, bound, assumed)


def memory_op_cost(op: MemoryOp, target: Target) -> float:
    if op.folded:
        return 0.0
    bytes_moved = op.bytes_moved or 0.0
    return bytes_moved / target.bandwidth + target.constants.launch_overhead_s.value


def model_cost(view: ModelView, target: Target, *, assume_dim: int = 1) -> ModelCost:
    pairs = [(layer, layer_cost(layer, target, assume_dim=assume_dim)) for layer in view.layers]
    memory_s = sum(memory_op_cost(op, target) for op in view.memory_ops)
    total = memory_s + sum(cost.time_s for _, cost in pairs)
    return ModelCost(layers=pairs, memory_s=memory_s, total_s=total, target=target)

