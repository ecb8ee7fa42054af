"""restore: Silver Bullet pair construction (pure, hand-made traces) and DPO + LoRA on a tiny quantized model."""

from __future__ import annotations

import json

import pytest

from qmr.config import ConfigError, from_dict
from qmr.prompts import build_prompt
from qmr.restore.silver import LeakageError, RecoveryConfig, build_pairs, resume_prompt
from qmr.restore.train import RestoreConfig

# --------------------------------------------------------------------------------------------------
# hand-made mining pool: 6 problems, quantized traces failing at known steps
# --------------------------------------------------------------------------------------------------

GOLD = {
    "p1": ("Tom has 3 apples and buys 4 more, then 5 more. How many?", ["3 + 4 = 7", "7 + 5 = 12"], "12"),
    "p2": ("Ann has 10 pens and gives 2, then 3. How many?", ["10 - 2 = 8", "8 - 3 = 5"], "5"),
    "p3": ("Bob has 2 boxes of 6 and 1 more. How many?", ["2 * 6 = 12", "12 + 1 = 13"], "13"),
    "p4": ("Cy has 9 and 9. How many?", ["9 + 9 = 18"], "18"),
    "p5": ("Di has 20 split in 4. How many each?", ["20 / 4 = 5"], "5"),
    "p6": ("Ed has 1 and 1 and 1. How many?", ["1 + 1 = 2", "2 + 1 = 3"], "3"),
}
# quantized traces: (steps, category, error type, error step); None category = solved correctly
QT = {
    "p1": (["3 + 4 = 7", "7 + 5 = 13", "The answer is 13."], "EE", "computational_error", 2),
    "p2": (["10 + 2 = 12", "12 - 3 = 9", "The answer is 9."], "CE", "conceptual_misunderstanding", 1),
    "p3": (["2 * 6 = 12", "12 + 1 = 13", "13 - 1 = 12", "The answer is 12."], "ME", "procedural_error", 3),
    "p4": (["9 + 9 = 19", "The answer is 19."], "EE", "computational_error", 1),
    "p5": (["20 / 4 = 5", "The answer is 5."], None, None, None),
    "p6": (["1 + 1 = 2", "2 + 1 = 3", "The answer is 3."], None, None, None),
}


def _solution(pid: str) -> str:
    _, steps, ans = GOLD[pid]
    return "\n".join([*steps, f"The answer is {ans}."])


def make_records(families: dict[str, str] | None = None) -> list[dict]:
    fam = families or {}
    return [
        {
            "id": pid,
            "source": "toy",
            "question": q,
            "answer": a,
            "solution": _solution(pid),
            "family": fam.get(pid, "add"),
        }
        for pid, (q, _, a) in GOLD.items()
    ]


def make_traces(variant: str = "rtn-w4a16") -> list[dict]:
    out = []
    for pid, (steps, cat, _, _) in QT.items():
        q = GOLD[pid][0]
        out.append(
            {
                "id": pid,
                "variant": variant,
                "benchmark": "mine",
                "sample": 0,
                "prompt": build_prompt(q),
                "text": "\n".join(steps),
                "steps": steps,
                "pred": steps[-1].split()[-1].rstrip("."),
                "correct": cat is None,
                "tokens": 10,
                "seconds": 0.1,
            }
        )
    return out


def make_fp_traces() -> list[dict]:
    return [
        {"id": pid, "variant": "fp", "sample": 0, "steps": _solution(pid).split("\n"), "correct": True}
        for pid in GOLD
    ]


def make_labels() -> list[dict]:
    return [
        {
            "id": pid,
            "variant": "rtn-w4a16",
            "primary_error_type": et,
            "category": cat,
            "error_step": k,
            "rule": "unanimous",
        }
        for pid, (_, cat, et, k) in QT.items()
        if cat is not None
    ]


def oracle_teacher(calls: list | None = None, wrong_first: bool = False):
    """Continues the gold solution from the number of steps already in the prompt."""

    def teacher(prompts: list[str], n: int) -> list[list[str]]:
        if calls is not None:
            calls.append((list(prompts), n))
        out = []
        for prompt in prompts:
            pid = next(p for p, (q, _, _) in GOLD.items() if prompt.startswith(build_prompt(q)))
            kept = prompt[len(build_prompt(GOLD[pid][0])) :].count("\n")
            right = "\n".join(_solution(pid).split("\n")[kept:])
            conts = ["1 + 1 = 99\nThe answer is 99.", right] if wrong_first else [right]
            out.append((conts * n)[:n] if not wrong_first else conts[:n])
        return out

    return teacher


def wrong_teacher(prompts: list[str], n: int) -> list[list[str]]:
    return [["2 + 2 = 77\nThe answer is 77."] * n for _ in prompts]


def build(subset: str, teacher=None, eval_ids=frozenset(), records=None, **cfg_kw):
    cfg = RecoveryConfig(subset=subset, teacher_tries=cfg_kw.pop("teacher_tries", 2), **cfg_kw)
    return build_pairs(
        subset,
        make_labels(),
        make_traces(),
        make_fp_traces(),
        records if records is not None else make_records(),
        teacher if teacher is not None else oracle_teacher(),
        cfg,
        set(eval_ids),
    )


# --------------------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------------------


def test_resume_prompt_truncates_at_the_error_step():
    pairs, stats = build("ALL")
    by_id = {p["id"]: p for p in pairs}
    assert set(by_id) == {"p1", "p2", "p3", "p4"}
    assert stats["pairs"] == 4 and not stats["empty"]
    # error_step 1 -> empty prefix, the bare problem prompt
    p2 = by_id["p2"]
    assert p2["prefix_steps"] == [] and p2["prompt"] == build_prompt(GOLD["p2"][0])
    # error_step 3 -> two steps kept, newline-terminated
    p3 = by_id["p3"]
    assert p3["prefix_steps"] == ["2 * 6 = 12", "12 + 1 = 13"]
    assert p3["prompt"] == build_prompt(GOLD["p3"][0]) + "2 * 6 = 12\n12 + 1 = 13\n"
    assert p3["error_step"] == 3 and p3["error_type"] == "procedural_error"
    # rejected = the quantized trace's own continuation from the faulty step
    assert p3["rejected"] == "13 - 1 = 12\nThe answer is 12."
    assert by_id["p1"]["rejected"] == "7 + 5 = 13\nThe answer is 13."
    # chosen = the teacher's continuation from the same point
    assert by_id["p1"]["chosen"] == "7 + 5 = 12\nThe answer is 12."
    for p in pairs:
        assert set(p) >= {
            "id",
            "variant",
            "subset",
            "prompt",
            "prefix_steps",
            "chosen",
            "rejected",
            "error_type",
            "error_step",
            "teacher",
        }
        assert p["variant"] == "rtn-w4a16" and p["subset"] == "ALL" and p["teacher"] == "fp"
        assert p["chosen"] != p["rejected"]
    assert resume_prompt("Q\n", []) == "Q\n" and resume_prompt("Q\n", ["a", "b"]) == "Q\na\nb\n"


def test_chosen_is_the_first_verified_teacher_try():
    calls: list = []
    pairs, stats = build("ALL", teacher=oracle_teacher(calls, wrong_first=True), teacher_tries=2)
    assert len(pairs) == 4 and stats["dropped_unverified"] == 0
    assert all("99" not in p["chosen"] for p in pairs)
    assert calls and all(n == 2 for _, n in calls)
    # only one try allowed: the wrong first try is all there is -> every candidate dropped
    pairs, stats = build("ALL", teacher=oracle_teacher(wrong_first=True), teacher_tries=1)
    assert pairs == [] and stats["dropped_unverified"] == 4 and stats["empty"]


def test_unverified_candidates_are_dropped_and_counted():
    pairs, stats = build("ALL", teacher=wrong_teacher)
    assert pairs == []
    assert stats["dropped_unverified"] == 4 and stats["candidates"] == 4
    assert stats["empty"] and "no teacher continuation graded correct" in stats["message"]


@pytest.mark.parametrize(("subset", "ids"), [("CE", {"p2"}), ("ME", {"p3"}), ("EE", {"p1", "p4"})])
def test_category_subsets_select_by_label_category(subset, ids):
    pairs, stats = build(subset)
    assert {p["id"] for p in pairs} == ids
    assert all(p["category"] == subset and p["subset"] == subset for p in pairs)
    assert stats["available"] == {"ALL": 4, "CE": 1, "RE": 0, "ME": 1, "EE": 2}


def test_skip_message_counts_abstained_escalated_and_no_error_apart():
    """Labels without an accepted error are skipped; the message says why, each reason counted apart."""
    undecided = [
        {"id": "p5", "primary_error_type": "no_error", "category": None, "error_step": None, "rule": "unanimous", "needs_human": False},
        {"id": "p6", "primary_error_type": "no_error", "category": None, "error_step": None, "rule": "human", "needs_human": False},
        {"id": "p1", "primary_error_type": None, "category": None, "error_step": None, "rule": "escalated", "needs_human": True,
         "proposal": {"primary_error_type": "computational_error", "error_step": 2}},
        {"id": "p2", "primary_error_type": None, "category": None, "error_step": None, "rule": "escalated", "needs_human": True},
        {"id": "p3", "primary_error_type": None, "category": None, "error_step": None, "rule": "abstain_all", "needs_human": True},
    ]  # fmt: skip
    cfg = RecoveryConfig(subset="ALL", teacher_tries=1)
    pairs, stats = build_pairs("ALL", undecided, make_traces(), make_fp_traces(), make_records(), oracle_teacher(), cfg, set())
    assert pairs == [] and stats["skipped"] == {"abstained": 1, "escalated": 2, "no_error": 2}
    msg = stats["message"]
    assert "abstained=1" in msg and "escalated=2" in msg and "no_error=2" in msg and "no_error=5" not in msg
    assert "annotator" in msg


def test_empty_subset_is_not_a_crash():
    calls: list = []
    pairs, stats = build("RE", teacher=oracle_teacher(calls))
    assert pairs == [] and stats["empty"] and stats["pairs"] == 0
    assert "RE" in stats["message"] and "no candidate" in stats["message"]
    assert calls == []  # the teacher is not called for nothing


def test_rand_ns_is_size_matched_with_gold_chosen():
    pairs, stats = build("RAND_NS", teacher=wrong_teacher)  # the teacher is never needed
    assert len(pairs) == 4 == stats["target_size"]  # as many as ALL has candidates
    for p in pairs:
        rec = next(r for r in make_records() if r["id"] == p["id"])
        assert p["chosen"] == rec["solution"] and p["teacher"] == "gold"
        assert p["prefix_steps"] == [] and p["prompt"] == build_prompt(rec["question"])
        assert p["rejected"] == "\n".join(QT[p["id"]][0])
    # seeded: same seed, same problems; explicit size wins
    again, _ = build("RAND_NS")
    assert [p["id"] for p in again] == [p["id"] for p in pairs]
    cfg = RecoveryConfig(subset="RAND_NS", seed=0)
    two, st2 = build_pairs(
        "RAND_NS", make_labels(), make_traces(), [], make_records(), None, cfg, set(), size=2
    )
    assert len(two) == 2 and st2["target_size"] == 2


def test_rand_ns_skips_pairs_whose_trace_equals_the_gold():
    # p5 and p6 are solved exactly like the gold solution: such a pair has rejected == chosen.
    cfg = RecoveryConfig(subset="RAND_NS")
    pairs, stats = build_pairs(
        "RAND_NS", make_labels(), make_traces(), [], make_records(), None, cfg, set(), size=6
    )
    assert {p["id"] for p in pairs} == {"p1", "p2", "p3", "p4"}
    assert stats["skipped"]["same_as_chosen"] == 2


def test_all_ns_uses_full_gold_and_full_trace_without_resume():
    pairs, stats = build("ALL_NS", teacher=wrong_teacher)
    assert {p["id"] for p in pairs} == {"p1", "p2", "p3", "p4"}
    for p in pairs:
        assert p["prefix_steps"] == [] and p["prompt"] == build_prompt(GOLD[p["id"]][0])
        assert p["chosen"] == _solution(p["id"]) and p["teacher"] == "gold"
        assert p["rejected"] == "\n".join(QT[p["id"]][0])
        assert p["error_step"] == QT[p["id"]][3]


def test_all_ns_falls_back_to_a_correct_fp_trace_without_gold():
    records = make_records()
    for r in records:
        r.pop("solution")
    pairs, _ = build("ALL_NS", records=records)
    assert len(pairs) == 4 and all(p["teacher"] == "fp" for p in pairs)
    assert all(p["chosen"] == _solution(p["id"]) for p in pairs)


def test_pool_takes_every_problem_the_fp_teacher_solves():
    fp = make_fp_traces()
    fp[1]["correct"] = False  # fp fails p2: no pair for it
    cfg = RecoveryConfig(subset="POOL", teacher="fp", exclude_families=["held"])
    records = make_records(families={"p6": "held"})
    pairs, stats = build_pairs("POOL", [], make_traces(), fp, records, None, cfg, set())
    assert {p["id"] for p in pairs} == {"p1", "p3", "p4", "p5"}  # labels are not needed: no p2 (fp wrong), no p6 (held out)
    assert stats["dropped_unverified"] == 1 and stats["skipped"]["excluded_family"] == 1
    for p in pairs:
        assert p["chosen"] == _solution(p["id"]) and p["teacher"] == "fp" and p["prefix_steps"] == []
        assert p["prompt"] == build_prompt(GOLD[p["id"]][0]) and p["rejected"] == "\n".join(QT[p["id"]][0])
    assert stats["rejected_same_as_chosen"] == 1  # p5: the quantized model is right too, and the pair is kept
    assert len(build_pairs("POOL", [], make_traces(), fp, records, None, RecoveryConfig(subset="POOL", max_pairs=2), set())[0]) <= 2
    with pytest.raises(LeakageError, match="p4"):
        build_pairs("POOL", [], make_traces(), fp, records, None, cfg, {"p4"})


def test_pool_with_an_endpoint_teacher_asks_it_for_whole_solutions():
    calls: list = []
    cfg = RecoveryConfig(subset="POOL", teacher="strong", teacher_tries=2)
    pairs, stats = build_pairs("POOL", [], make_traces(), [], make_records(), oracle_teacher(calls, wrong_first=True), cfg, set())
    assert len(pairs) == 6 and stats["teacher_prompts"] == 6 and len(calls[0][0]) == 6
    assert all(p["chosen"] == _solution(p["id"]) and p["teacher"] == "strong" for p in pairs)  # the graded-correct try


def test_leakage_guard_names_the_ids():
    with pytest.raises(LeakageError, match=r"p1.*p3|p3.*p1") as exc:
        build("ALL", eval_ids={"p3", "p1", "zz"})
    assert "zz" not in str(exc.value)
    with pytest.raises(LeakageError, match="p5"):
        build("RAND_NS", eval_ids={"p5"})
    with pytest.raises(LeakageError, match="p2"):
        build("ALL_NS", eval_ids={"p2"})


def test_max_pairs_dedupe_and_held_out_families():
    calls: list = []
    pairs, stats = build("ALL", teacher=oracle_teacher(calls), max_pairs=2)
    assert len(pairs) == 2 and stats["teacher_prompts"] == 2  # the teacher only sees what is needed
    again, _ = build("ALL", max_pairs=2)
    assert [p["id"] for p in again] == [p["id"] for p in pairs]  # seeded selection
    # a duplicated label yields one pair when dedupe is on
    labels = make_labels() + [make_labels()[0]]
    cfg = RecoveryConfig(subset="ALL", teacher_tries=1)
    args = (labels, make_traces(), [], make_records(), oracle_teacher(), cfg, set())
    pairs, stats = build_pairs("ALL", *args)
    assert len(pairs) == 4 and stats["skipped"]["duplicate"] == 1
    cfg.dedupe = False
    assert len(build_pairs("ALL", *args)[0]) == 5
    # a held-out family is never used, even when it holds failures
    records = make_records({"p1": "control", "p4": "control"})
    pairs, stats = build("EE", records=records, exclude_families=["control"])
    assert pairs == [] and stats["skipped"]["excluded_family"] == 2
    pairs, _ = build("RAND_NS", records=records, exclude_families=["control"])
    assert not {"p1", "p4"} & {p["id"] for p in pairs}


CHATML_PROMPT = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def test_endpoint_teacher_gets_the_plain_problem_and_prefix_never_the_chat_template(tmp_path, monkeypatch):
    """A chat model's traces carry its templated prompt; the `llm` teacher's user message is the plain
    problem + the kept steps (no ``<|im_start|>`` markup), while the pair keeps the model's own prompt."""
    from qmr.devtools.openai_server import OpenAIStubServer
    from qmr.endpoints import EndpointSpec
    from qmr.restore.llm_teacher import llm_teacher

    seen: list[list[dict]] = []

    def responder(request: dict) -> str:
        seen.append(request["messages"])
        text = "\n".join(m["content"] for m in request["messages"])
        pid = next(p for p, (q, _, _) in GOLD.items() if q in text)
        return "\n".join(_solution(pid).split("\n")[QT[pid][3] - 1 :])  # the gold steps from the error step on

    traces = make_traces()
    for t in traces:
        t["prompt"] = CHATML_PROMPT.format(q=GOLD[t["id"]][0])
    monkeypatch.setenv("QMR_TEACHER_KEY", "k")
    with OpenAIStubServer(responder=responder) as srv:
        spec = EndpointSpec(base_url=srv.url, model="teacher", api_key_env="QMR_TEACHER_KEY", max_retries=0)
        teacher = llm_teacher(spec, temperature=0.7, cache=tmp_path / "teacher.jsonl")
        cfg = RecoveryConfig(subset="ALL", teacher="teacher", teacher_tries=1)
        pairs, stats = build_pairs("ALL", make_labels(), traces, make_fp_traces(), make_records(), teacher, cfg, set())
        assert srv.requests == 4  # one per candidate (the stub calls a responder twice per request)
    assert stats["pairs"] == 4 and seen
    for messages in seen:
        assert not any(tok in m["content"] for m in messages for tok in ("<|im_start|>", "<|im_end|>", "<|"))
    users = {m["content"] for messages in seen for m in messages if m["role"] == "user"}
    assert resume_prompt(build_prompt(GOLD["p1"][0]), ["3 + 4 = 7"]) in users  # plain problem + the kept step
    by_id = {p["id"]: p for p in pairs}
    assert by_id["p1"]["prompt"] == CHATML_PROMPT.format(q=GOLD["p1"][0]) + "3 + 4 = 7\n"  # training: the model's prompt
    assert by_id["p1"]["chosen"] == "7 + 5 = 12\nThe answer is 12."


def test_configs_validate():
    with pytest.raises(ConfigError) as exc:
        from_dict(RecoveryConfig, {"subset": "XX", "teacher_tries": 0})
    assert "subset" in str(exc.value) and "teacher_tries" in str(exc.value)
    with pytest.raises(ConfigError, match="teacher_temperature"):
        from_dict(RecoveryConfig, {"teacher_tries": 3, "teacher_temperature": 0.0})
    with pytest.raises(ConfigError) as exc:
        from_dict(RestoreConfig, {"objective": "ppo", "warmup_ratio": 1.5, "lora_r": 0})
    msg = str(exc.value)
    assert "objective" in msg and "warmup_ratio" in msg and "lora_r" in msg
    assert from_dict(RestoreConfig, {"objective": "dpo_nll", "rpo_alpha": 0.5}).rpo_alpha == 0.5


# --------------------------------------------------------------------------------------------------
# training on a tiny quantized model
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from transformers import LlamaConfig, LlamaForCausalLM

    from qmr.toy.tokenizer import build_tokenizer

    root = tmp_path_factory.mktemp("restore-model")
    tok = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,  # W4A16's group size is 128
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    base = root / "base"
    LlamaForCausalLM(config).save_pretrained(base)
    tok.save_pretrained(base)
    model = LlamaForCausalLM.from_pretrained(base)
    oneshot(
        model=model,
        tokenizer=tok,
        recipe=[QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])],
    )
    out = root / "q"
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"
    return out


def toy_pairs() -> list[dict]:
    pairs = []
    for i, (a, b) in enumerate([(3, 4), (5, 2), (6, 1), (2, 2)]):
        prompt = build_prompt(f"Tom has {a} apples and buys {b} more. How many?")
        pairs.append(
            {
                "id": f"t{i}",
                "subset": "ALL",
                "prompt": prompt,
                "chosen": f"{a} + {b} = {a + b}\nThe answer is {a + b}.",
                "rejected": f"{a} + {b} = {a + b + 1}\nThe answer is {a + b + 1}.",
            }
        )
    return pairs


FAST = {
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "batch_size": 4,
}


def _logits(model, tok, text: str):
    import torch

    device = next(model.parameters()).device  # CUDA where present (load_base follows the trainer)
    ids = {k: v.to(device) for k, v in tok([text], return_tensors="pt").items()}
    with torch.no_grad():
        return model(**ids).logits.float().cpu()


def test_dpo_lora_trains_saves_and_reloads(quantized_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from qmr.determinism import set_determinism
    from qmr.restore.train import load_base, load_restored, train_adapter, train_restore

    cfg = RestoreConfig(objective="dpo", max_steps=6, seed=3, **FAST)
    out = tmp_path / "restored"
    stats = train_restore(quantized_dir, toy_pairs(), cfg, out, threads=1)

    assert stats["trained"] and stats["steps"] == 6 and stats["pairs"] == 4
    record = json.loads((out / "restore.json").read_text())
    assert (
        record["base"] == str(quantized_dir)
        and record["config"]["objective"] == "dpo"
        and record["seconds"] > 0
    )
    rows = json.loads((out / "train_log.json").read_text())
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert set(rows[0]) == {
        "step",
        "loss",
        "rewards/margins",
        "rewards/chosen",
        "rewards/rejected",
        "learning_rate",
    }
    # step 1: adapter B = 0, policy == reference -> loss log 2, margin 0; then the DPO loss falls
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)
    assert rows[-1]["loss"] < rows[0]["loss"] - 0.05 and rows[-1]["rewards/margins"] > 0
    # the adapter moved (LoRA B starts at zero)
    weights = load_file(str(out / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    assert (out / "tokenizer.json").exists()

    # reload = base + adapter; same logits as the end of an identical (seeded) training run
    text = toy_pairs()[0]["prompt"] + toy_pairs()[0]["chosen"]
    set_determinism(cfg.seed, 1)
    model, tok = load_base(quantized_dir)
    trained, _, summary = train_adapter(model, tok, toy_pairs(), cfg)
    assert summary["last_loss"] == pytest.approx(stats["last_loss"], abs=1e-6)  # deterministic
    end_logits = _logits(trained, tok, text)
    restored, rtok = load_restored(out)
    assert torch.allclose(_logits(restored, rtok, text), end_logits, atol=1e-5)
    base_model, _ = load_base(quantized_dir)
    assert not torch.allclose(_logits(base_model, tok, text), end_logits, atol=1e-3)
    # the frozen base kept the low-bit grid: at most 16 distinct values per 128-group row
    w = base_model.model.layers[0].self_attn.q_proj.weight.detach()
    assert len(torch.unique(w[0, :128])) <= 16


@pytest.mark.parametrize("objective", ["dpo_nll", "sft"])
def test_other_objectives_train(quantized_dir, tmp_path, objective):
    from qmr.restore.train import train_restore

    cfg = RestoreConfig(objective=objective, max_steps=4, seed=0, rpo_alpha=1.0, **FAST)
    stats = train_restore(quantized_dir, toy_pairs(), cfg, tmp_path / objective, threads=1)
    assert stats["trained"] and stats["steps"] == 4
    assert stats["last_loss"] < stats["first_loss"]
    rows = json.loads((tmp_path / objective / "train_log.json").read_text())
    if objective == "sft":
        assert rows[0]["rewards/margins"] is None
    else:
        assert rows[0]["loss"] > 0.6931 + 0.5  # DPO's log 2 plus the NLL on chosen


# --------------------------------------------------------------------------------------------------
# step spans, step_dpo and distillation from the reference model (kd, gkd)
# --------------------------------------------------------------------------------------------------


def test_new_restore_keys_validate():
    with pytest.raises(ConfigError) as exc:
        from_dict(RestoreConfig, {"pair_span": "half", "kd_loss": "kl", "kd_beta": 1.5, "gkd_lmbda": -0.1, "gkd_max_new_tokens": 0})
    msg = str(exc.value)
    for key in ("pair_span", "kd_loss", "kd_beta", "gkd_lmbda", "gkd_max_new_tokens"):
        assert f"restore.{key}" in msg or key in msg, (key, msg)
    assert "'full'" in msg and "'forward_kl'" in msg  # what is allowed
    problems = {p.key.split(".")[-1] for p in RestoreConfig(kd_temperature=0.0, kd_nll_weight=-1.0).check("restore")}
    assert problems == {"kd_temperature", "kd_nll_weight"}
    cfg = from_dict(RestoreConfig, {"objective": "kd", "kd_loss": "jsd", "kd_beta": 0.3})
    assert (cfg.objective, cfg.kd_loss, cfg.kd_beta) == ("kd", "jsd", 0.3)


def test_step_span_cuts_chosen_and_rejected_at_their_first_step():
    from qmr.restore.train import effective_span, span_pairs

    pairs, _ = build("ALL")
    by_id = {p["id"]: p for p in span_pairs(pairs, "step")}
    # p1 failed at step 2: the prefix keeps "3 + 4 = 7"; the spans are the second step of each side
    assert by_id["p1"]["chosen"] == "7 + 5 = 12" and by_id["p1"]["rejected"] == "7 + 5 = 13"
    # p3 failed at step 3: the teacher's next step is the answer line, the quantized model's a wrong step
    assert by_id["p3"]["chosen"] == "The answer is 13." and by_id["p3"]["rejected"] == "13 - 1 = 12"
    assert all(by_id[p["id"]]["prompt"] == p["prompt"] for p in pairs)  # the prompt is untouched
    assert span_pairs(pairs, "full") == pairs
    assert effective_span(RestoreConfig(objective="step_dpo")) == "step"
    assert effective_span(RestoreConfig(objective="dpo", pair_span="step")) == "step"
    assert effective_span(RestoreConfig(objective="dpo")) == "full"


def test_step_dpo_trains_on_step_spans_and_drops_equal_steps(quantized_dir, tmp_path):
    from qmr.restore.train import train_restore

    pairs = toy_pairs()
    # a pair whose first steps agree (the error comes later): no preference left on a step span
    pairs.append({**pairs[0], "id": "same", "rejected": pairs[0]["chosen"].split("\n")[0] + "\nThe answer is 0."})
    cfg = RestoreConfig(objective="step_dpo", max_steps=4, seed=0, rpo_alpha=1.0, **FAST)
    stats = train_restore(quantized_dir, pairs, cfg, tmp_path / "step", threads=1)
    assert stats["trained"] and stats["pair_span"] == "step" and stats["span_dropped"] == 1 and stats["pairs"] == 4
    assert stats["last_loss"] < stats["first_loss"]
    assert (tmp_path / "step" / "adapter_model.safetensors").exists()
    # the same pairs on full spans keep all five
    full = train_restore(quantized_dir, pairs, RestoreConfig(objective="dpo_nll", max_steps=1, **FAST), tmp_path / "full", threads=1)
    assert full["pair_span"] == "full" and full["span_dropped"] == 0 and full["pairs"] == 5


def test_step_spans_do_not_end_in_eos_but_full_spans_do(quantized_dir, tmp_path):
    """A step is not the end of a solution: on step spans the preference trainers drop trl's EOS."""
    from qmr.restore.train import _build_trainer, load_base, span_pairs

    ends = {}
    for objective in ("step_dpo", "dpo"):
        model, tok = load_base(quantized_dir)
        eos = tok.eos_token_id
        cfg = RestoreConfig(objective=objective, max_steps=1, **FAST)
        pairs = span_pairs(toy_pairs(), "step") if objective == "step_dpo" else toy_pairs()
        data = _build_trainer(model, tok, pairs, cfg, str(tmp_path / objective)).train_dataset
        ends[objective] = [(row["chosen_ids"][-1] == eos, row["rejected_ids"][-1] == eos) for row in data]
    assert ends["step_dpo"] and not any(c or r for c, r in ends["step_dpo"])
    assert ends["dpo"] and all(c and r for c, r in ends["dpo"])


def _fp_dir(quantized_dir):
    return quantized_dir.parent / "base"  # the fixture's unquantized model: the teacher


def test_kd_needs_a_teacher(quantized_dir, tmp_path):
    from qmr.restore.train import train_restore

    with pytest.raises(ValueError, match="teacher"):
        train_restore(quantized_dir, toy_pairs(), RestoreConfig(objective="kd", max_steps=1, **FAST), tmp_path / "kd")


def _kd_grads(quantized_dir, teacher_dir, cfg: RestoreConfig) -> tuple[float, float]:
    """(loss, largest |gradient| of the adapter) of one kd batch of all four toy pairs, adapter B = 0."""
    import tempfile

    from qmr.restore.train import _build_trainer, load_base

    model, tok = load_base(quantized_dir)
    teacher, _ = load_base(teacher_dir)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _build_trainer(model, tok, toy_pairs(), cfg, tmp, teacher=teacher)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = [p.grad.abs().max().item() for p in trainer.model.parameters() if p.requires_grad and p.grad is not None]
    return loss.item(), max(grads)


@pytest.mark.parametrize("kd_loss", ["forward_kl", "jsd"])
def test_kd_loss_is_zero_when_the_student_is_the_teacher(quantized_dir, tmp_path, kd_loss):
    """Teacher = the quantized base itself: at LoRA B = 0 the two distributions agree on every token, so
    the divergence is 0 and so is its gradient (up to rounding); against the fp teacher neither is.
    (Only step 1 is checked in a run: Adam turns even rounding-size gradients into lr-size steps.)"""
    from qmr.restore.train import train_restore

    cfg = RestoreConfig(objective="kd", kd_loss=kd_loss, kd_beta=0.5, max_steps=1, seed=0, **FAST)
    stats = train_restore(quantized_dir, toy_pairs(), cfg, tmp_path / kd_loss, threads=1, teacher_dir=quantized_dir)
    row = json.loads((tmp_path / kd_loss / "train_log.json").read_text())[0]
    assert abs(row["kd_loss"]) < 1e-7 and abs(row["loss"]) < 1e-7, row
    assert row["nll"] > 0.1  # logged (weight 0): a random tiny model is far from predicting chosen
    assert stats["teacher"] == str(quantized_dir)
    loss, grad = _kd_grads(quantized_dir, quantized_dir, cfg)
    assert abs(loss) < 1e-7 and grad < 1e-6
    loss, grad = _kd_grads(quantized_dir, _fp_dir(quantized_dir), cfg)
    assert loss > 1e-4 and grad > 1e-5


def _manual_forward_kl(student, teacher, tok, pairs) -> float:
    """KL(teacher || student) per chosen token (EOS included), averaged over all of them: by hand."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    for p in pairs:
        n = len(tok(p["prompt"])["input_ids"])
        ids = tok(p["prompt"] + p["chosen"])["input_ids"] + [tok.eos_token_id]
        x = torch.tensor([ids])
        with torch.no_grad():
            s = F.log_softmax(student(input_ids=x).logits[0].float(), -1)
            t = F.log_softmax(teacher(input_ids=x).logits[0].float(), -1)
        for pos in range(n - 1, len(ids) - 1):  # logits at pos predict token pos + 1, a chosen token
            total += float((t[pos].exp() * (t[pos] - s[pos])).sum())
            count += 1
    return total / count


def test_kd_distils_the_fp_teacher(quantized_dir, tmp_path):
    from safetensors.torch import load_file

    from qmr.restore.train import LOG_KEYS, load_base, train_restore

    teacher_dir = _fp_dir(quantized_dir)
    cfg = RestoreConfig(objective="kd", max_steps=5, seed=0, **FAST)
    out = tmp_path / "kd"
    stats = train_restore(quantized_dir, toy_pairs(), cfg, out, threads=1, teacher_dir=teacher_dir)
    rows = json.loads((out / "train_log.json").read_text())
    assert set(rows[0]) == {"step", *LOG_KEYS, "kd_loss", "nll"}
    # step 1 (one batch of all four pairs, adapter B = 0): the logged divergence is the forward KL of the
    # fp model against the quantized one over the chosen tokens, computed here by hand
    student, tok = load_base(quantized_dir)
    teacher, _ = load_base(teacher_dir)
    assert rows[0]["kd_loss"] == pytest.approx(_manual_forward_kl(student, teacher, tok, toy_pairs()), rel=1e-4)
    assert rows[0]["kd_loss"] > 1e-3 and rows[0]["loss"] == pytest.approx(rows[0]["kd_loss"], rel=1e-5)
    assert stats["last_kd_loss"] < stats["first_kd_loss"]
    lora_b = [v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    # kd_nll_weight mixes in the NLL of chosen: loss = kd + w x nll at step 1
    cfg = RestoreConfig(objective="kd", kd_nll_weight=0.5, max_steps=1, seed=0, **FAST)
    train_restore(quantized_dir, toy_pairs(), cfg, tmp_path / "mix", threads=1, teacher_dir=teacher_dir)
    row = json.loads((tmp_path / "mix" / "train_log.json").read_text())[0]
    assert row["kd_loss"] == pytest.approx(rows[0]["kd_loss"], rel=1e-5)
    assert row["loss"] == pytest.approx(row["kd_loss"] + 0.5 * row["nll"], rel=1e-4)


def test_gkd_trains_on_the_students_own_samples(quantized_dir, tmp_path):
    from safetensors.torch import load_file

    from qmr.restore.train import train_restore

    cfg = RestoreConfig(objective="gkd", gkd_lmbda=1.0, gkd_max_new_tokens=6, kd_nll_weight=1.0, max_steps=2, seed=0, **FAST)
    out = tmp_path / "gkd"
    stats = train_restore(quantized_dir, toy_pairs(), cfg, out, threads=1, teacher_dir=_fp_dir(quantized_dir))
    rows = json.loads((out / "train_log.json").read_text())
    assert stats["steps"] == 2 and [r["on_policy"] for r in rows] == [1.0, 1.0]
    # on-policy batches: the divergence on the student's tokens only, no NLL term (its labels are its own)
    assert all(r["nll"] is None and r["kd_loss"] > 0 and r["loss"] == pytest.approx(r["kd_loss"], rel=1e-5) for r in rows)
    lora_b = [v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)


def _lrs_used(quantized_dir, cfg: RestoreConfig, total: int) -> list[float]:
    """The learning rate of each of ``total`` optimizer steps under the trainer's own scheduler."""
    import tempfile

    from qmr.restore.train import _build_trainer, load_base

    model, tok = load_base(quantized_dir)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _build_trainer(model, tok, toy_pairs(), cfg, tmp)
        trainer.create_optimizer_and_scheduler(num_training_steps=total)
        lrs = []
        for _ in range(total):
            lrs.append(trainer.optimizer.param_groups[0]["lr"])
            trainer.lr_scheduler.step()
    return lrs


@pytest.mark.parametrize("steps", [1, 2])
def test_warmup_leaves_a_step_at_a_nonzero_rate(quantized_dir, tmp_path, steps):
    """A tiny run (few pairs) with the default warm-up ratio: the last step trains, the adapter moves."""
    from safetensors.torch import load_file

    from qmr.restore.train import train_restore

    cfg = RestoreConfig(objective="sft", max_steps=steps, seed=0, **{**FAST, "warmup_ratio": 0.1})
    lrs = _lrs_used(quantized_dir, cfg, steps)
    assert lrs[-1] > 0 and (steps == 2 or lrs[0] == pytest.approx(cfg.learning_rate))
    out = tmp_path / "restored"
    assert train_restore(quantized_dir, toy_pairs(), cfg, out, threads=1)["steps"] == steps
    lora_b = [v for k, v in load_file(str(out / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # LoRA B starts at zero


def test_the_toy_defaults_schedules_are_unchanged(quantized_dir, default_params):
    """The committed toy runs (restore: 492 and 257 pairs, 8 a batch, 4 epochs; align: 500 steps) keep
    transformers' warm-up of ceil(ratio x steps) and so their learning-rate sequence, step for step."""
    import math

    import torch
    from transformers import get_scheduler

    from qmr.align import AlignConfig
    from qmr.config import from_dict

    restore = from_dict(RestoreConfig, default_params["restore"])
    align = from_dict(AlignConfig, default_params["align"]).trainer_config()
    runs = [(restore, 4 * math.ceil(492 / 8)), (restore, 4 * math.ceil(257 / 8)), (align, 500)]
    for cfg, total in runs:
        cfg = RestoreConfig(**{**cfg.__dict__, "lora_r": 4, "lora_alpha": 8})  # the schedule does not depend on the rank
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
        ref = get_scheduler(cfg.lr_scheduler, opt, num_warmup_steps=math.ceil(total * cfg.warmup_ratio), num_training_steps=total)
        expected = []
        for _ in range(total):
            expected.append(opt.param_groups[0]["lr"])
            ref.step()
        assert _lrs_used(quantized_dir, cfg, total) == expected, (cfg.objective, total)


def test_zero_pairs_writes_a_record_and_reloads_the_base(quantized_dir, tmp_path):
    import torch

    from qmr.restore.train import load_base, load_restored, train_restore

    out = tmp_path / "empty"
    stats = train_restore(quantized_dir, [], RestoreConfig(), out, threads=1)
    assert stats["trained"] is False and "nothing was trained" in stats["message"]
    assert json.loads((out / "restore.json").read_text())["trained"] is False
    assert not (out / "adapter_config.json").exists()
    model, tok = load_restored(out)
    base, _ = load_base(quantized_dir)
    assert torch.equal(_logits(model, tok, "Question: 1\n"), _logits(base, tok, "Question: 1\n"))


def test_merge_then_requantize(quantized_dir, tmp_path):
    import torch

    from qmr.quant.load import load_model
    from qmr.restore.train import load_restored, merge_adapter, merge_and_requantize, train_restore

    pytest.importorskip("qmr.quant.run")
    from qmr.quant.spec import QuantSpec

    restored = tmp_path / "restored"
    train_restore(quantized_dir, toy_pairs(), RestoreConfig(max_steps=2, **FAST), restored, threads=1)
    text = toy_pairs()[1]["prompt"]
    model, tok = load_restored(restored)
    merged = merge_adapter(restored, tmp_path / "merged")
    assert "quantization_config" not in json.loads((merged / "config.json").read_text())
    plain, _ = load_model(merged)
    assert torch.allclose(_logits(plain, tok, text), _logits(model, tok, text), atol=1e-4)

    spec = QuantSpec(method="rtn", bits=4, group_size=128)
    stats = merge_and_requantize(restored, tmp_path / "requant", spec, [text], max_length=32, seed=0)
    qc = json.loads((tmp_path / "requant" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and stats["requantized"] == str(tmp_path / "requant")
    requant, _ = load_model(tmp_path / "requant")
    assert _logits(requant, tok, text).shape == _logits(model, tok, text).shape


def test_requantize_spec_offers_gptq_for_rounding_variants():
    from qmr.quant.spec import QuantSpec
    from qmr.restore.train import requantize_spec

    rtn = QuantSpec(method="rtn", bits=2, group_size=128, symmetric=False)
    assert requantize_spec(rtn, "same") is rtn
    g = requantize_spec(rtn, "gptq")
    assert (g.method, g.bits, g.group_size, g.symmetric) == ("gptq", 2, 128, False)
    assert requantize_spec(QuantSpec(method="awq", bits=4), "gptq").method == "gptq"
    sq = QuantSpec(method="smoothquant", bits=8, group_size=None, activation_bits=8)
    assert requantize_spec(sq, "gptq") is sq  # already compensates (GPTQ inside); W8A8 is kept as it is
    with pytest.raises(ConfigError, match="requantize_method"):
        from_dict(RestoreConfig, {"requantize_method": "awq"})


def test_merge_then_requantize_with_gptq(quantized_dir, tmp_path):
    from qmr.quant.spec import QuantSpec
    from qmr.restore.train import merge_and_requantize, requantize_spec, train_restore

    restored = tmp_path / "restored"
    train_restore(quantized_dir, toy_pairs(), RestoreConfig(max_steps=2, **FAST), restored, threads=1)
    spec = requantize_spec(QuantSpec(method="rtn", bits=4, group_size=128), "gptq")
    texts = [p["prompt"] + p["chosen"] for p in toy_pairs()]
    stats = merge_and_requantize(restored, tmp_path / "requant", spec, texts, max_length=32, seed=0)
    assert stats["method"] == "gptq" and (tmp_path / "requant" / "config.json").exists()
