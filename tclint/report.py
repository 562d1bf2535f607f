"""Formatters: pure functions from reports to text. They never print."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

from tabulate import tabulate

from tclint import __version__
from tclint.lint import ModelReport
from tclint.rules import RULES

RULES_URL = "https://github.com/tclint/tclint/blob/main/rules/{code}.md"


def _dims(d: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in d.items() if v is not None)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%" if x >= 0.001 else f"{100 * x:.2f}%"


def _saving(f) -> str:
    return _pct(f.saving) if f.saving > 0 else "-"


def _status(f) -> str:
    """The fix column: what to do, and for a finding ``tclint fix`` leaves, why."""
    if f.fix_status == "fix":
        return f.fix
    if f.fix_status == "advice":
        return f"advice: {f.fix}"
    note = f.fix_note
    if f.pays_from:
        note += f"; pays from batch {f.pays_from}"
    return f"not fixed: {note}" if f.fix_status == "unsafe" else f"left as is: {note}"


def format_table(reports: list[ModelReport], *, show_layers: int = 0) -> str:
    """One row per finding: ``hot`` is HOT when fixing it saves at least the hot threshold of the
    model's time (``saves``, net of inserted nodes), ``gate`` is FAIL when it fails the gate."""
    out: list[str] = []
    for r in reports:
        out.append(f"{r.model}: {r.target}")
        for note in r.notes:
            out.append(f"  note: {note}")
        if r.findings:
            rows = [
                [f.code, "FAIL" if f.gate else "", "HOT" if f.hot else "", _saving(f), _pct(f.share),
                 f.path or "(model)", f.op, _dims(f.dims), f.message,
                 f"{f.speedup:.2f}x" if f.speedup else "", _status(f)]
                for f in r.findings
            ]
            out.append(tabulate(rows, headers=["code", "gate", "hot", "saves", "share", "node", "op",
                                               "dims", "message", "layer speedup", "fix"],
                                tablefmt="simple",
                                maxcolwidths=[None, None, None, None, None, 40, 14, 24, 50, None, 60]))
        if show_layers:
            rows = [[row.path, row.op, row.m, row.n, row.k, row.batch, f"{row.time_us:.1f}",
                     _pct(row.share), row.bound, ",".join(row.findings)]
                    for row in r.layers[:show_layers]]
            out.append("")
            out.append(tabulate(rows, headers=["layer", "op", "M", "N", "K", "batch", "est. us",
                                               "share", "bound", "findings"], tablefmt="simple"))
        s = r.summary
        out.append(
            f"{s['layers']} layers, {s['findings']} findings ({s['hot_findings']} hot, "
            f"{s['gate_findings']} failing the gate), {_pct(s['unaligned_time_share'])} of time in "
            f"unaligned layers; `tclint fix` saves an estimated {_pct(s['fix_saving'])}; "
            f"speedup if all fixed {s['speedup_if_all_fixed']:.2f}x"
            + (f", {r.baselined} baselined" if r.baselined else "")
            + (" -- gate FAILED" if r.gate_failed else "")
        )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def format_json(reports: list[ModelReport]) -> str:
    data = {"tool": "tclint", "version": __version__, "models": [r.to_dict() for r in reports],
            "gate_failed": any(r.gate_failed for r in reports)}
    return json.dumps(data, indent=2) + "\n"


def format_statistics(reports: list[ModelReport]) -> str:
    counts = Counter(f.code for r in reports for f in r.findings)
    hot = Counter(f.code for r in reports for f in r.findings if f.hot)
    gate = Counter(f.code for r in reports for f in r.findings if f.gate)
    rows = [[counts[c], hot[c], gate[c], c, RULES[c].name if c in RULES else ""] for c in sorted(counts)]
    return tabulate(rows, headers=["count", "hot", "gate", "code", "name"], tablefmt="plain") + "\n"


_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def level(f) -> str:
    """One mapping for SARIF and GitHub: error when the finding fails the gate, warning when it
    is hot (worth fixing, not failing: advice, or --fail-on none), note otherwise."""
    if f.gate:
        return "error"
    return "warning" if f.hot else "note"


def format_sarif(reports: list[ModelReport]) -> str:
    """SARIF 2.1.0, as GitHub code scanning accepts it. A binary model has no lines: the node
    path is a logical location and every result sits on line 1 of the model file."""
    used = sorted({f.code for r in reports for f in r.findings})
    rules = [
        {
            "id": code, "name": RULES[code].name,
            "shortDescription": {"text": RULES[code].summary},
            "helpUri": RULES_URL.format(code=code),
            "defaultConfiguration": {"level": _SARIF_LEVEL[RULES[code].severity]},
        }
        for code in used if code in RULES
    ]
    index = {code: i for i, code in enumerate(used)}
    results = []
    for r in reports:
        for f in r.findings:
            fingerprint = hashlib.sha256(f.key().encode()).hexdigest()[:32]
            results.append({
                "ruleId": f.code,
                "ruleIndex": index[f.code],
                "level": level(f),
                "message": {"text": f"{f.message} [{f.path or 'model'}] Fix: {_status(f)}"},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": r.model},
                        "region": {"startLine": 1},
                    },
                    "logicalLocations": [{"fullyQualifiedName": f.path or "model", "kind": "member"}],
                }],
                "partialFingerprints": {"tclintFinding/v1": fingerprint},
                "properties": {"dims": f.dims, "share": f.share, "saving": f.saving,
                               "hot": f.hot, "gate": f.gate, "fix_status": f.fix_status,
                               "fix_note": f.fix_note, "pays_from": f.pays_from,
                               "speedup": f.speedup, "suggested": f.suggested},
            })
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "tclint", "version": __version__,
                                "informationUri": "https://github.com/tclint/tclint",
                                "rules": rules}},
            "results": results,
        }],
    }
    return json.dumps(sarif, indent=2) + "\n"


def _gh_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


_GH_LEVEL = {"error": "error", "warning": "warning", "note": "notice"}


def format_github(reports: list[ModelReport]) -> str:
    """GitHub workflow commands: ``::error file=F,title=T::message`` (annotations only; the exit
    code is what fails the job)."""
    lines = []
    for r in reports:
        for f in r.findings:
            kind = _GH_LEVEL[level(f)]
            title = _gh_escape(f"{f.code} {f.name}" + (" (hot)" if f.hot else ""), prop=True)
            where = f" at {f.path}" if f.path else ""
            saves = f", fixing it saves {_pct(f.saving)}" if f.saving > 0 else ""
            lines.append(f"::{kind} file={_gh_escape(r.model, prop=True)},line=1,title={title}::"
                         + _gh_escape(f"{f.message}{where} ({_pct(f.share)} of GPU time{saves}). "
                                      f"Fix: {_status(f)}"))
    return "\n".join(lines) + ("\n" if lines else "")


FORMATTERS = {
    "table": format_table,
    "json": format_json,
    "sarif": format_sarif,
    "github": format_github,
}
