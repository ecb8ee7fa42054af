"""qmr: quantization meets reasoning — measure, locate and restore low-bit LLM math reasoning."""

__version__ = "0.1.0"
