"""Train the embedded toy reasoner: a tiny Llama/Qwen2 decoder from a config, from scratch, on CPU.

Every step draws fresh problems from the ``train`` split of the generator (so the model never sees a
``mine`` or ``test`` question), builds ``<s> prompt solution </s>`` with the plain prompt of
`qmr.prompts`, and takes the loss on the solution tokens only. AdamW with a linear warm-up and a
cosine decay tied to the step budget (``max_steps``) or, when that is 0, to the wall-clock budget
(``train_seconds``). The result is a normal Hugging Face checkpoint (safetensors + tokenizer +
generation config with pad/bos/eos set) that ``AutoModelForCausalLM`` and ``AutoTokenizer`` reload and
``model.generate`` runs with left padding.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from qmr.config import Problem, field
from qmr.io import write_json
from qmr.prompts import build_prompt
from qmr.toy.problems import DEFAULT_DATA, ToyDataConfig, iter_problems

log = logging.getLogger(__name__)

SOLUTION_FIELDS = ("solution", "solution_freeform")
STYLE_FIELDS = {"steps": "solution", "freeform": "solution_freeform"}
LOG_EVERY = 100  # optimizer steps between rows of the loss curve in train_log.json


@dataclass
class ToyModelConfig:
    """Architecture and training budget of the toy reasoner."""

    architecture: Literal["llama", "qwen2"] = field("llama", help="transformers architecture of the decoder")
    hidden_size: int = field(128, help="model width (keep a multiple of the quantization group size)")
    num_layers: int = field(4, help="decoder layers")
    num_heads: int = field(4, help="attention heads (no grouped-query attention)")
    intermediate_size: int = field(512, help="MLP width")
    max_position_embeddings: int = field(256, help="longest sequence the model is built for")
    tie_embeddings: bool = field(False, help="share the input embedding with the output head")
    batch_size: int = field(64, help="problems per optimizer step")
    lr: float = field(3e-3, help="peak AdamW learning rate")
    min_lr_ratio: float = field(0.05, help="final learning rate as a fraction of the peak")
    warmup_steps: int = field(30, help="linear warm-up steps")
    weight_decay: float = field(0.0, help="AdamW weight decay on matrices (not on norms or embeddings)")
    grad_clip: float = field(1.0, help="gradient-norm clip (0 = off)")
    train_seconds: float = field(300.0, help="wall-clock budget in seconds (0 = none; max_steps then)")
    max_steps: int = field(0, help="optimizer steps (0 = run for train_seconds; >0 = schedule by steps, reproducible)")
    drill_fraction: float = field(
        0.0, help="share of training examples replaced by arithmetic drills built from real plan steps, always in the step notation (never evaluated)"
    )
    style: Literal["steps", "freeform"] = field(
        "steps", help="solution style trained on: steps (one `a op b = c` line per step) or freeform prose (the `align` stage then teaches the step format)"
    )
    seed: int = field(0, help="seed of the weights, the data stream and the batch order")

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out: list[Problem] = []
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "batch_size"):
            if getattr(self, name) < 1:
                out.append(Problem(f"{p}{name}", getattr(self, name), "a positive integer"))
        if self.num_heads >= 1 and self.hidden_size % self.num_heads:
            out.append(Problem(f"{p}num_heads", self.num_heads, f"a divisor of hidden_size ({self.hidden_size})"))
        if self.max_steps <= 0 and self.train_seconds <= 0:
            out.append(Problem(f"{p}max_steps", self.max_steps, "> 0, or train_seconds > 0 (one budget is needed)"))
        if self.max_steps < 0:
            out.append(Problem(f"{p}max_steps", self.max_steps, "an integer >= 0"))
        if not 0 <= self.drill_fraction < 1:
            out.append(Problem(f"{p}drill_fraction", self.drill_fraction, "a number in [0, 1)"))
        if self.lr <= 0:
            out.append(Problem(f"{p}lr", self.lr, "a positive number"))
        if not 0 <= self.min_lr_ratio <= 1:
            out.append(Problem(f"{p}min_lr_ratio", self.min_lr_ratio, "a number in [0, 1]"))
        if self.warmup_steps < 0:
            out.append(Problem(f"{p}warmup_steps", self.warmup_steps, "an integer >= 0"))
        if self.max_position_embeddings < 64:
            out.append(Problem(f"{p}max_position_embeddings", self.max_position_embeddings, "an integer >= 64"))
        return out


def build_model(cfg: ToyModelConfig, tokenizer: Any):
    """A randomly initialised decoder sized by ``cfg`` for ``tokenizer``'s vocabulary."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=cfg.tie_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlamaConfig(**common) if cfg.architecture == "llama" else Qwen2Config(**common)
    model = AutoModelForCausalLM.from_config(config)
    gen = model.generation_config
    gen.bos_token_id = tokenizer.bos_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.pad_token_id = tokenizer.pad_token_id
    gen.do_sample = False
    gen.max_new_tokens = 128
    return model


def _lr_factor(cfg: ToyModelConfig, step: int, elapsed: float) -> float:
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.max_steps > 0:
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    else:
        progress = elapsed / cfg.train_seconds
    progress = min(1.0, max(0.0, progress))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class _Batches:
    """Fresh training problems, tokenised and grouped by length to waste little padding."""

    def __init__(self, tokenizer, cfg: ToyModelConfig, data: ToyDataConfig, families, solution_field: str):
        self.tok = tokenizer
        self.cfg = cfg
        self.field = solution_field
        self.stream = iter_problems("train", cfg.seed, families, data)
        self.rng = random.Random(f"qmr-toy-batches:{cfg.seed}")
        self.pool: list[list[tuple[list[int], list[int]]]] = []

    def _refill(self, n_batches: int = 8) -> None:
        recs = [next(self.stream) for _ in range(self.cfg.batch_size * n_batches)]
        if self.cfg.drill_fraction > 0:
            from qmr.toy.problems import drill

            recs = [
                drill(self.rng.choice(r["plan"])) if self.rng.random() < self.cfg.drill_fraction else r for r in recs
            ]
        prompts = self.tok([build_prompt(r["question"], "plain") for r in recs])["input_ids"]
        # Drills always use the step notation (`a op b = c`, `The answer is N.`): a free-form model thus
        # knows every token of the step format but answers word problems in prose, as instruction-tuned
        # models do before format alignment.
        targets = self.tok([r["solution"] if r.get("drill") else r[self.field] for r in recs], add_special_tokens=False)["input_ids"]
        pairs = sorted(zip(prompts, targets, strict=True), key=lambda pt: len(pt[0]) + len(pt[1]))
        bs = self.cfg.batch_size
        self.pool = [pairs[i : i + bs] for i in range(0, len(pairs), bs)]
        self.rng.shuffle(self.pool)

    def next(self):
        import torch

        if not self.pool:
            self._refill()
        pairs = self.pool.pop()
        eos, pad = self.tok.eos_token_id, self.tok.pad_token_id
        length = max(len(p) + len(t) + 1 for p, t in pairs)
        ids = torch.full((len(pairs), length), pad, dtype=torch.long)
        labels = torch.full((len(pairs), length), -100, dtype=torch.long)
        n_tokens = 0
        for i, (p, t) in enumerate(pairs):
            seq = p + t + [eos]
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, len(p) : len(seq)] = torch.tensor(t + [eos])
            n_tokens += len(seq)
        return ids, labels, n_tokens


def train_toy_model(
    cfg: ToyModelConfig,
    out_dir: Path,
    threads: int,
    solution_field: str | None = None,
    data: ToyDataConfig = DEFAULT_DATA,
    families: list[str] | None = None,
) -> dict:
    """Train from scratch on ``solution_field`` (default: the field of ``cfg.style``), save model + tokenizer + ``train_log.json`` in ``out_dir``; return the stats."""
    import torch

    from qmr.determinism import set_determinism
    from qmr.toy.tokenizer import build_tokenizer

    solution_field = solution_field or STYLE_FIELDS[cfg.style]
    if solution_field not in SOLUTION_FIELDS:
        raise ValueError(f"solution_field: got {solution_field!r}; allowed: {', '.join(SOLUTION_FIELDS)}")
    out_dir = Path(out_dir)
    set_determinism(cfg.seed, threads)
    tokenizer = build_tokenizer(model_max_length=cfg.max_position_embeddings)
    model = build_model(cfg, tokenizer)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.info(
        "toy model: %s, %d layers, hidden %d, %d heads, MLP %d, vocab %d: %.2fM parameters",
        cfg.architecture, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size,
        len(tokenizer), n_params / 1e6,
    )  # fmt: skip

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embed" not in name else no_decay).append(p)
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-8,
    )
    batches = _Batches(tokenizer, cfg, data, families, solution_field)

    start = time.monotonic()
    step, tokens, ema = 0, 0, None
    curve: list[dict] = []  # every LOG_EVERY steps: a function of the seed alone, not of the clock
    next_log = start + 15.0
    while True:
        elapsed = time.monotonic() - start
        if cfg.max_steps > 0 and step >= cfg.max_steps:
            break
        if cfg.train_seconds > 0 and elapsed >= cfg.train_seconds:
            break
        factor = _lr_factor(cfg, step, elapsed)
        for group in optim.param_groups:
            group["lr"] = cfg.lr * factor
        ids, labels, n_tok = batches.next()
        # Right padding: under a causal mask no real token attends to a later pad, so no mask is needed.
        loss = model(input_ids=ids, labels=labels).loss
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optim.step()
        step += 1
        tokens += n_tok
        value = float(loss.detach())
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if step % LOG_EVERY == 0 or step == cfg.max_steps:
            curve.append({"step": step, "loss": round(ema, 4), "lr": cfg.lr * factor})
        now = time.monotonic()
        if now >= next_log:
            seconds = now - start
            log.info("step %d  %.0fs  loss %.4f  lr %.2e  %.0f tok/s", step, seconds, ema, cfg.lr * factor, tokens / seconds)
            next_log = now + 15.0
    seconds = time.monotonic() - start

    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    stats = {
        "steps": step,
        "tokens": tokens,
        "problems": step * cfg.batch_size,
        "final_loss": round(ema, 5) if ema is not None else None,
        "n_params": n_params,
        "vocab_size": len(tokenizer),
        "threads": threads,
        "solution_field": solution_field,
        "torch": torch.__version__,
        "config": asdict(cfg),
        "data": asdict(data),
        "families": list(families) if families else None,
        "curve": curve,
    }
    write_json(out_dir / "train_log.json", stats)  # no wall-clock numbers: same seed, same file
    stats["seconds"] = round(seconds, 1)
    stats["tokens_per_s"] = round(tokens / max(seconds, 1e-9), 1)
    log.info(
        "trained %d steps in %.0fs (%.0f tok/s), final loss %.4f -> %s",
        step, seconds, stats["tokens_per_s"], ema or float("nan"), out_dir,
    )  # fmt: skip
    return stats
