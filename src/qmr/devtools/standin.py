"""Stand-ins for real chat models, built locally (no download): the real-model path, tested on CPU.

``build_standin(out, family, texts)`` writes a Hugging Face checkpoint directory of the given family's
architecture (``qwen2``: Qwen2ForCausalLM, ChatML template, no BOS; ``llama``: LlamaForCausalLM, the
Llama-3 header template, a BOS the tokenizer adds as Llama-3's does) with a byte-level BPE tokenizer
trained on ``texts`` and, with ``memorize``, a few hundred optimizer steps on (prompt, solution) pairs so
the model solves some problems (then a 2-bit variant fails some of them, and locate/restore have work).

    python -m qmr.devtools.standin OUT --family qwen2 --from ../shared/data/gsm8k/train.jsonl

The checkpoint is small (a few MB) and loads with ``AutoModelForCausalLM``/``AutoTokenizer`` like the
real one; only its name in params (``models.<name>.path``) differs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

QWEN2_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
FAMILIES = {
    "qwen2": {"special": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "bos": None, "eos": "<|im_end|>",
              "pad": "<|endoftext|>", "template": QWEN2_TEMPLATE},
    "llama": {"special": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                          "<|finetune_right_pad_id|>"],
              "bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": "<|finetune_right_pad_id|>", "template": LLAMA3_TEMPLATE},
}  # fmt: skip


def train_tokenizer(texts: list[str], family: str, vocab_size: int = 1024):
    """A byte-level BPE ``PreTrainedTokenizerFast`` with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    fam = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=fam["special"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(texts, trainer)
    if fam["bos"]:  # Llama-3's tokenizer prepends BOS to every encoded text (add_special_tokens=True)
        bos_id = tok.token_to_id(fam["bos"])
        tok.post_processor = processors.TemplateProcessing(single=f"{fam['bos']} $A", pair=f"{fam['bos']} $A {fam['bos']} $B",
                                                           special_tokens=[(fam["bos"], bos_id)])  # fmt: skip
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=fam["bos"], eos_token=fam["eos"], pad_token=fam["pad"])
    fast.chat_template = fam["template"]
    return fast


def build_standin(out: str | Path, family: str, texts: list[str], *, pairs: list[tuple[str, str]] | None = None,
                  hidden_size: int = 64, layers: int = 2, steps: int = 300, seed: int = 0) -> Path:  # fmt: skip
    """Write a stand-in checkpoint to ``out``; with ``pairs`` (user prompt, assistant solution) train
    ``steps`` optimizer steps on them in the chat template (so the model solves some of them)."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if family not in FAMILIES:
        raise ValueError(f"family: got {family!r}; allowed: {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    tokenizer = train_tokenizer(texts, family)
    eos_id = tokenizer.convert_tokens_to_ids(FAMILIES[family]["eos"])
    common = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, eos_token_id=eos_id,
                  pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)  # fmt: skip
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common, bos_token_id=tokenizer.bos_token_id))
    if pairs:
        _memorize(model, tokenizer, pairs, steps)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=tokenizer.pad_token_id,
                                               bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "qmr_standin.json").write_text(json.dumps({"family": family, "hidden_size": hidden_size, "layers": layers,
                                                      "pairs": len(pairs or []), "steps": steps, "seed": seed}))  # fmt: skip
    return out


def _memorize(model, tokenizer, pairs: list[tuple[str, str]], steps: int) -> None:
    import torch

    texts = []
    for prompt, answer in pairs:
        templated = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        texts.append(templated + answer + tokenizer.eos_token)
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 100 == 0:
            log.info("stand-in step %d: loss %.3f", step, loss.item())
    model.eval()


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="qwen2")
    parser.add_argument("--from", dest="source", required=True, help="a GSM8K-style jsonl (question, answer) for the tokenizer")
    parser.add_argument("--memorize", type=int, default=0, help="train on this many of its problems (prompt -> solution)")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in Path(args.source).read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = [r["question"] + "\n" + str(r.get("answer", "")) for r in rows[:2000]]
    pairs = [(r["question"], str(r["answer"])) for r in rows[: args.memorize]]
    logging.basicConfig(level=logging.INFO)
    print(build_standin(args.out, args.family, texts, pairs=pairs, steps=args.steps))


if __name__ == "__main__":
    main()
