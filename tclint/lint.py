"""``check_model``: the library entry point of ``tclint check``.

load (structure only) -> resolve shapes -> GEMM view -> cost model -> rules -> filter -> report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from tclint.config import CheckOptions
from tclint.cost import ModelCost, model_cost
from tclint.errors import UsageError
from tclint.io import write_text
from tclint.load import ShapeResolution, load_model, resolve_shapes
from tclint.rules import Context, Finding, run_rules, select_rules
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
    findings.sort(key=lambda f: (-f.share, f.code, f.path))
    return Analysis(model=model, view=view, cost=cost, target=target, shapes=shapes,
                    findings=findings)


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
    alignment_codes = {"TC101", "TC102", "TC103", "TC104", "TC105", "TC201", "TC202", "TC203", "TC204"}
    unaligned_paths = {f.path for f in findings if f.code in alignment_codes}
    unaligned_share = sum(r.share for r in rows if r.path in unaligned_paths)
    layout = any(f.code == "TC205" for f in findings)
    summary = {
        "layers": len(rows),
        "nodes": analysis.view.node_count,
        "findings": len(findings),
        "hot_findings": sum(1 for f in findings if f.hot and f.severity == "error"),
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


def gate_fails(findings: list[Finding], fail_on: str) -> bool:
    if fail_on == "none":
        return False
    if fail_on == "any":
        return any(f.severity in ("error", "warning") for f in findings)
    return any(f.hot and f.severity == "error" for f in findings)


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------
def load_baseline(path: str | os.PathLike) -> set[str]:
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
