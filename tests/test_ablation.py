"""Ablation tables from `dvc.api.exp_show` rows (the flattened form DVC returns)."""

from __future__ import annotations

import pytest

from qmr.ablation import experiment_records, render, summarize


def _row(name, subset, objective, seed, recovery, pairs=100, state="Success", typ="branch_commit", prefixed=False):
    key = "metrics/restore.json:toy.v.test.recovery_ratio" if prefixed else "toy.v.test.recovery_ratio"
    return {
        "Experiment": name, "rev": name[:7], "typ": typ, "State": state,
        "recovery.subset": subset, "restore.objective": objective, "restore.merge": "none", "restore.seed": seed,
        "toy.v.pairs": pairs, "toy.v.trained": pairs > 0, key: recovery,
        "toy.v.test.accuracy_restored": 0.8 + recovery / 10, "toy.v.control.accuracy_restored": 0.9,
    }  # fmt: skip


ROWS = [
    {"Experiment": None, "rev": "workspace", "typ": "baseline", "State": None, "toy.v.pairs": 1},
    _row("base", "ALL", "sft", 0, 0.8, typ="baseline"),
    _row("exp-a", "ALL", "sft", 1, 0.7),
    _row("exp-b", "ALL", "sft", 2, 0.9, prefixed=True),
    _row("exp-c", "ALL", "dpo", 0, -0.1),
    _row("exp-d", "ME", "sft", 0, 0.0, pairs=0),
    _row("exp-q", "CE", "sft", 0, 0.5, state="Queued"),
]


def test_records_skip_workspace_and_unfinished_and_read_prefixed_keys():
    recs = experiment_records(ROWS, "toy", "v")
    assert [r["experiment"] for r in recs] == ["base", "exp-a", "exp-b", "exp-c", "exp-d"]
    assert recs[0]["baseline"] and not recs[1]["baseline"]
    assert recs[2]["test.recovery_ratio"] == 0.9  # from the file-prefixed column
    assert recs[4]["pairs"] == 0 and recs[4]["trained"] is False


def test_summary_is_mean_and_sample_std_over_seeds():
    summary = {(e["subset"], e["objective"]): e for e in summarize(experiment_records(ROWS, "toy", "v"))}
    sft = summary[("ALL", "sft")]
    assert sft["runs"] == 3 and sft["seeds"] == [0, 1, 2]
    assert sft["test.recovery_ratio.mean"] == pytest.approx(0.8)
    assert sft["test.recovery_ratio.std"] == pytest.approx(0.1)
    assert summary[("ALL", "dpo")]["test.recovery_ratio.std"] is None  # one run: no spread


def test_render_has_both_tables():
    recs = experiment_records(ROWS, "toy", "v")
    text = "\n".join(render("toy", "v", recs, summarize(recs)))
    assert "| exp-b | ALL | sft | none | 2 | 100 | 89.0% | 0.900 | 90.0% | — |" in text
    assert "| ALL | sft | none | 3 | 0.800 ± 0.100 |" in text
