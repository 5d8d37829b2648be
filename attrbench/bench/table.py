"""What ``attrbench bench`` prints: the ratio table with its aims (:class:`Row`,
:func:`format_table`, :func:`ratio_rows`), the per-method costs and the method x metric table of
ms per image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..tables.terminal import text_table

__all__ = ["Row", "format_methods", "format_metric_costs", "format_table", "ratio_rows"]


@dataclass
class Row:
    """One line of the final table: a ratio, its aim and whether it holds."""

    key: str
    label: str
    value: float
    aim: str  # "<= 1.15", ">= 100", or "" for context rows
    context: str = ""

    @property
    def holds(self) -> bool | None:
        if not self.aim or not math.isfinite(self.value):
            return None
        op, bound = self.aim.split()
        limit = float(bound.rstrip("%")) / (100 if bound.endswith("%") else 1)
        return self.value <= limit if op == "<=" else self.value >= limit

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["holds"] = self.holds
        return d


def format_table(rows: Sequence[Row]) -> str:
    """Fixed-width table: measurement | value | aim | holds? | context."""
    head = ("measurement", "value", "aim", "holds?", "context (absolute)")
    body = []
    for r in rows:
        if r.aim.endswith("%"):
            v = f"{100 * r.value:.1f} %"
        else:
            v = f"{r.value:.0f}" if abs(r.value) >= 100 else f"{r.value:.3f}"
        h = {True: "yes", False: "no", None: "-"}[r.holds]
        body.append((r.label, v, r.aim or "-", h, r.context))
    return text_table(head, body)


def format_methods(costs: dict[str, dict[str, Any]]) -> str:
    rows = [[name, f"skipped: {c['skipped']}", "", ""] if "skipped" in c else
            [name, f"{c['ms_per_image']:.2f}", f"{c['calls_per_image']:.1f}",
             f"{c['peak_mem_mb']:.1f}"] for name, c in costs.items()]
    return text_table(["method", "ms/image", "calls/image", "peak MB"], rows, right={1, 2, 3})




def format_metric_costs(costs: dict[str, Any], method_ms: dict[str, float],
                        totals: dict[str, Any]) -> str:
    """Method x metric table of ms per image: the method's own time, each metric on its masks
    (``n/a``: outside the metric's protocol; ``err``: the metric raised), the metrics' total
    and method + metrics; a last row sums each column over the methods."""
    per = costs["ms_per_image"]
    names = list(totals["per_metric"])
    head = ["method", "method", *names, "metrics", "total"]
    body = []
    for m, row in per.items():
        na, failed = costs["not_applicable"].get(m, {}), costs["failed"].get(m, {})
        cells = [_ms(row[k]) if k in row else ("n/a" if k in na else "err" if k in failed
                                                else "-") for k in names]
        body.append([m, _ms(method_ms.get(m, math.nan)), *cells,
                     _ms(totals["metrics_per_method"][m]), _ms(totals["method_and_metrics"][m])])
    body.append(["total", _ms(totals["methods_all"]),
                 *[_ms(totals["per_metric"][k]) for k in names], _ms(totals["metrics_all"]),
                 _ms(totals["all"])])
    lines = text_table(head, body, right=set(range(1, len(head)))).splitlines()
    lines.insert(len(lines) - 1, lines[1])  # a rule above the total row
    return "\n".join(lines)


def _ms(v: float) -> str:
    if not math.isfinite(v):
        return "-"
    return f"{v:.0f}" if v >= 1000 else f"{v:.2f}" if v >= 0.01 else f"{v:.4f}"


def _spread(d: dict[str, Any]) -> str:
    """'median of 7 repeat ratios, range 1.02-1.19' of a ratio_stats dict."""
    return (f"median of {len(d.get('ratios', []))} repeat ratios, range "
            f"{d['ratio_min']:.3f}-{d['ratio_max']:.3f}")


def ratio_rows(res: dict[str, Any]) -> list[Row]:
    """The rows of the ratio table from the measurements in ``res`` (absent ones left out)."""
    rows = _paper_rows(res.get("paper_settings", {}))
    r = res["rise_overhead"]
    rows.append(Row("rise_over_bare_forwards", "RISE / bare batched forwards", r["ratio"],
                    "<= 1.15", f"{r['rise_ms']:.1f} vs {r['bare_ms']:.1f} ms "
                    f"({r['images']} img x {r['num_masks']} masks, chunks of "
                    f"{r['mask_batch']}; {_spread(r)})"))
    for mode in ("deletion", "insertion"):
        d = res[f"{mode}_overhead"]
        rows.append(Row(f"{mode}_over_bare_forwards", f"{mode.capitalize()} / bare forwards",
                        d["ratio"], "<= 1.15",
                        f"{d['ours_ms']:.1f} vs {d['bare_ms']:.1f} ms ({d['forwards']} "
                        f"forwards in chunks of {d['batch_size']}; {_spread(d)})"))
    libs = res.get("gradcam_vs_libraries", {})
    for lib, label in (("captum", "captum LayerGradCam+interpolate"),
                       ("pytorch_grad_cam", "pytorch-grad-cam GradCAM")):
        v = libs.get(lib, {})
        if "ratio" in v:
            rows.append(Row(f"gradcam_over_{lib}", f"Grad-CAM ours / {label}", v["ratio"],
                            "<= 1.0", f"{v['ours_ms']:.1f} vs {v['theirs_ms']:.1f} ms "
                            f"({_spread(v)})"))
    rows += _quantus_rows(res.get("deletion_vs_quantus"))
    m = res.get("memory_growth")
    if m:
        rows.append(Row("memory_growth", f"`attrbench run` peak RSS growth "
                        f"{m['sizes'][0]} -> {m['sizes'][-1]} images", m["growth"], "<= 10%",
                        " vs ".join(f"{x:.0f} MB" for x in m["peak_rss_mb"]) + " ("
                        + " / ".join(f"{s:.0f} s" for s in m["seconds"]) + ")"))
    return rows


def _paper_rows(p: dict[str, Any]) -> list[Row]:
    if "rise_over_explainer" not in p:
        return []
    ex = "extrapolated from {} {}".format
    note = ex(p["rise_measured_masks"], "masks") if p["rise_extrapolated"] else "measured"
    rows = [Row("explainer_speedup_vs_rise8000",
                f"Explainer speed-up vs RISE 8000 masks ({note})", p["rise_over_explainer"],
                ">= 100", f"RISE {p['rise_ms_per_image']:.0f} ms/img, Explainer "
                f"{p['explainer_ms_per_image']:.2f} ms/img")]
    note = ex(p["ep_measured_iters"], "iterations") if p["ep_extrapolated"] else "measured"
    rows.append(Row("explainer_speedup_vs_ep800",
                    f"Explainer speed-up vs EP 800 it x 4 areas ({note})",
                    p["ep_over_explainer"], "", f"EP {p['ep_ms_per_image']:.0f} ms/img"))
    return rows


def _quantus_rows(q: dict[str, Any] | None) -> list[Row]:
    if not q:
        return []
    return [Row("deletion_speedup_vs_quantus",
                f"Deletion speed-up vs Quantus PixelFlipping (ours {q['steps']} steps)",
                q["speedup"], ">= 10",
                f"Quantus {q['quantus_ms']:.0f} ms ({q['quantus_steps']} steps of "
                f"{q['features_in_step']} entries), ours {q['ours_ms']:.1f} ms"),
            Row("deletion_speedup_vs_quantus_equal_work",
                f"  same, equal work (ours {q['quantus_steps']} steps, same batch)",
                q["speedup_equal_work"], ">= 10", f"ours {q['ours_same_work_ms']:.1f} ms")]
