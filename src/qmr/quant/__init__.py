"""Quantization: recipe specs, llmcompressor runs, and loading (compressed) checkpoints.

Importing this package is instant; torch, transformers and llmcompressor load inside the functions.
"""

from qmr.quant.spec import QuantSpec, scheme_name, variant_slug

__all__ = ["QuantSpec", "scheme_name", "variant_slug"]
