"""Facts about GPUs, precisions and kernels: the one place every such number lives.

Every row carries a ``source``: a public document, or a measurement that can be re-run
(``benchmarks/calibrate.py`` writes a JSON table that :func:`load_calibration` loads in place of
the documented cost constants). Nothing outside this module hard-codes a GPU or kernel number.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field

from tclint.errors import UsageError

PERF_GUIDE = (
    "NVIDIA Deep Learning Performance Guide, 'Matrix Multiplication Background' "
    "(Tensor Core requirements; Dimension quantization effects)"
)
CONV_GUIDE = "NVIDIA Deep Learning Performance Guide, 'Convolutional Layers User's Guide'"
CUBLAS_DOC = "cuBLAS documentation, 'Tensor Core Usage'"
DESIGN_CARD = "tclint design card (from the Paddle Inference mixed-precision guide): 8 FP16, 16 on A100"


# --------------------------------------------------------------------------------------------
# Precisions
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Precision:
    name: str
    bytes: float
    #: ONNX element types that run in this precision.
    onnx_types: tuple[str, ...]
    source: str


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in [
        Precision("fp16", 2, ("FLOAT16",), PERF_GUIDE),
        Precision("bf16", 2, ("BFLOAT16",), PERF_GUIDE),
        Precision("tf32", 4, ("FLOAT",), PERF_GUIDE),
        Precision("int8", 1, ("INT8", "UINT8", "INT4", "UINT4"), PERF_GUIDE),
        Precision(
            "fp8",
            1,
            ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ"),
            "Transformer Engine / PyTorch _scaled_mm FP8 checks",
        ),
    ]
}


@dataclass(frozen=True)
class AlignmentTier:
    """Alignment required of M/N/K and conv C/K, expressed in bytes so it covers every precision."""

    name: str
    bytes: int
    source: str


#: 16 bytes: the minimum for vectorized Tensor Core loads (8 FP16, 4 TF32, 16 INT8/FP8).
TIER_MINIMUM = AlignmentTier("minimum", 16, f"{PERF_GUIDE}; {CUBLAS_DOC} (%16 bytes)")
#: The product's required tier on A100-class GPUs: 16 FP16 elements = 32 bytes.
TIER_A100 = AlignmentTier("a100", 32, DESIGN_CARD)
#: NVIDIA's "most efficient" tier on A100 and later: 128 bytes (64 FP16).
TIER_STRICT = AlignmentTier("strict", 128, f"{PERF_GUIDE} (multiples of 128 bytes on A100)")


# --------------------------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GPU:
    name: str
    arch: str  # "sm80"
    sms: int
    #: dense Tensor Core peak in TFLOP/s (TOP/s for int8) per precision; absent = no Tensor Core path
    peak_tflops: dict[str, float]
    dram_gbs: float
    #: alignment tier the product requires on this GPU (see TIER_*)
    required_tier: AlignmentTier
    source: str

    @property
    def balance(self) -> float:
        """Machine balance for FP16: FLOP per byte at which a layer stops being memory-bound."""
        return self.peak_tflops.get("fp16", 0.0) * 1e12 / (self.dram_gbs * 1e9)


GPUS: dict[str, GPU] = {
    g.name: g
    for g in [
        GPU("v100", "sm70", 80, {"fp16": 125.0}, 900.0, TIER_MINIMUM,
            "NVIDIA V100 datasheet; 'Programming Tensor Cores in CUDA 9'"),
        GPU("t4", "sm75", 40, {"fp16": 65.0, "int8": 130.0}, 320.0, TIER_MINIMUM,
            "NVIDIA T4 datasheet (dense)"),
        GPU("a100", "sm80", 108,
            {"fp16": 312.0, "bf16": 312.0, "tf32": 156.0, "int8": 624.0}, 2039.0, TIER_A100,
            "NVIDIA A100 datasheet, SXM 80GB (dense, not the 2x sparsity figures)"),
        GPU("a10", "sm86", 72,
            {"fp16": 125.0, "bf16": 125.0, "tf32": 62.5, "int8": 250.0}, 600.0, TIER_MINIMUM,
            "NVIDIA A10 datasheet (dense; to be rechecked against a measurement)"),
        GPU("l4", "sm89", 58,
            {"fp16": 121.0, "bf16": 121.0, "tf32": 60.0, "int8": 242.0, "fp8": 242.0}, 300.0,
            TIER_MINIMUM,
            "NVIDIA L4 datasheet (dense); SM count 58 vs 60 differs between listings"),
        GPU("h100", "sm90", 132,
            {"fp16": 989.0, "bf16": 989.0, "tf32": 495.0, "int8": 1979.0, "fp8": 1979.0},
            3350.0, TIER_A100,
            "NVIDIA H100 SXM datasheet (dense); sm90 treated like sm80 for alignment"),
    ]
}

ARCH_ALIASES = {g.arch: g.name for g in GPUS.values()}


def get_gpu(name: str) -> GPU:
    """Look a GPU up by name (``a100``) or architecture (``sm80``)."""
    key = name.strip().lower()
    key = ARCH_ALIASES.get(key, key)
    if key not in GPUS:
        known = ", ".join(sorted(GPUS) + sorted(ARCH_ALIASES))
        raise UsageError(f"unknown --arch {name!r}; known: {known}")
    return GPUS[key]


def get_precision(name: str) -> Precision:
    key = name.strip().lower()
    if key not in PRECISIONS:
        raise UsageError(f"unknown --dtype {name!r}; known: {', '.join(PRECISIONS)}")
    return PRECISIONS[key]


def required_multiple(gpu: GPU, precision: str, *, strict: bool = False) -> int:
    """Elements a GEMM dim / conv channel count must be a multiple of."""
    tier = TIER_STRICT if strict else gpu.required_tier
    return max(1, int(tier.bytes // PRECISIONS[precision].bytes))


def minimum_multiple(precision: str) -> int:
    """The 16-byte multiple below which kernels lose vectorized loads (FP8: no kernel at all)."""
    return max(1, int(TIER_MINIMUM.bytes // PRECISIONS[precision].bytes))


# --------------------------------------------------------------------------------------------
# Cost-model constants
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Constant:
    value: float
    source: str


def _c(value: float, source: str) -> Constant:
    return Constant(value, source)


ESTIMATE = "estimate, replace with a measurement: python benchmarks/calibrate.py --out FILE"


@dataclass(frozen=True)
class CostConstants:
    """Constants of the cost model. Replace any of them with ``load_calibration``."""

    #: fraction of dense peak that a well-shaped large GEMM reaches
    gemm_efficiency: Constant = _c(0.80, f"{PERF_GUIDE} (cuBLAS large-GEMM plots reach ~80%); {ESTIMATE}")
    #: fraction of DRAM bandwidth that streaming kernels reach
    bandwidth_efficiency: Constant = _c(0.85, f"STREAM-like copies on A100/H100 reach 80-90%; {ESTIMATE}")
    #: throughput factor when a dim is not a multiple of 16 bytes (no vectorized loads: the
    #: "align1/align2" kernels, or cuDNN's internal padding copies)
    misaligned_minimum_factor: Constant = _c(
        0.50, f"{PERF_GUIDE}, fig. 'K=8190 vs 8192' (~2x+ gap for FP16, cuBLAS>=11); {ESTIMATE}")
    #: throughput factor when aligned to 16 bytes but not to the GPU's required tier
    misaligned_tier_factor: Constant = _c(
        0.85, f"{DESIGN_CARD}: A100 kernels prefer 32-byte multiples; {ESTIMATE}")
    #: throughput factor for NVIDIA's 128-byte tier not met (only under --strict)
    misaligned_strict_factor: Constant = _c(0.95, f"{PERF_GUIDE} (128-byte tier); {ESTIMATE}")
    #: the tile sizes cuBLAS picks from, large problems first
    tiles: tuple[tuple[int, int], ...] = ((256, 128), (128, 128), (128, 64), (64, 64))
    tiles_source: str = f"{PERF_GUIDE}, 'Dimension quantization effects' (256x128 ... 64x64)"
    #: relative efficiency of each tile above (smaller tiles reuse operands less)
    tile_efficiency: tuple[float, ...] = (1.0, 0.95, 0.85, 0.70)
    tile_efficiency_source: str = f"{PERF_GUIDE} (larger tiles reuse more data); {ESTIMATE}"
    #: smallest K slice cuBLAS/CUTLASS split-K leaves each CTA
    split_k_min: Constant = _c(256, f"CUTLASS split-K (parallel reduction) docs; {ESTIMATE}")
    #: tiles resident per SM at once (one wave = sms * this)
    tiles_per_sm: Constant = _c(1, f"{PERF_GUIDE} (A100: 108 tiles per wave for 256x128); {ESTIMATE}")
    #: fixed cost of one kernel launch on the GPU timeline, seconds
    launch_overhead_s: Constant = _c(3e-6, f"CUDA kernel launch latency is ~2-5 us; {ESTIMATE}")
    #: first-layer conv on 3 channels: throughput factor vs. the C=4 NHWC kernel
    conv_c3_factor: Constant = _c(
        0.50, f"{CONV_GUIDE}: C=3 falls off the C=4 NHWC Tensor Core kernels; {ESTIMATE}")
    #: depthwise convs run on CUDA cores at this fraction of the memory roofline
    depthwise_efficiency: Constant = _c(0.60, f"{CONV_GUIDE} (depthwise is memory-bound); {ESTIMATE}")
    #: NCHW convs pay NCHW<->NHWC transposes around each Tensor Core conv: modelled as this many
    #: extra passes over the conv's bytes, plus one launch. Fitted so that a ResNet-50 at batch 128
    #: spends 15% of its estimated time there, between the two published measurements (checked by
    #: tests/test_cost.py::test_nchw_share_matches_published_measurements)
    nchw_transposes_per_conv: Constant = _c(
        0.6, "fit to Paddle issue 19425 (14% of ResNet-50 FP16 time, V100) and TF benchmarks "
             "issue 237 (16%): ResNet-50 batch 128 -> 15%")
    #: fraction of dense peak a non-Tensor-Core (CUDA core) GEMM reaches, relative to Tensor Cores
    no_tensor_core_factor: Constant = _c(0.125, "A100: 19.5 TFLOP/s FP32 vs 156 TF32 (datasheet)")
    #: source of the whole table
    source: str = "documented defaults (tclint.specs)"


DEFAULT_CONSTANTS = CostConstants()


#: The range a calibrated constant may take: wide enough for any real measurement (a factor
#: measured slightly above 1 on a noisy machine included), narrow enough that no estimate can
#: overflow to infinity or divide by zero (a gate that passes on an infinite estimate).
CALIBRATION_RANGES: dict[str, tuple[float, float]] = {
    "gemm_efficiency": (1e-3, 10.0),
    "bandwidth_efficiency": (1e-3, 10.0),
    "misaligned_minimum_factor": (1e-3, 10.0),
    "misaligned_tier_factor": (1e-3, 10.0),
    "misaligned_strict_factor": (1e-3, 10.0),
    "conv_c3_factor": (1e-3, 10.0),
    "depthwise_efficiency": (1e-3, 10.0),
    "no_tensor_core_factor": (1e-3, 10.0),
    "split_k_min": (1.0, float(1 << 24)),
    "tiles_per_sm": (1.0, 64.0),
    "launch_overhead_s": (0.0, 1e-2),  # seconds: 0 (none) to 10 ms
    "nchw_transposes_per_conv": (0.0, 100.0),
}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def load_calibration(path: str | os.PathLike) -> tuple[CostConstants, dict]:
    """Load a measured table written by ``benchmarks/calibrate.py``.

    The file is JSON: ``{"gpu": ..., "driver": ..., "command": ..., "constants": {name: value}}``.
    Every constant must be one the cost model has, and a number in its
    :data:`CALIBRATION_RANGES` range (NaN, Infinity, null, strings refused): a bad table is one
    UsageError, never a NaN or infinite estimate that passes the gate. Returns the constants (documented
    defaults for anything the file does not measure) and the file's metadata, so reports can
    say where the numbers came from.
    """
    from tclint.io import not_a_regular_file

    problem = not_a_regular_file(path)
    if problem:
        raise UsageError(f"cannot read calibration table {path}: {problem}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f, parse_constant=_reject_constant)
    except RecursionError:
        raise UsageError(f"cannot read calibration table {path}: JSON nested too deeply") from None
    except (OSError, ValueError) as exc:
        why = getattr(exc, "strerror", None) or " ".join(str(exc).split())
        raise UsageError(f"cannot read calibration table {path}: {why}") from None
    if not isinstance(data, dict):
        raise UsageError(f"calibration table {path} is not a JSON object with \"constants\"")
    measured = data.get("constants", {})
    if not isinstance(measured, dict):
        raise UsageError(f"calibration table {path}: \"constants\" must be an object of name: number")
    fields = {f_.name: f_ for f_ in dataclasses.fields(CostConstants)}
    unknown = sorted(k for k in measured if k not in fields
                     or not isinstance(getattr(DEFAULT_CONSTANTS, k), Constant))
    if unknown:
        raise UsageError(f"calibration table {path} has unknown constants: {', '.join(unknown)}")
    where = f"measured: {data.get('gpu', '?')}, driver {data.get('driver', '?')}: {data.get('command', '?')}"
    changes = {}
    for name, raw in measured.items():
        low, high = CALIBRATION_RANGES.get(name, (0.0, 1e6))
        ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw)
        if not (ok and low <= raw <= high):
            raise UsageError(f"calibration table {path}: {name} = {json.dumps(raw)[:40]}: expected "
                             f"a number from {low:g} to {high:g}")
        changes[name] = Constant(float(raw), where)
    meta = {k: v for k, v in data.items() if k != "constants"}
    return dataclasses.replace(DEFAULT_CONSTANTS, source=where, **changes), meta


@dataclass(frozen=True)
class Target:
    """What the report assumes: the GPU, the precision a float32 model will run in, the tier."""

    gpu: GPU
    dtype: str = "fp16"
    strict: bool = False
    constants: CostConstants = field(default=DEFAULT_CONSTANTS)

    def multiple(self, precision: str | None = None) -> int:
        return required_multiple(self.gpu, precision or self.dtype, strict=self.strict)

    def peak_flops(self, precision: str | None = None) -> float:
        """Dense Tensor Core FLOP/s for a precision; CUDA-core rate when the GPU has none."""
        p = precision or self.dtype
        peaks = self.gpu.peak_tflops
        if p in peaks:
            return peaks[p] * 1e12
        base = peaks.get("fp16", max(peaks.values()))
        return base * 1e12 * self.constants.no_tensor_core_factor.value

    @property
    def bandwidth(self) -> float:
        return self.gpu.dram_gbs * 1e9 * self.constants.bandwidth_efficiency.value

    def describe(self) -> str:
        tier = "strict 128-byte tier" if self.strict else f"{self.multiple()}-element tier"
        return f"{self.gpu.name} ({self.gpu.arch}, {self.gpu.sms} SMs), {self.dtype}, {tier}"


def make_target(
    arch: str = "a100",
    dtype: str = "fp16",
    *,
    strict: bool = False,
    calibration: str | os.PathLike | None = None,
) -> Target:
    gpu = get_gpu(arch)
    get_precision(dtype)
    if dtype not in gpu.peak_tflops and dtype != "tf32":
        raise UsageError(f"--dtype {dtype} has no Tensor Core path on {gpu.name} ({gpu.arch})")
    constants = load_calibration(calibration)[0] if calibration else DEFAULT_CONSTANTS
    return Target(gpu=gpu, dtype=dtype, strict=strict, constants=constants)


# --------------------------------------------------------------------------------------------
# FP16 / BF16 kernel availability per execution provider (tclint convert, rules TC30x)
# --------------------------------------------------------------------------------------------
ORT_KERNELS_DOC = (
    "onnxruntime docs/OperatorKernels.md (generated from the registered kernels), "
    "commit 001d12d2623fd411ce0f83d05abb5e82304a3389; latest opset row of each op"
)
TRT_OPERATORS_DOC = (
    "onnx-tensorrt docs/operators.md (TensorRT 8.4 ONNX support matrix), "
    "commit 009d6541b4ee1fa3f3150cd7cbabe7e56aa54840"
)
IEEE_BINARY16 = "IEEE 754-2008 binary16: max finite 65504, min normal 2^-14, min subnormal 2^-24"
IEEE_BFLOAT16 = "bfloat16 (8-bit exponent like float32): max finite ~3.39e38, min normal ~1.18e-38"


@dataclass(frozen=True)
class KernelTable:
    """Ops that have a kernel for one low precision on one execution provider.

    ``ops`` holds ai.onnx op types by name and other domains as ``"domain::Op"``. An op that is
    not listed has no kernel in that precision: the converter keeps it in float32.
    """

    provider: str
    dtype: str
    ops: frozenset[str]
    source: str

    def has_kernel(self, domain: str, op_type: str) -> bool:
        if domain in ("", "ai.onnx"):
            return op_type in self.ops
        return f"{domain}::{op_type}" in self.ops


_SHAPE_AND_CONTROL = """Cast Compress Concat ConcatFromSequence ConstantOfShape DynamicSlice Expand
    Flatten Gather GatherElements GatherND Identity If Loop Reshape ReverseSequence Scan Scatter
    ScatterElements ScatterND SequenceAt SequenceConstruct SequenceEmpty SequenceErase
    SequenceInsert SequenceLength Shape Slice Split Squeeze TensorScatter Transpose Unsqueeze"""

_CUDA_FP16 = _SHAPE_AND_CONTROL + """
    Abs Add Affine ArgMax ArgMin Attention AveragePool BatchNormalization Ceil Clip Conv
    ConvTranspose Cos Crop CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf
    Exp Floor GRU Gelu Gemm GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual HardSigmoid
    HardSwish ImageScaler InstanceNormalization IsInf IsNaN LRN LSTM LayerNormalization LeakyRelu
    Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Min Mod Mul Neg NonZero OneHot PRelu Pad
    ParametricSoftplus Pow QuantizeLinear RMSNormalization RNN RandomNormal RandomNormalLike
    RandomUniform RandomUniformLike Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp
    ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Resize RotaryEmbedding
    Round ScaledTanh Selu Shrink Sigmoid Sign SimplifiedLayerNormalization Sin Size Softmax
    Softplus Softsign SpaceToDepth Sqrt Sub Sum Tanh ThresholdedRelu Tile TopK Trilu Upsample Where
    com.microsoft::Attention com.microsoft::BiasAdd com.microsoft::BiasDropout
    com.microsoft::BiasGelu com.microsoft::BiasSoftmax com.microsoft::BiasSplitGelu
    com.microsoft::FastGelu com.microsoft::FusedMatMul com.microsoft::Gelu com.microsoft::GroupNorm
    com.microsoft::MultiHeadAttention com.microsoft::NhwcConv com.microsoft::GroupQueryAttention
    com.microsoft::SkipLayerNormalization com.microsoft::SkipSimplifiedLayerNormalization"""

_CUDA_BF16 = _SHAPE_AND_CONTROL + """
    Abs Add Attention AveragePool Conv Div Dropout Erf Exp Gelu Gemm HardSigmoid HardSwish IsInf
    IsNaN LayerNormalization MatMul Max Min Mod Mul Neg Pow RMSNormalization ReduceSum Relu
    RotaryEmbedding Sigmoid Sign SimplifiedLayerNormalization Size Softmax Sqrt Sub Sum Tanh Tile
    Trilu Where com.microsoft::Attention com.microsoft::BiasGelu com.microsoft::FastGelu
    com.microsoft::FusedMatMul com.microsoft::Gelu com.microsoft::MultiHeadAttention
    com.microsoft::GroupQueryAttention"""

# The CPU EP has few float16 compute kernels; ORT inserts Casts to float32 around the rest
# (InsertCastTransformer), so an FP16 model still runs on CPU, at float32 speed or slower.
_CPU_FP16 = _SHAPE_AND_CONTROL + """
    Attention Clip DequantizeLinear IsInf IsNaN LayerNormalization Max Min Mod QuantizeLinear
    RMSNormalization RotaryEmbedding Round Shrink Sign SimplifiedLayerNormalization SplitToSequence"""

_CPU_BF16 = _SHAPE_AND_CONTROL

# TensorRT builds its own engine: its ONNX parser's support matrix lists the FP16 layers.
_TRT_FP16 = _SHAPE_AND_CONTROL + """
    Abs Acos Acosh Add ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu
    Clip Conv ConvTranspose Cos Cosh CumSum DepthToSpace Div Dropout Einsum Elu Equal Erf Exp
    EyeLike Floor GRU Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
    HardSigmoid ImageScaler InstanceNormalization IsNaN LRN LSTM LeakyRelu Less LessOrEqual Log
    LogSoftmax LpNormalization LpPool MatMul Max MaxPool Mean Min Mul Neg Pad ParametricSoftplus Pow
    PRelu QuantizeLinear RandomUniform RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Resize RNN Round ScaledTanh Selu Sigmoid Sign Sin Sinh Size Softmax Softplus Softsign
    SpaceToDepth Sqrt Sub Sum Tan Tanh ThresholdedRelu Tile TopK Upsample Where"""


def _table(provider: str, dtype: str, ops: str, source: str) -> KernelTable:
    return KernelTable(provider, dtype, frozenset(ops.split()), source)


LOW_PRECISION_KERNELS: dict[tuple[str, str], KernelTable] = {
    (t.provider, t.dtype): t
    for t in [
        _table("cuda", "fp16", _CUDA_FP16, f"{ORT_KERNELS_DOC}, CUDAExecutionProvider, float16"),
        _table("cuda", "bf16", _CUDA_BF16, f"{ORT_KERNELS_DOC}, CUDAExecutionProvider, bfloat16"),
        _table("cpu", "fp16", _CPU_FP16, f"{ORT_KERNELS_DOC}, CPUExecutionProvider, float16"),
        _table("cpu", "bf16", _CPU_BF16, f"{ORT_KERNELS_DOC}, CPUExecutionProvider, bfloat16"),
        _table("tensorrt", "fp16", _TRT_FP16, f"{TRT_OPERATORS_DOC}, 'FP16' column"),
        _table("tensorrt", "bf16", _TRT_FP16, f"{TRT_OPERATORS_DOC}; BF16 assumed like FP16 "
               "(TensorRT >= 9 builds BF16 engines), to be rechecked"),
    ]
}

PROVIDERS = ("cuda", "cpu", "tensorrt")


def kernel_table(provider: str, dtype: str) -> KernelTable:
    key = (provider.strip().lower(), dtype.strip().lower())
    if key not in LOW_PRECISION_KERNELS:
        known = ", ".join(f"{p}/{d}" for p, d in LOW_PRECISION_KERNELS)
        raise UsageError(f"no kernel table for provider {provider!r} and dtype {dtype!r}; known: {known}")
    return LOW_PRECISION_KERNELS[key]


@dataclass(frozen=True)
class Float32Slots:
    """Inputs/outputs of an op that stay float32 even when the op runs in FP16/BF16."""

    op_type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    why: str
    source: str


FLOAT32_SLOTS: dict[str, Float32Slots] = {
    s.op_type: s
    for s in [
        Float32Slots("Resize", (1, 2), (), "roi and scales are tensor(float) in the CUDA kernel",
                     f"{ORT_KERNELS_DOC}, Resize: scales:tensor(float); onnxconverter-common "
                     "issues on Resize scales"),
        Float32Slots("Upsample", (1,), (), "scales is tensor(float)", f"{ORT_KERNELS_DOC}, Upsample"),
        Float32Slots("LayerNormalization", (), (1, 2), "Mean and InvStdDev are U = tensor(float)",
                     f"{ORT_KERNELS_DOC}, LayerNormalization 17+: U = tensor(float)"),
        Float32Slots("com.microsoft::SkipLayerNormalization", (), (1, 2),
                     "mean and inv_std_var are U (float)", f"{ORT_KERNELS_DOC}, SkipLayerNormalization"),
    ]
}


@dataclass(frozen=True)
class FloatFormat:
    name: str
    onnx_type: str
    max_finite: float
    min_normal: float
    min_subnormal: float
    source: str


FLOAT_FORMATS: dict[str, FloatFormat] = {
    "fp16": FloatFormat("fp16", "FLOAT16", 65504.0, 2.0**-14, 2.0**-24, IEEE_BINARY16),
    "bf16": FloatFormat("bf16", "BFLOAT16", 3.3895313892515355e38, 1.1754943508222875e-38,
                        9.183549615799121e-41, IEEE_BFLOAT16),
}

#: Activations whose magnitude exceeds this are kept in float32 by --auto (before any
#: accuracy check): NVIDIA ModelOpt AutoCast's default ``data_max`` threshold.
AUTOCAST_DATA_MAX = Constant(
    512.0, "NVIDIA TensorRT Model Optimizer AutoCast, --data_max default 512")
