"""Real-model presets: each composes, validates, and lays out its DVC DAG without downloading anything."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from qmr.cli import main
from qmr.presets import available, compose

REPO = Path(__file__).resolve().parents[1]
PAPER_MODELS = {
    "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
    "llama-3.2-1b-instruct", "llama-3.2-3b-instruct", "llama-3.1-8b-instruct",
}  # fmt: skip


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.fixture
def clone(tmp_path, monkeypatch):
    """A copy of the repository's presets and DAG in a folder with no `../shared` beside it."""
    work = tmp_path / "clone"
    work.mkdir()
    shutil.copytree(REPO / "presets", work / "presets")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, work / name)
    assert not (work.parent / "shared").exists()
    monkeypatch.chdir(work)
    return work


def test_one_preset_per_paper_model():
    assert set(available(REPO / "presets")) == PAPER_MODELS
    for name in PAPER_MODELS:
        params = compose(name, REPO / "presets")
        (spec,) = params["models"].values()
        assert spec["source"] == "hub" and len(spec["revision"]) == 40 and int(spec["revision"], 16) >= 0
        assert params["vote"]["baseline"] == "deepseek-r1" and "judges" in params["judge"] and params["judge"]["variants"]


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_preset_validates(in_repo, tmp_path, name):
    out = tmp_path / "params.yaml"
    result = CliRunner().invoke(main, ["params", "preset", name, "-o", str(out)])
    assert result.exit_code == 0, result.output
    check = CliRunner().invoke(main, ["params", "check", str(out)])
    assert check.exit_code == 0 and "ok" in check.output, check.output


def test_unknown_preset_names_the_choices(in_repo):
    result = CliRunner().invoke(main, ["params", "preset", "gpt-5"])
    assert result.exit_code == 2 and "got 'gpt-5'; allowed: llama-3.1-8b-instruct" in result.output


def test_preset_dag_lists_without_downloads(in_repo, tmp_path):
    """`dvc dag` on a preset: the stages for the real model, with no model or dataset fetched."""
    work = tmp_path / "repo"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    result = CliRunner().invoke(main, ["params", "preset", "qwen2.5-7b-instruct", "-o", str(work / "params.yaml")])
    assert result.exit_code == 0, result.output
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    assert subprocess.run(["git", "init", "-q"], cwd=work).returncode == 0
    assert subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=work, env=env).returncode == 0
    dag = subprocess.run([sys.executable, "-m", "dvc", "dag", "--md"], cwd=work, env=env, capture_output=True, text=True)
    assert dag.returncode == 0, dag.stderr
    for stage in ("base@qwen2.5-7b-instruct", "align", "quantize@qwen2.5-7b-instruct-awq-w4a16", "generate@qwen2.5-7b-instruct-gptq-w4a16-math500",
                  "judge@qwen2.5-7b-instruct-smoothquant-w8a8", "restore@qwen2.5-7b-instruct-awq-w4a16", "reevaluate"):  # fmt: skip
        assert stage in dag.stdout, stage
    assert not (work / "models").exists() and not (work / "data").exists()


HEX40 = re.compile(r"[0-9a-f]{40}")


@pytest.mark.parametrize("name", sorted(PAPER_MODELS))
def test_every_preset_composes_and_checks_without_shared_data(clone, name):
    """Portable presets: in a clone with no ../shared, each preset composes, validates and checks; every
    benchmark loads from the hub, pinned by dataset id and commit."""
    params = compose(name)
    for bench, spec in params["benchmarks"].items():
        assert spec["source"] == "hub" and "/" in spec["hub_id"] and HEX40.fullmatch(spec["revision"]), bench
        assert "shared" not in yaml.safe_dump(spec), bench
    result = CliRunner().invoke(main, ["params", "preset", name, "-o", "params.yaml"])
    assert result.exit_code == 0, result.output
    check = CliRunner().invoke(main, ["params", "check"])
    assert check.exit_code == 0 and "params.yaml: ok" in check.output, check.output


def test_preset_list_one_line_per_preset(clone):
    result = CliRunner().invoke(main, ["params", "preset", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == sorted(PAPER_MODELS)
    qwen7 = next(line for line in lines if line.startswith("qwen2.5-7b-instruct "))
    assert "Qwen/Qwen2.5-7B-Instruct@" in qwen7 and "7B parameters" in qwen7
    assert CliRunner().invoke(main, ["params", "preset"]).exit_code == 2  # neither NAME nor --list


def test_preset_set_keeps_dotted_model_names_and_paths_are_checked_later(clone):
    """--set resolves dotted keys against the composed dict, so `models.qwen2.5-0.5b-instruct.path` works;
    composing never needs the file, `params check` names the key and the path when it is missing."""
    name = "qwen2.5-0.5b-instruct"
    missing = clone / "nowhere" / "aime.jsonl"
    args = ["params", "preset", name, "-o", "p.yaml", "--set", f"models.{name}.source=local", "--set", f"models.{name}.path={clone}",
            "--set", "benchmarks.aime.source=local", "--set", f"benchmarks.aime.path={missing}", "--set", "benchmarks.aime.size=30",
            "--set", "generate.benchmarks=[gsm8k, math500, aime, math_train]", "--set", "judge.cheap_first=true"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = yaml.safe_load((clone / "p.yaml").read_text())
    assert list(written["models"]) == [name]  # the dots survive
    assert written["models"][name] == {**compose(name)["models"][name], "source": "local", "path": str(clone)}
    assert written["benchmarks"]["aime"]["size"] == 30 and written["judge"]["cheap_first"] is True
    assert written["generate"]["benchmarks"] == ["gsm8k", "math500", "aime", "math_train"]
    assert "--set benchmarks.aime.size=30" in (clone / "p.yaml").read_text().splitlines()[0]
    check = CliRunner().invoke(main, ["--params", "p.yaml", "params", "check"])
    assert check.exit_code == 2 and "benchmarks.aime.path" in check.output and str(missing) in check.output, check.output
    assert "hub" in check.output and "Traceback" not in check.output


@pytest.mark.parametrize("bad, fragment", [
    ("models.qwen2.5-05b-instruct.path=/x", "did you mean 'qwen2.5-0.5b-instruct'"),
    ("generate.max_new_tokenz=4", "did you mean 'max_new_tokens'"),
    ("benchmarks.aimee.size=4", "did you mean 'aime'"),
    ("no-equals-sign", "KEY=VALUE"),
    ("generate.max_new_tokens=-4", "generate.max_new_tokens: got -4"),
])  # fmt: skip
def test_preset_bad_set_exits_2_and_writes_nothing(clone, bad, fragment):
    result = CliRunner().invoke(main, ["params", "preset", "qwen2.5-0.5b-instruct", "-o", "p.yaml", "--set", bad])
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert "Traceback" not in result.output and not (clone / "p.yaml").exists()


def _sizes_and_steps(params: dict) -> None:
    from qmr.presets import SMOKE_PROBLEMS, SMOKE_STEPS

    for name, spec in params["benchmarks"].items():
        assert 0 < spec["size"] <= SMOKE_PROBLEMS, name
    assert params["align"]["max_steps"] == SMOKE_STEPS and params["restore"]["max_steps"] == SMOKE_STEPS
    assert 0 < params["align"]["samples"] <= SMOKE_PROBLEMS and params["align"]["eval_samples"] <= SMOKE_PROBLEMS
    assert params["quantize"]["calibration"]["samples"] <= SMOKE_PROBLEMS and params["generate"]["max_new_tokens"] <= 64
    assert 0 < params["recovery"]["max_pairs"] <= SMOKE_PROBLEMS


def test_smoke_of_the_default_params_is_valid_and_small(default_params):
    from qmr.params import validate
    from qmr.presets import SMOKE_TOY_STEPS, smoke

    smoked = smoke(default_params)
    validate(smoked)  # passes `params check`
    _sizes_and_steps(smoked)
    assert smoked["base"]["toy"]["max_steps"] == SMOKE_TOY_STEPS and smoked["base"]["toy"]["train_seconds"] == 0
    assert smoked["models"] == default_params["models"] and smoked["quantize"]["variants"] == default_params["quantize"]["variants"]
    assert default_params["benchmarks"]["test"]["size"] == 1000  # the input is not modified


def test_smoke_exp_args_reproduce_the_smoke_params(tmp_path, default_params):
    """`dvc exp run $(qmr params smoke --exp-args)` sets exactly smoke(params): applied here with DVC's
    own override code (Hydra; `+key` where params.yaml lacks the key)."""
    import shlex

    from dvc.utils.hydra import apply_overrides

    from qmr.presets import smoke

    path = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", path)
    result = CliRunner().invoke(main, ["--params", str(path), "params", "smoke", "--exp-args"])
    assert result.exit_code == 0, result.output
    args = shlex.split(result.output)
    assert args[0] == "-S" and "-S" in args and any(a.startswith("+") for a in args)
    apply_overrides(path, [a for a in args if a != "-S"])
    assert yaml.safe_load(path.read_text()) == smoke(default_params)
    out = tmp_path / "smoke.yaml"
    assert CliRunner().invoke(main, ["--params", str(REPO / "params.yaml"), "params", "smoke", "-o", str(out)]).exit_code == 0
    assert CliRunner().invoke(main, ["params", "check", str(out)]).exit_code == 0


def test_preset_smoke_caps_every_benchmark_including_size_0(clone):
    assert compose("qwen2.5-7b-instruct")["benchmarks"]["gsm8k"].get("size", 0) == 0  # "all" before
    result = CliRunner().invoke(main, ["params", "preset", "qwen2.5-7b-instruct", "--smoke", "-o", "s.yaml"])
    assert result.exit_code == 0, result.output
    smoked = yaml.safe_load((clone / "s.yaml").read_text())
    _sizes_and_steps(smoked)
    assert list(smoked["models"]) == ["qwen2.5-7b-instruct"]
    assert CliRunner().invoke(main, ["params", "check", "s.yaml"]).exit_code == 0


def test_hub_layouts_of_the_preset_benchmarks_normalize(tmp_path):
    """The pinned hub copies' columns (synthetic rows in each layout) load with the preset's format."""
    import pandas as pd

    from qmr.benchmarks import load_benchmark
    from qmr.params import BenchmarkSpec

    presets = compose("qwen2.5-0.5b-instruct")["benchmarks"]
    aime = [{"id": 60 + i, "problem": f"Find $x$ ({i}).", "solution": "...", "answer": a, "url": "https://aops/2024_AIME_I/1"}
            for i, a in enumerate([204, "025", 7])]  # AI-MO/aimo-validation-aime: id, problem, solution, answer, url
    math = [{"problem": "What is $1+1$?", "solution": "So $\\boxed{2}$.", "answer": "2", "subject": "Algebra", "level": 1,
             "unique_id": "train/algebra/0.json"}]  # nlile/hendrycks-MATH-benchmark
    steps = ["Let $x = 2$.", "Then $x + 3 = 5$."]
    prm = [{"instruction": "What is $2+3$?", "responses": steps[:k], "next_response": text, "answer": ans,
            "is_human_response": False, "is_solution": ans is not None, "is_preferred_response": True, "rating": 1.0}
           for k, (text, ans) in enumerate([(steps[0], None), (steps[1], None), ("So the sum is 5.", "5")])]  # fmt: skip
    layouts = {"aime": (aime, ".jsonl"), "math_train": (math, ".jsonl"), "prm800k": (prm, ".parquet")}
    for name, (rows, suffix) in layouts.items():
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".parquet":
            pd.DataFrame(rows).to_parquet(path)
        else:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        spec = BenchmarkSpec(source="local", path=str(path), format=presets[name]["format"], role=presets[name]["role"])
        recs = load_benchmark(spec, name)
        assert recs and all(r["question"] and r["answer"] for r in recs), name
    assert [r["answer"] for r in load_benchmark(BenchmarkSpec(source="local", path=str(tmp_path / "aime.jsonl"), format="aime"), "aime")] == ["204", "25", "7"]
    (prm_rec,) = load_benchmark(BenchmarkSpec(source="local", path=str(tmp_path / "prm800k.parquet"), format="prm800k", role="train"), "prm800k")
    assert prm_rec["answer"] == "5" and prm_rec["steps"][:2] == steps
