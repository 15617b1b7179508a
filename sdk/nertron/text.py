"""Word segmentation of raw text, CoNLL-style, with exact character offsets.

Punctuation is split from words; numbers such as ``10,000`` or ``1996-08-22``, abbreviations such as
``U.S.`` or ``Mr.``, hyphenated words and e-mail/URLs stay whole; English clitics (``'s``, ``n't``) are
split as in CoNLL-2003. Han, Hiragana and Katakana characters are one word each (those scripts do not
separate words with spaces). Whitespace, control and format characters separate words and are never part
of one. Offsets are Python string (code point) indices, so ``text[start:end] == word``.
"""

from __future__ import annotations

from typing import NamedTuple

import regex

_ABBREVIATIONS = [
    "Mr",
    "Mrs",
    "Ms",
    "Dr",
    "Prof",
    "Sr",
    "Jr",
    "St",
    "Mt",
    "Ft",
    "Inc",
    "Corp",
    "Ltd",
    "Co",
    "Bros",
    "Gen",
    "Col",
    "Lt",
    "Sgt",
    "Capt",
    "Cmdr",
    "Adm",
    "Gov",
    "Sen",
    "Rep",
    "Rev",
    "Hon",
    "Pres",
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Sept",
    "Oct",
    "Nov",
    "Dec",
    "No",
    "Nos",
    "vs",
    "etc",
    "approx",
    "Ave",
    "Blvd",
]

_WORD_CHAR = r"[\p{L}\p{M}\p{N}_]"
_CJK = r"[\p{Han}\p{Hiragana}\p{Katakana}]"
_SEPARATOR = r"[\s\p{Z}\p{Cc}\p{Cf}]"

_TOKEN = regex.compile(
    rf"""
      (?:https?://|www\.)[^\s<>"]*[^\s<>".,;:!?)\]}}'] # URLs
    | [\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+                 # e-mail addresses
    | (?:\p{{L}}\.){{2,}}                               # U.S., e.g.
    | (?:{"|".join(_ABBREVIATIONS)})\.(?!\p{{L}})      # Mr., Corp.
    | \p{{Lu}}\.(?=\s+\p{{Lu}})                         # initials: J. Smith
    | \p{{N}}+(?:[.,:/]\p{{N}}+)*(?:-\p{{N}}+)*           # 10,000  3.5  1996-08-22
    | {_CJK}                                           # one Han/kana character
    | (?i:n['\u2019]t|['\u2019](?:s|re|ve|ll|d|m))(?!{_WORD_CHAR}) # clitics: n't, 's
    | (?:(?!{_CJK}|(?i:n['\u2019]t)(?!{_WORD_CHAR})){_WORD_CHAR})+
      (?:[-'\u2019&](?:(?!{_CJK}){_WORD_CHAR})+)*            # words, inner - ' &
      (?<!(?i:['\u2019](?:s|re|ve|ll|d|m)))
    | (?!{_SEPARATOR})\X                               # any other grapheme: punctuation, emoji
    """,
    regex.VERBOSE | regex.VERSION1,
)


class Words(NamedTuple):
    """Words of a text with their ``[start, end)`` code-point offsets."""

    words: list[str]
    starts: list[int]
    ends: list[int]


def split_words(text: str) -> Words:
    """Splits ``text`` into words (see the module docstring for the rules)."""
    words: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for match in _TOKEN.finditer(text):
        words.append(match.group())
        starts.append(match.start())
        ends.append(match.end())
    return Words(words, starts, ends)
