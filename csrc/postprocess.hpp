// Post-processing core of nertron: plain C++17, no Python.
//
// A token classifier gives logits per subword; this turns them into entity spans:
//   PostProcessor::align   subword logits of a batch of windows -> one label and score per word
//   WindowMerger           overlapping windows' word predictions -> one per word of each document
//   PostProcessor::decode  word labels -> entity spans with word and character offsets
//
// Every function takes flat, C-contiguous buffers with explicit sizes, checks them, and throws
// std::invalid_argument (the message names the argument) on bad input. Variable-length rows are
// passed CSR-style: concatenated values plus one length per row.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "best_path.hpp"

namespace nertron {

// The most words of a row, a document, or all rows of one call: far more than any text, and a bound that
// turns a garbage size (an overflowed or uninitialised count) into an error rather than a giant
// allocation, and keeps every sum of word counts far from overflow.
constexpr int64_t kMaxWords = int64_t{1} << 30;

// How the subword predictions of a word become one prediction.
enum class Aggregation {
    First,    // the word's first subword
    Average,  // mean of the subwords' softmax distributions
    Max,      // the subword whose top probability is highest
};

// Tag prefix of a label: "O", "B-X", "I-X", "E-X", "S-X".
enum class Prefix : uint8_t { O = 0, B = 1, I = 2, E = 3, S = 4 };

// A model's labels ("O", "B-PER", "I-PER", ...) parsed into prefixes and entity types.
class LabelTable {
   public:
    // Throws std::invalid_argument naming a label that is not "O" or "<B|I|E|S>-<TYPE>".
    explicit LabelTable(const std::vector<std::string>& labels);

    int64_t size() const { return static_cast<int64_t>(labels_.size()); }
    const std::vector<std::string>& labels() const { return labels_; }
    // Entity types in the order of their first label.
    const std::vector<std::string>& types() const { return types_; }
    Prefix prefix(int32_t label) const { return prefix_[label]; }
    int32_t type(int32_t label) const { return type_[label]; }  // -1 for O
    // The id of the entity type called name (an index into types()), or -1 if the table has none.
    int32_t find_type(const std::string& name) const;

   private:
    std::vector<std::string> labels_;
    std::vector<std::string> types_;
    std::vector<Prefix> prefix_;
    std::vector<int32_t> type_;
};

// How a word stands to the word before it, as the segmenter cut the text (decode's optional word_links).
enum class WordLink : uint8_t {
    Free = 0,      // a word of its own: tags alone decide where entities start and end
    Joined = 1,    // cut from the previous word inside a run written without spaces (ICU's dictionary cut
                   // 华为 into 华|为): entities on both sides of the cut are one, of the first one's type
    Particle = 2,  // a grammatical ending split off the previous word (Korean 부산|을): never in an entity
    // A word that ends names in a run without spaces, right after another word of the run; it goes into the
    // entity of the word before, whatever its own tag, when that entity is of the types it ends (else it
    // reads as Joined):
    PlaceEnding = 3,  // 市 县 省 県 ...: a LOC goes on (温州|市 is 温州市 LOC)
    OrgEnding = 4,    // 大学 公司 队 ...: a LOC, ORG or MISC goes on as an ORG (北京|大学 is 北京大学 ORG, and
                      // 中国|队 is 中国队 ORG where the model tags 中国 MISC, as English CoNLL tags "Chinese")
    NameDot = 5,  // a middle dot in a foreign person's name (卡洛斯·阿马特, ジョン・スミス; which dots are, is
                  // nertron.word_links' to say): when the word before is in a PER entity and the word
                  // after is tagged PER, the dot and the word after continue it; otherwise the dot is a free word
                  // (Japanese also lists with it: 東京・大阪 stays two places)
};

// One label and score per word, flat over rows.
struct WordPredictions {
    std::vector<int32_t> labels;  // argmax label per word; -1 if the word got no subword
    std::vector<float> scores;    // probability of that label (0 when the label is -1)
};

struct Spans {
    std::vector<int64_t> row;         // which row (document or sentence) the span is in
    std::vector<int64_t> first_word;  // index of the first word, within the row
    std::vector<int64_t> end_word;    // one past the last word
    std::vector<int32_t> type;        // entity type id (index into LabelTable::types())
    std::vector<float> score;         // mean score of the span's words
    std::vector<int64_t> start_char;  // filled when word offsets are given
    std::vector<int64_t> end_char;
};

// Alignment and decoding for one model: its validated label table, the aggregation, the temperature and
// whether labels are constrained, set once. The temperature T calibrates scores: a word's score is
// softmax(logits / T) of its label. Labels are always chosen from softmax(logits), so T changes scores and never
// which entities are found.
class PostProcessor {
   public:
    // Throws std::invalid_argument unless temperature and 1 / temperature are finite numbers > 0. constrained:
    // align gives each row the most likely label sequence the tag scheme allows (best_path; IOB2 or BIOES, read
    // from the labels: I-X and E-X only after B-X or I-X, and where the table has E-X, B-X and I-X only before
    // I-X or E-X), not each word's most likely label; where each word's most likely label already makes such a
    // sequence, the two are the same. Not for IOB1, whose I-X starts entities.
    PostProcessor(const std::vector<std::string>& labels, Aggregation aggregation, float temperature = 1.0f,
                  bool constrained = false);

    const LabelTable& labels() const { return labels_; }
    Aggregation aggregation() const { return aggregation_; }
    float temperature() const { return temperature_; }
    bool constrained() const { return constrained_; }

    // logits: [batch, seq, num_labels] (num_labels must be the table's size); word_ids: [batch, seq],
    // -1 for special and padding tokens, else a word index in [0, num_words[b]). Returns the words of
    // every row, row after row. Constrained, each row (a window) is one sequence, in which a word without subwords
    // reads as O (it keeps label -1; left out where the table has no O).
    WordPredictions align(const float* logits, const int64_t* word_ids, int64_t batch, int64_t seq,
                          int64_t num_labels, const int64_t* num_words) const;

    // Decodes per-word labels (flat over rows of row_words[r] words) into entity spans with the
    // semantics of conlleval / seqeval's default mode, which reads IOB1, IOB2 and BIOES alike: B-X
    // and S-X always start an entity; I-X or E-X start one after O, after an E/S tag, or after another
    // type; E-X and S-X end one. Label -1 counts as O. word_start_char / word_end_char (optional, flat
    // like labels) give each word's [start, end) character offsets, from which span offsets are taken.
    // word_links (optional, flat like labels; values of WordLink) keep an entity whole across the
    // segmenter's cuts: a Joined word in an entity continues the entity of the word before, whatever its
    // prefix and type (the entity keeps its first piece's type); a Particle word reads as O; a PlaceEnding
    // word continues a LOC entity and an OrgEnding word a LOC, ORG or MISC entity, whatever their own tags,
    // the OrgEnding making it ORG; an ending that does not apply (another type, or a table without ORG)
    // reads as Joined; a NameDot word after a PER entity, before a word tagged PER, joins the two (the word
    // after reads as Joined, whatever its own link), else it is free.
    Spans decode(const int32_t* labels, const float* scores, const int64_t* row_words, int64_t num_rows,
                 const int64_t* word_start_char, const int64_t* word_end_char,
                 const uint8_t* word_links = nullptr) const;

   private:
    // Replaces a row's labels by its best path (constrained) and its scores by their calibrated probabilities;
    // slot[w] is word w's row in log_probs / word_calibrated (num_labels each), -1 for a word without subwords.
    void constrain_row(WordPredictions& out, int64_t row_offset, const std::vector<int64_t>& slot,
                       const std::vector<double>& log_probs, const std::vector<float>& word_calibrated) const;

    LabelTable labels_;
    Aggregation aggregation_;
    float temperature_;
    bool constrained_;
    Transitions transitions_;  // constrained only
    int32_t outside_;          // the label "O", or -1
    // The types word links apply to (NameDot: PER; PlaceEnding, OrgEnding: LOC, ORG, MISC); -1 where the table
    // has none.
    int32_t per_, loc_, org_, misc_;
};

// Merges the word predictions of overlapping windows into their documents, as batches of windows come
// back in any order. Rule: each word takes the prediction of the window in which it has the most
// context, i.e. the largest min(words before it, words after it), where a side that reaches the
// document's edge counts as unlimited. Ties go to the window that starts first, so the result does not
// depend on the order in which windows arrive.
class WindowMerger {
   public:
    // Adds a document of num_words (in [0, kMaxWords]) words; returns its id (0, 1, 2, ... in the order added).
    int64_t add_document(int64_t num_words);

    // Window w covers words [word_start[w], word_start[w] + window_words[w]) of document window_doc[w];
    // its predictions are the w-th row of labels/scores (flat over windows).
    void merge(const int64_t* window_doc, const int64_t* word_start, const int64_t* window_words,
               int64_t num_windows, const int32_t* labels, const float* scores);

    // Documents added and not yet taken.
    int64_t pending() const { return static_cast<int64_t>(documents_.size()); }

    // Takes the count oldest documents out, flat, and their word counts into doc_words. Throws if a
    // word of one of them is not covered by any window.
    WordPredictions take(int64_t count, std::vector<int64_t>& doc_words);

   private:
    struct Document {
        std::vector<int32_t> labels;
        std::vector<float> scores;
        std::vector<int64_t> context;  // -1: not covered yet
        std::vector<int64_t> source;   // word_start of the window the prediction came from
    };
    std::deque<Document> documents_;
    int64_t first_id_ = 0;  // id of documents_.front()
};

// Sum of row lengths, checking that count >= 0, each length >= 0 and the sum <= kMaxWords (name is used in
// the message).
int64_t checked_total(const int64_t* lengths, int64_t count, const char* name);

}  // namespace nertron
