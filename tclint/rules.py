"""The rule catalogue: one registry of stable codes, and the checks that produce findings.

Each rule has a code (``TC201``), a kebab-case name, a default severity, a one-line summary, a
fix title written as a command, and a page under ``rules/CODE.md`` (``tclint explain CODE``).
Checks are generators over the shared GEMM view and cost model; they never look at weights.

Families: TC1xx GEMM dims, TC2xx convolutions and layout, TC3xx FP16 hazards, TC9xx coverage.
Severities: ``error`` (an alignment problem ``tclint fix`` pads), ``warning`` (a real cost that
needs another change: advice), ``info`` (coverage and assumptions).

How a rule is fixed is metadata of the rule (:attr:`Rule.padding`, :attr:`Rule.fix`): the pad
pass, the gate and the reports read it here, so there is one list of fixable codes
(:data:`PAD_CODES`).

Hot, and the gate: a finding's ``saving`` is the share of the model's estimated time that fixing
it saves, net of any node the fix inserts. For the padding rules it comes from the pad planner
(:func:`tclint.passes.pad.plan_padding`, the same call ``tclint fix`` makes); for advice it is the
cost model's estimate of the advised change (and, for a padding finding fix cannot pad safely,
what aligning the layer would save). A finding is **hot** when its saving is at least
``--hot-threshold``; that one meaning is what every report shows. Which hot findings fail the
gate is ``--fail-on`` (:func:`tclint.lint.gate_fails`): by default those ``tclint fix`` fixes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from tclint.cost import LayerCost, ModelCost, layer_multiple, padded_length
from tclint.specs import Target
from tclint.view import Layer, ModelView

SEVERITIES = ("error", "warning", "info")

#: What ``tclint fix`` does about a finding (``Finding.fix_status``):
#: ``fix``: it pads it (the planner's net saving is positive); ``no-gain``: it could, but the
#: padding does not pay at the bound shapes; ``unsafe``: it cannot pad it safely (the reason
#: says why); ``advice``: the rule is not fixed by padding (another option or a model change).
FIX_STATUSES = ("fix", "no-gain", "unsafe", "advice")

#: Which dims the pad pass pads for a rule: ``out`` the layer's own output dim (conv K, GEMM N),
#: ``in`` a first layer's image channels, ``carried`` an input dim (conv C, GEMM K) set by a
#: padded producer.
PADDING_KINDS = ("out", "in", "carried")


@dataclass(frozen=True)
class Finding:
    code: str
    name: str
    severity: str
    message: str
    path: str  # node path ("" for model-level findings)
    op: str
    dims: dict[str, int]
    multiple: int | None
    suggested: dict[str, int] | None
    share: float  # the layer's estimated share of model GPU time
    hot: bool  # saving >= the hot threshold
    speedup: float | None  # the layer's estimated speedup if fixed
    fix: str
    model: str = ""
    #: share of model time fixing it saves, net of inserted nodes (see the module docstring)
    saving: float = 0.0
    fix_status: str = "advice"  # one of FIX_STATUSES
    #: why ``tclint fix`` leaves it ("" when it fixes it)
    fix_note: str = ""
    #: the batch size from which padding pays, when it does not at the bound shapes
    pays_from: int | None = None
    #: this finding fails the gate under the report's --fail-on
    gate: bool = False

    def key(self) -> str:
        """Stable across runs (no indices): rule, model file name, node path, dims."""
        return json.dumps([self.code, self.model, self.path, self.dims], sort_keys=True)

    def to_dict(self) -> dict:
        return {
            "code": self.code, "name": self.name, "severity": self.severity,
            "message": self.message, "model": self.model, "node": self.path, "op": self.op,
            "dims": self.dims, "multiple": self.multiple, "suggested": self.suggested,
            "share": round(self.share, 6), "saving": round(self.saving, 6), "hot": self.hot,
            "gate": self.gate, "fix_status": self.fix_status, "fix_note": self.fix_note,
            "pays_from": self.pays_from,
            "speedup": None if self.speedup is None else round(self.speedup, 4), "fix": self.fix,
        }


@dataclass
class Context:
    view: ModelView
    cost: ModelCost
    target: Target
    hot_threshold: float = 0.01
    quantization_threshold: float = 0.5
    model: str = ""
    extra: dict = field(default_factory=dict)

    def share(self, cost: LayerCost) -> float:
        return self.cost.share(cost)


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    severity: str
    summary: str
    check: Callable[[Context], Iterator[Finding]] | None
    #: the dims ``tclint fix`` pads for it (subset of PADDING_KINDS; empty: not a padding rule)
    padding: tuple[str, ...] = ()
    #: how it is fixed: "pad" (``tclint fix``), "layout" (``tclint fix --layout nhwc`` or the
    #: runtime's prefer_nhwc), "" (a change to the model, its shapes or its inputs)
    fix: str = ""

    @property
    def advice(self) -> bool:
        """Not fixed by ``tclint fix`` with default options: reported and ranked, and failing the
        gate only when ``--fail-on`` asks for advice."""
        return not self.padding


RULES: dict[str, Rule] = {}


def rule(code: str, name: str, severity: str, summary: str, *, padding: tuple[str, ...] = (),
         fix: str = ""):
    """Register a check. A duplicate code or name is an error at import time."""

    def decorate(fn):
        _register(Rule(code, name, severity, summary, fn, padding=padding,
                       fix="pad" if padding else fix))
        return fn

    return decorate


def _register(r: Rule) -> None:
    if r.code in RULES:
        raise ValueError(f"duplicate rule code {r.code}")
    if any(existing.name == r.name for existing in RULES.values()):
        raise ValueError(f"duplicate rule name {r.name}")
    if r.severity not in SEVERITIES:
        raise ValueError(f"{r.code}: unknown severity {r.severity}")
    if not set(r.padding) <= set(PADDING_KINDS):
        raise ValueError(f"{r.code}: unknown padding kinds {r.padding}")
    RULES[r.code] = r


def pad_codes() -> frozenset[str]:
    """The rules ``tclint fix`` pads (read from the registry)."""
    return frozenset(code for code, r in RULES.items() if r.padding)


def select_rules(select: list[str] | None = None, ignore: list[str] | None = None) -> list[Rule]:
    """Rules enabled by ``--select`` / ``--ignore`` prefixes (``TC2``, ``TC101``, ``ALL``)."""
    sel = [s.upper() for s in (select or ["ALL"])]
    ign = [s.upper() for s in (ignore or [])]

    def match(code: str, prefixes: list[str]) -> bool:
        return any(p == "ALL" or code.startswith(p) for p in prefixes)

    return [r for r in RULES.values() if match(r.code, sel) and not match(r.code, ign)]


def validate_prefixes(prefixes: list[str] | None) -> list[str]:
    from tclint.errors import UsageError

    for p in prefixes or []:
        up = p.upper()
        if up != "ALL" and not any(code.startswith(up) for code in RULES):
            raise UsageError(f"{p!r} selects no rule (see `tclint rules`)")
    return list(prefixes or [])


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _finding(ctx: Context, code: str, layer: Layer | None, cost: LayerCost | None, *,
             message: str, dims: dict[str, int], multiple: int | None,
             suggested: dict[str, int] | None, fix: str, share: float | None = None,
             speedup: float | None = None, path: str | None = None, op: str | None = None,
             saving_s: float | None = None) -> Finding:
    """``saving_s``: seconds the advised change saves (default: the layer's alignment saving).
    For padding rules this is replaced by the pad planner's net figure (tclint.lint)."""
    r = RULES[code]
    if share is None:
        share = ctx.share(cost) if cost is not None else 0.0
    if speedup is None and cost is not None:
        speedup = cost.speedup_if_fixed
    if saving_s is None:
        saving_s = cost.alignment_saving_s if cost is not None else 0.0
    saving = saving_s / ctx.cost.total_s if ctx.cost.total_s > 0 else 0.0
    return Finding(
        code=code, name=r.name, severity=r.severity, message=message,
        path=path if path is not None else (layer.label if layer else ""),
        op=op if op is not None else (layer.op if layer else ""),
        dims=dims, multiple=multiple, suggested=suggested, share=share,
        hot=saving >= ctx.hot_threshold and saving > 0, speedup=speedup, fix=fix, model=ctx.model,
        saving=saving, fix_status="advice" if r.advice else "fix",
    )


def _where(ctx: Context, precision: str) -> str:
    return f"for {precision} on {ctx.target.gpu.arch}"


def _misaligned(value: int | None, multiple: int) -> bool:
    return value is not None and value > 1 and value % multiple != 0


def _gemms(ctx: Context):
    for layer, cost in ctx.cost.layers:
        if layer.conv is None:
            yield layer, cost


def _convs(ctx: Context):
    for layer, cost in ctx.cost.layers:
        if layer.conv is not None:
            yield layer, cost


def _pad(value: int, multiple: int) -> int:
    return padded_length(value, multiple) or value


# --------------------------------------------------------------------------------------------
# TC1xx: GEMM dims
# --------------------------------------------------------------------------------------------
@rule("TC101", "unaligned-gemm-k", "error", "GEMM K (the reduction dim) is not a multiple of the required alignment",
      padding=("carried",))
def check_gemm_k(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _gemms(ctx):
        mult = ctx.target.multiple(layer.precision)
        if layer.role == "attention_qk" or not _misaligned(layer.k, mult):
            continue
        if "K" not in layer.weight_dims and layer.role == "attention_pv":
            continue  # K of P.V is the sequence: a runtime dim (TC103)
        yield _finding(
            ctx, "TC101", layer, cost,
            message=f"K={layer.k} is not a multiple of {mult} {_where(ctx, layer.precision)}",
            dims={"M": layer.m, "N": layer.n, "K": layer.k}, multiple=mult,
            suggested={"K": _pad(layer.k, mult)},
            fix=f"Pad K {layer.k} -> {_pad(layer.k, mult)} (tclint fix pads the weight rows)")


@rule("TC102", "unaligned-gemm-n", "error", "GEMM N (output features) is not a multiple of the required alignment",
      padding=("out",))
def check_gemm_n(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _gemms(ctx):
        mult = ctx.target.multiple(layer.precision)
        if layer.role in ("attention_pv", "attention_qk") or not _misaligned(layer.n, mult):
            continue
        if layer.is_vocab_projection:
            continue  # reported by TC104 with the vocab multiple
        yield _finding(
            ctx, "TC102", layer, cost,
            message=f"N={layer.n} is not a multiple of {mult} {_where(ctx, layer.precision)}",
            dims={"M": layer.m, "N": layer.n, "K": layer.k}, multiple=mult,
            suggested={"N": _pad(layer.n, mult)},
            fix=f"Pad N {layer.n} -> {_pad(layer.n, mult)} (tclint fix pads weight columns)")


@rule("TC103", "unaligned-gemm-m", "warning", "GEMM M (batch x sequence, a runtime dim) is not a multiple of the required alignment")
def check_gemm_m(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _gemms(ctx):
        mult = ctx.target.multiple(layer.precision)
        dims = {"M": layer.m, "N": layer.n, "K": layer.k}
        runtime = [d for d in ("M",) if _misaligned(layer.m, mult)]
        if layer.role == "attention_qk" and _misaligned(layer.n, mult):
            runtime.append("N")  # the key sequence length
        if layer.role == "attention_pv" and _misaligned(layer.k, mult):
            runtime.append("K")
        if not runtime or "M" in layer.weight_dims:
            continue
        what = ", ".join(f"{d}={dims[d]}" for d in runtime)
        yield _finding(
            ctx, "TC103", layer, cost,
            message=f"{what} (batch x sequence) is not a multiple of {mult} {_where(ctx, layer.precision)}",
            dims=dims, multiple=mult, suggested={d: _pad(dims[d], mult) for d in runtime},
            fix=f"Pad the sequence to a multiple of {mult} at the tokenizer "
                f"(pad_to_multiple_of={mult}) or the batch; the model cannot fix a runtime dim")


@rule("TC104", "unaligned-vocab-projection", "error", "Output/vocab projection N is not a multiple of 64",
      padding=("out",))
def check_vocab(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _gemms(ctx):
        if not layer.is_vocab_projection:
            continue  # below VOCAB_MIN_N outputs a projection is a small head: TC102 covers it
        mult = layer_multiple(layer, ctx.target, vocab_multiple=ctx.extra.get("vocab_multiple", 64))
        if layer.n % mult == 0:
            continue
        yield _finding(
            ctx, "TC104", layer, cost,
            message=f"output projection N={layer.n} is not a multiple of {mult}",
            dims={"M": layer.m, "N": layer.n, "K": layer.k}, multiple=mult,
            suggested={"N": _pad(layer.n, mult)},
            fix=f"Pad the vocab {layer.n} -> {_pad(layer.n, mult)} and slice the logits back "
                f"(tclint fix; or resize_token_embeddings(pad_to_multiple_of={mult}))")


@rule("TC105", "unaligned-head-dim", "warning", "Attention head dim is not a multiple of the required alignment")
def check_head_dim(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _gemms(ctx):
        mult = ctx.target.multiple(layer.precision)
        head = layer.k if layer.role == "attention_qk" else layer.n if layer.role == "attention_pv" else None
        if not _misaligned(head, mult):
            continue
        yield _finding(
            ctx, "TC105", layer, cost,
            message=f"head_dim={head} is not a multiple of {mult} {_where(ctx, layer.precision)}",
            dims={"head_dim": head, "M": layer.m, "batch": layer.batch}, multiple=mult,
            suggested={"head_dim": _pad(head, mult)},
            fix=f"Use a head dim that is a multiple of {mult} (e.g. {_pad(head, mult)}) when "
                "designing or exporting the model; fused attention kernels want it too")


@rule("TC110", "tile-quantization", "warning", "Tile or wave quantization wastes more than a threshold of the layer's work")
def check_quantization(ctx: Context) -> Iterator[Finding]:
    for layer, cost in ctx.cost.layers:
        if cost.tile is None or cost.bound != "compute" or cost.assumed:
            continue  # memory-bound layers do not care; assumed dims would make it up
        if cost.waste <= ctx.quantization_threshold:
            continue
        share = ctx.share(cost)
        if share < ctx.hot_threshold:
            continue
        tm, tn = cost.tile
        dims = {"M": layer.m, "N": layer.n, "K": layer.k, "batch": layer.batch}
        useful = cost.compute_s * (1 - cost.waste)
        yield _finding(
            ctx, "TC110", layer, cost,
            message=(f"{cost.waste:.0%} of the launched work is lost to tile/wave quantization "
                     f"({tm}x{tn} tiles over {ctx.target.gpu.sms} SMs)"),
            dims=dims, multiple=None, suggested=None,
            speedup=cost.time_s / max(cost.time_s - (cost.compute_s - useful), 1e-12),
            saving_s=min(cost.compute_s - useful, cost.time_s),
            fix="Change M or N so the tile count fills whole waves (batch size, sequence "
                "length or layer width), or fuse this layer with a neighbour")


# --------------------------------------------------------------------------------------------
# TC2xx: convolutions and layout
# --------------------------------------------------------------------------------------------
@rule("TC201", "unaligned-conv-input-channels", "error", "Conv input channels C are not a multiple of the required alignment",
      padding=("carried",))
def check_conv_c(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _convs(ctx):
        ci = layer.conv
        if ci.groups != 1 or ci.c is None:
            continue
        if ci.first_layer and ci.c <= 4:
            continue  # TC204 (C=4 is what it asks for: the special C=4 NHWC kernels)
        mult = ctx.target.multiple(layer.precision)
        if not _misaligned(ci.c, mult):
            continue
        yield _finding(
            ctx, "TC201", layer, cost,
            message=f"C={ci.c} is not a multiple of {mult} {_where(ctx, layer.precision)}",
            dims={"C": ci.c, "K": ci.k}, multiple=mult, suggested={"C": _pad(ci.c, mult)},
            fix=f"Pad input channels {ci.c} -> {_pad(ci.c, mult)} (zero weights; tclint fix)")


@rule("TC202", "unaligned-conv-output-channels", "error", "Conv output channels K are not a multiple of the required alignment",
      padding=("out",))
def check_conv_k(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _convs(ctx):
        ci = layer.conv
        if ci.groups != 1 or ci.k is None:
            continue
        mult = ctx.target.multiple(layer.precision)
        if not _misaligned(ci.k, mult):
            continue
        yield _finding(
            ctx, "TC202", layer, cost,
            message=f"K={ci.k} is not a multiple of {mult} {_where(ctx, layer.precision)}",
            dims={"C": ci.c, "K": ci.k}, multiple=mult, suggested={"K": _pad(ci.k, mult)},
            fix=f"Pad output channels {ci.k} -> {_pad(ci.k, mult)} (zero filters, carried to "
                "the next layer; tclint fix)")


@rule("TC203", "unaligned-grouped-conv-channels", "error", "Grouped conv channels per group are not a multiple of the required alignment",
      padding=("out", "carried"))
def check_grouped(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _convs(ctx):
        ci = layer.conv
        if ci.groups == 1 or ci.depthwise:
            continue  # depthwise convs are memory-bound: Tensor Cores do not help them
        mult = ctx.target.multiple(layer.precision)
        cg, kg = ci.c_per_group, ci.k_per_group
        bad = {n: v for n, v in (("C/g", cg), ("K/g", kg)) if _misaligned(v, mult)}
        if not bad:
            continue
        what = ", ".join(f"{n}={v}" for n, v in bad.items())
        yield _finding(
            ctx, "TC203", layer, cost,
            message=f"{what} per group (groups={ci.groups}) not a multiple of {mult} {_where(ctx, layer.precision)}",
            dims={"C": ci.c, "K": ci.k, "groups": ci.groups}, multiple=mult,
            suggested={n: _pad(v, mult) for n, v in bad.items()},
            fix=f"Pad channels per group to a multiple of {mult} (tclint fix pads per group)")


@rule("TC204", "first-layer-three-channels", "error", "First-layer conv takes a 3-channel image: pad to 4 channels, not 8",
      padding=("in",))
def check_first_layer(ctx: Context) -> Iterator[Finding]:
    for layer, cost in _convs(ctx):
        ci = layer.conv
        if not ci.first_layer or ci.groups != 1 or ci.c is None or ci.c >= 4 or ci.c < 1:
            continue
        yield _finding(
            ctx, "TC204", layer, cost,
            message=f"first conv has C={ci.c} input channels; the C=4 NHWC Tensor Core kernels need 4",
            dims={"C": ci.c, "K": ci.k}, multiple=4, suggested={"C": 4},
            fix=f"Pad the image input {ci.c} -> 4 channels (a zero channel; tclint fix)")


@rule("TC205", "nchw-conv-layout", "warning", "Tensor Core convs run in NCHW: the GPU transposes around every conv",
      fix="layout")
def check_layout(ctx: Context) -> Iterator[Finding]:
    convs = [(layer, cost) for layer, cost in _convs(ctx)
             if layer.conv.layout == "NCHW" and cost.layout_s > 0 and not layer.conv.depthwise]
    if not convs:
        return
    layout_s = sum(cost.layout_s for _, cost in convs)
    share = layout_s / ctx.cost.total_s if ctx.cost.total_s else 0.0
    after = ctx.cost.total_s - layout_s
    yield _finding(
        ctx, "TC205", None, None,
        message=f"{len(convs)} Tensor Core convs run in NCHW; transposes to NHWC cost an "
                f"estimated {share:.0%} of GPU time",
        dims={"convs": len(convs)}, multiple=None, suggested=None, share=share,
        speedup=ctx.cost.total_s / after if after > 0 else None, path="", op="Conv",
        saving_s=layout_s,
        fix="Run channels-last: `tclint fix --layout nhwc`, or onnxruntime's CUDA provider "
            "option prefer_nhwc=1")


# --------------------------------------------------------------------------------------------
# TC3xx: FP16 hazards (detection in tclint.hazards; reads only constants of at most 1 MB)
# --------------------------------------------------------------------------------------------
def _hazards(ctx: Context, code: str) -> Iterator[Finding]:
    if ctx.target.dtype not in ("fp16", "bf16"):
        return
    if "hazards" not in ctx.extra:
        from tclint.hazards import find_fp16_hazards

        ctx.extra["hazards"] = find_fp16_hazards(
            ctx.extra["model"], provider=ctx.extra.get("provider", "cuda"), dtype=ctx.target.dtype)
    for h in ctx.extra["hazards"]:
        if h.code == code:
            yield _finding(ctx, code, None, None, message=h.message, dims=dict(h.dims),
                           multiple=None, suggested=None, share=0.0, path=h.node_name, saving_s=0.0,
                           op=h.op_type, fix=_HAZARD_FIX[code])


_HAZARD_FIX = {
    "TC301": "tclint convert clamps it into range and reports it; or keep the consumer in FP32 (--block-node)",
    "TC302": "tclint convert raises it to the smallest FP16 value and reports it; "
             "--keep-norm-epsilon keeps its Add/Sqrt in FP32 instead",
    "TC303": "tclint convert keeps it FP32 with Casts around it; check the provider with --provider",
    "TC304": "tclint convert --auto finds which of these must stay FP32 from real inputs",
}


def _hazard_rule(code: str, name: str, summary: str) -> None:
    rule(code, name, "warning", summary)(lambda ctx: _hazards(ctx, code))


_hazard_rule("TC301", "fp16-constant-out-of-range", "A float32 constant has values outside FP16's range (they would clamp or flush to zero)")
_hazard_rule("TC302", "fp16-norm-epsilon-underflow", "A normalisation epsilon underflows in FP16")
_hazard_rule("TC303", "fp16-no-kernel", "An op has no FP16 kernel on the chosen execution provider")
_hazard_rule("TC304", "fp16-overflow-prone-op", "Softmax/Exp/Pow/reduction over a long axis, likely to overflow in FP16")


# --------------------------------------------------------------------------------------------
# TC9xx: coverage and assumptions
# --------------------------------------------------------------------------------------------
@rule("TC901", "unresolved-dimension", "info", "A symbolic dim is unbound: the layers using it cannot be fully checked")
def check_unresolved(ctx: Context) -> Iterator[Finding]:
    for name, count in sorted(ctx.view.unresolved_symbols.items()):
        label = name if name != "?" else "a computed dim with no name"
        bind = f"--dim {name}=N" if name != "?" else "--input-shape NAME:SHAPE"
        yield _finding(
            ctx, "TC901", None, None,
            message=f"{label} is unresolved in {count} layer(s); costs assume 1",
            dims={"layers": count}, multiple=None, suggested=None, share=0.0, path=name,
            op="", fix=f"Bind it: {bind}")


@rule("TC902", "uncovered-op", "info", "An op the GEMM view does not understand (coverage is visible, never silent)")
def check_uncovered(ctx: Context) -> Iterator[Finding]:
    for op, count in sorted(ctx.view.uncovered.items()):
        yield _finding(
            ctx, "TC902", None, None,
            message=f"{count} node(s) of {op} are not covered by the GEMM view",
            dims={"nodes": count}, multiple=None, suggested=None, share=0.0, path=op, op=op,
            fix="If it runs GEMMs, open an issue with the op's spec; its cost is not counted")


def run_rules(ctx: Context, rules: list[Rule]) -> list[Finding]:
    findings: list[Finding] = []
    for r in rules:
        if r.check is not None:
            findings.extend(r.check(ctx))
    return findings

