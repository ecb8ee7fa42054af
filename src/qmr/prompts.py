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
