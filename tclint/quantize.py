"""``tclint quantize``: INT8 (QDQ) quantization for TensorRT-style runtimes, with an accuracy report.

Built on onnxruntime's static quantizer; tclint does not quantize anything itself. Pipeline:

1. load the float model (structure only; one-line errors for bad input) and read the samples
   (``.npz``: one array per graph input, an extra leading axis = samples; or a folder of them);
   without samples, random inputs with a loud warning;
2. hold back a share of the samples (or use ``eval_data``) so accuracy is measured on inputs the
   ranges were not computed on;
3. pre-process with ``onnxruntime.quantization.shape_inference.quant_pre_process`` (symbolic and
   ONNX shape inference, onnxruntime's basic graph optimizations: constant folding, Conv+BN
   fusion, so weights behind Transpose become initializers that get per-channel int8), falling
   back step by step where it fails;
4. ``onnxruntime.quantization.quantize_static``: QDQ format, int8 activations and weights, both
   symmetric (zero point 0, what TensorRT's explicit quantization expects), weights per channel;
   calibration ranges are cached so ``target_cosine`` retries do not calibrate again;
5. run the int8 and the float model on the held-back samples in onnxruntime (CPU): per output
   cosine, max error at the output's scale, top-1/top-5 agreement for class logits;
6. one instrumented run of both models (every float tensor made an output, with
   ``qdq_loss_debug.modify_model_output_intermediate_tensors``) ranks the quantized layers by
   the error they add, so the user knows what to exclude; ``target_cosine`` excludes the
   highest-ranked layers until the target is met (a bounded number of attempts);
7. write the result atomically (:func:`tclint.io.save_model_atomic`). The input model and its
   data files are never written to; scratch files live in a temporary folder (``TMPDIR``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from tclint.errors import InputError, TclintError, UsageError
from tclint.runtime import session_options

logger = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]

METHODS = ("minmax", "entropy", "percentile")
#: Where Q/DQ go. "tensorrt": on the inputs of the weighted ops only (activation and weight of
#: Conv/ConvTranspose/Gemm/MatMul), not on their outputs nor around other ops: TensorRT's
#: placement advice for explicit quantization (it fuses the rest, e.g. Conv+BN+ReLU, and picks
#: the output precision itself), one quantization per tensor. "onnxruntime": quantize_static's
#: default, every op in onnxruntime's registries with its outputs (QDQ around Relu, Add,
#: MaxPool, LayerNorm, Softmax...), what onnxruntime's CPU int8 kernels need to fuse.
PLACEMENTS = ("tensorrt", "onnxruntime")
TENSORRT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")

#: Random samples used without DATA: calibration (as the issue's anchor) and evaluation.
RANDOM_CALIBRATION_SAMPLES = 16
RANDOM_EVAL_SAMPLES = 4
#: Samples the instrumented per-layer run uses at most (it keeps every activation of a sample).
LAYER_RUN_SAMPLES = 2
#: ``target_cosine`` attempts; attempt i excludes the 2**i - 1 highest-ranked layers (never
#: more than half of the int8 layers).
MAX_ATTEMPTS = 5
#: Above this many weight bytes, onnxruntime's quantizer writes external data (protobuf's 2 GB
#: limit applies to the float model it saves on the way, with the calibration outputs added).
_EXTERNAL_BYTES = 1 << 30
#: Outputs whose name says they are not class scores (hidden states, KV cache, embeddings).
_NOT_CLASSES = ("hidden", "embed", "feature", "present", "past", "key", "value", "pooler",
                "attention", "state", "box", "mask")


# --------------------------------------------------------------------------------------------
# Report records
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputAccuracy:
    """One float output of the int8 model against the float model, on held-back samples."""

    name: str
    #: cosine similarity of the flattened output, mean and worst over the samples
    cosine: float
    cosine_min: float
    #: max |int8 - fp32| / max |fp32| over all samples ("at the output's scale")
    max_error: float
    #: class logits only (last axis of 10 or more): share of rows whose argmax agrees, and whose
    #: float argmax is among the int8 top 5; None for other outputs
    top1: float | None = None
    top5: float | None = None


@dataclass(frozen=True)
class LayerError:
    """A quantized layer and the error it adds (from the instrumented run)."""

    node: str
    op_type: str
    #: PyTorch module path from the exporter's metadata, when present
    module: str | None
    #: cosine of the layer's output against the float model's same tensor (cumulative error)
    cosine: float
    #: noise-to-signal power added at this layer (its output's minus its inputs' worst)
    added: float
    #: ``added`` as a share of all layers' ``added``
    share: float


@dataclass(frozen=True)
class Attempt:
    """One quantization tried by ``target_cosine``."""

    excluded: tuple[str, ...]
    cosine: float
    met: bool
    seconds: float


@dataclass(frozen=True)
class QuantizeReport:
    """What ``quantize_model`` did and measured."""

    input: str
    output: str | None
    method: str
    per_channel: bool
    placement: str
    #: pre-processing steps that ran ("symbolic shapes", "optimizer", "shapes") or why not
    preprocess: tuple[str, ...]
    calibration: str
    calibration_samples: int
    evaluation: str
    eval_samples: int
    nodes_total: int
    #: nodes that run in int8 where the runtime fuses Q/DQ (Conv/MatMul/Gemm: input and weight
    #: both through DequantizeLinear; other ops: input dequantized, output quantized)
    nodes_quantized: int
    #: int8 initializers read by DequantizeLinear (weights, and constants of Add/Mul/...), of
    #: which with one scale per channel (the Conv/MatMul/Gemm weights when per_channel)
    weights_int8: int
    weights_per_channel: int
    quantize_linear: int
    dequantize_linear: int
    excluded_nodes: tuple[str, ...]
    excluded_ops: tuple[str, ...]
    outputs: tuple[OutputAccuracy, ...]
    #: quantized layers by added error, largest first
    layers: tuple[LayerError, ...]
    #: min over float outputs of the mean cosine (what ``target_cosine`` is compared with)
    cosine: float | None
    target_cosine: float | None
    attempts: tuple[Attempt, ...]
    target_met: bool | None
    seconds: float
    seconds_calibration: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------
def quantize_model(
    path_or_model: str | os.PathLike | ir.Model,
    out_path: str | os.PathLike | None,
    *,
    calibration_data: str | os.PathLike | Sequence[Feeds] | None = None,
    method: str = "minmax",
    exclude_nodes: Iterable[str] = (),
    exclude_ops: Iterable[str] = (),
    per_channel: bool = True,
    placement: str = "tensorrt",
    eval_data: str | os.PathLike | Sequence[Feeds] | None = None,
    holdout: float = 0.2,
    target_cosine: float | None = None,
    preprocess: bool = True,
    external_data: bool | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    layer_report: bool = True,
    progress: Callable[[str], None] | None = None,
) -> QuantizeReport:
    """Quantize a float model to int8 QDQ and (if ``out_path``) write it atomically.

    ``calibration_data``: an ``.npz`` (one array per graph input, an extra leading axis holds
    samples), a folder of ``.npz`` files, or a list of feed dicts; None: random inputs (a
    warning; integer inputs that index an embedding get ids below its size, ``*mask*`` inputs
    are ones; ``dims``/``input_shapes`` bind symbolic dims, a leading one defaults to 1).
    ``holdout``: share of the samples kept out of calibration to measure accuracy on (ignored
    when ``eval_data`` is given). ``method``: onnxruntime's calibration, minmax, entropy or
    percentile. ``exclude_nodes`` / ``exclude_ops``: left in float. ``placement``: where
    Q/DQ go (:data:`PLACEMENTS`; "tensorrt": inputs of Conv/ConvTranspose/Gemm/MatMul only).
    ``target_cosine``: exclude the layers that add most error until every float output's mean
    cosine reaches it (up to :data:`MAX_ATTEMPTS` attempts, at most half of the int8 layers
    kept float; the best attempt is written either way and the report says whether it was
    met). ``preprocess``: run onnxruntime's quantization pre-processing first.
    ``external_data``: weights of the output in ``<out>.data`` (None: when over 2 GB).
    Raises :class:`InputError` for a bad model or data and :class:`UsageError` for bad options.
    """
    start = time.perf_counter()
    say = progress or (lambda _message: None)
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}; known: {', '.join(METHODS)}")
    if placement not in PLACEMENTS:
        raise UsageError(f"unknown --placement {placement!r}; known: {', '.join(PLACEMENTS)}")
    if not 0 <= holdout < 1:
        raise UsageError("--holdout must be in [0, 1)")
    if target_cosine is not None and not 0 < target_cosine <= 1:
        raise UsageError("--target-cosine must be in (0, 1]")
    exclude_nodes = tuple(dict.fromkeys(exclude_nodes))
    exclude_ops = tuple(dict.fromkeys(exclude_ops))
    notes: list[str] = []

    def warn(message: str) -> None:
        logger.warning("%s", message)
        notes.append(message)

    with tempfile.TemporaryDirectory(prefix="tclint-quantize-") as tmp:
        work = Path(tmp).resolve()
        say("loading")
        src, label, model = _source(path_or_model, work)
        _check_out_path(out_path, src, model)
        _check_float_model(model, label)
        _check_exclusions(model, label, exclude_nodes, exclude_ops, warn)
        weight_bytes = _weight_bytes(model)
        big = weight_bytes > _EXTERNAL_BYTES

        float_session = _session(src, label, what="the input model")
        calib, eval_feeds, calib_label, eval_label = _samples(
            float_session, src, label, calibration_data, eval_data, holdout, dims, input_shapes,
            warn)

        say("running the float model on the evaluation samples")
        reference = [_run(float_session, f, label, "the float model") for f in eval_feeds]
        del float_session

        staged, steps = _stage(src, work, preprocess=preprocess, big=big, warn=warn, say=say)
        names_after = _node_names(staged)
        lost = [n for n in exclude_nodes if n not in names_after]
        if lost:
            warn(f"excluded node(s) {', '.join(lost)} no longer exist after pre-processing "
                 "(fused or folded); run with --no-preprocess to exclude them by name")

        quantizer = _Quantizer(staged, work, method=method, per_channel=per_channel,
                               placement=placement, exclude_ops=exclude_ops, big=big,
                               calib=calib, say=say)
        say("calibrating")
        t_cal = time.perf_counter()
        current = quantizer.run(exclude_nodes, "q0")
        seconds_calibration = time.perf_counter() - t_cal
        outputs = _evaluate(current, eval_feeds, reference, label, say)
        cosine = _overall(outputs)

        layers: tuple[LayerError, ...] = ()
        if layer_report or target_cosine is not None:
            say("instrumented run: error per layer")
            layers = _layer_errors(staged, current, eval_feeds[:LAYER_RUN_SAMPLES], work, big,
                                   _modules(model), label)

        attempts: list[Attempt] = []
        best = (cosine, current, outputs, exclude_nodes)
        counts_before = _count_qdq(current)["nodes_quantized"]
        if target_cosine is not None and cosine is not None and cosine < target_cosine:
            ranked = [layer.node for layer in layers if layer.added > 0
                      and layer.node not in exclude_nodes]
            # keeping more than half of the int8 layers float defeats int8: stop there
            most = max(1, counts_before // 2)
            tried = 0
            for i in range(1, MAX_ATTEMPTS + 1):
                count = min(2**i - 1, len(ranked), most)
                if count <= tried:
                    break
                tried = count
                t_try = time.perf_counter()
                excluded = exclude_nodes + tuple(ranked[:count])
                say(f"attempt {i}: excluding {count} layer(s)")
                path = quantizer.run(excluded, f"q{i}")
                outs = _evaluate(path, eval_feeds, reference, label, say)
                cos = _overall(outs)
                met = cos is not None and cos >= target_cosine
                attempts.append(Attempt(excluded=excluded, cosine=cos, met=met,
                                        seconds=time.perf_counter() - t_try))
                if cos is not None and cos > best[0]:
                    best = (cos, path, outs, excluded)
                if met:
                    break
        cosine, current, outputs, excluded_final = best
        target_met = None if target_cosine is None or cosine is None else cosine >= target_cosine

        counts = _count_qdq(current)
        if counts["nodes_quantized"] == 0:
            warn("nothing was quantized: no node of the model runs in int8 (no Conv/MatMul/"
                 "Gemm with a constant weight, or all excluded)")
        written = None
        if out_path is not None:
            say(f"writing {out_path}")
            from tclint.io import save_model_atomic

            quantized = ir.load(current)
            written = str(save_model_atomic(quantized, out_path, external_data=external_data))
        return QuantizeReport(
            input=label,
            output=written,
            method=method,
            per_channel=per_channel,
            placement=placement,
            preprocess=tuple(steps),
            calibration=calib_label,
            calibration_samples=len(calib),
            evaluation=eval_label,
            eval_samples=len(eval_feeds),
            nodes_total=counts["nodes_total"],
            nodes_quantized=counts["nodes_quantized"],
            weights_int8=counts["weights_int8"],
            weights_per_channel=counts["weights_per_channel"],
            quantize_linear=counts["QuantizeLinear"],
            dequantize_linear=counts["DequantizeLinear"],
            excluded_nodes=tuple(excluded_final),
            excluded_ops=exclude_ops,
            outputs=tuple(outputs),
            layers=layers,
            cosine=cosine,
            target_cosine=target_cosine,
            attempts=tuple(attempts),
            target_met=target_met,
            seconds=time.perf_counter() - start,
            seconds_calibration=seconds_calibration,
            warnings=tuple(notes),
        )


# --------------------------------------------------------------------------------------------
# Input model
# --------------------------------------------------------------------------------------------
def _source(path_or_model, work: Path) -> tuple[Path, str, ir.Model]:
    """The model file to read (the user's, or an ``ir.Model`` saved in scratch), its label,
    and its structure (weights lazy)."""
    from tclint.io import require_readable_weights
    from tclint.load import load_model

    if isinstance(path_or_model, ir.Model):
        path = work / "input.onnx"
        ir.save(path_or_model, path, external_data="input.onnx.data")
        return path, path_or_model.graph.name or "<model>", load_model(path)
    path = Path(path_or_model)
    model = load_model(path)
    require_readable_weights(model, path)
    return path.resolve(), str(path), model


def _external_files(model: ir.Model) -> set[Path]:
    files = set()
    for graph in model.graphs():
        for value in graph.initializers.values():
            t = value.const_value
            if isinstance(t, ir.ExternalTensor):
                files.add((Path(t.base_dir) / t.location).resolve())
    return files


def _check_out_path(out_path, src: Path, model: ir.Model) -> None:
    """Writing over the input model or one of its data files would lose it: refuse
    (:func:`tclint.io.refuse_overwriting_model_output`, links and hardlinks resolved)."""
    if out_path is None:
        return
    from tclint.io import refuse_overwriting_model_output

    refuse_overwriting_model_output(out_path, models=[(src, model)])


_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                  "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "MatMulNBits",
                  "QLinearAdd", "QLinearMul", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def _check_float_model(model: ir.Model, label: str) -> None:
    found = sorted({n.op_type for n in model.graph.all_nodes() if n.op_type in _QUANTIZED_OPS})
    if found:
        raise InputError(f"{label}: already quantized (has {', '.join(found)}); quantize the "
                         "float model")


def _check_exclusions(model: ir.Model, label: str, nodes: Sequence[str], ops: Sequence[str],
                      warn: Callable[[str], None]) -> None:
    names = {n.name for n in model.graph.all_nodes() if n.name}
    unknown = [n for n in nodes if n not in names]
    if unknown:
        raise UsageError(f"{label}: --exclude-node names no node of the model: "
                         f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    present = {n.op_type for n in model.graph.all_nodes()}
    absent = [op for op in ops if op not in present]
    if absent:
        warn(f"--exclude-op {', '.join(absent)}: no such op in the model")


def _weight_bytes(model: ir.Model) -> int:
    from tclint.io import model_weight_bytes

    return model_weight_bytes(model)


def _modules(model: ir.Model) -> dict[str, str]:
    """node name -> PyTorch module path, from the dynamo exporter's ``name_scopes``; legacy
    exports name nodes by module path already."""
    import ast

    out = {}
    for node in model.graph.all_nodes():
        scopes = node.metadata_props.get("pkg.torch.onnx.name_scopes")
        if not scopes or not node.name:
            continue
        try:
            parts = [p for p in ast.literal_eval(scopes) if p]
        except (ValueError, SyntaxError):
            continue
        if len(parts) > 1:  # cumulative: ['', 'layer1', 'layer1.0', 'layer1.0.conv1', 'conv2d']
            out[node.name] = parts[-2]
    return out


# --------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------
def _samples(session, src: Path, label: str, calibration_data, eval_data, holdout: float,
             dims, input_shapes, warn) -> tuple[list[Feeds], list[Feeds], str, str]:
    """Calibration and evaluation samples, and how each was obtained."""
    specs = session.get_inputs()
    if calibration_data is None:
        if eval_data is not None:
            evals, elabel = _read_samples(eval_data, specs, "--eval-data")
        else:
            evals = _random(session, src, dims, input_shapes, RANDOM_EVAL_SAMPLES, seed=1000)
            elabel = f"random ({RANDOM_EVAL_SAMPLES} fresh samples)"
        warn(f"no calibration data: calibrating on {RANDOM_CALIBRATION_SAMPLES} random inputs. "
             "int8 ranges from random data do not represent real inputs; give real samples "
             "(--calibration-data DATA.npz) before deploying this model")
        calib = _random(session, src, dims, input_shapes, RANDOM_CALIBRATION_SAMPLES, seed=0)
        return calib, evals, f"random ({len(calib)} samples)", elabel
    samples, clabel = _read_samples(calibration_data, specs, "--calibration-data")
    if eval_data is not None:
        evals, elabel = _read_samples(eval_data, specs, "--eval-data")
        return samples, evals, clabel, elabel
    n = len(samples)
    k = round(holdout * n)
    if holdout > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    else:
        k = 0
    if k == 0:
        warn(f"accuracy is measured on the calibration samples themselves ({n} sample"
             f"{'s' if n != 1 else ''}, none held back): give more samples or --eval-data")
        return samples, samples, clabel, "the calibration samples (none held back)"
    held = {min(n - 1, int((i + 0.5) * n / k)) for i in range(k)}
    calib = [s for i, s in enumerate(samples) if i not in held]
    evals = [s for i, s in enumerate(samples) if i in held]
    return calib, evals, clabel, f"{len(evals)} of {n} samples held back ({holdout:.0%})"


def _read_samples(data, specs, flag: str) -> tuple[list[Feeds], str]:
    """Samples from an .npz, a folder of .npz files, or a list of feed dicts."""
    if not isinstance(data, (str, os.PathLike)):
        samples = [dict(f) for f in data]
        if not samples:
            raise InputError(f"{flag}: no samples given")
        for i, s in enumerate(samples):
            _check_sample(s, specs, f"{flag} sample {i}")
        return [_cast(s, specs) for s in samples], f"{len(samples)} samples given"
    path = Path(data)
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise InputError(f"{path}: folder has no .npz files")
    elif path.is_file():
        files = [path]
    else:
        raise InputError(f"{path}: no such file or folder")
    samples: list[Feeds] = []
    for f in files:
        samples += _split(f, specs)
    where = f"{path} ({len(files)} files)" if path.is_dir() else str(path)
    return samples, f"{where}: {len(samples)} samples"


def _split(path: Path, specs) -> list[Feeds]:
    """One .npz -> samples: arrays one rank above their input's hold several samples."""
    from tclint.bench import load_npz_inputs

    arrays = load_npz_inputs(path)
    names = [s.name for s in specs]
    missing = sorted(set(names) - set(arrays))
    unknown = sorted(set(arrays) - set(names))
    if missing or unknown:
        raise InputError(f"{path}: arrays must match the graph inputs ({', '.join(names)}); "
                         f"missing: {', '.join(missing) or '-'}, unknown: {', '.join(unknown) or '-'}")
    stacked = {s.name: arrays[s.name].ndim == len(s.shape) + 1 for s in specs}
    if all(stacked.values()):
        counts = {arrays[n].shape[0] for n in names}
        if len(counts) != 1:
            raise InputError(f"{path}: inputs disagree on the number of samples "
                             f"({', '.join(f'{n}: {arrays[n].shape[0]}' for n in names)})")
        samples = [{n: arrays[n][i] for n in names} for i in range(counts.pop())]
    elif not any(stacked.values()):
        samples = [arrays]
    else:
        raise InputError(f"{path}: some arrays have a sample axis and some do not "
                         f"({', '.join(n for n, s in stacked.items() if s)} do)")
    for i, s in enumerate(samples):
        _check_sample(s, specs, f"{path} sample {i}")
    return [_cast(s, specs) for s in samples]


def _check_sample(sample: Feeds, specs, where: str) -> None:
    names = {s.name for s in specs}
    if set(sample) != names:
        raise InputError(f"{where}: inputs {sorted(sample)} do not match the model's "
                         f"{sorted(names)}")
    for s in specs:
        a = np.asarray(sample[s.name])
        if a.ndim != len(s.shape):
            raise InputError(f"{where}: {s.name!r} has rank {a.ndim}, the model's input has "
                             f"{len(s.shape)} ({_fmt(s.shape)})")
        for got, want in zip(a.shape, s.shape):
            if isinstance(want, int) and want > 0 and got != want:
                raise InputError(f"{where}: {s.name!r} has shape {list(a.shape)}, the model "
                                 f"wants {_fmt(s.shape)}")


def _fmt(shape) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def _cast(sample: Feeds, specs) -> Feeds:
    from tclint.bench import _ORT_TYPES

    out = {}
    for s in specs:
        dtype = _ORT_TYPES.get(s.type)
        a = np.asarray(sample[s.name])
        if dtype is not None and a.dtype != dtype:
            if np.issubdtype(dtype, np.integer) and np.issubdtype(a.dtype, np.floating):
                raise InputError(f"input {s.name!r}: float data given for an integer input")
            a = a.astype(dtype)
        out[s.name] = np.ascontiguousarray(a)
    return out


def _random(session, src: Path, dims, input_shapes, count: int, *, seed: int) -> list[Feeds]:
    import onnx

    from tclint.bench import make_inputs

    structure = onnx.load(str(src), load_external_data=False)
    first = [s.shape[0] for s in session.get_inputs() if s.shape]
    batch = 1 if any(not isinstance(d, int) for d in first) else None
    return [make_inputs(session, structure, dims=dims, input_shapes=input_shapes, batch=batch,
                        seed=seed + i) for i in range(count)]


# --------------------------------------------------------------------------------------------
# onnxruntime: sessions, quiet calls
# --------------------------------------------------------------------------------------------
def _session(path: Path, label: str, *, what: str, optimize: bool = True):
    import onnxruntime as ort

    options = session_options()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
        raise InputError(f"{label}: {what} does not load in onnxruntime: {_one_line(exc)}") from None


def _run(session, feeds: Feeds, label: str, what: str) -> list[np.ndarray]:
    try:
        return session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{label}: {what} does not run on the samples: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


class _DropRootRecords(logging.Filter):
    """onnxruntime's quantizer logs with ``logging.warning(...)`` on the root logger (advice
    to pre-process, printed twice). Dropped while it runs; tclint's own records propagate
    from named loggers and are not affected (a logger's filters see only its own records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        logger.debug("onnxruntime: %s", record.getMessage())
        return False


@contextlib.contextmanager
def _quiet_ort(scratch: Path) -> Iterator[list[str]]:
    """Keep onnxruntime's quantization chatter (root-logger warnings, tracebacks logged on
    failure, histogram ``print``s to stdout that would corrupt ``--format json``, C++ session
    warnings) out of the user's terminal, and its stray files out of the user's folder: on
    incomplete symbolic shape inference it saves ``sym_shape_infer_temp.onnx`` and a
    ``<uuid>.data`` into the current directory, so it runs with ``scratch`` as the current
    directory (process-wide: not for concurrent threads). Yields the captured log messages."""
    import onnxruntime as ort

    captured: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record):
            captured.append(record.getMessage())

    root = logging.getLogger()
    ort_logger = logging.getLogger("onnxruntime")
    drop = _DropRootRecords()
    keep = _Keep()
    old_level, old_propagate = ort_logger.level, ort_logger.propagate
    root.addFilter(drop)
    ort_logger.addHandler(keep)
    ort_logger.setLevel(logging.INFO)
    ort_logger.propagate = False
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), \
                contextlib.chdir(scratch):
            warnings.simplefilter("ignore")
            yield captured
    finally:
        root.removeFilter(drop)
        ort_logger.removeHandler(keep)
        ort_logger.setLevel(old_level)
        ort_logger.propagate = old_propagate
        ort.set_default_logger_severity(2)


# --------------------------------------------------------------------------------------------
# Pre-processing
# --------------------------------------------------------------------------------------------
def _stage(src: Path, work: Path, *, preprocess: bool, big: bool, warn, say) -> tuple[Path, list[str]]:
    """The float model onnxruntime's quantizer reads, in scratch (its shape-inference step
    writes ``<model>-inferred.onnx`` beside the file it is given: never beside the user's)."""
    staged = work / "float.onnx"
    if preprocess:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        say("pre-processing (shape inference, graph optimizations)")
        # symbolic shape inference serializes the whole model: not over 2 GB
        tries = ([] if big else [("symbolic shapes", False)]) + [("without symbolic shapes", True)]
        failures = []
        for what, skip_symbolic in tries:
            with _quiet_ort(work) as log:
                try:
                    quant_pre_process(
                        str(src), str(staged), skip_symbolic_shape=skip_symbolic,
                        save_as_external_data=True, all_tensors_to_one_file=True,
                        external_data_location="float.onnx.data",
                    )
                except Exception as exc:  # noqa: BLE001 - each step raises its own types
                    failures.append(f"{what}: {_one_line(exc)}")
                    continue
            steps = ([] if skip_symbolic else ["symbolic shapes"])
            if any("Optimization Failed" in m for m in log):
                warn("onnxruntime's graph optimization failed during pre-processing; "
                     "quantizing without it")
            else:
                steps.append("optimizer")
            steps.append("shapes")
            if failures:
                steps.append(f"symbolic shape inference failed ({failures[0].split(': ', 1)[-1][:80]})")
            elif big:
                steps.append("symbolic shapes skipped: model over 1 GB")
            return staged, steps
        warn(f"onnxruntime's quantization pre-processing failed ({failures[-1]}); quantizing "
             "the model as it is")
    import onnx

    say("copying the float model to scratch")
    proto = onnx.load(str(src))
    onnx.save_model(proto, str(staged), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="float.onnx.data", size_threshold=1024)
    return staged, ["skipped" if not preprocess else "failed"]


def _node_names(path: Path) -> set[str]:
    import onnx

    return {n.name for n in onnx.load(str(path), load_external_data=False).graph.node}


# --------------------------------------------------------------------------------------------
# onnxruntime's quantizer
# --------------------------------------------------------------------------------------------
class _Reader:
    """onnxruntime ``CalibrationDataReader`` over in-memory samples, reporting progress."""

    def __init__(self, samples: Sequence[Feeds], say: Callable[[str], None]):
        self.samples = samples
        self.say = say
        self.start, self.end = 0, len(samples)
        self.i = 0

    def get_next(self):
        if self.start + self.i >= self.end:
            return None
        sample = self.samples[self.start + self.i]
        self.i += 1
        self.say(f"calibrating: sample {self.start + self.i} of {len(self.samples)}")
        return sample

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item

    def __len__(self):
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int):
        self.start, self.end, self.i = start_index, end_index, 0


class _Quantizer:
    """``quantize_static`` with tclint's fixed choices; the first run calibrates and caches
    the ranges, later runs (other exclusions) reuse them."""

    def __init__(self, staged: Path, work: Path, *, method: str, per_channel: bool,
                 placement: str, exclude_ops: Sequence[str], big: bool,
                 calib: Sequence[Feeds], say):
        self.staged, self.work = staged, work
        self.method, self.per_channel, self.big = method, per_channel, big
        self.calib, self.say = calib, say
        self.cache = work / "calibration.json"
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        self.placement = placement
        ops = set(TENSORRT_OPS) if placement == "tensorrt" else set(QDQRegistry) | set(
            QLinearOpsRegistry)
        self.op_types = sorted(ops - set(exclude_ops))

    def options(self) -> dict:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

        calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                     "percentile": CalibrationMethod.Percentile}[self.method]
        extra = {
            # TensorRT's explicit quantization: symmetric int8, zero point 0 everywhere
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
        }
        if self.placement == "tensorrt":
            # Q/DQ on the inputs of the weighted ops only: TensorRT fuses what follows them
            extra["OpTypesToExcludeOutputQuantization"] = list(self.op_types)
        if self.method != "minmax":
            # histogram calibrators keep every activation of the samples they are given: feed
            # them in strides (MinMax keeps only per-tensor min/max, no need)
            stride = _stride(len(self.calib))
            if stride < len(self.calib):
                extra["CalibStridedMinMax"] = stride
        return dict(quant_format=QuantFormat.QDQ, per_channel=self.per_channel,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=calibrate, op_types_to_quantize=self.op_types,
                    use_external_data_format=self.big, extra_options=extra)

    def run(self, exclude_nodes: Sequence[str], name: str) -> Path:
        from onnxruntime.quantization import quantize_static

        out = self.work / f"{name}.onnx"
        reader = _Reader(self.calib, self.say)
        with _quiet_ort(self.work):
            try:
                quantize_static(str(self.staged), str(out), reader,
                                nodes_to_exclude=list(exclude_nodes),
                                calibration_cache_path=str(self.cache), **self.options())
            except TclintError:
                raise
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types
                raise InputError(f"onnxruntime's quantizer failed on this model: "
                                 f"{_one_line(exc)}") from None
        self.say("quantized")
        return out


def _stride(n: int, most: int = 16) -> int:
    """Largest divisor of ``n`` not above ``most`` (onnxruntime's strided calibration needs
    the sample count to be a multiple of the stride)."""
    return max(d for d in range(1, min(n, most) + 1) if n % d == 0)


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------
def _evaluate(path: Path, feeds: Sequence[Feeds], reference: Sequence[list[np.ndarray]],
              label: str, say) -> list[OutputAccuracy]:
    say("running the int8 model on the evaluation samples")
    session = _session(path, label, what="the quantized model")
    names = [o.name for o in session.get_outputs()]
    got = [_run(session, f, label, "the quantized model") for f in feeds]
    return output_accuracy(names, reference, got)


def output_accuracy(names: Sequence[str], reference: Sequence[Sequence[np.ndarray]],
                    got: Sequence[Sequence[np.ndarray]]) -> list[OutputAccuracy]:
    """Per float output: cosine (mean, worst sample), max error at the output's scale, and
    top-1/top-5 agreement for outputs that look like class logits."""
    out = []
    for j, name in enumerate(names):
        refs = [np.asarray(r[j]) for r in reference]
        if not refs or not np.issubdtype(refs[0].dtype, np.floating):
            continue
        gots = [np.asarray(g[j], np.float64) for g in got]
        refs = [r.astype(np.float64) for r in refs]
        cos = [cosine(r, g) for r, g in zip(refs, gots)]
        scale = max(float(np.max(np.abs(r))) if r.size else 0.0 for r in refs)
        diff = max(float(np.max(np.abs(r - g))) if r.size else 0.0 for r, g in zip(refs, gots))
        top1 = top5 = None
        if _looks_like_classes(name, refs[0]):
            r2 = np.concatenate([r.reshape(-1, r.shape[-1]) for r in refs])
            g2 = np.concatenate([g.reshape(-1, g.shape[-1]) for g in gots])
            want = np.argmax(r2, axis=-1)
            top1 = float(np.mean(np.argmax(g2, axis=-1) == want))
            top = np.argpartition(-g2, 4, axis=-1)[:, :5]
            top5 = float(np.mean(np.any(top == want[:, None], axis=-1)))
        out.append(OutputAccuracy(
            name=name, cosine=float(np.mean(cos)), cosine_min=float(np.min(cos)),
            max_error=diff / scale if scale else diff, top1=top1, top5=top5))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors, flattened (1.0 for two all-zero tensors; NaN/inf in
    ``b`` give 0)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if not np.all(np.isfinite(b)):
        return 0.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def _looks_like_classes(name: str, array: np.ndarray) -> bool:
    low = name.lower()
    return array.ndim >= 2 and array.shape[-1] >= 10 and not any(w in low for w in _NOT_CLASSES)


def _overall(outputs: Sequence[OutputAccuracy]) -> float | None:
    return min((o.cosine for o in outputs), default=None)


# --------------------------------------------------------------------------------------------
# Error per layer (one instrumented run)
# --------------------------------------------------------------------------------------------
def _layer_errors(staged: Path, quantized: Path, feeds: Sequence[Feeds], work: Path, big: bool,
                  modules: Mapping[str, str], label: str) -> tuple[LayerError, ...]:
    """Rank the quantized layers by the error they add (all samples summed).

    Both models get every float tensor as an output (onnxruntime's
    ``qdq_loss_debug.modify_model_output_intermediate_tensors``) and run on the same samples
    with graph optimizations off (the int8 model then runs its QDQ arithmetic as written).
    For each tensor the noise-to-signal power ``|q - f|^2 / |f|^2`` is summed over the
    samples (the quantity behind onnxruntime's SQNR). A layer's added error is its output's
    noise ratio minus the worst of its activation inputs' before their QuantizeLinear, i.e.
    what quantizing its inputs and weights added; the cosine of its output is
    ``1 - ratio / 2`` to first order and is reported as measured.
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    float_aug, quant_aug = work / "float_aug.onnx", work / "quant_aug.onnx"
    with _quiet_ort(work):
        try:
            modify_model_output_intermediate_tensors(str(staged), str(float_aug),
                                                     save_as_external_data=big)
            modify_model_output_intermediate_tensors(str(quantized), str(quant_aug),
                                                     save_as_external_data=big)
        except Exception as exc:  # noqa: BLE001
            logger.warning("per-layer error not measured: %s", _one_line(exc))
            return ()
    fs = _session(float_aug, label, what="the instrumented float model", optimize=False)
    qs = _session(quant_aug, label, what="the instrumented int8 model", optimize=False)
    suffix = "_ReshapedSavedOutput"
    f_names = [o.name for o in fs.get_outputs()]
    q_names = [o.name for o in qs.get_outputs()]
    # per tensor, summed over samples: f.f, d.d and f.d with d = q - f (float32 BLAS dots)
    ff: dict[str, float] = {}
    dd: dict[str, float] = {}
    fd: dict[str, float] = {}
    skip: set[str] = set()
    for sample in feeds:
        f_out = dict(zip(f_names, fs.run(None, sample)))
        q_out = dict(zip(q_names, qs.run(None, sample)))
        for name, f in f_out.items():
            q = q_out.get(name)
            if not name.endswith(suffix) or q is None or q.shape != f.shape:
                continue
            sums = _dots(f, q)
            if sums is None:  # attention masks (-3.4e38, -inf): no meaningful ratio
                skip.add(name)
                continue
            ff[name] = ff.get(name, 0.0) + sums[0]
            dd[name] = dd.get(name, 0.0) + sums[1]
            fd[name] = fd.get(name, 0.0) + sums[2]

    def ratio(tensor: str) -> float | None:
        key = tensor + suffix
        if key not in ff or key in skip:
            return None
        return dd[key] / ff[key] if ff[key] > 0 else (0.0 if dd[key] == 0 else math.inf)

    def tensor_cosine(tensor: str) -> float:
        key = tensor + suffix
        qq = ff[key] + 2 * fd[key] + dd[key]
        if ff[key] <= 0 or qq <= 0 or not math.isfinite(qq):
            return 1.0 if ff[key] == qq == 0 else 0.0
        return float(min(1.0, (ff[key] + fd[key]) / math.sqrt(ff[key] * qq)))

    graph = onnx.load(str(quantized), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    inits = {i.name for i in graph.initializer}
    rows = []
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if not node.output or not _reads_int8(node, producer, consumers):
            continue
        dq_inputs = [producer[i] for i in node.input if i in producer
                     and producer[i].op_type == "DequantizeLinear"]
        # the float tensor each activation input was quantized from
        upstream = []
        for dq in dq_inputs:
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                upstream.append(q.input[0])
        out_ratio = ratio(node.output[0])
        if out_ratio is None:
            continue
        in_ratios = [r for r in (ratio(t) for t in upstream if t not in inits) if r is not None]
        added = max(0.0, out_ratio - max(in_ratios, default=0.0))
        rows.append((node.name, node.op_type, tensor_cosine(node.output[0]), added))
    total = sum(r[3] for r in rows if math.isfinite(r[3]))
    rows.sort(key=lambda r: -r[3])
    return tuple(
        LayerError(node=name, op_type=op, module=modules.get(name), cosine=cos, added=added,
                   share=(added / total if total and math.isfinite(added) else 0.0))
        for name, op, cos, added in rows
    )


#: Ops that run as an int8 GEMM only when both their data input and their weight are int8.
_WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def _reads_int8(node, producer: Mapping, consumers: Mapping) -> bool:
    """Whether a node of a QDQ graph runs in int8 where the runtime fuses Q/DQ (TensorRT's
    explicit quantization): a Conv, ConvTranspose, MatMul or Gemm when its input and its
    weight both come through DequantizeLinear; any other op when an input does and its output
    goes only to QuantizeLinear (an excluded op reads dequantized values and runs in float)."""
    def dq(i: int) -> bool:
        return (i < len(node.input) and node.input[i] in producer
                and producer[node.input[i]].op_type == "DequantizeLinear")

    if node.op_type in _WEIGHTED:
        return dq(0) and dq(1)
    users = consumers.get(node.output[0], []) if node.output else []
    return (any(dq(i) for i in range(len(node.input))) and bool(users)
            and all(u.op_type == "QuantizeLinear" for u in users))


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _dots(f: np.ndarray, q: np.ndarray) -> tuple[float, float, float] | None:
    """(f.f, d.d, f.d) with d = q - f, float32 BLAS dots. None where the float tensor itself
    is not finite or overflows (attention masks of -3.4e38): no meaningful ratio there."""
    f = np.asarray(f, np.float32).ravel()
    with np.errstate(all="ignore"):
        ff = float(np.dot(f, f))
        if not math.isfinite(ff):
            return None
        d = np.asarray(q, np.float32).ravel() - f
        dd, fd = float(np.dot(d, d)), float(np.dot(f, d))
    if not (math.isfinite(dd) and math.isfinite(fd)):  # the int8 tensor blew up: all error
        return ff, math.inf, 0.0
    return ff, dd, fd


def _count_qdq(path: Path) -> dict[str, int]:
    import onnx
    from onnx import TensorProto

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    inits = {i.name: i for i in graph.initializer}
    counts = {"QuantizeLinear": 0, "DequantizeLinear": 0, "weights_int8": 0,
              "weights_per_channel": 0, "nodes_quantized": 0, "nodes_total": 0}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            counts[node.op_type] += 1
            if node.op_type == "DequantizeLinear" and node.input[0] in inits:
                w = inits[node.input[0]]
                if w.data_type == TensorProto.INT8:
                    counts["weights_int8"] += 1
                    scale = inits.get(node.input[1])
                    if scale is not None and int(np.prod(scale.dims or [1])) > 1:
                        counts["weights_per_channel"] += 1
            continue
        counts["nodes_total"] += 1
        counts["nodes_quantized"] += _reads_int8(node, producer, consumers)
    return counts


# --------------------------------------------------------------------------------------------
# Formatting (pure functions)
# --------------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_table(report: QuantizeReport, *, layers: int = 10) -> str:
    from tabulate import tabulate

    r = report
    lines = [
        f"{r.input} -> {r.output or '(not written)'}: int8 QDQ "
        f"({'per-channel' if r.per_channel else 'per-tensor'} symmetric weights, symmetric "
        f"activations), {r.method} calibration, {r.placement} Q/DQ placement",
        f"  calibration: {r.calibration}; {r.calibration_samples} used",
        f"  accuracy on: {r.evaluation}",
        f"  pre-processing: {', '.join(r.preprocess)}",
        f"  int8: {r.nodes_quantized} of {r.nodes_total} nodes "
        f"({r.weights_int8} int8 initializers, {r.weights_per_channel} per channel; "
        f"{r.quantize_linear} QuantizeLinear, {r.dequantize_linear} DequantizeLinear)",
    ]
    if r.excluded_nodes or r.excluded_ops:
        lines.append(f"  kept float: {len(r.excluded_nodes)} node(s)"
                     + (f", op types {', '.join(r.excluded_ops)}" if r.excluded_ops else ""))
    lines.append(f"  time: {r.seconds:.2f} s ({r.seconds_calibration:.2f} s calibration and "
                 "quantization)")
    if r.outputs:
        rows = [(o.name, f"{o.cosine:.6f}", f"{o.cosine_min:.6f}", f"{o.max_error:.3g}",
                 _pct(o.top1), _pct(o.top5)) for o in r.outputs]
        lines += ["", "Accuracy vs float (onnxruntime CPU):",
                  tabulate(rows, headers=["output", "cosine", "worst", "max err/scale",
                                          "top-1", "top-5"])]
    if r.layers:
        shown = [layer for layer in r.layers if layer.added > 0][:layers]
        if shown:
            rows = [(x.node, x.op_type, x.module or "", f"{x.cosine:.6f}", _pct(x.share))
                    for x in shown]
            lines += ["", f"Layers adding most error (of {len(r.layers)} quantized; exclude with "
                      "--exclude-node):",
                      tabulate(rows, headers=["node", "op", "module", "output cosine",
                                              "share of error"])]
    if r.target_cosine is not None:
        lines += ["", f"--target-cosine {r.target_cosine}: "
                  + ("met" if r.target_met else "NOT met") + f" (cosine {_num(r.cosine)})"]
        for i, a in enumerate(r.attempts, 1):
            lines.append(f"  attempt {i}: {len(a.excluded)} node(s) float, cosine "
                         f"{a.cosine:.6f}{' (met)' if a.met else ''}, {a.seconds:.2f} s")
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6f}"


def format_json(report: QuantizeReport) -> str:
    import json

    return json.dumps(report.to_dict(), indent=2, default=str) + "\n"


__all__ = [
    "Attempt", "LayerError", "METHODS", "PLACEMENTS", "OutputAccuracy", "QuantizeReport", "cosine",
    "format_json", "format_table", "output_accuracy", "quantize_model",
]
