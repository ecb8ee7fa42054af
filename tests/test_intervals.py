"""Confidence intervals (qmr.stats) against published values, and the metrics files and report carrying them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from qmr.stats import bootstrap_ratio, overlap, t_cdf, t_interval, t_quantile, verdict, wilson

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "k, n, lo, hi",
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat. Med. 17:857-872,
        # Table I, method 3 (score interval without continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # 8/10: p = 0.8, z = 1.95996: center (0.8 + 0.19207) / 1.38415 = 0.71674, half 0.22658
        (8, 10, 0.4902, 0.9433),
    ],
)
def test_wilson_matches_published_values(k, n, lo, hi):
    assert wilson(k, n) == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_edge_cases():
    assert wilson(0, 0) is None
    assert wilson(10, 10)[1] == 1.0 and wilson(10, 10)[0] == pytest.approx(0.7225, abs=5e-5)  # Newcombe's 29/29 style bound
    with pytest.raises(ValueError, match="k: got 11"):
        wilson(11, 10)


@pytest.mark.parametrize(
    "p, df, t",
    # two-sided 95% (p = 0.975) and 99% (p = 0.995) critical values from any Student t table
    [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 4, 2.7764), (0.975, 9, 2.2622), (0.975, 29, 2.0452),
     (0.975, 120, 1.9799), (0.995, 4, 4.6041), (0.995, 10, 3.1693), (0.025, 5, -2.5706)],
)  # fmt: skip
def test_t_quantile_matches_the_table(p, df, t):
    assert t_quantile(p, df) == pytest.approx(t, abs=5e-5)


def test_t_cdf_and_interval():
    assert t_cdf(0.0, 3) == pytest.approx(0.5)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    # [0.7, 0.8, 0.9]: mean 0.8, s 0.1, t(0.975, 2) 4.3027 -> 0.8 ± 0.24841
    assert t_interval([0.7, 0.8, 0.9]) == pytest.approx((0.55159, 1.04841), abs=1e-5)
    # [12.0, 15.0, 11.0, 14.0, 13.0]: mean 13, s sqrt(2.5), t(0.975, 4) 2.7764 -> 13 ± 1.9632
    assert t_interval([12.0, 15.0, 11.0, 14.0, 13.0]) == pytest.approx((11.0368, 14.9632), abs=1e-4)
    assert t_interval([0.5]) is None and t_interval([]) is None


def test_bootstrap_ratio_is_seeded_and_covers_the_point_value():
    n = 400
    fp = [i % 10 != 0 for i in range(n)]  # 90%
    q = [i % 2 == 0 and i % 10 != 0 for i in range(n)]  # 40%
    r = [(i % 2 == 0 or i % 4 == 1) and i % 10 != 0 for i in range(n)]  # 65%: recovery (0.65-0.40)/(0.90-0.40) = 0.5
    a = bootstrap_ratio(fp, q, r, seed=0)
    assert a == bootstrap_ratio(fp, q, r, seed=0) and a != bootstrap_ratio(fp, q, r, seed=1)
    assert a[0] < 0.5 < a[1] and 0.05 < a[1] - a[0] < 0.3
    assert bootstrap_ratio(fp, fp, r, seed=0) is None  # no gap to recover: not resolved


def test_overlap_and_verdict():
    assert overlap((0.1, 0.3), (0.3, 0.5)) and not overlap((0.1, 0.2), (0.3, 0.5))
    assert verdict((0.1, 0.3), (0.25, 0.5)) == "not significant"
    assert verdict((0.6, 0.7), (0.25, 0.5)) == "higher" and verdict((0.1, 0.2), (0.25, 0.5)) == "lower"
    assert verdict(None, (0.1, 0.2)) is None


# --- the stages: metrics/evaluate.json and metrics/restore.json carry intervals; the report reads them ---

ACCURACY = {"fp": 0.9, "gptq-w4a16": 0.88, "rtn-w2g128": 0.5}


def _traces(variant: str, bench: str, n: int = 100) -> list[dict]:
    right = round(ACCURACY[variant] * n) if bench != "mine" else n
    return [{"id": f"{bench}-{i}", "sample": 0, "pred": "1" if i < right else "2", "correct": i < right, "tokens": 10, "seconds": 0.1,
             "extraction": "answer_is", "steps": ["a", "b"]} for i in range(n)]  # fmt: skip


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch project with synthetic traces for fp, a near-fp and a damaged variant; nothing trained."""
    from qmr.io import write_json, write_jsonl
    from qmr.params import load_params

    params = load_params(REPO / "params.yaml")
    variants = {k: v for k, v in params.quantize.variants.items() if k in ACCURACY}
    params = dataclasses.replace(params, quantize=dataclasses.replace(params.quantize, variants=variants),
                                 recovery=dataclasses.replace(params.recovery, variants=["rtn-w2g128"]))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    from qmr import paths

    for variant in variants:
        for bench in params.generate.benchmarks:
            paths.traces("toy", variant, bench).parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(paths.traces("toy", variant, bench), _traces(variant, bench))
        write_json(paths.quantized_model("toy", variant) / "quantize.json", {"scheme": variant})
    write_json(paths.restored_model("toy", "rtn-w2g128") / "restore.json", {"trained": False, "message": "no pairs"})
    write_json(paths.silver("toy", "rtn-w2g128").with_suffix(".stats.json"), {"pairs": 0})
    return params


def test_metrics_files_carry_intervals_and_the_report_marks_overlaps(project, tmp_path):
    from qmr.report import render_report
    from qmr.stages import evaluate, reevaluate

    evaluate.run(project)
    ev = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())["toy"]
    m = ev["gptq-w4a16"]["test"]
    assert m["accuracy"] == 0.88 and m["problems"] == 100
    assert m["accuracy_ci"] == pytest.approx(list(wilson(88, 100)), abs=1e-4)
    assert list(m)[:3] == ["problems", "accuracy", "accuracy_ci"]  # beside the point value; other keys kept
    assert {"sample_accuracy", "format_compliance", "degradation_pct", "flips"} <= set(m)

    reevaluate.run(project)
    rs = json.loads((tmp_path / "metrics" / "restore.json").read_text())["toy"]["rtn-w2g128"]["test"]
    assert rs["problems"] == 100 and rs["accuracy_fp"] == 0.9 and rs["accuracy_quantized"] == 0.5
    assert rs["accuracy_fp_ci"] == pytest.approx(list(wilson(90, 100)), abs=1e-4)
    assert rs["accuracy_restored_ci"] == rs["accuracy_quantized_ci"]  # nothing trained: restored is quantized
    assert rs["recovery_ratio"] == 0.0 and rs["recovery_ratio_ci"] == [0.0, 0.0]  # the same answers in every resample

    # the CI gate's watched keys are still there, with their values
    from qmr.gate import flatten, read_tolerances, watched_values

    tol = read_tolerances(str(REPO / ".ci" / "tolerances.yaml"))
    flat = {"metrics/evaluate.json": flatten({"toy": ev}),
            "metrics/restore.json": flatten(json.loads((tmp_path / "metrics" / "restore.json").read_text()))}  # fmt: skip
    values = watched_values(flat, {f: tol[f] for f in flat})
    assert values[("metrics/evaluate.json", "toy.fp.test.accuracy")] == 0.9
    assert values[("metrics/restore.json", "mean(toy.*.test.recovery_ratio)")] == 0.0

    restore = json.loads((tmp_path / "metrics" / "restore.json").read_text())
    text = render_report({"toy": ev}, None, restore, ["test", "control"], reference="fp")
    table1 = text.split("## Restoration")[0]
    rows = {line.split(" | ")[1]: line for line in table1.splitlines() if line.startswith("| toy | ")}
    assert "90.0 [82.6, 94.5] (+0.0)" in rows["fp"]  # the reference itself: no verdict
    assert "88.0 [80.2, 93.0] (+2.2, not significant)" in rows["gptq-w4a16"]  # overlaps fp's interval
    assert "50.0 [40.4, 59.6] (+44.4)" in rows["rtn-w2g128"]  # apart from fp's: no mark
    row = f"| toy | rtn-w2g128 | {project.recovery.subset} | {project.restore.objective} | test |"  # the params' subset and objective
    restored = next(line for line in text.splitlines() if line.startswith(row))
    assert "| 0.0 [0.00, 0.00] | not significant | lower |" in restored  # restored vs quantized, restored vs fp
    assert "not significant" in text.split("Brackets: 95% intervals")[1]  # the legend explains the word
