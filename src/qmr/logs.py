"""Logging set-up for the CLI: messages to stderr, quiet third-party libraries, API keys redacted."""

from __future__ import annotations

import logging
import os

NOISY = ("transformers", "datasets", "urllib3", "httpx", "httpx2", "openai", "peft", "trl", "compressed_tensors", "filelock", "torch", "llmcompressor", "accelerate")


def setup_logging(verbose: bool = False) -> None:
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
    from qmr.endpoints import RedactingFilter

    for handler in logging.getLogger().handlers:  # API keys never reach a log line, whoever logs it
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
