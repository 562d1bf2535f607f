"""Measure models side by side on onnxruntime: latency, throughput, memory, agreement, speedup.

``bench_models([a, b, ...])`` runs every model on the same inputs, interleaved A/B/A/B so that
drift on a shared machine hits all of them equally, and reports per model the median/p90/p99
latency, throughput, peak GPU memory (where it can be read), whether its outputs agree with the
first model's, and its speedup over the first with a paired bootstrap confidence interval.
A speedup is only reported for a model whose outputs agree with the first model's.

Provider: ``cuda`` when a CUDA session can really be created (``session.get_providers()`` is
the only honest test; ``get_available_providers()`` lists CUDA on machines without a GPU),
else ``cpu``; the report says which one ran. On a GPU, inputs are bound as device OrtValues and
outputs bound to the device (IO binding), so host/device copies are not timed.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from tclint.errors import InputError, UsageError
from tclint.runtime import session_options

logger = logging.getLogger(__name__)

PROVIDERS = ("cuda", "tensorrt", "cpu")
ALGO_SEARCH = {"exhaustive": "EXHAUSTIVE", "heuristic": "HEURISTIC", "default": "DEFAULT"}

#: Agreement tolerances: |a - b| <= atol + rtol * max|reference| per output (scale-relative, so
#: one large logit does not make every small one "disagree"). FP32 vs FP32 (e.g. original vs
#: padded) must agree tightly; as soon as one model runs in a 16-bit float type, FP16 rounding of
#: every layer is expected.
TOLERANCES = {"fp32": (1e-4, 1e-5), "fp16": (2e-2, 1e-3)}

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """A model to bench, with optional per-model overrides (e.g. NCHW vs NHWC of one graph)."""

    path: str
    label: str | None = None
    prefer_nhwc: bool | None = None


@dataclass(frozen=True)
class InputInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    source: str  # "random" or "npz"


@dataclass(frozen=True)
class Latency:
    """Seconds per run, from ``runs`` timed runs."""

    median_s: float
    p90_s: float
    p99_s: float
    mean_s: float
    min_s: float
    max_s: float


@dataclass(frozen=True)
class Agreement:
    """How this model's outputs compare with the first model's."""

    agrees: bool
    max_abs_diff: float
    #: max |a - b| / max |reference|, over all outputs
    max_rel_diff: float
    rtol: float
    atol: float
    worst_output: str | None
    message: str


@dataclass(frozen=True)
class Speedup:
    """Median latency of the first model / median latency of this one (>1: this one is faster)."""

    value: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int


@dataclass(frozen=True)
class ModelResult:
    path: str
    label: str
    precision: str
    latency: Latency
    throughput: float  # items per second (batch / median latency)
    peak_memory_bytes: int | None
    agreement: Agreement | None  # None for the first (reference) model
    speedup: Speedup | None  # None for the first model and for models that do not agree
    samples_s: tuple[float, ...] = field(repr=False, default=())
    note: str = ""


@dataclass(frozen=True)
class BenchReport:
    provider: str
    #: what onnxruntime really ran, from ``session.get_providers()`` of the first model
    providers_used: tuple[str, ...]
    provider_note: str
    device: str
    onnxruntime: str
    warmup: int
    runs: int
    batch: int
    interleaved: bool
    io_binding: bool
    provider_options: dict
    inputs: tuple[InputInfo, ...]
    models: tuple[ModelResult, ...]

    def to_dict(self, *, samples: bool = False) -> dict:
        data = asdict(self)
        for model in data["models"]:
            if not samples:
                model.pop("samples_s")
            else:
                model["samples_s"] = list(model["samples_s"])
        data["providers_used"] = list(self.providers_used)
        data["inputs"] = [dict(i, shape=list(i["shape"])) for i in data["inputs"]]
        return data


# --------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------
def _tiny_model_bytes() -> bytes:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@functools.cache
def _provider_really_runs(ep: str) -> bool:
    if ep not in ort.get_available_providers():
        return False
    options = session_options()
    # The probe failing is the expected answer on machines without a GPU: keep onnxruntime's
    # "failed to load libcublas" lines off the user's terminal (2 = onnxruntime's default).
    ort.set_default_logger_severity(4)
    try:
        session = ort.InferenceSession(
            _tiny_model_bytes(), options, providers=[ep, "CPUExecutionProvider"]
        )
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run here"
        logger.debug("%s session cannot be created: %s", ep, exc)
        return False
    finally:
        ort.set_default_logger_severity(2)
    return ep in session.get_providers()


def cuda_available() -> bool:
    """True only when an onnxruntime session with the CUDA provider can really be created."""
    return _provider_really_runs("CUDAExecutionProvider")


def tensorrt_available() -> bool:
    return _provider_really_runs("TensorrtExecutionProvider")


def resolve_provider(provider: str | None) -> tuple[str, str]:
    """Return (provider, note). ``None`` picks cuda when it really runs, else cpu."""
    if provider is None:
        if cuda_available():
            return "cuda", "cuda: a CUDA session could be created"
        return "cpu", "cpu: no CUDA session could be created on this machine"
    provider = provider.lower()
    if provider not in PROVIDERS:
        raise UsageError(f"unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
    if provider == "cuda" and not cuda_available():
        raise UsageError(
            "--provider cuda: no onnxruntime CUDA session can be created on this machine"
        )
    if provider == "tensorrt" and not tensorrt_available():
        raise UsageError(
            "--provider tensorrt: no onnxruntime TensorRT session can be created on this machine"
        )
    return provider, f"{provider}: requested"


def provider_list(
    provider: str, *, prefer_nhwc: bool = False, cudnn_algo_search: str = "exhaustive"
) -> list:
    """The ``providers=`` argument for an InferenceSession."""
    if cudnn_algo_search not in ALGO_SEARCH:
        raise UsageError(
            f"unknown cudnn algo search {cudnn_algo_search!r}; choose one of {', '.join(ALGO_SEARCH)}"
        )
    cuda_options = {
        "cudnn_conv_algo_search": ALGO_SEARCH[cudnn_algo_search],
        "prefer_nhwc": "1" if prefer_nhwc else "0",
    }
    if provider == "cuda":
        return [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
    if provider == "tensorrt":
        return [
            ("TensorrtExecutionProvider", {}),
            ("CUDAExecutionProvider", cuda_options),
            "CPUExecutionProvider",
        ]
    return ["CPUExecutionProvider"]


def gpu_info() -> tuple[str, str] | None:
    """(GPU name, driver version) from nvidia-smi, or None."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = (
            subprocess.run(
                [exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if not out:
        return None
    name, _, driver = out[0].partition(",")
    return name.strip(), driver.strip()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


class _CudaMemory:
    """Device memory in use, via cudaMemGetInfo from the CUDA runtime onnxruntime loaded.

    onnxruntime's arena keeps what it allocated at its high-water mark, so the growth of used
    memory over session creation plus warm-up is the model's peak device memory.
    """

    def __init__(self) -> None:
        self._fn = None
        for name in ("libcudart.so.12", "libcudart.so.13", "libcudart.so.11.0", "libcudart.so"):
            try:
                lib = ctypes.CDLL(name)
                self._fn = lib.cudaMemGetInfo
                break
            except (OSError, AttributeError):
                continue

    def used(self) -> int | None:
        if self._fn is None:
            return None
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if self._fn(ctypes.byref(free), ctypes.byref(total)) != 0:
            return None
        return int(total.value - free.value)


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------
def _gather_index_limits(model: onnx.ModelProto) -> dict[str, int]:
    """Integer graph inputs used directly as Gather indices into a constant table (token ids):
    the table's size along the gather axis bounds the random ids."""
    dims = {init.name: list(init.dims) for init in model.graph.initializer}
    limits: dict[str, int] = {}
    inputs = {i.name for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] in inputs:
            table = dims.get(node.input[0])
            if table:
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                limit = table[axis]
                limits[node.input[1]] = min(limits.get(node.input[1], limit), limit)
    return limits


def _resolve_shape(
    name: str,
    shape: Sequence,
    *,
    dims: Mapping[str, int],
    input_shapes: Mapping[str, Sequence[int]],
    batch: int | None,
) -> tuple[int, ...]:
    if name in input_shapes:
        given = tuple(int(d) for d in input_shapes[name])
        if len(given) != len(shape):
            raise InputError(
                f"--input-shape {name}: {len(given)} dims given, the model has {len(shape)}"
            )
        for g, d in zip(given, shape):
            if isinstance(d, int) and d > 0 and g != d:
                raise InputError(
                    f"--input-shape {name}:{'x'.join(map(str, given))} conflicts with the model's "
                    f"fixed shape {list(shape)}"
                )
        return given
    out = []
    for axis, d in enumerate(shape):
        if isinstance(d, int) and d > 0:
            out.append(d)
        elif isinstance(d, str) and d in dims:
            out.append(int(dims[d]))
        elif axis == 0 and batch is not None:
            out.append(int(batch))
        else:
            what = f"symbolic dim {d!r}" if isinstance(d, str) else f"unknown dim at axis {axis}"
            hint = f"--dim {d}=N" if isinstance(d, str) else f"--input-shape {name}:..."
            raise InputError(f"input {name!r} has {what}; bind it with {hint}")
    return tuple(out)


def make_inputs(
    session: ort.InferenceSession,
    model: onnx.ModelProto | None = None,
    *,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Random inputs following the session's input specs, with symbolic dims bound by ``dims``
    (``{"batch": 8}``) or whole shapes by ``input_shapes`` (``{"image": (1, 3, 224, 224)}``);
    ``batch`` binds a still-symbolic leading dim. Floats are standard normal; integer inputs
    that index an embedding table get ids below its size; ``*mask*`` inputs are ones."""
    dims = dict(dims or {})
    input_shapes = dict(input_shapes or {})
    known = {i.name for i in session.get_inputs()}
    unknown = sorted(set(input_shapes) - known)
    if unknown:
        raise InputError(
            f"--input-shape names unknown input(s) {', '.join(unknown)}; the model's inputs are "
            f"{', '.join(sorted(known))}"
        )
    limits = _gather_index_limits(model) if model is not None else {}
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in session.get_inputs():
        dtype = _ORT_TYPES.get(spec.type)
        if dtype is None:
            raise InputError(
                f"input {spec.name!r} has type {spec.type}, which bench cannot generate"
            )
        shape = _resolve_shape(
            spec.name, spec.shape, dims=dims, input_shapes=input_shapes, batch=batch
        )
        if np.issubdtype(dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_ or "mask" in spec.name.lower():
            feeds[spec.name] = np.ones(shape, dtype=dtype)
        else:
            high = limits.get(spec.name, 2)
            feeds[spec.name] = rng.integers(0, max(1, high), size=shape).astype(dtype)
    return feeds


def load_npz_inputs(path: str | os.PathLike) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read inputs {path}: {' '.join(str(exc).split())}") from None


def _npz_feeds(session: ort.InferenceSession, path) -> tuple[dict[str, np.ndarray], str]:
    """Arrays by input name. Like ``tclint convert --inputs``, an extra leading axis on every
    array holds several samples: bench uses the first."""
    arrays = load_npz_inputs(path)
    specs = {i.name: i for i in session.get_inputs()}
    missing = sorted(set(specs) - set(arrays))
    extra = sorted(set(arrays) - set(specs))
    if missing or extra:
        raise InputError(f"{path}: missing inputs {missing or '-'}, unknown arrays {extra or '-'}")
    stacked = {k: arrays[k].ndim == len(specs[k].shape) + 1 for k in specs}
    if specs and all(stacked.values()):
        count = arrays[next(iter(specs))].shape[0]
        return {k: a[0] for k, a in arrays.items()}, f"npz (sample 1 of {count})"
    wrong = sorted(k for k in specs if arrays[k].ndim != len(specs[k].shape))
    if wrong:
        raise InputError(f"{path}: arrays {', '.join(wrong)} do not have their input's rank")
    return arrays, "npz"


def _feeds_for(session: ort.InferenceSession, base: Mapping[str, np.ndarray], path: str) -> dict:
    """The reference inputs, cast to what this model expects (an FP16-IO model gets FP16)."""
    feeds = {}
    for spec in session.get_inputs():
        if spec.name not in base:
            raise InputError(
                f"{path}: input {spec.name!r} is not an input of the first model "
                f"(its inputs: {', '.join(sorted(base))}); benched models must share inputs"
            )
        dtype = _ORT_TYPES.get(spec.type)
        value = base[spec.name]
        feeds[spec.name] = (
            value.astype(dtype) if dtype is not None and value.dtype != dtype else value
        )
    return feeds


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
_FLOAT16ISH = {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}


def model_precision(model: onnx.ModelProto) -> str:
    """``fp16``/``bf16`` when the model holds 16-bit float weights or values, else ``fp32``."""
    types = [init.data_type for init in model.graph.initializer]
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        types.append(vi.type.tensor_type.elem_type)
    for node in model.graph.node:
        if node.op_type == "Cast":
            types.extend(a.i for a in node.attribute if a.name == "to")
        elif node.op_type == "Constant":
            types.extend(a.t.data_type for a in node.attribute if a.name == "value")
    for t in types:
        if t in _FLOAT16ISH:
            return _FLOAT16ISH[t]
    return "fp32"


def _load_structure(path: str) -> onnx.ModelProto:
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several unrelated types
        raise InputError(
            f"{path}: not a readable ONNX model ({' '.join(str(exc).split())[:200]})"
        ) from None


def _session(path: str, providers: list, *, shared: bool = False) -> ort.InferenceSession:
    options = session_options()
    if shared and providers == ["CPUExecutionProvider"]:
        # Interleaved sessions share the cores: a previous session's thread pool spinning
        # after its run would slow down whichever model runs next.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        from tclint.verify import CPU_DISABLED_OPTIMIZERS

        disabled = list(CPU_DISABLED_OPTIMIZERS) if "CPUExecutionProvider" in providers else []
        return ort.InferenceSession(path, options, providers=providers, disabled_optimizers=disabled)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated types
        first = " ".join(str(exc).split())[:300]
        raise InputError(f"{path}: onnxruntime cannot load it: {first}") from None


class _Runner:
    """Runs one session; on a device provider, through IO binding with device-resident inputs."""

    def __init__(
        self, session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], device: str | None
    ):
        self.session = session
        self.device = device
        self.output_names = [o.name for o in session.get_outputs()]
        if device is None:
            self.feeds = dict(feeds)
            return
        self.binding = session.io_binding()
        self._inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, device, 0) for k, v in feeds.items()}
        for name, value in self._inputs.items():
            self.binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            self.binding.bind_output(name, device)

    def run(self) -> None:
        if self.device is None:
            self.session.run(self.output_names, self.feeds)
        else:
            self.session.run_with_iobinding(self.binding)
            self.binding.synchronize_outputs()

    def outputs(self) -> dict[str, np.ndarray]:
        if self.device is None:
            return dict(zip(self.output_names, self.session.run(self.output_names, self.feeds)))
        self.run()
        return dict(zip(self.output_names, self.binding.copy_outputs_to_cpu()))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------
def latency_stats(samples: Sequence[float]) -> Latency:
    a = np.asarray(samples, dtype=np.float64)
    return Latency(
        median_s=float(np.median(a)),
        p90_s=float(np.percentile(a, 90)),
        p99_s=float(np.percentile(a, 99)),
        mean_s=float(a.mean()),
        min_s=float(a.min()),
        max_s=float(a.max()),
    )


def bootstrap_speedup(
    reference: Sequence[float],
    candidate: Sequence[float],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Speedup:
    """Speedup = median(reference) / median(candidate), with a paired percentile bootstrap CI.

    Runs were interleaved, so run i of both models shares the machine's state at that moment:
    resampling run indices jointly keeps that pairing.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if len(ref) != len(cand) or len(ref) == 0:
        raise ValueError("bootstrap_speedup needs two equally long, non-empty sample lists")
    value = float(np.median(ref) / np.median(cand))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ref), size=(resamples, len(ref)))
    ratios = np.median(ref[idx], axis=1) / np.median(cand[idx], axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(ratios, [alpha, 1 - alpha])
    return Speedup(value, float(low), float(high), confidence, resamples)


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    *,
    rtol: float,
    atol: float,
) -> Agreement:
    """Agree when every output has the same shape and max|a-b| <= atol + rtol * max|reference|."""
    worst, worst_abs, worst_rel, problems = None, 0.0, 0.0, []
    for name, ref in reference.items():
        if name not in candidate:
            problems.append(f"output {name!r} missing")
            continue
        got = candidate[name]
        if got.shape != ref.shape:
            problems.append(
                f"output {name!r} has shape {list(got.shape)}, expected {list(ref.shape)}"
            )
            continue
        r = ref.astype(np.float64)
        g = got.astype(np.float64)
        if r.size == 0:
            continue
        if not (np.isfinite(g).all() or not np.isfinite(r).all()):
            problems.append(f"output {name!r} has non-finite values the reference does not have")
            worst, worst_abs, worst_rel = name, math.inf, math.inf
            continue
        finite = np.isfinite(r) & np.isfinite(g)
        diff = float(np.max(np.abs(r[finite] - g[finite]), initial=0.0))
        scale = float(np.max(np.abs(r[finite]), initial=0.0))
        rel = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
        if diff > atol + rtol * scale:
            problems.append(f"output {name!r} differs by {diff:.3g} (scale {scale:.3g})")
        if worst is None or diff > worst_abs:
            worst, worst_abs, worst_rel = name, diff, max(worst_rel, rel)
        worst_rel = max(worst_rel, rel)
    agrees = not problems
    message = "outputs agree" if agrees else "; ".join(problems)
    return Agreement(agrees, worst_abs, worst_rel, rtol, atol, worst, message)


# --------------------------------------------------------------------------------------------
# The harness
# --------------------------------------------------------------------------------------------
def bench_models(
    paths: Sequence[str | os.PathLike | ModelSpec],
    *,
    provider: str | None = None,
    warmup: int = 10,
    runs: int = 100,
    batch: int | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    inputs_npz: str | os.PathLike | None = None,
    prefer_nhwc: bool = False,
    cudnn_algo_search: str = "exhaustive",
    rtol: float | None = None,
    atol: float | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> BenchReport:
    """Bench one or more models on the same inputs; the first is the reference.

    ``batch`` is the number of items one run processes (throughput = batch / median latency);
    it also binds a still-symbolic leading input dim. Default: the first input's leading dim.
    ``rtol``/``atol``: agreement tolerances; by default the FP32 ones, or the FP16 ones when a
    model's precision differs from the first's (see :data:`TOLERANCES`).
    """
    if not paths:
        raise UsageError("bench needs at least one model")
    if warmup < 0 or runs < 1:
        raise UsageError("--warmup must be >= 0 and --runs >= 1")
    if batch is not None and batch < 1:
        raise UsageError("--batch must be >= 1")
    specs = [p if isinstance(p, ModelSpec) else ModelSpec(os.fspath(p)) for p in paths]
    provider, provider_note = resolve_provider(provider)
    device = None if provider == "cpu" else "cuda"
    structures = [_load_structure(s.path) for s in specs]
    memory = _CudaMemory() if device else None

    sessions, runners, peaks = [], [], []
    base_feeds: dict[str, np.ndarray] | None = None
    input_infos: list[InputInfo] = []
    for spec, structure in zip(specs, structures):
        nhwc = prefer_nhwc if spec.prefer_nhwc is None else spec.prefer_nhwc
        before = memory.used() if memory else None
        session = _session(
            spec.path,
            provider_list(provider, prefer_nhwc=nhwc, cudnn_algo_search=cudnn_algo_search),
            shared=len(specs) > 1,
        )
        if base_feeds is None:
            if inputs_npz is not None:
                base_feeds, source = _npz_feeds(session, inputs_npz)
            else:
                base_feeds = make_inputs(
                    session, structure, dims=dims, input_shapes=input_shapes, batch=batch, seed=seed
                )
                source = "random"
            input_infos = [
                InputInfo(k, tuple(int(d) for d in v.shape), str(v.dtype), source)
                for k, v in base_feeds.items()
            ]
        runner = _Runner(session, _feeds_for(session, base_feeds, spec.path), device)
        try:
            for _ in range(warmup):
                runner.run()
        except Exception as exc:  # noqa: BLE001 - onnxruntime's runtime errors
            raise InputError(
                f"{spec.path}: onnxruntime failed to run it: {' '.join(str(exc).split())[:300]}"
            ) from None
        after = memory.used() if memory else None
        peaks.append(max(0, after - before) if before is not None and after is not None else None)
        sessions.append(session)
        runners.append(runner)

    if batch is None:
        first = next(iter(base_feeds.values()), None)
        batch = int(first.shape[0]) if first is not None and first.ndim > 0 else 1

    samples: list[list[float]] = [[] for _ in runners]
    clock = time.perf_counter
    n = len(runners)
    i = 0
    try:
        for r in range(runs):
            # A/B/A/B, with the order rotated every round so no model always follows the same one.
            for j in range(n):
                i = (r + j) % n
                t0 = clock()
                runners[i].run()
                samples[i].append(clock() - t0)
        outputs = []
        for i, runner in enumerate(runners):
            outputs.append(runner.outputs())
    except Exception as exc:  # noqa: BLE001 - onnxruntime's runtime errors
        raise InputError(
            f"{specs[i].path}: onnxruntime failed to run it: {' '.join(str(exc).split())[:300]}"
        ) from None
    precisions = [model_precision(s) for s in structures]
    results = []
    for i, spec in enumerate(specs):
        stats = latency_stats(samples[i])
        agreement = speedup = None
        note = ""
        if i > 0:
            mixed = precisions[i] != precisions[0]
            d_rtol, d_atol = TOLERANCES["fp16" if mixed or precisions[0] != "fp32" else "fp32"]
            agreement = compare_outputs(
                outputs[0],
                outputs[i],
                rtol=d_rtol if rtol is None else rtol,
                atol=d_atol if atol is None else atol,
            )
            if agreement.agrees:
                speedup = bootstrap_speedup(
                    samples[0], samples[i], confidence=confidence, seed=seed
                )
            else:
                note = "no speedup reported: outputs differ from the first model"
        results.append(
            ModelResult(
                path=spec.path,
                label=spec.label or Path(spec.path).name,
                precision=precisions[i],
                latency=stats,
                throughput=batch / stats.median_s if stats.median_s > 0 else math.inf,
                peak_memory_bytes=peaks[i],
                agreement=agreement,
                speedup=speedup,
                samples_s=tuple(samples[i]),
                note=note,
            )
        )
    gpu = gpu_info() if device else None
    return BenchReport(
        provider=provider,
        providers_used=tuple(sessions[0].get_providers()),
        provider_note=provider_note,
        device=(gpu[0] if gpu else "GPU") if device else _cpu_name(),
        onnxruntime=ort.__version__,
        warmup=warmup,
        runs=runs,
        batch=batch,
        interleaved=len(runners) > 1,
        io_binding=device is not None,
        provider_options=(
            {"prefer_nhwc": prefer_nhwc, "cudnn_conv_algo_search": ALGO_SEARCH[cudnn_algo_search]}
            if device
            else ({"session.intra_op.allow_spinning": "0"} if len(specs) > 1 else {})
        ),
        inputs=tuple(input_infos),
        models=tuple(results),
    )


def profile_layers(
    path: str | os.PathLike,
    *,
    provider: str = "cpu",
    feeds: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, int] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    batch: int | None = None,
    warmup: int = 3,
    runs: int = 10,
    prefer_nhwc: bool = False,
    cudnn_algo_search: str = "exhaustive",
) -> dict[str, float]:
    """Median kernel time per node (seconds per run) from onnxruntime's profiler.

    Graph optimizations are turned off so that nodes keep their names (a fused kernel cannot
    be attributed to the layers of the model); the times are those of unfused kernels.
    """
    import tempfile

    path = os.fspath(path)
    structure = _load_structure(path)
    with tempfile.TemporaryDirectory(prefix="tclint-profile-") as tmp:
        options = session_options()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "profile")
        try:
            session = ort.InferenceSession(
                path,
                options,
                providers=provider_list(
                    provider, prefer_nhwc=prefer_nhwc, cudnn_algo_search=cudnn_algo_search
                ),
            )
        except Exception as exc:  # noqa: BLE001
            raise InputError(
                f"{path}: onnxruntime cannot load it: {' '.join(str(exc).split())[:300]}"
            ) from None
        base = (
            dict(feeds)
            if feeds is not None
            else make_inputs(session, structure, dims=dims, input_shapes=input_shapes, batch=batch)
        )
        runner = _Runner(
            session, _feeds_for(session, base, path), None if provider == "cpu" else "cuda"
        )
        for _ in range(warmup + runs):
            runner.run()
        with open(session.end_profiling()) as f:
            events = json.load(f)
    per_node: dict[str, list[float]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            per_node.setdefault(name[: -len("_kernel_time")], []).append(event["dur"] * 1e-6)
    return {node: float(np.median(durs[warmup:] or durs)) for node, durs in per_node.items()}


# --------------------------------------------------------------------------------------------
# Formatters (pure)
# --------------------------------------------------------------------------------------------
def format_json(report: BenchReport, *, samples: bool = False) -> str:
    return json.dumps(report.to_dict(samples=samples), indent=2, default=_json_default) + "\n"


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def format_table(report: BenchReport) -> str:
    from tabulate import tabulate

    rows = []
    for m in report.models:
        if m.agreement is None:
            agree = "reference"
        else:
            agree = (
                f"{'yes' if m.agreement.agrees else 'NO'} (max diff {m.agreement.max_abs_diff:.2g})"
            )
        if m.speedup is not None:
            s = m.speedup
            speed = f"{s.value:.2f}x [{s.ci_low:.2f}, {s.ci_high:.2f}]"
        else:
            speed = "-" if m.agreement is None else "n/a"
        mem = f"{m.peak_memory_bytes / 2**20:.1f}" if m.peak_memory_bytes is not None else "-"
        rows.append(
            [
                m.label,
                m.precision,
                _ms(m.latency.median_s),
                _ms(m.latency.p90_s),
                _ms(m.latency.p99_s),
                f"{m.throughput:.1f}",
                mem,
                speed,
                agree,
            ]
        )
    headers = [
        "model",
        "precision",
        "median ms",
        "p90 ms",
        "p99 ms",
        "items/s",
        "peak MiB",
        "speedup [95% CI]",
        "outputs agree",
    ]
    shapes = ", ".join(f"{i.name}:{'x'.join(map(str, i.shape))} {i.dtype}" for i in report.inputs)
    head = (
        f"provider: {report.provider} ({report.provider_note}); ran on {', '.join(report.providers_used)}; "
        f"device: {report.device}; onnxruntime {report.onnxruntime}\n"
        f"warmup {report.warmup}, runs {report.runs}{' interleaved' if report.interleaved else ''}, "
        f"batch {report.batch}{', IO binding' if report.io_binding else ''}; inputs: {shapes}\n"
    )
    lines = [head, tabulate(rows, headers=headers, disable_numparse=True)]
    for m in report.models:
        if m.note:
            lines.append(f"{m.label}: {m.note} ({m.agreement.message})")
    return "\n".join(lines) + "\n"
