"""A character-level tokenizer, built locally with `tokenizers` (no download).

One token per character of printable ASCII plus newline; anything else maps to <unk>.
Character tokens suit arithmetic: every digit is its own token, so the model sees place
value directly (a byte-level BPE merges digits unpredictably).
"""

from __future__ import annotations

import string

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARSET = "".join(c for c in string.printable if c not in "\t\r\x0b\x0c")  # ASCII + "\n"


def build_char_tokenizer():
    """Return a transformers fast tokenizer over CHARSET, left-padding, <bos> prepended."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in CHARSET:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # "[\s\S]" so that newline is a token too (plain "." skips it).
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>", padding_side="left",
    )
