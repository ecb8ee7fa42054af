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
    acc = vote["toy"]["rtn-w2g128"]["accuracy"]["ensemble"]["step_accuracy_answered"]
    ensemble = [line for line in text.splitlines() if line.startswith("| rtn-w2g128 | **ensemble**")]
    assert ensemble and f"{acc}" in ensemble[0]  # judge accuracy against the toy ground truth, not blank
    fp = evaluate["toy"]["fp"]["test"]["accuracy"]
    assert f"{100 * fp:.1f}" in text


def test_the_report_shows_only_this_params_files_models_experiments(tmp_path, monkeypatch):
    """A real model's report used to carry the committed toy ablation table (metrics/ablation.md was a dep
    of `report` whatever the model)."""
    import dataclasses
    import shutil

    from qmr.modelspec import ModelSpec
    from qmr.params import load_params
    from qmr.stages import report

    params = load_params(METRICS.parent / "params.yaml")
    shutil.copytree(METRICS, tmp_path / "metrics")
    monkeypatch.chdir(tmp_path)
    report.run(params)
    assert "## Ablation" in (tmp_path / "metrics" / "report.md").read_text()  # the toy's own experiments
    other = dataclasses.replace(params, models={"qwen2.5-0.5b-instruct": ModelSpec(source="hub", hub_id="Qwen/Qwen2.5-0.5B-Instruct", revision="x")})
    report.run(other)
    assert "## Ablation" not in (tmp_path / "metrics" / "report.md").read_text()
