"""Restore a quantized model: LoRA on the dequantized low-bit base, trained with DPO on Silver Bullet pairs.

peft cannot attach LoRA to packed compressed-tensors layers, so the quantized checkpoint is loaded
*dequantized*: every Linear holds the low-bit values (scale x int) as plain float weights, frozen, and
the adapter trains on top. The DPO reference model is that same base with the adapter disabled (trl's
default when ``ref_model`` is None and the policy is a peft model), i.e. exactly the quantized model.

Objectives (``RestoreConfig.objective``):

- ``dpo``: the paper's sigmoid DPO loss.
- ``dpo_nll``: DPO + ``rpo_alpha`` x the NLL of the chosen completion (RPO). trl 1.16 has no
  ``rpo_alpha`` field any more: it is ``loss_type=["sigmoid", "sft"]`` with ``loss_weights=[1, rpo_alpha]``
  (the ``sft`` term is the token-mean NLL of the chosen completion).
- ``sft``: supervised fine-tuning on prompt + chosen with the loss on the chosen tokens only
  (rejected is ignored).

Outputs of `train_restore` in ``out_dir``: the adapter (``adapter_config.json`` +
``adapter_model.safetensors``), the tokenizer, ``restore.json`` (config, base path, pairs, seconds, …)
and ``train_log.json`` (one row per optimizer step: step, loss, rewards/margins, rewards/chosen,
rewards/rejected, learning_rate). With no pairs nothing is trained: ``restore.json`` says so, there is
no adapter, and `load_restored` returns the quantized base unchanged.

``merge = "requantize"`` is done by the caller with `merge_and_requantize` (it needs the variant's
quantization spec and calibration texts, which the restore step does not own).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from qmr.config import SEED_MAX, Problem, field
from qmr.io import read_json, write_json
from qmr.registry import Registry

log = logging.getLogger(__name__)

RESTORE_JSON = "restore.json"
TRAIN_LOG_JSON = "train_log.json"
ADAPTER_CONFIG = "adapter_config.json"
LOG_KEYS = ("loss", "rewards/margins", "rewards/chosen", "rewards/rejected", "learning_rate")
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Restore objectives: name -> a factory ``(model, tokenizer, pairs, cfg, trainer_args, lora) -> trl trainer``.
OBJECTIVES = Registry(
    "restore.objective",
    {
        "dpo": "qmr.restore.train:dpo_trainer",
        "dpo_nll": "qmr.restore.train:dpo_nll_trainer",
        "sft": "qmr.restore.train:sft_trainer",
    },
)
Objective = OBJECTIVES.literal()


@dataclass
class RestoreConfig:
    """DPO + LoRA training of the restored model (``restore`` in params.yaml)."""

    objective: Objective = field(
        "dpo", help="dpo (the paper) | dpo_nll (DPO + rpo_alpha x NLL on chosen) | sft (prompt + chosen only)"
    )
    beta: float = field(0.1, help="DPO beta: strength of the pull towards the quantized reference")
    rpo_alpha: float = field(1.0, help="weight of the NLL-on-chosen term (objective dpo_nll)")
    lora_r: int = field(16, help="LoRA rank")
    lora_alpha: int = field(32, help="LoRA scaling alpha")
    lora_dropout: float = field(0.05, help="LoRA dropout")
    target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGETS), help="module names that get a LoRA adapter"
    )
    learning_rate: float = field(5e-5, help="peak learning rate (AdamW)")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = field(
        "cosine", help="learning-rate schedule"
    )
    warmup_ratio: float = field(0.1, help="fraction of the steps spent warming up, in [0, 1) (rounded up; at most all steps but the last)")
    batch_size: int = field(4, help="pairs per device batch")
    grad_accum: int = field(1, help="gradient-accumulation steps per optimizer step")
    epochs: float = field(3.0, help="passes over the pairs (when max_steps is 0)")
    max_steps: int = field(0, help="optimizer steps (0 = use epochs)")
    max_length: int = field(
        512, help="tokens of prompt + completion kept (longer ones are truncated at the end)"
    )
    seed: int = field(0, help="seed of the adapter init and the batch order", ge=0, le=SEED_MAX)
    checkpoint_steps: int = field(
        50, help="optimizer steps between resumable checkpoints under .qmr-cache/ (0 = none): a killed run resumes from the last"
    )
    gradient_checkpointing: bool | Literal["auto"] = field(
        "auto", help="recompute activations in the backward pass (memory for time); auto = on with CUDA, off on CPU"
    )
    merge: Literal["none", "requantize"] = field(
        "none",
        help="none = keep base + adapter; requantize = merge and re-quantize with the variant's recipe",
    )

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        out: list[Problem] = []
        if self.checkpoint_steps < 0:
            out.append(Problem(f"{p}checkpoint_steps", self.checkpoint_steps, "an integer >= 0 (0 = no checkpoints)"))
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                out.append(Problem(f"{p}{name}", getattr(self, name), "an integer >= 1"))
        for name in ("beta", "learning_rate"):
            if getattr(self, name) <= 0:
                out.append(Problem(f"{p}{name}", getattr(self, name), "a number > 0"))
        if self.rpo_alpha < 0:
            out.append(Problem(f"{p}rpo_alpha", self.rpo_alpha, "a number >= 0"))
        if not 0 <= self.lora_dropout < 1:
            out.append(Problem(f"{p}lora_dropout", self.lora_dropout, "a number in [0, 1)"))
        if not 0 <= self.warmup_ratio < 1:
            out.append(Problem(f"{p}warmup_ratio", self.warmup_ratio, "a number in [0, 1)"))
        if self.max_steps < 0:
            out.append(Problem(f"{p}max_steps", self.max_steps, "an integer >= 0 (0 = use epochs)"))
        if self.max_steps == 0 and self.epochs <= 0:
            out.append(Problem(f"{p}epochs", self.epochs, "a number > 0 when max_steps is 0"))
        if not self.target_modules:
            out.append(Problem(f"{p}target_modules", self.target_modules, "at least one module name"))
        return out


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def load_base(path: str | Path, device: str | None = None):
    """The quantized checkpoint at ``path``, dequantized: ``(model, tokenizer)``; float32 on CPU (exact
    grid values), bf16 on CUDA (fp16 without bf16; `qmr.quant.load.compute_dtype`) — an 8B base in
    float32 alone would take 32 GB of the GPU.

    ``device=None`` puts it on CUDA when present, else CPU. Loading straight onto the training device
    matters: a compressed-tensors model loaded on CPU carries offload hooks that keep its frozen
    layers on CPU after the trainer moves it, while the new LoRA weights go to the GPU.
    """
    import torch

    from qmr.quant.load import compute_dtype, load_model

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model(str(path), device=device, dequantize=True, dtype=compute_dtype(device))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def load_restored(restored_dir: str | Path, base: str | Path | None = None):
    """The restored model: the quantized base (dequantized) + the trained adapter; ``(model, tokenizer)``.

    ``base`` overrides the base path recorded in ``restore.json``. When nothing was trained (no pairs),
    this is the quantized base itself.
    """
    restored_dir = Path(restored_dir)
    info = read_json(restored_dir / RESTORE_JSON)
    model, tok = load_base(base or info["base"])
    if (restored_dir / ADAPTER_CONFIG).exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(restored_dir))
    model.eval()
    return model, tok


# --------------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------------


def uses_gradient_checkpointing(setting: bool | str, device: str) -> bool:
    """``gradient_checkpointing`` resolved for ``device``: ``auto`` = on with CUDA, off on CPU."""
    return str(device).startswith("cuda") if setting == "auto" else bool(setting)


def _trainer_args(cfg: RestoreConfig, output_dir: str, checkpointing: bool = False, device: str | None = None) -> dict[str, Any]:
    """trl/transformers training arguments for ``device`` (None: CUDA when present, else CPU). On CPU:
    float32, no gradient checkpointing (the toy's numbers). On CUDA: bf16 autocast (fp16 without bf16
    support) over the bf16/fp16 base `load_base` loads, gradient checkpointing per ``cfg``."""
    import torch

    from qmr.quant.load import compute_dtype

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = compute_dtype(device) if str(device).startswith("cuda") else torch.float32
    gc = uses_gradient_checkpointing(cfg.gradient_checkpointing, device)
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": cfg.batch_size,
        "gradient_accumulation_steps": cfg.grad_accum,
        "num_train_epochs": cfg.epochs,
        "max_steps": cfg.max_steps if cfg.max_steps > 0 else -1,
        "learning_rate": cfg.learning_rate,
        "lr_scheduler_type": cfg.lr_scheduler,
        # transformers 5: no warmup_ratio; a float warmup_steps in [0, 1) is a ratio of the total steps
        # (`_cap_warmup` leaves at least one step at a non-zero rate).
        "warmup_steps": float(cfg.warmup_ratio),
        "max_length": cfg.max_length,
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "logging_steps": 1,
        # checkpoints (adapter, optimizer, scheduler, RNG states) only where train_adapter resumes from them
        "save_strategy": "steps" if checkpointing and cfg.checkpoint_steps > 0 else "no",
        "save_steps": max(1, cfg.checkpoint_steps),
        "save_total_limit": 1,
        "eval_strategy": "no",
        "report_to": "none",
        "use_cpu": not str(device).startswith("cuda"),  # CUDA when present (accelerate launch for several GPUs)
        "bf16": dtype == torch.bfloat16,
        "fp16": dtype == torch.float16,
        "gradient_checkpointing": gc,  # trl's configs default to True: always set explicitly
        **({"gradient_checkpointing_kwargs": {"use_reentrant": False}} if gc else {}),
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": False,
        "disable_tqdm": True,
        "dataset_num_proc": None,
    }


def warmup_steps(total_steps: int, ratio: float) -> int:
    """Warm-up steps of a run of ``total_steps`` optimizer steps: transformers' ``ceil(ratio x total)``,
    at most ``total - 1``. A linear warm-up's first step has learning rate 0, so with very few pairs
    (1 step, any ratio > 0) the run would not train at all; long runs (the toy default's) are unchanged."""
    return min(math.ceil(total_steps * ratio), max(0, total_steps - 1))


def _cap_warmup(trainer, ratio: float) -> None:
    """Make ``trainer`` build its scheduler with `warmup_steps` (the total is known only there)."""
    create = trainer.create_scheduler

    def create_scheduler(num_training_steps: int, optimizer=None):
        saved = trainer.args.warmup_steps
        trainer.args.warmup_steps = warmup_steps(num_training_steps, ratio)  # an int: a step count
        try:
            return create(num_training_steps, optimizer)
        finally:
            trainer.args.warmup_steps = saved

    trainer.create_scheduler = create_scheduler


def _log_rows(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for rec in history:
        if "loss" not in rec or "step" not in rec:
            continue  # the final summary row (train_loss, runtime) and eval rows
        rows.append(
            {"step": int(rec["step"]), **{k: (float(rec[k]) if k in rec else None) for k in LOG_KEYS}}
        )
    return rows


def _build_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, output_dir: str, checkpointing: bool = False):
    from peft import LoraConfig

    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    args = _trainer_args(cfg, output_dir, checkpointing)
    # trl encodes the prompt text with special tokens: a chat template's own BOS would make it two.
    from qmr.prompts import strip_bos

    prompts = strip_bos([p["prompt"] for p in pairs], tok)
    pairs = [{**p, "prompt": prompt} for p, prompt in zip(pairs, prompts, strict=True)]
    trainer = OBJECTIVES.load(cfg.objective, "restore.objective")(model, tok, pairs, cfg, args, lora)
    _cap_warmup(trainer, cfg.warmup_ratio)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # The library never prints: training rows go to the log file and to `logging`, not stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def sft_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora):
    """Objective ``sft``: prompt + chosen, loss on the chosen tokens only (rejected is ignored)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs])
    targs = SFTConfig(**args, completion_only_loss=True, packing=False)
    return SFTTrainer(model=model, args=targs, train_dataset=data, processing_class=tok, peft_config=lora)


def _dpo(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, loss: dict):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    targs = DPOConfig(**args, beta=cfg.beta, **loss)
    return DPOTrainer(
        model=model, ref_model=None, args=targs, train_dataset=data, processing_class=tok, peft_config=lora
    )


def dpo_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora):
    """Objective ``dpo``: the paper's sigmoid DPO loss (reference = the adapter disabled)."""
    return _dpo(model, tok, pairs, cfg, args, lora, {"loss_type": ["sigmoid"]})


def dpo_nll_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora):
    """Objective ``dpo_nll``: DPO + ``rpo_alpha`` x the NLL of the chosen completion (RPO)."""
    return _dpo(model, tok, pairs, cfg, args, lora, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(cfg.rpo_alpha)]})


def _checkpoint_fingerprint(model, pairs: Sequence[dict], cfg: RestoreConfig, identity: Any) -> str:
    import hashlib
    import json

    blob = json.dumps(
        {"pairs": list(pairs), "config": asdict(cfg), "model": getattr(model.config, "_name_or_path", ""), "identity": identity},
        sort_keys=True, default=str,
    )  # fmt: skip
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _prepare_checkpoints(checkpoint_dir: Path, fingerprint: str) -> str | None:
    """The newest complete checkpoint of an earlier run with the same fingerprint, else None.

    A run with other inputs leaves nothing to resume from (its directory is cleared). The trainer
    writes ``trainer_state.json`` last, so a checkpoint without a readable one was cut short by a
    kill and is removed.
    """
    import json
    import shutil

    stamp = checkpoint_dir / "fingerprint.txt"
    if checkpoint_dir.exists() and (not stamp.is_file() or stamp.read_text().strip() != fingerprint):
        shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint + "\n")
    found = sorted(
        (d for d in checkpoint_dir.glob("checkpoint-*") if d.is_dir() and d.name.split("-")[-1].isdigit()),
        key=lambda d: int(d.name.split("-")[-1]), reverse=True,
    )  # fmt: skip
    for d in found:
        try:
            json.loads((d / "trainer_state.json").read_text(encoding="utf-8"))
            return str(d)
        except (OSError, ValueError):
            log.warning("removing incomplete checkpoint %s (the run was killed while saving it)", d)
            shutil.rmtree(d)
    return None


def train_adapter(
    model, tokenizer, pairs: Sequence[dict], cfg: RestoreConfig, checkpoint_dir: str | Path | None = None, identity: Any = None
):
    """Attach a LoRA adapter to ``model`` (the dequantized quantized base) and train it on ``pairs``.

    Returns ``(peft_model, log_rows, summary)``; ``peft_model`` is in eval mode. Call
    `qmr.determinism.set_determinism` first for a reproducible run (`train_restore` does).

    With ``checkpoint_dir`` (and ``cfg.checkpoint_steps > 0``) the trainer saves a checkpoint there every
    ``checkpoint_steps`` optimizer steps — adapter, optimizer, scheduler, RNG states — and a later call
    with the same model (``identity``: e.g. its files' sizes and times), pairs and config resumes from the newest one
    (``Trainer.train(resume_from_checkpoint=...)``): a killed run continues where it stopped and ends
    with the same adapter. The caller removes the directory once the result is saved.
    """
    if not pairs:
        raise ValueError("train_adapter: no pairs to train on")
    resume_from = None
    with tempfile.TemporaryDirectory(prefix="qmr-restore-") as tmp:
        output_dir = tmp
        if checkpoint_dir is not None and cfg.checkpoint_steps > 0:
            output_dir = str(checkpoint_dir)
            resume_from = _prepare_checkpoints(Path(checkpoint_dir), _checkpoint_fingerprint(model, pairs, cfg, identity))
        trainer = _build_trainer(model, tokenizer, pairs, cfg, output_dir, checkpointing=output_dir != tmp)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        log.info(
            "restore: %s on %d pairs (%d trainable adapter parameters)%s", cfg.objective, len(pairs), trainable,
            f", resuming from {resume_from}" if resume_from else "",
        )  # fmt: skip
        result = trainer.train(resume_from_checkpoint=resume_from)
    rows = _log_rows(trainer.state.log_history)
    for row in rows:
        log.debug("restore step %s", row)
    losses = [r["loss"] for r in rows if r["loss"] is not None]
    summary = {
        "steps": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "trainable_parameters": int(trainable),
        "train_loss": float(result.training_loss),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "final_margin": rows[-1]["rewards/margins"] if rows else None,
    }
    peft_model = trainer.model
    peft_model.eval()
    return peft_model, rows, summary


def train_restore(
    quantized_dir: str | Path,
    pairs: Sequence[dict],
    cfg: RestoreConfig,
    out_dir: str | Path,
    threads: int = 1,
    checkpoint_dir: str | Path | None = None,
    identity: Any = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on the quantized model at ``quantized_dir`` with ``pairs``; save to ``out_dir``.

    Deterministic given ``cfg.seed`` and ``threads``. Returns the record also written to ``restore.json``.
    ``checkpoint_dir``: resumable checkpoints (see `train_adapter`), removed once the adapter is saved.
    """
    problems = cfg.check("restore")
    if problems:
        raise ValueError("; ".join(str(p) for p in problems))
    from qmr.determinism import set_determinism

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    set_determinism(cfg.seed, threads)
    model, tok = load_base(quantized_dir)
    from qmr.quant.load import dtype_name

    record: dict[str, Any] = {
        "trained": False,
        "base": str(quantized_dir),
        "objective": cfg.objective,
        "pairs": len(pairs),
        "problems": len({str(p["id"]) for p in pairs}),
        "subsets": sorted({str(p.get("subset")) for p in pairs if p.get("subset")}),
        "config": asdict(cfg),
        "threads": threads,
        "dtype": dtype_name(model.dtype),
    }
    for stale in (out_dir / ADAPTER_CONFIG, out_dir / "adapter_model.safetensors", out_dir / "README.md"):
        stale.unlink(missing_ok=True)
    tok.save_pretrained(str(out_dir))
    rows: list[dict[str, Any]] = []
    if not pairs:
        record["message"] = "no pairs: nothing was trained; the restored model is the quantized base"
        log.warning(record["message"])
    else:
        peft_model, rows, summary = train_adapter(model, tok, pairs, cfg, checkpoint_dir=checkpoint_dir, identity=identity)
        peft_model.save_pretrained(str(out_dir))
        record.update(trained=True, **summary)
        if checkpoint_dir is not None:
            import shutil

            shutil.rmtree(checkpoint_dir, ignore_errors=True)
    record["seconds"] = round(time.perf_counter() - t0, 3)
    write_json(out_dir / TRAIN_LOG_JSON, rows)
    write_json(out_dir / RESTORE_JSON, record)
    if record["trained"]:
        log.info(
            "restore: %d steps, loss %s -> %s in %.1f s",
            record["steps"],
            record["first_loss"],
            record["last_loss"],
            record["seconds"],
        )
    return record


# --------------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------------


def merge_adapter(restored_dir: str | Path, out_dir: str | Path, base: str | Path | None = None) -> Path:
    """Merge the adapter into the dequantized base and save a plain full-precision checkpoint.

    The result has no quantization config and none of the compressed-tensors parameters (scales,
    shapes) the dequantized base still carries: it is a normal model directory to quantize again.
    """
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    model, tok = load_restored(restored_dir, base=base)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    clean = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    state = {k: v for k, v in model.state_dict().items() if k in clean.state_dict()}
    missing, _ = clean.load_state_dict(state, strict=False)
    missing = [
        k for k in missing if not (k == "lm_head.weight" and getattr(config, "tie_word_embeddings", False))
    ]
    if missing:
        raise RuntimeError(f"merge: the merged model lacks weights for {missing[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        clean.tie_weights()
    clean.generation_config = model.generation_config
    clean.save_pretrained(str(out_dir))
    tok.save_pretrained(str(out_dir))
    from qmr.checkpoints import enable_kv_cache

    enable_kv_cache(out_dir)
    return out_dir


def merge_and_requantize(
    restored_dir: str | Path,
    out_dir: str | Path,
    spec: Any,
    calibration_texts: Sequence[str],
    *,
    max_length: int = 512,
    seed: int = 0,
    base: str | Path | None = None,
) -> dict[str, Any]:
    """Merge the adapter into the dequantized base, then quantize the result again with ``spec``
    (`qmr.quant.run.quantize_checkpoint`). Returns the quantizer's stats plus the merge's paths."""
    from qmr.quant.run import quantize_checkpoint

    method = getattr(spec, "method", None)
    if method == "prequantized":
        raise ValueError("merge_and_requantize: spec.method 'prequantized' cannot re-quantize a merged model")
    if method == "none":  # keep the merged model in full precision
        merged = merge_adapter(restored_dir, out_dir, base=base)
        return {"method": "none", "restored": str(restored_dir), "requantized": str(merged)}
    with tempfile.TemporaryDirectory(prefix="qmr-merge-") as tmp:
        merged = merge_adapter(restored_dir, Path(tmp) / "merged", base=base)
        stats = quantize_checkpoint(merged, Path(out_dir), spec, list(calibration_texts), max_length, seed)
    out = dict(stats) if isinstance(stats, dict) else {"stats": stats}
    out.update(restored=str(restored_dir), requantized=str(out_dir))
    return out
