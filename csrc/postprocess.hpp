// Post-processing core of nertron: plain C++17, no Python.
//
// Every function takes flat, C-contiguous buffers with explicit sizes, checks
// them, and throws std::invalid_argument (message names the argument) on bad
// input. Variable-length rows are passed CSR-style: concatenated values plus
// one length per row.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace nertron {

// How the subword predictions of a word become one prediction.
enum class Aggregation {
    First,    // the word's first subword
    Average,  // mean of the subwords' softmax distributions
    Max,      // the subword whose top probability is highest
};

Aggregation parse_aggregation(const std::string& name);

// Result of aligning subwords to words, flat over all rows (row-major).
struct WordPredictions {
    std::vector<int32_t> labels;  // argmax label per word; -1 if the word got no subword
    std::vector<float> scores;    // probability of that label (0 when labels == -1)
    std::vector<float> probs;     // [words, num_labels] distributions, if asked for
};

// logits: [batch, seq, num_labels]; word_ids: [batch, seq], -1 for special
// and padding tokens, else a word index in [0, num_words[b]).
WordPredictions align_words(const float* logits, const int64_t* word_ids, int64_t batch,
                            int64_t seq, int64_t num_labels, const int64_t* num_words,
                            Aggregation aggregation, bool with_probs);

// Merges overlapping windows back into documents.
//
// Window w covers words [word_start[w], word_start[w] + window_words[w]) of
// document window_doc[w]; its predictions are the w-th row of the CSR arrays
// labels/scores (and probs, [words, num_labels], when num_labels > 0).
// Rule: each word takes the prediction of the window in which it has the most
// context, i.e. the largest min(words before it, words after it), where a side
// that reaches the document's edge counts as unlimited. Ties go to the earlier
// window (in the order given), so the result is deterministic.
WordPredictions merge_windows(const int64_t* window_doc, const int64_t* word_start,
                              const int64_t* window_words, int64_t num_windows,
                              const int32_t* labels, const float* scores, const float* probs,
                              int64_t num_labels, const int64_t* doc_words, int64_t num_docs);

// Tag prefix of each label id, as in the tag scheme: "O", "B-X", "I-X", "E-X", "S-X".
enum class Prefix : uint8_t { O = 0, B = 1, I = 2, E = 3, S = 4 };

struct Spans {
    std::vector<int64_t> row;         // which row (document) the span is in
    std::vector<int64_t> first_word;  // index of the first word, within the row
    std::vector<int64_t> end_word;    // one past the last word
    std::vector<int32_t> type;        // entity type id (label_type of its labels)
    std::vector<float> score;         // mean probability of the span's words
    std::vector<int64_t> start_char;  // filled when word offsets are given
    std::vector<int64_t> end_char;
};

// Decodes per-word label ids into entity spans with the semantics of
// conlleval / seqeval's default mode, which accepts IOB1, IOB2 and BIOES alike:
// B-X and S-X always start an entity; I-X or E-X start one after O, after an
// E/S tag, or after another type; E-X and S-X end one. Label -1 counts as O.
// label_prefix / label_type map each label id to its prefix and type id.
// word_start_char / word_end_char (optional, CSR like labels) give each word's
// [start, end) character offsets, from which span offsets are taken.
Spans decode_spans(const int32_t* labels, const float* scores, const int64_t* row_words,
                   int64_t num_rows, const uint8_t* label_prefix, const int32_t* label_type,
                   int64_t num_labels, const int64_t* word_start_char,
                   const int64_t* word_end_char);

// Sum of row lengths, checking each is >= 0 (name is used in the message).
int64_t checked_total(const int64_t* lengths, int64_t count, const char* name);

}  // namespace nertron
