"""Format alignment (paper §3.1.2): LoRA SFT of the base model on step-formatted solutions, then merge.

Quantization is measured on models that already answer in the pipeline's step format (one step per
line, closing ``The answer is N.``), so that judges can point at "step k" and a failure is a reasoning
failure, not a formatting one. `qmr.steps.step_target` (also the calibration texts' solution) turns a
benchmark record with a worked solution into that format:

- the toy generator's ``solution`` is already in it (the embedded default's base model is trained on
  the *free-form* prose style instead, so alignment has a real job there);
- MATH / GSM8K solutions are cut into steps with `qmr.steps.split_steps` (sentences when the solution
  is one paragraph), one step per line;
- PRM800K trajectories (benchmark format ``prm800k``) come as human-rated steps already.

GSM8K's calculator annotations ``<<48/2=24>>`` are removed; any closing answer line of the source
(``The answer is …``, ``# Answer``, GSM8K's ``#### N``) is dropped and ``The answer is <gold>.`` appended.
Training reuses the restore stage's trainer (trl ``SFTTrainer`` + a peft LoRA adapter, loss on the
completion only); the adapter is then merged into the weights (``merge_and_unload``) and saved as a
plain checkpoint that ``quantize`` reads like any base model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from qmr.config import SEED_MAX, Problem, field
from qmr.io import write_json
from qmr.restore.train import DEFAULT_TARGETS, RestoreConfig
from qmr.steps import step_target

log = logging.getLogger(__name__)

ALIGN_JSON = "align.json"


@dataclass
class AlignConfig:
    """Format alignment of each base model before quantization (``align`` in params.yaml)."""

    method: Literal["none", "lora_sft"] = field(
        "none", help="none = quantize the base model as it is; lora_sft = LoRA SFT on step-formatted solutions, merged"
    )
    data: str = field("train", help="benchmark (role train) whose worked solutions, in step format, are the targets")
    samples: int = field(0, help="training examples taken from `data` (0 = all)")
    eval_benchmark: str = field("test", help="benchmark (role eval) on which format compliance is measured before and after")
    eval_samples: int = field(200, help="problems of eval_benchmark generated before and after alignment")
    max_new_tokens: int = field(160, help="generation budget of the compliance measurement (free-form text is longer)")
    lora_r: int = field(16, help="LoRA rank")
    lora_alpha: int = field(32, help="LoRA scaling alpha")
    lora_dropout: float = field(0.0, help="LoRA dropout")
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS), help="module names that get a LoRA adapter")
    learning_rate: float = field(1e-3, help="peak learning rate (AdamW)")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = field("cosine", help="learning-rate schedule")
    warmup_ratio: float = field(0.05, help="fraction of the steps spent warming up, in [0, 1) (rounded up; at most all steps but the last)")
    batch_size: int = field(16, help="examples per device batch")
    grad_accum: int = field(1, help="gradient-accumulation steps per optimizer step")
    epochs: float = field(1.0, help="passes over the examples (when max_steps is 0)")
    max_steps: int = field(0, help="optimizer steps (0 = use epochs)")
    max_length: int = field(512, help="tokens of prompt + solution kept")
    seed: int = field(0, help="seed of the adapter init and the batch order", ge=0, le=SEED_MAX)
    checkpoint_steps: int = field(50, help="optimizer steps between resumable checkpoints under .qmr-cache/ (0 = none)")
    gradient_checkpointing: bool | Literal["auto"] = field(
        "auto", help="recompute activations in the backward pass (memory for time); auto = on with CUDA, off on CPU"
    )

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out = [Problem(f"{p}{x.key}", x.value, x.allowed) for x in self.trainer_config().check("")]
        for name in ("samples", "eval_samples"):
            if getattr(self, name) < 0:
                out.append(Problem(f"{p}{name}", getattr(self, name), "an integer >= 0 (0 = all)" if name == "samples" else "an integer >= 0"))
        if self.max_new_tokens < 1:
            out.append(Problem(f"{p}max_new_tokens", self.max_new_tokens, "an integer >= 1"))
        return out

    def trainer_config(self) -> RestoreConfig:
        """The same knobs as the restore trainer's, with the SFT objective."""
        names = ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "lr_scheduler", "warmup_ratio",
                 "batch_size", "grad_accum", "epochs", "max_steps", "max_length", "seed", "checkpoint_steps",
                 "gradient_checkpointing")  # fmt: skip
        return RestoreConfig(objective="sft", **{n: getattr(self, n) for n in names})


def build_examples(records: list[dict], prompt_of) -> tuple[list[dict], int]:
    """SFT examples ``{id, prompt, chosen}`` (the restore trainer's field names) and the count dropped."""
    examples, dropped = [], 0
    for rec in records:
        target = step_target(rec)
        if target is None:
            dropped += 1
            continue
        examples.append({"id": rec["id"], "prompt": prompt_of(rec["question"]), "chosen": target})
    return examples, dropped


def train_align(
    base: str | Path, examples: list[dict], cfg: AlignConfig, out_dir: str | Path, threads: int = 1,
    checkpoint_dir: str | Path | None = None, identity: Any = None,
) -> dict[str, Any]:  # fmt: skip
    """LoRA SFT of the model at ``base`` on ``examples``, merged and saved as a plain checkpoint in
    ``out_dir``; returns the record also written to ``out_dir/align.json`` (no wall-clock in it).
    ``checkpoint_dir``/``identity``: resumable trainer checkpoints, as in `qmr.restore.train.train_adapter`."""
    import torch

    from qmr.checkpoints import enable_kv_cache
    from qmr.determinism import set_determinism
    from qmr.quant.load import compute_dtype, dtype_name, load_model
    from qmr.restore.train import train_adapter

    if not examples:
        raise ValueError("align: no training examples")
    out_dir = Path(out_dir)
    set_determinism(cfg.seed, threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # float32 on CPU (the toy's numbers), bf16 on CUDA (fp16 without bf16): the trainer autocasts to match
    model, tok = load_model(str(base), device=device, dequantize=True, dtype=compute_dtype(device))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    t0 = time.perf_counter()
    peft_model, rows, summary = train_adapter(model, tok, examples, cfg.trainer_config(), checkpoint_dir=checkpoint_dir, identity=identity)
    seconds = time.perf_counter() - t0
    merged = peft_model.merge_and_unload()
    out_dir.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out_dir), safe_serialization=True)
    tok.save_pretrained(str(out_dir))
    enable_kv_cache(out_dir)  # the trainer switched it off in the config
    record = {"base": str(base), "examples": len(examples), "config": asdict(cfg), "threads": threads,
              "dtype": dtype_name(model.dtype), **summary}  # fmt: skip
    write_json(out_dir / ALIGN_JSON, record)
    write_json(out_dir / "train_log.json", rows)
    if checkpoint_dir is not None:
        import shutil

        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("align: %d steps on %d examples, loss %s -> %s in %.0f s", summary["steps"], len(examples),
             summary["first_loss"], summary["last_loss"], seconds)  # fmt: skip
    return {**record, "seconds": round(seconds, 1)}
