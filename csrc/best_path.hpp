// Constrained decoding: the most likely label sequence that a tag scheme allows (Viterbi). Plain C++17.
#pragma once

#include <cstdint>
#include <vector>

namespace nertron {

// Which labels a tag scheme lets start a row, follow one another and end a row; 1 = allowed.
struct Transitions {
    int64_t num_labels = 0;
    std::vector<uint8_t> follows;  // [previous * num_labels + next]
    std::vector<uint8_t> starts;   // [label]: may be a row's first label
    std::vector<uint8_t> ends;     // [label]: may be a row's last label
};

// The label sequence of n words with the fewest transitions `allowed` forbids (none whenever the scheme allows
// one) and, among those, the highest sum of log_probs ([n, num_labels], row-major; -infinity: a label the word
// cannot have, avoided before any forbidden transition); ties go to the lower label at the last word, then to the
// lower previous label. Writes n labels to out. Exact when some path has only finite log-probabilities (always so
// from PostProcessor); relies on IEEE infinities (no -ffast-math).
void best_path(const Transitions& allowed, const double* log_probs, int64_t n, int32_t* out);

}  // namespace nertron
