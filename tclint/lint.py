"""``check_model``: the library entry point of ``tclint check``.

load (structure only) -> resolve shapes -> GEMM view -> cost model -> rules -> pad plan (the
decision ``tclint fix`` makes, planned but not applied) -> filter -> report.

The gate (:func:`gate_fails`, ``--fail-on``):

- ``hot`` (default): hot findings that ``tclint fix`` with the same options fixes. A finding is
  hot when fixing it saves at least ``--hot-threshold`` of the model's estimated time, net of
  the nodes the fix inserts (the pad planner's figure), so check fails exactly on what fix
  fixes, and check on fix's output passes.
- ``advice``: every hot finding, also those fix does not fix: advice rules (TC205 layout, TC103
  runtime M, TC105 head dim, TC110 tile quantization) and padding findings fix cannot pad
  safely (a computed or shared weight, an op it does not rewrite; the reason says which).
  ``tclint fix`` then exits 1 naming each one it leaves.
- ``any``: any finding of severity error or warning, hot or not.
- ``none``: never.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dataclasses

import onnx_ir as ir

from tclint.config import CheckOptions
from tclint.cost import ModelCost, model_cost
from tclint.errors import UsageError
from tclint.io import not_a_regular_file, write_text
from tclint.load import ShapeResolution, load_model, resolve_shapes
from tclint.passes.pad import MalformedModelError, PadPlan, plan_padding
from tclint.rules import RULES, Context, Finding, pad_codes, run_rules, select_rules
from tclint.specs import Target, make_target
from tclint.view import ModelView, build_view

#: the model's own float type -> the precision it is checked in
_OWN_PRECISION = {"float16": "fp16", "bfloat16": "bf16"}


@dataclass(frozen=True)
class LayerRow:
    """One layer as the report shows it."""

    path: str
    op: str
    m: int | None
    n: int | None
    k: int | None
    batch: int | None
    precision: str
    time_us: float
    share: float
    bound: str
    speedup: float
    waste: float
    findings: tuple[str, ...]

    def to_dict(self) -> dict:
        return {
            "node": self.path, "op": self.op, "M": self.m, "N": self.n, "K": self.k,
            "batch": self.batch, "precision": self.precision,
            "time_us": round(self.time_us, 3), "share": round(self.share, 6),
            "bound": self.bound, "speedup_if_fixed": round(self.speedup, 4),
            "quantization_waste": round(self.waste, 4), "findings": list(self.findings),
        }


@dataclass(frozen=True)
class ModelReport:
    model: str
    target: str
    arch: str
    dtype: str
    multiple: int
    findings: list[Finding]
    layers: list[LayerRow]
    summary: dict
    notes: list[str] = field(default_factory=list)
    baselined: int = 0
    gate_failed: bool = False

    def to_dict(self) -> dict:
        return {
            "model": self.model, "target": self.target, "arch": self.arch, "dtype": self.dtype,
            "multiple": self.multiple, "summary": self.summary, "notes": self.notes,
            "baselined": self.baselined, "gate_failed": self.gate_failed,
            "findings": [f.to_dict() for f in self.findings],
            "layers": [row.to_dict() for row in self.layers],
        }


@dataclass
class Analysis:
    """Everything ``check`` computed, for the fixer and the report to share."""

    model: ir.Model
    view: ModelView
    cost: ModelCost
    target: Target
    shapes: ShapeResolution
    findings: list[Finding]
    #: what ``tclint fix`` would pad (None: no plan could be made, see ``plan_error``)
    pad_plan: PadPlan | None = None
    plan_error: str = ""


def analyse(model: ir.Model, options: CheckOptions, *, model_name: str = "") -> Analysis:
    """Shapes -> view -> cost -> rules on an already-loaded model (modified in place: shapes)."""
    shapes = resolve_shapes(model, dims=options.dims, input_shapes=options.input_shapes,
                            symbolic=options.symbolic_inference)
    from tclint.view import model_float_dtype

    own = _OWN_PRECISION.get(model_float_dtype(model))
    dtype = options.dtype or own or "fp16"
    target = make_target(options.arch, dtype, strict=options.strict, calibration=options.calibration)
    view = build_view(model, compute_precision=dtype)
    cost = model_cost(view, target)
    ctx = Context(view=view, cost=cost, target=target, hot_threshold=options.hot_threshold,
                  quantization_threshold=options.quantization_threshold, model=model_name,
                  extra={"vocab_multiple": options.vocab_multiple, "model": model,
                         "provider": options.provider})
    findings = run_rules(ctx, select_rules(options.select, options.ignore))
    pad_plan, plan_error = None, ""
    wanted = seed_keys(findings)
    try:
        pad_plan = plan_padding(model, cost.layers, target, memory_ops=view.memory_ops,
                                total_s=cost.total_s, vocab_multiple=options.vocab_multiple,
                                only=wanted)
    except MalformedModelError as exc:
        plan_error = str(exc)
    findings = [decide(f, pad_plan, cost, options.hot_threshold, plan_error) for f in findings]
    findings.sort(key=lambda f: (-f.saving, -f.share, f.code, f.path))
    return Analysis(model=model, view=view, cost=cost, target=target, shapes=shapes,
                    findings=findings, pad_plan=pad_plan, plan_error=plan_error)


def _kinds(f: Finding) -> list[str]:
    """The dims a padding finding needs padded (rule metadata; TC203 names which per group)."""
    rule = RULES.get(f.code)
    if rule is None:
        return []
    wanted = set(f.suggested or {})
    kinds = []
    for kind in rule.padding:
        if f.code == "TC203" and {"out": "K/g", "carried": "C/g"}[kind] not in wanted:
            continue
        kinds.append(kind)
    return kinds


def seed_keys(findings: list[Finding]) -> set[str]:
    """The planner's seeds (``label#out``, ``label#in``) the padding findings ask for: the pad
    plan pads what ``check`` reports, and only that (``--select``/``--ignore`` included)."""
    return {f"{f.path}#{kind}" for f in findings for kind in _kinds(f) if kind != "carried"}


@dataclass(frozen=True)
class _Part:
    """The planner's decision on one dim a finding needs."""

    status: str
    saving_s: float
    reason: str
    pays_from: int | None
    seeds: tuple[str, ...]  # the seeds whose padding it is


_STATUS_ORDER = ("unsafe", "no-gain")  # a finding takes the worst status of its parts


def decide(f: Finding, plan: PadPlan | None, cost: ModelCost, hot_threshold: float,
           plan_error: str = "") -> Finding:
    """A padding finding with the pad planner's decision: its net saving, whether ``tclint
    fix`` pads it, and why not (advice findings keep the rule's own estimate)."""
    kinds = _kinds(f)
    if not kinds:
        return f

    def share(seconds: float) -> float:
        return seconds / cost.total_s if cost.total_s > 0 else 0.0

    def hot(saving: float) -> bool:
        return saving > 0 and saving >= hot_threshold

    if plan is None:
        return dataclasses.replace(f, fix_status="unsafe", hot=hot(f.saving),
                                   fix_note=f"no pad plan: {plan_error}")
    parts = [_carried_part(plan, f) if kind == "carried" else _seed_part(plan, f"{f.path}#{kind}")
             for kind in kinds]
    bad = [p for p in parts if p.status != "fix"]
    if not bad:
        seeds = {k for p in parts for k in p.seeds}  # a seed counted once
        saving = share(sum(plan.decisions[k].saving_s for k in seeds))
        return dataclasses.replace(f, saving=saving, hot=hot(saving), fix_status="fix",
                                   fix_note="", pays_from=None)
    worst = min(bad, key=lambda p: _STATUS_ORDER.index(p.status))
    # unsafe: what aligning the layer would save, were it possible (the rule's own estimate)
    saving = f.saving if worst.status == "unsafe" else share(worst.saving_s)
    return dataclasses.replace(f, saving=saving, hot=hot(saving), fix_status=worst.status,
                               fix_note=worst.reason, pays_from=worst.pays_from)


def _seed_part(plan: PadPlan, key: str) -> _Part:
    d = plan.decisions.get(key)
    if d is None:
        return _Part("unsafe", 0.0, "not a dim the pad pass plans", None, ())
    return _Part(d.status, d.saving_s, d.reason, d.pays_from, (key,))


def _carried_part(plan: PadPlan, f: Finding) -> _Part:
    """An input dim (conv C, GEMM K): fixed when its producers' padding reaches it aligned."""
    seeds = plan.carried.get(f.path)
    if seeds:
        return _Part("fix", sum(plan.decisions[k].saving_s for k in seeds), "", None, tuple(seeds))
    why, keys = plan.unfixed.get(f.path, ("its producer is not padded", ()))
    decisions = [plan.decisions[k] for k in keys if k in plan.decisions]
    no_gain = [d for d in decisions if d.status == "no-gain"]
    if no_gain:  # the padding that would set this dim does not pay
        d = min(no_gain, key=lambda d: d.saving_s)
        pays = [x.pays_from for x in no_gain]
        return _Part("no-gain", sum(x.saving_s for x in no_gain), f"{why}: {d.layer}: {d.reason}",
                     max(pays) if all(pays) else None, tuple(x.key for x in no_gain))
    unsafe = [d for d in decisions if d.status == "unsafe"]
    if unsafe:
        return _Part("unsafe", 0.0, f"{why}: {unsafe[0].layer}: {unsafe[0].reason}", None, ())
    return _Part("unsafe", 0.0, why, None, ())


def check_model(
    path: str | os.PathLike,
    options: CheckOptions | None = None,
    *,
    baseline: set[str] | None = None,
) -> ModelReport:
    """Lint one model file. Never reads weights."""
    options = options or CheckOptions()
    started = time.perf_counter()
    model = load_model(path)
    name = Path(path).name
    analysis = analyse(model, options, model_name=name)
    return build_report(analysis, options, model_path=str(path), baseline=baseline,
                        seconds=time.perf_counter() - started)


def build_report(analysis: Analysis, options: CheckOptions, *, model_path: str,
                 baseline: set[str] | None = None, seconds: float = 0.0) -> ModelReport:
    cost, target = analysis.cost, analysis.target
    findings = analysis.findings
    baselined = 0
    if baseline:
        kept = [f for f in findings if f.key() not in baseline]
        baselined = len(findings) - len(kept)
        findings = kept
    by_layer: dict[str, list[str]] = {}
    for f in findings:
        by_layer.setdefault(f.path, []).append(f.code)
    rows = [
        LayerRow(path=layer.label, op=layer.op, m=layer.m, n=layer.n, k=layer.k,
                 batch=layer.batch, precision=layer.precision, time_us=c.time_s * 1e6,
                 share=cost.share(c), bound=c.bound, speedup=c.speedup_if_fixed, waste=c.waste,
                 findings=tuple(by_layer.get(layer.label, ())))
        for layer, c in cost.layers
    ]
    rows.sort(key=lambda r: -r.time_us)
    findings = [dataclasses.replace(f, gate=finding_fails(f, options.fail_on)) for f in findings]
    alignment_codes = pad_codes() | {"TC103", "TC105"}
    unaligned_paths = {f.path for f in findings if f.code in alignment_codes}
    unaligned_share = sum(r.share for r in rows if r.path in unaligned_paths)
    layout = any(f.code == "TC205" for f in findings)
    summary = {
        "layers": len(rows),
        "nodes": analysis.view.node_count,
        "findings": len(findings),
        "hot_findings": sum(1 for f in findings if f.hot),
        "gate_findings": sum(1 for f in findings if f.gate),
        "fixable_findings": sum(1 for f in findings if f.fix_status == "fix"),
        "fix_saving": round(analysis.pad_plan.saving_s / cost.total_s, 6)
        if analysis.pad_plan is not None and cost.total_s > 0 else 0.0,
        "unaligned_time_share": round(unaligned_share, 6),
        "estimated_time_us": round(cost.total_s * 1e6, 3),
        "speedup_if_all_fixed": round(cost.speedup_if_fixed(alignment=True, layout=layout), 4),
        "speedup_if_aligned": round(cost.speedup_if_fixed(alignment=True, layout=False), 4),
        "uncovered_ops": dict(analysis.view.uncovered),
        "unresolved_dims": dict(analysis.view.unresolved_symbols),
        "seconds": round(seconds, 3),
    }
    notes = list(analysis.shapes.notes)
    if analysis.view.float_dtype == "float32" and options.dtype is None:
        notes.append(f"float32 model checked as {target.dtype} (the precision it will run in; "
                     "--dtype to change)")
    if analysis.shapes.bound:
        notes.append("bound dims: " + ", ".join(f"{k}={v}" for k, v in sorted(analysis.shapes.bound.items())))
    report = ModelReport(
        model=model_path, target=target.describe(), arch=target.gpu.name, dtype=target.dtype,
        multiple=target.multiple(), findings=findings, layers=rows, summary=summary,
        notes=notes, baselined=baselined,
        gate_failed=gate_fails(findings, options.fail_on),
    )
    return report


def finding_fails(f: Finding, fail_on: str) -> bool:
    """Whether this finding fails the gate under ``--fail-on`` (see the module docstring)."""
    if fail_on == "none":
        return False
    if fail_on == "any":
        return f.severity in ("error", "warning")
    if fail_on == "advice":
        return f.hot
    # "hot": hot findings `tclint fix` fixes with the same options (the rest is advice)
    return f.hot and f.fix_status == "fix"


def gate_fails(findings: list[Finding], fail_on: str) -> bool:
    return any(finding_fails(f, fail_on) for f in findings)


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------
def load_baseline(path: str | os.PathLike) -> set[str]:
    if os.path.exists(path) and not_a_regular_file(path):
        raise UsageError(f"cannot read baseline {path}: {not_a_regular_file(path)}")
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"baseline {path} does not exist (create it with --update-baseline)") from None
    except RecursionError:
        raise UsageError(f"cannot read baseline {path}: JSON nested too deeply") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read baseline {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise UsageError(f"baseline {path} is not a tclint baseline")
    return {json.dumps(entry, sort_keys=True) for entry in data["findings"]}


def write_baseline(path: str | os.PathLike, reports: list[ModelReport]) -> int:
    entries = sorted({f.key() for r in reports for f in r.findings})
    data = {"version": 1, "tool": "tclint", "findings": [json.loads(e) for e in entries]}
    write_text(path, json.dumps(data, indent=1) + "\n")
    return len(entries)
