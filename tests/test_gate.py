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
