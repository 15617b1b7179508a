#include "postprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

namespace nertron {
namespace {

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

std::string str(float value) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", static_cast<double>(value));
    return text;
}

// Softmax of one row of logits / temperature into out; returns the argmax (first on ties).
int32_t softmax(const float* logits, int64_t n, float* out, float temperature = 1.0f) {
    int32_t best = 0;
    float top = logits[0];
    for (int64_t k = 1; k < n; ++k) {
        if (logits[k] > top) {
            top = logits[k];
            best = static_cast<int32_t>(k);
        }
    }
    const float inv_t = 1.0f / temperature;
    double sum = 0.0;
    for (int64_t k = 0; k < n; ++k) {
        out[k] = std::exp((logits[k] - top) * inv_t);
        sum += out[k];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int64_t k = 0; k < n; ++k) out[k] *= inv;
    return best;
}

// log(softmax(logits)) in double: strictly increasing in each logit, so its best label is the logits' argmax.
void log_softmax(const float* logits, int64_t n, double* out) {
    const double top = *std::max_element(logits, logits + n);
    double sum = 0.0;
    for (int64_t k = 0; k < n; ++k) sum += std::exp(static_cast<double>(logits[k]) - top);
    const double log_sum = std::log(sum);
    for (int64_t k = 0; k < n; ++k) out[k] = static_cast<double>(logits[k]) - top - log_sum;
}

// log(exp(a) + exp(b)), without overflow or underflow.
double log_add(double a, double b) {
    const double top = std::max(a, b);
    return top + std::log1p(std::exp(std::min(a, b) - top));
}

// The transitions of an IOB2 or BIOES table: I-X and E-X only after B-X or I-X (where the table has B-X); where
// the table has E-X, B-X and I-X only before I-X or E-X, and not last.
Transitions scheme_transitions(const LabelTable& table) {
    const int64_t n = table.size();
    std::vector<uint8_t> has_begin(table.types().size(), 0), has_end(table.types().size(), 0);
    for (int32_t k = 0; k < n; ++k) {
        if (table.prefix(k) == Prefix::B) has_begin[table.type(k)] = 1;
        if (table.prefix(k) == Prefix::E) has_end[table.type(k)] = 1;
    }
    auto inside = [&](int32_t k) { return table.prefix(k) == Prefix::B || table.prefix(k) == Prefix::I; };
    auto continues = [&](int32_t k) { return table.prefix(k) == Prefix::I || table.prefix(k) == Prefix::E; };
    Transitions t;
    t.num_labels = n;
    t.follows.assign(n * n, 1);
    t.starts.assign(n, 1);
    t.ends.assign(n, 1);
    for (int32_t k = 0; k < n; ++k) {
        const bool must_follow = continues(k) && has_begin[table.type(k)];  // I-X / E-X: after B-X or I-X
        const bool must_go_on = inside(k) && has_end[table.type(k)];        // B-X / I-X: before I-X or E-X
        if (must_follow) t.starts[k] = 0;
        if (must_go_on) t.ends[k] = 0;
        for (int32_t j = 0; j < n; ++j) {
            const bool same_entity = inside(j) && continues(k) && table.type(j) == table.type(k);
            if ((must_follow || (inside(j) && has_end[table.type(j)])) && !same_entity) t.follows[j * n + k] = 0;
        }
    }
    return t;
}

// The first label "O" of the table, or -1.
int32_t outside_label(const LabelTable& table) {
    for (int32_t k = 0; k < table.size(); ++k) {
        if (table.prefix(k) == Prefix::O) return k;
    }
    return -1;
}

int32_t argmax(const float* values, int64_t n) {
    return static_cast<int32_t>(std::max_element(values, values + n) - values);
}

void check_finite(const float* values, int64_t n, const char* name, int64_t row, int64_t pos) {
    for (int64_t k = 0; k < n; ++k) {
        if (!std::isfinite(values[k])) {
            fail(std::string(name) + " has a non-finite value at [" + std::to_string(row) + ", " +
                 std::to_string(pos) + ", " + std::to_string(k) + "]");
        }
    }
}

}  // namespace

LabelTable::LabelTable(const std::vector<std::string>& labels) : labels_(labels) {
    prefix_.reserve(labels.size());
    type_.reserve(labels.size());
    for (size_t i = 0; i < labels.size(); ++i) {
        const std::string& label = labels[i];
        if (label == "O") {
            prefix_.push_back(Prefix::O);
            type_.push_back(-1);
            continue;
        }
        const std::string heads = "BIES";
        const size_t head = label.empty() ? std::string::npos : heads.find(label[0]);
        if (label.size() < 3 || label[1] != '-' || head == std::string::npos) {
            fail("label " + std::to_string(i) + " ('" + label + "') is not O or <B|I|E|S>-<TYPE>");
        }
        const std::string type = label.substr(2);
        auto found = std::find(types_.begin(), types_.end(), type);
        if (found == types_.end()) found = types_.insert(types_.end(), type);
        prefix_.push_back(static_cast<Prefix>(head + 1));
        type_.push_back(static_cast<int32_t>(found - types_.begin()));
    }
    if (labels.empty()) fail("labels must not be empty");
}

int32_t LabelTable::find_type(const std::string& name) const {
    const auto it = std::find(types_.begin(), types_.end(), name);
    return it == types_.end() ? -1 : static_cast<int32_t>(it - types_.begin());
}

PostProcessor::PostProcessor(const std::vector<std::string>& labels, Aggregation aggregation, float temperature,
                             bool constrained)
    : labels_(labels),
      aggregation_(aggregation),
      temperature_(temperature),
      constrained_(constrained),
      transitions_(constrained ? scheme_transitions(labels_) : Transitions{}),
      outside_(outside_label(labels_)),
      per_(labels_.find_type("PER")),
      loc_(labels_.find_type("LOC")),
      org_(labels_.find_type("ORG")),
      misc_(labels_.find_type("MISC")) {
    // Scores use logits * (1 / temperature): a subnormal temperature would make that inverse infinite.
    if (!std::isfinite(temperature) || temperature <= 0.0f || !std::isfinite(1.0f / temperature)) {
        fail("temperature must be a finite number > 0 with a finite inverse, got " + str(temperature));
    }
}

int64_t checked_total(const int64_t* lengths, int64_t count, const char* name) {
    if (count < 0) fail(std::string(name) + " has a negative count (" + std::to_string(count) + ")");
    int64_t total = 0;
    for (int64_t i = 0; i < count; ++i) {
        if (lengths[i] < 0) {
            fail(std::string(name) + "[" + std::to_string(i) + "] is negative (" +
                 std::to_string(lengths[i]) + ")");
        }
        // Checked before adding, so that the sum cannot overflow.
        if (lengths[i] > kMaxWords - total) {
            fail(std::string(name) + "[" + std::to_string(i) + "] = " + std::to_string(lengths[i]) +
                 " brings the words to more than the limit of " + std::to_string(kMaxWords));
        }
        total += lengths[i];
    }
    return total;
}

WordPredictions PostProcessor::align(const float* logits, const int64_t* word_ids, int64_t batch,
                                     int64_t seq, int64_t num_labels, const int64_t* num_words) const {
    if (num_labels != labels_.size()) {
        fail("logits have " + std::to_string(num_labels) + " labels, the model's label table has " +
             std::to_string(labels_.size()));
    }
    const int64_t total = checked_total(num_words, batch, "num_words");

    WordPredictions out;
    out.labels.assign(total, -1);
    out.scores.assign(total, 0.0f);

    const bool calibrated = temperature_ != 1.0f;
    std::vector<float> probs(num_labels);
    std::vector<float> calibrated_probs(num_labels);  // softmax(logits / T), when T != 1
    std::vector<float> sums;      // Average: per-word sum of distributions
    std::vector<float> calibrated_sums;
    std::vector<float> raw_best;  // Max: the kept subword's uncalibrated top probability
    std::vector<int32_t> count;   // subwords seen per word
    // Constrained: each word seen in the row gets a slot (in the order first seen), holding its log-probabilities
    // (the path is chosen from them; Average: the log of the mean distribution, in double so that no probability
    // underflows) and its calibrated distribution (the chosen label's score is read from it).
    std::vector<int64_t> slot;
    std::vector<double> log_probs;
    std::vector<float> word_calibrated;
    std::vector<double> subword_log_probs(num_labels);
    int64_t row_offset = 0;
    for (int64_t b = 0; b < batch; ++b) {
        const int64_t words = num_words[b];
        count.assign(words, 0);
        if (aggregation_ == Aggregation::Average) {
            sums.assign(words * num_labels, 0.0f);
            if (calibrated) calibrated_sums.assign(words * num_labels, 0.0f);
        }
        if (aggregation_ == Aggregation::Max) raw_best.assign(words, 0.0f);
        if (constrained_) {
            slot.assign(words, -1);
            log_probs.clear();
            word_calibrated.clear();
        }
        for (int64_t t = 0; t < seq; ++t) {
            const int64_t w = word_ids[b * seq + t];
            if (w == -1) continue;
            if (w < 0 || w >= words) {
                fail("word_ids[" + std::to_string(b) + ", " + std::to_string(t) + "] = " +
                     std::to_string(w) + " is out of range [-1, " + std::to_string(words) + ")");
            }
            const float* row = logits + (b * seq + t) * num_labels;
            check_finite(row, num_labels, "logits", b, t);
            const int64_t o = row_offset + w;
            if (aggregation_ == Aggregation::First && count[w] > 0) continue;
            const int32_t best = softmax(row, num_labels, probs.data());
            const float* scored = probs.data();
            if (calibrated) {
                softmax(row, num_labels, calibrated_probs.data(), temperature_);
                scored = calibrated_probs.data();
            }
            if (constrained_ && count[w] == 0) {
                slot[w] = static_cast<int64_t>(log_probs.size()) / num_labels;
                log_probs.resize(log_probs.size() + num_labels);
                word_calibrated.resize(word_calibrated.size() + num_labels);
            }
            if (aggregation_ == Aggregation::Average) {
                float* acc = sums.data() + w * num_labels;
                for (int64_t k = 0; k < num_labels; ++k) acc[k] += probs[k];
                if (calibrated) {
                    float* cal = calibrated_sums.data() + w * num_labels;
                    for (int64_t k = 0; k < num_labels; ++k) cal[k] += scored[k];
                }
                if (constrained_) {  // log of the sum of the subwords' distributions, by log-sum-exp
                    log_softmax(row, num_labels, subword_log_probs.data());
                    double* log_sum = log_probs.data() + slot[w] * num_labels;
                    for (int64_t k = 0; k < num_labels; ++k) {
                        log_sum[k] = count[w] == 0 ? subword_log_probs[k] : log_add(log_sum[k], subword_log_probs[k]);
                    }
                }
            } else if (aggregation_ == Aggregation::First || count[w] == 0 || probs[best] > raw_best[w]) {
                // First: only the first subword gets here. Max: keep the most confident (uncalibrated).
                out.labels[o] = best;
                out.scores[o] = scored[best];
                if (aggregation_ == Aggregation::Max) raw_best[w] = probs[best];
                if (constrained_) {
                    log_softmax(row, num_labels, log_probs.data() + slot[w] * num_labels);
                    std::copy(scored, scored + num_labels, word_calibrated.data() + slot[w] * num_labels);
                }
            }
            ++count[w];
        }
        if (aggregation_ == Aggregation::Average) {
            for (int64_t w = 0; w < words; ++w) {
                if (count[w] == 0) continue;
                const float* acc = sums.data() + w * num_labels;
                const float* cal = calibrated ? calibrated_sums.data() + w * num_labels : acc;
                const int64_t o = row_offset + w;
                out.labels[o] = argmax(acc, num_labels);
                out.scores[o] = cal[out.labels[o]] / static_cast<float>(count[w]);
                if (constrained_) {
                    const double log_count = std::log(static_cast<double>(count[w]));
                    for (int64_t k = 0; k < num_labels; ++k) {
                        log_probs[slot[w] * num_labels + k] -= log_count;
                        word_calibrated[slot[w] * num_labels + k] = cal[k] / static_cast<float>(count[w]);
                    }
                }
            }
        }
        if (constrained_) constrain_row(out, row_offset, slot, log_probs, word_calibrated);
        row_offset += words;
    }
    return out;
}

void PostProcessor::constrain_row(WordPredictions& out, int64_t row_offset, const std::vector<int64_t>& slot,
                                  const std::vector<double>& log_probs,
                                  const std::vector<float>& word_calibrated) const {
    const int64_t num_labels = labels_.size();
    // The path: the words with subwords in word order, and one O for each run of words without any, which decode
    // reads as O (they keep label -1); without an O label such words are left out.
    std::vector<int64_t> steps;  // a slot, or -1 for a run of words without subwords
    for (const int64_t s : slot) {
        if (s >= 0) {
            steps.push_back(s);
        } else if (outside_ >= 0 && (steps.empty() || steps.back() != -1)) {
            steps.push_back(-1);
        }
    }
    const auto n = static_cast<int64_t>(steps.size());
    std::vector<double> path_log_probs(n * num_labels, -std::numeric_limits<double>::infinity());
    for (int64_t i = 0; i < n; ++i) {
        if (steps[i] >= 0) {
            std::copy_n(log_probs.data() + steps[i] * num_labels, num_labels, path_log_probs.data() + i * num_labels);
        } else {
            path_log_probs[i * num_labels + outside_] = 0.0;
        }
    }
    std::vector<int32_t> path(n);
    best_path(transitions_, path_log_probs.data(), n, path.data());
    int64_t i = 0;
    for (int64_t w = 0; w < static_cast<int64_t>(slot.size()); ++w) {
        if (slot[w] >= 0) {
            out.labels[row_offset + w] = path[i];
            out.scores[row_offset + w] = word_calibrated[slot[w] * num_labels + path[i]];
            ++i;
        } else if (outside_ >= 0 && (w == 0 || slot[w - 1] >= 0)) {
            ++i;  // the run's O
        }
    }
}

int64_t WindowMerger::add_document(int64_t num_words) {
    if (num_words < 0 || num_words > kMaxWords) {
        fail("num_words = " + std::to_string(num_words) + " is not in [0, " + std::to_string(kMaxWords) + "]");
    }
    Document document;
    document.labels.assign(num_words, -1);
    document.scores.assign(num_words, 0.0f);
    document.context.assign(num_words, -1);
    document.source.assign(num_words, 0);
    documents_.push_back(std::move(document));
    return first_id_ + pending() - 1;
}

void WindowMerger::merge(const int64_t* window_doc, const int64_t* word_start, const int64_t* window_words,
                         int64_t num_windows, const int32_t* labels, const float* scores) {
    checked_total(window_words, num_windows, "window_words");
    // Check every window before changing anything, so that a bad call leaves the documents as they were.
    for (int64_t w = 0; w < num_windows; ++w) {
        const int64_t d = window_doc[w];
        if (d < first_id_ || d >= first_id_ + pending()) {
            fail("window_doc[" + std::to_string(w) + "] = " + std::to_string(d) +
                 " is not a pending document [" + std::to_string(first_id_) + ", " +
                 std::to_string(first_id_ + pending()) + ")");
        }
        const auto words = static_cast<int64_t>(documents_[d - first_id_].labels.size());
        // Not word_start + window_words > words: that sum can overflow.
        if (word_start[w] < 0 || word_start[w] > words || window_words[w] > words - word_start[w]) {
            fail("window " + std::to_string(w) + " (word_start = " + std::to_string(word_start[w]) +
                 ", window_words = " + std::to_string(window_words[w]) + ") reaches outside document " +
                 std::to_string(d) + " of " + std::to_string(words) + " words");
        }
    }
    constexpr int64_t unlimited = std::numeric_limits<int64_t>::max();
    int64_t in = 0;  // position in labels/scores
    for (int64_t w = 0; w < num_windows; ++w) {
        Document& document = documents_[window_doc[w] - first_id_];
        const auto words = static_cast<int64_t>(document.labels.size());
        const int64_t start = word_start[w];
        const int64_t n = window_words[w];
        const bool open_left = start > 0;
        const bool open_right = start + n < words;
        for (int64_t i = 0; i < n; ++i, ++in) {
            const int64_t left = open_left ? i : unlimited;
            const int64_t right = open_right ? n - 1 - i : unlimited;
            const int64_t context = std::min(left, right);
            const int64_t o = start + i;
            const bool better = context > document.context[o] ||
                                (context == document.context[o] && start < document.source[o]);
            if (!better) continue;
            document.context[o] = context;
            document.source[o] = start;
            document.labels[o] = labels[in];
            document.scores[o] = scores[in];
        }
    }
}

WordPredictions WindowMerger::take(int64_t count, std::vector<int64_t>& doc_words) {
    if (count < 0 || count > pending()) {
        fail("count " + std::to_string(count) + " is not in [0, " + std::to_string(pending()) + "]");
    }
    for (int64_t d = 0; d < count; ++d) {
        const std::vector<int64_t>& context = documents_[d].context;
        const auto uncovered = std::find(context.begin(), context.end(), -1);
        if (uncovered != context.end()) {
            fail("word " + std::to_string(uncovered - context.begin()) + " of document " +
                 std::to_string(first_id_ + d) + " is not covered by any window");
        }
    }
    WordPredictions out;
    doc_words.clear();
    for (int64_t d = 0; d < count; ++d) {
        Document& document = documents_.front();
        doc_words.push_back(static_cast<int64_t>(document.labels.size()));
        out.labels.insert(out.labels.end(), document.labels.begin(), document.labels.end());
        out.scores.insert(out.scores.end(), document.scores.begin(), document.scores.end());
        documents_.pop_front();
        ++first_id_;
    }
    return out;
}

namespace {

// seqeval's end_of_chunk / start_of_chunk (its default, conlleval-compatible mode).
bool ends_chunk(Prefix prev, Prefix tag, int32_t prev_type, int32_t type) {
    if (prev == Prefix::E || prev == Prefix::S) return true;
    if ((prev == Prefix::B || prev == Prefix::I) &&
        (tag == Prefix::B || tag == Prefix::S || tag == Prefix::O)) {
        return true;
    }
    return prev != Prefix::O && prev_type != type;
}

bool starts_chunk(Prefix prev, Prefix tag, int32_t prev_type, int32_t type) {
    if (tag == Prefix::B || tag == Prefix::S) return true;
    if ((tag == Prefix::E || tag == Prefix::I) &&
        (prev == Prefix::E || prev == Prefix::S || prev == Prefix::O)) {
        return true;
    }
    return tag != Prefix::O && prev_type != type;
}

}  // namespace

Spans PostProcessor::decode(const int32_t* labels, const float* scores, const int64_t* row_words,
                            int64_t num_rows, const int64_t* word_start_char, const int64_t* word_end_char,
                            const uint8_t* word_links) const {
    const int64_t num_labels = labels_.size();
    const int64_t total = checked_total(row_words, num_rows, "row_words");
    for (int64_t i = 0; i < total; ++i) {
        if (labels[i] < -1 || labels[i] >= num_labels) {
            fail("labels[" + std::to_string(i) + "] = " + std::to_string(labels[i]) +
                 " is out of range [-1, " + std::to_string(num_labels) + ")");
        }
        if (!std::isfinite(scores[i])) fail("scores[" + std::to_string(i) + "] is not finite");
        if (word_start_char != nullptr &&
            (word_start_char[i] < 0 || word_end_char[i] < word_start_char[i])) {
            fail("word offsets at " + std::to_string(i) + " are not a valid [start, end) range");
        }
        if (word_links != nullptr && word_links[i] > static_cast<uint8_t>(WordLink::NameDot)) {
            fail("word_links[" + std::to_string(i) + "] = " + std::to_string(word_links[i]) +
                 " is not a WordLink (0 free, 1 joined, 2 particle, 3 place ending, 4 organisation ending, "
                 "5 name dot)");
        }
    }

    Spans spans;
    const bool with_chars = word_start_char != nullptr;
    int64_t offset = 0;
    for (int64_t r = 0; r < num_rows; ++r) {
        const int64_t n = row_words[r];
        Prefix prev = Prefix::O;
        int32_t prev_type = -1;
        int64_t begin = 0;
        double score_sum = 0.0;
        auto link_at = [&](int64_t i) {
            return (i < n && word_links != nullptr) ? static_cast<WordLink>(word_links[offset + i]) : WordLink::Free;
        };
        // The word's label as the decoder reads it: -1 (O) past the row's end and for a particle.
        auto label_at = [&](int64_t i) {
            return (i < n && link_at(i) != WordLink::Particle) ? labels[offset + i] : int32_t{-1};
        };
        auto tagged_per = [&](int64_t i) {
            const int32_t label = label_at(i);
            return label >= 0 && labels_.prefix(label) != Prefix::O && labels_.type(label) == per_;
        };
        bool after_name_dot = false;  // the word before was a dot that joins this word to the PER before it
        for (int64_t i = 0; i <= n; ++i) {  // i == n is a closing O
            const WordLink link = link_at(i);
            const int32_t label = label_at(i);
            const Prefix tag = label >= 0 ? labels_.prefix(label) : Prefix::O;
            const int32_t type = label >= 0 ? labels_.type(label) : -1;
            // A joined word in an entity goes on with it: B-X reads as I-X, S-X as E-X.
            const Prefix joined_prefix = (tag == Prefix::B || tag == Prefix::I) ? Prefix::I : Prefix::E;
            if (after_name_dot) {
                // The name's part after the dot (tagged PER, checked at the dot) reads as Joined, whatever its link.
                after_name_dot = false;
                score_sum += scores[offset + i];
                prev = joined_prefix;
                continue;
            }
            if (link == WordLink::NameDot && prev != Prefix::O && prev_type == per_ && tagged_per(i + 1)) {
                // 卡洛斯·阿马特: the dot and the name's next part go on with the PER, whatever the dot's tag.
                score_sum += scores[offset + i];
                prev = Prefix::I;
                after_name_dot = true;
                continue;
            }
            // prev_type is an entity's (>= 0) whenever prev is not O, so a missing type (-1) never matches
            const bool ends_place = link == WordLink::PlaceEnding && prev_type == loc_;
            const bool ends_org = link == WordLink::OrgEnding && org_ >= 0 &&
                                  (prev_type == loc_ || prev_type == org_ || prev_type == misc_);
            if (prev != Prefix::O && (ends_place || ends_org)) {
                // 温州|市, 北京|大学: the ending belongs to the name before it, whatever the model tagged it;
                // an organisation ending makes the name an ORG.
                score_sum += scores[offset + i];
                prev = Prefix::I;
                if (link == WordLink::OrgEnding) prev_type = org_;
                continue;
            }
            // An ending that does not end the name before it is still cut off that word: it reads as joined.
            const bool joined =
                link == WordLink::Joined || link == WordLink::PlaceEnding || link == WordLink::OrgEnding;
            if (joined && tag != Prefix::O && prev != Prefix::O) {
                // One word, cut by the segmenter: its entity goes on with the first piece's type, as a word takes
                // its first subword's label.
                score_sum += scores[offset + i];
                prev = joined_prefix;
                continue;
            }
            if (ends_chunk(prev, tag, prev_type, type)) {
                spans.row.push_back(r);
                spans.first_word.push_back(begin);
                spans.end_word.push_back(i);
                spans.type.push_back(prev_type);
                spans.score.push_back(static_cast<float>(score_sum / static_cast<double>(i - begin)));
                if (with_chars) {
                    spans.start_char.push_back(word_start_char[offset + begin]);
                    spans.end_char.push_back(word_end_char[offset + i - 1]);
                }
            }
            if (starts_chunk(prev, tag, prev_type, type)) {
                begin = i;
                score_sum = 0.0;
            }
            if (i < n) score_sum += scores[offset + i];
            prev = tag;
            prev_type = type;
        }
        offset += n;
    }
    return spans;
}

}  // namespace nertron
