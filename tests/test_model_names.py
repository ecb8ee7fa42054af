"""Real model names and local model folders in the DVC graph (issue 15).

* Hub names carry dots (``qwen2.5-0.5b-instruct``): DVC splits a params dep at every dot, so the graph
  must never address ``models.<name>``; per-model stages depend on ``models/spec/<name>.json``.
* A ``source: local`` model folder is a dependency: rebuilding it at the same path re-runs `base`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(os.sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _workspace(tmp_path: Path, models: dict) -> Path:
    """A git + DVC workspace with this repository's code and dvc.yaml and the default params but ``models``."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["models"] = models
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    assert _run(["git", "init", "-q"], work).returncode == 0
    assert _run(["dvc", "init", "-q"], work).returncode == 0
    return work


def _local_model(path: Path, seed: int) -> None:
    """A tiny Qwen2-architecture checkpoint (random weights, no tokenizer needed by `base`)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64)  # fmt: skip
    Qwen2ForCausalLM(config).save_pretrained(path)


def test_dotted_model_names_resolve_in_the_dvc_graph(tmp_path):
    """DVC finds every params dep of every stage instance for a model named like the hub's (`base` used
    to fail: "Parameters 'models.toy.v1' are missing from 'params.yaml'") — checked with DVC's own
    hashing of params deps, the check `dvc repro` makes before running a stage."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    work = _workspace(tmp_path, {"toy.v1": {"source": "toy", "prompt_style": "plain"}})
    with Repo(str(work)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
        assert {"base@toy.v1", "quantize@toy.v1-rtn-w2g128", "generate@toy.v1-fp-test",
                "silver@toy.v1-rtn-w2g128", "restore@toy.v1-rtn-w2g128", "report"} <= set(stages)  # fmt: skip
        for stage in stages.values():
            for dep in stage.deps:
                if isinstance(dep, ParamsDependency):
                    dep.get_hash()  # raises MissingParamsError naming the key


def test_a_local_model_folder_is_a_dependency(tmp_path):
    """Rebuilding a `source: local` model at the same path re-runs `base` and changes its output; an
    untouched folder re-runs nothing but the (milliseconds) `resolve`."""
    model_dir = tmp_path / "stand-in"
    _local_model(model_dir, seed=0)
    work = _workspace(tmp_path, {"qwen2.5-tiny": {"source": "local", "path": str(model_dir), "prompt_style": "plain"}})
    first = _run(["dvc", "repro", "base@qwen2.5-tiny"], work)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    pointer = work / "models" / "base" / "qwen2.5-tiny" / "qmr_model.json"
    before = json.loads(pointer.read_text())
    assert before["path"] == str(model_dir)
    metrics = json.loads((work / "metrics" / "base" / "qwen2.5-tiny.json").read_text())  # declared in dvc.yaml
    assert metrics["source"] == "local" and metrics["bytes"] > 0
    assert (work / "metrics" / "speed" / "base" / "qwen2.5-tiny.json").is_file()

    same = _run(["dvc", "repro", "base@qwen2.5-tiny"], work)
    assert same.returncode == 0 and "Running stage 'base@qwen2.5-tiny'" not in same.stdout, same.stdout

    shutil.rmtree(model_dir)
    _local_model(model_dir, seed=1)  # rebuilt at the same path
    again = _run(["dvc", "repro", "base@qwen2.5-tiny"], work)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "Running stage 'base@qwen2.5-tiny'" in again.stdout
    assert json.loads(pointer.read_text())["identity"] != before["identity"]


def test_stages_read_the_resolved_spec_and_name_a_missing_one(tmp_path, monkeypatch):
    from qmr.errors import UserError
    from qmr.modelspec import ModelSpec, load_spec, write_spec

    monkeypatch.chdir(tmp_path)
    write_spec(ModelSpec(source="hub", hub_id="Qwen/Qwen2.5-0.5B-Instruct", revision="abc", prompt_style="chat"), "qwen2.5-0.5b-instruct")
    spec = load_spec("qwen2.5-0.5b-instruct")
    assert (spec.hub_id, spec.revision, spec.prompt_style) == ("Qwen/Qwen2.5-0.5B-Instruct", "abc", "chat")
    with pytest.raises(UserError, match=r"qwen2\.5-0\.5b\b.*resolve@qwen2\.5-0\.5b"):
        load_spec("qwen2.5-0.5b")
    # by hand, before any `resolve`: params decide, and an unknown name lists the known ones
    assert load_spec("toy", {"toy": ModelSpec()}).source == "toy"
    with pytest.raises(UserError, match="allowed: toy"):
        load_spec("gpt2", {"toy": ModelSpec()})


def test_every_preset_resolves_in_the_dvc_graph(tmp_path):
    """Each preset, composed as a user would (its model name with dots), gives a graph whose every
    params dep DVC can hash — the check `dvc repro` makes before it runs a stage."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    from qmr.presets import available, compose

    for name in available(REPO / "presets"):
        params = compose(name, REPO / "presets")
        work = _workspace(tmp_path / name, params["models"])
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        with Repo(str(work)) as repo:
            stages = {stage.name: stage for stage in repo.index.stages}
            assert f"base@{name}" in stages and f"generate@{name}-gptq-w4a16-gsm8k" in stages, name
            for stage in stages.values():
                for dep in stage.deps:
                    if isinstance(dep, ParamsDependency):
                        dep.get_hash()
