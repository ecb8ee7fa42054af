"""Backend registry: names, the optional vLLM extra, and the options each backend takes."""

from __future__ import annotations

import importlib.util
import json

import pytest

from qmr.errors import UserError
from qmr.generation import BACKENDS, GenerateConfig, MissingExtraError, backend_from_config, get_backend


def test_unknown_backend_names_the_key_and_the_choices():
    with pytest.raises(UserError, match=r"generate.backend: got 'tgi'; allowed: transformers, vllm"):
        get_backend("tgi", "models/none")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_not_installed_points_to_the_openai_backend():
    """vLLM cannot be a qmr extra (its pins conflict with llmcompressor's): the message says what to do instead."""
    with pytest.raises(MissingExtraError, match=r"generate.backend: got 'vllm' but vllm is not installed .*'openai' with `vllm serve` in its own virtualenv"):
        backend_from_config(GenerateConfig(backend="vllm"), "models/none")


def test_pyproject_has_no_vllm_extra():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert "vllm" not in project["optional-dependencies"]


def test_vllm_on_cpu_is_a_params_problem():
    problems = GenerateConfig(backend="vllm", device="cpu").check("generate")
    assert [p.key for p in problems] == ["generate.device"]
    assert GenerateConfig(backend="transformers", device="cpu").check("generate") == []


def test_backend_from_config_passes_tensor_parallel_only_to_vllm(monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, model_path, **kwargs):
            seen[model_path] = kwargs

    import qmr.generation.hf as hf

    monkeypatch.setattr(hf, "TransformersBackend", Recorder)
    backend_from_config(GenerateConfig(batch_size=7, device="cpu"), "m", adapter="a")
    assert seen["m"] == {"device": "cpu", "batch_size": 7, "adapter": "a"}
    assert set(BACKENDS) == {"transformers", "vllm", "openai"}


def test_vllm_lora_rank_is_read_from_the_adapter(tmp_path):
    # the module imports vllm lazily, inside the backend, so its helpers load without the extra
    from qmr.generation.vllm_backend import _lora_rank

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    assert _lora_rank(str(tmp_path)) == 32
    assert _lora_rank(str(tmp_path / "missing")) == 16


def test_vllm_request_building():
    """What the backend hands vLLM: engine, sampling and LoRA arguments (vLLM itself needs a GPU)."""
    from qmr.generation.vllm_backend import engine_kwargs, lora_request_kwargs, sampling_kwargs

    plain = engine_kwargs("models/q", "abc123", adapter=None, batch_size=64, tensor_parallel_size=2, seed=7)
    assert plain == {"model": "models/q", "revision": "abc123", "dtype": "bfloat16", "max_model_len": 4096, "tensor_parallel_size": 2,
                     "seed": 7, "max_num_seqs": 64, "enable_lora": False, "max_lora_rank": 16}  # fmt: skip
    assert sampling_kwargs(n=1, temperature=0.0, top_p=0.9, max_new_tokens=512, seed=0) == {
        "n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 512, "seed": 0}  # fmt: skip
    assert sampling_kwargs(n=4, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=3)["top_p"] == 0.9
    assert lora_request_kwargs("models/restored/m/v") == {"lora_name": "restore-1", "lora_int_id": 1, "lora_path": "models/restored/m/v"}


def test_vllm_adapter_wiring(tmp_path):
    from qmr.generation.vllm_backend import engine_kwargs

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 64}))
    kw = engine_kwargs("models/q", None, adapter=str(tmp_path), batch_size=8, tensor_parallel_size=1, seed=0)
    assert kw["enable_lora"] is True and kw["max_lora_rank"] == 64


def test_vllm_outputs_become_completions_in_prompt_order():
    from types import SimpleNamespace as NS

    from qmr.generation.vllm_backend import completions_from_outputs

    outputs = [
        NS(outputs=[NS(text=" 2 + 2 = 4\nThe answer is 4. ", token_ids=[1, 2, 3]), NS(text="x", token_ids=[9])]),
        NS(outputs=[NS(text="The answer is 7.", token_ids=[4, 5, 6, 7])]),
    ]
    done = completions_from_outputs(outputs, seconds=8.0)
    assert [[c.text for c in cs] for cs in done] == [["2 + 2 = 4\nThe answer is 4.", "x"], ["The answer is 7."]]
    assert [c.tokens for c in done[0]] == [3, 1] and sum(c.seconds for cs in done for c in cs) == 8.0


def test_vllm_max_lora_rank_is_rounded_up_to_an_allowed_value(tmp_path):
    """vLLM accepts only 1, 8, 16, 32, 64, 128, 256, 320, 512 as max_lora_rank (issue 15: the rank was passed verbatim)."""
    from qmr.generation.server import allowed_lora_rank
    from qmr.generation.vllm_backend import engine_kwargs

    assert [allowed_lora_rank(r) for r in (1, 2, 8, 9, 24, 64, 100, 300, 320, 512)] == [1, 8, 8, 16, 32, 64, 128, 320, 320, 512]
    with pytest.raises(UserError, match=r"restore.lora_r: got 600; allowed: at most 512"):
        allowed_lora_rank(600)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 24}))
    assert engine_kwargs("q", None, adapter=str(tmp_path), batch_size=8, tensor_parallel_size=1, seed=0)["max_lora_rank"] == 32


def test_vllm_max_model_len_is_explicit_and_capped_by_the_model(tmp_path):
    from qmr.generation.server import derive_max_model_len

    assert derive_max_model_len(0, 96) == 4096 and derive_max_model_len(0, 4096) == 6144
    assert derive_max_model_len(8192, 96) == 8192  # generate.max_model_len wins
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    assert derive_max_model_len(0, 96, str(tmp_path)) == 2048  # never beyond the model's own context
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 131072}))
    assert derive_max_model_len(0, 2048, str(tmp_path)) == 4096  # Llama-3.1: not 131k per sequence
    assert GenerateConfig(max_model_len=-1).max_model_len == -1  # (the range is checked at load: tests/test_params)


def test_vllm_engine_is_built_once_per_process_and_reused_across_adapters(tmp_path):
    """One engine per process: the same base again (another benchmark, another adapter) reuses it;
    an adapter needing LoRA slots the engine lacks, or another base, replaces it (issue 15)."""
    from qmr.generation import vllm_backend as vb

    built = []

    def factory(**kwargs):
        built.append(kwargs)
        return f"engine{len(built)}"

    a16, a64 = tmp_path / "a16", tmp_path / "a64"
    for d, r in ((a16, 16), (a64, 64)):
        d.mkdir()
        (d / "adapter_config.json").write_text(json.dumps({"r": r}))
    kw = lambda adapter=None, path="models/q": vb.engine_kwargs(path, None, adapter=adapter, batch_size=8,  # noqa: E731
                                                                tensor_parallel_size=1, seed=0)  # fmt: skip
    vb.release_engine()
    try:
        assert vb.engine_for(kw(str(a64)), factory) == "engine1"
        assert vb.engine_for(kw(str(a16)), factory) == "engine1"  # same base, another adapter: LoRA slots suffice
        assert vb.engine_for(kw(), factory) == "engine1"  # the base alone: the LoRA engine serves it
        assert len(built) == 1 and built[0]["enable_lora"] and built[0]["max_lora_rank"] == 64
        assert vb.lora_id(str(a64)) == 1 and vb.lora_id(str(a16)) == 2 and vb.lora_id(str(a64)) == 1
        assert vb.engine_for(kw(path="models/other"), factory) == "engine2"  # another base: replaced
        assert vb.engine_for(kw(str(a16), path="models/other"), factory) == "engine3"  # needs LoRA it lacks
        assert vb.engine_for(kw(str(a16), path="models/other"), factory) == "engine3"
        assert [b["model"] for b in built] == ["models/q", "models/other", "models/other"]
    finally:
        vb.release_engine()


def test_vllm_chat_prompts_get_no_second_bos():
    from qmr.generation.vllm_backend import prompt_inputs

    class Tok:  # the two things prompt_inputs uses of a tokenizer
        bos_token = "<s>"

        def __call__(self, text, add_special_tokens=True):
            ids = [ord(c) for c in text]
            return {"input_ids": ([1] if add_special_tokens else []) + ids}

    assert prompt_inputs(["<s>hi", "plain"], Tok()) == [{"prompt_token_ids": [ord(c) for c in "<s>hi"]}, "plain"]
    assert prompt_inputs(["x"], None) == ["x"]
