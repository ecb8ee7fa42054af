"""Format alignment: step-format targets from every solution style, and LoRA SFT merged into a plain checkpoint."""

from __future__ import annotations

import json

import pytest

from qmr.align import AlignConfig, build_examples, step_target
from qmr.prompts import build_prompt
from qmr.steps import split_steps
from qmr.toy.problems import generate_split


def test_toy_solution_is_already_in_the_step_format():
    for rec in generate_split("train", 20, seed=0):
        assert step_target(rec) == rec["solution"]


def test_math_gsm8k_and_prm800k_styles_become_one_step_per_line():
    from qmr.benchmarks import normalize

    math = normalize({"problem": "What is $1+1$?", "solution": "We add the numbers. So $1+1=\\boxed{2}$."}, "math", "m", 0)
    assert step_target(math) == "We add the numbers.\nSo $1+1=\\boxed{2}$.\nThe answer is 2."
    gsm = normalize({"question": "Q?", "answer": "He has 3+4=7 apples.\nThen 7*2=14.\n#### 14"}, "gsm8k", "g", 0)
    assert step_target(gsm) == "He has 3+4=7 apples.\nThen 7*2=14.\nThe answer is 14."
    prm = {"id": "p", "question": "Q?", "answer": "5", "steps": ["Let x = 2.", "Then\n  x + 3 = 5."]}
    assert step_target(prm) == "Let x = 2.\nThen x + 3 = 5.\nThe answer is 5."
    assert split_steps(step_target(prm))[-1] == "The answer is 5."


def test_records_without_a_solution_are_dropped_and_counted():
    recs = [{"id": "a", "question": "Q", "answer": "1"}, *generate_split("train", 3, seed=0)]
    examples, dropped = build_examples(recs, lambda q: build_prompt(q))
    assert dropped == 1 and len(examples) == 3
    assert set(examples[0]) == {"id", "prompt", "chosen"} and examples[0]["prompt"].startswith("Question: ")


def test_prm800k_stepwise_critic_rows_become_correct_trajectories(shared_data):
    from qmr.benchmarks import load_benchmark
    from qmr.params import BenchmarkSpec

    path = shared_data / "prm800k" / "phase1_test.stepwise-critic.parquet"
    if not path.exists():
        pytest.skip(f"{path} not found")
    recs = load_benchmark(BenchmarkSpec(source="local", path=str(path), role="train"), "prm800k")
    assert 50 <= len(recs) <= 101  # 101 problems; those whose labelled path reaches the answer with no -1 step
    assert len({r["id"] for r in recs}) == len(recs)
    for rec in recs:
        target = step_target(rec)
        assert target is not None and target.endswith(f"The answer is {rec['answer']}.")
        assert "# Answer" not in target and len(split_steps(target)) >= 2


def test_config_checks_name_the_key():
    problems = AlignConfig(method="lora_sft", lora_r=0, eval_samples=-1, max_new_tokens=0).check("align")
    keys = {p.key for p in problems}
    assert {"align.lora_r", "align.eval_samples", "align.max_new_tokens"} <= keys
    assert AlignConfig().trainer_config().objective == "sft"


@pytest.mark.slow
def test_lora_sft_merges_into_a_plain_checkpoint(tmp_path):
    import torch
    from safetensors.torch import load_file

    from qmr.align import train_align
    from qmr.checkpoints import check_checkpoint
    from qmr.quant.load import load_model
    from qmr.toy.train import ToyModelConfig, train_toy_model

    base = tmp_path / "base"
    tiny = ToyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=8,
                          warmup_steps=2, max_steps=20, train_seconds=0, style="freeform", seed=0)  # fmt: skip
    assert train_toy_model(tiny, base, threads=1)["solution_field"] == "solution_freeform"
    examples, _ = build_examples(generate_split("train", 32, seed=0), lambda q: build_prompt(q))
    cfg = AlignConfig(method="lora_sft", max_steps=4, batch_size=8, lora_r=4, lora_alpha=8, checkpoint_steps=2)
    out = tmp_path / "aligned"
    record = train_align(base, examples, cfg, out, threads=1, checkpoint_dir=tmp_path / "ckpt")
    assert record["steps"] == 4 and record["examples"] == 32
    assert not (tmp_path / "ckpt").exists()  # checkpoints go once the merged model is saved
    check_checkpoint(str(out))
    assert not (out / "adapter_config.json").exists()
    merged, before = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert set(merged) == set(before)  # the same parameter names: no lora_A/lora_B left
    changed = [k for k in merged if not torch.equal(merged[k], before[k])]
    assert changed and all("proj" in k for k in changed)  # only the LoRA-targeted projections moved
    model, tok = load_model(str(out))
    eos = model.generation_config.eos_token_id  # the trainer may store it as a list
    assert (eos if isinstance(eos, list) else [eos]) == [tok.eos_token_id]
    assert len(json.loads((out / "train_log.json").read_text())) == 4
