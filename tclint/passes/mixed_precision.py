"""Accuracy-driven mixed precision (``tclint convert --auto``): which nodes must stay float32.

Instead of bisecting with a full conversion and a fresh session per attempt (onnxconverter-common's
``auto_convert_mixed_precision``), it:

1. decides the candidate low-precision nodes with a dry run of :class:`ConvertFloat16Pass`;
2. runs the float32 model once with every intermediate exposed: activation ranges per node;
   nodes whose values exceed the FP16 range are kept float32 outright (they would overflow);
3. runs an *emulated* FP16 model on onnxruntime CPU: the float32 graph with a Cast round trip
   (float32 -> fp16 -> float32) after every low-precision node's output and on its constant
   inputs, so storage rounding and overflow are reproduced even where the CPU has no FP16 kernel
   (ORT's own CPU fallback would compute runs of nodes in float32 without rounding between them);
4. checks the outputs against float32 with ``rtol``/``atol``; when they fail, ranks the nodes by
   the error each one adds (its output error minus its inputs' error, from the same run) and
   keeps the worst 1, 2, 4, ... in float32, re-validating each time (a handful of runs). When
   keeping more stops reducing the error by at least 10 %, the remaining error is rounding spread
   over the whole graph: it stops and reports the best smaller set as not within tolerance,
   instead of keeping everything in float32.

Subgraph nodes (If/Loop/Scan bodies) are not emulated individually: they follow the pass's own
decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass

from tclint import specs
from tclint.passes.fp16 import LOW_TYPES, ConvertFloat16Pass, infer_types

logger = logging.getLogger(__name__)

FLOAT = ir.DataType.FLOAT


@dataclass(frozen=True)
class NodeMeasure:
    name: str
    op_type: str
    max_abs: float
    #: relative error of the emulated low-precision output vs float32 (last validation run)
    error: float
    #: error this node adds over its inputs
    added_error: float


@dataclass(frozen=True)
class AutoResult:
    #: node name -> why it stays float32
    keep: tuple[tuple[str, str], ...]
    validations: int
    within_tolerance: bool
    max_rel_error: float
    #: emulated error with every candidate node in low precision (what plain conversion gives)
    baseline_rel_error: float
    seconds: float
    top_nodes: tuple[NodeMeasure, ...]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["keep"] = [{"node": n, "why": w} for n, w in self.keep]
        return d


def find_fp32_nodes(
    model: ir.Model,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    dtype: str = "fp16",
    provider: str = "cuda",
    keep_io_types: bool = True,
    block_ops: Iterable[str] = (),
    block_nodes: Iterable[str] = (),
    rtol: float = 1e-2,
    atol: float = 1e-3,
    metric: str = "allclose",
    data_max: float | None = None,
    max_validations: int = 8,
    progress: Callable[[str], None] | None = None,
) -> AutoResult:
    """Nodes of ``model`` to keep in float32 so that ``dtype`` outputs stay within tolerance.

    ``model`` gets names for unnamed nodes (so the keep-list refers to stable names) and
    inferred types; otherwise it is not modified.
    """
    from tclint.convert import _errors, _run_session, _session, within_tolerance

    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    feeds = list(feeds)
    NameFixPass()(model)
    if any(v.dtype is None for n in model.graph for v in n.outputs):
        infer_types(model)
    low_type = LOW_TYPES[dtype]
    fmt = specs.FLOAT_FORMATS[dtype]
    data_max = specs.AUTOCAST_DATA_MAX.value if data_max is None else data_max

    say("deciding low-precision candidates")
    trial = model.clone()
    dry = ConvertFloat16Pass(dtype=dtype, provider=provider, keep_io_types=keep_io_types,
                             block_ops=block_ops, block_nodes=block_nodes)
    dry(trial)
    low = {n for n in dry.stats.low_precision_nodes if n}
    nodes = {n.name: n for n in model.graph if n.name in low}
    probes = {name: _first_float_output(n) for name, n in nodes.items()}
    probes = {k: v for k, v in probes.items() if v is not None}

    say("float32 run with intermediates exposed")
    ref_model = _exposed(model.clone(), [v.name for v in probes.values()])
    ref_session = _session(ref_model, "float32 model")
    ref_runs = [_run_session(ref_session, f) for f in feeds]
    n_out = len(model.graph.outputs)
    ref_final = [r[:n_out] for r in ref_runs]
    probe_names = list(probes)
    max_abs = {name: 0.0 for name in probe_names}
    for run in ref_runs:
        for name, array in zip(probe_names, run[n_out:]):
            a = np.asarray(array, np.float64)
            finite = a[np.isfinite(a)]
            if finite.size:
                max_abs[name] = max(max_abs[name], float(np.max(np.abs(finite))))

    keep: dict[str, str] = {}
    producer = {id(v): name for name, v in probes.items()}
    for name in probe_names:
        if max_abs[name] > fmt.max_finite:
            keep[name] = (f"overflow: float32 values reach {max_abs[name]:.3g} > "
                          f"{fmt.name} max {fmt.max_finite:g}")
            continue
        big_in = [max_abs[producer[id(v)]] for v in nodes[name].inputs
                  if v is not None and id(v) in producer]
        if big_in and max(big_in) > fmt.max_finite:
            keep[name] = (f"overflow: its input reaches {max(big_in):.3g} > "
                          f"{fmt.name} max {fmt.max_finite:g}")
    say("emulated all-low-precision run (baseline)")
    emu = _emulated(model.clone(), low, low_type, fmt, [])
    session = _session(emu, "emulated model", disable_optimizations=True)
    baseline = _errors(ref_final, [_run_session(session, f)[:n_out] for f in feeds])[1]
    validations = 0
    step = 1
    measures: dict[str, NodeMeasure] = {}
    ok = False
    rel = float("inf")
    best: tuple[float, dict[str, str]] | None = None
    while validations < max_validations:
        validations += 1
        say(f"validation run {validations}: {len(keep)} nodes kept float32")
        emu = _emulated(model.clone(), low - set(keep), low_type, fmt, [v.name for v in probes.values()])
        session = _session(emu, "emulated model", disable_optimizations=True)
        runs = [_run_session(session, f) for f in feeds]
        final = [r[:n_out] for r in runs]
        ok = within_tolerance(ref_final, final, rtol=rtol, atol=atol, metric=metric)
        rel = _errors(ref_final, final)[1]
        measures = _measure(nodes, probes, probe_names, max_abs, ref_runs, runs, n_out)
        if ok:
            break
        if best is not None and rel > 0.9 * best[0]:
            # Keeping more nodes no longer helps: the rest is rounding spread over the whole
            # graph, not a few culprits. Report the smaller set and its error honestly.
            rel, keep = best
            break
        if best is None or rel < best[0]:
            best = (rel, dict(keep))
        if validations == max_validations:
            break  # never report nodes that no validation run has seen
        ranked = sorted(
            (m for m in measures.values() if m.name not in keep),
            key=lambda m: (max_abs[m.name] > data_max, m.added_error),
            reverse=True,
        )
        if not ranked:
            break
        for m in ranked[:step]:
            why = (f"error: adds {m.added_error:.3g} relative error in {dtype}")
            if max_abs[m.name] > data_max:
                why = f"range: values reach {max_abs[m.name]:.3g} (> {data_max:g}); " + why
            keep[m.name] = why
        step *= 2
    top = tuple(sorted(measures.values(), key=lambda m: m.added_error, reverse=True)[:10])
    return AutoResult(
        keep=tuple(sorted(keep.items())),
        validations=validations,
        within_tolerance=ok,
        max_rel_error=rel,
        baseline_rel_error=baseline,
        seconds=time.perf_counter() - start,
        top_nodes=top,
    )


def _first_float_output(node: ir.Node) -> ir.Value | None:
    for v in node.outputs:
        if v.dtype == FLOAT:
            return v
    return None


def _exposed(model: ir.Model, names: Sequence[str]) -> ir.Model:
    """``model`` with the named values appended to its outputs (in that order)."""
    by_name = {v.name: v for n in model.graph for v in n.outputs}
    outputs = set(id(v) for v in model.graph.outputs)
    for name in names:
        v = by_name[name]
        if id(v) in outputs:  # already an output: expose an Identity of it
            ident = ir.Node("", "Identity", [v], outputs=[ir.Value(name=f"{name}__probe", type=v.type, shape=v.shape)])
            model.graph.append(ident)
            v = ident.outputs[0]
        model.graph.outputs.append(v)
    return model


def _round_trip(value: ir.Value, low: ir.DataType, graph: ir.Graph, after: ir.Node | None) -> ir.Value:
    c1 = ir.Node("", "Cast", [value], [ir.AttrInt64("to", int(low))],
                 outputs=[ir.Value(name=f"{value.name}__emu_lp", type=ir.TensorType(low), shape=value.shape)])
    c2 = ir.Node("", "Cast", [c1.outputs[0]], [ir.AttrInt64("to", int(FLOAT))],
                 outputs=[ir.Value(name=f"{value.name}__emu", type=ir.TensorType(FLOAT), shape=value.shape)])
    if after is not None:
        graph.insert_after(after, [c1, c2])
    else:
        graph.insert_before(graph[0], [c1, c2])
    return c2.outputs[0]


def _emulated(model: ir.Model, low: set[str], low_type: ir.DataType, fmt, probe_names: Sequence[str]) -> ir.Model:
    """The float32 graph with FP16 storage rounding at every low-precision node's boundary."""
    graph = model.graph
    rounded_consts: dict[int, ir.Value] = {}
    emulated: dict[str, ir.Value] = {}
    for node in list(graph):
        if node.name not in low:
            continue
        for i, value in enumerate(node.inputs):
            if value is None or value.dtype != FLOAT or value.const_value is None or not value.is_initializer():
                continue
            if id(value) not in rounded_consts:
                a = np.asarray(value.const_value.numpy(), np.float32)
                a = np.clip(a, -fmt.max_finite, fmt.max_finite)
                lp = {"fp16": np.float16}.get(fmt.name)
                if lp is None:
                    import ml_dtypes

                    lp = ml_dtypes.bfloat16
                r = a.astype(lp).astype(np.float32)
                new = ir.Value(name=f"{value.name}__emu", type=ir.TensorType(FLOAT), shape=value.shape,
                               const_value=ir.tensor(r, name=f"{value.name}__emu"))
                graph.register_initializer(new)
                rounded_consts[id(value)] = new
            node.replace_input_with(i, rounded_consts[id(value)])
        for out in node.outputs:
            if out.dtype != FLOAT:
                continue
            original_name = out.name
            uses = list(out.uses())
            rounded = _round_trip(out, low_type, graph, node)
            for use in uses:
                use.node.replace_input_with(use.idx, rounded)
            for k, g in enumerate(graph.outputs):
                if g is out:
                    name = out.name
                    out.name = f"{name}__raw"
                    graph.outputs[k] = rounded
                    rounded.name = name
            emulated[original_name] = rounded
    # expose the (rounded) probes, in the same order as the float32 run
    for name in probe_names:
        v = emulated.get(name)
        if v is None:
            v = next(o for n in graph for o in n.outputs if o.name == name)
        if any(v is g for g in graph.outputs):
            ident = ir.Node("", "Identity", [v], outputs=[ir.Value(name=f"{name}__probe", type=v.type, shape=v.shape)])
            graph.append(ident)
            v = ident.outputs[0]
        graph.outputs.append(v)
    return model


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    r = np.asarray(ref, np.float64)
    g = np.asarray(got, np.float64)
    if r.size == 0:
        return 0.0
    if not np.all(np.isfinite(g)):
        return float("inf")
    scale = float(np.max(np.abs(r))) or 1.0
    return float(np.max(np.abs(r - g))) / scale


def _measure(nodes, probes, probe_names, max_abs, ref_runs, runs, n_out) -> dict[str, NodeMeasure]:
    err = {name: 0.0 for name in probe_names}
    for ref, got in zip(ref_runs, runs):
        for name, r, g in zip(probe_names, ref[n_out:], got[n_out:]):
            err[name] = max(err[name], _rel(r, g))
    producer_of = {id(probes[n]): n for n in probe_names}
    out = {}
    for name in probe_names:
        node = nodes[name]
        upstream = [err[producer_of[id(v)]] for v in node.inputs if v is not None and id(v) in producer_of]
        base = max(upstream, default=0.0)
        added = err[name] - base if np.isfinite(err[name]) else (0.0 if base == float("inf") else float("inf"))
        out[name] = NodeMeasure(name, node.op_type, max_abs[name], err[name], added)
    return out
