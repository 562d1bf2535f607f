"""Compare FP16 converters: tclint vs onnxconverter-common vs onnxruntime.transformers.float16.

For each generated model (benchmarks/_models.py) and converter: does the result load and run in
onnxruntime (CPU), how many Casts it added, max relative output error vs float32
(max |fp16 - fp32| / max |fp32| over all outputs), and conversion time (ModelProto in ->
ModelProto out, best of ``--repeat``). All converters use keep_io_types=True and their defaults
otherwise. Prints a table and writes JSON (with the exact command) to
benchmarks/results/convert_comparison.json.

    python benchmarks/compare_converters.py                # all models, real sizes
    python benchmarks/compare_converters.py --small        # tiny versions (seconds)
    python benchmarks/compare_converters.py --big          # also a >2 GB external-data MLP
    python benchmarks/compare_converters.py --auto         # also --auto vs the peer's auto mode
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _models as M  # noqa: E402
from tclint.passes.fp16 import ConvertFloat16Pass  # noqa: E402


# --------------------------------------------------------------------------------------------
def tclint_convert(proto: onnx.ModelProto) -> onnx.ModelProto:
    model = ir.from_proto(proto)
    ConvertFloat16Pass(dtype="fp16", provider="cuda", keep_io_types=True)(model)
    return ir.to_proto(model)


def occ_convert(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(proto, keep_io_types=True)


def ort_convert(proto: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers import float16

    return float16.convert_float_to_float16(proto, keep_io_types=True)


CONVERTERS = {
    "tclint": tclint_convert,
    "onnxconverter-common": occ_convert,
    "ort.transformers.float16": ort_convert,
}


def models(small: bool) -> dict:
    if small:
        return {
            "resnet50": lambda: M.resnet(blocks=(1, 1), width=8, image=32, classes=10),
            "vit_b16": lambda: M.vit(layers=1, width=32, heads=4, mlp=64, image=32, patch=8, classes=10),
            "gpt2": lambda: M.gpt2(layers=1, width=32, heads=4, vocab=100, seq=8),
            "resize": lambda: M.resize_net(channels=8, image=8),
            "if_loop": lambda: M.control_flow_net(width=16),
            "layernorm": lambda: M.layernorm_net(width=16, seq=4),
        }
    return {
        "resnet50": lambda: M.resnet(),
        "vit_b16": lambda: M.vit(),
        "gpt2(4 of 12 layers)": lambda: M.gpt2(layers=4),
        "resize": lambda: M.resize_net(),
        "if_loop": lambda: M.control_flow_net(),
        "layernorm": lambda: M.layernorm_net(),
    }


def feeds_for(proto: onnx.ModelProto, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in proto.graph.input:
        t = inp.type.tensor_type
        dims = [d.dim_value or 1 for d in t.shape.dim]
        if t.elem_type == onnx.TensorProto.INT64:
            feeds[inp.name] = rng.integers(0, 50, dims).astype(np.int64)
        else:
            feeds[inp.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def run(proto_or_path, feeds):
    src = proto_or_path if isinstance(proto_or_path, str) else proto_or_path.SerializeToString()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def casts(proto: onnx.ModelProto) -> int:
    n = sum(1 for x in proto.graph.node if x.op_type == "Cast")
    for node in proto.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                n += casts(onnx.helper.make_model(a.g))
    return n


def rel_error(ref, got) -> float:
    worst = 0.0
    for r, g in zip(ref, got):
        r = np.asarray(r, np.float64)
        g = np.asarray(g, np.float64)
        if not np.all(np.isfinite(g)):
            return float("inf")
        worst = max(worst, float(np.max(np.abs(r - g)) / (np.max(np.abs(r)) or 1.0)))
    return worst


def measure(name: str, proto: onnx.ModelProto, repeat: int, samples: int = 4) -> list[dict]:
    all_feeds = [feeds_for(proto, seed) for seed in range(samples)]
    refs = [run(proto, f) for f in all_feeds]
    base_casts = casts(proto)
    rows = []
    for conv_name, convert in CONVERTERS.items():
        row = {"model": name, "converter": conv_name}
        try:
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                out = convert(proto)
                times.append(time.perf_counter() - t0)
            row["convert_s"] = min(times)
            row["casts_added"] = casts(out) - base_casts
        except Exception as exc:  # noqa: BLE001 - a peer failing is a result
            row.update(ok=False, error=f"convert failed: {type(exc).__name__}: {str(exc)[:200]}")
            rows.append(row)
            continue
        try:
            errors = [rel_error(ref, run(out, f)) for ref, f in zip(refs, all_feeds)]
            row["ok"] = True
            row["max_rel_error"] = max(errors)
            row["mean_rel_error"] = float(np.mean(errors))
        except Exception as exc:  # noqa: BLE001
            row.update(ok=False, error=f"onnxruntime failed: {type(exc).__name__}: {str(exc)[:200]}")
        rows.append(row)
        print(f"  {name:22s} {conv_name:26s} {_fmt(row)}", file=sys.stderr, flush=True)
    return rows


def measure_big(tmp: Path) -> list[dict]:
    """>2 GB external-data MLP: tclint converts from the path (lazy, in a child process whose
    peak RSS is recorded); the peers get the loaded proto, as their API requires."""
    src = M.save_with_external_data(M.big_mlp(), tmp / "big.onnx")
    feeds = {"input": np.random.default_rng(0).standard_normal((1, 8192)).astype(np.float32)}
    ref = run(str(src), feeds)
    rows = []
    row = {"model": "mlp_2.2GB_external", "converter": "tclint"}
    try:
        # In a child process, to measure its peak memory (VmHWM: ru_maxrss would include this
        # parent's memory, inherited across fork+exec on Linux).
        code = (
            "import json, sys, time; sys.path.insert(0, sys.argv[3]);"
            "from tclint.convert import convert_model; t = time.perf_counter();"
            "r = convert_model(sys.argv[1], sys.argv[2], verify=False, external_data=True);"
            "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1];"
            "print(json.dumps({'s': time.perf_counter() - t, 'casts': r.casts_in_output - r.casts_in_input,"
            "'rss_mb': int(hwm) / 1024}))"
        )
        proc = subprocess.run([sys.executable, "-c", code, str(src), str(tmp / "big16.onnx"), str(ROOT)],
                              capture_output=True, text=True, check=True)
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(convert_s=child["s"], casts_added=child["casts"], peak_rss_mb=round(child["rss_mb"]))
        got = run(str(tmp / "big16.onnx"), feeds)
        row.update(ok=True, max_rel_error=rel_error(ref, got))
    except Exception as exc:  # noqa: BLE001
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    rows.append(row)
    peers = {
        "onnxconverter-common": "onnxconverter_common.float16",
        "ort.transformers.float16": "onnxruntime.transformers.float16",
    }
    for conv_name, module in peers.items():
        for extra in ({}, {"disable_shape_infer": True}):
            label = conv_name + (" (disable_shape_infer)" if extra else "")
            row = {"model": "mlp_2.2GB_external", "converter": label}
            try:
                import importlib

                convert = importlib.import_module(module).convert_float_to_float16
                proto = onnx.load(str(src))
                t0 = time.perf_counter()
                out = convert(proto, keep_io_types=True, **extra)
                row["convert_s"] = time.perf_counter() - t0
                del proto
                path = tmp / f"big_{len(rows)}.onnx"
                onnx.save_model(out, str(path), save_as_external_data=True, location=path.name + ".data")
                del out
                got = run(str(path), feeds)
                row.update(ok=True, casts_added=casts(onnx.load(str(path), load_external_data=False)),
                           max_rel_error=rel_error(ref, got))
            except Exception as exc:  # noqa: BLE001
                row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            rows.append(row)
    for r in rows:
        print(f"  {r['model']:22s} {r['converter']:26s} {_fmt(r)}", file=sys.stderr, flush=True)
    return rows


_OCC_AUTO = """
import json, sys, time, numpy as np, onnx
from onnxconverter_common.auto_mixed_precision import auto_convert_mixed_precision
proto = onnx.load(sys.argv[1])
feed = dict(np.load(sys.argv[2]))
t = time.perf_counter()
out = auto_convert_mixed_precision(proto, feed, rtol=float(sys.argv[3]), atol=float(sys.argv[4]),
                                   keep_io_types=True)
seconds = time.perf_counter() - t
onnx.save(out, sys.argv[5])
print(json.dumps({"s": seconds}))
"""


def measure_auto(tmp: Path, timeout_s: int) -> list[dict]:
    """--auto on a ResNet-50-sized CNN with one block whose activations exceed FP16's range.

    tclint: one float32 run + emulated FP16 validation on CPU, acceptance max|err|/max|ref| <= 1e-2.
    onnxconverter-common's auto_convert_mixed_precision gets the same criterion as allclose with
    rtol=1e-2 and atol=1e-2 * max|ref| (in a child process with a time limit).
    """
    from tclint.convert import convert_model

    proto = M.resnet(hot_stage=1)
    feeds = [feeds_for(proto, seed) for seed in range(2)]
    ref = run(proto, feeds[0])
    rows = []
    t0 = time.perf_counter()
    report = convert_model(ir.from_proto(proto), tmp / "tclint_auto.onnx", auto=True, inputs=feeds,
                           rtol=1e-2, atol=0.0, metric="max-rel")
    ranges = _float32_ranges(proto, feeds)
    rows.append({
        "model": "resnet50+hot block", "converter": "tclint --auto", "ok": True,
        "auto_s": time.perf_counter() - t0, "validation_runs": report.auto["validations"],
        "kept_fp32": [k["node"] for k in report.auto["keep"]],
        "within_tolerance": report.auto["within_tolerance"],
        "emulated_fp16_error_without_auto": report.auto["baseline_rel_error"],
        "emulated_fp16_error": report.auto["max_rel_error"],
        "max_rel_error": report.max_rel_error,
        "fp16_nodes_beyond_fp16_range": _overflowing(onnx.load(str(tmp / "tclint_auto.onnx")), ranges),
    })
    src, npz, out = tmp / "hot.onnx", tmp / "feed.npz", tmp / "occ_auto.onnx"
    onnx.save(proto, str(src))
    np.savez(npz, **feeds[0])
    atol = 1e-2 * max(float(np.max(np.abs(r))) for r in ref)
    row = {"model": "resnet50+hot block", "converter": "onnxconverter-common auto_convert_mixed_precision"}
    try:
        proc = subprocess.run([sys.executable, "-c", _OCC_AUTO, str(src), str(npz), "1e-2", str(atol), str(out)],
                              capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
        result = onnx.load(str(out))
        types = _value_types(result)
        hot = {n.name: types.get(n.output[0]) for n in result.graph.node if n.name.startswith("hot/")}
        row.update(ok=True, auto_s=json.loads(proc.stdout.strip().splitlines()[-1])["s"],
                   kept_fp32=[name for name, t in hot.items() if t == onnx.TensorProto.FLOAT],
                   max_rel_error=rel_error(ref, run(result, feeds[0])),
                   fp16_nodes_beyond_fp16_range=_overflowing(result, ranges),
                   note="validated on onnxruntime CPU, whose float32 fallback for FP16 ops hides "
                        "the overflow that FP16 kernels (GPU) would hit")
    except subprocess.TimeoutExpired:
        row.update(ok=False, error=f"did not finish in {timeout_s} s")
    except Exception as exc:  # noqa: BLE001
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
    rows.append(row)
    for r in rows:
        print(f"  {r['model']:22s} {r['converter']:26s} {r.get('auto_s', float('nan')):.1f} s "
              f"kept {r.get('kept_fp32')} {r.get('error', '')}", file=sys.stderr, flush=True)
    return rows


def _float32_ranges(proto: onnx.ModelProto, feeds: list[dict]) -> dict[str, float]:
    """Max |value| of every node's first output in float32 (one run per input)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    names = [n.output[0] for n in model.graph.node]
    known = {o.name for o in model.graph.output}
    for name in names:
        if name not in known:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, 0, None))
    model = onnx.shape_inference.infer_shapes(model)
    outs = [o.name for o in model.graph.output]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ranges: dict[str, float] = {}
    for f in feeds:
        for name, value in zip(outs, sess.run(None, f)):
            a = np.asarray(value)
            if np.issubdtype(a.dtype, np.floating) and a.size:
                ranges[name] = max(ranges.get(name, 0.0), float(np.max(np.abs(a))))
    return ranges


def _overflowing(result: onnx.ModelProto, ranges: dict[str, float]) -> list[str]:
    """Nodes left in FP16 whose float32 values exceed 65504 (inf on an FP16 kernel)."""
    types = _value_types(result)
    return [n.name for n in result.graph.node
            if types.get(n.output[0]) == onnx.TensorProto.FLOAT16 and ranges.get(n.output[0], 0) > 65504]


def _value_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    return {v.name: v.type.tensor_type.elem_type
            for v in [*inferred.graph.value_info, *inferred.graph.output]}


def _fmt(row: dict) -> str:
    if not row.get("ok"):
        return "FAILED " + row.get("error", "")
    return (f"casts +{row['casts_added']:<4d} rel err {row['max_rel_error']:.2e}  "
            f"{row['convert_s'] * 1000:8.1f} ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny models (a smoke run)")
    parser.add_argument("--big", action="store_true", help="also the >2 GB external-data model")
    parser.add_argument("--auto", action="store_true",
                        help="also --auto vs onnxconverter-common's auto_convert_mixed_precision")
    parser.add_argument("--auto-timeout", type=int, default=900, help="seconds for the peer's --auto")
    parser.add_argument("--repeat", type=int, default=3, help="conversion timing: best of N")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/convert_comparison.json"))
    args = parser.parse_args(argv)
    rows = []
    for name, build in models(args.small).items():
        rows += measure(name, build(), args.repeat)
    if args.big:
        with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks/results") as tmp:
            rows += measure_big(Path(tmp))
    auto_rows = []
    if args.auto:
        with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks/results") as tmp:
            auto_rows = measure_auto(Path(tmp), args.auto_timeout)
    from tabulate import tabulate

    table = [[r["model"], r["converter"], "yes" if r.get("ok") else "NO",
              r.get("casts_added", "-"),
              f"{r['max_rel_error']:.2e}" if "max_rel_error" in r else "-",
              f"{r['convert_s']:.3f}" if "convert_s" in r else "-"] for r in rows]
    print(tabulate(table, headers=["model", "converter", "loads+runs in ORT", "Casts added",
                                   "max rel error", "convert s"]))
    if auto_rows:
        print()
        print(tabulate([[r["converter"], f"{r['auto_s']:.1f}" if "auto_s" in r else r.get("error"),
                         ", ".join(r.get("kept_fp32", [])) or "-",
                         f"{r['max_rel_error']:.2e}" if "max_rel_error" in r else "-"] for r in auto_rows],
                       headers=["--auto on resnet50+hot block", "seconds", "kept float32",
                                "max rel error (ORT CPU)"]))
    import onnxconverter_common

    data = {
        "command": "python benchmarks/compare_converters.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}, CPU only",
        "versions": {"onnx": onnx.__version__, "onnx_ir": ir.__version__,
                     "onnxruntime": ort.__version__, "onnxconverter_common": onnxconverter_common.__version__},
        "metric_notes": "max rel error = max over 4 random inputs of max|fp16-fp32|/max|fp32| (mean_rel_error: "
                        "their mean), onnxruntime CPU; the >2 GB model: one input; "
                        "convert_s = best of --repeat, ModelProto in -> ModelProto out (the >2 GB model: "
                        "file in -> file out for tclint, one run; peak_rss_mb of that conversion)",
        "results": rows,
        "auto": auto_rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception:  # pragma: no cover
        traceback.print_exc()
        sys.exit(1)
