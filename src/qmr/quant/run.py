"""Run a quantization recipe on a full-precision checkpoint and save a compressed-tensors checkpoint.

``quantize_checkpoint`` loads the model in float32 where there is no GPU and in bf16 (fp16 without
bf16 support) where there is one (`qmr.quant.load.compute_dtype`: the dtype generation and training use),
calibrates on the given texts with ``llmcompressor.oneshot``, writes the compressed checkpoint, the
tokenizer and ``recipe.yaml`` into ``out_dir`` (atomically: a sibling temp dir renamed into place) and
returns size/time statistics. ``method: none`` and ``prequantized`` write a ``qmr_model.json`` pointer
instead of a copy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qmr.checkpoints import POINTER_FILE, enable_kv_cache, resolve_model_path, write_pointer
from qmr.errors import UserError
from qmr.quant.load import read_quantization_config
from qmr.quant.spec import POINTER_METHODS, QuantSpec, scheme_name

log = logging.getLogger(__name__)

SCALE_BITS = 16
"""Bits per stored scale in the size accounting (fp16/bf16 scales, as the paper's kernels store them)."""


@contextlib.contextmanager
def _cpu_only_patches() -> Iterator[None]:
    """Work around llmcompressor 0.14 on a torch without an accelerator.

    ``AWQModifier`` pins its cached activations (``IntermediatesCache.pin_memory``) before each
    grid search; ``Tensor.pin_memory()`` raises "Cannot access accelerator device when none is
    available" on CPU-only torch. Pinning only speeds host→device copies, so when there is no
    accelerator we make it a no-op — for the duration of the ``with`` block only.
    """
    import torch

    if torch.accelerator.is_available():
        yield
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original  # type: ignore[method-assign]


def _plain_recipe_yaml(path: Path) -> None:
    """Rewrite llmcompressor's ``recipe.yaml`` as plain YAML that ``yaml.safe_load`` (and llmcompressor's
    own recipe loader) can read back.

    llmcompressor 0.14 dumps SmoothQuant mappings as ``!!python/tuple`` and GPTQ's ``actorder`` as a
    ``!!python/object/apply`` enum, which its safe loader then rejects. Tuples become lists and enums
    their value; nothing else changes.
    """
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    def _tuple(loader: yaml.SafeLoader, node: yaml.Node) -> list:
        return loader.construct_sequence(node, deep=True)  # type: ignore[arg-type]

    def _apply(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        args = loader.construct_sequence(node, deep=True)  # type: ignore[arg-type]
        if len(args) == 1 and isinstance(args[0], str | int | float | bool):
            return args[0]  # an Enum(value)
        raise ValueError(f"recipe.yaml: cannot represent python/object/apply:{suffix} {args!r} as plain YAML")

    _Loader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)
    _Loader.add_multi_constructor("tag:yaml.org,2002:python/object/apply:", _apply)
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader subclass
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")


def safetensors_bytes(path: str | Path) -> int:
    """Total size of the ``*.safetensors`` files directly in ``path``."""
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def checkpoint_bytes(path: str | Path, revision: str | None = None) -> dict[str, Any]:
    """``{"disk_bytes", "fp_disk_bytes", "disk_ratio"}`` for an unquantized checkpoint (pointers followed).

    For the full-precision reference variant both sizes are the checkpoint's own; None when the files
    are not local (a hub id not in the cache).
    """
    resolved, rev = resolve_model_path(path, revision)
    local = _local_dir(resolved, rev)
    size = safetensors_bytes(local) if local is not None else None
    return {"disk_bytes": size, "fp_disk_bytes": size, "disk_ratio": 1.0 if size else None}


def _local_dir(path: str, revision: str | None) -> Path | None:
    """A local directory holding ``path``'s files: the path itself, or its hub cache snapshot."""
    if Path(path).is_dir():
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, revision=revision, local_files_only=True))
    except Exception:  # not cached / not a hub id: size unknown
        return None


def linear_weight_bytes(model: Any) -> dict[str, Any]:
    """Storage of the quantized Linear weights vs the same weights at 16 bits.

    Per quantized Linear (out × in, ``bits``, groups of ``g`` along ``in``; per-channel = one group):
    ``out·in·bits`` + ``out·⌈in/g⌉·16`` for scales + ``out·⌈in/g⌉·bits`` for zero-points when
    asymmetric, in bytes. The 16-bit reference is ``out·in·16``. Input-activation quantization is
    dynamic and stores nothing.
    """
    layers = 0
    quant_bits = 0
    fp16_bits = 0
    for module in model.modules():
        scheme = getattr(module, "quantization_scheme", None)
        if scheme is None or scheme.weights is None or not hasattr(module, "weight_scale"):
            continue
        shape = getattr(module, "weight_shape", None)  # present once packed (pack-quantized)
        if shape is not None and shape.numel() == 2:
            out_f, in_f = (int(x) for x in shape.tolist())
        else:
            out_f, in_f = (int(x) for x in module.weight.shape)
        args = scheme.weights
        groups = math.ceil(in_f / args.group_size) if args.group_size else 1
        bits = args.num_bits
        layer_bits = out_f * in_f * bits + out_f * groups * SCALE_BITS
        if not args.symmetric:
            layer_bits += out_f * groups * bits
        layers += 1
        quant_bits += layer_bits
        fp16_bits += out_f * in_f * 16
    return {
        "quantized_layers": layers,
        "quantized_linear_bytes": quant_bits // 8,
        "fp16_linear_bytes": fp16_bits // 8,
        "linear_compression_ratio": round(fp16_bits / quant_bits, 4) if quant_bits else None,
    }


def _calibration_dataset(tokenizer: Any, texts: list[str], max_length: int) -> Any:
    from datasets import Dataset

    from qmr.prompts import strip_bos

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("calibration_texts: got no non-empty text; allowed: a non-empty list of strings")
    enc = tokenizer(strip_bos(texts, tokenizer), truncation=True, max_length=max_length)  # one BOS, not two
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def _fresh_tmp(out_dir: Path) -> Path:
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def quantize_checkpoint(
    model_dir: str | Path,
    out_dir: str | Path,
    spec: QuantSpec,
    calibration_texts: list[str],
    max_length: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Quantize the checkpoint at ``model_dir`` (dir, hub id or pointer dir) into ``out_dir``.

    Returns stats: ``method``, ``scheme``, ``seconds`` (calibrate + quantize), ``seconds_total``
    (incl. load and save), ``calibration_samples``, ``calibration_tokens``, ``disk_bytes`` and
    ``fp_disk_bytes`` (safetensors files; None when unknown), ``disk_ratio``, and from
    ``linear_weight_bytes``: ``quantized_layers``, ``quantized_linear_bytes``, ``fp16_linear_bytes``,
    ``linear_compression_ratio``.
    """
    problems = spec.check()
    if problems:
        raise ValueError("invalid QuantSpec: " + "; ".join(str(p) for p in problems))
    out_dir = Path(out_dir)
    src, src_rev = resolve_model_path(model_dir)
    started = time.perf_counter()
    if spec.method in POINTER_METHODS:
        return _write_pointer_variant(src, src_rev, out_dir, spec, started)

    import torch
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qmr.quant.load import compute_dtype, dtype_name
    from qmr.quant.recipes import build_recipe

    if read_quantization_config(src, src_rev) is not None:
        raise UserError(f"model_dir: {model_dir} is already quantized; allowed: a full-precision checkpoint")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(src, revision=src_rev)
    # float32 on CPU (the toy's numbers); on CUDA the dtype generation and training use (bf16/fp16), so
    # the checkpoint's unquantized parts (embeddings, norms, head) and config.json's dtype match them
    dtype = compute_dtype("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(src, revision=src_rev, dtype=dtype)
    dataset = _calibration_dataset(tokenizer, calibration_texts, max_length)
    recipe = build_recipe(spec)
    log.info(
        "quantizing %s with %s %s on %d calibration texts", src, spec.method, scheme_name(spec), len(dataset)
    )

    t0 = time.perf_counter()
    with _cpu_only_patches():
        oneshot(
            model=model,
            recipe=recipe,
            dataset=dataset,
            num_calibration_samples=len(dataset),
            max_seq_length=max_length,
            shuffle_calibration_samples=False,
        )
    seconds = time.perf_counter() - t0
    weight_stats = linear_weight_bytes(model)  # before saving: compression repacks the weights

    tmp = _fresh_tmp(out_dir)
    try:
        with warnings.catch_warnings():
            # llmcompressor's calibration leaves compressed-tensors offload wrappers on the modules
            # (onloaded on CPU), which makes transformers warn about shard memory; nothing is offloaded.
            warnings.filterwarnings("ignore", message="Attempting to save a model with offloaded modules")
            model.save_pretrained(tmp, save_compressed=True)  # llmcompressor's wrapper writes recipe.yaml
        tokenizer.save_pretrained(tmp)
        if not (tmp / "recipe.yaml").exists():
            raise RuntimeError(f"llmcompressor did not write recipe.yaml into {tmp}")
        _plain_recipe_yaml(tmp / "recipe.yaml")
        enable_kv_cache(tmp)  # llmcompressor re-saves the source's config.json: an aligned model's is off
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    fp_dir = _local_dir(src, src_rev)
    disk = safetensors_bytes(out_dir)
    fp_disk = safetensors_bytes(fp_dir) if fp_dir is not None else None
    stats: dict[str, Any] = {
        "method": spec.method,
        "scheme": scheme_name(spec),
        "dtype": dtype_name(dtype),
        "seconds": round(seconds, 3),
        "seconds_total": round(time.perf_counter() - started, 3),
        "calibration_samples": len(dataset),
        "calibration_tokens": int(sum(len(ids) for ids in dataset["input_ids"])),
        "disk_bytes": disk,
        "fp_disk_bytes": fp_disk,
        "disk_ratio": round(fp_disk / disk, 4) if fp_disk and disk else None,
        **weight_stats,
    }
    log.info("quantized %s: %s", out_dir, stats)
    return stats


def _write_pointer_variant(
    src: str, src_rev: str | None, out_dir: Path, spec: QuantSpec, started: float
) -> dict[str, Any]:
    """``none``: point at the fp model. ``prequantized``: validate the checkpoint, point at it."""
    if spec.method == "none":
        target, rev = src, src_rev
    else:
        assert spec.checkpoint is not None  # guaranteed by spec.check()
        target, rev = resolve_model_path(spec.checkpoint, spec.revision)
        qc = read_quantization_config(target, rev)  # also proves the checkpoint's config is reachable
        if qc is None:
            raise UserError(
                f"checkpoint: {spec.checkpoint} has no quantization_config; allowed: a quantized checkpoint"
            )
        if qc.get("quant_method") != "compressed-tensors":
            log.warning(
                "checkpoint %s uses quant_method %r, not compressed-tensors", target, qc.get("quant_method")
            )
    tmp = _fresh_tmp(out_dir)
    write_pointer(tmp, target, rev)
    _replace_dir(tmp, out_dir)
    local = _local_dir(target, rev)
    fp_local = _local_dir(src, src_rev)
    disk = safetensors_bytes(local) if local is not None else None
    fp_disk = safetensors_bytes(fp_local) if fp_local is not None else None
    return {
        "method": spec.method,
        "scheme": scheme_name(spec),
        "pointer": str(out_dir / POINTER_FILE),
        "seconds": 0.0,
        "seconds_total": round(time.perf_counter() - started, 3),
        "disk_bytes": disk,
        "fp_disk_bytes": fp_disk,
        "disk_ratio": round(fp_disk / disk, 4) if fp_disk and disk else None,
    }
