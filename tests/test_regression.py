"""CI regression on metric values: a reduced default run against the committed baseline."""

from __future__ import annotations

from pathlib import Path

from attrbench.cli import main

BASELINE = Path(__file__).resolve().parents[1] / "results" / "baselines" / "synthetic-limit10.json"


def test_reduced_default_run_matches_committed_baseline(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--limit", "10", "--out", str(out), "--no-progress", "--no-report"]) == 0
    capsys.readouterr()
    rc = main(["compare", str(BASELINE), str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "REGRESSION" not in printed
