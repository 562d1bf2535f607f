"""Compare INT8 quantizers on real ResNet exports: tclint quantize vs onnxruntime's
quantize_static used directly vs NVIDIA ModelOpt's ONNX INT8 (where it runs on CPU).

Each contender runs as a whole process, as a user would run it, timed by wall clock (best of
``--repeat``, interleaved so machine load hits all alike), on the same 16 random calibration
inputs (the issue's anchor: quantize_static, QDQ, per-channel, MinMax, 16 random inputs on a
ResNet-50: 3.7 s, logits cosine >= 0.9998 vs FP32 on fresh inputs). Every output is then
judged the same way here: it loads and runs in onnxruntime (CPU), logits cosine vs the float
model on 8 fresh random inputs (mean and worst), top-1 agreement, whether every zero point is
0 (symmetric, as TensorRT wants), and how many weights are int8 per channel.

    python benchmarks/compare_quantizers.py                                # the repo's export
    python benchmarks/compare_quantizers.py --model /tmp/resnet50.onnx     # + a full ResNet-50
    python benchmarks/compare_quantizers.py --modelopt-python /path/to/python

A full-size ResNet-50 (random weights, ~100 MB, kept out of the repo) comes from
``/work/exportenv/venv/bin/python benchmarks/export_resnet50.py /tmp/resnet50.onnx``
(``--torchvision-init`` for torchvision's own initialisation). ModelOpt pulls torch, so it
lives in its own environment; ``--modelopt-python`` names that interpreter (default: found
on PATH as ``python3`` having ``modelopt`` installed, else recorded as not installed).
Writes JSON (with the commands) to benchmarks/results/quantize_comparison.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "tests" / "data" / "exports" / "resnet_dynamo.onnx"
RESULTS = ROOT / "benchmarks" / "results" / "quantize_comparison.json"
CALIBRATION_SAMPLES = 16
EVAL_SAMPLES = 8

#: quantize_static exactly as peers.md / the issue's anchor calls it
ORT_DIRECT = textwrap.dedent("""
    import sys, numpy as np
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    src, out, data = sys.argv[1:4]
    symmetric = len(sys.argv) > 4
    arrays = np.load(data)
    names = list(arrays.files)
    n = arrays[names[0]].shape[0]
    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0
        def get_next(self):
            if self.i == n:
                return None
            self.i += 1
            return {k: arrays[k][self.i - 1] for k in names}
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else None
    quantize_static(src, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
""")


def contenders(modelopt_python: str | None) -> dict[str, callable]:
    tclint = [sys.executable, "-m", "tclint", "quantize"]

    def c_tclint(src, out, calib, evald):
        return tclint + [src, "-o", out, "--calibration-data", calib, "--eval-data", evald,
                         "--format", "json"]

    def c_tclint_no_layers(src, out, calib, evald):
        return c_tclint(src, out, calib, evald) + ["--no-layer-report"]

    def c_tclint_ort_placement(src, out, calib, evald):
        return c_tclint(src, out, calib, evald) + ["--placement", "onnxruntime"]

    def c_ort(src, out, calib, evald):
        return [sys.executable, "-c", ORT_DIRECT, src, out, calib]

    def c_ort_sym(src, out, calib, evald):
        return [sys.executable, "-c", ORT_DIRECT, src, out, calib, "symmetric"]

    out = {
        "tclint quantize": c_tclint,
        "tclint quantize --no-layer-report": c_tclint_no_layers,
        "tclint quantize --placement onnxruntime": c_tclint_ort_placement,
        "quantize_static (anchor call)": c_ort,
        "quantize_static + symmetric": c_ort_sym,
    }
    if modelopt_python:
        def c_modelopt(src, out, calib, evald, *extra):
            # ModelOpt's npz has no extra sample axis: [samples, ...] split by the shapes given
            mo_calib = str(Path(calib).with_name("calib_modelopt.npz"))
            shapes = Path(calib).with_name("shapes.txt").read_text().strip()
            return [modelopt_python, "-m", "modelopt.onnx.quantization", "--onnx_path", src,
                    "--quantize_mode", "int8", "--calibration_data_path", mo_calib,
                    "--calibration_shapes", shapes, "--calibration_method", "max",
                    "--calibration_eps", "cpu", "--output_path", out, *extra]

        def c_modelopt_fp32(src, out, calib, evald):
            return c_modelopt(src, out, calib, evald, "--high_precision_dtype", "fp32")
        out["modelopt int8 (max, cpu; fp16 elsewhere, its default)"] = c_modelopt
        out["modelopt int8 (max, cpu, --high_precision_dtype fp32)"] = c_modelopt_fp32
    return out


def find_modelopt(explicit: str | None) -> tuple[str | None, str]:
    candidates = [explicit] if explicit else [sys.executable, shutil.which("python3"),
                                              "/work/exportenv/venv/bin/python"]
    for py in candidates:
        if not py or not Path(py).exists():
            continue
        probe = subprocess.run([py, "-c", "import modelopt, modelopt.onnx.quantization as q; "
                                "print(modelopt.__version__)"], check=False,
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return py, f"nvidia-modelopt {probe.stdout.strip()} ({py})"
    return None, ("not installed in any of " + ", ".join(str(c) for c in candidates if c)
                  + "; pass --modelopt-python")


def make_data(src: Path, work: Path) -> tuple[Path, Path, str, list[dict]]:
    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((CALIBRATION_SAMPLES, *shape)).astype(np.float32)
    fresh = np.random.default_rng(1).standard_normal((EVAL_SAMPLES, *shape)).astype(np.float32)
    np.savez(work / "calib.npz", **{inp.name: calib})
    np.savez(work / "calib_modelopt.npz", **{inp.name: calib.reshape(-1, *shape[1:])})
    (work / "shapes.txt").write_text(f"{inp.name}:{'x'.join(map(str, shape))}")
    np.savez(work / "eval.npz", **{inp.name: fresh})
    return work / "calib.npz", work / "eval.npz", inp.name, [{inp.name: x} for x in fresh]


def judge(src: Path, out: Path, feeds: list[dict]) -> dict:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    ref = ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
    try:
        got = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        return {"loads": False, "error": " ".join(str(exc).split())[:200]}
    cos, top1 = [], []
    for f in feeds:
        a = ref.run(None, f)[0].astype(np.float64)
        b = got.run(None, f)[0].astype(np.float64)
        cos.append(float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)))
        top1.append(float(np.mean(a.argmax(-1) == b.argmax(-1))))
    m = onnx.load(str(out))
    inits = {i.name: i for i in m.graph.initializer}
    zero_points = [numpy_helper.to_array(inits[n.input[2]]) for n in m.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2
                   and n.input[2] in inits]
    per_channel = 0
    producer = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        src = n.input[0]
        stored = src in inits and inits[src].data_type == onnx.TensorProto.INT8
        # ModelOpt keeps float weights under Q -> DQ (TensorRT folds them): count those too
        fake = src in producer and producer[src].op_type == "QuantizeLinear" and \
            producer[src].input[0] in inits
        scale = inits.get(n.input[1])
        if (stored or fake) and scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1:
            per_channel += 1
    ops = [n.op_type for n in m.graph.node]
    return {
        "loads": True,
        "cosine_mean": float(np.mean(cos)),
        "cosine_min": float(np.min(cos)),
        "top1_agreement": float(np.mean(top1)),
        "symmetric": all(not z.any() for z in zero_points),
        "int8_per_channel_weights": per_channel,
        "quantize_linear": ops.count("QuantizeLinear"),
        "dequantize_linear": ops.count("DequantizeLinear"),
    }


def run_all(models: list[Path], repeat: int, modelopt_python: str | None) -> list[dict]:
    rows = []
    cmds = contenders(modelopt_python)
    for src in models:
        with tempfile.TemporaryDirectory(prefix="tclint-qcmp-") as tmp:
            work = Path(tmp)
            calib, evald, _, feeds = make_data(src, work)
            times: dict[str, list[float]] = {k: [] for k in cmds}
            results: dict[str, dict] = {}
            for _ in range(repeat):
                for name, make in cmds.items():  # interleaved
                    out = work / f"{abs(hash(name))}.onnx"
                    cmd = make(str(src), str(out), str(calib), str(evald))
                    t = time.perf_counter()
                    proc = subprocess.run(cmd, check=False, capture_output=True, text=True,
                                          cwd=work,
                                          env={**os.environ, "PYTHONPATH": str(ROOT)})
                    times[name].append(time.perf_counter() - t)
                    res = {"command": " ".join(cmd[:3] + ["..."] if "-c" in cmd else cmd),
                           "returncode": proc.returncode}
                    if proc.returncode not in (0, 1) or not out.exists():
                        res["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
                    else:
                        res.update(judge(src, out, feeds))
                        if name.startswith("tclint"):
                            report = json.loads(proc.stdout)
                            res["tclint_reported_cosine"] = report["cosine"]
                            res["tclint_seconds_in_process"] = report["seconds"]
                    results[name] = res
            for name in cmds:
                rows.append({"model": str(src.relative_to(ROOT)) if src.is_relative_to(ROOT)
                             else src.name, "quantizer": name,
                             "seconds_best": min(times[name]), "seconds_all": times[name],
                             **results[name]})
    return rows


def table(rows: list[dict]) -> str:
    from tabulate import tabulate

    body = []
    for r in rows:
        if r.get("loads"):
            body.append((r["model"], r["quantizer"], f"{r['seconds_best']:.1f}",
                         f"{r['cosine_mean']:.6f}", f"{r['cosine_min']:.6f}",
                         f"{100 * r['top1_agreement']:.0f}%", "yes" if r["symmetric"] else "no",
                         r["int8_per_channel_weights"]))
        else:
            body.append((r["model"], r["quantizer"], f"{r['seconds_best']:.1f}",
                         "failed: " + r.get("error", "?")[:60], "", "", "", ""))
    return tabulate(body, headers=["model", "quantizer", "s (whole process)", "cosine",
                                   "worst", "top-1", "zero points 0", "per-channel weights"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[], type=Path,
                    help="also this ResNet-style export (one float image input)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--modelopt-python", help="interpreter with nvidia-modelopt installed")
    ap.add_argument("--no-write", action="store_true", help="do not write the JSON results")
    args = ap.parse_args(argv)
    modelopt_python, modelopt = find_modelopt(args.modelopt_python)
    rows = run_all([EXPORT, *args.model], args.repeat, modelopt_python)
    print(table(rows))
    print(f"\nModelOpt: {modelopt}")
    if not args.no_write:
        RESULTS.write_text(json.dumps({
            "command": " ".join(["python", "benchmarks/compare_quantizers.py",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "machine": {"cpu": platform.processor() or platform.machine(),
                        "cores": os.cpu_count(), "python": platform.python_version(),
                        "onnxruntime": ort.__version__,
                        "load_average": os.getloadavg()},
            "modelopt": modelopt,
            "calibration_samples": CALIBRATION_SAMPLES,
            "eval_samples": EVAL_SAMPLES,
            "rows": rows,
        }, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
