"""Facts about GPUs, precisions and kernels: the one place every such number lives.

Every row carries a ``source``: a public document, or a measurement that can be re-run
(``benchmarks/calibrate.py`` writes a JSON table that :func:`load_calibration` loads in place of
the documented cost constants). Nothing outside this module hard-codes a GPU or kernel number.
"""

from __future__ import annotations

import dataclasses
import json
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
    #: tiles resident per SM at once (one wave = sms * this)
    tiles_per_sm: Constant = _c(1, f"{PERF_GUIDE} (A100: 108 tiles per wave for 256x128); {ESTIMATE}")
    #: fixed cost of one kernel launch on the GPU timeline, seconds
    launch_overhead_s: Constant = _c(3e-6, f"CUDA kernel launch latency is ~2-5 us; {ESTIMATE}")
    #: first-layer conv on 3 channels: throughput factor vs. the C=4 NHWC kernel
    conv_c3_factor: Constant = _c(
        0.50, f"{CONV_GUIDE}: C=3 falls off the C=4 NHWC Tensor Core kernels; {ESTIMATE}")
    #: depthwise convs run on CUDA cores at this fraction of the memory roofline
    depthwise_efficiency: Constant = _c(0.60, f"{CONV_GUIDE} (depthwise is memory-bound); {ESTIMATE}")
    #: NCHW convs pay a transpose of input and output to NHWC around each Tensor Core conv
    nchw_transposes_per_conv: Constant = _c(
        2, "Paddle issue 19425 (14% of ResNet-50 FP16 time), TF benchmarks issue 237 (16%)")
    #: fraction of dense peak a non-Tensor-Core (CUDA core) GEMM reaches, relative to Tensor Cores
    no_tensor_core_factor: Constant = _c(0.125, "A100: 19.5 TFLOP/s FP32 vs 156 TF32 (datasheet)")
    #: source of the whole table
    source: str = "documented defaults (tclint.specs)"


DEFAULT_CONSTANTS = CostConstants()


def load_calibration(path: str | os.PathLike) -> tuple[CostConstants, dict]:
    """Load a measured table written by ``benchmarks/calibrate.py``.

    The file is JSON: ``{"gpu": ..., "driver": ..., "command": ..., "constants": {name: value}}``.
    Returns the constants (documented defaults for anything the file does not measure) and the
    file's metadata, so reports can say where the numbers came from.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read calibration table {path}: {exc}") from None
    measured = data.get("constants", {})
    where = f"measured: {data.get('gpu', '?')}, driver {data.get('driver', '?')}: {data.get('command', '?')}"
    changes = {}
    for f_ in dataclasses.fields(CostConstants):
        if f_.name in measured and isinstance(getattr(DEFAULT_CONSTANTS, f_.name), Constant):
            changes[f_.name] = Constant(float(measured[f_.name]), where)
    unknown = set(measured) - {f_.name for f_ in dataclasses.fields(CostConstants)}
    if unknown:
        raise UsageError(f"calibration table {path} has unknown constants: {', '.join(sorted(unknown))}")
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
