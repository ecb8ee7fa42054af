"""llmcompressor recipes (lists of modifiers) from a ``QuantSpec``.

Every recipe quantizes the ``Linear`` layers through one custom ``config_groups`` scheme built from the
spec (bits, group size, symmetric), so 2- and 3-bit work the same way as the 4/8-bit presets:

- ``rtn``         → ``QuantizationModifier`` (round-to-nearest, min-max observer)
- ``gptq``        → ``GPTQModifier``
- ``awq``         → ``AWQModifier`` (activation-aware scaling) + ``QuantizationModifier``
- ``smoothquant`` → ``SmoothQuantModifier`` (alpha = ``smoothing_strength``) + ``GPTQModifier`` at W8A8:
  int8 per-channel symmetric weights, int8 dynamic per-token symmetric input activations

AWQ and SmoothQuant take their layer mappings from llmcompressor's per-architecture registries
(Llama and Qwen2 use the ``input_layernorm → q/k/v``, ``v → o``, ``post_attention_layernorm →
gate/up``, ``up → down`` family). ``lm_head`` is always ignored; embeddings are never targeted
(targets are ``Linear`` modules only).
"""

from __future__ import annotations

from typing import Any

from qmr.quant.spec import METHODS, QuantSpec


def quantization_scheme(spec: QuantSpec) -> Any:
    """The compressed-tensors ``QuantizationScheme`` for ``spec``'s Linear layers."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    group_size = spec.weight_group_size
    weights = QuantizationArgs(
        num_bits=spec.bits,
        type="int",
        symmetric=spec.symmetric,
        strategy="group" if group_size else "channel",
        group_size=group_size,
    )
    input_activations = None
    if spec.activation_bits:
        input_activations = QuantizationArgs(
            num_bits=spec.activation_bits,
            type="int",
            symmetric=True,
            strategy="token",
            dynamic=True,
        )
    return QuantizationScheme(targets=["Linear"], weights=weights, input_activations=input_activations)


def ignore_list(spec: QuantSpec) -> list[str]:
    """``spec.ignore`` with ``lm_head`` always present (order kept, duplicates dropped)."""
    return list(dict.fromkeys(["lm_head", *spec.ignore]))


def build_recipe(spec: QuantSpec) -> list:
    """The llmcompressor modifiers for ``spec``, from the method's entry in `qmr.quant.spec.METHODS`."""
    return METHODS.load(spec.method)(spec)


def _common(spec: QuantSpec) -> dict[str, Any]:
    return {"config_groups": {"group_0": quantization_scheme(spec)}, "ignore": ignore_list(spec)}


def rtn(spec: QuantSpec) -> list:
    """Round-to-nearest with a min-max observer."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    return [QuantizationModifier(**_common(spec))]


def gptq(spec: QuantSpec) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier

    return [GPTQModifier(dampening_frac=spec.dampening_frac, **_common(spec))]


def awq(spec: QuantSpec) -> list:
    """AWQ only rescales (smooth layer / s, balance layers x s); the QuantizationModifier after it
    carries the scheme, which AWQ reads to grid-search s against the real quantizer."""
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier

    return [AWQModifier(), QuantizationModifier(**_common(spec))]


def smoothquant(spec: QuantSpec) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier
    from llmcompressor.modifiers.transform import SmoothQuantModifier

    return [
        SmoothQuantModifier(smoothing_strength=spec.smoothing_strength),
        GPTQModifier(dampening_frac=spec.dampening_frac, **_common(spec)),
    ]


def pointer_only(spec: QuantSpec) -> list:
    """``none`` / ``prequantized``: nothing to quantize (the variant is a pointer)."""
    raise ValueError(f"method {spec.method!r} has no llmcompressor recipe; allowed: rtn, gptq, awq, smoothquant")
