"""The CI metrics gate on hand-made `dvc metrics diff --json` payloads."""

from qmr.gate import check

TOL = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"max_drop": 0.02}, "toy.*.test.degradation_pct": {"max_rise": 5.0}}}


def test_unchanged_metrics_pass():
    diff = {"metrics/evaluate.json": {"toy.fp.test.accuracy": {"old": 0.9, "new": 0.9, "diff": 0}}}
    violations, watched = check(diff, TOL)
    assert violations == [] and len(watched) == 1


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
        import pytest

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
