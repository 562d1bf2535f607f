"""Measure the cost model's constants on this machine's GPU and write a table tclint can load.

    python benchmarks/calibrate.py --out benchmarks/results/bench_calibration_h100.json
    tclint check model.onnx --calibration benchmarks/results/bench_calibration_h100.json

It times, with onnxruntime's CUDA provider (IO binding, warm-up, cuDNN autotuning), a sweep of
FP16 GEMMs whose K or N is aligned, misaligned below 16 bytes, aligned to 16 bytes but not to the
GPU's required tier, and aligned to that tier but not to the 128-byte tier; a first-layer conv
with C=3 vs C=4; a large element-wise Add (bandwidth); and chains of tiny kernels (launch
overhead). The JSON it writes is ``{"gpu", "driver", "command", "constants": {...}, ...}``,
with constant names from ``tclint.specs.CostConstants``, which ``tclint.specs.load_calibration``
reads.

Without a GPU it refuses (exit 2): numbers measured on a CPU say nothing about Tensor Cores.
``--allow-cpu`` runs the same sweep, smaller, on the CPU provider only to test the plumbing; the
table then says ``"gpu": "cpu ..."`` and leaves out the constants that compare with a GPU's peak.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tclint.bench import bench_models, cuda_available, gpu_info
from tclint.errors import TclintError
from tclint.io import write_text
from tclint.specs import GPUS, PRECISIONS, get_gpu

DTYPES = {"fp16": (np.float16, TensorProto.FLOAT16), "fp32": (np.float32, TensorProto.FLOAT)}


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "calibration",
        inputs,
        outputs,
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def gemm(m: int, n: int, k: int, dtype: str) -> onnx.ModelProto:
    np_dtype, elem = DTYPES[dtype]
    w = (np.random.default_rng(0).standard_normal((k, n)) / np.sqrt(k)).astype(np_dtype)
    return _model(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [helper.make_tensor_value_info("x", elem, [m, k])],
        [helper.make_tensor_value_info("y", elem, [m, n])],
        {"W": w},
    )


def conv(batch: int, c: int, k: int, size: int, dtype: str) -> onnx.ModelProto:
    np_dtype, elem = DTYPES[dtype]
    w = (np.random.default_rng(0).standard_normal((k, c, 7, 7)) / np.sqrt(c * 49)).astype(np_dtype)
    return _model(
        [helper.make_node("Conv", ["x", "W"], ["y"], strides=[2, 2], pads=[3, 3, 3, 3])],
        [helper.make_tensor_value_info("x", elem, [batch, c, size, size])],
        [helper.make_tensor_value_info("y", elem, [batch, k, size // 2, size // 2])],
        {"W": w},
    )


def add(n: int, dtype: str) -> onnx.ModelProto:
    np_dtype, elem = DTYPES[dtype]
    return _model(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [helper.make_tensor_value_info("x", elem, [n])],
        [helper.make_tensor_value_info("y", elem, [n])],
        {"one": np.ones(1, np_dtype)},
    )


def relu_chain(length: int, dtype: str) -> onnx.ModelProto:
    _, elem = DTYPES[dtype]
    names = ["x"] + [f"r{i}" for i in range(length)]
    nodes = [helper.make_node("Relu", [names[i]], [names[i + 1]]) for i in range(length)]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", elem, [8])],
        [helper.make_tensor_value_info(names[-1], elem, [8])],
        {},
    )


class Timer:
    def __init__(self, provider: str, warmup: int, runs: int, folder: Path):
        self.provider, self.warmup, self.runs, self.folder = provider, warmup, runs, folder
        self.count = 0

    def median(self, model: onnx.ModelProto) -> float:
        self.count += 1
        path = self.folder / f"m{self.count}.onnx"
        onnx.save(model, str(path))
        report = bench_models(
            [str(path)], provider=self.provider, warmup=self.warmup, runs=self.runs
        )
        path.unlink()
        return report.models[0].latency.median_s


def sweep(
    timer: Timer, *, dtype: str, sizes: list[int], tier_elems: int, log
) -> tuple[dict, list, float]:
    """Return (constants, measurements, best aligned FLOP/s)."""
    min_elems = max(1, int(16 // PRECISIONS[dtype].bytes))  # 16 bytes
    strict_elems = max(1, int(128 // PRECISIONS[dtype].bytes))
    measurements = []
    factors = {
        "misaligned_minimum_factor": [],
        "misaligned_tier_factor": [],
        "misaligned_strict_factor": [],
    }
    best = 0.0
    for s in sizes:
        m = s
        base_t = timer.median(gemm(m, s, s, dtype))
        base_rate = 2 * m * s * s / base_t
        best = max(best, base_rate)
        measurements.append(
            {
                "kind": "gemm",
                "m": m,
                "n": s,
                "k": s,
                "dtype": dtype,
                "median_s": base_t,
                "flops_per_s": base_rate,
            }
        )
        log(f"gemm {m}x{s}x{s}: {base_t * 1e3:.3f} ms, {base_rate / 1e12:.2f} TFLOP/s")
        variants = {
            "misaligned_minimum_factor": s - 1,  # not a multiple of 16 bytes
            "misaligned_tier_factor": s + min_elems if tier_elems > min_elems else None,
            "misaligned_strict_factor": s + tier_elems if strict_elems > tier_elems else None,
        }
        for name, dim in variants.items():
            if dim is None:
                continue
            for axis in ("k", "n"):
                n, k = (s, dim) if axis == "k" else (dim, s)
                t = timer.median(gemm(m, n, k, dtype))
                rate = 2 * m * n * k / t
                factors[name].append(rate / base_rate)
                measurements.append(
                    {
                        "kind": "gemm",
                        "m": m,
                        "n": n,
                        "k": k,
                        "dtype": dtype,
                        "median_s": t,
                        "flops_per_s": rate,
                        "relative_to_aligned": rate / base_rate,
                    }
                )
                log(f"gemm {m}x{n}x{k} ({name}, {axis}): {rate / base_rate:.3f} of aligned")
    constants = {name: statistics.median(v) for name, v in factors.items() if v}
    return constants, measurements, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON table to write")
    parser.add_argument(
        "--arch",
        default=None,
        help=f"GPU in tclint.specs ({', '.join(GPUS)}); default: from the GPU name",
    )
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated GEMM sizes (default 2048,4096,8192; CPU 256,512)",
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="run on CPU to test the plumbing (numbers are not a GPU's)",
    )
    args = parser.parse_args(argv)

    on_gpu = cuda_available()
    if not on_gpu and not args.allow_cpu:
        print(
            "calibrate: error: no onnxruntime CUDA session can be created here; calibration measures a GPU "
            "(--allow-cpu runs it on CPU only to test the plumbing)",
            file=sys.stderr,
        )
        return 2
    provider = "cuda" if on_gpu else "cpu"
    info = gpu_info() if on_gpu else None
    gpu_name = info[0] if info else ("GPU (nvidia-smi not found)" if on_gpu else None)
    arch = args.arch
    if arch is None and gpu_name:
        arch = next((g for g in GPUS if g in gpu_name.lower().replace(" ", "")), None)
    spec = get_gpu(arch) if arch else None
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([2048, 4096, 8192] if on_gpu else [256, 512])
    )
    tier_elems = (
        max(1, int(spec.required_tier.bytes // PRECISIONS[args.dtype].bytes))
        if spec
        else max(1, int(32 // PRECISIONS[args.dtype].bytes))
    )

    def log(text: str) -> None:
        print(f"calibrate: {text}", file=sys.stderr)

    log(
        f"provider {provider}, {gpu_name or 'cpu'}, arch {arch or 'unknown'}, dtype {args.dtype}, sizes {sizes}"
    )
    with tempfile.TemporaryDirectory() as folder:
        timer = Timer(provider, args.warmup, args.runs, Path(folder))
        constants, measurements, best_rate = sweep(
            timer, dtype=args.dtype, sizes=sizes, tier_elems=tier_elems, log=log
        )

        # First-layer conv: C=3 vs C=4, throughput in useful FLOPs.
        batch, size = (32, 224) if on_gpu else (1, 112)
        t3 = timer.median(conv(batch, 3, 64, size, args.dtype))
        t4 = timer.median(conv(batch, 4, 64, size, args.dtype))
        constants["conv_c3_factor"] = (3 / t3) / (4 / t4)
        measurements += [
            {"kind": "conv", "c": c, "k": 64, "batch": batch, "size": size, "median_s": t}
            for c, t in ((3, t3), (4, t4))
        ]
        log(f"conv C=3 vs C=4: factor {constants['conv_c3_factor']:.3f}")

        # Launch overhead: the cost of one more tiny kernel in a chain.
        short, long = (
            timer.median(relu_chain(1, args.dtype)),
            timer.median(relu_chain(65, args.dtype)),
        )
        constants["launch_overhead_s"] = max(0.0, (long - short) / 64)
        measurements.append({"kind": "launch", "chain_1_s": short, "chain_65_s": long})
        log(f"launch overhead: {constants['launch_overhead_s'] * 1e6:.2f} us per kernel")

        notes = []
        if spec and on_gpu:
            peak = spec.peak_tflops.get(args.dtype, spec.peak_tflops.get("fp16")) * 1e12
            constants["gemm_efficiency"] = min(1.0, best_rate / peak)
            n = (1 << 28) if on_gpu else (1 << 22)
            t = timer.median(add(n, args.dtype))
            achieved = 2 * n * PRECISIONS[args.dtype].bytes / t
            constants["bandwidth_efficiency"] = min(1.0, achieved / (spec.dram_gbs * 1e9))
            measurements.append(
                {"kind": "bandwidth", "elements": n, "median_s": t, "bytes_per_s": achieved}
            )
            log(
                f"gemm efficiency {constants['gemm_efficiency']:.3f}, bandwidth efficiency "
                f"{constants['bandwidth_efficiency']:.3f} of {spec.name} datasheet peaks"
            )
        else:
            notes.append(
                "gemm_efficiency and bandwidth_efficiency not measured: they compare with a GPU's "
                "datasheet peak (needs a GPU and a known --arch)"
            )

    command = "python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(__file__)] + list(argv or sys.argv[1:])
    )
    table = {
        "gpu": gpu_name or f"cpu (not a GPU: plumbing test) {_cpu()}",
        "driver": info[1] if info else "none",
        "arch": spec.name if spec else None,
        "provider": provider,
        "dtype": args.dtype,
        "onnxruntime": __import__("onnxruntime").__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "notes": notes,
        "constants": constants,
        "measurements": measurements,
    }
    try:
        write_text(args.out, json.dumps(table, indent=2) + "\n")
    except TclintError as exc:
        print(f"calibrate: error: {exc}", file=sys.stderr)
        return 2
    log(f"wrote {args.out}")
    return 0


def _cpu() -> str:
    from tclint.bench import _cpu_name

    return _cpu_name()


if __name__ == "__main__":
    sys.exit(main())
