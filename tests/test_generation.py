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
def test_vllm_without_the_extra_says_which_extra():
    with pytest.raises(MissingExtraError, match=r"pip install 'qmr\[vllm\]'"):
        backend_from_config(GenerateConfig(backend="vllm"), "models/none")


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
    assert set(BACKENDS) == {"transformers", "vllm"}


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
    assert plain == {"model": "models/q", "revision": "abc123", "tensor_parallel_size": 2, "seed": 7,
                     "max_num_seqs": 64, "enable_lora": False, "max_lora_rank": 16}  # fmt: skip
    assert sampling_kwargs(n=1, temperature=0.0, top_p=0.9, max_new_tokens=512, seed=0) == {
        "n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 512, "seed": 0}  # fmt: skip
    assert sampling_kwargs(n=4, temperature=0.7, top_p=0.9, max_new_tokens=64, seed=3)["top_p"] == 0.9
    assert lora_request_kwargs("models/restored/m/v") == {"lora_name": "restore", "lora_int_id": 1, "lora_path": "models/restored/m/v"}


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
