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
- ``step_dpo``: Step-DPO: ``dpo_nll`` on step spans (chosen and rejected cut to their first step,
  whatever ``pair_span`` says; see `span_pairs`), with ``rpo_alpha`` x NLL on the chosen step as anchor.
- ``kd``: off-policy distillation from the reference (full-precision) model, the *teacher*, on prompt +
  chosen: trl's `GKDTrainer` (``trl.experimental.gkd``) with ``lmbda = 0`` and ``seq_kd = False``; the
  loss is the teacher-vs-student divergence on each chosen token (``kd_loss``: forward KL(teacher ||
  student), or the generalized JSD with ``kd_beta``) at ``kd_temperature``, + ``kd_nll_weight`` x the NLL
  of chosen. The student is the quantized base + the adapter; rejected is ignored.
- ``gkd``: the same with a share ``gkd_lmbda`` of on-policy batches: the student samples a continuation
  of each prompt (at ``kd_temperature``, up to ``gkd_max_new_tokens``) and the loss is the divergence
  on its own tokens (no NLL term on those batches).

``kd`` and ``gkd`` need ``teacher_dir`` (the stage passes ``models/quantized/<model>/<evaluate.reference>``).

``pair_span`` (``full`` | ``step``): ``step`` cuts chosen and rejected to their first line, the first
step after the prompt's prefix, as Step-DPO does. Like every non-conversational completion in trl, a
cut completion ends with the tokenizer's EOS (trl appends it), so an NLL term on a step span also
teaches "stop after this step"; the DPO term sees the EOS on both sides.

Outputs of `train_restore` in ``out_dir``: the adapter (``adapter_config.json`` +
``adapter_model.safetensors``), the tokenizer, ``restore.json`` (config, base path, pairs, seconds, …)
and ``train_log.json`` (one row per optimizer step: step, loss, rewards/margins, rewards/chosen,
rewards/rejected, learning_rate; ``kd``/``gkd`` add kd_loss and nll, ``gkd`` also on_policy: the share of
on-policy batches in the step). With no pairs nothing is trained: ``restore.json`` says so, there is
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
        "gkd": "qmr.restore.train:gkd_trainer",
        "kd": "qmr.restore.train:kd_trainer",
        "sft": "qmr.restore.train:sft_trainer",
        "step_dpo": "qmr.restore.train:step_dpo_trainer",
    },
)
# objectives that distil from the reference model (they need `train_restore`'s ``teacher_dir``)
TEACHER_OBJECTIVES = ("gkd", "kd")
# objectives that read ``rejected`` (a pair whose two sides are equal after `span_pairs` is dropped)
PREFERENCE_OBJECTIVES = ("dpo", "dpo_nll", "step_dpo")
# train_log.json columns beyond LOG_KEYS, per objective
OBJECTIVE_LOG_KEYS = {"kd": ("kd_loss", "nll"), "gkd": ("kd_loss", "nll", "on_policy")}
Objective = OBJECTIVES.literal()


@dataclass
class RestoreConfig:
    """DPO + LoRA training of the restored model (``restore`` in params.yaml)."""

    objective: Objective = field(
        "dpo",
        help="dpo (the paper) | dpo_nll (DPO + rpo_alpha x NLL on chosen) | sft (prompt + chosen only) | "
        "step_dpo (dpo_nll on first-step spans) | kd (distil the reference model's token distributions on "
        "chosen) | gkd (kd with a gkd_lmbda share of on-policy student samples)",
    )
    beta: float = field(0.1, help="DPO beta: strength of the pull towards the quantized reference")
    rpo_alpha: float = field(1.0, help="weight of the NLL-on-chosen term (objectives dpo_nll, step_dpo)")
    pair_span: Literal["full", "step"] = field(
        "full",
        help="full = the whole continuations; step = chosen and rejected cut to their first line (the first "
        "step after the prefix), as Step-DPO; objective step_dpo always uses step",
    )
    kd_loss: Literal["forward_kl", "jsd"] = field(
        "forward_kl",
        help="kd/gkd divergence per chosen token: forward_kl = KL(teacher || student); jsd = generalized JSD "
        "with kd_beta",
    )
    kd_beta: float = field(
        0.5, help="generalized-JSD interpolation (kd_loss jsd): 0 = forward KL, 0.5 = JSD, 1 = reverse KL", ge=0.0, le=1.0
    )
    kd_temperature: float = field(
        1.0, help="softmax temperature of both distributions in the kd/gkd divergence (no T^2 factor) and of gkd's sampling; > 0"
    )
    kd_nll_weight: float = field(0.0, help="weight of the NLL on chosen added to the kd/gkd loss (>= 0)")
    gkd_lmbda: float = field(
        0.5, help="gkd: share of batches on which the student samples its own continuation (0 = kd)", ge=0.0, le=1.0
    )
    gkd_max_new_tokens: int = field(128, help="gkd: most tokens the student samples per on-policy continuation", ge=1)
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
    requantize_method: Literal["same", "gptq"] = field(
        "same", help="merge: requantize: same = the variant's own method; gptq = GPTQ at the variant's bits, group size "
        "and symmetry (error compensation on the calibration data) where the variant is rtn or awq"
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
        for name in ("rpo_alpha", "kd_nll_weight"):
            if getattr(self, name) < 0:
                out.append(Problem(f"{p}{name}", getattr(self, name), "a number >= 0"))
        if not self.kd_temperature > 0:
            out.append(Problem(f"{p}kd_temperature", self.kd_temperature, "a number > 0"))
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


def log_keys(objective: str) -> tuple[str, ...]:
    """The columns of ``train_log.json`` (besides ``step``) for ``objective``."""
    return LOG_KEYS + OBJECTIVE_LOG_KEYS.get(objective, ())


def _log_rows(history: list[dict[str, Any]], keys: Sequence[str] = LOG_KEYS) -> list[dict[str, Any]]:
    rows = []
    for rec in history:
        if "loss" not in rec or "step" not in rec:
            continue  # the final summary row (train_loss, runtime) and eval rows
        rows.append(
            {"step": int(rec["step"]), **{k: (float(rec[k]) if k in rec else None) for k in keys}}
        )
    return rows


def span_pairs(pairs: Sequence[dict], span: str) -> list[dict]:
    """``pairs`` with chosen and rejected cut to ``span``: ``full`` keeps them; ``step`` keeps the first
    line of each (the first step after the prompt's prefix; Step-DPO's unit). The prompt is unchanged."""
    if span == "full":
        return list(pairs)
    if span != "step":
        raise ValueError(f"restore.pair_span: {span!r} is not one of 'full', 'step'")
    first = lambda text: str(text).lstrip("\n").split("\n", 1)[0]  # noqa: E731
    return [{**p, "chosen": first(p["chosen"]), "rejected": first(p["rejected"])} for p in pairs]


def effective_span(cfg: RestoreConfig) -> str:
    """The span the run trains on: ``step`` for ``step_dpo``, else ``cfg.pair_span``."""
    return "step" if cfg.objective == "step_dpo" else cfg.pair_span


def _build_trainer(
    model, tok, pairs: Sequence[dict], cfg: RestoreConfig, output_dir: str, checkpointing: bool = False, teacher=None
):
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
    trainer = OBJECTIVES.load(cfg.objective, "restore.objective")(model, tok, pairs, cfg, args, lora, teacher=teacher)
    _cap_warmup(trainer, cfg.warmup_ratio)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # The library never prints: training rows go to the log file and to `logging`, not stdout.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def sft_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, teacher=None):
    """Objective ``sft``: prompt + chosen, loss on the chosen tokens only (rejected is ignored)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs])
    targs = SFTConfig(**args, completion_only_loss=True, packing=False)
    return SFTTrainer(model=model, args=targs, train_dataset=data, processing_class=tok, peft_config=lora)


def _dpo(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, loss: dict):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    class StepSpanDPOTrainer(DPOTrainer):
        """trl ends every completion with EOS; a step span is not the end of a solution, so the EOS is
        dropped again after tokenization (else the NLL anchor and the preference both teach the model
        to stop after one step: measured on the toy, step_dpo fell to fewer steps than fp and below
        the quantized model's accuracy)."""

        def _prepare_dataset(self, dataset, processing_class, args, name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, name)
            eos = self._tokenizer.eos_token_id

            def strip(example):
                return {k: example[k][:-1] if len(example[k]) > 1 and example[k][-1] == eos else example[k]
                        for k in ("chosen_ids", "rejected_ids")}  # fmt: skip

            return dataset.map(strip)

    data = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs])
    targs = DPOConfig(**args, beta=cfg.beta, **loss)
    trainer_cls = StepSpanDPOTrainer if effective_span(cfg) == "step" else DPOTrainer
    return trainer_cls(
        model=model, ref_model=None, args=targs, train_dataset=data, processing_class=tok, peft_config=lora
    )


def dpo_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, teacher=None):
    """Objective ``dpo``: the paper's sigmoid DPO loss (reference = the adapter disabled)."""
    return _dpo(model, tok, pairs, cfg, args, lora, {"loss_type": ["sigmoid"]})


def dpo_nll_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, teacher=None):
    """Objective ``dpo_nll``: DPO + ``rpo_alpha`` x the NLL of the chosen completion (RPO)."""
    return _dpo(model, tok, pairs, cfg, args, lora, {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, float(cfg.rpo_alpha)]})


def step_dpo_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, teacher=None):
    """Objective ``step_dpo``: ``dpo_nll`` (DPO + ``rpo_alpha`` x NLL anchor) on step spans; `train_restore`
    has already cut the pairs with `span_pairs` (`effective_span` is ``step``)."""
    return dpo_nll_trainer(model, tok, pairs, cfg, args, lora)


class KDCollator:
    """Batches of prompt + completion for the distillation trainers: ``input_ids``/``attention_mask``
    (right-padded), ``labels`` (-100 on the prompt and the padding: the divergence and the NLL count the
    completion tokens only), and the left-padded prompt alone (``prompts``/``prompt_attention_mask``) from
    which `gkd` samples. Tokenized as trl's SFT does a prompt-completion pair: the completion starts where
    the tokenized prompt and prompt + completion diverge, EOS is appended, the end is cut at ``max_length``.
    """

    def __init__(self, tokenizer, max_length: int):
        self.tok = tokenizer
        self.max_length = max_length

    def _encode(self, prompt: str, completion: str) -> tuple[list[int], list[int], list[int]]:
        p = self.tok(prompt)["input_ids"]
        pc = self.tok(prompt + completion)["input_ids"]
        n = 0
        while n < min(len(p), len(pc)) and p[n] == pc[n]:
            n += 1
        eos = self.tok.eos_token_id
        if eos is not None and (not pc or pc[-1] != eos):
            pc = pc + [eos]
        ids = pc[: self.max_length]
        labels = [-100] * min(n, len(ids)) + ids[n:]
        return ids, labels, p[-self.max_length :]

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        enc = [self._encode(ex["prompt"], ex["completion"]) for ex in examples]
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        width = max(len(ids) for ids, _, _ in enc)
        pwidth = max(len(p) for _, _, p in enc)

        def right(seq, fill, w):
            return seq + [fill] * (w - len(seq))

        return {
            "input_ids": torch.tensor([right(ids, pad, width) for ids, _, _ in enc]),
            "attention_mask": torch.tensor([right([1] * len(ids), 0, width) for ids, _, _ in enc]),
            "labels": torch.tensor([right(lab, -100, width) for _, lab, _ in enc]),
            "prompts": torch.tensor([[pad] * (pwidth - len(p)) + p for _, _, p in enc]),
            "prompt_attention_mask": torch.tensor([[0] * (pwidth - len(p)) + [1] * len(p) for _, _, p in enc]),
        }


_KD_TRAINER = None


def _gkd():
    """``(GKDConfig, GKDTrainer)`` from ``trl.experimental.gkd`` (its import-time "experimental" warning is
    expected here: trl's non-experimental `DistillationTrainer` is on-policy only, no dataset completions)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        from trl.experimental.gkd import GKDConfig, GKDTrainer
    return GKDConfig, GKDTrainer


def _kd_trainer_class():
    """trl's `GKDTrainer` with qmr's loss: the divergence at ``kd_temperature`` (trl's own compute_loss
    divides by no temperature), + ``kd_nll_weight`` x the NLL of the labels on off-policy batches, and
    kd_loss / nll / on_policy in the logged metrics. Built on first use (trl is a heavy import)."""
    global _KD_TRAINER
    if _KD_TRAINER is not None:
        return _KD_TRAINER
    import torch
    import torch.nn.functional as F

    _, GKDTrainer = _gkd()

    class KDTrainer(GKDTrainer):
        kd_temperature = 1.0
        kd_nll_weight = 0.0
        _on_policy = False

        def generate_on_policy_outputs(self, model, inputs, generation_config):  # marks the batch on-policy
            if model is not self.teacher_model:
                self._on_policy = True
            return GKDTrainer.generate_on_policy_outputs(model, inputs, generation_config)

        def training_step(self, model, inputs, num_items_in_batch=None):
            self._on_policy = False
            return super().training_step(model, inputs, num_items_in_batch)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            student = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            self.teacher_model.eval()
            with torch.no_grad():
                teacher = self.teacher_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
            s_logits = student.logits[:, :-1, :].float()  # float32 softmaxes under bf16 autocast too
            t_logits = teacher.logits[:, :-1, :].float()
            labels = inputs["labels"][:, 1:]
            mask = labels != -100
            tokens = mask.sum().clamp_min(1)
            per_token = self.generalized_jsd_loss(
                s_logits, t_logits, labels=labels, beta=self.beta, temperature=self.kd_temperature, reduction="none"
            )  # the masked tokens' divergences (summed over the vocabulary)
            kd_sum = per_token.sum()
            nll_sum = F.cross_entropy(
                s_logits.reshape(-1, s_logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
            )
            # a mean over this micro-batch's completion tokens (the Trainer divides by the accumulation steps:
            # model_accepts_loss_kwargs is off). Not trl's num_items_in_batch: that counts the dataset's
            # completion tokens, while an on-policy batch's are the student's own.
            loss = kd_sum / tokens
            if self.kd_nll_weight and not self._on_policy:  # an on-policy batch's labels are the student's own tokens
                loss = loss + self.kd_nll_weight * nll_sum / tokens
            mode = "train" if model.training else "eval"
            self._metrics[mode]["kd_loss"].append((kd_sum / tokens).item())
            if not self._on_policy:
                self._metrics[mode]["nll"].append((nll_sum / tokens).item())
            if self.lmbda > 0:
                self._metrics[mode]["on_policy"].append(float(self._on_policy))
            return (loss, student) if return_outputs else loss

    _KD_TRAINER = KDTrainer
    return KDTrainer


def _distil(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, teacher, lmbda: float):
    if teacher is None:
        raise ValueError(f"restore.objective {cfg.objective!r} distils from the reference model: pass teacher_dir")
    from datasets import Dataset

    GKDConfig, _ = _gkd()
    data = Dataset.from_list([{"prompt": p["prompt"], "completion": p["chosen"]} for p in pairs])
    targs = GKDConfig(
        **args,
        lmbda=float(lmbda),
        seq_kd=False,
        beta=0.0 if cfg.kd_loss == "forward_kl" else float(cfg.kd_beta),
        temperature=float(cfg.kd_temperature),
        max_new_tokens=int(cfg.gkd_max_new_tokens),
        disable_dropout=False,  # lora_dropout applies as for the other objectives
    )
    trainer = _kd_trainer_class()(
        model=model, teacher_model=teacher, args=targs, train_dataset=data, processing_class=tok,
        peft_config=lora, data_collator=KDCollator(tok, cfg.max_length),
    )  # fmt: skip
    trainer.model_accepts_loss_kwargs = False  # per-micro-batch token means, divided by the accumulation steps
    trainer.kd_temperature = float(cfg.kd_temperature)
    trainer.kd_nll_weight = float(cfg.kd_nll_weight)
    return trainer


def kd_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, teacher=None):
    """Objective ``kd``: off-policy distillation of ``teacher`` on prompt + chosen (GKD with lmbda 0)."""
    return _distil(model, tok, pairs, cfg, args, lora, teacher, lmbda=0.0)


def gkd_trainer(model, tok, pairs: Sequence[dict], cfg: RestoreConfig, args: dict, lora, teacher=None):
    """Objective ``gkd``: distillation with a ``gkd_lmbda`` share of on-policy (student-sampled) batches."""
    return _distil(model, tok, pairs, cfg, args, lora, teacher, lmbda=cfg.gkd_lmbda)


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
    model, tokenizer, pairs: Sequence[dict], cfg: RestoreConfig, checkpoint_dir: str | Path | None = None, identity: Any = None,
    teacher=None,
):
    """Attach a LoRA adapter to ``model`` (the dequantized quantized base) and train it on ``pairs``.

    Returns ``(peft_model, log_rows, summary)``; ``peft_model`` is in eval mode. Call
    `qmr.determinism.set_determinism` first for a reproducible run (`train_restore` does).

    With ``checkpoint_dir`` (and ``cfg.checkpoint_steps > 0``) the trainer saves a checkpoint there every
    ``checkpoint_steps`` optimizer steps — adapter, optimizer, scheduler, RNG states — and a later call
    with the same model (``identity``: e.g. its files' sizes and times), pairs and config resumes from the newest one
    (``Trainer.train(resume_from_checkpoint=...)``): a killed run continues where it stopped and ends
    with the same adapter. The caller removes the directory once the result is saved.

    ``teacher``: the loaded reference model the ``kd``/``gkd`` objectives distil from (frozen).
    ``pairs`` are trained as given: `train_restore` applies `span_pairs` first.
    """
    if not pairs:
        raise ValueError("train_adapter: no pairs to train on")
    if cfg.objective in TEACHER_OBJECTIVES and teacher is None:
        raise ValueError(f"restore.objective {cfg.objective!r} distils from the reference model: pass a teacher")
    resume_from = None
    with tempfile.TemporaryDirectory(prefix="qmr-restore-") as tmp:
        output_dir = tmp
        if checkpoint_dir is not None and cfg.checkpoint_steps > 0:
            output_dir = str(checkpoint_dir)
            resume_from = _prepare_checkpoints(Path(checkpoint_dir), _checkpoint_fingerprint(model, pairs, cfg, identity))
        trainer = _build_trainer(model, tokenizer, pairs, cfg, output_dir, checkpointing=output_dir != tmp, teacher=teacher)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        log.info(
            "restore: %s on %d pairs (%d trainable adapter parameters)%s", cfg.objective, len(pairs), trainable,
            f", resuming from {resume_from}" if resume_from else "",
        )  # fmt: skip
        result = trainer.train(resume_from_checkpoint=resume_from)
    rows = _log_rows(trainer.state.log_history, log_keys(cfg.objective))
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
    if cfg.objective in TEACHER_OBJECTIVES:
        kd = [r["kd_loss"] for r in rows if r.get("kd_loss") is not None]
        summary.update(first_kd_loss=kd[0] if kd else None, last_kd_loss=kd[-1] if kd else None)
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
    teacher_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on the quantized model at ``quantized_dir`` with ``pairs``; save to ``out_dir``.

    Deterministic given ``cfg.seed`` and ``threads``. Returns the record also written to ``restore.json``.
    ``checkpoint_dir``: resumable checkpoints (see `train_adapter`), removed once the adapter is saved.
    ``teacher_dir``: the reference (full-precision) checkpoint; loaded only for the objectives in
    ``TEACHER_OBJECTIVES`` (`kd`, `gkd`), which need it. The pairs are cut to `effective_span` first; for
    a preference objective a pair whose chosen and rejected are equal after the cut is dropped.
    """
    problems = cfg.check("restore")
    if problems:
        raise ValueError("; ".join(str(p) for p in problems))
    needs_teacher = cfg.objective in TEACHER_OBJECTIVES
    if needs_teacher and teacher_dir is None:
        raise ValueError(f"restore.objective {cfg.objective!r} distils from the reference model: pass teacher_dir")
    span = effective_span(cfg)
    given = len(pairs)
    pairs = span_pairs(pairs, span)
    if span != "full" and cfg.objective in PREFERENCE_OBJECTIVES:
        pairs = [p for p in pairs if p["chosen"] != p["rejected"]]
    if len(pairs) < given:
        log.info("restore: %d of %d pairs dropped (chosen == rejected on %s spans)", given - len(pairs), given, span)
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
        "pair_span": span,
        "span_dropped": given - len(pairs),
        "teacher": str(teacher_dir) if needs_teacher else None,
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
        teacher = load_base(teacher_dir)[0] if needs_teacher else None
        peft_model, rows, summary = train_adapter(
            model, tok, pairs, cfg, checkpoint_dir=checkpoint_dir, identity=identity, teacher=teacher
        )
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


def requantize_spec(spec: Any, requantize_method: str = "same") -> Any:
    """The spec ``merge: requantize`` quantizes the merged model with: the variant's own, or with
    ``requantize_method: gptq`` a GPTQ spec at the same bits, group size and symmetry where the variant
    rounds without error compensation (rtn; awq, whose scales are searched for the original weights)."""
    import dataclasses

    if requantize_method == "gptq" and getattr(spec, "method", None) in ("rtn", "awq"):
        return dataclasses.replace(spec, method="gptq")
    return spec


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
