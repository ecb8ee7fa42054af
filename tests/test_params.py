"""params.yaml validation: every bad input -> exit 2, one line naming the key, the value and what is allowed."""

import copy

import pytest
import yaml
from click.testing import CliRunner

from qmr.cli import main


def _set(d: dict, dotted, value):
    keys = list(dotted) if isinstance(dotted, tuple) else dotted.split(".")  # a tuple for keys with dots
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    if value is _DELETE:
        d.pop(keys[-1], None)
    else:
        d[keys[-1]] = value


_DELETE = object()

BAD = [
    # (mutation key, value, the key the message must name, a fragment of what is allowed)
    ("bogus_section", 1, "bogus_section", "a known key"),
    ("seed", "zero", "seed", "an integer"),
    ("threads", 0, "threads", ">= 1"),
    ("quantize.variants.gptq-w4a16.method", "gptq2", "quantize.variants.gptq-w4a16.method", "'gptq'"),
    ("quantize.variants.gptq-w4a16.bits", 5, "quantize.variants.gptq-w4a16.bits", "2"),
    ("quantize.variants.smoothquant-w8a8.bits", 4, "quantize.variants.smoothquant-w8a8", "8"),
    ("quantize.variants.gptq-w4a16.group_size", -32, "quantize.variants.gptq-w4a16.group_size", "positive"),
    ("quantize.variants.rtn-w2g32.colour", "red", "quantize.variants.rtn-w2g32.colour", "a known key"),
    ("quantize.calibration.benchmark", "test", "quantize.calibration.benchmark", "role train"),
    ("benchmarks.test.size", -5, "benchmarks.test.size", ">"),
    ("benchmarks.test.split", "validation", "benchmarks.test.split", "train, mine, test"),
    ("benchmarks.test.role", "holdout", "benchmarks.test.role", "'eval'"),
    ("benchmarks.gsm8k", {"source": "local", "path": "/nonexistent/gsm8k.jsonl"}, "benchmarks.gsm8k.path", "not found"),
    ("generate.benchmarks", ["test", "nope"], "generate.benchmarks[1]", "a key of benchmarks"),
    ("generate.max_new_tokens", 0, "generate.max_new_tokens", ">= 1"),
    ("generate.temperature", "hot", "generate.temperature", "a number"),
    ("generate.backend", "vllm", "generate.backend", "its pins conflict with llmcompressor's"),
    ("models.toy.source", "s3", "models.toy.source", "'toy'"),
    ("models.big", {"source": "hub", "hub_id": "Qwen/Qwen2.5-0.5B-Instruct"}, "models.big.revision", "pinned revision"),
    ("base.toy.architecture", "gpt2", "base.toy.architecture", "'llama'"),
    ("base.toy.hidden_size", 96, "quantize.variants.gptq-w4a16.group_size", "divisor"),
    ("evaluate.reference", "gptq-w4a16", "evaluate.reference", "method 'none'"),
    ("align.method", "full_ft", "align.method", "'lora_sft'"),
    ("align.data", "test", "align.data", "role train"),
    ("align.eval_benchmark", "gsm8k", "align.eval_benchmark", "a key of benchmarks"),
    ("align.lora_r", 0, "align.lora_r", ">= 1"),
    ("base.toy.style", "poetry", "base.toy.style", "'freeform'"),
    ("restore.checkpoint_steps", -1, "restore.checkpoint_steps", ">= 0"),
    # issue 14 (hardening, round two): names that become paths, duplicates, silent misreadings, ranges
    (("benchmarks", "../../../escaped"), {"source": "toy", "split": "test", "size": 5}, "benchmarks.../../../escaped", "file name"),
    ("judge.judges.X/y", {"kind": "reference"}, "judge.judges.X/y", "lower-case letters"),
    (("models", "a..b"), {"source": "toy"}, "models.a..b", "no '..'"),
    ("generate.benchmarks", ["test", "control", "test", "mine"], "generate.benchmarks", "listed more than once: test"),
    ("judge.variants", ["rtn-w2g32", "rtn-w2g32"], "judge.variants", "each name once"),
    ("quantize.variants.rtn-w2g128", None, "quantize.variants.rtn-w2g128", "a mapping with keys"),
    ("restore", None, "restore", "null is not a mapping"),
    ("vote", _DELETE, "vote", "the section, as in the default params.yaml"),
    ("quantize.calibration.samples", -5, "quantize.calibration.samples", ">= 1"),
    ("quantize.calibration.max_length", 0, "quantize.calibration.max_length", ">= 8"),
    ("seed", -1, "seed", ">= 0 and <= 4294967295"),
    ("seed", 2**32, "seed", "<= 4294967295"),
    ("base.toy.seed", -3, "base.toy.seed", ">= 0"),
    ("restore.seed", 2**40, "restore.seed", "<= 4294967295"),
    ("threads", 1000000, "threads", "<= 256"),
    ("benchmarks.test.size", 10**9, "benchmarks.test.size", "1 to 50000"),
    ("judge.judges", {}, "judge.judges", "the vote's baseline judge"),
    ("judge.max_failed_share", 1.5, "judge.max_failed_share", "[0, 1]"),
]


@pytest.mark.parametrize("key,value,named,allowed", BAD, ids=[".".join(b[0]) if isinstance(b[0], tuple) else b[0] + "=" + repr(b[1])[:20] for b in BAD])
def test_bad_params_exit_2_naming_the_key(tmp_path, default_params, key, value, named, allowed):
    params = copy.deepcopy(default_params)
    _set(params, key, value)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["--params", str(path), "prepare"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if named in line]
    assert lines, f"no line names {named!r}:\n{result.output}"
    assert any(allowed in line for line in lines), result.output
    assert "Traceback" not in result.output


def test_all_problems_reported_at_once(tmp_path, default_params):
    params = copy.deepcopy(default_params)
    _set(params, "seed", "x")
    _set(params, "generate.max_new_tokens", -1)
    _set(params, "quantize.variants.gptq-w4a16.method", "nope")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(main, ["--params", str(path), "params", "check", str(path)])
    assert result.exit_code == 2
    assert "3 problem(s)" in result.output


def test_missing_and_broken_params_file(tmp_path):
    result = CliRunner().invoke(main, ["--params", str(tmp_path / "none.yaml"), "prepare"])
    assert result.exit_code == 2 and "none.yaml" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    result = CliRunner().invoke(main, ["--params", str(bad), "prepare"])
    assert result.exit_code == 2 and "valid YAML" in result.output


def test_default_params_are_valid():
    from qmr.params import load_params

    params = load_params("params.yaml")
    assert "fp" in params.quantize.variants
    assert params.quantize.variants["fp"].method == "none"


RAW = [
    # (id, params file content, fragment of the one-line error)
    ("duplicate-key", "seed: 0\nthreads: 2\nseed: 1\n", "duplicate key 'seed' (lines 1 and 3)"),
    ("alias-bomb", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(f"b{i}: &b{i} [*{'a' if i == 0 else f'b{i-1}'}, *{'a' if i == 0 else f'b{i-1}'}]\n" for i in range(60)), "YAML aliases"),
    ("nested-5000", "seed: " + "[" * 5000 + "]" * 5000 + "\n", "nested at most 64 levels"),
    ("empty-file", "", "the file is empty"),
    ("latin-1", "seed: 0 # caf\xe9\n", "UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize("content, fragment", [r[1:] for r in RAW], ids=[r[0] for r in RAW])
def test_unreadable_params_file_is_one_clear_error(tmp_path, content, fragment):
    import time

    path = tmp_path / "params.yaml"
    path.write_bytes(content.encode("latin-1"))
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["--params", str(path), "params", "check", str(path)])
    assert result.exit_code == 2 and fragment in result.output, result.output
    assert "Traceback" not in result.output and time.monotonic() - t0 < 10


def test_params_file_that_is_a_directory(tmp_path):
    (tmp_path / "p.yaml").mkdir()
    result = CliRunner().invoke(main, ["--params", str(tmp_path / "p.yaml"), "prepare"])
    assert result.exit_code == 2 and "not a regular file" in result.output and "Traceback" not in result.output


def test_global_params_option_is_honoured_by_params_check(tmp_path, default_params, monkeypatch):
    """`qmr --params X params check` checks X (it used to check ./params.yaml whatever --params said)."""
    params = copy.deepcopy(default_params)
    _set(params, "seed", "not-a-number")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params))  # a valid file where the old default looked
    result = CliRunner().invoke(main, ["--params", str(bad), "params", "check"])
    assert result.exit_code == 2 and "bad.yaml" in result.output and "seed" in result.output, result.output
    ok = CliRunner().invoke(main, ["params", "check"])
    assert ok.exit_code == 0 and "params.yaml: ok" in ok.output, ok.output
    explicit = CliRunner().invoke(main, ["--params", str(bad), "params", "check", "params.yaml"])
    assert explicit.exit_code == 0, explicit.output  # an explicit PATH wins


def test_params_show_lists_every_key_with_type_default_and_help_uncut():
    """`qmr params show` is the complete reference: the per-item sections' fields too (the keys a user
    edits), each with its type, default and help, wrapped rather than cut at 40 characters."""
    from qmr.config import describe
    from qmr.params import Params

    result = CliRunner().invoke(main, ["params", "show"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    for key in ("models.<name>.hub_id", "models.<name>.prompt_style", "benchmarks.<name>.revision", "benchmarks.<name>.format",
                "quantize.variants.<slug>.bits", "quantize.variants.<slug>.group_size", "judge.judges.<name>.endpoint",
                "endpoints.<name>.api_key_env", "endpoints.<name>.price_in_per_mtok", "base.toy.max_steps", "restore.max_steps"):  # fmt: skip
        assert f"{key}:" in flat, key
    rows = describe(Params)
    assert len(rows) > 150
    for key, tp, default, help_ in rows:  # nothing cut: the whole type, default and help of every key
        line = f"{key}: {tp}" + (f" (default: {default})" if default else "")
        assert " ".join(line.split()) in flat, line
        assert " ".join(help_.split()) in flat, key
    fmt = next(r for r in rows if r[0] == "benchmarks.<name>.format")
    assert len(fmt[1]) > 40 and "'prm800k'" in fmt[1] and fmt[2] == "auto"
    assert max(len(line) for line in result.output.splitlines()) <= 100
    only = CliRunner().invoke(main, ["params", "show", "models"])
    assert only.exit_code == 0 and all(line.startswith(("models", " ")) for line in only.output.splitlines())
    typo = CliRunner().invoke(main, ["params", "show", "modles"])
    assert typo.exit_code == 2 and "did you mean 'models'" in typo.output


@pytest.mark.parametrize("text, value", [("5e-05", 5e-05), ("1E3", 1000.0), ("+2.5e-4", 2.5e-4), ("3.0e5", 3.0e5)])
def test_exponent_floats_as_dvc_writes_them_are_numbers(tmp_path, default_params, text, value):
    """`dvc exp run -S restore.learning_rate=5e-5` writes `learning_rate: 5e-05` (YAML 1.2, which DVC reads
    as a float); PyYAML's YAML 1.1 reads an exponent without a dot, or without a sign, as a string, and
    validation then refused the experiment ("got '5e-05'; allowed: a number")."""
    from qmr.params import load_params

    params = copy.deepcopy(default_params)
    params["restore"]["learning_rate"] = "@LR@"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False).replace("'@LR@'", text), encoding="utf-8")
    result = CliRunner().invoke(main, ["--params", str(path), "params", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert load_params(path).restore.learning_rate == pytest.approx(value)
    assert load_params(path).restore.seed == 0  # integers stay integers
