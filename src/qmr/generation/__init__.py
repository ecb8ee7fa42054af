"""Generation backends, registered lazily by name (lm-evaluation-harness style).

``get_backend("transformers", model_path, ...)`` imports the backend module only when selected, so a
missing optional package (vLLM, for the in-process backend) is reported in one line instead of an
ImportError at start-up. vLLM is not a `qmr` extra: every release pins compressed-tensors/transformers
versions that conflict with qmr's llmcompressor pins; the `openai` backend with ``vllm serve`` in its
own virtualenv is the way to use it (README: "Evaluating a served deployment").
"""

from __future__ import annotations

from qmr.errors import UserError
from qmr.generation.base import BACKENDS, EXTRAS, Backend, Completion, GenerateConfig


class MissingExtraError(UserError, RuntimeError):
    pass


def missing_package_message(backend: str, package: str) -> str:
    return (f"generate.backend: got {backend!r} but {package} is not installed in this environment; allowed: 'transformers', or "
            f"'openai' with `{package} serve` in its own virtualenv (generate.server.command; README: \"Evaluating a served "
            f"deployment\"), or install {package} here yourself (it is no qmr extra: its pins conflict with llmcompressor's)")


def get_backend(name: str, model_path: str, **kwargs) -> Backend:
    import importlib.util

    BACKENDS.check(name)
    extra = EXTRAS.get(name)
    if extra and importlib.util.find_spec(extra) is None:  # backends import their library lazily
        raise MissingExtraError(missing_package_message(name, extra))
    try:
        cls = BACKENDS.load(name)
    except ImportError as exc:
        if extra:
            raise MissingExtraError(f"{missing_package_message(name, extra)} ({exc})") from None
        raise
    return cls(model_path, **kwargs)


def backend_from_config(cfg: GenerateConfig, model_path: str, adapter: str | None = None, *, model: str = "", variant: str = "") -> Backend:
    """The backend `cfg` names, built with the options that backend takes. ``model`` and ``variant``
    name what ``model_path`` holds (the openai backend maps them to a served model name)."""
    kwargs: dict = {"device": cfg.device, "batch_size": cfg.batch_size, "adapter": adapter}
    if cfg.backend == "vllm":
        kwargs.update(tensor_parallel_size=cfg.tensor_parallel_size, max_model_len=cfg.max_model_len, max_new_tokens=cfg.max_new_tokens)
    elif cfg.backend == "openai":
        kwargs.update(server=cfg.server, api=cfg.api, model=model, variant=variant, max_new_tokens=cfg.max_new_tokens,
                      max_model_len=cfg.max_model_len, tensor_parallel_size=cfg.tensor_parallel_size)  # fmt: skip
    return get_backend(cfg.backend, model_path, **kwargs)


def close_backend(backend) -> None:
    """Release what a backend holds outside this process (the openai backend's managed server)."""
    close = getattr(backend, "close", None)
    if close is not None:
        close()


__all__ = ["Backend", "Completion", "GenerateConfig", "get_backend", "backend_from_config", "close_backend", "MissingExtraError", "BACKENDS"]


def resumable_sampler(params, model: str, variant: str, partial_dir):
    """``(backend, generate)`` for the checkpoint of ``variant`` (models/quantized/<model>/<variant>)
    through the configured backend; ``generate(prompts, progress=False, **sampling)`` appends each
    finished batch to ``partial_dir/gen-<prompts digest>.partial.jsonl``, so a killed stage resumes with
    identical completions. The caller removes those files once its output is written and closes the
    backend (`close_backend`). Used for the silver stage's fp teacher and the rollout judge's policy."""
    import hashlib
    import json

    from qmr import paths
    from qmr.checkpoints import checkpoint_identity
    from qmr.generation.resume import resumable_generate

    g = params.generate
    path = str(paths.quantized_model(model, variant))
    backend = backend_from_config(g, path, model=model, variant=variant)
    identity = {"batch_size": g.batch_size, "threads": params.threads, "checkpoint": checkpoint_identity(path)}

    def generate(prompts, progress=False, **sampling):
        digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:16]
        return resumable_generate(backend, prompts, sampling, partial_dir / f"gen-{digest}.partial.jsonl", identity, progress)

    return backend, generate
