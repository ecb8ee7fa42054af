"""The embedded toy reasoner: generator, splits, tokenizer and a smoke test of training."""

from __future__ import annotations

import json
import re

import pytest

from qmr.config import ConfigError, from_dict
from qmr.prompts import build_prompt
from qmr.toy.problems import (
    FAMILIES,
    ToyDataConfig,
    check_disjoint,
    generate_split,
    iter_problems,
    problem_id,
    split_of,
    verify_record,
)

RECORD_KEYS = {
    "id", "split", "source", "question", "answer", "solution", "steps", "plan", "family", "n_steps",
    "solution_freeform",
}  # fmt: skip


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {
        "train": generate_split("train", 400, seed=0),
        "mine": generate_split("mine", 150, seed=0),
        "test": generate_split("test", 150, seed=0),
    }


@pytest.fixture(scope="module")
def tokenizer():
    from qmr.toy.tokenizer import build_tokenizer

    return build_tokenizer()


def test_generator_is_deterministic() -> None:
    a = generate_split("test", 40, seed=3)
    assert a == generate_split("test", 40, seed=3)
    b = generate_split("test", 40, seed=4)
    assert [r["question"] for r in a] != [r["question"] for r in b]
    stream = iter_problems("train", seed=3)
    first = [next(stream) for _ in range(20)]
    stream = iter_problems("train", seed=3)
    assert first == [next(stream) for _ in range(20)]


def test_records_have_the_schema_and_recompute_exactly(splits) -> None:
    cfg = ToyDataConfig()
    for name, records in splits.items():
        assert len({r["question"] for r in records}) == len(records), name
        assert len({r["id"] for r in records}) == len(records), name
        for rec in records:
            assert set(rec) == RECORD_KEYS
            assert rec["id"] == problem_id(name, rec["question"]) and rec["id"].startswith(f"toy-{name}-")
            assert rec["source"] == "toy" and rec["split"] == name
            assert rec["family"] in FAMILIES
            assert verify_record(rec) == [], (rec["id"], verify_record(rec))
            assert cfg.min_steps <= rec["n_steps"] <= cfg.max_steps
            for s in rec["plan"]:
                assert 1 <= s["result"] <= cfg.max_value
            assert rec["solution"].endswith(f"The answer is {rec['answer']}.")
            assert rec["solution_freeform"].endswith(f"So the final result is {rec['answer']}.")
            for s in rec["plan"]:  # every number the prose mentions is a step operand or result
                assert str(s["result"]) in re.findall(r"\d+", rec["solution_freeform"])


def test_records_cover_every_family_and_step_count(splits) -> None:
    records = splits["train"]
    assert {r["family"] for r in records} == set(FAMILIES)
    assert {r["n_steps"] for r in records} == {1, 2, 3, 4}
    assert {s["op"] for r in records for s in r["plan"]} == {"+", "-", "*", "/"}
    # two-step sentences: a product feeding the next step
    assert any(r["plan"][0]["op"] == "*" and r["plan"][1]["b"] == r["plan"][0]["result"] for r in records if r["n_steps"] > 1)


def test_family_filter() -> None:
    records = generate_split("mine", 30, seed=1, families=["baking", "travel"])
    assert {r["family"] for r in records} <= {"baking", "travel"}
    with pytest.raises(ValueError, match="unknown toy families"):
        generate_split("mine", 3, seed=1, families=["cooking"])
    with pytest.raises(ValueError, match="split"):
        generate_split("dev", 3, seed=1)


def test_splits_are_disjoint_by_construction(splits) -> None:
    check_disjoint(splits)
    for name, records in splits.items():
        assert all(split_of(r["question"]) == name for r in records)
    # stable: the bucket is a hash of the text, not of the process
    q = splits["test"][0]["question"]
    assert split_of(q) == "test" and split_of(q) == split_of(str(q))
    shares = [split_of(f"question {i}") for i in range(4000)]
    assert 0.85 < shares.count("train") / 4000 < 0.95


def test_check_disjoint_names_the_overlap(splits) -> None:
    leaked = dict(splits, test=[*splits["test"], dict(splits["train"][5], id="toy-test-leak")])
    with pytest.raises(ValueError, match=f"train:{splits['train'][5]['id']} = test:toy-test-leak"):
        check_disjoint(leaked)


def test_data_config_is_validated() -> None:
    with pytest.raises(ConfigError) as exc:
        from_dict(ToyDataConfig, {"min_steps": 5, "max_steps": 4, "mine_fraction": 0.5, "max_factor": 1})
    text = str(exc.value)
    assert "min_steps" in text and "mine_fraction" in text and "max_factor" in text
    small = ToyDataConfig(max_steps=2, max_value=50, max_operand=9, max_start=9)
    for rec in generate_split("test", 20, seed=0, cfg=small):
        assert rec["n_steps"] <= 2 and all(s["result"] <= 50 for s in rec["plan"])


def test_tokenizer_round_trips_every_generated_text(splits, tokenizer) -> None:
    texts = []
    for rec in splits["train"][:200] + splits["test"][:100]:
        prompt = build_prompt(rec["question"], "plain")
        texts += [rec["question"], rec["solution"], rec["solution_freeform"], prompt + rec["solution"]]
        texts.append(prompt + rec["solution_freeform"])
    encoded = tokenizer(texts)["input_ids"]
    for text, ids in zip(texts, encoded, strict=True):
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.unk_token_id not in ids, text
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    assert 100 <= len(tokenizer) <= 200
    # digit-level: a number is one token per digit
    pieces = tokenizer.convert_ids_to_tokens(tokenizer("48 * 7 = 336", add_special_tokens=False)["input_ids"])
    assert pieces == ["4", "8", " * ", "7", " = ", "3", "3", "6"]


def test_tokenizer_is_deterministic_and_reloads(tmp_path, tokenizer) -> None:
    from transformers import AutoTokenizer

    from qmr.toy.tokenizer import build_tokenizer

    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = build_prompt("Mia has 23 apples. How many apples does Mia have now?") + "The answer is 23."
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    batch = again(["Question: Mia has", "Question:"], padding=True)
    assert batch["input_ids"][1][0] == again.pad_token_id  # left padding for generation


def test_drills_are_exact_and_tokenize(splits, tokenizer) -> None:
    from qmr.toy.problems import drill, step_line

    for rec in splits["train"][:50]:
        for step in rec["plan"]:
            d = drill(step)
            assert d["question"] == step_line(step).split(" = ")[0]
            assert d["solution"] == f"{step_line(step)}\nThe answer is {step['result']}."
            assert d["answer"] == str(step["result"])
            for text in (build_prompt(d["question"]) + d["solution"], d["solution_freeform"]):
                ids = tokenizer(text)["input_ids"]
                assert tokenizer.unk_token_id not in ids and tokenizer.decode(ids, skip_special_tokens=True) == text


def test_model_config_is_validated() -> None:
    from qmr.toy.train import ToyModelConfig

    with pytest.raises(ConfigError) as exc:
        from_dict(ToyModelConfig, {"architecture": "gpt2", "num_heads": 3, "max_steps": 0, "train_seconds": 0})
    text = str(exc.value)
    assert "architecture" in text and "max_steps" in text
    with pytest.raises(ConfigError, match="num_heads"):
        from_dict(ToyModelConfig, {"num_heads": 3})


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
def test_train_smoke_saves_a_loadable_model(tmp_path, architecture) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qmr.toy.train import ToyModelConfig, train_toy_model

    cfg = ToyModelConfig(
        architecture=architecture, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
        batch_size=8, warmup_steps=2, max_steps=5, train_seconds=0, seed=1,
        drill_fraction=0.5 if architecture == "qwen2" else 0.0,
    )  # fmt: skip
    stats = train_toy_model(cfg, tmp_path, threads=1)
    assert stats["steps"] == 5 and stats["n_params"] > 0 and stats["tokens"] > 0
    assert stats["final_loss"] == stats["final_loss"]  # not NaN
    assert (tmp_path / "model.safetensors").exists()
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["steps"] == 5 and log["config"]["architecture"] == architecture
    assert stats["seconds"] >= 0 and "seconds" not in log  # wall clock is returned, never saved with the model

    tok = AutoTokenizer.from_pretrained(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.config.model_type == architecture
    assert model.config.pad_token_id == tok.pad_token_id and model.generation_config.eos_token_id == tok.eos_token_id
    prompts = [build_prompt(r["question"]) for r in generate_split("test", 3, seed=0)]
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape[0] == 3 and out.shape[1] <= enc["input_ids"].shape[1] + 6
    texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert all(isinstance(t, str) for t in texts)


def test_train_rejects_unknown_solution_field(tmp_path) -> None:
    from qmr.toy.train import ToyModelConfig, train_toy_model

    with pytest.raises(ValueError, match="solution_field"):
        train_toy_model(ToyModelConfig(max_steps=1), tmp_path, threads=1, solution_field="answer")


def test_training_is_deterministic(tmp_path):
    """Same config and seed: byte-identical weights and train_log.json (so DVC hashes match across runs)."""
    from qmr.toy.train import ToyModelConfig, train_toy_model

    cfg = ToyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=8,
                         warmup_steps=2, max_steps=6, train_seconds=0, seed=3, drill_fraction=0.5)  # fmt: skip
    for run in ("a", "b"):
        train_toy_model(cfg, tmp_path / run, threads=1)
    for name in ("model.safetensors", "train_log.json", "config.json", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_prepare_keeps_toy_eval_benchmarks_disjoint(tmp_path, monkeypatch) -> None:
    """`test` and `control` draw from the same toy split: `control` skips the problems `test` holds
    (they shared 5 ids before), keeps its size, and keeps the generator's order otherwise."""
    import shutil
    from pathlib import Path

    from click.testing import CliRunner

    from qmr.cli import main
    from qmr.io import read_jsonl
    from qmr.params import load_params
    from qmr.toy.problems import generate_split

    monkeypatch.chdir(tmp_path)
    shutil.copy(Path(__file__).resolve().parents[1] / "params.yaml", tmp_path / "params.yaml")
    result = CliRunner().invoke(main, ["prepare"])
    assert result.exit_code == 0, result.output
    test = {r["id"] for r in read_jsonl("data/benchmarks/test.jsonl")}
    control = [r["id"] for r in read_jsonl("data/benchmarks/control.jsonl")]
    assert len(control) == 300 and not test & set(control)
    raw = [r["id"] for r in generate_split("test", 310, 0, ["garden"], cfg=load_params("params.yaml").prepare.toy)]
    assert control == [i for i in raw if i not in test][:300]
    assert len(test & set(raw[:300])) > 0  # without the exclusion they would overlap
