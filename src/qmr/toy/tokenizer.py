"""A digit-level word tokenizer over the toy generator's closed vocabulary, built locally.

Pieces are whole words, single digits, operators, punctuation and the newline. A digit is always its
own bare token (``"48"`` -> ``"4"``, ``"8"``), wherever the number stands — in the question, at the
start of a step line or after ``=`` — so the model copies and computes with one set of ten digit
embeddings. Spaces ride on the word pieces: a word or symbol carries its leading space (``" has"``,
``" apples"``) and, when a number follows, its trailing space too (``" has "``, ``" + "``, ``" = "``).
Decoding is plain concatenation (a ``Fuse`` decoder), so ``decode(encode(text)) == text`` exactly for
every text the generator writes. Encoding prepends ``<s>``; ``<pad>``, ``</s>`` and ``<unk>`` complete
the specials. The vocabulary is the set of pieces of `qmr.toy.problems.vocabulary_texts`, so it follows
the generator's templates and stays small (~200).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from qmr.toy.problems import vocabulary_texts

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
DIGITS = tuple("0123456789")
# One piece: a newline; a digit; an optional space, a word or one symbol, and a space when a digit
# follows; any other run of whitespace (never written by the generator: it becomes <unk>).
PIECE_PATTERN = r"\n|[0-9]| ?[A-Za-z]+(?: (?=[0-9]))?| ?[^A-Za-z0-9\s](?: (?=[0-9]))?|\s+"


def split_pieces(text: str) -> list[str]:
    """The pieces the tokenizer's pre-tokenizer cuts ``text`` into (same pattern, Python ``re``)."""
    return re.findall(PIECE_PATTERN, text)


def vocabulary() -> list[str]:
    """The ordered token list: specials, newline, digits, then the generator's pieces, sorted."""
    pieces: set[str] = set()
    for text in vocabulary_texts():
        pieces.update(split_pieces(text))
    head = [*SPECIAL_TOKENS, "\n", *DIGITS]
    return head + sorted(pieces - set(head))


def build_tokenizer(model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """The toy tokenizer as a ``transformers.PreTrainedTokenizerFast`` (left padding, ``<s>`` prefix)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(PIECE_PATTERN), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )
