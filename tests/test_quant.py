"""qmr.quant: spec validation, llmcompressor recipes on a tiny random Llama, compressed-tensors loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qmr.config import from_dict
from qmr.errors import UserError
from qmr.quant.spec import QuantSpec, scheme_name, variant_slug

# ---------------------------------------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("data", "bad_keys"),
    [
        ({"method": "gptq", "bits": 4, "group_size": 128}, []),
        ({"method": "gptq", "bits": 2, "group_size": 32, "symmetric": False}, []),
        ({"method": "rtn", "bits": 3, "group_size": None}, []),
        ({"method": "rtn", "bits": 3, "group_size": 0}, []),
        ({"method": "awq", "bits": 4, "group_size": 128, "symmetric": False}, []),
        ({"method": "smoothquant", "bits": 8, "group_size": None, "activation_bits": 8}, []),
        ({"method": "rtn", "bits": 8, "group_size": None, "activation_bits": 8}, []),
        ({"method": "none"}, []),
        ({"method": "none", "bits": 5}, []),  # ignored for full precision
        ({"method": "prequantized", "checkpoint": "org/model-w4"}, []),
        ({"method": "prequantized"}, ["checkpoint"]),
        ({"method": "gptq", "bits": 5}, ["bits"]),
        ({"method": "awq", "bits": 16}, ["bits"]),
        ({"method": "gptq", "group_size": -32}, ["group_size"]),
        ({"method": "smoothquant", "bits": 4, "activation_bits": 8, "group_size": None}, ["bits"]),
        ({"method": "smoothquant", "bits": 8, "group_size": None}, ["activation_bits"]),
        ({"method": "smoothquant", "bits": 8, "activation_bits": 8, "group_size": 64}, ["group_size"]),
        (
            {
                "method": "smoothquant",
                "bits": 8,
                "activation_bits": 8,
                "group_size": None,
                "smoothing_strength": 1.5,
            },
            ["smoothing_strength"],
        ),
        ({"method": "awq", "bits": 8, "group_size": None, "activation_bits": 8}, ["activation_bits"]),
        ({"method": "gptq", "bits": 4, "group_size": None, "activation_bits": 8}, ["bits"]),
        ({"method": "rtn", "bits": 8, "group_size": None, "activation_bits": 4}, ["activation_bits"]),
        ({"method": "gptq", "dampening_frac": 0.0}, ["dampening_frac"]),
        ({"method": "gptq", "checkpoint": "x/y"}, ["checkpoint"]),
        ({"method": "fp8"}, ["method"]),
        ({"method": "gptq", "bitz": 4}, ["bitz"]),
    ],
)
def test_spec_validation(data, bad_keys):
    problems: list = []
    from_dict(QuantSpec, data, "quantize.variants.v", problems)
    assert sorted({p.key for p in problems}) == sorted(f"quantize.variants.v.{k}" for k in bad_keys), problems
    for p in problems:
        assert p.allowed and str(p).startswith("quantize.variants.v.")


@pytest.mark.parametrize(
    ("spec", "name", "slug"),
    [
        (QuantSpec(method="gptq", bits=4, group_size=None), "W4A16", "gptq-w4a16"),
        (QuantSpec(method="rtn", bits=2, group_size=32), "W2A16-g32", "rtn-w2a16g32"),
        (
            QuantSpec(method="awq", bits=4, group_size=128, symmetric=False),
            "W4A16-g128-asym",
            "awq-w4a16g128-asym",
        ),
        (
            QuantSpec(method="smoothquant", bits=8, group_size=None, activation_bits=8),
            "W8A8",
            "smoothquant-w8a8",
        ),
        (QuantSpec(method="none"), "FP", "fp"),
    ],
)
def test_scheme_name(spec, name, slug):
    assert scheme_name(spec) == name
    assert variant_slug(spec) == slug


def test_build_recipe_modifiers():
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier, SmoothQuantModifier

    from qmr.quant.recipes import build_recipe

    kinds = {
        "rtn": [QuantizationModifier],
        "gptq": [GPTQModifier],
        "awq": [AWQModifier, QuantizationModifier],
    }
    for method, types in kinds.items():
        recipe = build_recipe(QuantSpec(method=method, bits=3, group_size=32, symmetric=False, ignore=["x"]))
        assert [type(m) for m in recipe] == types
        scheme = recipe[-1].config_groups["group_0"]
        assert (scheme.weights.num_bits, scheme.weights.group_size, scheme.weights.symmetric) == (
            3,
            32,
            False,
        )
        assert scheme.input_activations is None
        assert recipe[-1].ignore == ["lm_head", "x"]
    sq = build_recipe(
        QuantSpec(method="smoothquant", bits=8, group_size=None, activation_bits=8, smoothing_strength=0.6)
    )
    assert [type(m) for m in sq] == [SmoothQuantModifier, GPTQModifier]
    assert sq[0].smoothing_strength == 0.6
    scheme = sq[1].config_groups["group_0"]
    assert scheme.weights.strategy == "channel" and scheme.weights.num_bits == 8
    acts = scheme.input_activations
    assert (acts.num_bits, acts.strategy, acts.dynamic, acts.symmetric) == (8, "token", True, True)
    with pytest.raises(ValueError, match="none"):
        build_recipe(QuantSpec(method="none"))


# ------------------------------------------------------------------------------------ tiny model

CHARS = list("0123456789+-*=. abcdefghijklmnopqrstuvwxyz")


def _tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *CHARS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


CALIBRATION = [f"{a} + {b} = {a + b}. the answer is {a + b}." for a in range(4) for b in range(4)]


@pytest.fixture(scope="module")
def fp_dir(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    # One thread: these models are tiny, and on a shared CPU more threads make llmcompressor's many
    # small ops 10x slower (AWQ: ~2 s with 1 thread, ~30 s with 2 under load).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tok = _tokenizer()
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=len(tok),
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    out = tmp_path_factory.mktemp("fp")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    yield out
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def quantized(fp_dir, tmp_path_factory):
    """Quantize once per spec per module run: spec -> (out_dir, stats)."""
    from qmr.quant.run import quantize_checkpoint

    cache: dict = {}

    def get(spec: QuantSpec):
        key = repr(spec)
        if key not in cache:
            out = tmp_path_factory.mktemp("q") / variant_slug(spec)
            cache[key] = (out, quantize_checkpoint(fp_dir, out, spec, CALIBRATION, max_length=32, seed=0))
        return cache[key]

    return get


def _fp_state(fp_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(fp_dir / "model.safetensors"))


def _assert_on_grid(module, bits: int, symmetric: bool) -> None:
    """Every row-group of the dequantized weight is scale * (q - zp) with integer q in the bits range."""
    import torch

    args = module.quantization_scheme.weights
    assert args.num_bits == bits and args.symmetric == symmetric
    w = module.weight.detach().to(torch.float64)
    out_f, in_f = w.shape
    gs = args.group_size or in_f
    groups = w.reshape(out_f, in_f // gs, gs)
    scale = module.weight_scale.detach().to(torch.float64).reshape(out_f, -1, 1)
    zp = getattr(module, "weight_zero_point", None)
    zp = torch.zeros_like(scale) if zp is None else zp.detach().to(torch.float64).reshape(out_f, -1, 1)
    if symmetric:
        assert torch.all(zp == 0)
    q = groups / scale + zp
    assert torch.allclose(q, q.round(), atol=1e-3), (q - q.round()).abs().max()
    assert q.round().min() >= -(2 ** (bits - 1)) and q.round().max() <= 2 ** (bits - 1) - 1
    for r in range(out_f):
        for g in range(in_f // gs):
            assert len(torch.unique(groups[r, g])) <= 2**bits


def _assert_recipe_reloads(out: Path, modifiers: list[str]) -> None:
    """recipe.yaml is plain YAML, and llmcompressor rebuilds the same modifiers from it."""
    import yaml
    from llmcompressor.recipe import Recipe

    data = yaml.safe_load((out / "recipe.yaml").read_text())
    stage = next(iter(data.values()))
    assert list(next(iter(stage.values()))) == modifiers
    recipe = Recipe.create_instance(str(out / "recipe.yaml"))
    assert [type(m).__name__ for m in recipe.modifiers] == modifiers


WEIGHT_ONLY = [
    QuantSpec(method="rtn", bits=4, group_size=32),
    QuantSpec(method="rtn", bits=2, group_size=32, symmetric=False),
    QuantSpec(method="gptq", bits=4, group_size=32),
    QuantSpec(method="gptq", bits=2, group_size=32, symmetric=False),
    QuantSpec(method="gptq", bits=3, group_size=None),
    QuantSpec(method="awq", bits=4, group_size=32, symmetric=False),
    QuantSpec(method="awq", bits=2, group_size=32),
]


@pytest.mark.parametrize("spec", WEIGHT_ONLY, ids=variant_slug)
def test_weight_only_quantization(spec, fp_dir, quantized):
    import torch

    from qmr.quant.load import is_activation_quantized, load_model, quantized_modules

    out, stats = quantized(spec)
    assert (out / "tokenizer.json").is_file()
    _assert_recipe_reloads(
        out,
        {"rtn": ["QuantizationModifier"], "gptq": ["GPTQModifier"]}.get(
            spec.method, ["AWQModifier", "QuantizationModifier"]
        ),
    )
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "pack-quantized"

    model, tok = load_model(out)
    fp = _fp_state(fp_dir)
    modules = quantized_modules(model)
    assert len(modules) == 2 * 7 == stats["quantized_layers"]
    assert not is_activation_quantized(model)
    changed = 0
    for name, module in modules.items():
        assert isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.float32
        _assert_on_grid(module, spec.bits, spec.symmetric)
        changed += not torch.equal(module.weight, fp[f"{name}.weight"])
    assert changed == len(modules)
    assert "lm_head" not in modules and torch.equal(model.lm_head.weight, fp["lm_head.weight"])
    assert torch.equal(model.model.embed_tokens.weight, fp["model.embed_tokens.weight"])

    assert stats["method"] == spec.method and stats["scheme"] == scheme_name(spec)
    assert 0 < stats["disk_bytes"] < stats["fp_disk_bytes"]
    assert 0 < stats["quantized_linear_bytes"] < stats["fp16_linear_bytes"]
    expected = 16 / (
        spec.bits
        + 16 / (spec.group_size or 64)
        + (0 if spec.symmetric else spec.bits / (spec.group_size or 64))
    )
    # down_proj has 128 inputs, the rest 64: only the per-channel case depends on the layer mix
    if spec.group_size:
        assert stats["linear_compression_ratio"] == pytest.approx(expected, rel=1e-3)
    assert stats["seconds"] > 0 and stats["calibration_samples"] == len(CALIBRATION)

    ids = tok("1 + 2 = 3.", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert torch.isfinite(logits).all()


W8A8 = QuantSpec(method="smoothquant", bits=8, group_size=None, activation_bits=8, smoothing_strength=0.8)


def _per_token_int8(x):
    import torch

    # compressed-tensors: symmetric scale = max|x| / ((q_max - q_min) / 2) = max|x| / 127.5
    scale = x.abs().amax(dim=-1, keepdim=True) / 127.5
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.clamp(torch.round(x / scale), -128, 127) * scale


def test_smoothquant_w8a8_fake_quantizes_activations(fp_dir, quantized):
    """A loaded W8A8 checkpoint fake-quantizes every quantized Linear's input, int8 per token, in forward."""
    import torch

    from qmr.quant.load import is_activation_quantized, load_model, quantized_modules

    out, stats = quantized(W8A8)
    _assert_recipe_reloads(out, ["SmoothQuantModifier", "GPTQModifier"])
    assert stats["quantized_layers"] == 14 and stats["disk_bytes"] < stats["fp_disk_bytes"]
    model, tok = load_model(out)
    assert is_activation_quantized(model)
    fp = _fp_state(fp_dir)
    modules = quantized_modules(model)
    for name, module in modules.items():
        _assert_on_grid(module, 8, True)
        assert not torch.equal(module.weight, fp[f"{name}.weight"])
    assert torch.equal(model.lm_head.weight, fp["lm_head.weight"])
    assert torch.equal(model.model.embed_tokens.weight, fp["model.embed_tokens.weight"])

    q_proj = model.model.layers[0].self_attn.q_proj
    seen = {}
    handle = q_proj.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    ids = tok(["1 + 2 = 3. the answer is 3."], return_tensors="pt")
    with torch.no_grad():
        on = model(**ids).logits
    handle.remove()
    x, y = seen["x"], seen["y"]
    expected = torch.nn.functional.linear(_per_token_int8(x), q_proj.weight)
    unquantized = torch.nn.functional.linear(x, q_proj.weight)
    assert torch.allclose(y, expected, atol=1e-5)
    assert not torch.allclose(y, unquantized, atol=1e-5)

    for module in modules.values():
        module.quantization_enabled = False
    with torch.no_grad():
        off = model(**ids).logits
    assert not torch.allclose(on, off)

    # re-enabling is what load_model guarantees
    from qmr.quant.load import ensure_activation_quantization

    assert ensure_activation_quantization(model) == len(modules)
    with torch.no_grad():
        assert torch.allclose(model(**ids).logits, on, atol=1e-6)


def test_w8a8_gradients_pass_activation_quantization(quantized):
    """compressed-tensors' fake-quant runs under no_grad; load_model's forward passes gradients (STE)."""
    import torch

    from qmr.quant.load import load_model

    out, _ = quantized(W8A8)
    model, _ = load_model(out)
    q_proj = model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, q_proj.in_features, requires_grad=True)
    y = q_proj(x)
    with torch.no_grad():
        assert torch.allclose(y, torch.nn.functional.linear(_per_token_int8(x), q_proj.weight), atol=1e-5)
    y.sum().backward()
    expected = torch.ones(2, 5, q_proj.out_features) @ q_proj.weight
    assert torch.allclose(x.grad, expected, atol=1e-5)


def test_packed_and_dequantized_loading_agree(quantized):
    import torch

    from qmr.quant.load import load_model

    for spec in (WEIGHT_ONLY[3], W8A8):
        out, _ = quantized(spec)
        a, tok = load_model(out, dequantize=True)
        b, _ = load_model(out, dequantize=False)
        ids = tok(["2 * 3 = 6."], return_tensors="pt")
        with torch.no_grad():
            assert torch.allclose(a(**ids).logits, b(**ids).logits, atol=1e-5)


def test_pointer_variants_and_loading(fp_dir, quantized, tmp_path, monkeypatch):
    import torch

    from qmr.checkpoints import resolve_model_path, write_pointer
    from qmr.quant.load import load_model
    from qmr.quant.run import checkpoint_bytes, quantize_checkpoint

    monkeypatch.chdir(tmp_path)
    fp_stats = quantize_checkpoint(fp_dir, tmp_path / "fp", QuantSpec(method="none"), CALIBRATION)
    assert json.loads((tmp_path / "fp" / "qmr_model.json").read_text())["path"] == str(fp_dir)
    assert fp_stats["disk_bytes"] == fp_stats["fp_disk_bytes"] > 0
    assert checkpoint_bytes(tmp_path / "fp")["disk_bytes"] == fp_stats["disk_bytes"]
    model, _ = load_model(tmp_path / "fp")
    assert torch.equal(model.lm_head.weight, _fp_state(fp_dir)["lm_head.weight"])

    gptq_dir, _ = quantized(WEIGHT_ONLY[2])
    (tmp_path / "rel").mkdir()
    write_pointer(tmp_path / "rel", "qdir", None)  # relative: resolved against the working directory
    (tmp_path / "qdir").symlink_to(gptq_dir)
    assert resolve_model_path(tmp_path / "rel") == ("qdir", None)
    pre = QuantSpec(method="prequantized", checkpoint=str(tmp_path / "rel"))
    stats = quantize_checkpoint(fp_dir, tmp_path / "pre", pre, CALIBRATION)
    assert resolve_model_path(tmp_path / "pre") == ("qdir", None)
    assert 0 < stats["disk_bytes"] < stats["fp_disk_bytes"]
    model, _ = load_model(tmp_path / "pre")
    assert model.model.layers[0].mlp.up_proj.quantization_scheme.weights.num_bits == 4

    with pytest.raises(UserError, match="no quantization_config"):
        quantize_checkpoint(
            fp_dir, tmp_path / "bad", QuantSpec(method="prequantized", checkpoint=str(fp_dir)), []
        )
    with pytest.raises(UserError, match="already quantized"):
        quantize_checkpoint(
            gptq_dir, tmp_path / "twice", QuantSpec(method="rtn", bits=4, group_size=32), CALIBRATION
        )


def test_cpu_patch_is_scoped(quantized):
    from llmcompressor.pipelines.cache import IntermediatesCache

    before = IntermediatesCache.pin_memory
    quantized(WEIGHT_ONLY[5])  # awq ran (or was cached) with the patch
    assert IntermediatesCache.pin_memory is before


@pytest.mark.parametrize("spec", WEIGHT_ONLY[:2], ids=variant_slug)
def test_storage_formula_matches_the_checkpoint(spec, fp_dir, quantized):
    """`qmr bench`'s size arithmetic for paper-sized models equals what quantize measured here."""
    import torch
    from transformers import AutoModelForCausalLM

    from qmr.bench import quantized_linear_bytes

    _, stats = quantized(spec)
    model = AutoModelForCausalLM.from_pretrained(fp_dir)
    shapes = [tuple(m.weight.shape) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    assert quantized_linear_bytes(shapes, spec.bits, spec.group_size, spec.symmetric) == stats["quantized_linear_bytes"]


def test_calibration_texts_follow_the_model_prompt_style(tmp_path):
    """A chat model is calibrated on its chat template (what it sees at generation), the toy on plain."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from qmr.checkpoints import write_pointer
    from qmr.quant.calibration import calibration_texts

    raw = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    tok.save_pretrained(tmp_path / "chat")
    write_pointer(tmp_path / "ptr", str(tmp_path / "chat"))  # a pointer, as models/aligned/<m> may be
    records = [{"question": "What is 2 + 3?", "solution": "2 + 3 = 5\nThe answer is 5.", "answer": "5"}]
    (chat,) = calibration_texts(records, "chat", str(tmp_path / "ptr"))
    assert chat.startswith("<|user|>Solve the problem step by step.") and chat.endswith("<|assistant|>2 + 3 = 5\nThe answer is 5.")
    (plain,) = calibration_texts(records)
    assert plain == "Question: What is 2 + 3?\nAnswer:\n2 + 3 = 5\nThe answer is 5."


def test_the_quantize_stage_keeps_wall_clock_out_of_the_checkpoint(tmp_path, monkeypatch):
    """quantize.json is inside the checkpoint DVC hashes: with seconds in it, every re-run changed the
    output and re-ran all generation after it. Timing goes to metrics/speed/quantize/<model>/<variant>.json."""
    import json

    from qmr.params import load_params
    from qmr.stages import quantize

    repo = Path(__file__).resolve().parents[1]
    params = load_params(repo / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "aligned" / "toy").mkdir(parents=True)
    (tmp_path / "models" / "aligned" / "toy" / "config.json").write_text("{}")
    quantize.run(params, "toy", "fp")
    stats = json.loads((tmp_path / "models" / "quantized" / "toy" / "fp" / "quantize.json").read_text())
    assert not any("seconds" in k for k in stats), stats
    speed = json.loads((tmp_path / "metrics" / "speed" / "quantize" / "toy" / "fp.json").read_text())
    assert "seconds" in speed
