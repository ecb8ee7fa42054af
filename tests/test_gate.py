"""The CI metrics gate on hand-made `dvc metrics diff --json` payloads."""

import pytest

from qmr.gate import GateConfigError, check, experiment_metrics, spread, validate

TOL = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"max_drop": 0.02}, "toy.*.test.degradation_pct": {"max_rise": 5.0}}}


def test_unchanged_metrics_pass():
    diff = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"old": 0.9, "new": 0.9, "diff": 0},
                                      "toy.q.test.degradation_pct": {"old": 3.0, "new": 3.0, "diff": 0}}}
    violations, watched = check(diff, TOL)
    assert violations == [] and len(watched) == 2


def test_worsened_metric_fails_with_a_readable_message():
    diff = {
        "metrics/evaluate.json": {
            "toy.fp.test.accuracy": {"old": 0.9, "new": 0.8},
            "toy.rtn-w2g32.test.degradation_pct": {"old": 20.0, "new": 31.0},
            "toy.rtn-w2g32.test.flips": {"old": 10, "new": 99},  # not watched
        }
    }
    violations, watched = check(diff, TOL)
    assert len(violations) == 2 and len(watched) == 2
    text = "\n".join(map(str, violations))
    assert "toy.fp.test.accuracy moved 0.9 -> 0.8" in text and "max_drop 0.02" in text
    assert "max_rise 5.0" in text


def test_disappearing_metric_fails():
    diff = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"old": 0.9, "new": None}}}
    violations, _ = check(diff, TOL)
    assert violations and "disappeared" in violations[0].limit


def test_gate_command_on_a_real_dvc_repo(tmp_path):
    """`qmr gate` runs `dvc metrics diff` in a git + DVC repo: passes unchanged, fails a worsened metric."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    # PATH without the environment's bin/, as when CI calls .venv/bin/qmr directly
    git_dir = os.path.dirname(shutil.which("git"))
    env = {**os.environ, "PATH": os.pathsep.join([git_dir, "/usr/bin", "/bin"]), "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip

    def sh(*cmd):
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)

    assert sh("git", "init", "-q").returncode == 0
    assert sh(sys.executable, "-m", "dvc", "init", "-q").returncode == 0
    (tmp_path / "metrics").mkdir()
    metrics = tmp_path / "metrics" / "evaluate.json"
    metrics.write_text(json.dumps({"toy": {"fp": {"test": {"accuracy": 0.97, "degradation_pct": 0.0}}}}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"metrics": ["metrics/evaluate.json"]}))
    (tmp_path / "tol.yaml").write_text(yaml.safe_dump(TOL))
    assert sh("git", "add", "-A").returncode == 0 and sh("git", "commit", "-qm", "m").returncode == 0

    gate = [sys.executable, "-m", "qmr", "gate", "--tolerances", "tol.yaml"]
    ok = sh(*gate)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "toy.fp.test.accuracy" in ok.stdout and "within tolerance" in ok.stdout

    metrics.write_text(json.dumps({"toy": {"fp": {"test": {"accuracy": 0.90, "degradation_pct": 0.0}}}}))
    bad = sh(*gate)
    assert bad.returncode == 1
    assert "toy.fp.test.accuracy moved 0.97 -> 0.9 (drop 0.07 > max_drop 0.02)" in bad.stderr

    # a tolerance file that watches nothing, or is not a mapping, cannot pass
    (tmp_path / "typo.yaml").write_text(yaml.safe_dump({"metrics/evaluate.json": {"toy.fp.tset.accuracy": {"max_drop": 0.1}}}))
    typo = sh(sys.executable, "-m", "qmr", "gate", "--tolerances", "typo.yaml")
    assert typo.returncode == 1 and "toy.fp.tset.accuracy: pattern matches no metric" in typo.stderr
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    bad_file = sh(sys.executable, "-m", "qmr", "gate", "--tolerances", "list.yaml")
    assert bad_file.returncode == 2 and "list.yaml: got list; allowed: a non-empty mapping" in bad_file.stderr
    assert "Traceback" not in bad_file.stderr


AGG = {"metrics/restore.json": {"toy.*.test.recovery_ratio": {"aggregate": "mean", "max_drop": 0.2}}}


def test_aggregated_rule_watches_the_mean_not_each_cell():
    """One hypersensitive cell may move a lot; the mean over the variants is what is gated."""
    diff = {"metrics/restore.json": {
        "toy.rtn-w2g128.test.recovery_ratio": {"old": 0.70, "new": 0.45},   # -0.25 alone
        "toy.rtn-w2g32.test.recovery_ratio": {"old": 0.60, "new": 0.75},    # +0.15
        "toy.rtn-w2g32.test.accuracy_restored": {"old": 0.8, "new": 0.1},   # not watched
    }}  # fmt: skip
    violations, watched = check(diff, AGG)
    assert violations == [] and len(watched) == 1
    assert watched[0][1] == "mean(toy.*.test.recovery_ratio)" and abs(watched[0][2] - 0.65) < 1e-9 and abs(watched[0][3] - 0.60) < 1e-9
    diff["metrics/restore.json"]["toy.rtn-w2g32.test.recovery_ratio"]["new"] = 0.30  # mean 0.375: a drop of 0.275
    violations, _ = check(diff, AGG)
    assert len(violations) == 1 and "max_drop 0.2" in str(violations[0])


def test_first_matching_pattern_governs_a_metric():
    tol = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"max_drop": 0.01}, "toy.*.test.accuracy": {"max_drop": 0.5}}}
    diff = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"old": 0.9, "new": 0.85}, "toy.q.test.accuracy": {"old": 0.5, "new": 0.3}}}
    violations, watched = check(diff, tol)
    assert [v.key for v in violations] == ["toy.fp.test.accuracy"] and len(watched) == 2


def test_a_pattern_that_matches_nothing_fails_the_gate():
    """A typo in a tolerance key must not turn into '0 watched metrics within tolerance'."""
    tol = {"metrics/evaluate.json": {"toy.fp.tset.accuracy": {"max_drop": 0.02}}}
    diff = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"old": 0.9, "new": 0.9}}}
    violations, watched = check(diff, tol)
    assert watched == []
    text = "\n".join(map(str, violations))
    assert "toy.fp.tset.accuracy: pattern matches no metric" in text and "watches no metric at all" in text
    # a whole file missing from the diff (e.g. a misspelt metrics path) fails the same way
    violations, _ = check(diff, {"metrics/evalute.json": {"toy.*": {"max_drop": 0.1}}})
    assert any("matches no metric" in str(v) for v in violations)


@pytest.mark.parametrize("tol, fragment", [
    ([1, 2], "got list; allowed: a non-empty mapping"),
    ({}, "got dict; allowed: a non-empty mapping"),
    ({"metrics/a.json": None}, "metrics/a.json: got None"),
    ({"metrics/a.json": {"x": 0.1}}, "'x': got 0.1; allowed: a mapping with max_drop and/or max_rise"),
    ({"metrics/a.json": {"x": {"max_dorp": 0.1, "max_rise": 1}}}, "unknown key(s) ['max_dorp']"),
    ({"metrics/a.json": {"x": {"max_drop": -1}}}, "max_drop: got -1; allowed: a number >= 0"),
    ({"metrics/a.json": {"x": {"max_drop": "0.1"}}}, "max_drop: got '0.1'"),
    ({"metrics/a.json": {"x": {"max_drop": 0.1, "aggregate": "median"}}}, "aggregate: got 'median'; allowed: mean"),
])  # fmt: skip
def test_malformed_tolerances_name_the_key(tol, fragment):
    with pytest.raises(GateConfigError, match=None) as info:
        validate(tol, "tol.yaml")
    assert fragment in str(info.value) and str(info.value).startswith("tol.yaml")


def test_spread_over_runs_uses_the_gate_rules():
    tol = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"max_drop": 0.03}},
           "metrics/restore.json": {"toy.*.test.recovery_ratio": {"aggregate": "mean", "max_drop": 0.2}}}
    runs = {
        "main (committed)": {"metrics/evaluate.json": {"toy.fp.test.accuracy": 0.92},
                             "metrics/restore.json": {"toy.a.test.recovery_ratio": 0.7, "toy.b.test.recovery_ratio": 0.6}},
        "seed1": {"metrics/evaluate.json": {"toy.fp.test.accuracy": 0.90},
                  "metrics/restore.json": {"toy.a.test.recovery_ratio": 0.5, "toy.b.test.recovery_ratio": 0.6}},
        "seed2": {"metrics/evaluate.json": {"toy.fp.test.accuracy": 0.95},
                  "metrics/restore.json": {"toy.a.test.recovery_ratio": 0.8, "toy.b.test.recovery_ratio": 0.8}},
    }  # fmt: skip
    rows = {r["metric"]: r for r in spread(runs, tol, reference="main (committed)")}
    fp, rec = rows["toy.fp.test.accuracy"], rows["mean(toy.*.test.recovery_ratio)"]
    assert (fp["min"], fp["max"], fp["max_drop"]) == (0.90, 0.95, 0.03)
    assert abs(fp["largest_drop"] - 0.02) < 1e-9 and abs(fp["largest_rise"] - 0.03) < 1e-9
    assert abs(rec["mean"] - 0.6666666) < 1e-6 and abs(rec["min"] - 0.55) < 1e-9 and abs(rec["largest_drop"] - 0.1) < 1e-9


def test_experiment_metrics_reads_dvc_exp_show_json():
    def data(acc):
        return {"metrics": {"metrics/evaluate.json": {"data": {"toy": {"fp": {"test": {"accuracy": acc}}}}}}, "params": {}}

    show = [
        {"rev": "workspace", "name": None, "data": data(0.5), "experiments": None},
        {"rev": "f70ec87" + "0" * 33, "name": "main", "data": data(0.9), "experiments": [
            {"revs": [{"rev": "48f639c" + "0" * 33, "name": "seed2", "data": data(0.8)}]},
            {"revs": [{"rev": "a1b2c3d" + "0" * 33, "name": "seed1", "data": data(0.7)}]},
            {"revs": [{"rev": "ffffff0" + "0" * 33, "name": "failed", "data": {"metrics": {}}}]},
        ]},
    ]  # fmt: skip
    runs = experiment_metrics(show)
    assert list(runs) == ["main (committed)", "seed2", "seed1"]
    assert runs["seed1"] == {"metrics/evaluate.json": {"toy.fp.test.accuracy": 0.7}}
    assert list(experiment_metrics(show, only=["seed1"])) == ["main (committed)", "seed1"]
    assert list(experiment_metrics(show, only=["48f639c"])) == ["main (committed)", "seed2"]
