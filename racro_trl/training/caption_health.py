"""How captions read: the figures that tell language from a private code between captioner and reasoner.

CRO rewards a caption only through its reasoner, so the pair can drift into text the reasoner decodes
and no person reads. On the colour task, with a reader that boxed any colour word it found, an AVX-512
machine went from ``The shape is yellow.`` at step 0 to ``mohdzshs skbzzd`` at step 39, the reward
still 0.6. So the reward is logged beside two figures of the captions themselves:

* ``known_words``: the share of a caption's words that are English words (wordfreq's word list, which
  holds inflections and common abbreviations); mean over the captions that have words. Gibberish scores
  near 0, prose near 1: a fall during training is a private code forming.
* ``well_formed``: with a grammar (a regular expression, ``reward_caption_grammar``), the share of
  captions it matches whole. Synthetic tasks know their captions' grammar; real data has none.
"""

from __future__ import annotations

import re
from functools import lru_cache


@lru_cache(maxsize=200_000)
def is_known_word(word: str) -> bool:
    """Whether ``word`` (lower case) is in wordfreq's English word list."""
    from wordfreq import zipf_frequency

    return zipf_frequency(word, "en") > 0


def known_word_share(text: str) -> float | None:
    """The share of ``text``'s words (runs of letters, as wordfreq tokenizes them) that are English
    words; None when it has no words (numbers and symbols only).

    >>> known_word_share("The shape is yellow."), known_word_share("mohdzshs skbzzd"), known_word_share("3 + 4")
    (1.0, 0.0, None)
    >>> known_word_share("TheTheThe shape is red.")
    0.75
    """
    from wordfreq import tokenize

    words = [w for w in tokenize(text, "en") if w.isalpha()]
    if not words:
        return None
    return sum(map(is_known_word, words)) / len(words)


def mean_known_words(captions: list[str]) -> float:
    """:func:`known_word_share` averaged over the captions that have words (0.0 if none has)."""
    shares = [s for s in map(known_word_share, captions) if s is not None]
    return sum(shares) / len(shares) if shares else 0.0


def grammar_match(text: str, grammar: str) -> re.Match | None:
    """``grammar`` (a regular expression) matched against the whole of ``text``, outer spaces aside:
    what well-formed means here (re caches the compiled pattern)."""
    return re.fullmatch(grammar, text.strip())


def well_formed_share(captions: list[str], grammar: str) -> float:
    """The share of ``captions`` that ``grammar`` (a regular expression) matches whole, outer spaces aside.

    >>> well_formed_share(["The shape is red.", "red mohdz blue", " The shape is blue. "], r"The shape is \\w+\\.")
    0.6666666666666666
    """
    return sum(grammar_match(c, grammar) is not None for c in captions) / max(len(captions), 1)
