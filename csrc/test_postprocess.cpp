// Stand-alone tests of the C++ core, without Python. tests/test_native_cpp.py builds this file with
// AddressSanitizer and UndefinedBehaviorSanitizer and runs it.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "postprocess.hpp"

using namespace nertron;

namespace {

int failures = 0;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "FAILED: %s\n", what);
        ++failures;
    }
}

template <typename F>
void check_throws(F&& f, const std::string& fragment, const char* what) {
    try {
        f();
        check(false, what);
    } catch (const std::invalid_argument& e) {
        check(std::string(e.what()).find(fragment) != std::string::npos, what);
    }
}

const std::vector<std::string> kTwoLabels = {"O", "B-PER"};
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kInt64Min = std::numeric_limits<int64_t>::min();

void test_labels() {
    const LabelTable table({"O", "B-PER", "I-PER", "B-LOC", "S-PER", "E-LOC"});
    check(table.types() == std::vector<std::string>({"PER", "LOC"}), "labels: types in first-seen order");
    check(table.prefix(4) == Prefix::S && table.type(4) == 0 && table.type(0) == -1, "labels: prefix and type");
    check_throws([] { LabelTable({"O", "X-PER"}); }, "label 1 ('X-PER') is not O", "bad prefix");
    check_throws([] { LabelTable({"O", "B-"}); }, "label 1 ('B-') is not O", "empty type");
    check_throws([] { LabelTable({}); }, "must not be empty", "no labels");
}

void test_alignment() {
    // One row, 4 tokens: <s> w0 w0 w1, 2 labels.
    const std::vector<float> logits = {0, 0, /*w0a*/ 2, 0, /*w0b*/ 0, 5, /*w1*/ 0, 1};
    const std::vector<int64_t> word_ids = {-1, 0, 0, 1};
    const int64_t words = 2;
    const PostProcessor first_pp(kTwoLabels, Aggregation::First);
    auto first = first_pp.align(logits.data(), word_ids.data(), 1, 4, 2, &words);
    check(first.labels == std::vector<int32_t>({0, 1}), "first: labels");
    check(std::fabs(first.scores[0] - 1 / (1 + std::exp(-2.0f))) < 1e-6, "first: score");
    auto max = PostProcessor(kTwoLabels, Aggregation::Max).align(logits.data(), word_ids.data(), 1, 4, 2, &words);
    check(max.labels[0] == 1, "max: most confident subword");
    auto average =
        PostProcessor(kTwoLabels, Aggregation::Average).align(logits.data(), word_ids.data(), 1, 4, 2, &words);
    check(average.labels[0] == 1, "average: mean distribution");
    const int64_t three = 3;  // a word without subwords keeps label -1
    auto missing = first_pp.align(logits.data(), word_ids.data(), 1, 4, 2, &three);
    check(missing.labels[2] == -1 && missing.scores[2] == 0.0f, "word without subword");
    const std::vector<int64_t> bad = {-1, 0, 0, 2};
    check_throws([&] { first_pp.align(logits.data(), bad.data(), 1, 4, 2, &words); },
                 "word_ids[0, 3] = 2 is out of range", "out-of-range word id");
    std::vector<float> nan = logits;
    nan[3] = std::nanf("");
    check_throws([&] { first_pp.align(nan.data(), word_ids.data(), 1, 4, 2, &words); }, "non-finite", "NaN logits");
    check_throws([&] { first_pp.align(logits.data(), word_ids.data(), 1, 2, 4, &words); },
                 "logits have 4 labels, the model's label table has 2", "label count");
}

void test_temperature() {
    // Temperature changes scores (softmax(logits / T)), never labels, for every aggregation.
    const std::vector<float> logits = {0, 0, /*w0a*/ 2, 0, /*w0b*/ 0, 5, /*w1*/ 0, 1};
    const std::vector<int64_t> word_ids = {-1, 0, 0, 1};
    const int64_t words = 2;
    for (Aggregation a : {Aggregation::First, Aggregation::Average, Aggregation::Max}) {
        auto plain = PostProcessor(kTwoLabels, a).align(logits.data(), word_ids.data(), 1, 4, 2, &words);
        auto warm = PostProcessor(kTwoLabels, a, 2.0f).align(logits.data(), word_ids.data(), 1, 4, 2, &words);
        check(plain.labels == warm.labels, "temperature: same labels");
        check(warm.scores[1] < plain.scores[1], "temperature > 1 lowers a confident score");
    }
    auto first = PostProcessor(kTwoLabels, Aggregation::First, 2.0f).align(logits.data(), word_ids.data(), 1, 4, 2, &words);
    check(std::fabs(first.scores[0] - 1 / (1 + std::exp(-1.0f))) < 1e-6, "temperature: first score");
    check_throws([] { PostProcessor(kTwoLabels, Aggregation::First, 0.0f); }, "temperature must be", "zero T");
    check_throws([] { PostProcessor(kTwoLabels, Aggregation::First, std::nanf("")); }, "temperature must be", "NaN T");
    // Its inverse is infinite, and 0 * inf would make every score NaN.
    check_throws([] { PostProcessor(kTwoLabels, Aggregation::First, 1e-39f); }, "temperature must be", "subnormal T");
}

void test_windows() {
    // Document of 5 words; windows [0, 3) and [2, 5). Word 2 is last in the first window (0 words of
    // context on its open right side) and first in the second (0 on its open left side): a tie, which
    // goes to the window that starts first, whichever arrives first.
    const std::vector<int32_t> labels = {1, 1, 1, 2, 2, 2};
    const std::vector<float> scores = {.1f, .2f, .3f, .4f, .5f, .6f};
    for (const bool reversed : {false, true}) {
        WindowMerger merger;
        const int64_t doc = merger.add_document(5);
        const int64_t one = 3;
        const int64_t d = doc;
        const int64_t starts[2] = {0, 2};
        for (int k = 0; k < 2; ++k) {
            const int w = reversed ? 1 - k : k;
            merger.merge(&d, &starts[w], &one, 1, labels.data() + 3 * w, scores.data() + 3 * w);
        }
        std::vector<int64_t> doc_words;
        auto merged = merger.take(1, doc_words);
        check(merged.labels == std::vector<int32_t>({1, 1, 1, 2, 2}), "merge: most-context rule");
        check(doc_words == std::vector<int64_t>({5}) && merger.pending() == 0, "merge: taken out");
    }
    WindowMerger merger;
    merger.add_document(5);
    const std::vector<int64_t> doc = {0, 0}, start = {0, 2}, count = {2, 2};
    merger.merge(doc.data(), start.data(), count.data(), 2, labels.data(), scores.data());
    std::vector<int64_t> doc_words;
    check_throws([&] { merger.take(1, doc_words); }, "word 4 of document 0 is not covered", "uncovered word");
    const int64_t other = 1;
    check_throws([&] { merger.merge(&other, start.data(), count.data(), 1, labels.data(), scores.data()); },
                 "window_doc[0] = 1 is not a pending document", "unknown document");
    const int64_t far = 4;
    check_throws([&] { merger.merge(doc.data(), &far, count.data(), 1, labels.data(), scores.data()); },
                 "(word_start = 4, window_words = 2) reaches outside document 0 of 5 words",
                 "window outside its document");
}

// Sizes and positions at the edges of int64: each is an error, never an overflow or a giant allocation.
void test_extreme_sizes() {
    const PostProcessor pp(kTwoLabels, Aggregation::Average);
    const std::vector<float> logits = {0, 1};
    const int64_t no_word = -1;
    for (const int64_t words : {kInt64Max, kMaxWords + 1, int64_t{-1}, kInt64Min}) {
        check_throws([&] { pp.align(logits.data(), &no_word, 1, 1, 2, &words); }, "num_words[0]", "align: size");
        check_throws([&] { WindowMerger().add_document(words); }, "num_words = ", "add_document: size");
    }
    // Each within the limit, their sum not (4 * 2^62 would wrap around to 0).
    const std::vector<int64_t> halves = {kMaxWords, 1}, quarters(4, int64_t{1} << 62);
    check_throws([&] { pp.align(nullptr, nullptr, 2, 0, 2, halves.data()); }, "num_words[1] = 1 brings",
                 "align: total");
    check_throws([&] { pp.decode(nullptr, nullptr, quarters.data(), 4, nullptr, nullptr); }, "row_words[0]",
                 "decode: total");
    check_throws([&] { checked_total(halves.data(), -1, "lengths"); }, "lengths has a negative count",
                 "negative count");

    WindowMerger merger;
    merger.add_document(3);
    const std::vector<int32_t> labels = {1, 1};
    const std::vector<float> scores = {.5f, .5f};
    const int64_t doc = 0, two = 2;
    // start + 2 overflows to a negative number: the check must not add them.
    for (const int64_t start : {kInt64Max, kInt64Max - 1, kInt64Min, int64_t{-1}, int64_t{2}}) {
        check_throws([&] { merger.merge(&doc, &start, &two, 1, labels.data(), scores.data()); },
                     "reaches outside document 0 of 3 words", "merge: window start");
    }
    for (const int64_t count : {kInt64Max, int64_t{-2}}) {
        const int64_t zero = 0;
        check_throws([&] { merger.merge(&doc, &zero, &count, 1, labels.data(), scores.data()); }, "window_words[0]",
                     "merge: window size");
    }
    for (const int64_t d : {kInt64Max, kInt64Min, int64_t{1}}) {
        const int64_t zero = 0;
        check_throws([&] { merger.merge(&d, &zero, &two, 1, labels.data(), scores.data()); },
                     "is not a pending document", "merge: document id");
    }
    std::vector<int64_t> doc_words;
    for (const int64_t count : {kInt64Max, kInt64Min, int64_t{2}}) {
        check_throws([&] { merger.take(count, doc_words); }, "is not in [0, 1]", "take: count");
    }
    const int64_t zero = 0, three = 3;  // the failed calls changed nothing: a whole window still fits
    merger.merge(&doc, &zero, &three, 1, std::vector<int32_t>(3, 1).data(), std::vector<float>(3, .5f).data());
    check(merger.take(1, doc_words).labels == std::vector<int32_t>({1, 1, 1}), "merge after rejected calls");
}

void test_spans() {
    // Labels: O B-PER I-PER B-LOC I-LOC; sequence I-PER I-PER B-PER O I-LOC.
    const PostProcessor pp({"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}, Aggregation::First);
    const std::vector<int32_t> labels = {2, 2, 1, 0, 4};
    const std::vector<float> scores = {1, .5f, 1, 1, 1};
    const std::vector<int64_t> rows = {5}, starts = {0, 3, 6, 9, 12}, ends = {2, 5, 8, 11, 14};
    auto spans = pp.decode(labels.data(), scores.data(), rows.data(), 1, starts.data(), ends.data());
    check(spans.first_word == std::vector<int64_t>({0, 2, 4}), "spans: starts");
    check(spans.end_word == std::vector<int64_t>({2, 3, 5}), "spans: ends");
    check(spans.type == std::vector<int32_t>({0, 0, 1}), "spans: types");
    check(spans.start_char == std::vector<int64_t>({0, 6, 12}) && spans.end_char[0] == 5, "spans: offsets");
    check(std::fabs(spans.score[0] - 0.75f) < 1e-6, "spans: mean score");
    const std::vector<int32_t> bad = {2, 9, 1, 0, 4};
    check_throws([&] { pp.decode(bad.data(), scores.data(), rows.data(), 1, nullptr, nullptr); },
                 "labels[1] = 9 is out of range", "out-of-range label");
    const std::vector<int32_t> negative = {2, -2, 1, 0, 4};
    check_throws([&] { pp.decode(negative.data(), scores.data(), rows.data(), 1, nullptr, nullptr); },
                 "labels[1] = -2 is out of range", "negative label");
    const std::vector<int64_t> bad_starts = {0, -1, 6, 9, 12}, bad_ends = {2, 5, 5, 11, 14};
    check_throws([&] { pp.decode(labels.data(), scores.data(), rows.data(), 1, bad_starts.data(), ends.data()); },
                 "word offsets at 1", "negative word offset");
    check_throws([&] { pp.decode(labels.data(), scores.data(), rows.data(), 1, starts.data(), bad_ends.data()); },
                 "word offsets at 2", "word ending before its start");
}

void test_word_links() {
    // 华|为 (joined) both B-ORG -> one ORG; 古|特 B-PER O and 雷 joined B-PER -> two; 부산|을 with 을 I-LOC, a
    // particle -> 부산 alone; a free B-ORG after the particle starts its own entity.
    const PostProcessor pp({"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}, Aggregation::First);
    const auto joined = static_cast<uint8_t>(WordLink::Joined), particle = static_cast<uint8_t>(WordLink::Particle);
    const std::vector<int32_t> labels = {5, 5, 1, 0, 1, 3, 4, 5, 5};
    const std::vector<uint8_t> links = {0, joined, 0, joined, joined, 0, particle, 0, 0};
    const std::vector<float> scores = {1, .5f, 1, 1, 1, 1, 1, 1, 1};
    const std::vector<int64_t> rows = {9};
    auto spans = pp.decode(labels.data(), scores.data(), rows.data(), 1, nullptr, nullptr, links.data());
    check(spans.first_word == std::vector<int64_t>({0, 2, 4, 5, 7, 8}), "links: starts");
    check(spans.end_word == std::vector<int64_t>({2, 3, 5, 6, 8, 9}), "links: ends");
    check(std::fabs(spans.score[0] - 0.75f) < 1e-6, "links: a joined entity's score is its words' mean");
    // 默|克尔 (joined) B-PER then B-LOC -> one PER: a cut word's type is its first piece's; a free B-LOC after
    // it starts anew.
    const std::vector<int32_t> mixed = {1, 3, 3};
    const std::vector<uint8_t> mixed_links = {0, joined, 0};
    const std::vector<int64_t> three_words = {3};
    spans = pp.decode(mixed.data(), scores.data(), three_words.data(), 1, nullptr, nullptr, mixed_links.data());
    check(spans.first_word == std::vector<int64_t>({0, 2}) && spans.end_word == std::vector<int64_t>({2, 3}) &&
              spans.type == std::vector<int32_t>({0, 1}),
          "links: a joined word of another type continues the entity, with the first piece's type");
    // BIOES: S-X then a joined S-X is one entity that still ends there (a free I-X after it starts anew).
    const PostProcessor bioes({"O", "S-PER", "B-PER", "I-PER", "E-PER"}, Aggregation::First);
    const std::vector<int32_t> tags = {1, 1, 3};
    const std::vector<uint8_t> cut = {0, joined, 0};
    const std::vector<int64_t> three = {3};
    spans = bioes.decode(tags.data(), scores.data(), three.data(), 1, nullptr, nullptr, cut.data());
    check(spans.first_word == std::vector<int64_t>({0, 2}) && spans.end_word == std::vector<int64_t>({2, 3}),
          "links: a joined S-X ends its entity");
    const std::vector<uint8_t> bad = {0, 6, 0};
    check_throws([&] { bioes.decode(tags.data(), scores.data(), three.data(), 1, nullptr, nullptr, bad.data()); },
                 "word_links[1] = 6 is not a WordLink", "an unknown word link");
}

void test_name_endings() {
    // 温州|市 (B-LOC O, place ending) is one LOC; 北京|大学 (B-LOC O, organisation ending) one ORG, the
    // ending's own tag (here B-ORG) overruled; 马云|市 (PER) and a place ending after an ORG stay apart; an
    // ending after O is a free word (its B-ORG starts an entity).
    const PostProcessor pp({"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"}, Aggregation::First);
    const auto place = static_cast<uint8_t>(WordLink::PlaceEnding), org = static_cast<uint8_t>(WordLink::OrgEnding);
    const std::vector<int32_t> labels = {3, 0, 0, 3, 5, 0, 1, 0, 5, 0, 0, 5};
    const std::vector<uint8_t> links = {0, place, 0, 0, org, 0, 0, place, 0, place, 0, org};
    const std::vector<float> scores = {1, .5f, 1, 1, .5f, 1, 1, 1, 1, 1, 1, 1};
    const std::vector<int64_t> rows = {12};
    auto spans = pp.decode(labels.data(), scores.data(), rows.data(), 1, nullptr, nullptr, links.data());
    check(spans.first_word == std::vector<int64_t>({0, 3, 6, 8, 11}) &&
              spans.end_word == std::vector<int64_t>({2, 5, 7, 9, 12}),
          "endings: spans");
    check(spans.type == std::vector<int32_t>({1, 2, 0, 2, 2}), "endings: an organisation ending makes an ORG");
    check(std::fabs(spans.score[0] - 0.75f) < 1e-6, "endings: the ending's score counts in the mean");
    // An ending goes on after a BIOES entity's S- or E- too, and a model without LOC/ORG reads it as free.
    const PostProcessor bioes({"O", "S-LOC", "B-LOC", "I-LOC", "E-LOC"}, Aggregation::First);
    const std::vector<int32_t> tags = {1, 0, 0};
    const std::vector<uint8_t> cut = {0, place, 0};
    const std::vector<int64_t> three = {3};
    spans = bioes.decode(tags.data(), scores.data(), three.data(), 1, nullptr, nullptr, cut.data());
    check(spans.first_word == std::vector<int64_t>({0}) && spans.end_word == std::vector<int64_t>({2}),
          "endings: after S-LOC");
    // 中国|队: a MISC (中国 as "Chinese") goes on over an organisation ending as an ORG, not over a place ending.
    const PostProcessor misc({"O", "B-MISC", "I-MISC", "B-ORG", "I-ORG"}, Aggregation::First);
    const std::vector<int32_t> team = {1, 0, 1, 0};
    const std::vector<uint8_t> team_links = {0, org, 0, place};
    const std::vector<int64_t> four = {4};
    spans = misc.decode(team.data(), scores.data(), four.data(), 1, nullptr, nullptr, team_links.data());
    check(spans.first_word == std::vector<int64_t>({0, 2}) && spans.end_word == std::vector<int64_t>({2, 3}) &&
              spans.type == std::vector<int32_t>({1, 0}),
          "endings: a MISC before an organisation ending is an ORG");
    const PostProcessor people({"O", "B-PER", "I-PER"}, Aggregation::First);
    const std::vector<int32_t> person = {1, 0, 0};
    spans = people.decode(person.data(), scores.data(), three.data(), 1, nullptr, nullptr, cut.data());
    check(spans.end_word == std::vector<int64_t>({1}), "endings: a table without LOC: the O ending ends the PER");
    // An ending that does not apply reads as joined: after a PER, a tagged ending goes on with the PER; in a
    // table without ORG an organisation ending goes on with the LOC before it (never a type the table lacks).
    const std::vector<int32_t> person_tagged = {1, 1, 0};
    spans = people.decode(person_tagged.data(), scores.data(), three.data(), 1, nullptr, nullptr, cut.data());
    check(spans.first_word == std::vector<int64_t>({0}) && spans.end_word == std::vector<int64_t>({2}) &&
              spans.type == std::vector<int32_t>({0}),
          "endings: a tagged ending after a PER reads as joined");
    const PostProcessor places({"O", "B-LOC", "I-LOC"}, Aggregation::First);
    const std::vector<int32_t> place_tagged = {1, 1, 0};
    const std::vector<uint8_t> org_cut = {0, org, 0};
    spans = places.decode(place_tagged.data(), scores.data(), three.data(), 1, nullptr, nullptr, org_cut.data());
    check(spans.first_word == std::vector<int64_t>({0}) && spans.end_word == std::vector<int64_t>({2}) &&
              spans.type == std::vector<int32_t>({0}),
          "endings: an organisation ending in a table without ORG reads as joined, the LOC stays a LOC");
}

void test_name_dot() {
    // 卡洛斯·阿马特 (B-PER O B-PER, the dot a name dot) is one PER, whatever the dot's tag; 東京・大阪 (B-LOC O
    // B-LOC) stays two places: the dot joins a person's name only. A dot before or after an O word is free.
    const PostProcessor pp({"O", "B-PER", "I-PER", "B-LOC", "I-LOC"}, Aggregation::First);
    const auto dot = static_cast<uint8_t>(WordLink::NameDot), joined = static_cast<uint8_t>(WordLink::Joined);
    const std::vector<int32_t> labels = {1, 0, 1, 2, 0, 3, 0, 3, 0, 1, 0, 0, 1, 2, 1};
    const std::vector<uint8_t> links = {0, dot, 0, joined, 0, 0, dot, 0, 0, 0, dot, dot, 0, dot, 0};
    const std::vector<float> scores = {1, .5f, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, .5f, 1};
    const std::vector<int64_t> rows = {15};
    auto spans = pp.decode(labels.data(), scores.data(), rows.data(), 1, nullptr, nullptr, links.data());
    check(spans.first_word == std::vector<int64_t>({0, 5, 7, 9, 12}) &&
              spans.end_word == std::vector<int64_t>({4, 6, 8, 10, 15}),
          "name dot: spans");
    check(spans.type == std::vector<int32_t>({0, 1, 1, 0, 0}), "name dot: types");
    check(std::fabs(spans.score[0] - 0.875f) < 1e-6, "name dot: the dot's score counts in the mean");
    // A PER before a LOC stays two entities.
    const std::vector<int32_t> person_place = {1, 0, 3};
    const std::vector<uint8_t> dot_between = {0, dot, 0};
    const std::vector<int64_t> three = {3};
    spans = pp.decode(person_place.data(), scores.data(), three.data(), 1, nullptr, nullptr, dot_between.data());
    check(spans.first_word == std::vector<int64_t>({0, 2}) && spans.type == std::vector<int32_t>({0, 1}),
          "name dot: PER then LOC");
    // BIOES: S-PER · S-PER is one entity; a dot at the end of a row is free.
    const PostProcessor bioes({"O", "S-PER", "B-PER", "I-PER", "E-PER"}, Aggregation::First);
    const std::vector<int32_t> tags = {1, 0, 1, 1, 0};
    const std::vector<uint8_t> cut = {0, dot, 0, 0, dot};
    const std::vector<int64_t> five = {5};
    spans = bioes.decode(tags.data(), scores.data(), five.data(), 1, nullptr, nullptr, cut.data());
    check(spans.first_word == std::vector<int64_t>({0, 3}) && spans.end_word == std::vector<int64_t>({3, 4}),
          "name dot: BIOES, and a dot ending the row");
}

void test_best_path() {
    // Two labels, both allowed anywhere except 1 after 0: the best path avoids that pair even at some cost.
    Transitions t;
    t.num_labels = 2;
    t.follows = {1, 0, 1, 1};
    t.starts = {1, 1};
    t.ends = {1, 1};
    const std::vector<double> log_probs = {std::log(0.6), std::log(0.4), std::log(0.1), std::log(0.9)};
    std::vector<int32_t> path(2, -1);
    best_path(t, log_probs.data(), 2, path.data());
    check(path == std::vector<int32_t>({1, 1}), "best path: 0.4 * 0.9 beats 0.6 * 0.1 once 0 -> 1 is forbidden");
    t.starts = {1, 0};
    best_path(t, log_probs.data(), 2, path.data());
    check(path == std::vector<int32_t>({0, 0}), "best path: a label that may not start is not chosen first");
    t.starts = {0, 0};
    best_path(t, log_probs.data(), 2, path.data());
    check(path == std::vector<int32_t>({1, 1}), "best path: with no allowed path, the fewest forbidden steps");
    best_path(t, log_probs.data(), 0, nullptr);  // nothing to write
    // A label of probability 0 (-infinity) is avoided even at the cost of a forbidden transition.
    t.starts = {1, 1};
    const double never = -std::numeric_limits<double>::infinity();
    const std::vector<double> only_one = {0.0, never, never, 0.0};  // word 0 can only be 0, word 1 only 1
    best_path(t, only_one.data(), 2, path.data());
    check(path == std::vector<int32_t>({0, 1}),
          "best path: a possible path with a forbidden step beats an impossible one");

    // IOB2 through align: argmax gives O I-PER; constrained gives B-PER I-PER, scored by B-PER's probability.
    const std::vector<std::string> iob2 = {"O", "B-PER", "I-PER"};
    const std::vector<float> logits = {0, 0, 0, 3, 2, 0, 0, 1, 4};  // <s> pad, then words 0 and 1
    const std::vector<int64_t> word_ids = {-1, 0, 1};
    const int64_t words = 2;
    const auto plain = PostProcessor(iob2, Aggregation::First).align(logits.data(), word_ids.data(), 1, 3, 3, &words);
    const PostProcessor constrained(iob2, Aggregation::First, 1.0f, true);
    const auto fixed = constrained.align(logits.data(), word_ids.data(), 1, 3, 3, &words);
    check(plain.labels == std::vector<int32_t>({0, 2}), "constrained: argmax reads O I-PER");
    check(fixed.labels == std::vector<int32_t>({1, 2}), "constrained: B-PER I-PER");
    const float b_per = std::exp(2.0f) / (std::exp(3.0f) + std::exp(2.0f) + 1.0f);
    check(std::fabs(fixed.scores[0] - b_per) < 1e-6f, "constrained: the chosen label's probability");
}

}  // namespace

int main() {
    test_labels();
    test_alignment();
    test_temperature();
    test_windows();
    test_spans();
    test_word_links();
    test_name_endings();
    test_name_dot();
    test_extreme_sizes();
    test_best_path();
    if (failures == 0) std::printf("all C++ core checks passed\n");
    return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
