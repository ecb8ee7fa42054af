"""transformers generation backend: batched, left padding, KV cache, CPU or CUDA (bf16 on CUDA)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from qmr.generation.base import Completion

log = logging.getLogger(__name__)


class TransformersBackend:
    supports_resume = True  # generate(done=..., on_batch=...): batches are fixed by the prompt list alone

    def __init__(self, model_path: str, *, device: str = "auto", batch_size: int = 256, adapter: str | None = None):
        import torch

        from qmr.quant.load import compute_dtype, load_model

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype = compute_dtype(device)  # float32 on CPU, bf16 (fp16 without bf16) on CUDA
        self.model, self.tokenizer = load_model(model_path, device=device, dtype=dtype)
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

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
        done: dict[int, list[list[Completion]]] | None = None,
        on_batch: Callable[[int, list[list[Completion]]], None] | None = None,
    ) -> list[list[Completion]]:
        """n completions per prompt, in prompt order.

        Batches are cut from the prompts sorted longest first, so batch ``start`` always holds the same
        prompts: ``done`` maps a batch's start to its completions from an earlier, interrupted run
        (that batch is not generated again) and ``on_batch(start, completions)`` hears of each batch
        as it finishes — together they make a killed run resumable with identical results.
        """
        import torch
        from tqdm.auto import tqdm

        from qmr.prompts import strip_bos

        tok = self.tokenizer
        # Longest first: padding waste stays small and the first batch shows the peak memory.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[list[Completion]] = [[] for _ in prompts]
        sample = temperature > 0
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            if done and start in done:
                for i, comps in zip(idx, done[start], strict=True):
                    results[i] = list(comps)
                bar.update(len(idx))
                continue
            texts = strip_bos([prompts[i] for i in idx], tok)  # a templated BOS + the tokenizer's = two
            batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=True)
            batch = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
            torch.manual_seed(seed + start)
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=sample,
                    temperature=temperature if sample else None,
                    top_p=top_p if sample else None,
                    top_k=None,
                    num_return_sequences=n,
                    pad_token_id=tok.pad_token_id,
                    use_cache=True,
                )
            seconds = time.perf_counter() - t0
            new = out[:, batch["input_ids"].shape[1] :].tolist()
            lengths = []
            for row in new:
                length = 0
                for t in row:
                    length += 1
                    if t in eos_ids:
                        break
                lengths.append(length)
            total = max(1, sum(lengths))
            for j, row in enumerate(new):
                i = idx[j // n]
                text = tok.decode(row[: lengths[j]], skip_special_tokens=True)
                results[i].append(Completion(text=text.strip(), tokens=lengths[j], seconds=seconds * lengths[j] / total))
            if on_batch is not None:
                on_batch(start, [results[i] for i in idx])
            bar.update(len(idx))
        bar.close()
        return results
