"""``tclint convert MODEL -o OUT``: FP16/BF16 conversion for a target runtime (thin CLI layer).

Defaults can live in the nearest pyproject.toml (command-line values win; block lists add up)::

    [tool.tclint.convert]
    dtype = "fp16"
    provider = "cuda"
    block-ops = ["Resize"]
    block-nodes = ["/head/Softmax"]
    rtol = 1e-2
    atol = 1e-3
"""

from __future__ import annotations

import sys
from pathlib import Path

from tclint.convert import convert_model, format_json, format_table, parse_names
from tclint.errors import UsageError
from tclint.io import check_inputs_file


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert a float32 model to FP16/BF16 for a runtime",
        description="Convert a float32 ONNX model to FP16 (or BF16), keeping float32 only where "
        "the target provider has no kernel, a value would overflow, or --auto finds it needed. "
        "The output is checked in onnxruntime (CPU) before it is written.",
    )
    p.add_argument("model", help="input .onnx model (never modified)")
    p.add_argument("-o", "--output", required=True, help="output .onnx path (written atomically)")
    p.add_argument("--dtype", choices=["fp16", "bf16"], default=None, help="default fp16")
    p.add_argument("--keep-io-types", action="store_true", default=None,
                   help="graph inputs/outputs stay float32 with one Cast each (default)")
    p.add_argument("--no-keep-io-types", dest="keep_io_types", action="store_false",
                   help="graph inputs/outputs become FP16/BF16 too")
    p.add_argument("--block-op", action="append", default=[], metavar="OP",
                   help="keep every node of this op type in float32 (repeatable, comma lists)")
    p.add_argument("--block-node", action="append", default=[], metavar="NAME",
                   help="keep this node in float32 (repeatable, comma lists)")
    p.add_argument("--provider", choices=["cuda", "cpu", "tensorrt"], default=None,
                   help="runtime whose FP16 kernels decide what converts (default: cuda)")
    p.add_argument("--auto", action="store_true",
                   help="find nodes to keep float32 so outputs stay within --rtol/--atol")
    p.add_argument("--inputs", metavar="NPZ",
                   help="sample inputs (.npz, one array per input; extra leading axis = samples)")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance (default 1e-2)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance (default 1e-3)")
    p.add_argument("--metric", choices=["allclose", "max-rel"], default=None,
                   help="--auto acceptance: numpy.allclose per element (default) or "
                   "max|fp16-fp32|/max|fp32| <= --rtol per output")
    p.add_argument("--keep-norm-epsilon", action="store_true",
                   help="keep norm epsilons that flush to zero (BERT's 1e-12) in float32 with their "
                   "Add/Sqrt, instead of raising them to the smallest FP16 value")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="do not load the result in onnxruntime before writing")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


_CONFIG_KEYS = {"dtype", "provider", "block-ops", "block-nodes", "rtol", "atol", "metric",
                "keep-io-types"}


def _config(model: str) -> dict:
    from tclint.config import find_pyproject, load_config

    pyproject = find_pyproject(model) if Path(model).exists() else None
    table = load_config(pyproject).get("convert", {})
    unknown = sorted(set(table) - _CONFIG_KEYS)
    if unknown:
        raise UsageError(f"{pyproject}: unknown [tool.tclint.convert] key(s): {', '.join(unknown)}")
    return table


def run(args) -> int:
    check_inputs_file(args.inputs)
    config = _config(args.model)
    dtype = args.dtype or config.get("dtype", "fp16")
    provider = args.provider or config.get("provider", "cuda")
    rtol = args.rtol if args.rtol is not None else float(config.get("rtol", 1e-2))
    atol = args.atol if args.atol is not None else float(config.get("atol", 1e-3))
    keep_io = args.keep_io_types if args.keep_io_types is not None else bool(config.get("keep-io-types", True))
    if rtol < 0 or atol < 0:
        raise UsageError("--rtol and --atol must be >= 0")
    progress = _progress if sys.stderr.isatty() else None
    report = convert_model(
        args.model,
        args.output,
        dtype=dtype,
        keep_io_types=keep_io,
        block_ops=parse_names(args.block_op) + list(config.get("block-ops", [])),
        block_nodes=parse_names(args.block_node) + list(config.get("block-nodes", [])),
        provider=provider,
        auto=args.auto,
        inputs=args.inputs,
        rtol=rtol,
        atol=atol,
        metric=args.metric or config.get("metric", "allclose"),
        verify=args.verify,
        keep_norm_epsilon=args.keep_norm_epsilon,
        progress=progress,
    )
    if progress:
        sys.stderr.write("\r\033[K")
    text = format_json(report) if args.format == "json" else format_table(report)
    sys.stdout.write(text)
    if report.auto is not None and not report.auto["within_tolerance"]:
        print("tclint: warning: --auto could not meet the tolerance; see the report", file=sys.stderr)
        return 1
    return 0


def _progress(message: str) -> None:
    sys.stderr.write(f"\r\033[Ktclint convert: {message}")
    sys.stderr.flush()
