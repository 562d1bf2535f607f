"""The chain check -> fix -> check -> convert, before/after, on the shipped examples and every real
export (issue 9's "must show" table).

    python benchmarks/chain.py                      # writes benchmarks/results/chain.md and .json
    python benchmarks/chain.py --only gpt2,resnet   # rows whose name contains one of these

Each model runs at batch 1 and at a large batch (LLMs: batch 1 and batch 8 x seq 512; the real
exports' position tables hold 64 positions, so their batch-1 row runs at seq 64). Per row:

- the estimated GPU time (``tclint check``, A100 FP16) of the input and of ``tclint fix``'s
  output, and the speedup;
- check's gate on the input and on the output (same options), and the findings left that fail it;
- the layers fix padded, fix's verification on onnxruntime CPU, and whether ``tclint convert``'s
  FP16 model of the output loads and runs on onnxruntime CPU.

Numbers are estimates of the cost model (no GPU is needed); the FP16 and verification columns
are real runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tclint import __version__, examples  # noqa: E402
from tclint.config import CheckOptions  # noqa: E402
from tclint.convert import convert_model  # noqa: E402
from tclint.errors import TclintError  # noqa: E402
from tclint.fix import fix_model  # noqa: E402
from tclint.lint import check_model  # noqa: E402
from tclint.verify import cpu_session, index_ranges  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

#: the shipped examples at the sizes `python -m tclint.examples NAME` and the README use
EXAMPLES = {
    "squeezenet": lambda: examples.squeezenet(batch="batch"),
    "resnet50": lambda: examples.resnet50(batch="batch"),
    "efficientnet": lambda: examples.efficientnet(batch="batch"),
    "densenet": lambda: examples.densenet(batch="batch"),
    "gpt2 (2 layers)": lambda: examples.gpt2(layers=2),
    "llama (2 layers, ffn 2730, vocab 32001)": lambda: examples.llama(
        layers=2, hidden=1024, heads=16, kv_heads=4, ffn=2730, vocab=32001),
    "llama_mlp": lambda: examples.llama_mlp(batch="batch", seq="seq"),
}
LLM = {"gpt2 (2 layers)", "llama (2 layers, ffn 2730, vocab 32001)", "llama_mlp"}

CNN_SIZES = ({"batch": 1}, {"batch": 32})
LLM_SIZES = ({"batch": 1, "seq": 128}, {"batch": 8, "seq": 512})
EXPORT_LLM_SIZES = ({"batch": 1, "seq": 64}, {"batch": 8, "seq": 512})


def _models(tmp: Path, only: list[str]):
    """(name, source, path, sizes) for every example and real export."""
    out = []
    for name, build in EXAMPLES.items():
        path = tmp / (name.split()[0] + ".onnx")
        out.append((name, "example", path, LLM_SIZES if name in LLM else CNN_SIZES, build))
    from tests.exports import EXPORTS, export_path

    for e in EXPORTS:
        llm = "seq" in e["symbolic_dims"]
        out.append((e["file"].removesuffix(".onnx"), f"export ({e['exporter']})",
                    export_path(e["file"]), EXPORT_LLM_SIZES if llm else CNN_SIZES, None))
    return [m for m in out if not only or any(o in m[0] for o in only)]


def _small_feeds(path: Path) -> dict:
    """Inputs at batch 1 (seq 16) for the FP16 load-and-run check."""
    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    tables = index_ranges(m.graph)  # ids drawn from the tables they index; other ints are masks
    rng = np.random.default_rng(0)
    feeds = {}
    for v in m.graph.input:
        if v.name in inits:
            continue
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (16 if d.dim_param == "seq" else 1)
                for d in t.shape.dim]
        if t.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            dtype = np.int64 if t.elem_type == onnx.TensorProto.INT64 else np.int32
            if v.name in tables:
                feeds[v.name] = rng.integers(0, tables[v.name], dims).astype(dtype)
            else:
                feeds[v.name] = np.ones(dims, dtype)
        else:
            feeds[v.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def run_row(name: str, source: str, path: Path, dims: dict[str, int], work: Path) -> dict:
    options = CheckOptions(dims=dims)
    row = {"model": name, "source": source, "dims": dims}
    started = time.perf_counter()
    try:
        before = check_model(path, options)
        out = work / f"{path.stem}.fixed.onnx"
        fixed = fix_model(path, out, options=options)
        after = check_model(out, options)
    except TclintError as exc:
        row["error"] = " ".join(str(exc).split())[:200]
        return row
    row.update({
        "estimated_us_before": round(before.summary["estimated_time_us"], 1),
        "estimated_us_after": round(after.summary["estimated_time_us"], 1),
        "speedup": round(before.summary["estimated_time_us"] / after.summary["estimated_time_us"], 4),
        "gate_before": before.gate_failed,
        "gate_after": after.gate_failed,
        "gate_findings_before": [f"{f.code} {f.path}" for f in before.findings if f.gate],
        "findings_left": [f"{f.code} {f.path}: {f.fix_note}" for f in after.findings if f.gate],
        "padding_findings_after": sum(1 for f in after.findings
                                      if f.fix_status in ("fix", "no-gain", "unsafe")),
        "padded_layers": len(fixed.changes),
        "inserted_nodes": len(fixed.inserted),
        "rounds": fixed.rounds,
        "verification": fixed.verification.message if fixed.verification else None,
        "verified": bool(fixed.verification and fixed.verification.ok),
    })
    try:
        fp16 = work / f"{path.stem}.fp16.onnx"
        convert_model(out, fp16)
        y = cpu_session(str(fp16)).run(None, _small_feeds(fp16))
        row["fp16_loads"] = bool(all(np.isfinite(np.asarray(a, np.float64)).all() for a in y))
    except Exception as exc:  # noqa: BLE001 - a conversion or onnxruntime failure is a result here
        row["fp16_loads"] = False
        row["fp16_error"] = " ".join(str(exc).split())[:200]
    row["seconds"] = round(time.perf_counter() - started, 2)
    return row


def _shape(dims: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in dims.items())


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | source | shape | est. us before | est. us after | speedup | gate before -> after "
        "| gate findings left | padded layers | verification | FP16 loads |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['source']} | {_shape(r['dims'])} | error: {r['error']} "
                         "| | | | | | | |")
            continue
        gate = f"{'FAIL' if r['gate_before'] else 'pass'} -> {'FAIL' if r['gate_after'] else 'pass'}"
        if r["gate_before"]:
            gate += f" ({len(r['gate_findings_before'])} fixed)"
        ver = "ok" if r["verified"] else (r["verification"] or "")[:40]
        if r["verified"] and r["verification"].startswith("ok: no node changed"):
            ver = "ok (unchanged)"
        lines.append(
            f"| {r['model']} | {r['source']} | {_shape(r['dims'])} | {r['estimated_us_before']:.1f} "
            f"| {r['estimated_us_after']:.1f} | x{r['speedup']:.3f} | {gate} | {len(r['findings_left'])} "
            f"| {r['padded_layers']} | {ver} | {'yes' if r.get('fp16_loads') else 'no'} |")
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if "error" not in r]
    return {
        "rows": len(rows),
        "errors": len(rows) - len(ok),
        "gate_failed_before": sum(r["gate_before"] for r in ok),
        "gate_failed_after": sum(r["gate_after"] for r in ok),
        "chain_closed": sum(1 for r in ok if not r["gate_after"] and r["verified"] and r.get("fp16_loads")),
        "padded_rows": sum(1 for r in ok if r["padded_layers"]),
        "slower_rows": sum(1 for r in ok if r["speedup"] < 1 - 1e-9),
        "best_speedup": max((r["speedup"] for r in ok), default=None),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated substrings of model names")
    p.add_argument("--out", default=str(RESULTS), help="folder for chain.md and chain.json")
    args = p.parse_args(argv)
    logging.getLogger("tclint").setLevel(logging.ERROR)  # convert's "no --inputs" warning per row
    only = [o for o in args.only.split(",") if o]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tclint-chain-") as tmp:
        tmp = Path(tmp)
        for name, source, path, sizes, build in _models(tmp, only):
            if build is not None:
                onnx.save(build(), str(path))
            for dims in sizes:
                work = tmp / f"{path.stem}_{'_'.join(map(str, dims.values()))}"
                work.mkdir()
                row = run_row(name, source, path, dims, work)
                rows.append(row)
                print(f"{name:44s} {_shape(dims):18s} "
                      + (row.get("error") or f"x{row['speedup']:.3f} gate {row['gate_before']}->"
                         f"{row['gate_after']} padded {row['padded_layers']} "
                         f"fp16 {row.get('fp16_loads')} ({row['seconds']} s)"), flush=True)
            if build is not None:
                path.unlink()
    result = {
        "command": "python benchmarks/chain.py" + (f" --only {args.only}" if args.only else ""),
        "tclint": __version__, "target": "a100 fp16 (defaults)",
        "machine": f"{platform.machine()}, {platform.python_version()}, no GPU needed (estimates)",
        "seconds": round(time.perf_counter() - started, 1),
        "summary": summary(rows), "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "chain.json").write_text(json.dumps(result, indent=1) + "\n")
    s = result["summary"]
    head = (f"`{result['command']}` ({result['seconds']} s): {s['rows']} model/shape rows; check's "
            f"gate failed on {s['gate_failed_before']} inputs and on {s['gate_failed_after']} of fix's "
            f"outputs; the chain closed (gate passes, verified, FP16 loads) on {s['chain_closed']}; "
            f"fix padded {s['padded_rows']} rows; ")
    head += f"{s['slower_rows']} rows estimated slower" if s["slower_rows"] else "no row estimated slower"
    if s["errors"]:
        head += f"; {s['errors']} errors"
    (out / "chain.md").write_text(head + ".\n\n" + markdown(rows))
    print(head)
    return 0 if not s["errors"] and not s["gate_failed_after"] and not s["slower_rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
