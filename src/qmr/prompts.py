"""The one step-format prompt every variant sees (and the toy model is trained on).

`plain` is the toy reasoner's format: the model continues after ``Answer:\\n`` with one step per line
(``a op b = c``) and a closing ``The answer is N.``. `chat` wraps the same instruction in the model's
own chat template, for instruction-tuned real models.
"""

from __future__ import annotations

from typing import Literal

from qmr.errors import UserError

PromptStyle = Literal["plain", "chat"]

INSTRUCTION = (
    "Solve the problem step by step. Put each step on its own line and finish with "
    '"The answer is N." where N is the final answer.'
)
PLAIN_TEMPLATE = "Question: {question}\nAnswer:\n"
ANSWER_SENTENCE = "The answer is {answer}."


def build_prompt(question: str, style: PromptStyle = "plain", tokenizer=None) -> str:
    if style == "plain":
        return PLAIN_TEMPLATE.format(question=question)
    if tokenizer is None or getattr(tokenizer, "chat_template", None) is None:
        raise UserError("models.<model>.prompt_style: got 'chat' for a tokenizer without a chat template; allowed: 'plain', or a model whose tokenizer has one")
    messages = [{"role": "user", "content": f"{INSTRUCTION}\n\n{question}"}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def resume_prompt(problem_prompt: str, prefix_steps) -> str:
    """The problem prompt followed by the kept steps, one per line, with a trailing newline when any
    (a silver pair's prompt; a rollout's prefix)."""
    if not prefix_steps:
        return problem_prompt
    return problem_prompt + "\n".join(prefix_steps) + "\n"


def adds_bos(tokenizer) -> bool:
    """True when ``tokenizer`` prepends its BOS token to every text it encodes (Llama-3, the toy)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bool(with_specials) and with_specials[0] == bos and plain[:1] != [bos]


def strip_bos(texts: list[str], tokenizer) -> list[str]:
    """``texts`` ready to be encoded with special tokens: exactly one BOS in the result.

    A chat template may write the BOS itself (Llama-3's ``{{ bos_token }}``) while the tokenizer also
    prepends one to whatever it encodes, so encoding a templated prompt with special tokens — as the
    generation backend, trl's SFT/DPO trainers and the calibration set do — would start it with two.
    The leading BOS text is removed where the tokenizer adds one itself; texts without one (the toy's
    plain prompts, Qwen2's templates) and tokenizers that add none are returned as they are.
    """
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or not any(t.startswith(bos) for t in texts) or not adds_bos(tokenizer):
        return list(texts)
    return [t[len(bos) :] if t.startswith(bos) else t for t in texts]
