"""A self-contained HTML report (inline SVG charts, inline CSS, no JavaScript, works offline).

``render_html(results) -> str`` is a pure function of a results dict, the one ``tclint
optimize`` writes as ``report.json``. Every key is optional; a missing section says so.

    {
      "title": str, "model": str, "target": str, "notes": [str],
      "summary": {"estimated_speedup": float, "measured_speedup": float,
                  "measured_speedup_ci": [low, high], "measured_speedup_of": str,
                  "provider": str},
      "layers": [{"name": str, "op": str,
                  "estimated_before_s": float, "estimated_after_s": float | None,
                  "measured_before_s": float | None, "measured_after_s": float | None}],
      "findings": [{"code", "name", "severity", "node", "message", "share", "saving", "hot",
                    "gate", "fix_status", "fix_note"}],  (Finding.to_dict(): one meaning of hot)
      "changes": [{"node", "op", "before", "after", "note"}],
      "skipped": [{"node", "op", "dims", "reason"}],  (layers not padded, and why)
      "accuracy": {"passed": bool, "rtol", "atol", "max_abs_diff", "max_rel_diff", "message",
                   "outputs": [{"name", "max_abs_diff", "max_rel_diff"}]},
      "bench": BenchReport.to_dict()  (see tclint.bench)
    }

Bars carry ``data-layer``/``data-series``/``data-value`` attributes and a ``<title>`` tooltip, so
the chart can be checked by a program as well as by eye.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

#: layer-chart series: (key in a layer record, legend text, colour)
SERIES = (
    ("estimated_before_s", "estimated, before", "#d9534f"),
    ("estimated_after_s", "estimated, after", "#2e8b57"),
    ("measured_before_s", "measured, before", "#f0ad4e"),
    ("measured_after_s", "measured, after", "#337ab7"),
)
MODEL_COLOURS = ("#8c8c8c", "#f0ad4e", "#2e8b57", "#337ab7", "#9b59b6", "#d9534f")
MAX_LAYERS = 30

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:24px auto;max-width:1100px;
color:#222;padding:0 16px}
h1{font-size:1.5em;margin-bottom:4px}h2{font-size:1.15em;margin-top:32px;border-bottom:1px solid #ddd}
.meta{color:#555;margin:2px 0}.cards{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.card{border:1px solid #ddd;border-radius:6px;padding:10px 16px;min-width:160px}
.card .v{font-size:1.6em;font-weight:600}.card .k{color:#555;font-size:.85em}
.ok{color:#2e8b57}.bad{color:#c9302c}
table{border-collapse:collapse;width:100%;font-size:.9em}th,td{border-bottom:1px solid #eee;padding:4px 8px;
text-align:left;vertical-align:top}th{background:#f7f7f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
.legend span{display:inline-block;margin-right:16px}.legend i{display:inline-block;width:12px;height:12px;
margin-right:4px;vertical-align:middle}svg text{font-size:11px;fill:#333}.empty{color:#777;font-style:italic}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not isinstance(seconds, (int, float)) or math.isnan(seconds):
        return "-"
    s = float(seconds)
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def _num(value, fmt: str = "{:.3g}") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return fmt.format(value)
    return str(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------
# Charts
# --------------------------------------------------------------------------------------------
def layer_chart_svg(layers: Sequence[Mapping], *, max_layers: int = MAX_LAYERS) -> str:
    """Horizontal grouped bars: per layer, one bar per series that has a value."""
    series = [s for s in SERIES if any(_is_number(layer.get(s[0])) for layer in layers)]
    if not layers or not series:
        return '<p class="empty">No per-layer times available.</p>'

    def key(layer):
        return max((layer.get(k) for k, _, _ in series if _is_number(layer.get(k))), default=0.0)

    shown = sorted(layers, key=key, reverse=True)[:max_layers]
    vmax = max(key(layer) for layer in shown) or 1.0
    label_w, bar_w, bar_h, gap = 260, 640, 11, 8
    row_h = bar_h * len(series) + gap
    height = 20 + row_h * len(shown)
    width = label_w + bar_w + 90
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart layer-chart" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="time per layer">'
        )
    ]
    for i, layer in enumerate(shown):
        y0 = 10 + i * row_h
        name = str(layer.get("name", f"layer {i}"))
        label = f"{name} ({layer['op']})" if layer.get("op") else name
        short = label if len(label) <= 40 else label[:37] + "..."
        parts.append(
            f'<text x="{label_w - 6}" y="{y0 + row_h / 2 - gap / 2 + 4:.1f}" text-anchor="end">{_e(short)}'
            f"<title>{_e(label)}</title></text>"
        )
        for j, (k, legend, colour) in enumerate(series):
            value = layer.get(k)
            if not _is_number(value):
                continue
            w = max(bar_w * value / vmax, 0.5 if value > 0 else 0.0)
            y = y0 + j * bar_h
            parts.append(
                f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.2f}" height="{bar_h - 1}" '
                f'fill="{colour}" data-layer="{_e(name)}" data-series="{k}" data-value="{value!r}">'
                f"<title>{_e(name)}: {legend} {format_seconds(value)}</title></rect>"
                f'<text x="{label_w + w + 4:.2f}" y="{y + bar_h - 2}">{format_seconds(value)}</text>'
            )
    parts.append("</svg>")
    legend = "".join(f'<span><i style="background:{c}"></i>{_e(t)}</span>' for _, t, c in series)
    note = ""
    if len(layers) > len(shown):
        note = f'<p class="meta">The {len(shown)} slowest of {len(layers)} layers.</p>'
    return f'<div class="legend">{legend}</div>{note}' + "".join(parts)


def bench_chart_svg(bench: Mapping) -> str:
    """Median latency per benched model, with a p90 whisker (clipped at the chart's edge: on a
    busy machine one slow run must not shrink every bar to nothing)."""
    models = bench.get("models") or []
    if not models:
        return '<p class="empty">Not measured.</p>'
    label_w, bar_w, bar_h, gap = 260, 600, 22, 10
    vmax = max(m["latency"]["median_s"] for m in models) / 0.8 or 1.0
    height = 10 + (bar_h + gap) * len(models)
    width = label_w + bar_w + 120
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart bench-chart" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="measured latency">'
        )
    ]
    for i, m in enumerate(models):
        y = 5 + i * (bar_h + gap)
        med, p90 = m["latency"]["median_s"], m["latency"].get("p90_s")
        w = max(bar_w * med / vmax, 0.5)
        colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
        label = m.get("label", f"model {i}")
        parts.append(
            f'<text x="{label_w - 6}" y="{y + bar_h / 2 + 4}" text-anchor="end">{_e(label)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y}" width="{w:.2f}" height="{bar_h}" fill="{colour}" '
            f'data-layer="{_e(label)}" data-series="median_s" data-value="{med!r}">'
            f"<title>{_e(label)}: median {format_seconds(med)}</title></rect>"
        )
        if _is_number(p90):
            x = label_w + min(bar_w * p90 / vmax, bar_w + 8)
            parts.append(
                f'<line class="whisker" x1="{x:.2f}" x2="{x:.2f}" y1="{y + 3}" y2="{y + bar_h - 3}" '
                f'stroke="#222" stroke-width="2"><title>p90 {format_seconds(p90)}</title></line>'
            )
        end = max(w, min(bar_w * p90 / vmax, bar_w + 8) if _is_number(p90) else 0.0)
        parts.append(
            f'<text x="{label_w + end + 6:.2f}" y="{y + bar_h / 2 + 4}">{format_seconds(med)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str, numeric=()) -> str:
    if not rows:
        return '<p class="empty">None.</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(c)}</td>' if j in numeric else f"<td>{_e(c)}</td>"
            for j, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def _dims(value) -> str:
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return "" if value is None else str(value)


def _findings_table(findings: Sequence[Mapping]) -> str:
    rows = [
        [
            f.get("code", ""),
            f.get("name", ""),
            f.get("severity", ""),
            f.get("node", ""),
            f.get("message", ""),
            _num(f.get("share"), "{:.1%}") if _is_number(f.get("share")) else "-",
            _num(f.get("saving"), "{:.1%}") if _is_number(f.get("saving")) and f["saving"] > 0 else "-",
            "yes" if f.get("hot") else "no",
            "FAIL" if f.get("gate") else "",
            _fix_cell(f),
        ]
        for f in findings
    ]
    return _table(
        ["code", "rule", "severity", "node", "message", "time share", "fixing saves", "hot",
         "gate", "tclint fix"],
        rows,
        cls="findings",
        numeric={5, 6},
    )


def _fix_cell(f: Mapping) -> str:
    status = f.get("fix_status")
    note = f.get("fix_note") or ""
    if f.get("pays_from"):
        note += f"; pays from batch {f['pays_from']}"
    return {"fix": "pads it", "advice": "advice (not a padding fix)", "no-gain": f"left: {note}",
            "unsafe": f"cannot: {note}"}.get(status, "")


def _changes_table(changes: Sequence[Mapping]) -> str:
    rows = [
        [
            c.get("node", ""),
            c.get("op", ""),
            _dims(c.get("before")),
            _dims(c.get("after")),
            c.get("note", ""),
        ]
        for c in changes
    ]
    return _table(["node", "op", "before", "after", "note"], rows, cls="changes")


def _skipped_table(skipped: Sequence[Mapping]) -> str:
    if not skipped:
        return ""
    seen, rows = set(), []
    for item in skipped:
        row = (
            str(item.get("node", "")),
            str(item.get("op", "")),
            _dims(item.get("dims")),
            str(item.get("reason", "")),
        )
        if row not in seen:
            seen.add(row)
            rows.append(list(row))
    return "<h3>Not padded</h3>" + _table(["node", "op", "dims", "reason"], rows, cls="skipped")


def _accuracy_section(acc: Mapping | None) -> str:
    if not acc:
        return '<p class="empty">Not verified.</p>'
    passed = acc.get("passed")
    verdict = (
        f'<p class="{"ok" if passed else "bad"}"><b>{"within tolerance" if passed else "OUT OF TOLERANCE"}</b>'
        f" (rtol {_num(acc.get('rtol'))}, atol {_num(acc.get('atol'))}; max abs diff "
        f"{_num(acc.get('max_abs_diff'))}, max rel diff {_num(acc.get('max_rel_diff'))})</p>"
    )
    if acc.get("message"):
        verdict += f'<p class="meta">{_e(acc["message"])}</p>'
    rows = [
        [o.get("name", ""), _num(o.get("max_abs_diff")), _num(o.get("max_rel_diff"))]
        for o in acc.get("outputs") or []
    ]
    return verdict + (
        _table(["output", "max abs diff", "max rel diff"], rows, cls="accuracy", numeric={1, 2})
        if rows
        else ""
    )


def _bench_table(bench: Mapping) -> str:
    rows = []
    for m in bench.get("models") or []:
        lat = m["latency"]
        s = m.get("speedup")
        a = m.get("agreement")
        rows.append(
            [
                m.get("label", ""),
                m.get("precision", ""),
                format_seconds(lat["median_s"]),
                format_seconds(lat.get("p90_s")),
                format_seconds(lat.get("p99_s")),
                _num(m.get("throughput"), "{:.1f}"),
                _num(m["peak_memory_bytes"] / 2**20, "{:.1f}")
                if _is_number(m.get("peak_memory_bytes"))
                else "-",
                f"{s['value']:.2f}x [{s['ci_low']:.2f}, {s['ci_high']:.2f}]" if s else "-",
                "reference"
                if a is None
                else ("yes" if a.get("agrees") else f"NO: {a.get('message', '')}"),
            ]
        )
    return _table(
        [
            "model",
            "precision",
            "median",
            "p90",
            "p99",
            "items/s",
            "peak MiB",
            "speedup vs first [CI]",
            "outputs agree",
        ],
        rows,
        cls="bench",
        numeric={2, 3, 4, 5, 6},
    )


def _cards(results: Mapping) -> str:
    summary = results.get("summary") or {}
    cards = []
    if _is_number(summary.get("estimated_speedup")):
        of = summary.get("estimated_speedup_of")
        label = "estimated speedup" + (f" ({of})" if of else "")
        cards.append((label, f"{summary['estimated_speedup']:.2f}x", ""))
    if _is_number(summary.get("measured_speedup")):
        ci = summary.get("measured_speedup_ci")
        sub = f"95% CI {ci[0]:.2f}-{ci[1]:.2f}" if ci else ""
        of = summary.get("measured_speedup_of")
        cards.append(
            (
                "measured speedup" + (f" ({of})" if of else ""),
                f"{summary['measured_speedup']:.2f}x",
                sub,
            )
        )
    acc = results.get("accuracy")
    if acc:
        cards.append(
            (
                "accuracy",
                "pass" if acc.get("passed") else "FAIL",
                f"max diff {_num(acc.get('max_abs_diff'))}",
            )
        )
    findings = results.get("findings")
    if findings is not None:
        hot = sum(1 for f in findings if f.get("hot"))
        gate = sum(1 for f in findings if f.get("gate"))
        cards.append(("findings", str(len(findings)), f"{hot} hot, {gate} failing the gate"))
    changes = results.get("changes")
    if changes is not None:
        cards.append(("layers changed", str(len(changes)), ""))
    if not cards:
        return ""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div>'
            f'<div class="k">{_e(sub)}</div></div>'
            for k, v, sub in cards
        )
        + "</div>"
    )


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------
def render_html(results: Mapping) -> str:
    """The whole report as one HTML document (a pure function of ``results``)."""
    title = results.get("title") or "tclint report"
    meta = []
    for key, text in (("model", "model"), ("target", "target")):
        if results.get(key):
            meta.append(f'<p class="meta">{text}: {_e(results[key])}</p>')
    bench = results.get("bench") or {}
    if bench:
        parts = [str(bench.get("provider_note") or bench.get("provider") or "")]
        parts.append(str(bench.get("device") or ""))
        if bench.get("onnxruntime"):
            parts.append(f"onnxruntime {bench['onnxruntime']}")
        if bench.get("runs"):
            parts.append(
                f"{bench['runs']} runs after {bench.get('warmup', 0)} warm-up, batch {bench.get('batch', 1)}"
            )
        text = ", ".join(p for p in parts if p)
        if text:
            meta.append(f'<p class="meta">measured on: {_e(text)}</p>')
    layers = results.get("layers") or []
    measured = any(_is_number(layer.get("measured_before_s")) for layer in layers)
    chart_title = "Time per layer, before and after (estimated" + (
        ", and measured)" if measured else ")"
    )
    body = [
        f"<h1>{_e(title)}</h1>",
        *meta,
        _cards(results),
        f"<h2>{_e(chart_title)}</h2>",
        layer_chart_svg(layers),
        "<h2>Measured latency</h2>",
        bench_chart_svg(bench),
        _bench_table(bench) if bench else "",
        "<h2>Findings</h2>",
        _findings_table(results.get("findings") or []),
        "<h2>What was padded</h2>",
        _changes_table(results.get("changes") or []),
        _skipped_table(results.get("skipped") or []),
        "<h2>Accuracy</h2>",
        _accuracy_section(results.get("accuracy")),
    ]
    notes = results.get("notes") or []
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
