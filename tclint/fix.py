"""``fix_model``: the library entry point of ``tclint fix``.

load (weights lazy) -> sort the graph topologically (a cycle is an input error) -> the same
analysis as ``check`` (:func:`tclint.lint.analyse`), whose pad plan is the decision check's gate
made -> pad what that plan pads (:class:`tclint.passes.pad.PadChannelsPass`), again on the
result while another round pays -> optional channels-last layout (:mod:`tclint.passes.layout`)
-> analyse the result again: the estimate (never slower, unless ``force``) and the findings left
that would still fail check's gate, each with why -> verify on onnxruntime CPU
(:func:`tclint.verify.verify`) -> write atomically.

Nothing is written unless verification passes; the input file is never modified. Findings left
that fail the gate make the CLI exit 1 after writing what it could (like ``ruff check --fix``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from tclint.config import CheckOptions
from tclint.errors import InputError, UsageError, VerificationError
from tclint.io import (
    external_tensors,
    refuse_overwriting_model_output,
    require_readable_weights,
    save_model_atomic,
)
from tclint.lint import analyse, finding_fails, seed_keys
from tclint.load import load_model
from tclint.passes.pad import (
    InsertedNode,
    MalformedModelError,
    PadChange,
    PadChannelsPass,
    SkippedLayer,
    plan_padding,
)
from tclint.rules import pad_codes
from tclint.verify import VerifyResult, verify

logger = logging.getLogger(__name__)

#: Findings ``fix`` acts on: the rules whose fix is padding (read from the rule registry).
ALIGNMENT_CODES = pad_codes()
LAYOUTS = ("nchw", "nhwc")
#: Pad rounds: the first pads check's plan; another runs while the plan on the result pads more.
MAX_ROUNDS = 3


@dataclass(frozen=True)
class FixReport:
    """Everything ``fix_model`` changed, skipped, estimated and verified."""

    input: str
    output: str | None
    target: str
    layout: str
    dry_run: bool
    changes: tuple[PadChange, ...]
    inserted: tuple[InsertedNode, ...]
    skipped: tuple[SkippedLayer, ...]
    #: layout pass summary (None without --layout nhwc)
    layout_changes: dict | None
    extra_flops: float
    extra_params: int
    estimated_time_us_before: float
    estimated_time_us_after: float
    #: alignment findings before, and left after on the layers fix changed / anywhere
    findings_before: int
    findings_after: int
    findings_left_on_changed: tuple[str, ...]
    verification: VerifyResult | None
    seconds: float
    #: report of ``tclint convert`` when --fp16 ran after the fix
    fp16: dict | None = None
    notes: tuple[str, ...] = ()
    #: findings of the result that still fail check's gate (same options), each with why
    left: tuple[dict, ...] = ()
    #: check's gate on the input and on the result
    gate_before: bool = False
    gate_after: bool = False
    rounds: int = 0

    @property
    def speedup(self) -> float:
        after = self.estimated_time_us_after
        return self.estimated_time_us_before / after if after > 0 else 1.0

    def to_dict(self) -> dict:
        return {
            "input": self.input, "output": self.output, "target": self.target,
            "layout": self.layout, "dry_run": self.dry_run,
            "changes": [c.to_dict() for c in self.changes],
            "inserted": [n.to_dict() for n in self.inserted],
            "skipped": [s.to_dict() for s in self.skipped],
            "layout_changes": self.layout_changes,
            "extra_flops": self.extra_flops, "extra_params": self.extra_params,
            "estimated_time_us_before": round(self.estimated_time_us_before, 3),
            "estimated_time_us_after": round(self.estimated_time_us_after, 3),
            "estimated_speedup": round(self.speedup, 4),
            "findings_before": self.findings_before, "findings_after": self.findings_after,
            "findings_left_on_changed": list(self.findings_left_on_changed),
            "verification": None if self.verification is None else self.verification.to_dict(),
            "seconds": round(self.seconds, 3), "fp16": self.fp16, "notes": list(self.notes),
            "left": list(self.left), "gate_before": self.gate_before,
            "gate_after": self.gate_after, "rounds": self.rounds,
        }


def fix_model(
    path: str | os.PathLike,
    out_path: str | os.PathLike | None = None,
    *,
    options: CheckOptions | None = None,
    layout: str = "nchw",
    nhwc_inputs: bool = False,
    dry_run: bool = False,
    inputs: str | os.PathLike | None = None,
    external_data: bool | None = None,
    vocab_multiple: int | None = None,
    force: bool = False,
    rtol: float | None = None,
    atol: float | None = None,
) -> FixReport:
    """Pad what ``check`` reports in the model at ``path``; verify; write ``out_path``.

    ``options``: the check options (arch, dtype, dims, select/ignore, ...). ``force``: pad even
    where the cost model says padding does not pay. ``dry_run``: plan and report only (no
    verification, nothing written). ``rtol``/``atol``: verification tolerance (None: by output
    type, 1e-5 relative for float32; see :data:`tclint.verify.DEFAULT_TOLERANCE`). Raises :class:`VerificationError` (exit 1) when the
    rewritten model does not compute the same outputs; nothing is written then.
    """
    start = time.perf_counter()
    options = options or CheckOptions()
    if layout not in LAYOUTS:
        raise UsageError(f"--layout must be one of {', '.join(LAYOUTS)}")
    if nhwc_inputs and layout != "nhwc":
        raise UsageError("--nhwc-inputs needs --layout nhwc")
    if not dry_run and out_path is None:
        raise UsageError("an output path is needed (or a dry run)")
    vocab_multiple = vocab_multiple or options.vocab_multiple

    model = load_model(path)
    if out_path is not None:
        refuse_overwriting_model_output(out_path, models=[(path, model)])
    if external_data is None and external_tensors(model):
        external_data = True  # external data in, external data out (even if every weight is padded)
    _require_typed_weights(model, path)
    require_readable_weights(model, path)
    try:
        model.graph.sort()  # plan and write a topologically sorted graph
    except ValueError:
        raise InputError(f"{path}: the graph has a cycle; it is not a valid ONNX model") from None
    name = Path(path).name
    snapshot = {v: v.shape for v in _values(model.graph)}
    original_outputs = list(model.graph.outputs)
    before = analyse(model, options, model_name=name)
    notes: list[str] = []
    verify_dims, verify_shapes = options.dims, options.input_shapes
    out_elements = _output_elements(model)
    if (verify_dims or verify_shapes) and out_elements > _VERIFY_OUTPUT_ELEMENTS:
        # the bound dims are for the cost model; random verification runs on dims of 1
        verify_dims, verify_shapes = {}, {}
        notes.append(f"random verification inputs use symbolic dims of 1: the bound dims give "
                     f"{out_elements:,} output elements")
    wanted = [f for f in before.findings if f.code in ALIGNMENT_CODES]

    changes: list[PadChange] = []
    inserted: list[InsertedNode] = []
    skipped: tuple[SkippedLayer, ...] = ()
    analysis, rounds = before, 0
    while True:
        pad_plan = _plan(model, analysis, options, vocab_multiple, force, path)
        if rounds == 0:
            skipped = pad_plan.skipped  # check's decision, in check's words
        if not pad_plan.padded or rounds == MAX_ROUNDS:
            break
        pad = PadChannelsPass(analysis.cost.layers, analysis.target, vocab_multiple=vocab_multiple,
                              memory_ops=analysis.view.memory_ops, plan=pad_plan)
        try:
            pad(model)
        except MalformedModelError as exc:
            raise InputError(f"{path}: {exc}") from None
        except ir.passes.PostconditionError as exc:
            raise VerificationError(f"{path}: fix not written: {exc}") from None
        result = pad.result
        assert result is not None
        rounds += 1
        if rounds == 1:
            first_round = len(result.changes)
        changes.extend(result.changes)
        inserted.extend(result.inserted)
        _restore_shapes(model, snapshot, original_outputs, result.resized)
        snapshot = {v: v.shape for v in _values(model.graph)}
        original_outputs = list(model.graph.outputs)
        if force:
            break
        # another round where the plan on the result still pays (check on the output agrees)
        analysis = analyse(model, options, model_name=name)
    _restore_shapes(model, snapshot, original_outputs, ())  # the last analysis bound dims
    if rounds > 1:  # a later round padded some of what the first left: those are not skipped
        later = {c.node for c in changes[first_round:]}
        skipped = tuple(r for r in skipped if r.node not in later)

    layout_info = None
    padded_only = None
    if layout == "nhwc":
        padded_only = model.clone()  # kept in case channels-last does not pay
        layout_info = _apply_layout(model, nhwc_inputs)

    try:
        clone = _clone(model)
    except ir.serde.SerdeError as exc:
        raise InputError(f"{path}: the model cannot be written back: {_root_cause(exc)}") from None
    after = analyse(clone, options, model_name=name)
    if padded_only is not None and not force and layout_info and not nhwc_inputs:
        without = analyse(_clone(padded_only), options, model_name=name)
        if after.cost.total_s > without.cost.total_s * (1 + 1e-9):
            notes.append(f"--layout nhwc not applied: estimated slower ("
                         f"{without.cost.total_s * 1e6:.1f} us -> {after.cost.total_s * 1e6:.1f} us: "
                         "the inserted transposes cost more than the NCHW convs they save)")
            model, after, layout_info = padded_only, without, {"skipped": "estimated slower"}
    after_findings = [f for f in after.findings if f.code in ALIGNMENT_CODES]
    changed = {c.node for c in changes}
    left_on_changed = tuple(sorted({f"{f.code} {f.path}" for f in after_findings if f.path in changed}))
    left = tuple(_left(f) for f in after.findings if finding_fails(f, options.fail_on))
    slower = after.cost.total_s > before.cost.total_s * (1 + 1e-9)
    if slower and not force:
        raise VerificationError(
            f"{path}: fix not written: the result is estimated slower "
            f"({before.cost.total_s * 1e6:.1f} us -> {after.cost.total_s * 1e6:.1f} us); "
            "--force writes it anyway")

    verification = None
    if not dry_run:
        changed_any = bool(changes or inserted
                           or (layout_info and (layout_info.get("convs_converted")
                                                or layout_info.get("transposes_removed")
                                                or layout_info.get("inputs_nhwc"))))
        verification = verify(path, model, inputs=inputs, dims=verify_dims,
                              input_shapes=verify_shapes, rtol=rtol, atol=atol,
                              compare=changed_any or inputs is not None,
                              nhwc_inputs=tuple((layout_info or {}).get("inputs_nhwc", ())))
        if not verification.ok:
            raise VerificationError(f"{path}: fix not written: {verification.message}")
        save_model_atomic(model, out_path, external_data=_external_policy(model, external_data))

    extra_flops = sum(c.extra_flops or 0.0 for c in changes)
    extra_params = sum(c.extra_params for c in changes)
    return FixReport(
        input=str(path), output=None if dry_run else str(out_path),
        target=before.target.describe(), layout=layout, dry_run=dry_run,
        changes=tuple(changes), inserted=tuple(inserted), skipped=skipped,
        layout_changes=layout_info, extra_flops=extra_flops, extra_params=extra_params,
        estimated_time_us_before=before.cost.total_s * 1e6,
        estimated_time_us_after=after.cost.total_s * 1e6,
        findings_before=len(wanted), findings_after=len(after_findings),
        findings_left_on_changed=left_on_changed, verification=verification, notes=tuple(notes),
        seconds=time.perf_counter() - start, left=left,
        gate_before=any(finding_fails(f, options.fail_on) for f in before.findings),
        gate_after=bool(left), rounds=rounds,
    )


def _plan(model: ir.Model, analysis, options: CheckOptions, vocab_multiple: int, force: bool, path):
    """Check's own plan (the gate's decision), or with ``force`` every dim that can be padded."""
    if analysis.pad_plan is None:
        raise InputError(f"{path}: {analysis.plan_error}")
    if not force and vocab_multiple == options.vocab_multiple:
        return analysis.pad_plan
    try:
        return plan_padding(model, analysis.cost.layers, analysis.target,
                            memory_ops=analysis.view.memory_ops, total_s=analysis.cost.total_s,
                            vocab_multiple=vocab_multiple, only=seed_keys(analysis.findings),
                            force=force)
    except MalformedModelError as exc:
        raise InputError(f"{path}: {exc}") from None


def _left(f) -> dict:
    why = f.fix_note or ("advice: " + f.fix if f.fix_status == "advice" else "not fixed")
    if f.pays_from:
        why += f"; pays from batch {f.pays_from}"
    return {"code": f.code, "node": f.path or "(model)", "fix_status": f.fix_status,
            "saving": round(f.saving, 6), "why": why}


# --------------------------------------------------------------------------------------------
#: Random verification with the user's bound dims is skipped above this many output elements
#: (two sessions hold them in float64 for the comparison).
_VERIFY_OUTPUT_ELEMENTS = 1 << 26


def _output_elements(model: ir.Model) -> int:
    total = 0
    for v in model.graph.outputs:
        if v.shape is not None and all(isinstance(d, int) for d in v.shape):
            n = 1
            for d in v.shape:
                n *= d
            total += n
    return total


def _external_policy(model: ir.Model, external_data: bool | None) -> bool | None:
    """A model read with external data is written with its own data file (so the output never
    points at the input's file); ``external_data=False`` inlines every weight."""
    external = [v for v in model.graph.initializers.values()
                if isinstance(v.const_value, ir.ExternalTensor)]
    if external_data is None and external:
        return True
    if external_data is False:
        for v in external:
            v.const_value = ir.tensor(v.const_value.numpy(), name=v.name)
    return external_data


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return " ".join(str(exc).split())[:200] or type(exc).__name__


#: TensorProto fields holding typed (not raw) values, and how many values one entry holds
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                 "string_data")


def _require_typed_weights(model: ir.Model, path) -> None:
    """Initializers whose stored values agree with their declared type and dims (no bytes are
    copied: only lengths are compared)."""
    for value in model.graph.initializers.values():
        tensor = value.const_value
        if tensor is None or tensor.dtype == ir.DataType.STRING:
            continue
        try:
            nbytes = tensor.nbytes
        except (TypeError, ValueError):
            raise InputError(f"{path}: initializer {value.name!r} has no valid element type "
                             f"({tensor.dtype})") from None
        proto = getattr(tensor, "raw", None)
        if not isinstance(proto, onnx.TensorProto) or proto.data_location == onnx.TensorProto.EXTERNAL:
            continue
        stored = None
        if proto.HasField("raw_data"):
            stored, expected, unit = len(proto.raw_data), nbytes, "bytes"
        else:
            for name in _TYPED_FIELDS:
                n = len(getattr(proto, name))
                if n:
                    stored, expected, unit = n, tensor.size, "values"
                    if tensor.dtype in (ir.DataType.COMPLEX64, ir.DataType.COMPLEX128):
                        expected *= 2
                    break
        if stored is not None and stored != expected and tensor.dtype.bitwidth >= 8:
            raise InputError(f"{path}: initializer {value.name!r} stores {stored} {unit}, its "
                             f"type and dims {list(tensor.shape)} need {expected}")


def _values(graph: ir.Graph):
    yield from graph.inputs
    for node in graph.all_nodes():
        yield from node.outputs


def _restore_shapes(model: ir.Model, snapshot: dict, original_outputs: list, resized) -> None:
    """Analysis binds --dim values into the model's shapes; the output keeps the original
    (symbolic) shapes, with every axis the pass changed (padded channels, a padded weight's
    Transpose): no annotation is left stale."""
    changed: dict[ir.Value, list[tuple[int, int]]] = {}
    for value, axis, size in resized:
        changed.setdefault(value, []).append((axis, size))
    outputs = set(model.graph.outputs)
    for value in _values(model.graph):
        if value in snapshot:
            shape = snapshot[value]
            if shape is not None and value in changed:
                dims = list(shape)
                for axis, size in changed[value]:
                    if -len(dims) <= axis < len(dims):
                        dims[axis] = size
                    else:
                        dims = None  # an annotation of another rank than the pass saw: drop it
                        break
                shape = None if dims is None else ir.Shape(dims)
            value.shape = shape
        elif value not in outputs and not value.is_initializer():
            value.shape = None  # inserted by the pass: onnxruntime infers it
    for value, original in zip(model.graph.outputs, original_outputs):
        if value is not original:
            # a restored graph output took over the original's name: give it its shape back
            value.shape = snapshot.get(original)


def _clone(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _apply_layout(model: ir.Model, nhwc_inputs: bool) -> dict:
    try:
        from tclint.passes.layout import NhwcLayoutPass
    except ImportError:
        raise UsageError("--layout nhwc is not available in this build (tclint.passes.layout "
                         "is missing)") from None
    p = NhwcLayoutPass(nhwc_inputs=nhwc_inputs)
    p(model)
    change = getattr(p, "change", None)
    if change is not None and dataclasses.is_dataclass(change):
        return dataclasses.asdict(change)
    return {}


# --------------------------------------------------------------------------------------------
# Formatting (pure functions)
# --------------------------------------------------------------------------------------------
def _fmt_dims(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items())


def _flops(x: float | None) -> str:
    if x is None:
        return "?"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.2f}{unit}"
    return f"{x:.0f}"


def format_table(report: FixReport) -> str:
    from tabulate import tabulate

    dest = report.output or "(dry run: nothing written)"
    lines = [f"{report.input} -> {dest}", f"  target: {report.target}, layout {report.layout}"]
    lines.append(
        f"  {len(report.changes)} layers padded, {len(report.inserted)} nodes inserted, "
        f"{len(report.skipped)} skipped; extra {_flops(report.extra_flops)} FLOPs, "
        f"{report.extra_params} params")
    lines.append(
        f"  estimated GPU time {report.estimated_time_us_before:.1f} us -> "
        f"{report.estimated_time_us_after:.1f} us (x{report.speedup:.3f}); alignment findings "
        f"{report.findings_before} -> {report.findings_after}")
    if report.findings_left_on_changed:
        lines.append("  left on padded layers: " + ", ".join(report.findings_left_on_changed))
    if report.left:
        lines.append(f"  {len(report.left)} finding(s) left that fail check's gate:")
        for f in report.left:
            lines.append(f"    {f['code']} {f['node']}: {f['why']}")
    else:
        lines.append("  check's gate on the result: passes")
    v = report.verification
    if v is not None:
        lines.append(f"  verification (onnxruntime CPU): {v.message}")
    if report.changes:
        rows = [(c.node, c.op, _fmt_dims(c.dims_before), _fmt_dims(c.dims_after),
                 _flops(c.extra_flops), c.extra_params, c.reason) for c in report.changes]
        lines += ["", "Padded:", tabulate(rows, headers=["node", "op", "before", "after",
                                                         "extra FLOPs", "extra params", "why"])]
    if report.inserted:
        rows = [(n.name, n.op, n.reason) for n in report.inserted]
        lines += ["", "Inserted:", tabulate(rows, headers=["node", "op", "why"])]
    if report.skipped:
        rows = [(s.node, s.op, _fmt_dims(s.dims), s.reason) for s in report.skipped]
        lines += ["", "Skipped:", tabulate(rows, headers=["node", "op", "dims", "why"])]
    if report.layout_changes:
        lines += ["", "Layout: " + json.dumps(report.layout_changes, default=str)]
    if report.fp16:
        lines += ["", f"FP16: {report.fp16.get('nodes_low_precision')} of "
                      f"{report.fp16.get('nodes_total')} nodes converted; max rel error "
                      f"{report.fp16.get('max_rel_error')}"]
    for note in report.notes:
        lines.append(f"  note: {note}")
    lines.append(f"  time: {report.seconds:.2f} s")
    return "\n".join(lines) + "\n"


def format_json(report: FixReport) -> str:
    return json.dumps(report.to_dict(), indent=2, default=str) + "\n"


__all__ = ["ALIGNMENT_CODES", "FixReport", "fix_model", "format_json", "format_table"]
