"""Calibration texts (quantize, restore's requantize): the model's prompt + the worked solution in the
pipeline's step format — what the model sees and produces, never GSM8K's raw ``<<…>>``/``#### N`` text."""

from __future__ import annotations

import pytest

from qmr.benchmarks import normalize
from qmr.prompts import build_prompt
from qmr.quant.calibration import calibration_texts
from qmr.steps import split_steps, step_target
from qmr.toy.problems import generate_split

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
]  # fmt: skip


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """A local checkpoint directory holding only a tokenizer with a ChatML chat template."""
    pytest.importorskip("transformers")
    from qmr.toy.tokenizer import build_tokenizer

    tok = build_tokenizer()
    tok.chat_template = CHATML
    out = tmp_path_factory.mktemp("chat-tok")
    tok.save_pretrained(out)
    return out


def _gsm8k_records() -> list[dict]:
    return [normalize(row, "gsm8k", "gsm8k", i) for i, row in enumerate(GSM8K_ROWS)]


def _check_step_format(text: str, prompt: str, rec: dict) -> None:
    assert text.startswith(prompt)
    solution = text[len(prompt) :]
    assert solution == step_target(rec)  # the one formatter align trains on
    assert "<<" not in solution and ">>" not in solution and "####" not in solution
    assert split_steps(solution)[-1] == f"The answer is {rec['answer']}."


def test_gsm8k_solution_in_step_format_plain():
    recs = _gsm8k_records()
    texts = calibration_texts(recs, "plain")
    for text, rec in zip(texts, recs, strict=True):
        _check_step_format(text, build_prompt(rec["question"]), rec)
    assert texts[0].endswith("Natalia sold 48/2 = 24 clips in May.\n"
                             "Natalia sold 48+24 = 72 clips altogether in April and May.\nThe answer is 72.")  # fmt: skip


def test_gsm8k_solution_in_step_format_after_the_chat_template(chat_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(chat_model_dir)
    recs = _gsm8k_records()
    texts = calibration_texts(recs, "chat", str(chat_model_dir))
    for text, rec in zip(texts, recs, strict=True):
        prompt = build_prompt(rec["question"], "chat", tok)
        assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n")
        _check_step_format(text, prompt, rec)


def test_toy_calibration_texts_are_unchanged():
    """The toy's solutions are already in the step format: the texts are prompt + solution, as before."""
    recs = generate_split("train", 50, seed=0)
    assert calibration_texts(recs, "plain") == [build_prompt(r["question"]) + r["solution"] for r in recs]


def test_a_record_without_a_solution_calibrates_on_its_prompt():
    rec = {"id": "a", "question": "Find x.", "answer": "3"}
    assert calibration_texts([rec], "plain") == [build_prompt("Find x.")]


def test_real_gsm8k_records(shared_data):
    from qmr.benchmarks import load_benchmark
    from qmr.params import BenchmarkSpec

    path = shared_data / "gsm8k" / "train.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    recs = load_benchmark(BenchmarkSpec(source="local", path=str(path), role="train", size=8), "gsm8k_train")
    assert len(recs) == 8 and any("<<" in r["solution"] for r in recs)
    for text, rec in zip(calibration_texts(recs, "plain"), recs, strict=True):
        _check_step_format(text, build_prompt(rec["question"]), rec)
