"""metrics/report.md is filled from the metrics files (this one: the committed run's)."""

from __future__ import annotations

import json
from pathlib import Path

from qmr.report import render_report

METRICS = Path(__file__).resolve().parents[1] / "metrics"


def test_every_table_is_filled_from_the_metrics():
    evaluate = json.loads((METRICS / "evaluate.json").read_text())
    vote = json.loads((METRICS / "vote.json").read_text())
    restore = json.loads((METRICS / "restore.json").read_text())
    text = render_report(evaluate, vote, restore, ["test", "control"], ablation=["| experiment |", "|---|"])
    for heading in ("Accuracy and degradation", "first-error types", "Judges", "Restoration", "Ablation"):
        assert heading in text, heading
    acc = vote["toy"]["rtn-w2g128"]["accuracy"]["ensemble"]["step_accuracy"]
    ensemble = [line for line in text.splitlines() if line.startswith("| rtn-w2g128 | **ensemble**")]
    assert ensemble and f"{acc}" in ensemble[0]  # judge accuracy against the toy ground truth, not blank
    fp = evaluate["toy"]["fp"]["test"]["accuracy"]
    assert f"{100 * fp:.1f}" in text
