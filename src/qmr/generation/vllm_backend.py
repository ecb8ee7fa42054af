"""vLLM generation backend, in-process (GPU only; vLLM installed by the user in this environment).

vLLM's releases pin compressed-tensors/transformers versions that conflict with qmr's llmcompressor
pins, so it cannot be a `qmr` extra: the recommended way to use vLLM is the `openai` backend with
``vllm serve`` in its own virtualenv (managed mode). This backend remains for environments where the
user made vLLM and qmr coexist.

vLLM reads compressed-tensors checkpoints as ``quantize`` writes them (W4A16 runs on its Marlin
kernels, W8A8 on its int8 kernels), so the quantized variants of a real model are served with real
low-bit kernels instead of the dequantized weights the transformers backend uses. A restored model
is served as quantized base + LoRA adapter (``enable_lora``), the same pair the transformers backend
loads. The 2- and 3-bit custom schemes of the toy sweep have no vLLM kernels: use the transformers
backend for those.

The engine is built once per process and reused (:func:`engine_for`): vLLM does not give GPU memory
back when an engine is deleted, so a stage that generates several times (reevaluate: per benchmark;
the same base with different adapters) must not build one per call. Every variant runs in the same
explicit dtype (bfloat16), with an explicit ``max_model_len``.
"""

from __future__ import annotations

import logging
import time

from qmr.errors import UserError
from qmr.generation.base import Completion
from qmr.generation.server import allowed_lora_rank, derive_max_model_len
from qmr.generation.server import lora_rank as _lora_rank

log = logging.getLogger(__name__)

DTYPE = "bfloat16"  # one dtype for fp and quantized variants (compressed-tensors checkpoints are saved in float32)


def engine_kwargs(path: str, revision: str | None, *, adapter: str | None, batch_size: int, tensor_parallel_size: int, seed: int,
                  max_model_len: int = 4096, dtype: str = DTYPE) -> dict:  # fmt: skip
    """Arguments of ``vllm.LLM``: the checkpoint, dtype, context, parallelism, and LoRA serving when an
    adapter is given (``max_lora_rank``: the adapter's rank rounded up to a value vLLM accepts)."""
    return {
        "model": path,
        "revision": revision,
        "dtype": dtype,
        "max_model_len": max_model_len,
        "tensor_parallel_size": tensor_parallel_size,
        "seed": seed,
        "max_num_seqs": batch_size,
        "enable_lora": adapter is not None,
        "max_lora_rank": allowed_lora_rank(_lora_rank(adapter)) if adapter else 16,
    }


def engine_key(kwargs: dict) -> tuple:
    """What decides whether a cached engine can serve a request: everything but LoRA and the seed
    (the same base with another adapter reuses the engine; sampling seeds are per request)."""
    return tuple(sorted((k, v) for k, v in kwargs.items() if k not in ("enable_lora", "max_lora_rank", "seed")))


def reusable(cached_kwargs: dict, wanted: dict) -> bool:
    """A cached engine serves ``wanted`` when the keys agree and its LoRA slots hold the adapter."""
    if engine_key(cached_kwargs) != engine_key(wanted):
        return False
    if not wanted["enable_lora"]:
        return True
    return cached_kwargs["enable_lora"] and cached_kwargs["max_lora_rank"] >= wanted["max_lora_rank"]


_ENGINE: dict = {}  # the one engine of this process: {"kwargs": ..., "llm": ...}
_LORA_IDS: dict[str, int] = {}


def engine_for(kwargs: dict, factory=None):
    """The process's engine for ``kwargs``: the cached one when :func:`reusable`, else a new one (the
    old one is released first: two engines would not fit the GPU)."""
    cached = _ENGINE.get("kwargs")
    if cached is not None and reusable(cached, kwargs):
        return _ENGINE["llm"]
    if cached is not None:
        release_engine()
    if factory is None:
        from vllm import LLM as factory  # noqa: N811
    log.info("building the vLLM engine for %s (dtype %s, max_model_len %s, LoRA %s)", kwargs["model"], kwargs["dtype"],
             kwargs["max_model_len"], kwargs["enable_lora"])  # fmt: skip
    _ENGINE.update(kwargs=dict(kwargs), llm=factory(**kwargs))
    return _ENGINE["llm"]


def release_engine() -> None:
    """Drop the cached engine and free what vLLM lets go of."""
    llm = _ENGINE.pop("llm", None)
    _ENGINE.clear()
    _LORA_IDS.clear()
    if llm is None:
        return
    del llm
    import gc

    gc.collect()
    try:
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
    except Exception:  # noqa: BLE001 - best effort, across vLLM versions
        try:
            import torch

            torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


def lora_id(adapter: str) -> int:
    """A stable id per adapter path within the engine's life (vLLM caches adapters by id)."""
    return _LORA_IDS.setdefault(str(adapter), len(_LORA_IDS) + 1)


def sampling_kwargs(*, n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> dict:
    """Arguments of ``vllm.SamplingParams``; greedy (temperature 0) ignores top_p."""
    return {"n": n, "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0, "max_tokens": max_new_tokens, "seed": seed}


def lora_request_kwargs(adapter: str, int_id: int = 1) -> dict:
    """Arguments of ``vllm.lora.request.LoRARequest`` for a restored adapter (its id: :func:`lora_id`)."""
    return {"lora_name": f"restore-{int_id}", "lora_int_id": int_id, "lora_path": str(adapter)}


def prompt_inputs(prompts: list[str], tokenizer) -> list:
    """What ``LLM.generate`` gets per prompt: the text, or, when it already starts with the tokenizer's
    BOS (a chat template put it there), its token ids without special tokens, so no second BOS is added."""
    bos = getattr(tokenizer, "bos_token", None)
    return [{"prompt_token_ids": tokenizer(p, add_special_tokens=False)["input_ids"]} if bos and p.startswith(bos) else p for p in prompts]


def completions_from_outputs(outputs, seconds: float) -> list[list[Completion]]:
    """vLLM ``RequestOutput``s (in prompt order) -> our completions. vLLM schedules all prompts
    together, so the wall time is shared out by generated tokens."""
    total = max(1, sum(len(c.token_ids) for o in outputs for c in o.outputs))
    return [
        [Completion(text=c.text.strip(), tokens=len(c.token_ids), seconds=seconds * len(c.token_ids) / total) for c in o.outputs]
        for o in outputs
    ]


class VLLMBackend:
    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        batch_size: int = 256,
        adapter: str | None = None,
        tensor_parallel_size: int = 1,
        seed: int = 0,
        max_model_len: int = 0,
        max_new_tokens: int = 96,
    ):
        from qmr.checkpoints import resolve_model_path

        if device == "cpu":
            raise UserError("generate.device: got 'cpu' with generate.backend 'vllm'; allowed: 'auto' or 'cuda' (use backend 'transformers' on CPU)")
        path, revision = resolve_model_path(model_path)
        self.adapter = adapter
        kwargs = engine_kwargs(path, revision, adapter=adapter, batch_size=batch_size, tensor_parallel_size=tensor_parallel_size,
                               seed=seed, max_model_len=derive_max_model_len(max_model_len, max_new_tokens, path))  # fmt: skip
        self.llm = engine_for(kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def generate(
        self,
        prompts: list[str],
        *,
        n: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 96,
        seed: int = 0,
        progress: bool = True,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams

        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest(**lora_request_kwargs(self.adapter, lora_id(self.adapter)))
        params = SamplingParams(**sampling_kwargs(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed))
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompt_inputs(prompts, self.tokenizer), params, lora_request=lora, use_tqdm=progress)
        seconds = time.perf_counter() - t0
        return completions_from_outputs(outputs, seconds)
