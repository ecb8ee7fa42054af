"""The declared DVC plots draw the right numbers: one mark per row, never a stack of unrelated rows.

`dvc plots show --json` renders every top-level plot of dvc.yaml with its template (.dvc/plots/) over
the committed plot files. For each plot, the fields that place a mark (axes, offsets, colours, panels;
a calculated panel field counts as the fields it is built from) must identify a row: two rows sharing
them would be drawn on top of each other or stacked into a meaningless sum (the bug this guards
against: fp's accuracy stacked from 24 rows to 2.7). Aggregating plots (the confusion matrix counts
cases) must still keep every variant and revision apart.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHANNELS = ("x", "y", "xOffset", "yOffset", "color", "strokeDash", "shape", "detail", "row", "column")


def _show(project: Path) -> dict:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    out = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["data"]


def _encodings(spec: dict) -> tuple[dict, list[str]]:
    """(encoding channels, facet fields) of a single or faceted vega-lite spec."""
    inner = spec.get("spec", spec)
    facet = spec.get("facet", {})
    facet_fields = [facet["field"]] if "field" in facet else [v["field"] for v in facet.values() if "field" in v]
    return inner.get("encoding", {}), facet_fields


def placement_problems(spec: dict) -> list[str]:
    """Why marks of this rendered plot would overlap or stack unrelated rows ([] when they cannot)."""
    rows = spec["data"]["values"]
    if not rows:
        return []
    calculated = {
        t["as"]: re.findall(r"datum\.(\w+)", t["calculate"]) for t in spec.get("transform", []) if "calculate" in t
    }
    encoding, facet_fields = _encodings(spec)
    mark = spec.get("spec", spec).get("mark", {})
    mark = mark.get("type") if isinstance(mark, dict) else mark
    aggregated = any("aggregate" in ch for ch in encoding.values())
    # the measured value: a line's y; a bar's quantitative axis (stacked only where the template says so)
    measured = "y" if mark == "line" else next(
        (c for c in ("x", "y") if encoding.get(c, {}).get("type") == "quantitative"), None
    )
    key: list[str] = []
    for channel in CHANNELS:
        field = encoding.get(channel, {}).get("field")
        if field and channel != measured:
            key.append(field)
    key += facet_fields
    expanded = sorted({src for f in key for src in calculated.get(f, [f])})
    problems = [f"rows carry {c!r} but no channel or panel separates it" for c in ("rev", "variant", "run") if c in rows[0] and c not in expanded]
    if aggregated:
        return problems  # counts over rows are the point; only the separation above matters
    stacked = encoding.get(measured, {}).get("stack") == "zero"
    if stacked:  # a stacked share bar: its segments (colour) are part of the key
        expanded = sorted(set(expanded) | {encoding["color"]["field"]})
    counts = Counter(tuple(r.get(f) for f in expanded) for r in rows)
    dupes = [k for k, n in counts.items() if n > 1]
    if dupes:
        problems.append(f"{len(dupes)} marks at one place {expanded}, e.g. {dupes[0]}")
    return problems


@pytest.fixture(scope="module")
def rendered() -> dict:
    return _show(ROOT)


def test_every_declared_plot_renders(rendered):
    """Each plot renders; only a file with no rows (no dpo run: no margins) renders nothing."""
    declared = {next(iter(p)): next(iter(p.values())) for p in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]}
    assert sorted(rendered) == sorted(declared)
    for name, spec in declared.items():
        files = list(spec["y"])
        if not rendered[name]:
            assert all(len((ROOT / f).read_text().splitlines()) <= 1 for f in files), name
            continue
        assert rendered[name][0]["type"] == "vega", name


def test_no_plot_stacks_or_overlaps_rows(rendered):
    problems = {
        name: placement_problems(plot[0]["content"]) for name, plot in rendered.items() if plot
    }
    assert not {k: v for k, v in problems.items() if v}


def test_fp_accuracy_reads_as_an_accuracy(rendered):
    rows = rendered["accuracy per variant"][0]["content"]["data"]["values"]
    fp = [float(r["accuracy"]) for r in rows if r["variant"] == "fp"]
    assert fp and all(0.0 <= a <= 1.0 for a in fp)


def test_error_shares_sum_to_one_per_variant(rendered):
    rows = rendered["first-error types (share of each variant's labels)"][0]["content"]["data"]["values"]
    total = Counter()
    for r in rows:
        total[(r["model"], r["variant"])] += float(r["share"])
    assert total and all(abs(t - 1.0) < 0.01 or t == 0.0 for t in total.values()), total


def test_one_training_curve_per_restored_variant(rendered):
    rows = rendered["restore training loss"][0]["content"]["data"]["values"]
    runs = {r["run"] for r in rows}
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert runs == {f"{m}/{v}" for m in params["models"] for v in params["recovery"]["variants"]}


def test_a_broken_plot_is_caught(tmp_path, rendered):
    """The check fails on the old declaration: every (variant, benchmark) row on one y key."""
    shutil.copytree(ROOT / ".dvc" / "plots", tmp_path / ".dvc" / "plots")
    (tmp_path / ".dvc" / "config").write_text("")
    shutil.copytree(ROOT / "plots" / "evaluate", tmp_path / "plots" / "evaluate")
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {"plots": [{"old": {"template": "bar_horizontal", "x": "accuracy", "y": {"plots/evaluate/accuracy.csv": "variant"}}}]}
        )
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    old = _show(tmp_path)["old"][0]["content"]
    assert any("marks at one place" in p for p in placement_problems(old))
