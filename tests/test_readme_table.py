"""The README's results table is generated from results/baselines/synthetic.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from attrbench.cli import main
from attrbench.readme_table import END, START, check_readme, render_table, update_readme

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BASELINE = REPO / "results" / "baselines" / "synthetic.json"


def test_readme_table_matches_the_baseline():
    """Fails when README.md and the committed baseline differ: refresh the table with
    ``attrbench readme-table`` in the commit that refreshes the baseline."""
    assert check_readme(README, BASELINE), (
        "README.md's results table differs from results/baselines/synthetic.json; "
        "run: attrbench readme-table")


def test_table_lists_every_method_of_the_baseline():
    baseline = json.loads(BASELINE.read_text())
    text = README.read_text()
    table = text.split(START, 1)[1].split(END, 1)[0]
    rows = [line.split("|")[1].strip() for line in table.strip().splitlines()[2:]]
    assert rows == baseline["methods"]
    assert baseline["source"]["limit"] is None  # the published table is the 100-image run
    assert all(baseline["results"][m]["n_images"] + baseline["results"][m]["n_failed"] == 100
               for m in baseline["methods"])


def test_check_and_update_on_a_copy(tmp_path, capsys):
    readme, baseline = tmp_path / "README.md", tmp_path / "b.json"
    shutil.copy(README, readme)
    d = json.loads(BASELINE.read_text())
    d["results"]["explainer"]["metrics"]["mean_f1"]["value"] = 0.123456
    d["results"]["gradcam"]["metrics"]["auc"]["value"] = None
    baseline.write_text(json.dumps(d))
    assert not check_readme(readme, baseline)
    assert main(["readme-table", "--readme", str(readme), "--baseline", str(baseline),
                 "--check"]) == 1
    before = readme.read_text()
    assert main(["readme-table", "--readme", str(readme), "--baseline", str(baseline)]) == 0
    after = readme.read_text()
    assert check_readme(readme, baseline)
    assert "| explainer | 0.123 |" in after and "| gradcam |" in after
    gradcam_row = next(li for li in after.splitlines() if li.startswith("| gradcam |"))
    assert gradcam_row.split("|")[5].strip() == "–"  # auc, undefined
    # only the table changed
    assert before.split(START)[0] == after.split(START)[0]
    assert before.split(END)[1] == after.split(END)[1]
    assert not update_readme(readme, baseline)  # idempotent
    capsys.readouterr()


def test_errors(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main(["readme-table", "--readme", str(readme), "--baseline", str(BASELINE)]) == 2
    assert "marker lines" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"no metric\(s\) \['auc'\]"):
        render_table({"methods": [], "metrics": {"mean_f1": {}}, "results": {}},
                     ("mean_f1", "auc"))
