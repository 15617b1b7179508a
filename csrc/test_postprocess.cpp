// Stand-alone tests of the C++ core, without Python. tests/test_native_cpp.py builds this file with
// AddressSanitizer and UndefinedBehaviorSanitizer and runs it.
#include <cmath>
#include <cstdio>
#include <cstdlib>
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

void test_alignment() {
    // One row, 4 tokens: <s> w0 w0 w1, 2 labels.
    const std::vector<float> logits = {0, 0, /*w0a*/ 2, 0, /*w0b*/ 0, 5, /*w1*/ 0, 1};
    const std::vector<int64_t> word_ids = {-1, 0, 0, 1};
    const int64_t words = 2;
    auto first = align_words(logits.data(), word_ids.data(), 1, 4, 2, &words, Aggregation::First, false);
    check(first.labels == std::vector<int32_t>({0, 1}), "first: labels");
    check(std::fabs(first.scores[0] - 1 / (1 + std::exp(-2.0f))) < 1e-6, "first: score");
    auto max = align_words(logits.data(), word_ids.data(), 1, 4, 2, &words, Aggregation::Max, true);
    check(max.labels[0] == 1 && max.probs.size() == 4, "max: most confident subword");
    auto average = align_words(logits.data(), word_ids.data(), 1, 4, 2, &words, Aggregation::Average, false);
    check(average.labels[0] == 1, "average: mean distribution");
    const int64_t three = 3;  // a word without subwords keeps label -1
    auto missing = align_words(logits.data(), word_ids.data(), 1, 4, 2, &three, Aggregation::First, false);
    check(missing.labels[2] == -1 && missing.scores[2] == 0.0f, "word without subword");
    const std::vector<int64_t> bad = {-1, 0, 0, 2};
    check_throws([&] { align_words(logits.data(), bad.data(), 1, 4, 2, &words, Aggregation::First, false); },
                 "word_ids[0, 3] = 2 is out of range", "out-of-range word id");
    std::vector<float> nan = logits;
    nan[3] = std::nanf("");
    check_throws([&] { align_words(nan.data(), word_ids.data(), 1, 4, 2, &words, Aggregation::First, false); },
                 "non-finite", "NaN logits");
    check_throws([] { parse_aggregation("simple"); }, "aggregation must be", "unknown aggregation");
}

void test_windows() {
    // Document of 5 words; windows [0, 3) and [2, 5). Word 2 is last in the first window (0 words of
    // context on its open right side) and first in the second (0 on its open left side): a tie, which
    // goes to the earlier window.
    const std::vector<int64_t> doc = {0, 0}, start = {0, 2}, count = {3, 3}, doc_words = {5};
    const std::vector<int32_t> labels = {1, 1, 1, 2, 2, 2};
    const std::vector<float> scores = {.1f, .2f, .3f, .4f, .5f, .6f};
    auto merged = merge_windows(doc.data(), start.data(), count.data(), 2, labels.data(), scores.data(), nullptr, 0,
                                doc_words.data(), 1);
    check(merged.labels == std::vector<int32_t>({1, 1, 1, 2, 2}), "merge: most-context rule");
    const std::vector<int64_t> short_count = {2, 2};
    check_throws([&] { merge_windows(doc.data(), start.data(), short_count.data(), 2, labels.data(), scores.data(),
                                     nullptr, 0, doc_words.data(), 1); },
                 "not covered", "uncovered word");
}

void test_spans() {
    // Labels: O B-PER I-PER B-LOC I-LOC; sequence I-PER I-PER B-PER O I-LOC.
    const std::vector<uint8_t> prefix = {0, 1, 2, 1, 2};
    const std::vector<int32_t> type = {-1, 0, 0, 1, 1};
    const std::vector<int32_t> labels = {2, 2, 1, 0, 4};
    const std::vector<float> scores = {1, .5f, 1, 1, 1};
    const std::vector<int64_t> rows = {5}, starts = {0, 3, 6, 9, 12}, ends = {2, 5, 8, 11, 14};
    auto spans = decode_spans(labels.data(), scores.data(), rows.data(), 1, prefix.data(), type.data(), 5,
                              starts.data(), ends.data());
    check(spans.first_word == std::vector<int64_t>({0, 2, 4}), "spans: starts");
    check(spans.end_word == std::vector<int64_t>({2, 3, 5}), "spans: ends");
    check(spans.start_char == std::vector<int64_t>({0, 6, 12}) && spans.end_char[0] == 5, "spans: offsets");
    check(std::fabs(spans.score[0] - 0.75f) < 1e-6, "spans: mean score");
    const std::vector<int32_t> bad = {2, 9, 1, 0, 4};
    check_throws([&] { decode_spans(bad.data(), scores.data(), rows.data(), 1, prefix.data(), type.data(), 5,
                                    nullptr, nullptr); },
                 "labels[1] = 9 is out of range", "out-of-range label");
}

}  // namespace

int main() {
    test_alignment();
    test_windows();
    test_spans();
    if (failures == 0) std::printf("all C++ core checks passed\n");
    return failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
