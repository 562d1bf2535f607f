"""``tclint bench a.onnx [b.onnx ...]``: time models side by side (see :mod:`tclint.bench`)."""

from __future__ import annotations

import argparse
import sys

from tclint.bench import ALGO_SEARCH, PROVIDERS, bench_models, format_json, format_table
from tclint.cli.common import add_shape_flags, shape_bindings
from tclint.io import check_inputs_file, refuse_overwriting, write_text


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared by ``bench`` and ``optimize`` (``--dim``/``--input-shape`` come from
    :func:`tclint.cli.common.add_shape_flags`)."""
    parser.add_argument(
        "--provider",
        choices=PROVIDERS,
        default=None,
        help="onnxruntime provider (default: cuda when a CUDA session can be created, else cpu)",
    )
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed runs per model first (default 10)"
    )
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model (default 100)")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="items per run, for throughput; also binds a symbolic leading input dim",
    )
    parser.add_argument(
        "--inputs", default=None, metavar="DATA.npz", help="inputs by name instead of random ones"
    )
    parser.add_argument(
        "--prefer-nhwc", action="store_true", help="CUDA provider option prefer_nhwc=1"
    )
    parser.add_argument(
        "--cudnn-algo-search",
        choices=list(ALGO_SEARCH),
        default="exhaustive",
        help="CUDA provider cudnn_conv_algo_search (default exhaustive: cuDNN autotuning)",
    )


def runtime_options(args: argparse.Namespace) -> dict:
    dims, input_shapes = shape_bindings(args)
    return {
        "provider": args.provider,
        "warmup": args.warmup,
        "runs": args.runs,
        "batch": args.batch,
        "dims": dims,
        "input_shapes": input_shapes,
        "inputs_npz": args.inputs,
        "prefer_nhwc": args.prefer_nhwc,
        "cudnn_algo_search": args.cudnn_algo_search,
    }


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="time models side by side on onnxruntime",
        description="Time one or more models on the same inputs, interleaved; report latency, "
        "throughput, memory, output agreement with the first model and speedup over it.",
    )
    parser.add_argument("models", nargs="+", help="ONNX models; the first is the reference")
    add_shape_flags(parser)
    add_runtime_arguments(parser)
    parser.add_argument(
        "--rtol", type=float, default=None, help="agreement tolerance (default by precision)"
    )
    parser.add_argument(
        "--atol", type=float, default=None, help="agreement tolerance (default by precision)"
    )
    parser.add_argument("--format", choices=["table", "json"], default="table")
    parser.add_argument(
        "-o", "--output", default=None, metavar="FILE", help="also write the JSON report here"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_inputs_file(args.inputs)
    if args.output:
        refuse_overwriting(writes=[args.output], models=args.models, reads=[args.inputs])
    report = bench_models(args.models, rtol=args.rtol, atol=args.atol, **runtime_options(args))
    text = format_table(report) if args.format == "table" else format_json(report)
    if args.output:
        write_text(args.output, format_json(report, samples=True))
    sys.stdout.write(text)
    return 0
