#include "best_path.hpp"

#include <cstddef>
#include <limits>

namespace nertron {
namespace {

// A path's cost: impossible (a label of probability 0) or not, then forbidden transitions (fewer is better),
// then log-probability (higher is better).
struct Cost {
    int64_t forbidden = 0;
    double log_prob = 0.0;
    bool better_than(const Cost& other) const {
        const bool possible = log_prob > -std::numeric_limits<double>::infinity();
        const bool other_possible = other.log_prob > -std::numeric_limits<double>::infinity();
        if (possible != other_possible) return possible;
        return forbidden != other.forbidden ? forbidden < other.forbidden : log_prob > other.log_prob;
    }
};

}  // namespace

void best_path(const Transitions& allowed, const double* log_probs, int64_t n, int32_t* out) {
    const int64_t labels = allowed.num_labels;
    if (n <= 0 || labels <= 0) return;
    std::vector<Cost> cost(labels), next(labels);
    std::vector<int32_t> back(static_cast<size_t>(n * labels), 0);
    for (int64_t k = 0; k < labels; ++k) cost[k] = {allowed.starts[k] ? 0 : 1, log_probs[k]};
    for (int64_t i = 1; i < n; ++i) {
        for (int64_t k = 0; k < labels; ++k) {
            int64_t from = 0;
            Cost best;
            for (int64_t j = 0; j < labels; ++j) {
                const Cost via{cost[j].forbidden + (allowed.follows[j * labels + k] ? 0 : 1), cost[j].log_prob};
                if (j == 0 || via.better_than(best)) {
                    best = via;
                    from = j;
                }
            }
            best.log_prob += log_probs[i * labels + k];
            next[k] = best;
            back[i * labels + k] = static_cast<int32_t>(from);
        }
        cost.swap(next);
    }
    int32_t label = 0;
    Cost best;
    for (int64_t k = 0; k < labels; ++k) {
        const Cost final{cost[k].forbidden + (allowed.ends[k] ? 0 : 1), cost[k].log_prob};
        if (k == 0 || final.better_than(best)) {
            best = final;
            label = static_cast<int32_t>(k);
        }
    }
    for (int64_t i = n - 1; i >= 0; --i) {
        out[i] = label;
        label = back[i * labels + label];
    }
}

}  // namespace nertron
