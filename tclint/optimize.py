"""``optimize_model``: check -> fix -> convert (FP16) -> verify -> bench, in one call.

Writes three files into the output folder, and nothing at all if a step fails:

- ``model.opt.onnx``: the fixed (padded) model converted to FP16;
- ``report.json``: findings, what was padded, per-layer estimated time before/after, the
  conversion, accuracy against the original and the measured latencies;
- ``report.html``: the same as a page a person would rather look at (:mod:`tclint.html_report`).

Bench compares three models on the best provider available (:func:`tclint.bench.resolve_provider`):
the original FP32 model, a plain FP16 conversion of the original, and fixed+FP16. The number
that shows what the fixing bought is fixed+FP16 over plain FP16 (both are FP16); the speedup
over FP32 is reported too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx_ir as ir

from tclint import __version__
from tclint.bench import (
    TOLERANCES,
    ModelSpec,
    bench_models,
    bootstrap_speedup,
    compare_outputs,
    load_npz_inputs,
    make_inputs,
    profile_layers,
    resolve_provider,
)
from tclint.config import CheckOptions
from tclint.convert import convert_model
from tclint.errors import InputError, OutputError, VerificationError
from tclint.fix import fix_model
from tclint.html_report import render_html
from tclint.io import refuse_overwriting_model_output, save_model_atomic, temp_dir, write_text
from tclint.lint import check_model
from tclint.load import load_model
from tclint.runtime import session_options
from tclint.verify import cpu_session

logger = logging.getLogger(__name__)

STEPS = ("check", "fix", "convert", "verify", "bench", "report")

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class Step:
    name: str
    status: str  # "done", "skipped"
    seconds: float
    detail: str = ""


@dataclass(frozen=True)
class OptimizeReport:
    model: str
    output_dir: str
    optimized_model: str
    report_json: str
    report_html: str
    steps: tuple[Step, ...]
    #: what report.json holds (also what report.html renders)
    results: dict


def optimize_model(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    options: CheckOptions | None = None,
    provider: str | None = None,
    warmup: int = 10,
    runs: int = 100,
    batch: int | None = None,
    inputs_npz: str | os.PathLike | None = None,
    prefer_nhwc: bool = False,
    cudnn_algo_search: str = "exhaustive",
    rtol: float | None = None,
    atol: float | None = None,
    bench: bool = True,
    measure_layers: bool | None = None,
    progress: Progress | None = None,
    force: bool = False,
    layout: str = "nchw",
) -> OptimizeReport:
    """Optimize ``path`` into ``out_dir`` (created if needed). The input is never modified.

    ``options``: the ``check`` options (arch, dims, input shapes, thresholds...), shared by the
    fix step. ``rtol``/``atol``: accuracy tolerance of the optimized model against the original
    (default: the FP16 tolerance of :data:`tclint.bench.TOLERANCES`). Raises
    :class:`VerificationError` (exit 1) when the optimized model's outputs are out of tolerance.
    ``measure_layers``: also time each layer of plain FP16 and fixed+FP16 with onnxruntime's
    profiler, for the report's chart; default: only when benching on a GPU (CPU kernel times say
    nothing about the GPU estimates they would sit next to). ``force``, ``layout``: as for
    ``tclint fix`` (the fix step is :func:`tclint.fix.fix_model`, the same decision ``check``'s
    gate makes). ``results["gate"]`` holds what ``check`` says of the written model (same
    options): the findings left that fail its gate, each with why.
    """
    options = options or CheckOptions()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise OutputError(f"output folder {out} is not writable")
    refuse_overwriting_model_output(
        out / "model.opt.onnx", models=[path], reads=[inputs_npz, options.calibration],
        others=[out / "report.json", out / "report.html"])
    dtype = options.dtype if options.dtype in ("fp16", "bf16") else "fp16"
    rtol = TOLERANCES["fp16"][0] if rtol is None else rtol
    atol = TOLERANCES["fp16"][1] if atol is None else atol
    steps: list[Step] = []
    notes: list[str] = []
    total = len(STEPS) - (0 if bench else 1)

    def begin(name: str) -> float:
        if progress:
            progress(len(steps) + 1, total, name)
        return time.perf_counter()

    def sub(label: str) -> Callable[[str], None] | None:
        """Progress of a long step's own stages, shown under the step's number."""
        if progress is None:
            return None
        index = len(steps) + 1
        return lambda text: progress(index, total, f"convert ({label}): {text}")

    def done(name: str, started: float, detail: str = "", status: str = "done") -> None:
        steps.append(Step(name, status, time.perf_counter() - started, detail))
        logger.info("%s: %s %s", name, status, detail)

    with temp_dir(out) as tmp:
        # 1. check ---------------------------------------------------------------------------
        t = begin("check")
        before = check_model(path, options)
        done("check", t, f"{len(before.findings)} findings, {before.summary['hot_findings']} hot")

        # 2. fix -----------------------------------------------------------------------------
        t = begin("fix")
        fixed_path, changes, fix_info = _run_fix(path, tmp / "fixed.onnx", options, inputs_npz,
                                                 force=force, layout=layout)
        done("fix", t, f"{len(changes)} layers changed")

        # 3. convert -------------------------------------------------------------------------
        t = begin("convert")
        conv_provider = "tensorrt" if provider == "tensorrt" else "cuda"
        plain_path, opt_path = tmp / "plain_fp16.onnx", tmp / "model.opt.onnx"
        plain_conv = convert_model(
            path,
            plain_path,
            dtype=dtype,
            provider=conv_provider,
            inputs=inputs_npz,
            rtol=rtol,
            atol=atol,
            progress=sub("plain"),
        )
        opt_conv = convert_model(
            fixed_path,
            opt_path,
            dtype=dtype,
            provider=conv_provider,
            inputs=inputs_npz,
            rtol=rtol,
            atol=atol,
            progress=sub("fixed"),
        )
        done(
            "convert", t, f"{opt_conv.nodes_low_precision}/{opt_conv.nodes_total} nodes in {dtype}"
        )

        # 4. verify (onnxruntime CPU, against the original) ----------------------------------
        t = begin("verify")
        accuracy = _verify(
            path,
            str(opt_path),
            options=options,
            batch=batch,
            inputs_npz=inputs_npz,
            rtol=rtol,
            atol=atol,
        )
        if not accuracy["passed"]:
            raise VerificationError(
                f"optimized model is out of tolerance: {accuracy['message']}; nothing written"
            )
        done("verify", t, f"max abs diff {accuracy['max_abs_diff']:.3g}")

        # 5. bench ---------------------------------------------------------------------------
        bench_dict, summary_bench, measured = None, {}, None
        if bench and _has_nhwc_conv(str(opt_path)) and resolve_provider(provider)[0] == "cpu":
            bench = False
            steps.append(Step("bench", "skipped", 0.0, "--layout nhwc: NhwcConv runs on CUDA only"))
            notes.append("bench skipped: the model runs com.microsoft.NhwcConv (--layout nhwc), "
                         "which onnxruntime has a CUDA kernel for only; no CUDA session here")
        if bench:
            t = begin("bench")
            report = bench_models(
                [
                    ModelSpec(path, label="original fp32"),
                    ModelSpec(str(plain_path), label=f"plain {dtype}"),
                    ModelSpec(str(opt_path), label=f"fixed+{dtype}"),
                ],
                provider=provider,
                warmup=warmup,
                runs=runs,
                batch=batch,
                dims=options.dims,
                input_shapes=options.input_shapes,
                inputs_npz=inputs_npz,
                prefer_nhwc=prefer_nhwc,
                cudnn_algo_search=cudnn_algo_search,
            )
            bench_dict = report.to_dict()
            summary_bench = _measured_summary(report, dtype)
            if report.provider == "cpu":
                notes.append(
                    "measured on CPU (no CUDA session could be created): CPU timings say "
                    "nothing about Tensor Cores; run on a GPU machine for the real speedup"
                )
            if measure_layers if measure_layers is not None else report.provider != "cpu":
                kw = {
                    "provider": report.provider,
                    "dims": options.dims,
                    "input_shapes": options.input_shapes,
                    "batch": batch,
                    "prefer_nhwc": prefer_nhwc,
                    "cudnn_algo_search": cudnn_algo_search,
                }
                measured = (profile_layers(plain_path, **kw), profile_layers(opt_path, **kw))
                notes.append(
                    f"measured per-layer times: onnxruntime profiler on {report.provider}, graph "
                    f"optimizations off (unfused kernels), plain {dtype} before, fixed+{dtype} after"
                )
            done("bench", t, f"on {report.provider}")

        # 6. report --------------------------------------------------------------------------
        t = begin("report")
        # Estimates compare like with like: plain FP16 vs fixed+FP16 (both carry the FP16
        # boundary Casts), the same pair the measured speedup compares.
        baseline = check_model(str(plain_path), options)
        after = check_model(str(opt_path), options)
        results = _results(
            path,
            out,
            before,
            baseline,
            after,
            changes,
            fix_info,
            plain_conv,
            opt_conv,
            accuracy,
            bench_dict,
            summary_bench,
            notes,
            steps,
            measured,
        )
        # what `tclint check` (same options) says of the written model: the chain's promise
        results["gate"] = {
            "failed": after.gate_failed,
            "left": [{"code": f.code, "node": f.path or "(model)", "fix_status": f.fix_status,
                      "why": f.fix_note or f.fix} for f in after.findings if f.gate],
        }
        final_model = out / "model.opt.onnx"
        save_model_atomic(load_model(opt_path), final_model)
        json_path, html_path = out / "report.json", out / "report.html"
        _write_text(json_path, _json(results))
        _write_text(html_path, render_html(results))
        done("report", t, str(out))
    results["steps"] = [asdict(s) for s in steps]
    _write_text(json_path, _json(results))
    return OptimizeReport(
        model=path,
        output_dir=str(out),
        optimized_model=str(final_model),
        report_json=str(json_path),
        report_html=str(html_path),
        steps=tuple(steps),
        results=results,
    )


def _run_fix(path, out_path, options, inputs_npz, *, force=False,
             layout="nchw") -> tuple[str, list[dict], dict]:
    """Run ``tclint.fix.fix_model`` (verified on onnxruntime CPU before it writes)."""
    report = fix_model(path, out_path, options=options, inputs=inputs_npz, force=force,
                       layout=layout)
    changes = [dict(c.to_dict(), note=c.reason) for c in report.changes]
    return str(out_path), changes, report.to_dict()


def _verify(
    original: str, optimized: str, *, options: CheckOptions, batch, inputs_npz, rtol, atol
) -> dict:
    """Outputs of the optimized model against the original's, on onnxruntime CPU."""
    so = session_options()
    ref = cpu_session(original, so)
    opt = cpu_session(_cpu_runnable(optimized), so)
    if inputs_npz is not None:
        feeds = load_npz_inputs(inputs_npz)
    else:
        import onnx

        feeds = make_inputs(
            ref,
            onnx.load(original, load_external_data=False),
            dims=options.dims,
            input_shapes=options.input_shapes,
            batch=batch,
        )
    names = [o.name for o in ref.get_outputs()]
    expected = dict(zip(names, ref.run(names, feeds)))
    opt_feeds = {i.name: feeds[i.name].astype(_np_type(i.type)) for i in opt.get_inputs()}
    got = dict(zip(names, opt.run(names, opt_feeds)))
    agreement = compare_outputs(expected, got, rtol=rtol, atol=atol)
    per_output = []
    for name in names:
        one = compare_outputs({name: expected[name]}, {name: got[name]}, rtol=rtol, atol=atol)
        per_output.append(
            {
                "name": name,
                "max_abs_diff": one.max_abs_diff,
                "max_rel_diff": one.max_rel_diff,
                "passed": one.agrees,
            }
        )
    return {
        "passed": agreement.agrees,
        "rtol": rtol,
        "atol": atol,
        "max_abs_diff": agreement.max_abs_diff,
        "max_rel_diff": agreement.max_rel_diff,
        "message": agreement.message,
        "provider": "cpu",
        "inputs": "npz" if inputs_npz is not None else "random",
        "outputs": per_output,
    }


def _has_nhwc_conv(path: str) -> bool:
    import onnx

    m = onnx.load(path, load_external_data=False)
    return any(n.op_type == "NhwcConv" and n.domain == "com.microsoft" for n in m.graph.node)


def _cpu_runnable(path: str) -> str | bytes:
    """The model, or (``--layout nhwc``: com.microsoft.NhwcConv has no CPU kernel) its
    equivalent with each NhwcConv as Transpose-Conv-Transpose, as bytes."""
    if not _has_nhwc_conv(path):
        return path
    from tclint.passes.layout import expand_nhwc_conv

    model = expand_nhwc_conv(load_model(path))
    ir.external_data.load_to_model(model)
    return ir.to_proto(model).SerializeToString()


def _np_type(ort_type: str):
    import numpy as np

    return {"tensor(float16)": np.float16, "tensor(double)": np.float64}.get(
        ort_type, np.float32 if "float" in ort_type else None
    ) or np.int64


def _measured_summary(report, dtype: str) -> dict:
    _original, plain, fixed = report.models
    summary = {
        "provider": report.provider,
        "measured_speedup_of": f"fixed+{dtype} vs plain {dtype}",
    }
    if fixed.speedup is not None:
        summary["measured_speedup_vs_fp32"] = fixed.speedup.value
        summary["measured_speedup_vs_fp32_ci"] = [fixed.speedup.ci_low, fixed.speedup.ci_high]
    if fixed.agreement.agrees and plain.agreement.agrees:
        s = bootstrap_speedup(plain.samples_s, fixed.samples_s)
        summary["measured_speedup"] = s.value
        summary["measured_speedup_ci"] = [s.ci_low, s.ci_high]
    return summary


def _results(
    path,
    out,
    before,
    baseline,
    after,
    changes,
    fix_info,
    plain_conv,
    opt_conv,
    accuracy,
    bench_dict,
    summary_bench,
    notes,
    steps,
    measured=None,
) -> dict:
    after_rows = {row.path: row for row in after.layers}
    layers = []
    for row in baseline.layers:
        a = after_rows.get(row.path)
        layer = {
            "name": row.path,
            "op": row.op,
            "estimated_before_s": row.time_us * 1e-6,
            "estimated_after_s": a.time_us * 1e-6 if a is not None else None,
        }
        if measured is not None:
            layer["measured_before_s"] = measured[0].get(row.path)
            layer["measured_after_s"] = measured[1].get(row.path)
        layers.append(layer)
    est_before = baseline.summary.get("estimated_time_us") or 0.0
    est_after = after.summary.get("estimated_time_us") or 0.0
    summary = {
        "estimated_time_before_s": est_before * 1e-6,
        "estimated_time_after_s": est_after * 1e-6,
        "estimated_speedup": est_before / est_after if est_after else None,
        "estimated_speedup_of": f"fixed+{plain_conv.dtype} vs plain {plain_conv.dtype}",
        **summary_bench,
    }
    left = {(g.code, g.path) for g in after.findings}
    findings = [
        dict(f.to_dict(), remaining_after=(f.code, f.path) in left) for f in before.findings
    ]
    return {
        "tclint": __version__,
        "title": f"tclint optimize: {Path(path).name}",
        "model": path,
        "output": str(out / "model.opt.onnx"),
        "target": before.target,
        "summary": summary,
        "layers": layers,
        "findings": findings,
        "findings_after": [f.to_dict() for f in after.findings],
        "changes": changes,
        "skipped": (fix_info or {}).get("skipped", []),
        "fix": fix_info,
        "conversion": {"plain": _conv_dict(plain_conv), "fixed": _conv_dict(opt_conv)},
        "accuracy": accuracy,
        "bench": bench_dict,
        "notes": notes + list(before.notes),
        "steps": [asdict(s) for s in steps],
    }


def _conv_dict(report) -> dict:
    keep = (
        "dtype",
        "provider",
        "nodes_total",
        "nodes_low_precision",
        "casts_inserted",
        "casts_removed",
        "constants_converted",
        "max_abs_error",
        "max_rel_error",
        "seconds",
    )
    d = {k: getattr(report, k) for k in keep}
    d["kept_fp32"] = len(report.kept)
    d["clamped_tensors"] = len(report.clamps)
    return d


def _json(results: Mapping) -> str:
    import json
    import math

    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(results), indent=2) + "\n"


def _write_text(path: Path, text: str) -> None:
    write_text(path, text)
