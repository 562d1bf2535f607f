"""``tclint optimize model.onnx -o out/``: check -> fix -> FP16 -> verify -> bench -> report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tclint.cli.bench import add_runtime_arguments
from tclint.cli.common import add_shape_flags, add_target_flags, shape_bindings
from tclint.config import resolve_options
from tclint.errors import UsageError
from tclint.io import check_inputs_file
from tclint.optimize import optimize_model


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "optimize",
        help="check, fix, convert to FP16, verify and bench in one command",
        description="Lint, pad (fix), convert to FP16 and verify a model, then bench the original "
        "FP32, a plain FP16 conversion and the fixed FP16 model side by side on the best provider. "
        "Writes OUT/model.opt.onnx, OUT/report.json and OUT/report.html. Exit 0: written, and "
        "`tclint check` (same options) passes on model.opt.onnx; 1: written, but findings that "
        "fail check's gate are left (named), or verification failed and nothing was written; "
        "2: usage or input error.",
    )
    parser.add_argument("model", help="input .onnx model (never modified)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="DIR", help="output folder (created if needed)"
    )
    add_target_flags(parser)
    add_shape_flags(parser)
    add_runtime_arguments(parser)
    parser.add_argument(
        "--rtol",
        type=float,
        default=None,
        help="accuracy tolerance against the original (default 2e-2, relative to each output's scale)",
    )
    parser.add_argument(
        "--atol", type=float, default=None, help="absolute tolerance (default 1e-3)"
    )
    parser.add_argument(
        "--no-bench", dest="bench", action="store_false", help="skip the timing step"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="as for tclint fix: pad every reported layer, even where it does not pay",
    )
    parser.add_argument(
        "--layout",
        choices=["nchw", "nhwc"],
        default="nchw",
        help="as for tclint fix: nhwc runs conv chains channels-last (com.microsoft.NhwcConv, "
        "CUDA only: without a GPU the bench step is skipped)",
    )
    parser.add_argument(
        "--config", default=None, metavar="PYPROJECT", help="read [tool.tclint] from this file"
    )
    parser.set_defaults(func=run)


def _progress(index: int, total: int, step: str) -> None:
    print(f"tclint: [{index}/{total}] {step}...", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    if (args.rtol is not None and args.rtol < 0) or (args.atol is not None and args.atol < 0):
        raise UsageError("--rtol and --atol must be >= 0")
    check_inputs_file(args.inputs)
    dims, input_shapes = shape_bindings(args)
    cli = {
        "arch": args.arch,
        "dtype": args.dtype,
        "strict": args.strict,
        "calibration": args.calibration,
        "dims": dims,
        "input_shapes": input_shapes,
    }
    options = resolve_options(
        args.model, cli, config_path=Path(args.config) if args.config else None
    )
    report = optimize_model(
        args.model,
        args.output,
        options=options,
        provider=args.provider,
        warmup=args.warmup,
        runs=args.runs,
        batch=args.batch,
        inputs_npz=args.inputs,
        prefer_nhwc=args.prefer_nhwc,
        cudnn_algo_search=args.cudnn_algo_search,
        rtol=args.rtol,
        atol=args.atol,
        bench=args.bench,
        progress=_progress if sys.stderr.isatty() else None,
        force=args.force,
        layout=args.layout,
    )
    summary = report.results["summary"]
    lines = [f"wrote {report.optimized_model}, {report.report_json}, {report.report_html}"]
    for step in report.steps:
        lines.append(f"  {step.name:8s} {step.status:8s} {step.seconds:7.2f} s  {step.detail}")
    if summary.get("estimated_speedup"):
        lines.append(
            f"estimated speedup ({summary['estimated_speedup_of']}) on {report.results['target']}: "
            f"{summary['estimated_speedup']:.2f}x"
        )
    if "measured_speedup" in summary:
        lo, hi = summary["measured_speedup_ci"]
        lines.append(
            f"measured speedup ({summary['measured_speedup_of']}, {summary['provider']}): "
            f"{summary['measured_speedup']:.2f}x [95% CI {lo:.2f}-{hi:.2f}]"
        )
    acc = report.results["accuracy"]
    lines.append(
        f"accuracy vs original: max abs diff {acc['max_abs_diff']:.3g} (within rtol {acc['rtol']:g}, "
        f"atol {acc['atol']:g})"
    )
    gate = report.results.get("gate") or {}
    if gate.get("failed"):
        lines.append(f"tclint check on {report.optimized_model}: {len(gate['left'])} finding(s) "
                     "left that fail the gate:")
        lines += [f"  {f['code']} {f['node']}: {f['why']}" for f in gate["left"]]
    else:
        lines.append(f"tclint check on {report.optimized_model}: the gate passes")
    sys.stdout.write("\n".join(lines) + "\n")
    return 1 if gate.get("failed") else 0
