"""The real-model path with local stand-ins of the two model families the presets name.

Llama-3 and Qwen2 differ in the one thing these tests are about: a Llama-3 chat template writes
``<|begin_of_text|>`` itself *and* its tokenizer prepends BOS to every text it encodes (a post-processor),
while Qwen2 has no BOS at all. The stand-ins are tiny random models of the real architectures
(transformers configs) with a byte-level BPE tokenizer trained here (the `tokenizers` library) and the
family's chat template; nothing is downloaded. Every tokenized input — generation, SFT/DPO training
data, calibration — must start with exactly one BOS for Llama and carry none for Qwen2.

Also here: written checkpoints keep ``use_cache: true``; the dtype each path asks for (float32 on CPU,
bf16/fp16 on CUDA) and gradient checkpointing on CUDA only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmr.prompts import build_prompt

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have?",
    "Ann has 10 pens and gives away 2. How many are left?",
    "A box holds 6 eggs. How many eggs are in 4 boxes?",
]
SOLUTION = "3 + 4 = 7\nThe answer is 7."


def _corpus() -> list[str]:
    words = ("apples pens eggs boxes has buys gives more left how many are in the answer is step problem solve "
             "each line put own finish with where final you a helpful assistant system user").split()  # fmt: skip
    out = [*QUESTIONS, SOLUTION, build_prompt("x")]
    for i in range(300):
        out.append(f"{words[i % len(words)]} {i % 97} {words[(i * 7) % len(words)]} + {i % 13} = {i % 13 + i % 97}.")
    return out


def _tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = LLAMA3_SPECIALS if family == "llama" else QWEN2_SPECIALS
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(_corpus(), trainer=trainer)
    if family == "llama":  # Llama-3's tokenizer.json prepends BOS to every encoded text
        bos = "<|begin_of_text|>"
        raw.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, raw.token_to_id(bos))]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=raw, bos_token=bos, eos_token="<|eot_id|>", pad_token="<|end_of_text|>",
            chat_template=LLAMA3_TEMPLATE, clean_up_tokenization_spaces=False,
        )  # fmt: skip
    raw.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN2_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )  # fmt: skip


def _stand_in(root: Path, family: str) -> Path:
    """A tiny random model of the family's architecture + its tokenizer, saved like a hub checkpoint."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = _tokenizer(family)
    torch.manual_seed(0)
    dims = {"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 512}  # fmt: skip
    if family == "llama":
        config = LlamaConfig(**dims, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        model = LlamaForCausalLM(config)
    else:
        config = Qwen2Config(**dims, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = root / family
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stand-ins")
    return {family: _stand_in(root, family) for family in ("llama", "qwen2")}


def _unpadded(ids: list[int], mask: list[int]) -> list[int]:
    return [t for t, m in zip(ids, mask, strict=True) if m]


def _check_bos(family: str, tok, ids: list[int], text: str | None = None) -> None:
    if family == "llama":
        assert ids[0] == tok.bos_token_id, tok.decode(ids[:4])
        assert ids.count(tok.bos_token_id) == 1, tok.decode(ids[:4])
    else:
        assert tok.bos_token_id is None
        if text is not None:  # nothing added: exactly the text's own tokens
            assert ids == tok(text, add_special_tokens=False)["input_ids"]


def test_stand_ins_behave_like_their_families(stand_ins):
    """The premise: the Llama template writes BOS and the tokenizer adds one more; Qwen2 has none."""
    from transformers import AutoTokenizer

    llama = AutoTokenizer.from_pretrained(stand_ins["llama"])
    prompt = build_prompt(QUESTIONS[0], "chat", llama)
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>user")
    assert llama(prompt)["input_ids"][:2] == [llama.bos_token_id] * 2  # the double BOS a naive encode makes
    qwen = AutoTokenizer.from_pretrained(stand_ins["qwen2"])
    prompt = build_prompt(QUESTIONS[0], "chat", qwen)
    assert prompt.startswith("<|im_start|>system") and qwen.bos_token is None
    assert qwen(prompt)["input_ids"] == qwen(prompt, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_generation_inputs_have_exactly_one_bos(stand_ins, family):
    """The transformers backend feeds the model one BOS at the start of every left-padded prompt (Llama),
    none added (Qwen2). The inputs are read off the real `generate` call."""
    from qmr.generation.hf import TransformersBackend

    backend = TransformersBackend(str(stand_ins[family]), device="cpu", batch_size=8)
    seen = []
    real_generate = backend.model.generate

    def spy(**kwargs):
        seen.append((kwargs["input_ids"].tolist(), kwargs["attention_mask"].tolist()))
        return real_generate(**kwargs)

    backend.model.generate = spy
    prompts = [build_prompt(q, "chat", backend.tokenizer) for q in QUESTIONS]
    backend.generate(prompts, max_new_tokens=2, progress=False)
    (batch,) = seen
    tok = backend.tokenizer
    texts = sorted(prompts, key=len, reverse=True)  # the backend's batch order: longest first
    for row, mask, text in zip(*batch, texts, strict=True):
        ids = _unpadded(row, mask)
        assert row[len(row) - len(ids) :] == ids  # left padding
        _check_bos(family, tok, ids, text)


def _pairs(tok) -> list[dict]:
    return [{"id": f"p{i}", "prompt": build_prompt(q, "chat", tok), "chosen": SOLUTION, "rejected": "3 + 4 = 8\nThe answer is 8."}
            for i, q in enumerate(QUESTIONS)]  # fmt: skip


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("objective", ["dpo", "sft"])
def test_restore_training_inputs_have_exactly_one_bos(stand_ins, family, objective, tmp_path):
    """trl tokenizes restore's (templated) prompts again with special tokens: one BOS in the result."""
    from qmr.restore.train import RestoreConfig, _build_trainer, load_base

    model, tok = load_base(stand_ins[family], device="cpu")
    cfg = RestoreConfig(objective=objective, max_steps=1, batch_size=2, lora_r=2, lora_alpha=4, max_length=256)
    trainer = _build_trainer(model, tok, _pairs(tok), cfg, str(tmp_path))
    data = trainer.train_dataset
    rows = data["input_ids"] if objective == "sft" else [p + c for p, c in zip(data["prompt_ids"], data["chosen_ids"], strict=True)]
    assert len(rows) == len(QUESTIONS)
    for ids in rows:
        _check_bos(family, tok, ids)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_align_training_inputs_have_exactly_one_bos(stand_ins, family, tmp_path):
    """align's SFT examples (chat-templated prompts of step-formatted solutions) reach trl with one BOS."""
    from qmr.align import AlignConfig, build_examples
    from qmr.restore.train import _build_trainer, load_base

    model, tok = load_base(stand_ins[family], device="cpu")
    records = [{"id": f"r{i}", "question": q, "answer": "7", "solution": "3 + 4 = 7"} for i, q in enumerate(QUESTIONS)]
    examples, dropped = build_examples(records, lambda q: build_prompt(q, "chat", tok))
    assert dropped == 0
    cfg = AlignConfig(method="lora_sft", max_steps=1, batch_size=2, lora_r=2, lora_alpha=4)
    trainer = _build_trainer(model, tok, examples, cfg.trainer_config(), str(tmp_path))
    for ids in trainer.train_dataset["input_ids"]:
        _check_bos(family, tok, ids)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_calibration_inputs_have_exactly_one_bos(stand_ins, family):
    """Chat-style calibration texts are tokenized with one BOS (Llama), none added (Qwen2)."""
    from transformers import AutoTokenizer

    from qmr.quant.calibration import calibration_texts
    from qmr.quant.run import _calibration_dataset

    tok = AutoTokenizer.from_pretrained(stand_ins[family])
    records = [{"question": q, "solution": SOLUTION} for q in QUESTIONS]
    texts = calibration_texts(records, "chat", str(stand_ins[family]))
    data = _calibration_dataset(tok, texts, max_length=512)
    for ids in data["input_ids"]:
        _check_bos(family, tok, ids)


def test_plain_prompts_keep_the_toy_encoding():
    """The toy's plain prompts carry no BOS text: their encoding (the tokenizer's own BOS) is unchanged."""
    from qmr.prompts import strip_bos
    from qmr.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    texts = [build_prompt("Tom has 3 apples. How many?")]
    assert strip_bos(texts, tok) == texts
    assert tok(strip_bos(texts, tok))["input_ids"] == tok(texts)["input_ids"]


# --------------------------------------------------------------------------------------------------
# written checkpoints: use_cache stays on
# --------------------------------------------------------------------------------------------------


def _assert_cache_on(out: Path) -> None:
    config = json.loads((out / "config.json").read_text())
    assert config.get("use_cache") is True, config.get("use_cache")
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation.get("use_cache", True) is True


def test_aligned_checkpoint_keeps_use_cache(stand_ins, tmp_path):
    """The trainer switches the KV cache off (config.use_cache = False) while training; the merged
    checkpoint `align` writes has it on again."""
    from qmr.align import AlignConfig, build_examples, train_align

    records = [{"id": f"r{i}", "question": q, "answer": "7", "solution": "3 + 4 = 7"} for i, q in enumerate(QUESTIONS)]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(stand_ins["llama"])
    examples, _ = build_examples(records, lambda q: build_prompt(q, "chat", tok))
    cfg = AlignConfig(method="lora_sft", max_steps=1, batch_size=2, lora_r=2, lora_alpha=4, checkpoint_steps=0)
    train_align(stand_ins["llama"], examples, cfg, tmp_path / "aligned", threads=1)
    _assert_cache_on(tmp_path / "aligned")


def test_merged_restored_checkpoint_keeps_use_cache(stand_ins, tmp_path):
    import torch

    from qmr.restore.train import RestoreConfig, load_restored, merge_adapter, train_restore

    tok = _tokenizer("llama")
    cfg = RestoreConfig(objective="sft", max_steps=1, batch_size=2, lora_r=2, lora_alpha=4, checkpoint_steps=0)
    record = train_restore(stand_ins["llama"], _pairs(tok), cfg, tmp_path / "restored", threads=1)
    _assert_cache_on(merge_adapter(tmp_path / "restored", tmp_path / "merged"))
    # the CPU path is unchanged: the restored model's base is float32, and restore.json says so
    assert record["dtype"] == "float32"
    model, _ = load_restored(tmp_path / "restored")
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_quantized_checkpoint_keeps_use_cache_and_records_its_dtype(stand_ins, tmp_path):
    """A source written with the cache off (an aligned checkpoint from before this was fixed) is
    quantized into a checkpoint with it on. On CPU the checkpoint is written in float32 (the toy's
    numbers), and the stats say so."""
    import shutil

    from qmr.quant.run import quantize_checkpoint
    from qmr.quant.spec import QuantSpec

    source = tmp_path / "source"
    shutil.copytree(stand_ins["llama"], source)
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "use_cache": False}))
    spec = QuantSpec(method="rtn", bits=4, group_size=32, symmetric=True)
    stats = quantize_checkpoint(source, tmp_path / "q", spec, [SOLUTION] * 4, max_length=64, seed=0)
    _assert_cache_on(tmp_path / "q")
    assert stats["dtype"] == "float32"
    assert json.loads((tmp_path / "q" / "config.json").read_text())["dtype"] == "float32"


# --------------------------------------------------------------------------------------------------
# dtype and memory knobs by device
# --------------------------------------------------------------------------------------------------


def test_compute_dtype_by_device(stand_ins):
    """float32 on CPU; bf16 on CUDA, fp16 on a GPU without bf16. Generation on CPU runs in float32."""
    import torch

    from qmr.generation.hf import TransformersBackend
    from qmr.quant.load import compute_dtype, dtype_name

    assert compute_dtype("cpu") == torch.float32
    assert compute_dtype("cuda", bf16_supported=True) == torch.bfloat16
    assert compute_dtype("cuda:0", bf16_supported=False) == torch.float16
    assert dtype_name(torch.bfloat16) == "bfloat16"
    backend = TransformersBackend(str(stand_ins["qwen2"]), device="cpu")
    assert backend.dtype == torch.float32 and {p.dtype for p in backend.model.parameters()} == {torch.float32}


def test_trainer_arguments_by_device(tmp_path):
    """CUDA: mixed precision and gradient checkpointing (auto); CPU: float32, no checkpointing — set
    explicitly, since trl's own configs default gradient_checkpointing to True."""
    from trl import SFTConfig

    from qmr.align import AlignConfig
    from qmr.restore.train import RestoreConfig, _trainer_args

    cuda = _trainer_args(RestoreConfig(), str(tmp_path), device="cuda")
    assert cuda["gradient_checkpointing"] is True and cuda["use_cpu"] is False
    assert cuda["bf16"] != cuda["fp16"]  # exactly one: bf16, or fp16 where the GPU lacks bf16
    assert cuda["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    assert _trainer_args(RestoreConfig(gradient_checkpointing=False), str(tmp_path), device="cuda")["gradient_checkpointing"] is False
    align_cuda = _trainer_args(AlignConfig(method="lora_sft").trainer_config(), str(tmp_path), device="cuda")
    assert align_cuda["gradient_checkpointing"] is True
    cpu = _trainer_args(RestoreConfig(), str(tmp_path), device="cpu")
    assert (cpu["gradient_checkpointing"], cpu["bf16"], cpu["fp16"], cpu["use_cpu"]) == (False, False, False, True)
    assert "gradient_checkpointing_kwargs" not in cpu
    assert SFTConfig(**cpu).gradient_checkpointing is False
    assert _trainer_args(RestoreConfig(gradient_checkpointing=True), str(tmp_path), device="cpu")["gradient_checkpointing"] is True


def test_gradient_checkpointing_param_validates():
    from qmr.config import ConfigError, from_dict
    from qmr.restore.train import RestoreConfig

    assert from_dict(RestoreConfig, {"gradient_checkpointing": True}).gradient_checkpointing is True
    assert from_dict(RestoreConfig, {}).gradient_checkpointing == "auto"
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        from_dict(RestoreConfig, {"gradient_checkpointing": "sometimes"})
