"""CUDA paths: generation in bf16, quantization and LoRA training with a GPU present.

Marked `gpu`: skipped where torch sees no CUDA device (CI never has one). On a GPU machine run
``pytest -m gpu`` (plus tests/test_quant.py and tests/test_restore.py, which take the CUDA path of
llmcompressor and trl there).
"""

from __future__ import annotations

import pytest

from qmr.prompts import build_prompt
from qmr.quant.spec import QuantSpec
from qmr.toy.problems import generate_split

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def toy_checkpoints(tmp_path_factory):
    """A briefly trained toy reasoner and its RTN W4 g32 quantization: (fp_dir, quantized_dir)."""
    from qmr.quant.run import quantize_checkpoint
    from qmr.toy.train import ToyModelConfig, train_toy_model

    root = tmp_path_factory.mktemp("gpu")
    cfg = ToyModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, batch_size=16,
                         warmup_steps=5, max_steps=60, train_seconds=0, seed=0)  # fmt: skip
    train_toy_model(cfg, root / "fp", threads=2)
    calibration = [r["question"] + "\n" + r["solution"] for r in generate_split("train", 32, seed=0)]
    spec = QuantSpec(method="rtn", bits=4, group_size=32, symmetric=True)
    quantize_checkpoint(root / "fp", root / "q", spec, calibration, max_length=64, seed=0)
    return root / "fp", root / "q"


def test_cuda_logits_match_cpu(toy_checkpoints):
    """The dequantized model in bf16 on CUDA computes what float32 on CPU computes, to bf16 precision."""
    import torch

    from qmr.quant.load import load_model

    _, qdir = toy_checkpoints
    cpu, tok = load_model(str(qdir), device="cpu", dtype=torch.float32)
    gpu, _ = load_model(str(qdir), device="cuda", dtype=torch.bfloat16)
    assert next(gpu.parameters()).device.type == "cuda"
    text = build_prompt(generate_split("test", 1, seed=0)[0]["question"])
    ids = tok([text], return_tensors="pt")
    with torch.no_grad():
        ref = cpu(**ids).logits
        out = gpu(**{k: v.cuda() for k, v in ids.items()}).logits.float().cpu()
    scale = ref.abs().max()
    assert (out - ref).abs().max() < 0.05 * scale
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_transformers_backend_generates_on_cuda(toy_checkpoints):
    from qmr.generation import GenerateConfig, backend_from_config

    _, qdir = toy_checkpoints
    backend = backend_from_config(GenerateConfig(device="auto", batch_size=8), str(qdir))
    assert backend.device == "cuda"
    prompts = [build_prompt(r["question"]) for r in generate_split("test", 20, seed=0)]
    greedy = backend.generate(prompts, max_new_tokens=40, progress=False)
    assert len(greedy) == 20 and all(len(c) == 1 and 0 < c[0].tokens <= 40 for c in greedy)
    again = backend.generate(prompts, max_new_tokens=40, progress=False)
    assert [c[0].text for c in again] == [c[0].text for c in greedy]  # greedy is repeatable
    sampled = backend.generate(prompts[:4], n=3, temperature=0.8, max_new_tokens=40, seed=1, progress=False)
    assert all(len(c) == 3 for c in sampled)


def test_gptq_on_cuda_stays_on_grid(toy_checkpoints, tmp_path):
    """GPTQ with CUDA present (llmcompressor onloads layers to the GPU): weights on the 3-bit grid."""
    import torch

    from qmr.quant.load import load_model
    from qmr.quant.run import quantize_checkpoint

    fp, _ = toy_checkpoints
    calibration = [r["question"] + "\n" + r["solution"] for r in generate_split("train", 32, seed=0)]
    spec = QuantSpec(method="gptq", bits=3, group_size=32, symmetric=True)
    stats = quantize_checkpoint(fp, tmp_path / "gptq", spec, calibration, max_length=64, seed=0)
    assert stats["linear_compression_ratio"] > 4
    model, _ = load_model(str(tmp_path / "gptq"), device="cpu", dtype=torch.float32)
    w = model.model.layers[0].mlp.up_proj.weight.detach()
    for row in w[:8]:
        for group in row.view(-1, 32):
            assert len(torch.unique(group)) <= 8


def test_cuda_dtype_and_gradient_checkpointing(toy_checkpoints, tmp_path):
    """With CUDA: the quantized checkpoint is written in bf16 (fp16 without bf16 support), restore
    trains a LoRA adapter on a bf16 base with gradient checkpointing, and records the dtype."""
    import json

    from qmr.quant.load import compute_dtype, dtype_name
    from qmr.restore.train import RestoreConfig, _build_trainer, load_base, train_restore

    want = dtype_name(compute_dtype("cuda"))
    _, qdir = toy_checkpoints
    assert json.loads((qdir / "config.json").read_text())["dtype"] == want
    pairs = [{"id": r["id"], "prompt": build_prompt(r["question"]), "chosen": r["solution"], "rejected": "The answer is 0."}
             for r in generate_split("mine", 8, seed=0)]  # fmt: skip
    cfg = RestoreConfig(objective="dpo", max_steps=2, batch_size=2, grad_accum=2, checkpoint_steps=0)
    record = train_restore(qdir, pairs, cfg, tmp_path / "restored", threads=2)
    assert record["trained"] and record["dtype"] == want
    model, tok = load_base(qdir)
    assert str(model.dtype) == f"torch.{want}"
    trainer = _build_trainer(model, tok, pairs, cfg, str(tmp_path / "t"))
    assert trainer.args.gradient_checkpointing and trainer.model.is_gradient_checkpointing
    assert trainer.args.bf16 == (want == "bfloat16") and trainer.args.fp16 == (want == "float16")
