"""Languages written without spaces: ICU's dictionary word break, exact offsets, the model's own pieces, and
whole-word entities from the default model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nertron import NER
from nertron._native import (
    WORD_FREE,
    WORD_JOINED,
    WORD_NAME_DOT,
    WORD_ORG_ENDING,
    WORD_PARTICLE,
    WORD_PLACE_ENDING,
)
from nertron.model.bundle import Bundle
from nertron.subwords import HFTokenizer, load_tokenizer
from nertron.text import SegmentedText, split_words
from nertron.word_links import korean_particle

from tests.languages import WHOLE_WORD_ENTITIES
from tests.properties import examples
from tests.test_pipeline import InTurn


@pytest.fixture(scope="module")
def default_int8_bundle(default_int8: Path) -> Bundle:
    return Bundle.load(default_int8)


@pytest.fixture(scope="module")
def ner(default_int8: Path) -> Iterator[NER]:
    with NER(default_int8) as model:
        yield model


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "习近平在北京会见了法国总统马克龙。",
            ["习", "近平", "在", "北京", "会见", "了", "法国", "总统", "马克", "龙", "。"],
        ),
        ("東京は日本の首都です。", ["東京", "は", "日本", "の", "首都", "です", "。"]),
        ("ラーメンを食べた", ["ラーメン", "を", "食", "べた"]),  # the prolonged sound mark stays in its word
        ("กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย", ["กรุงเทพมหานคร", "เป็น", "เมือง", "หลวง", "ของ", "ประเทศไทย"]),
        ("ភ្នំពេញជារាជធានីនៃប្រទេសកម្ពុជា", ["ភ្នំពេញ", "ជា", "រាជធានី", "នៃ", "ប្រទេស", "កម្ពុជា"]),
        ("ວຽງຈັນແມ່ນນະຄອນຫຼວງຂອງລາວ", ["ວຽງຈັນ", "ແມ່ນ", "ນະຄອນຫຼວງ", "ຂອງ", "ລາວ"]),
        ("မြန်မာနိုင်ငံ၏ အကြီးဆုံးမြို့", ["မြန်မာနိုင်ငံ", "၏", "အကြီး", "ဆုံး", "မြို့"]),
        # mixed scripts: each run of a script without spaces is cut on its own
        ("iPhone手机于2024年在东京发布", ["iPhone", "手机", "于", "2024", "年", "在", "东京", "发布"]),
        ("Angela Merkel 在柏林", ["Angela", "Merkel", "在", "柏林"]),
        ("Thai: ประเทศไทย, 日本 and Москва.", ["Thai", ":", "ประเทศไทย", ",", "日本", "and", "Москва", "."]),
    ],
)
def test_dictionary_words(text: str, words: list[str]) -> None:
    segmented = split_words(text)
    assert segmented.words == words
    assert [text[s:e] for s, e in zip(segmented.starts, segmented.ends, strict=True)] == words


def test_offsets_are_code_points_after_astral_characters() -> None:
    """ICU counts UTF-16 units; offsets stay Python string indices past characters outside the BMP."""
    text = "𠮷野家で😀牛丼を食べた。\U0001d49c 北京"
    segmented = SegmentedText.split(text)
    words = ["𠮷", "野家", "で", "😀", "牛", "丼", "を", "食", "べた", "。", "\U0001d49c", "北京"]
    assert list(segmented) == words
    assert segmented.starts.tolist() == [0, 1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 14]


def test_words_of_scripts_without_spaces_are_unmarked() -> None:
    segmented = SegmentedText.split("Angela Merkel 在柏林 กรุงเทพ")
    assert segmented.unmarked is not None
    assert [w for w, m in zip(segmented, segmented.unmarked, strict=True) if m] == ["在", "柏林", "กรุงเทพ"]
    assert SegmentedText.split("Angela Merkel in Berlin").unmarked is None
    # pre-split words (nertron eval, NER.tag) are marked the same way
    joined = SegmentedText.join([["Angela", "Merkel", "在", "柏林"], ["กรุงเทพ", "."]])
    assert joined.unmarked is not None and joined.unmarked.tolist() == [False, False, True, True, True, False]
    assert SegmentedText.join([["Angela", "Merkel"]]).unmarked is None


def test_unmarked_words_are_tokenised_as_running_text(default_int8_bundle: Bundle) -> None:
    """Without the word-start piece, as XLM-R saw these scripts; SentencePiece and ``tokenizers`` agree."""
    lean = load_tokenizer(default_int8_bundle)
    assert default_int8_bundle.tokenizer_path is not None
    reference = HFTokenizer(default_int8_bundle.tokenizer_path)
    segmented = SegmentedText.split("习近平在北京会见了马克龙。 東京は日本の首都 กรุงเทพมหานคร Paris")
    words = list(segmented)
    ids, word_ids = lean.encode_words(words, segmented.unmarked)
    expected = reference.encode_words(words, segmented.unmarked)
    assert np.array_equal(ids, expected[0]) and np.array_equal(word_ids, expected[1])
    marker = 6  # "▁" alone
    first_pieces = ids[np.r_[True, word_ids[1:] != word_ids[:-1]]]
    assert segmented.unmarked is not None and segmented.unmarked.sum() == 14
    assert marker not in first_pieces[segmented.unmarked].tolist()  # no unmarked word starts with a lone "▁"
    marked_ids, _ = lean.encode_words(words)
    assert marker in marked_ids.tolist()  # as they were before


@pytest.mark.parametrize("text", list(WHOLE_WORD_ENTITIES))
def test_whole_word_entities(ner: NER, text: str) -> None:
    found = ner(text)
    assert set(WHOLE_WORD_ENTITIES[text]) <= {(e.text, e.label) for e in found}, found
    assert all(text[e.start : e.end] == e.text for e in found)


@settings(max_examples=examples(200))
@given(
    st.lists(
        st.sampled_from([*"北京東京はの在", "กรุงเทพ", "ភ្នំពេញ", "Paris", " ", "𠮷", "\u3099", "。", "\n", "1"]),
        max_size=20,
    ).map("".join)
)
def test_mixed_script_offsets_are_exact(text: str) -> None:
    """Words in order, each ``text[start:end]``, and together every character that is not a space."""
    segmented = SegmentedText.split(text)
    starts, ends = segmented.starts.tolist(), segmented.ends.tolist()
    assert all(start >= end for start, end in zip(starts[1:], ends, strict=False))
    assert all(text[s:e] == w for s, e, w in zip(starts, ends, segmented, strict=True))
    assert "".join(segmented) == "".join(text.split())


@pytest.mark.parametrize(
    ("text", "words", "particles"),
    [
        (
            "부산을 떠난 손흥민은 런던에서 뛰었다.",
            ["부산", "을", "떠난", "손흥민", "은", "런던", "에서", "뛰었다", "."],
            ["을", "은", "에서"],
        ),
        (
            "삼성전자는 현대자동차가 서울에서부터",
            ["삼성전자", "는", "현대자동차", "가", "서울", "에서부터"],
            ["는", "가", "에서부터"],
        ),
        # names ending in a particle's syllable stay whole: 이 after a vowel, a one-syllable stem, 은 after a
        # vowel (한지은), and the listed ones (김정은, 카이로); 로 follows a vowel or ㄹ
        (
            "상하이 하와이 인도 한지은 김정은 카이로 인도가 서울로",
            ["상하이", "하와이", "인도", "한지은", "김정은", "카이로", "인도", "가", "서울", "로"],
            ["가", "로"],
        ),
        # particles stack, and are cut off together: case + auxiliary (에+는, 로서+는; 로부터, 와의 listed), the
        # quotative (이라고), comparisons (처럼, 보다)
        (
            "서울에는 삼성전자로부터 현대자동차와의 캐나다로서는",
            ["서울", "에는", "삼성전자", "로부터", "현대자동차", "와의", "캐나다", "로서는"],
            ["에는", "로부터", "와의", "로서는"],
        ),
        (
            "부산이라고 손흥민처럼 런던보다",
            ["부산", "이라고", "손흥민", "처럼", "런던", "보다"],
            ["이라고", "처럼", "보다"],
        ),
        ("벨기에 벨기에에서는", ["벨기에", "벨기에", "에서는"], ["에서는"]),  # a country ending in 에, listed
        # only particles that stack are cut as a stack (not 와+에서 in 시나가와에서, 로+는 in 파블로는, 에+가), and a
        # listed name is never cut into (카이로+도); 도 alone after a noun is not cut (프로도, 서울도)
        (
            "카이로도 벨기에도 시나가와에서 파블로는",
            ["카이로", "도", "벨기에", "도", "시나가와", "에서", "파블로", "는"],
            ["도", "도", "에서", "는"],
        ),
        (
            "사나에가 손정은이 고양이가 프로도 서울도",
            ["사나에", "가", "손정은", "이", "고양이", "가", "프로도", "서울도"],
            ["가", "이", "가"],
        ),
        # letters or digits before the Hangul are part of the noun; a listed name followed by more of the noun
        # (오키나와현) is cut by the rules, never inside the name; 와 and 께서 stack
        (
            "LG전자는 2024년에는 오키나와현에서",
            ["LG전자", "는", "2024년", "에는", "오키나와현", "에서"],
            ["는", "에는", "에서"],
        ),
        (
            "우리나라는 러시아와는 대통령께서는",
            ["우리나라", "는", "러시아", "와는", "대통령", "께서는"],
            ["는", "와는", "께서는"],
        ),
        # the quotative 라는 after a vowel (but 나라+는, listed), and no counter after a digit (종로3가, 수사1과)
        (
            "소니라는 BTS라는 우리나라는 종로3가에서 수사1과는",
            ["소니", "라는", "BTS", "라는", "우리나라", "는", "종로3가", "에서", "수사1과", "는"],
            ["라는", "라는", "는", "에서", "는"],
        ),
        # a listed name ends the cutting (김정은+과+의); 도 alone is not cut (place names end in it), 에도 is
        (
            "김정은과의 경기도 제주도 한국은행에도",
            ["김정은", "과의", "경기도", "제주도", "한국은행", "에도"],
            ["과의", "에도"],
        ),
    ],
)
def test_korean_particles_are_cut_off_their_word(text: str, words: list[str], particles: list[str]) -> None:
    segmented = SegmentedText.split(text)
    assert list(segmented) == words
    assert all(text[s:e] == w for s, e, w in zip(segmented.starts, segmented.ends, segmented, strict=True))
    assert segmented.links is not None and segmented.unmarked is not None
    assert [w for w, link in zip(segmented, segmented.links, strict=True) if link == WORD_PARTICLE] == particles
    # a particle is tokenised as the rest of its word (no word-start marker), the noun before it as a word
    assert [w for w, m in zip(segmented, segmented.unmarked, strict=True) if m] == particles


# Names (places, organisations, persons, written for this test), alone and with each particle in the form Korean
# gives it after the name's last syllable: (after a final consonant, after a vowel; ㄹ takes 로 forms), then
# particles with one form.
KOREAN_NAMES = str.split(
    "서울 부산 경기도 제주도 도쿄 홋카이도 오키나와 캐나다 벨기에 이라크 이란 이스라엘 요르단 인도 가나 하와이 상하이 "
    "카이로 시카고 니카라과 파라과이 삼성전자 현대자동차 한국은행 김정은 손흥민 이치로 아베 반기문 박지성 아이유 "
    "대한민국 코로나 스즈키 가와사키 베트남 몽골 말라가 페드로 마두로"
)
KOREAN_PARTICLE_FORMS = [
    ("은", "는"), ("이", "가"), ("을", "를"), ("과", "와"), ("으로", "로"), ("으로부터", "로부터"), ("과의", "와의"),
    ("이라고", "라고"), ("으로서는", "로서는"),
    *((p, p) for p in str.split("의 에 에서 에게 에서는 에는 에도 에만 처럼 보다 보다도 까지 까지도 부터 에서의")),
]  # fmt: skip


@pytest.mark.parametrize("name", KOREAN_NAMES)
def test_a_korean_name_is_cut_from_its_particles_exactly(name: str) -> None:
    assert korean_particle(name) == 0
    final = (ord(name[-1]) - 0xAC00) % 28  # the last syllable's final consonant, 0: none; 8: ㄹ
    for after_consonant, after_vowel in KOREAN_PARTICLE_FORMS:
        use_consonant_form = final != 0 and not (final == 8 and after_consonant.startswith("으로"))
        particle = after_consonant if use_consonant_form else after_vowel
        assert korean_particle(name + particle) == len(particle), name + particle


def test_words_cut_from_a_run_without_spaces_are_joined() -> None:
    segmented = SegmentedText.split("Angela 华为在联合国 กรุงเทพ 2024")
    assert segmented.links is not None
    linked = dict(zip(segmented, segmented.links.tolist(), strict=True))
    assert linked == {"Angela": WORD_FREE, "华": WORD_FREE, "为": WORD_JOINED, "在": WORD_JOINED, "联合": WORD_JOINED,
                      "国": WORD_JOINED, "กรุงเทพ": WORD_FREE, "2024": WORD_FREE}  # fmt: skip
    assert SegmentedText.split("Angela Merkel in Berlin").links is None
    assert SegmentedText.split("北京上海广州").links is None  # dictionary words side by side: three places
    thai = SegmentedText.split("ประชุมที่เจนีวา")  # Thai: ICU's fallback cuts syllables, every cut is linked
    assert thai.links is not None and thai.links.tolist() == [WORD_FREE] + [WORD_JOINED] * (len(thai) - 1)


@pytest.mark.parametrize(
    ("text", "endings"),
    [
        ("温州市", [("市", WORD_PLACE_ENDING)]),
        ("西藏自治区", [("自治", WORD_PLACE_ENDING), ("区", WORD_PLACE_ENDING)]),  # one ending over ICU's two words
        ("静岡県", [("県", WORD_PLACE_ENDING)]),
        ("北京大学的学生", [("大学", WORD_ORG_ENDING)]),
        ("澳门日报社", [("日", WORD_ORG_ENDING), ("报社", WORD_ORG_ENDING)]),  # the longest ending, 日报社
        ("京都大学", [("大学", WORD_ORG_ENDING)]),
        ("香港特別行政區", [("特別", WORD_PLACE_ENDING), ("行政區", WORD_PLACE_ENDING)]),  # traditional Chinese
        ("沙田區的中國隊", [("區", WORD_PLACE_ENDING), ("隊", WORD_ORG_ENDING)]),
        ("北京市民", []),  # 市民 (citizens) is a word of its own, not 市
        ("中国会继续", []),  # 会 ("will") is not an ending
        ("大学在北京", []),  # an ending opens the run: nothing before it to end
    ],
)
def test_name_endings_are_linked_to_the_word_before(text: str, endings: list[tuple[str, int]]) -> None:
    segmented = SegmentedText.split(text)
    links = segmented.links.tolist() if segmented.links is not None else [WORD_FREE] * len(segmented)
    linked = zip(segmented, links, strict=True)
    assert [(w, link) for w, link in linked if link in (WORD_PLACE_ENDING, WORD_ORG_ENDING)] == endings


@pytest.mark.parametrize(
    ("text", "dots"),
    [
        ("卡洛斯·阿马特在表决前指出", ["·"]),  # U+00B7, the Chinese name dot
        ("ジョン・スミス氏", ["・"]),  # U+30FB, the Japanese one
        ("レオナルド・ダ・ヴィンチ", ["・", "・"]),
        ("彼得•皮奥", ["•"]),  # a bullet used for it
        ("ｼﾞｮﾝ･ｽﾐｽ", ["･"]),  # halfwidth katakana
        ("Angela·Merkel", []),  # only between Han or Kana letters
        ("·安南", []),  # nothing before it
        ("北京 · 上海", []),  # spaces around it: a separator, not part of a name
        ("鲍里斯・约翰逊访问了日本", ["・"]),  # Han on both sides, no kana in the line: Chinese
        ("岸田文雄・バイデン両氏", []),  # Han, then kana: a Japanese list of persons
        ("安倍・菅両氏が会談した", []),  # Han on both sides in a Japanese line (kana in it): a list
        ("安倍・菅両氏が会談した\n鲍里斯·约翰逊访问了日本", ["·"]),  # the next line is Chinese
        ("安倍・菅両氏が会談した\r\n鲍里斯·约翰逊访问了日本", ["·"]),
        ("安倍・ジョン", []),  # Han, then kana
        ("ジョン・", []),  # nothing after it
    ],
)
def test_a_middle_dot_between_two_kana_or_two_chinese_han_letters_is_a_name_dot(text: str, dots: list[str]) -> None:
    segmented = SegmentedText.split(text)
    links = segmented.links.tolist() if segmented.links is not None else [WORD_FREE] * len(segmented)
    assert [word for word, link in zip(segmented, links, strict=True) if link == WORD_NAME_DOT] == dots


class EveryTokenTagged:
    """A model that tags every token with one label: the decoder alone decides where entities end."""

    runtime, concurrency = "test", 1

    def __init__(self, label: int, num_labels: int) -> None:
        self.label, self.num_labels = label, num_labels

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        logits = np.zeros((*input_ids.shape, self.num_labels), np.float32)
        logits[..., self.label] = 10.0
        return logits


def test_an_entity_is_never_cut_where_the_segmenter_cut(ner: NER) -> None:
    labels = ner.pipeline.labels
    pipeline = ner.pipeline.replace(backend=InTurn(EveryTokenTagged(labels.index("B-ORG"), len(labels))))
    texts = ["华为在联合国。", "부산을 떠났다", "Angela 华为", "ผู้ว่าการเจนีวา"]
    found = [[e.text for e in entities] for entities in pipeline.entities(texts)]
    # each word a B-ORG: runs without spaces come back whole, a particle never inside an entity, spaces still cut
    assert found == [["华为在联合国", "。"], ["부산", "떠났다"], ["Angela", "华为"], ["ผู้ว่าการเจนีวา"]]
    assert all(len(list(ner.pipeline.segmenter(t))) > len(f) for t, f in zip(texts, found, strict=True))
