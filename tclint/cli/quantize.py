"""``tclint quantize MODEL -o OUT --calibration-data DATA``: INT8 QDQ for TensorRT-style runtimes
(thin CLI layer over :mod:`tclint.quantize`).

Exit codes: 0 written (and ``--target-cosine`` met, if given); 1 written but ``--target-cosine``
not met; 2 bad input or usage (one line on stderr).
"""

from __future__ import annotations

import sys
import time

from tclint.convert import parse_names
from tclint.errors import UsageError
from tclint.quantize import METHODS, PLACEMENTS, format_json, format_table, quantize_model


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="quantize a float model to INT8 (QDQ) with onnxruntime's static quantizer",
        description="Quantize a float ONNX model to INT8 in QDQ form, as TensorRT's explicit "
        "quantization and onnxruntime's GPU providers run it: int8 weights per channel and int8 "
        "activations, both symmetric (zero point 0), ranges calibrated on DATA with "
        "onnxruntime.quantization.quantize_static. Reports accuracy against the float model on "
        "samples not used for calibration, and the layers that add most error.",
    )
    p.add_argument("model", help="input float .onnx model (never modified)")
    p.add_argument("-o", "--output", required=True, help="output .onnx path (written atomically)")
    p.add_argument("--calibration-data", metavar="DATA",
                   help=".npz (one array per graph input, extra leading axis = samples) or a "
                   "folder of .npz files; without it, random inputs (a warning)")
    p.add_argument("--eval-data", metavar="DATA",
                   help="samples to measure accuracy on (default: hold back --holdout of DATA)")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of DATA kept out of calibration for the accuracy report "
                   "(default 0.2)")
    p.add_argument("--method", choices=METHODS, default="minmax",
                   help="calibration: minmax (default), entropy or percentile")
    p.add_argument("--placement", choices=PLACEMENTS, default="tensorrt",
                   help="where Q/DQ go: tensorrt (default: inputs of Conv/ConvTranspose/Gemm/"
                   "MatMul only, TensorRT's advice) or onnxruntime (quantize_static's default: "
                   "around every op it knows, for onnxruntime's CPU int8 kernels)")
    p.add_argument("--exclude-node", action="append", default=[], metavar="NAME",
                   help="keep this node in float (repeatable, comma lists)")
    p.add_argument("--exclude-op", action="append", default=[], metavar="OP",
                   help="keep every node of this op type in float (repeatable, comma lists)")
    p.add_argument("--per-tensor", dest="per_channel", action="store_false",
                   help="one scale per weight tensor instead of one per output channel")
    p.add_argument("--target-cosine", type=float, metavar="X",
                   help="keep the layers that add most error in float until every output's "
                   "mean cosine vs float reaches X (a few attempts; exit 1 if not met)")
    p.add_argument("--no-preprocess", dest="preprocess", action="store_false",
                   help="skip onnxruntime's pre-processing (shape inference, constant folding, "
                   "Conv+BatchNorm fusion)")
    p.add_argument("--external-data", action="store_true", default=None,
                   help="write weights to OUT.data (default: only over 2 GB)")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=N",
                   help="bind a symbolic dim for random inputs, e.g. --dim seq=128")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME:SHAPE",
                   help="an input's shape for random inputs: ids:1x128")
    p.add_argument("--no-layer-report", dest="layer_report", action="store_false",
                   help="skip the instrumented run that ranks layers by the error they add "
                   "(--target-cosine needs it and runs it anyway)")
    p.add_argument("--layers", type=int, default=10, metavar="N",
                   help="layers to list in the table (default 10)")
    p.add_argument("--format", choices=["table", "json"], default="table")
    p.set_defaults(func=run)


def run(args) -> int:
    from tclint.load import parse_dim, parse_input_shape

    dims = dict(parse_dim(d) for d in args.dim)
    shapes = dict(parse_input_shape(s) for s in args.input_shape)
    if args.layers < 0:
        raise UsageError("--layers must be >= 0")
    progress = Progress(sys.stderr)
    try:
        report = quantize_model(
            args.model,
            args.output,
            calibration_data=args.calibration_data,
            method=args.method,
            exclude_nodes=parse_names(args.exclude_node),
            exclude_ops=parse_names(args.exclude_op),
            per_channel=args.per_channel,
            placement=args.placement,
            eval_data=args.eval_data,
            holdout=args.holdout,
            target_cosine=args.target_cosine,
            preprocess=args.preprocess,
            external_data=args.external_data,
            dims=dims,
            input_shapes=shapes,
            layer_report=args.layer_report,
            progress=progress,
        )
    finally:
        progress.done()
    text = format_json(report) if args.format == "json" else format_table(report, layers=args.layers)
    sys.stdout.write(text)
    if report.target_met is False:
        print(f"tclint: warning: --target-cosine {report.target_cosine} not met (cosine "
              f"{report.cosine:.6f}); the best attempt was written", file=sys.stderr)
        return 1
    return 0


class Progress:
    """Progress on stderr: one self-overwriting line on a terminal; in a CI log (not a
    terminal) plain lines, one per step and at most one every ``interval`` seconds within a
    step (calibration reports every sample), so a long calibration shows it is alive without
    flooding the log."""

    def __init__(self, stream, *, interval: float = 5.0, prefix: str = "tclint quantize"):
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.interval = interval
        self.prefix = prefix
        self.step = None
        self.last = 0.0
        self.start = time.monotonic()
        self.dirty = False

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write(f"\r\033[K{self.prefix}: {message}")
            self.dirty = True
        else:
            step = message.split(":", 1)[0]
            if step == self.step and now - self.last < self.interval:
                return
            self.step, self.last = step, now
            self.stream.write(f"{self.prefix}: [{now - self.start:6.1f} s] {message}\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self.dirty:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.dirty = False
