"""The text ``attrbench compare`` prints for a :class:`attrbench.compare.Comparison`: the diff
table (one line per method and metric), the run-level findings, the configuration diff and the
verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .terminal import text_table

if TYPE_CHECKING:
    from ..compare import Comparison

__all__ = ["format_comparison"]


def _f(v: Any, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _tol_text(e: Mapping[str, Any]) -> str:
    tol = e["tolerance"]
    if e["status"] == "new":
        return ""
    if tol is None:
        return "report only"
    if tol.kind == "absolute" or math.isnan(e["allowed"]):
        return tol.describe()
    return f"±{e['allowed']:.4f} ({tol.describe()})"


def format_comparison(result: Comparison) -> str:
    """The readable diff table, the run-level findings, the configuration diff and a verdict."""
    header = ["method", "metric", "baseline", "current", "delta", "tolerance", "status", "detail"]
    rows = [
        [e["method"], e["metric"], _f(e["baseline"]), _f(e["current"]),
         _f(e["delta"], signed=True), _tol_text(e), e["status"],
         e["message"] if e["status"] != "ok" else ""]
        for e in result.entries
    ]
    lines = [text_table(header, rows, right={2, 3, 4})] if rows else ["(nothing to compare)"]
    checks = [c for c in result.checks if c["rule"] != "config"]
    if checks:
        lines += ["", "Failures and image counts:"]
        lines += [f"  {c['rule']}: {c['subject']}: {c['message']}" for c in checks]
    cfg = [c for c in result.checks if c["rule"] == "config"]
    if cfg:
        lines += ["", "Configuration diff (baseline -> run):"]
        lines += [f"  {c['subject']}: {c['message']}" for c in cfg]
    lines.append("")
    failed = [e for e in result.entries if e["fail"]]
    failed_checks = [c for c in result.checks if c["fail"]]
    if failed or failed_checks:
        parts = []
        if failed:
            parts.append(f"{len(failed)} of {len(result.entries)} values: " + ", ".join(
                f"{e['method']}/{e['metric']} ({e['status']})" for e in failed))
        for rule, what in (("failures", "failure counts changed"),
                           ("images", "image counts changed"),
                           ("config", "configuration changed")):
            subjects = [c["subject"] for c in failed_checks if c["rule"] == rule]
            if subjects:
                parts.append(f"{what}: {', '.join(subjects)}")
        lines.append("FAIL: " + "; ".join(parts))
        if any(e["status"] == "DEFINITION CHANGED" for e in failed) or cfg:
            lines.append("If the change is intended, refresh the baseline in the same commit "
                         "(results/README.md).")
    else:
        n_checked = sum(1 for e in result.entries if e["status"] == "ok")
        lines.append(
            f"OK: {n_checked} values within tolerance, same configuration, image counts and "
            f"failures ({sum(1 for e in result.entries if e['status'] == 'info')} reported "
            f"only, {sum(1 for e in result.entries if e['status'] == 'new')} new)"
        )
    return "\n".join(lines)
