"""``fix_model``: the library entry point of ``tclint fix``.

load (weights lazy) -> the same analysis as ``check`` (:func:`tclint.lint.analyse`) -> pad what
check reports (:class:`tclint.passes.pad.PadChannelsPass`) -> optional channels-last layout
(:mod:`tclint.passes.layout`) -> analyse the result again (estimated speedup, findings left)
-> verify on onnxruntime CPU (:func:`tclint.verify.verify`) -> write atomically.
Nothing is written unless verification passes; the input file is never modified.
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
from tclint.lint import analyse
from tclint.load import load_model
from tclint.passes.pad import (
    InsertedNode,
    MalformedModelError,
    PadChange,
    PadChannelsPass,
    SkippedLayer,
)
from tclint.verify import VerifyResult, verify

logger = logging.getLogger(__name__)

#: Findings ``fix`` acts on (the alignment rules whose fix is padding).
ALIGNMENT_CODES = frozenset({"TC101", "TC102", "TC104", "TC201", "TC202", "TC203", "TC204"})
LAYOUTS = ("nchw", "nhwc")


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
    snapshot = {v: v.shape for v in _values(model.graph)}
    original_outputs = list(model.graph.outputs)
    before = analyse(model, options, model_name=Path(path).name)
    notes: list[str] = []
    verify_dims, verify_shapes = options.dims, options.input_shapes
    out_elements = _output_elements(model)
    if (verify_dims or verify_shapes) and out_elements > _VERIFY_OUTPUT_ELEMENTS:
        # the bound dims are for the cost model; random verification runs on dims of 1
        verify_dims, verify_shapes = {}, {}
        notes.append(f"random verification inputs use symbolic dims of 1: the bound dims give "
                     f"{out_elements:,} output elements")
    wanted = [f for f in before.findings if f.code in ALIGNMENT_CODES]
    only = {f.path for f in wanted}

    pad = PadChannelsPass(before.cost.layers, before.target, vocab_multiple=vocab_multiple,
                          only=only, force=force)
    try:
        pad(model)
    except MalformedModelError as exc:
        raise InputError(f"{path}: {exc}") from None
    except ir.passes.PostconditionError as exc:
        raise VerificationError(f"{path}: fix not written: {exc}") from None
    result = pad.result
    assert result is not None
    _restore_shapes(model, snapshot, original_outputs, result.resized)

    layout_info = None
    if layout == "nhwc":
        layout_info = _apply_layout(model, nhwc_inputs)

    try:
        clone = _clone(model)
    except ir.serde.SerdeError as exc:
        raise InputError(f"{path}: the model cannot be written back: {_root_cause(exc)}") from None
    after = analyse(clone, options, model_name=Path(path).name)
    after_findings = [f for f in after.findings if f.code in ALIGNMENT_CODES]
    changed = {c.node for c in result.changes}
    left = tuple(sorted({f"{f.code} {f.path}" for f in after_findings if f.path in changed}))

    verification = None
    if not dry_run:
        changed_any = bool(result.changes or result.inserted
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

    extra_flops = sum(c.extra_flops or 0.0 for c in result.changes)
    extra_params = sum(c.extra_params for c in result.changes)
    return FixReport(
        input=str(path), output=None if dry_run else str(out_path),
        target=before.target.describe(), layout=layout, dry_run=dry_run,
        changes=result.changes, inserted=result.inserted, skipped=result.skipped,
        layout_changes=layout_info, extra_flops=extra_flops, extra_params=extra_params,
        estimated_time_us_before=before.cost.total_s * 1e6,
        estimated_time_us_after=after.cost.total_s * 1e6,
        findings_before=len(wanted), findings_after=len(after_findings),
        findings_left_on_changed=left, verification=verification, notes=tuple(notes),
        seconds=time.perf_counter() - start,
    )


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
    (symbolic) shapes, with the padded channel axes the pass changed."""
    changed = {value: (axis, size) for value, axis, size in resized}
    outputs = set(model.graph.outputs)
    for value in _values(model.graph):
        if value in snapshot:
            shape = snapshot[value]
            if shape is not None and value in changed:
                axis, size = changed[value]
                dims = list(shape)
                if -len(dims) <= axis < len(dims):
                    dims[axis] = size
                    shape = ir.Shape(dims)
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
