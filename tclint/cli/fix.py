"""``tclint fix MODEL -o OUT``: pad what check reports, verify on onnxruntime CPU, write."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from tclint.cli.common import add_shape_flags, add_target_flags, shape_bindings
from tclint.config import find_pyproject, resolve_options
from tclint.errors import OutputError, UsageError
from tclint.io import (
    check_inputs_file,
    refuse_overwriting,
    refuse_overwriting_model_output,
    temp_dir,
    write_text,
)


def _has_convert() -> bool:
    return importlib.util.find_spec("tclint.convert") is not None


def register(sub) -> None:
    p = sub.add_parser(
        "fix", help="pad misaligned convs/GEMMs in the weights (verified equivalent)",
        description="Rewrite a model so that the layers `tclint check` reports are aligned: "
                    "zero filters and weight rows carried through channel-wise ops, a Slice "
                    "only where a padded tensor meets anything else. The result is checked on "
                    "onnxruntime (CPU) against the original before it is written. It pads "
                    "what `tclint check` with the same options would fail the gate on (the "
                    "same decision), and whatever else pays. Exit 0: written (or dry run) "
                    "and check's gate passes on the result; 1: written, but findings that "
                    "fail check's gate are left (each named, with why), or verification "
                    "failed and nothing was written; 2: usage or input error.")
    p.add_argument("model", help="input .onnx model (never modified)")
    p.add_argument("-o", "--output", help="output .onnx path (written atomically)")
    add_target_flags(p)
    add_shape_flags(p)
    g = p.add_argument_group("fix")
    g.add_argument("--layout", choices=["nchw", "nhwc"], default="nchw",
                   help="nhwc: run conv chains channels-last with com.microsoft.NhwcConv "
                        "(onnxruntime CUDA); default nchw leaves the layout alone")
    g.add_argument("--nhwc-inputs", action="store_true",
                   help="with --layout nhwc: make the image input NHWC itself (changes the "
                        "model's input signature)")
    g.add_argument("--force", action="store_true",
                   help="pad every reported layer, even where the cost model says it does not "
                        "pay, and write the result even if it is estimated slower")
    g.add_argument("--vocab-multiple", type=int, default=None, metavar="N",
                   help="pad vocab projections to a multiple of N (default 64)")
    g.add_argument("--inputs", metavar="NPZ",
                   help="also verify on these inputs (.npz, one array per graph input; an extra "
                        "leading axis holds several samples)")
    g.add_argument("--rtol", type=float, default=None,
                   help="relative tolerance per element, with a floor of rtol x the output's "
                        "typical magnitude (default by type: 1e-5 float32, 2e-3 float16)")
    g.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance (default by type: 1e-6 float32, 1e-4 float16)")
    g.add_argument("--external-data", action="store_true", default=None,
                   help="write weights to OUT.<token>.data beside OUT (automatic over 2 GB, "
                        "and when the input has external data)")
    g.add_argument("--dry-run", action="store_true", help="print the plan; write nothing")
    if _has_convert():
        g.add_argument("--fp16", action="store_true",
                       help="then convert the fixed model to FP16 (tclint convert, CUDA kernels)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=["table", "json"], default="table")
    o.add_argument("--report", metavar="FILE", help="also write the report (JSON) here")
    o.add_argument("--config", metavar="PYPROJECT", help="use this pyproject.toml instead of the nearest")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tclint.fix import fix_model, format_json, format_table

    if not args.dry_run and not args.output:
        raise UsageError("fix needs -o OUTPUT (or --dry-run)")
    if (args.rtol is not None and args.rtol < 0) or (args.atol is not None and args.atol < 0):
        raise UsageError("--rtol and --atol must be >= 0")
    if args.vocab_multiple is not None and args.vocab_multiple < 1:
        raise UsageError("--vocab-multiple must be a positive integer")
    check_inputs_file(args.inputs)
    dims, shapes = shape_bindings(args)
    cli = {"arch": args.arch, "dtype": args.dtype, "strict": args.strict, "dims": dims,
           "input_shapes": shapes, "calibration": args.calibration,
           "vocab_multiple": args.vocab_multiple}
    options = resolve_options(args.model, cli, config_path=Path(args.config) if args.config else None)
    # every path fix writes (model, its data, the report) against every file it reads
    reads = [args.inputs, options.calibration, Path(args.config) if args.config else find_pyproject(args.model)]
    if args.output:
        refuse_overwriting_model_output(args.output, models=[args.model], reads=reads,
                                        others=[args.report])
    elif args.report:
        refuse_overwriting(writes=[args.report], models=[args.model], reads=reads)
    fp16 = bool(getattr(args, "fp16", False)) and not args.dry_run
    if fp16:
        report = _fix_then_convert(fix_model, options, args)
    else:
        report = fix_model(
            args.model, None if args.dry_run else args.output, options=options,
            layout=args.layout, nhwc_inputs=args.nhwc_inputs, dry_run=args.dry_run,
            inputs=args.inputs, external_data=args.external_data, force=args.force,
            rtol=args.rtol, atol=args.atol,
        )
    text = format_json(report) if args.format == "json" else format_table(report)
    sys.stdout.write(text)
    if args.report:
        _write_text(args.report, format_json(report))
    # like `ruff check --fix`: what could be fixed is written; findings left that fail the gate
    # (named in the report, with why) make the exit code 1
    return 1 if report.left else 0


def _fix_then_convert(fix_model, options, args):
    """--fp16: the verified fix goes to a temporary folder beside the output, then
    ``tclint convert`` writes the FP16 model to the output; the reports are combined."""
    import dataclasses

    from tclint.convert import convert_model

    out = Path(args.output)
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"cannot write {out}: folder {folder} does not exist")
    with temp_dir(folder) as tmp:
        fixed = tmp / "fixed.onnx"
        report = fix_model(
            args.model, fixed, options=options, layout=args.layout,
            nhwc_inputs=args.nhwc_inputs, inputs=args.inputs,
            external_data=args.external_data, force=args.force, rtol=args.rtol, atol=args.atol,
        )
        conv = convert_model(fixed, out, inputs=args.inputs, external_data=args.external_data)
    return dataclasses.replace(report, output=str(out), fp16=conv.to_dict())


def _write_text(path: str, text: str) -> None:
    write_text(path, text, protect=[])
