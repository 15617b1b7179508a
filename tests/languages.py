"""Hand-written sentences in scripts without spaces (written for these tests, from no data set), with the
whole-word entities the default model must find in them: shared by the in-process, Triton and Spark tests."""

from __future__ import annotations

# text -> (entity text, label) pairs that must be among the entities found. 马克龙 is two dictionary words
# (马克 龙) that the model tags as one entity; 特朗普, 拜登 and 默克尔 are cut into pieces, which the decoder keeps
# together (word links: 默 PER + 克尔 LOC is 默克尔 PER, the first piece's type). Korean particles are cut off
# (부산을 -> 부산). Name endings ICU cuts off go with the name (温州|市 LOC, 北京|大学 ORG, 愛知|県 LOC;
# 中国|队 ORG, though the model tags 中国 MISC there). A foreign name's parts go together across the middle dot
# (鲍里斯·约翰逊, ジョン・スミス: word links, WORD_NAME_DOT), listed places and persons do not (東京・大阪;
# 岸田文雄・バイデン, Han then kana). Stacked Korean particles are cut off too (부산이라고, 삼성전자로부터), also
# after Latin letters (LG전자는). 习近平 comes back whole since labels are constrained to IOB2 (before: 近平,
# its first character tagged I-PER after O).
WHOLE_WORD_ENTITIES: dict[str, list[tuple[str, str]]] = {
    "习近平在北京会见了法国总统马克龙。": [("习近平", "PER"), ("北京", "LOC"), ("马克龙", "PER")],
    "马云在杭州创办了公司。": [("马云", "PER"), ("杭州", "LOC")],
    "昨天\uff0c微软在上海发布了新产品。": [("上海", "LOC")],
    "普京在莫斯科会见了默克尔。": [("普京", "PER"), ("莫斯科", "LOC"), ("默克尔", "PER")],
    "特朗普和拜登在华盛顿辩论。": [("特朗普", "PER"), ("拜登", "PER"), ("华盛顿", "LOC")],
    "부산을 떠난 손흥민은 런던에서 뛰었다.": [("부산", "LOC"), ("손흥민", "PER"), ("런던", "LOC")],
    "그는 부산이라고 말했다.": [("부산", "LOC")],
    "삼성전자로부터 연락이 왔다.": [("삼성전자", "ORG")],
    "현대자동차와의 협력을 발표했다.": [("현대자동차", "ORG")],
    "LG전자는 서울에서 신제품을 발표했다.": [("LG전자", "ORG"), ("서울", "LOC")],  # Latin letters, then Hangul
    "SK하이닉스에서 일한다.": [("SK하이닉스", "ORG")],
    "오키나와현에서 지진이 발생했다.": [("오키나와현", "LOC")],  # a listed name, then more of the noun
    "東京は日本の首都です。": [("東京", "LOC"), ("日本", "LOC")],
    "トヨタ自動車の豊田章男社長が名古屋で講演した。": [("トヨタ自動車", "ORG"), ("豊田章男", "PER"), ("名古屋", "LOC")],
    "京都大学の研究者が愛知県で講演した。": [("京都大学", "ORG"), ("愛知県", "LOC")],
    "温州市的企业家访问了北京大学。": [("温州市", "LOC"), ("北京大学", "ORG")],
    "中国队在决赛中战胜了巴西队。": [("中国队", "ORG"), ("巴西队", "ORG")],
    "中國隊在決賽中戰勝了巴西隊。": [("中國隊", "ORG"), ("巴西隊", "ORG")],  # the same in traditional characters
    "英国首相鲍里斯·约翰逊访问了日本。": [("鲍里斯·约翰逊", "PER"), ("日本", "LOC")],
    "ジョン・スミス氏が東京で講演した。": [("ジョン・スミス", "PER"), ("東京", "LOC")],
    "東京・大阪で会議が開かれた。": [("東京", "LOC"), ("大阪", "LOC")],  # a list: the dot joins persons only
    # two persons listed, not one
    "岸田文雄・バイデン両氏が東京で会談した。": [("岸田文雄", "PER"), ("バイデン", "PER"), ("東京", "LOC")],
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย": [("กรุงเทพมหานคร", "LOC")],
    "นายกรัฐมนตรีเดินทางไปเชียงใหม่": [("เชียงใหม่", "LOC")],
    "โตโยต้าประกาศผลประกอบการที่กรุงเทพ": [("โตโยต้า", "ORG"), ("กรุงเทพ", "LOC")],
    "Angela Merkel 在柏林会见了 Emmanuel Macron。": [
        ("Angela Merkel", "PER"),
        ("柏林", "LOC"),
        ("Emmanuel Macron", "PER"),
    ],
}

SENTENCES = list(WHOLE_WORD_ENTITIES)
