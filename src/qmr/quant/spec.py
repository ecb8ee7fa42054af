"""One quantization variant as declared in params: method, bit-widths, grouping, what to leave alone.

``QuantSpec`` is validated by ``qmr.config.from_dict``; ``check`` adds the rules that span fields
(which method supports which bit-widths, activation quantization only at W8A8, …) so a bad combination
is reported with its dotted key before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from qmr.config import Problem, field
from qmr.registry import Registry

# Quantization methods: name -> the llmcompressor recipe builder ``(QuantSpec) -> [modifiers]``.
# ``none`` and ``prequantized`` quantize nothing: the variant is a pointer (to the fp model / to a
# checkpoint quantized elsewhere), and their builder says so if called.
METHODS = Registry(
    "quantize.variants.<name>.method",
    {
        "none": "qmr.quant.recipes:pointer_only",
        "rtn": "qmr.quant.recipes:rtn",
        "gptq": "qmr.quant.recipes:gptq",
        "awq": "qmr.quant.recipes:awq",
        "smoothquant": "qmr.quant.recipes:smoothquant",
        "prequantized": "qmr.quant.recipes:pointer_only",
    },
)
POINTER_METHODS = ("none", "prequantized")
Method = METHODS.literal()

WEIGHT_BITS = (2, 3, 4, 8)
"""Weight bit-widths the weight-only methods (rtn, gptq, awq) support."""

ACTIVATION_METHODS = ("rtn", "gptq", "smoothquant")
"""Methods that may also quantize input activations (int8, dynamic per token) at W8A8."""


@dataclass
class QuantSpec:
    """One quantization variant: how to turn the full-precision model into a low-bit one."""

    method: Method = field(
        "gptq",
        help="none = full precision (fp); rtn = round-to-nearest; gptq; awq (AWQ scaling + RTN); "
        "smoothquant (SmoothQuant smoothing + GPTQ, W8A8); prequantized = a checkpoint quantized elsewhere",
    )
    bits: int = field(4, help="weight bits: 2, 3, 4 or 8 (smoothquant: 8)")
    group_size: int | None = field(
        128,
        help="weights per quantization group along the input dimension; null or 0 = one scale per output channel",
    )
    symmetric: bool = field(True, help="symmetric weight quantization (no zero-point); false = asymmetric")
    activation_bits: int | None = field(
        None, help="input-activation bits: null = weight-only (A16); 8 = int8 dynamic per-token (W8A8)"
    )
    smoothing_strength: float = field(0.8, help="SmoothQuant alpha in [0, 1] (smoothquant only)")
    dampening_frac: float = field(
        0.01, help="GPTQ Hessian dampening, a fraction of its mean diagonal (gptq, smoothquant)"
    )
    ignore: list[str] = field(
        default_factory=lambda: ["lm_head"],
        help="module names or 're:' patterns left in full precision (lm_head is always kept; embeddings are never quantized)",
    )
    checkpoint: str | None = field(
        None, help="prequantized: hub id or local path of the quantized checkpoint"
    )
    revision: str | None = field(
        None, help="prequantized: hub revision (branch, tag or commit) of the checkpoint"
    )

    @property
    def weight_group_size(self) -> int | None:
        """The group size with 0 normalized to None (per-channel)."""
        return self.group_size or None

    @property
    def is_quantized(self) -> bool:
        return self.method != "none"

    def check(self, key: str = "") -> list[Problem]:
        p = f"{key}." if key else ""
        problems: list[Problem] = []
        m = self.method
        if m == "none":
            return problems
        if m == "prequantized":
            if not self.checkpoint:
                problems.append(
                    Problem(
                        f"{p}checkpoint",
                        self.checkpoint,
                        "a hub id or local path (required for prequantized)",
                    )
                )
            return problems
        if self.checkpoint is not None:
            problems.append(
                Problem(f"{p}checkpoint", self.checkpoint, "null unless method is 'prequantized'")
            )
        if self.group_size is not None and self.group_size < 0:
            problems.append(
                Problem(f"{p}group_size", self.group_size, "a positive integer, or null/0 for per-channel")
            )
        if m == "smoothquant":
            if self.bits != 8:
                problems.append(Problem(f"{p}bits", self.bits, "8 (smoothquant is W8A8)"))
            if self.activation_bits != 8:
                problems.append(
                    Problem(f"{p}activation_bits", self.activation_bits, "8 (smoothquant is W8A8)")
                )
            if not 0.0 <= self.smoothing_strength <= 1.0:
                problems.append(
                    Problem(f"{p}smoothing_strength", self.smoothing_strength, "a number in [0, 1]")
                )
        elif self.bits not in WEIGHT_BITS:
            problems.append(
                Problem(f"{p}bits", self.bits, f"one of {', '.join(map(str, WEIGHT_BITS))} for {m}")
            )
        if self.activation_bits is not None:
            if m not in ACTIVATION_METHODS:
                problems.append(
                    Problem(
                        f"{p}activation_bits",
                        self.activation_bits,
                        f"null (weight-only) for {m}; W8A8 needs method {' or '.join(ACTIVATION_METHODS)}",
                    )
                )
            elif self.activation_bits != 8:
                problems.append(
                    Problem(f"{p}activation_bits", self.activation_bits, "null (weight-only) or 8")
                )
            elif m != "smoothquant" and self.bits != 8:
                problems.append(Problem(f"{p}bits", self.bits, "8 when activation_bits is 8 (W8A8)"))
            if self.activation_bits == 8 and self.weight_group_size is not None:
                problems.append(Problem(f"{p}group_size", self.group_size, "null or 0 (per-channel) at W8A8"))
        if m in ("gptq", "smoothquant") and not 0.0 < self.dampening_frac < 1.0:
            problems.append(Problem(f"{p}dampening_frac", self.dampening_frac, "a number in (0, 1)"))
        for i, name in enumerate(self.ignore):
            if not name:
                problems.append(Problem(f"{p}ignore[{i}]", name, "a module name or 're:' pattern"))
        return problems


def scheme_name(spec: QuantSpec) -> str:
    """Short scheme label: ``W4A16`` (per-channel), ``W2A16-g32``, ``W4A16-g128-asym``, ``W8A8``; ``FP`` for none."""
    if spec.method == "none":
        return "FP"
    name = f"W{spec.bits}A{spec.activation_bits or 16}"
    if spec.weight_group_size:
        name += f"-g{spec.weight_group_size}"
    if not spec.symmetric:
        name += "-asym"
    return name


def variant_slug(spec: QuantSpec) -> str:
    """A default variant name: ``fp``, ``gptq-w4a16g128``, ``rtn-w2a16g32``, ``smoothquant-w8a8``."""
    if spec.method == "none":
        return "fp"
    slug = f"{spec.method}-w{spec.bits}a{spec.activation_bits or 16}"
    if spec.weight_group_size:
        slug += f"g{spec.weight_group_size}"
    if not spec.symmetric:
        slug += "-asym"
    return slug
