"""Ablation tables from `dvc.api.exp_show` rows (the flattened form DVC returns)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmr.ablation import experiment_records, is_seed, param_keys, render, summarize

REPO = Path(__file__).resolve().parents[1]
# the params keys the rows below carry (a real run passes param_keys(params.yaml))
PARAMS = ["seed", "recovery.variants", "recovery.subset", "recovery.seed", "restore.objective", "restore.merge", "restore.learning_rate", "restore.seed"]


def _row(name, subset, objective, seed, recovery, pairs=100, state="Success", typ="branch_commit", prefixed=False, rseed=None, lr=2e-4):
    key = "metrics/restore.json:toy.v.test.recovery_ratio" if prefixed else "toy.v.test.recovery_ratio"
    return {
        "Experiment": name, "rev": name[:7], "typ": typ, "State": state, "Created": "2026-12-02", "seed": 0.0,
        "recovery.subset": subset, "restore.objective": objective, "restore.merge": "none", "restore.seed": float(seed),
        "recovery.seed": float(seed if rseed is None else rseed), "restore.learning_rate": lr,
        "recovery.variants": ["v", "w"] if typ == "baseline" else ["v"],  # experiments may run one variant
        "toy.v.pairs": pairs, "toy.v.trained": pairs > 0, "toy.v.steps": float(pairs // 4), key: recovery,
        "metrics/speed/restore.json:toy.v.train_seconds": 40.0 + seed,
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


def test_seed_keys_and_params_keys():
    assert [k for k in param_keys({"seed": 0, "base": {"toy": {"seed": 1, "lr": 1e-3}}, "recovery": {"variants": ["a", "b"], "seed": 0}})
            ] == ["seed", "base.toy.seed", "base.toy.lr", "recovery.variants", "recovery.seed"]  # fmt: skip
    assert [k for k in ("seed", "base.toy.seed", "restore.seed", "recovery.seed", "seeds", "restore.seed_pairs") if is_seed(k)] == [
        "seed", "base.toy.seed", "restore.seed", "recovery.seed"]  # fmt: skip
    keys = param_keys(__import__("yaml").safe_load((REPO / "params.yaml").read_text()))
    assert {"seed", "recovery.seed", "restore.seed", "recovery.subset", "restore.objective"} <= set(keys)


def test_records_skip_workspace_and_unfinished_and_read_prefixed_keys():
    recs = experiment_records(ROWS, "toy", "v", PARAMS)
    assert [r["experiment"] for r in recs] == ["base", "exp-a", "exp-b", "exp-c", "exp-d"]
    assert recs[0]["baseline"] and not recs[1]["baseline"]
    assert recs[2]["test.recovery_ratio"] == 0.9  # from the file-prefixed column
    assert recs[4]["pairs"] == 0 and recs[4]["trained"] is False
    assert recs[1]["steps"] == 25 and recs[1]["train_seconds"] == 41.0  # steps from restore.json, seconds from the speed file
    assert recs[1]["seeds"] == {"seed": 0, "recovery.seed": 1, "restore.seed": 1}  # every seed key, as integers
    assert recs[1]["setting"] == {}  # no other params key differs among these runs


def test_summary_is_n_mean_sample_std_and_t_interval_over_seeds():
    summary = {(e["subset"], e["objective"]): e for e in summarize(experiment_records(ROWS, "toy", "v", PARAMS))}
    sft = summary[("ALL", "sft")]
    assert sft["runs"] == 3 and sft["seeds"] == ["0/0", "1/1", "2/2"] and sft["seed_keys"] == ["recovery.seed", "restore.seed"]
    assert sft["test.recovery_ratio.n"] == 3
    assert sft["test.recovery_ratio.mean"] == pytest.approx(0.8)
    assert sft["test.recovery_ratio.std"] == pytest.approx(0.1)
    # mean ± t(0.975, 2) * s / sqrt(3), t(0.975, 2) = 4.303 (any Student t table): 0.8 ± 0.2484
    assert sft["test.recovery_ratio.ci"] == pytest.approx([0.5516, 1.0484], abs=1e-4)
    dpo = summary[("ALL", "dpo")]
    assert dpo["runs"] == 1 and dpo["test.recovery_ratio.std"] is None and dpo["test.recovery_ratio.ci"] is None  # one seed
    assert dpo["test.recovery_ratio.vs_reference"] == "one seed"
    assert sft["reference"] is True and dpo["reference"] is False  # the baseline commit's setting


def _grid_rows():
    """ALL/sft and CE/sft over seeds 0-2 (restore.seed and recovery.seed together), EE over seeds 0-1, a
    re-run of the baseline's setting and seeds under another name, and one changed learning rate."""
    rows = [_row("base", "ALL", "sft", 0, 0.8, typ="baseline"), _row("all-s1", "ALL", "sft", 1, 0.7), _row("all-s2", "ALL", "sft", 2, 0.9),
            _row("all-s0-again", "ALL", "sft", 0, 0.8),
            _row("ce-s0", "CE", "sft", 0, 0.2), _row("ce-s1", "CE", "sft", 1, 0.25), _row("ce-s2", "CE", "sft", 2, 0.3),
            _row("ee-s0", "EE", "sft", 0, 0.6), _row("ee-s1", "EE", "sft", 1, 0.75, rseed=0),
            _row("all-lr", "ALL", "sft", 0, 0.5, lr=1e-3)]  # fmt: skip
    return experiment_records(rows, "toy", "v", PARAMS)


def test_groups_are_everything_but_the_seeds():
    recs = _grid_rows()
    assert all(r["setting"] == {"restore.learning_rate": 1e-3 if r["experiment"] == "all-lr" else 2e-4} for r in recs)
    summary = summarize(recs)
    by = {(e["subset"], e["setting"]["restore.learning_rate"]): e for e in summary}
    assert len(summary) == 4 and set(by) == {("ALL", 2e-4), ("ALL", 1e-3), ("CE", 2e-4), ("EE", 2e-4)}
    base = by[("ALL", 2e-4)]
    assert base["runs"] == 3 and base["duplicates"] == ["all-s0-again"]  # same setting and seeds: one run, not two
    assert base["experiments"] == ["base", "all-s1", "all-s2"]
    ee = by[("EE", 2e-4)]
    assert ee["seeds"] == ["0/0", "0/1"]  # a run differing in restore.seed only is another seed
    ce = by[("CE", 2e-4)]
    # 0.25 ± 4.303 * 0.05 / sqrt(3) = 0.25 ± 0.1242
    assert ce["test.recovery_ratio.ci"] == pytest.approx([0.1258, 0.3742], abs=1e-4)
    assert ce["test.recovery_ratio.vs_reference"] == "lower"  # [0.13, 0.37] vs [0.55, 1.05]: apart
    # EE: 0.675 ± 12.706 * 0.1061 / sqrt(2) = 0.675 ± 0.953: overlaps the baseline's interval
    assert ee["test.recovery_ratio.vs_reference"] == "not significant"
    assert by[("ALL", 1e-3)]["test.recovery_ratio.vs_reference"] == "one seed"
    assert "test.recovery_ratio.vs_reference" not in base and base["reference"]


def test_render_shows_intervals_one_seed_and_not_significant():
    recs = _grid_rows()
    text = "\n".join(render("toy", "v", recs, summarize(recs)))
    assert "| experiment | subset | objective | merge | restore.learning_rate | seed (recovery.seed/restore.seed) |" in text
    assert "| ce-s1 | CE | sft | none | 0.0002 | 1/1 | 100 | 25 | 82.5% | 0.250 | 90.0% | — | 41 |" in text
    assert "| CE | sft | none | 0.0002 | 3 | 100 | 25 | 0.250 ± 0.050 [0.126, 0.374] |" in text
    assert "| ALL | sft | none | 0.001 | 1 | 100 | 25 | 0.500 (one seed) |" in text
    ce = next(line for line in text.splitlines() if line.startswith("| CE | sft | none | 0.0002 | 3 |"))
    assert "| 41 | lower |" in ce  # mean training seconds over seeds 0, 1, 2: 40, 41, 42
    ee = next(line for line in text.splitlines() if line.startswith("| EE | sft | none | 0.0002 | 2 |"))
    assert ee.endswith("| not significant |")
    assert ee.split(" | ")[5:7] == ["100", "25"]  # pairs, steps
    assert next(line for line in text.splitlines() if line.startswith("| ALL | sft | none | 0.0002 | 3 |")).endswith("| (baseline) |")


def test_paired_by_seed_resolves_a_gap_the_overlap_rule_calls_not_significant():
    """Per-seed differences cancel the spread the seeds share: ALL_NS is 0.03 above ALL on every seed
    while both spread by ±0.1 over seeds — overlapping intervals, but a paired interval clear of 0."""
    rows = [_row("base", "ALL", "sft", 0, 0.8, typ="baseline"), _row("all-s1", "ALL", "sft", 1, 0.7), _row("all-s2", "ALL", "sft", 2, 0.9),
            _row("ns-s0", "ALL_NS", "sft", 0, 0.83), _row("ns-s1", "ALL_NS", "sft", 1, 0.72), _row("ns-s2", "ALL_NS", "sft", 2, 0.94),
            _row("ee-s0", "EE", "sft", 0, 0.6), _row("ee-s5", "EE", "sft", 5, 0.5)]  # fmt: skip
    recs = experiment_records(rows, "toy", "v", PARAMS)
    by = {e["subset"]: e for e in summarize(recs)}
    ns = by["ALL_NS"]
    assert ns["test.recovery_ratio.vs_reference"] == "not significant"  # [0.56, 1.09] against [0.55, 1.05]
    paired = ns["test.recovery_ratio.paired"]
    # differences 0.03, 0.02, 0.04: mean 0.03, s 0.01, 0.03 ± 4.303 * 0.01 / sqrt(3) = 0.03 ± 0.0248
    assert paired["n"] == 3 and paired["seeds"] == ["0/0", "1/1", "2/2"]
    assert paired["mean"] == pytest.approx(0.03) and paired["ci"] == pytest.approx([0.0052, 0.0548], abs=1e-4)
    assert paired["vs_reference"] == "higher"
    assert "test.recovery_ratio.paired" not in by["EE"]  # one seed in common with the baseline: nothing to pair
    assert "test.recovery_ratio.paired" not in by["ALL"]  # the baseline itself
    text = "\n".join(render("toy", "v", recs, summarize(recs)))
    assert "Paired by seed against the baseline (ALL, sft, none)" in text
    assert "| ALL_NS | sft | none | 0/0, 1/1, 2/2 | +0.030 [+0.005, +0.055] | higher |" in text


def test_against_names_the_reference_setting_or_says_which_exist():
    from qmr.errors import UserError

    recs = _grid_rows()
    by = {(e["subset"], e["setting"]["restore.learning_rate"]): e for e in summarize(recs, against={"recovery.subset": "CE"})}
    assert by[("CE", 2e-4)]["reference"] and not by[("ALL", 2e-4)]["reference"]
    # ALL minus CE per seed: 0.6, 0.45, 0.6 -> 0.55 ± 4.303 * 0.0866 / sqrt(3) = [0.3349, 0.7651]
    assert by[("ALL", 2e-4)]["test.recovery_ratio.paired"]["ci"] == pytest.approx([0.3349, 0.7651], abs=1e-4)
    assert by[("ALL", 2e-4)]["test.recovery_ratio.vs_reference"] == "higher"
    with pytest.raises(UserError, match=r"recovery.subset=ALL: matches 2 settings.*ALL, sft, none, restore.learning_rate=0.001"):
        summarize(recs, against={"recovery.subset": "ALL"})  # two learning rates: ambiguous
    assert summarize(recs, against={"recovery.subset": "ALL", "restore.learning_rate": "0.001"})[0]["subset"]
    with pytest.raises(UserError, match=r"--against restore.lora_r: not a setting .*allowed: recovery.subset, restore.learning_rate"):
        summarize(recs, against={"restore.lora_r": "64"})


def test_render_reads_an_ablation_json_written_before_intervals():
    """metrics/ablation.json from before this format (`seed`, no `seeds`/`.ci`) still renders for `report`."""
    data = json.loads((REPO / "metrics" / "ablation.json").read_text())
    if "seeds" in data["experiments"][0]:
        pytest.skip("metrics/ablation.json has been regenerated in the new format")
    text = "\n".join(render(data["model"], data["variant"], data["experiments"], data["summary"]))
    assert "seed (restore.seed)" in text and "(one seed)" in text


STAGE = '''import json, yaml
p = yaml.safe_load(open("params.yaml"))
seed, subset = p["restore"]["seed"] + 10 * p["recovery"]["seed"], p["recovery"]["subset"]
rec = {"ALL": 0.8, "CE": 0.2}[subset] + 0.05 * (seed % 3)
m = {"pairs": 10, "trained": True, "test": {"recovery_ratio": rec, "recovery_ratio_ci": [rec - 0.1, rec + 0.1],
     "accuracy_restored": 0.5 + rec / 2}, "control": {"accuracy_restored": 0.9}}
json.dump({"toy": {"v": m}}, open("metrics/restore.json", "w"))
'''


def test_ablation_from_real_dvc_experiments(tmp_path):
    """`dvc exp run -S ...` experiments read back through dvc.api.exp_show: seeds grouped, settings apart."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    from qmr.ablation import collect

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def sh(*cmd):
        out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    params = {"seed": 0, "recovery": {"subset": "ALL", "seed": 0, "families": ["a", "b"]}, "restore": {"objective": "sft", "merge": "none", "seed": 0}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "stage.py").write_text(STAGE)
    (tmp_path / "metrics").mkdir()
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"restore": {
        "cmd": f"{sys.executable} stage.py", "deps": ["stage.py"], "params": ["recovery", "restore"],
        "metrics": [{"metrics/restore.json": {"cache": False}}]}}}))  # fmt: skip
    sh("git", "init", "-q")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh(sys.executable, "-m", "dvc", "repro", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "baseline")
    for name, sets in [("s1", ["restore.seed=1", "recovery.seed=1"]), ("s2", ["restore.seed=2", "recovery.seed=2"]),
                       ("ce-s0", ["recovery.subset=CE"]), ("ce-s1", ["recovery.subset=CE", "restore.seed=1"])]:  # fmt: skip
        sh(sys.executable, "-m", "dvc", "exp", "run", "-q", "-n", name, *[a for s in sets for a in ("-S", s)])

    recs = experiment_records(collect(repo=str(tmp_path)), "toy", "v", param_keys(params))
    assert len(recs) == 5 and {"s1", "s2", "ce-s0", "ce-s1"} < {r["experiment"] for r in recs} and sum(r["baseline"] for r in recs) == 1
    assert all(r["setting"] == {} for r in recs)  # only subset and seeds differ
    summary = {e["subset"]: e for e in summarize(recs)}
    base = summary["ALL"]
    assert base["runs"] == 3 and sorted(base["seeds"]) == ["0/0", "1/1", "2/2"] and base["seed_keys"] == ["recovery.seed", "restore.seed"]
    # seeds 0, 11, 22 -> 0.8 + 0.05 * (0, 2, 1): mean 0.85, s 0.05, 0.85 ± 4.303 * 0.05 / sqrt(3)
    assert base["test.recovery_ratio.mean"] == pytest.approx(0.85) and base["test.recovery_ratio.ci"] == pytest.approx([0.7258, 0.9742], abs=1e-4)
    ce = summary["CE"]
    # restore.seed 0 and 1 -> 0.2, 0.25: 0.225 ± 12.706 * 0.03536 / sqrt(2) = [-0.0927, 0.5427], below [0.73, 0.97]
    assert ce["runs"] == 2 and ce["test.recovery_ratio.ci"] == pytest.approx([-0.0927, 0.5427], abs=1e-4)
    assert ce["test.recovery_ratio.vs_reference"] == "lower"
    assert base["reference"] is True


def test_training_seconds_stay_out_of_the_quality_file_and_come_back_for_the_report():
    """metrics/ablation.json holds no wall-clock number; metrics/speed/ablation.json does, and the report
    renders the same table from the two as `qmr ablation` did from the experiments."""
    from qmr.ablation import split_timings, with_timings

    recs = _grid_rows()
    summary = summarize(recs)
    untimed, timings = split_timings(recs)
    assert "train_seconds" not in json.dumps({"experiments": untimed, "summary": summary})
    assert timings["train_seconds"]["ce-s2"] == 42.0
    assert render("toy", "v", with_timings(untimed, timings), summary) == render("toy", "v", recs, summary)
    assert "| — |" in "\n".join(render("toy", "v", with_timings(untimed, None), summary))  # no speed file: no seconds
