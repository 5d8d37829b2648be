"""``attrbench readme-table``: the README's results table, generated from a baseline.

The table between the two marker comments of ``README.md`` (:data:`START`, :data:`END`) is
rendered from ``results/baselines/synthetic.json`` by :func:`render_table`; nothing else of the
README is touched. ``attrbench readme-table`` rewrites it, ``attrbench readme-table --check``
exits 1 when it differs from the baseline (a test runs the same check). Refresh the table in
the same commit as the baseline (``results/README.md``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["COLUMNS", "END", "START", "check_readme", "render_table", "update_readme"]

REPO = Path(__file__).resolve().parents[1]
DEFAULT_README = REPO / "README.md"
DEFAULT_BASELINE = REPO / "results" / "baselines" / "synthetic.json"

START = ("<!-- results-table:start (generated from results/baselines/synthetic.json by "
         "`attrbench readme-table`; do not edit by hand) -->")
END = "<!-- results-table:end -->"

#: the README's columns (every metric is in the baseline and in a run's summary.md)
COLUMNS = ("mean_f1", "cont_iou", "pointing_game", "auc", "deletion_auc", "insertion_auc",
           "class_specificity_diag", "class_specificity_offdiag", "time_ms", "model_calls")
#: decimals per column (others: 3)
DECIMALS = {"time_ms": 1, "model_calls": 1}


def _cell(value: Any, decimals: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{float(value):.{decimals}f}"


def render_table(baseline: dict[str, Any], columns: tuple[str, ...] = COLUMNS) -> str:
    """The Markdown table (methods in the baseline's order, ``–`` for an undefined value)."""
    missing = [k for k in columns if k not in baseline.get("metrics", {})]
    if missing:
        raise ValueError(f"the baseline has no metric(s) {missing}; expected {list(columns)}")
    lines = ["| method | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for m in baseline["methods"]:
        cells = baseline["results"][m]["metrics"]
        lines.append(f"| {m} | " + " | ".join(
            _cell(cells.get(k, {}).get("value"), DECIMALS.get(k, 3)) for k in columns) + " |")
    return "\n".join(lines) + "\n"


def _split(text: str, readme: Path) -> tuple[str, str, str]:
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise ValueError(f"{readme} must hold the marker lines {START!r} and {END!r} once each, "
                         "in this order")
    head, rest = text.split(START, 1)
    body, tail = rest.split(END, 1)
    return head, body, tail


def _expected(text: str, readme: Path, baseline: dict[str, Any]) -> str:
    head, _, tail = _split(text, readme)
    return head + START + "\n\n" + render_table(baseline) + "\n" + END + tail


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"baseline {path} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


def check_readme(readme: str | Path = DEFAULT_README,
                 baseline: str | Path = DEFAULT_BASELINE) -> bool:
    """True when the README's table is the one the baseline gives."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    return text == _expected(text, readme, _load(Path(baseline)))


def update_readme(readme: str | Path = DEFAULT_README,
                  baseline: str | Path = DEFAULT_BASELINE) -> bool:
    """Rewrite the README's table from the baseline; True when the file changed."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    new = _expected(text, readme, _load(Path(baseline)))
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="attrbench readme-table",
        description="Write the README's results table from a baseline (or check it).")
    p.add_argument("--readme", default=str(DEFAULT_README))
    p.add_argument("--baseline", default=str(DEFAULT_BASELINE))
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 when the table differs from the baseline")
    args = p.parse_args(argv)
    try:
        if args.check:
            ok = check_readme(args.readme, args.baseline)
            print(f"{args.readme}: results table "
                  + ("matches the baseline" if ok else
                     f"differs from {args.baseline}; run: attrbench readme-table"))
            return 0 if ok else 1
        changed = update_readme(args.readme, args.baseline)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"attrbench: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.readme}: results table " + ("rewritten" if changed else "already up to date"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
