"""vLLM generation backend (GPU only; ``pip install 'qmr[vllm]'``).

vLLM reads compressed-tensors checkpoints as ``quantize`` writes them (W4A16 runs on its Marlin
kernels, W8A8 on its int8 kernels), so the quantized variants of a real model are served with real
low-bit kernels instead of the dequantized weights the transformers backend uses. A restored model
is served as quantized base + LoRA adapter (``enable_lora``), the same pair the transformers backend
loads. The 2- and 3-bit custom schemes of the toy sweep have no vLLM kernels: use the transformers
backend for those.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from qmr.errors import UserError
from qmr.generation.base import Completion

log = logging.getLogger(__name__)


def _lora_rank(adapter: str) -> int:
    """The adapter's rank, so vLLM reserves enough LoRA memory (its default max is 16)."""
    config = Path(adapter) / "adapter_config.json"
    return int(json.loads(config.read_text(encoding="utf-8")).get("r", 16)) if config.is_file() else 16


def engine_kwargs(path: str, revision: str | None, *, adapter: str | None, batch_size: int, tensor_parallel_size: int, seed: int) -> dict:
    """Arguments of ``vllm.LLM``: the checkpoint, parallelism, and LoRA serving when an adapter is given."""
    return {
        "model": path,
        "revision": revision,
        "tensor_parallel_size": tensor_parallel_size,
        "seed": seed,
        "max_num_seqs": batch_size,
        "enable_lora": adapter is not None,
        "max_lora_rank": _lora_rank(adapter) if adapter else 16,
    }


def sampling_kwargs(*, n: int, temperature: float, top_p: float, max_new_tokens: int, seed: int) -> dict:
    """Arguments of ``vllm.SamplingParams``; greedy (temperature 0) ignores top_p."""
    return {"n": n, "temperature": temperature, "top_p": top_p if temperature > 0 else 1.0, "max_tokens": max_new_tokens, "seed": seed}


def lora_request_kwargs(adapter: str) -> dict:
    """Arguments of ``vllm.lora.request.LoRARequest`` for the restored adapter (one adapter, id 1)."""
    return {"lora_name": "restore", "lora_int_id": 1, "lora_path": str(adapter)}


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
    ):
        from vllm import LLM

        from qmr.checkpoints import resolve_model_path

        if device == "cpu":
            raise UserError("generate.device: got 'cpu' with generate.backend 'vllm'; allowed: 'auto' or 'cuda' (use backend 'transformers' on CPU)")
        path, revision = resolve_model_path(model_path)
        self.adapter = adapter
        self.llm = LLM(**engine_kwargs(path, revision, adapter=adapter, batch_size=batch_size, tensor_parallel_size=tensor_parallel_size, seed=seed))
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

            lora = LoRARequest(**lora_request_kwargs(self.adapter))
        params = SamplingParams(**sampling_kwargs(n=n, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed))
        t0 = time.perf_counter()
        outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=progress)
        seconds = time.perf_counter() - t0
        return completions_from_outputs(outputs, seconds)
