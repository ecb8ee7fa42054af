"""Load a plain Hugging Face checkpoint or a compressed-tensors one (as written by ``quantize``).

What transformers 5.17 + compressed-tensors 0.19 do with a compressed-tensors checkpoint (checked on
CPU, see tests/test_quant.py):

- Both ``CompressedTensorsConfig(dequantize=True)`` and the default (``dequantize=False``) end with
  plain float ``nn.Linear`` weights on CPU: the dequantized path decompresses at load time, the other
  one leaves the packed tensors in place and decompresses them on the first forward pass. There is no
  packed-int kernel on CPU, so ``dequantize=True`` costs nothing and is the useful mode; it is also the
  one peft can wrap (LoRA cannot attach to packed layers).
- Dequantized weights of a weight-only scheme lie exactly on the low-bit grid: every group of
  ``group_size`` inputs equals ``scale * (q - zero_point)`` for integer ``q`` in the ``bits`` range
  (to float32 rounding). Load in float32 to keep that exact; bfloat16 rounds the grid values.
- Each quantized Linear keeps its ``quantization_scheme`` and compressed-tensors' quantized forward
  (``set_forward_quantized``). Weight fake-quant is skipped (status ``decompressed``/``compressed``:
  the weights are already on the grid), but a W8A8 scheme's input activations ARE fake-quantized in
  every forward, int8 dynamic per token (scale = max|x| / 127.5), in either loading mode — so
  generation from a W8A8 checkpoint reflects its activation quantization.
- compressed-tensors fake-quantizes under ``torch.no_grad()``: a W8A8 layer's output is detached
  from its input, so no gradient would flow back through it (LoRA on a W8A8 model would only train
  through the residual stream). ``load_model`` therefore replaces that forward on dequantized
  activation-quantized layers with ``_straight_through_forward``: identical values, straight-through
  gradient (``ensure_activation_quantization``).

A directory holding ``qmr_model.json`` (``{"path": "<dir or hub id>", "revision": ...}``) is a pointer:
it is followed, with a relative ``path`` resolved against the current working directory.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from qmr.checkpoints import check_checkpoint, resolve_model_path

log = logging.getLogger(__name__)

def read_quantization_config(path: str | Path, revision: str | None = None) -> dict | None:
    """The ``quantization_config`` of a checkpoint's config.json (None for a plain model)."""
    from transformers import AutoConfig

    resolved, rev = resolve_model_path(path, revision)
    config = AutoConfig.from_pretrained(resolved, revision=rev)
    qc = getattr(config, "quantization_config", None)
    if qc is not None and not isinstance(qc, dict):
        qc = qc.to_dict()
    return qc


def compute_dtype(device: str, bf16_supported: bool | None = None) -> Any:
    """The dtype every model runs in on ``device`` — generation, training and the quantized checkpoints
    written there: float32 on CPU (the exact grid values, and the toy's committed numbers), bfloat16 on
    CUDA, float16 on a GPU without bf16 (``bf16_supported`` None: ask torch)."""
    import torch

    if not str(device).startswith("cuda"):
        return torch.float32
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    return torch.bfloat16 if bf16_supported else torch.float16


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (what metrics and config.json write)."""
    return str(dtype).removeprefix("torch.")


def _resolve_dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        return torch.float32 if str(device).startswith("cpu") else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise ValueError(f"dtype: got {dtype!r}; allowed: auto, float32, float16, bfloat16") from None
    return dtype


def load_model(
    path: str | Path,
    *,
    device: str = "cpu",
    dequantize: bool = True,
    dtype: Any = None,
    revision: str | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer) from a plain or compressed-tensors checkpoint, or a pointer dir.

    ``dequantize=True`` (default) turns packed low-bit weights into float weights holding the grid
    values — what CPU generation and LoRA training need. ``dtype=None`` means float32 on CPU (exact grid
    values) and the checkpoint's dtype elsewhere. The model is returned in eval mode.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved, rev = resolve_model_path(path, revision)
    check_checkpoint(resolved)
    qc = read_quantization_config(resolved, rev)
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype, device), "revision": rev}
    if qc is not None and qc.get("quant_method") == "compressed-tensors":
        from transformers import CompressedTensorsConfig

        kwargs["quantization_config"] = CompressedTensorsConfig(dequantize=dequantize)
    elif qc is not None:
        log.warning(
            "%s: quant_method %r is not compressed-tensors; transformers needs that backend's package "
            "(e.g. gptqmodel for gptq, autoawq for awq) to load it",
            resolved,
            qc.get("quant_method"),
        )
    if str(device) != "cpu":
        kwargs["device_map"] = device
    with warnings.catch_warnings():
        # transformers warns that the checkpoint's own quantization_config wins over ours; only our
        # loading attributes (dequantize) are taken, which is exactly what we pass it for.
        warnings.filterwarnings("ignore", message="You passed `quantization_config`")
        model = AutoModelForCausalLM.from_pretrained(resolved, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(resolved, revision=rev)
    model.eval()
    ensure_activation_quantization(model)
    return model, tokenizer


def quantized_modules(model: Any) -> dict[str, Any]:
    """name → module for every module carrying a compressed-tensors quantization scheme."""
    return {n: m for n, m in model.named_modules() if getattr(m, "quantization_scheme", None) is not None}


def is_activation_quantized(model: Any) -> bool:
    """True when some module's scheme quantizes its input activations (e.g. W8A8)."""
    return any(m.quantization_scheme.input_activations is not None for m in quantized_modules(model).values())


def _straight_through_forward(self: Any, input: Any) -> Any:
    """Linear forward with compressed-tensors' activation fake-quant and a straight-through gradient.

    compressed-tensors computes fake-quant under ``torch.no_grad()``, so its own quantized forward
    returns a W8A8 layer's output detached from the input: no gradient reaches anything upstream
    through the layer. Here the forward value is the same (quantized input, grid weights), and the
    gradient passes the rounding unchanged (STE), which LoRA training on a W8A8 model needs.
    Only installed on modules whose weights are already dequantized (no weight fake-quant needed).
    """
    import torch
    from compressed_tensors.quantization import forward_quantize

    scheme = self.quantization_scheme
    enabled = getattr(self, "quantization_enabled", True)
    if enabled and scheme.input_activations is not None:
        quantized = forward_quantize(self, input, "input", scheme.input_activations)
        input = input + (quantized - input).detach() if input.requires_grad else quantized
    output = torch.nn.Linear.forward(self, input)
    if enabled and scheme.output_activations is not None:
        quantized = forward_quantize(self, output, "output", scheme.output_activations)
        output = output + (quantized - output).detach() if output.requires_grad else quantized
    return output


def ensure_activation_quantization(model: Any) -> int:
    """Make every module whose scheme quantizes activations fake-quantize them in forward.

    transformers attaches compressed-tensors' quantized forward when it loads such a checkpoint. On
    modules whose weights are dequantized (status ``decompressed``) it is replaced by
    ``_straight_through_forward`` — same values, but gradients flow; modules still compressed keep
    compressed-tensors' forward (inference only). Disabled quantization (``quantization_enabled =
    False``) is re-enabled. Returns the number of modules whose forward was installed or re-enabled.
    """
    import types

    import torch
    from compressed_tensors.quantization import QuantizationStatus

    fixed = 0
    for name, module in quantized_modules(model).items():
        scheme = module.quantization_scheme
        if scheme.input_activations is None and scheme.output_activations is None:
            continue
        if not isinstance(module, torch.nn.Linear):
            continue
        changed = False
        current = vars(module).get("forward")
        is_ste = getattr(current, "__func__", None) is _straight_through_forward
        if module.quantization_status == QuantizationStatus.DECOMPRESSED and not is_ste:
            module.forward = types.MethodType(_straight_through_forward, module)
            changed = True
        elif current is None:
            from compressed_tensors.quantization.lifecycle.forward import set_forward_quantized

            set_forward_quantized(module)
            changed = True
        if getattr(module, "quantization_enabled", True) is False:
            module.quantization_enabled = True
            changed = True
        if changed:
            fixed += 1
            log.debug("activation quantization forward installed on %s", name)
    return fixed
