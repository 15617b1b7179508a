"""Word segmentation of raw text, CoNLL-style, with exact character offsets.

Punctuation is split from words; numbers such as ``10,000``, ``1996-08-22``, ``.496`` or ``+48``, ordinals
and measures (``61st``, ``10-year-old``), currencies such as ``C$``, abbreviations such as ``U.S.`` or
``Mr.``, hyphenated words, dashes and ellipses (``--``, ``...``) and e-mail/URLs stay whole; a list
number at the start of a line (``5. Dionne Rose``) keeps its full stop; English clitics (``'s``, ``n't``)
are split. Each of these is how CoNLL-2003 cuts the same text, which is what the model was trained on.
Scripts written without spaces between words (Chinese and Japanese: Han, Hiragana, Katakana; Thai, Lao, Khmer,
Myanmar) are cut into words by ICU's dictionary-based word break (``icu4py``, ICU 78), run by run, so
``東京是日本的首都`` gives ``東京 是 日本 的 首都``; mixed-script text is cut at each change of script. A name the
dictionary does not know may be cut in several words (``习近平`` gives ``习 近平``, ``华为`` ``华 为``): where a cut
is next to a single character (ICU's fallback for what it does not know; in Thai, Lao, Khmer and Myanmar, every cut)
the words are linked (``SegmentedText.links``, ``WORD_JOINED``), and the decoder keeps an entity whole across such a
cut, with its first piece's type: ``华`` ORG + ``为`` ORG is ``华为`` ORG, ``默`` PER + ``克尔`` LOC is ``默克尔``
PER. A word that ends place or organisation names (``市``, ``县``, ``県``; ``大学``, ``公司``, ``队``: a short list,
simplified and traditional Chinese and Japanese forms), cut off the word before it in the same run, is linked as
``WORD_PLACE_ENDING`` or ``WORD_ORG_ENDING``, and the decoder puts it in the entity before it when that is a LOC
(place) or a LOC, ORG or MISC (organisation, which makes it ORG): ``温州|市`` is ``温州市`` LOC, ``北京|大学``
``北京大学`` ORG; otherwise it reads as joined. A middle dot between two kana letters, or two Han letters in a line
without kana, which Japanese and Chinese write between a foreign person's names (``ジョン・スミス``,
``卡洛斯·阿马特``), is linked as ``WORD_NAME_DOT``, and the decoder joins the PER before it and a word tagged PER
after it (not other types: ``東京・大阪`` is a Japanese list). Korean is written with spaces, but case particles are
glued to their noun (``부산을``, ``서울에서는``, ``LG전자는``): a word ending in one, or in two Korean stacks, is cut
before them (``부산 을``), the particles tokenised as the rest of their word and linked as ``WORD_PARTICLE``, which is
never part of an entity; only after the kind of syllable Korean puts each after, and a few names that end like a
particle are listed and kept whole (``김정은``, ``카이로``). Whitespace, control and format characters separate
words and are never part of one. Words of those scripts are tokenised without SentencePiece's word-start marker ``▁``
(``SegmentedText.unmarked``): XLM-R was pre-trained on such text without spaces, where pieces rarely start with ``▁``,
and a lone ``▁`` piece, not the word's own characters, would carry the word's label (first-subword aggregation). A
line break ends a sentence: no entity spans two lines. Offsets are Python string (code point) indices, so
``text[start:end] == word``. The particle, ending and dot rules are in ``nertron.word_links``.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from typing import NamedTuple, overload

import numpy as np
import regex
from icu4py.breakers import WordBreaker

from nertron._native import WORD_JOINED, WORD_NAME_DOT, WORD_PARTICLE
from nertron.word_links import NAME_DOTS, NameDots, korean_particle, name_endings

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
    # US states as Reuters abbreviates them
    "Calif",
    "Fla",
    "Ariz",
    "Mich",
    "Mass",
    "Conn",
    "Tenn",
    "Okla",
    "Colo",
    "Minn",
    "Wis",
    "Neb",
]

_WORD_CHAR = r"[\p{L}\p{M}\p{N}_]"
# Scripts without spaces between words, and the marks that extend them (the Japanese prolonged sound mark and
# iteration marks are of script Common).
_NO_SPACE = (
    r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}"
    r"\u30FC\u3005\u3006\u303B\uFF70\uFF9E\uFF9F\u309B\u309C\u3031-\u3035]"
)
_NO_SPACE_RUN = rf"{_NO_SPACE}(?:{_NO_SPACE}|\p{{M}})*"  # a run of those scripts, with their combining marks
_SEPARATOR = r"[\s\p{Z}\p{Cc}\p{Cf}]"

_TOKEN = regex.compile(
    rf"""
      (?:https?://|www\.)[^\s<>"]*[^\s<>".,;:!?)\]}}'] # URLs
    | [\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+                 # e-mail addresses
    | (?:\p{{L}}\.){{2,}}                               # U.S., e.g.
    | (?:{"|".join(_ABBREVIATIONS)})\.(?!\p{{L}})      # Mr., Corp.
    | \p{{Lu}}\.(?=\s+\p{{Lu}})                         # initials: J. Smith
    | (?<=(?:\A|\n)[^\S\n]*)\p{{N}}{{1,3}}\.(?=\s)          # list numbers at the start of a line: 5.
    | (?<![\p{{L}}\p{{N}}])\p{{Lu}}{{1,2}}\$                    # currencies: C$ US$
    | (?<!\S)\.\p{{N}}+                                  # .496
    | (?<![\p{{L}}\p{{N}}+])\+\p{{N}}+(?:[.,]\p{{N}}+)*        # +48
    | (?>\p{{N}}+(?:[.,:/]\p{{N}}+)*(?:-\p{{N}}+)*)(?![\p{{L}}\p{{M}}_]|-\p{{L}}) # 10,000 3.5 1996-08-22, not 61st
    | -{{2,}} | \.{{2,}}                                 # dashes and ellipses: -- ...
    | (?P<no_space>{_NO_SPACE_RUN})                     # a run of scripts without spaces: cut by ICU
    | (?i:n['\u2019]t|['\u2019](?:s|re|ve|ll|d|m))(?!{_WORD_CHAR}) # clitics: n't, 's
    | (?:(?!{_NO_SPACE}|(?i:n['\u2019]t)(?!{_WORD_CHAR})){_WORD_CHAR})+
      (?:[-'\u2019&](?:(?!{_NO_SPACE}){_WORD_CHAR})+)*       # words, inner - ' &
      (?<!(?i:['\u2019](?:s|re|ve|ll|d|m)))
    | (?!{_SEPARATOR})\X                               # any other grapheme: punctuation, emoji
    """,
    regex.VERBOSE | regex.VERSION1,
)


_SYLLABLE_SCRIPT = regex.compile(r"[\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}]")  # a run of these is all of them
_LINE_BREAK = regex.compile(r"\n")
_NO_SPACE_WORD = regex.compile(_NO_SPACE_RUN)
# The root locale: ICU's dictionaries (Chinese/Japanese, Thai, Lao, Khmer, Burmese) apply by script.
_ICU_LOCALE = "und"


def _dictionary_words(run: str, start: int) -> list[int]:
    """``[start, end)`` offsets of ICU's words in ``run``, a run of scripts without spaces at ``start``."""
    bounds = [b for segment in WordBreaker(run, _ICU_LOCALE).segments() for b in segment]
    if max(run) > "\uffff":  # ICU counts UTF-16 units: an astral character (e.g. 𠮷) takes two
        code_point_at = [i for i, char in enumerate(run) for _ in range(1 + (ord(char) > 0xFFFF))]
        code_point_at.append(len(run))
        bounds = [code_point_at[b] for b in bounds]
    return [start + b for b in bounds]


class Words(NamedTuple):
    """Words of a text with their ``[start, end)`` code-point offsets."""

    words: list[str]
    starts: list[int]
    ends: list[int]


def lone_surrogate(text: str) -> int | None:
    """The index of the first lone surrogate in ``text`` (U+D800 to U+DFFF: from JSON's ``"\\ud800"``, or bytes
    decoded with ``surrogateescape``; not a character, and no tokenizer or UTF-8 writer takes it), else None."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def split_words(text: str) -> Words:
    """Splits ``text`` into words (see the module docstring for the rules). The words alone do not carry their
    links (``SegmentedText.split`` does): tagged as pre-split words (``NER.tag``), a name cut in pieces, a name
    ending, a name dot or a Korean particle is decoded as the model tags it, not as ``ner(text)`` decodes it."""
    segmented = SegmentedText.split(text)
    return Words(list(segmented), segmented.starts.tolist(), segmented.ends.tolist())


class SegmentedText(Sequence[str]):
    """A text and its words, held as ``[start, end)`` code-point offsets (``text[start:end]`` is a word); the
    words are made on demand. ``sentence_lengths`` (words per sentence) keeps entities inside sentences;
    ``unmarked`` (bool per word, None: no word is) marks the words of scripts without spaces, tokenised without
    the word-start marker; ``links`` (uint8 per word, None: all free) say which words the segmenter cut from the
    word before (``nertron._native.WORD_JOINED``, ``WORD_PARTICLE``, ``WORD_PLACE_ENDING``, ``WORD_ORG_ENDING``,
    ``WORD_NAME_DOT``), for the decoder."""

    def __init__(
        self,
        text: str,
        starts: np.ndarray,
        ends: np.ndarray,
        sentence_lengths: np.ndarray | None = None,
        unmarked: np.ndarray | None = None,
        links: np.ndarray | None = None,
    ) -> None:
        self.text = text
        self.starts = starts
        self.ends = ends
        self.sentence_lengths = np.array([len(starts)], np.int64) if sentence_lengths is None else sentence_lengths
        self.unmarked = unmarked
        self.links = links

    @classmethod
    def split(cls, text: str) -> SegmentedText:
        """``text`` cut into words by nertron's segmentation (see the module docstring), a sentence per line."""
        offsets = array("q")
        unmarked: list[int] = []  # word indices
        links: dict[int, int] = {}  # word index -> a WORD_* link (nertron._native)
        name_dots: NameDots | None = None  # made at the first dot
        for match in _TOKEN.finditer(text):
            if match.lastgroup == "no_space":
                first = len(offsets) // 2
                offsets.extend(_dictionary_words(match.group(), match.start()))
                unmarked.extend(range(first, len(offsets) // 2))
                syllables = _SYLLABLE_SCRIPT.match(match.group()) is not None
                for word in range(first + 1, len(offsets) // 2):
                    # For what its dictionary does not know, ICU falls back to single characters (Chinese,
                    # Japanese) or syllables (Thai, ...): a cut next to one may be inside a name (华|为, เจ|นี|วา);
                    # two Chinese dictionary words side by side are two words (北京|上海).
                    sizes = (offsets[2 * word + 1] - offsets[2 * word], offsets[2 * word - 1] - offsets[2 * word - 2])
                    if syllables or 1 in sizes:
                        links[word] = WORD_JOINED
                links.update(name_endings(text, offsets, first, len(offsets) // 2))
                continue
            start, end = match.span()
            word = match.group()
            # the last character first: no regex call for a word that does not end in Hangul
            particle = korean_particle(word) if "\uac00" <= word[-1] <= "\ud7a3" else 0
            if particle:
                offsets.extend((start, end - particle))
                start = end - particle
                unmarked.append(len(offsets) // 2)
                links[len(offsets) // 2] = WORD_PARTICLE
            if word in NAME_DOTS and (name_dots := name_dots or NameDots(text))(start, end):
                links[len(offsets) // 2] = WORD_NAME_DOT
            offsets.extend((start, end))
        spans = np.frombuffer(offsets, dtype=np.int64).reshape(-1, 2) if offsets else np.zeros((0, 2), np.int64)
        starts, ends = spans[:, 0], spans[:, 1]
        unmarked_words = word_links = None
        if unmarked:
            unmarked_words = np.zeros(len(starts), dtype=bool)
            unmarked_words[unmarked] = True
        if links:
            word_links = np.zeros(len(starts), dtype=np.uint8)
            word_links[list(links)] = list(links.values())
        if "\n" not in text or not len(starts):
            return cls(text, starts, ends, unmarked=unmarked_words, links=word_links)
        breaks = np.array([m.start() for m in _LINE_BREAK.finditer(text)], dtype=np.int64)
        _, lengths = np.unique(np.searchsorted(breaks, starts), return_counts=True)  # words per non-empty line
        return cls(text, starts, ends, lengths.astype(np.int64), unmarked_words, word_links)

    @classmethod
    def join(cls, sentences: Sequence[Sequence[str]]) -> SegmentedText:
        """Pre-split sentences as one text: words joined by a space, sentences by a newline."""
        lengths = np.fromiter((len(s) for s in sentences), dtype=np.int64, count=len(sentences))
        sizes = np.fromiter((len(w) for s in sentences for w in s), dtype=np.int64, count=int(lengths.sum()))
        # Each word is followed by one separator: a space, or the newline after its sentence.
        steps = sizes + 1
        empty_before = np.repeat(np.cumsum(lengths == 0) - (lengths == 0), lengths)  # an empty sentence is "\n"
        starts = np.concatenate(([0], np.cumsum(steps)[:-1])).astype(np.int64) + empty_before
        text = "\n".join(" ".join(s) for s in sentences)
        unmarked = None
        if not text.isascii():  # words of scripts without spaces, tokenised as split() would
            flags = np.fromiter(
                (_NO_SPACE_WORD.fullmatch(w) is not None for s in sentences for w in s), dtype=bool, count=len(starts)
            )
            unmarked = flags if flags.any() else None
        return cls(text, starts, starts + sizes, lengths, unmarked)

    def __len__(self) -> int:
        return len(self.starts)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            text = self.text
            return [text[s:e] for s, e in zip(self.starts[index].tolist(), self.ends[index].tolist(), strict=True)]
        return self.text[int(self.starts[index]) : int(self.ends[index])]
