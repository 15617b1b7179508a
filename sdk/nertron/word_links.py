"""How the segmenter links a word to the word before it where a script's own cuts are not the name's
(``SegmentedText.links``, read by the decoder: ``WordLink`` in ``csrc/postprocess.hpp``): Korean case particles cut
off their noun, name endings ICU cut off a Chinese or Japanese name, and the middle dot between a foreign person's
names. ICU's own cuts inside a name (``WORD_JOINED``) are made in ``nertron.text``."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

import regex

from nertron._native import WORD_ORG_ENDING, WORD_PLACE_ENDING

# Korean particles cut off a Hangul word: (particle, what the syllable before it must end in). Longest first.
_AFTER_CONSONANT, _AFTER_VOWEL, _AFTER_VOWEL_OR_L, _AFTER_ANY = "consonant", "vowel", "vowel or ㄹ", "any"
_KOREAN_PARTICLES = (
    ("에서부터", _AFTER_ANY),
    ("에서는", _AFTER_ANY),
    ("에서도", _AFTER_ANY),
    ("에게서", _AFTER_ANY),
    ("에게는", _AFTER_ANY),
    ("으로는", _AFTER_CONSONANT),
    ("으로서", _AFTER_CONSONANT),
    ("으로써", _AFTER_CONSONANT),
    ("이라는", _AFTER_CONSONANT),
    ("이라고", _AFTER_CONSONANT),
    ("로부터", _AFTER_VOWEL_OR_L),
    ("에서", _AFTER_ANY),
    ("에게", _AFTER_ANY),
    ("께서", _AFTER_ANY),
    ("한테", _AFTER_ANY),
    ("까지", _AFTER_ANY),
    ("부터", _AFTER_ANY),
    ("처럼", _AFTER_ANY),
    ("보다", _AFTER_ANY),
    ("마저", _AFTER_ANY),
    ("조차", _AFTER_ANY),
    ("으로", _AFTER_CONSONANT),
    ("로서", _AFTER_VOWEL_OR_L),
    ("로써", _AFTER_VOWEL_OR_L),
    ("라는", _AFTER_VOWEL),
    ("라고", _AFTER_VOWEL),
    ("은", _AFTER_CONSONANT),
    ("을", _AFTER_CONSONANT),
    ("이", _AFTER_CONSONANT),
    ("는", _AFTER_VOWEL),
    ("를", _AFTER_VOWEL),
    ("가", _AFTER_VOWEL),
    ("의", _AFTER_ANY),
    ("에", _AFTER_ANY),
    ("과", _AFTER_CONSONANT),
    ("와", _AFTER_VOWEL),
    ("로", _AFTER_VOWEL_OR_L),
)
# Two particles stacked: one of where, with, from, like or than, then one of the last ones (서울+에+는,
# 캐나다+로서+는, 한국은행+에+도, 일본+과+의, 러시아+와+의, 서울+까지+도). Not 로 first: names end in it
# (파블로+는); 로부터 is listed whole above. Names ending in 와 (하세가와) are cut before a stack as
# alone. 도 ("also") and 만 ("only") are cut only at the end of a stack or after a listed name, never
# alone after a noun: place names end in them (경기도, 제주도, 홋카이도).
_FIRST_IN_STACK = tuple(
    (particle, after)
    for particle, after in _KOREAN_PARTICLES  # longest first, as there
    if particle in str.split("으로서 으로써 에서 에게 께서 한테 까지 부터 처럼 보다 으로 로서 로써 에 과 와")
)
_LAST_IN_STACK = (
    ("부터", _AFTER_ANY),
    ("까지", _AFTER_ANY),
    ("은", _AFTER_CONSONANT),
    ("는", _AFTER_VOWEL),
    ("도", _AFTER_ANY),
    ("만", _AFTER_ANY),
    ("의", _AFTER_ANY),
)
_AFTER_A_LISTED_NAME = (*_KOREAN_PARTICLES, ("도", _AFTER_ANY), ("만", _AFTER_ANY))
# Well-known names (and 나라, "country") that end as a particle would, after a stem the rules allow: kept
# whole, and never cut into (카이로+도, 김정은+과+의, 우리나라+는, not 우리나+라는). Others are cut (a
# Korean given name ending in 은 or 이, a foreign one in 로, 와 or 에: 올리비에): the model cannot see the
# difference either.
_KOREAN_NAMES_LIKE_PARTICLES = frozenset(
    {
        "김정은",
        "카이로",
        "몬테네그로",
        "페드로",
        "마두로",
        "카스트로",
        "오타와",
        "아이오와",
        "오키나와",
        "이시카와",
        "가나가와",
        "말라가",
        "몽펠리에",
        "벨기에",
        "이치로",
        "앙카라",
        "사하라",
        "나라",
        "우리나라",
    }
)
_RIEUL = 8  # the final consonant ㄹ, after which 로 (not 으로) follows
_COUNTERS = frozenset({"가", "과"})  # after a digit, counters: 종로3가 (a street's section), 수사1과 (a department)
# Letters and digits, ending in a precomposed Hangul syllable (the particles are precomposed): 서울에서, and
# LG전자는, 2024년에는, where what comes before the Hangul is part of the noun.
_KOREAN_WORD = regex.compile(r"[\p{L}\p{N}]+[\uAC00-\uD7A3]")


def korean_particle(word: str) -> int:
    """The length of the case particle that ends ``word`` (one, or two stacked: 서울+에+는), or 0 (always for a
    word not of letters and digits that ends in a Hangul syllable)."""
    if _KOREAN_WORD.fullmatch(word) is None:
        return 0
    name = max((n for n in _KOREAN_NAMES_LIKE_PARTICLES if word.startswith(n)), key=len, default="")
    if name and _are_particles(word, len(name)):
        return len(word) - len(name)
    cut = _particles(word)
    return cut if cut <= len(word) - len(name) else 0  # a listed name is never cut into


def _particles(word: str) -> int:
    """The length of the particle, or two stacked, that end ``word`` by the rules, or 0."""
    for last, after in _LAST_IN_STACK:
        stem = len(word) - len(last)
        if word.endswith(last) and stem >= 2 and _follows(word[stem - 1], after):
            first = _particle(word[:stem], _FIRST_IN_STACK)
            if first:
                return first + len(last)
    return _particle(word, _KOREAN_PARTICLES)


def _particle(word: str, particles: Sequence[tuple[str, str]]) -> int:
    """The length of the longest of ``particles`` that ends ``word`` after the kind of syllable it follows, and
    after at least one character (two for a one-syllable particle: 인도, 상하이 stay whole), or 0. Not 가 or 과
    after a digit: counters (종로3가, a street's section; 수사1과, a department)."""
    for particle, after in particles:
        stem = len(word) - len(particle)
        if (
            word.endswith(particle)
            and stem >= (2 if len(particle) == 1 else 1)
            and _follows(word[stem - 1], after)
            and not (particle in _COUNTERS and word[stem - 1].isdigit())
        ):
            return len(particle)
    return 0


def _are_particles(word: str, stem: int) -> bool:
    """Whether ``word[stem:]`` is a particle, or two stacked, that may follow ``word[:stem]``."""
    rest = word[stem:]
    if not rest:
        return False
    if any(rest == p and _follows(word[stem - 1], after) for p, after in _AFTER_A_LISTED_NAME):
        return True
    return any(
        rest == first + last and _follows(word[stem - 1], first_after) and _follows(first[-1], last_after)
        for first, first_after in _FIRST_IN_STACK
        for last, last_after in _LAST_IN_STACK
    )


def _follows(syllable: str, after: str) -> bool:
    """Whether a particle that goes ``after`` (consonant, vowel, ...) may follow ``syllable``: any may follow a
    letter or digit not Hangul (LG+는, 3M+은: the writer chose the form by its sound)."""
    if not "\uac00" <= syllable <= "\ud7a3":
        return True
    final = (ord(syllable) - 0xAC00) % 28  # the syllable's final consonant, 0: none
    return (
        after == _AFTER_ANY
        or (after == _AFTER_CONSONANT and final != 0)
        or (after == _AFTER_VOWEL and final == 0)
        or (after == _AFTER_VOWEL_OR_L and final in (0, _RIEUL))
    )


# Words that end place and organisation names in Chinese and Japanese, where ICU often cuts them off a name
# (温州|市, 北京|大学, 静岡|県, 京都|大学): linked to the word before so that an entity goes on over them (see
# WORD_PLACE_ENDING, WORD_ORG_ENDING). Only words that are nothing but an ending: 市场 and 大学生 are other words.
# Not 都 or 道 (Japanese prefectures, but Chinese "all" and "way"), nor 会 (會) or 所 (Chinese "will", a particle).
_NAME_ENDINGS = {
    **dict.fromkeys(
        str.split(  # simplified Chinese, traditional (where it differs: OpenCC's s2t, s2tw, s2hk), Japanese
            "省 市 县 区 州 镇 乡 村 自治区 自治州 自治县 特别行政区 地区 半岛 群岛 岛 港 湾 "
            "縣 區 鎮 鄉 自治區 自治縣 特別行政區 地區 半島 群島 羣島 島 灣 "
            "県 府 町 郡"
        ),
        WORD_PLACE_ENDING,
    ),
    **dict.fromkeys(
        str.split(  # the same three
            "大学 学院 中学 小学 大学校 高校 公司 集团 银行 委员会 协会 学会 研究所 研究院 科学院 医院 "
            "报社 日报 日报社 通讯社 电视台 电台 法院 人民法院 检察院 公安局 市委 省委 县委 党委 共产党 代表团 "
            "俱乐部 队 男队 女队 部 局 厅 院 社 委 "
            "大學 學院 中學 小學 大學校 集團 銀行 委員會 協會 學會 科學院 醫院 報社 日報 日報社 通訊社 電視臺 電視台 "
            "電臺 電台 檢察院 縣委 黨委 共產黨 代表團 俱樂部 隊 男隊 女隊 廳 "
            "会社 商事 自動車 電機 工業 製作所 新聞 新聞社 放送 証券 航空 鉄道"
        ),
        WORD_ORG_ENDING,
    ),
}
_LONGEST_ENDING = max(map(len, _NAME_ENDINGS))


def name_endings(text: str, offsets: Sequence[int], first: int, last: int) -> dict[int, int]:
    """Links of the words ``first + 1 .. last - 1`` of a run (words ``first .. last - 1``, ``offsets`` flat
    [start, end) pairs) that are, alone or with the words after them, a name ending. Left to right: at each word
    the longest ending that starts there wins, and the scan goes on after it."""
    links: dict[int, int] = {}
    word = first + 1
    while word < last:
        start, matched, link = offsets[2 * word], 0, 0
        for end_word in range(word, last):
            ending = text[start : offsets[2 * end_word + 1]]
            if len(ending) > _LONGEST_ENDING:
                break
            if ending in _NAME_ENDINGS:
                matched, link = end_word + 1 - word, _NAME_ENDINGS[ending]
        links.update(dict.fromkeys(range(word, word + matched), link))
        word += max(matched, 1)
    return links


# Chinese and Japanese write a foreign person's name with a middle dot between its parts (卡洛斯·阿马特,
# ジョン・スミス): such a dot is linked (WORD_NAME_DOT), and the decoder joins a PER on both sides into one. Japanese
# writes foreign names in kana and also lists items with the dot (安倍・トランプ会談, 安倍・菅両氏), so a dot is a
# name dot only between two kana letters, or between two Han letters in a line without kana (Chinese).
NAME_DOTS = frozenset("\u00b7\u30fb\uff65\u2027\u2022")  # · ・ ･ ‧ •
_KANA = r"\p{Hiragana}\p{Katakana}\u30FC\u309B\u309C\uFF70\uFF9E\uFF9F"  # with kana's marks (script Common)
_LETTER = rf"(?:(?P<han>\p{{Han}})|(?P<kana>[{_KANA}]))"
_LETTER_BEFORE = regex.compile(rf"{_LETTER}\p{{M}}*\Z")  # combining marks too (ジ as シ + U+3099)
_LETTER_AFTER = regex.compile(_LETTER)
_ANY_KANA = regex.compile(f"[{_KANA}]")
_LONGEST_MARKS = 8  # combining marks looked at before a dot


class NameDots:
    """The name dots of one text: ``NameDots(text)(start, end)`` says whether ``text[start:end]``, one of
    ``NAME_DOTS``, stands between two kana letters, or between two Han letters in a line (up to a newline, as
    the segmenter's sentences) without kana. The lines with kana are found once, at the first Han-Han dot."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._line_breaks: list[int] | None = None
        self._lines_with_kana: set[int] = set()

    def __call__(self, start: int, end: int) -> bool:
        text = self._text
        before = _LETTER_BEFORE.search(text, max(0, start - 1 - _LONGEST_MARKS), start)
        after = _LETTER_AFTER.match(text, end)
        if before is None or after is None or before.lastgroup != after.lastgroup:
            return False
        if before.lastgroup == "kana":
            return True
        if self._line_breaks is None:
            self._line_breaks = [m.start() for m in regex.finditer("\n", text)]
            self._lines_with_kana = {bisect_left(self._line_breaks, m.start()) for m in _ANY_KANA.finditer(text)}
        return bisect_left(self._line_breaks, start) not in self._lines_with_kana
