"""Pure-Python reference of the C++ post-processing (csrc/postprocess.cpp), written for clarity."""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Sequence

Prediction = tuple[int, float]  # label, score


def softmax(row: Sequence[float], temperature: float = 1.0) -> list[float]:
    top = max(row)
    exps = [math.exp((x - top) / temperature) for x in row]
    total = sum(exps)
    return [e / total for e in exps]


def argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda k: (values[k], -k))


def align_row(
    logits: Sequence[Sequence[float]],
    word_ids: Sequence[int],
    num_words: int,
    aggregation: str,
    temperature: float = 1.0,
) -> list[Prediction]:
    """One row: per word (label, score); words without subwords get (-1, 0.0). Labels come from the plain
    softmax; the score is the label's probability under softmax(logits / temperature)."""
    num_labels = len(logits[0]) if len(logits) else 0
    subwords: list[list[int]] = [[] for _ in range(num_words)]
    for position, word in enumerate(word_ids):
        if word >= 0:
            subwords[word].append(position)
    out: list[Prediction] = []
    for positions in subwords:
        if not positions:
            out.append((-1, 0.0))
            continue
        if aggregation == "average":
            dists = [softmax(logits[p]) for p in positions]
            probs = [sum(d[k] for d in dists) / len(dists) for k in range(num_labels)]
            label = argmax(probs)
            calibrated = [softmax(logits[p], temperature)[label] for p in positions]
            out.append((label, sum(calibrated) / len(calibrated)))
            continue
        else:
            # first: the first subword; max: the subword whose top probability is highest, first on
            # ties. The label is the argmax of that subword's logits.
            chosen = positions[0] if aggregation == "first" else max(positions, key=lambda p: max(softmax(logits[p])))
            label = argmax(logits[chosen])
            out.append((label, softmax(logits[chosen], temperature)[label]))
    return out


def log_softmax(row: Sequence[float]) -> list[float]:
    top = max(row)
    log_sum = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_sum for x in row]


def word_distributions(
    logits: Sequence[Sequence[float]], word_ids: Sequence[int], num_words: int, aggregation: str, temperature: float
) -> list[tuple[list[float], list[float]] | None]:
    """Per word, the log-probabilities its label is chosen from and the calibrated distribution its score is read
    from (None for a word without subwords): the first subword's, the most confident subword's, or the mean of its
    subwords' distributions (its log by log-sum-exp, so that nothing underflows)."""
    out: list[tuple[list[float], list[float]] | None] = []
    for word in range(num_words):
        positions = [p for p, w in enumerate(word_ids) if w == word]
        if not positions:
            out.append(None)
        elif aggregation == "average":
            logs = [log_softmax(logits[p]) for p in positions]
            log_mean = []
            for column in zip(*logs, strict=True):
                top = max(column)
                log_mean.append(top + math.log(sum(math.exp(x - top) for x in column)) - math.log(len(positions)))
            warm = [softmax(logits[p], temperature) for p in positions]
            out.append((log_mean, [sum(c) / len(warm) for c in zip(*warm, strict=True)]))
        else:
            chosen = positions[0] if aggregation == "first" else max(positions, key=lambda p: max(softmax(logits[p])))
            out.append((log_softmax(logits[chosen]), softmax(logits[chosen], temperature)))
    return out


def path_steps(words: Sequence[tuple[list[float], list[float]] | None], labels: Sequence[str]) -> list[list[float]]:
    """The log-probability rows of a row's path: each word with subwords, and for each run of words without any a
    step that can only be O (decode reads them as O); without an O label those words are left out."""
    steps: list[list[float]] = []
    gap = False
    for word in words:
        if word is not None:
            steps.append(word[0])
            gap = False
        elif "O" in labels and not gap:
            steps.append([0.0 if label == "O" else -math.inf for label in labels])
            gap = True
    return steps


def scheme_allows(labels: Sequence[str]) -> tuple[set[tuple[int, int]], set[int], set[int]]:
    """(forbidden (previous, next) pairs, labels that may not start a row, labels that may not end one) of an IOB2
    or BIOES table: I-X and E-X continue a B-X or I-X (when the table has B-X); B-X and I-X go on into I-X or E-X
    (when the table has E-X)."""
    begins = {label[2:] for label in labels if label.startswith("B-")}
    ends = {label[2:] for label in labels if label.startswith("E-")}
    continuing = {k for k, label in enumerate(labels) if label[:2] in ("I-", "E-") and label[2:] in begins}
    going_on = {k for k, label in enumerate(labels) if label[:2] in ("B-", "I-") and label[2:] in ends}
    forbidden = set()
    for j, previous in enumerate(labels):
        for k, label in enumerate(labels):
            same = previous[:2] in ("B-", "I-") and label[:2] in ("I-", "E-") and previous[2:] == label[2:]
            if (k in continuing or j in going_on) and not same:
                forbidden.add((j, k))
    return forbidden, continuing, going_on


def best_sequences(
    log_probs: Sequence[Sequence[float]], labels: Sequence[str]
) -> list[tuple[bool, int, float, list[int]]]:
    """Every label sequence, by brute force, best first: (impossible: a label of probability 0, forbidden
    transitions, -sum of log-probabilities, labels)."""
    forbidden, no_start, no_end = scheme_allows(labels)
    ranked = []
    for sequence in itertools.product(range(len(labels)), repeat=len(log_probs)):
        breaks = sum((a, b) in forbidden for a, b in itertools.pairwise(sequence))
        breaks += bool(sequence) and (sequence[0] in no_start) + (sequence[-1] in no_end)
        log_prob = sum(row[k] for row, k in zip(log_probs, sequence, strict=True))
        ranked.append((log_prob == -math.inf, breaks, -log_prob, list(sequence)))
    return sorted(ranked)


def best_path(log_probs: Sequence[Sequence[float]], labels: Sequence[str]) -> list[int]:
    """Viterbi with csrc/best_path.cpp's order: possible (no label of probability 0) first, then the fewest forbidden
    transitions, then the highest sum of log-probabilities; ties to the lower label at the last word, then to the
    lower previous label."""
    if not log_probs:
        return []
    forbidden, no_start, no_end = scheme_allows(labels)
    options = range(len(labels))

    def order(breaks: int, log_prob: float, label: int) -> tuple[bool, int, float, int]:
        return (log_prob == -math.inf, breaks, -log_prob, label)

    cost = [(int(k in no_start), log_probs[0][k]) for k in options]
    back: list[list[int]] = []
    for row in log_probs[1:]:
        via = [[(cost[j][0] + ((j, k) in forbidden), cost[j][1]) for j in options] for k in options]
        chosen = [min(options, key=lambda j: order(*via_k[j], j)) for via_k in via]
        cost = [(via[k][chosen[k]][0], via[k][chosen[k]][1] + row[k]) for k in options]
        back.append(chosen)
    label = min(options, key=lambda k: order(cost[k][0] + (k in no_end), cost[k][1], k))
    path = [label]
    for chosen in reversed(back):
        path.append(chosen[path[-1]])
    return path[::-1]


def constrained_row(
    logits: Sequence[Sequence[float]],
    word_ids: Sequence[int],
    labels: Sequence[str],
    num_words: int,
    aggregation: str,
    temperature: float = 1.0,
) -> list[Prediction]:
    """``align_row`` constrained to the tag scheme: the best path of the row (``path_steps``), each word scored by
    its label's calibrated probability; words without subwords get (-1, 0.0)."""
    words = word_distributions(logits, word_ids, num_words, aggregation, temperature)
    path = best_path(path_steps(words, labels), labels)
    return labels_on_words(words, path, labels)


def labels_on_words(
    words: Sequence[tuple[list[float], list[float]] | None], path: Sequence[int], labels: Sequence[str]
) -> list[Prediction]:
    """A path over ``path_steps(words)`` as each word's (label, calibrated probability); (-1, 0.0) without
    subwords."""
    steps = iter(path)
    out: list[Prediction] = []
    gap = False
    for word in words:
        if word is not None:
            label = next(steps)
            out.append((label, word[1][label]))
            gap = False
        else:
            if "O" in labels and not gap:
                next(steps)
                gap = True
            out.append((-1, 0.0))
    return out


def merge_windows(
    windows: Sequence[tuple[int, int, Sequence[Prediction]]], doc_words: Sequence[int]
) -> list[list[Prediction]]:
    """windows: (doc, word_start, predictions), in any order. Each word takes the window where it has most
    context; on a tie, the window that starts first."""
    best: list[list[tuple[float, int, Prediction] | None]] = [[None] * n for n in doc_words]
    for doc, start, predictions in windows:
        n = len(predictions)
        for i, prediction in enumerate(predictions):
            left = i if start > 0 else math.inf
            right = n - 1 - i if start + n < doc_words[doc] else math.inf
            context = min(left, right)
            current = best[doc][start + i]
            if current is None or (context, -start) > (current[0], -current[1]):
                best[doc][start + i] = (context, start, prediction)
    merged = []
    for doc_best in best:
        assert all(entry is not None for entry in doc_best), "a word is not covered"
        merged.append([entry[2] for entry in doc_best if entry is not None])
    return merged


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) chunks: seqeval's default-mode get_entities, restated."""

    def split(tag: str) -> tuple[str, str]:
        return (tag, "") if tag == "O" else (tag[0], tag[2:])

    chunks: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = split(chunk)
        end = prev_tag in "ES" or (prev_tag in "BI" and tag in "BSO")
        end = end or (prev_tag != "O" and prev_type != type_)
        start = tag in "BS" or (tag in "EI" and prev_tag in "ESO")
        start = start or (tag != "O" and prev_type != type_)
        if end:
            chunks.append((prev_type, begin, i - 1))
        if start:
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def linked_tags(tags: Sequence[str], links: Sequence[int], types: Collection[str]) -> list[str]:
    """``tags`` rewritten as the decoder reads them with word links (0 free, 1 joined, 2 particle, 3 place
    ending, 4 organisation ending, 5 name dot): a particle is O; a joined word in an entity continues the previous
    word's entity, with that entity's type (its B- read as I-, S- as E-, and the previous word's E- as I-, S- as
    B-); an ending after a LOC entity (3), or a LOC, ORG or MISC entity (4), continues it whatever its own tag, 4
    making the whole entity ORG (only if ORG is among the label table's ``types``); an ending that does not apply
    reads as joined; a name dot (5) after a PER entity, before a word tagged PER (not a particle), continues the
    entity, and that word reads as joined whatever its own link (otherwise the dot is free)."""
    has_org = "ORG" in types
    out: list[str] = []
    after_dot = False
    for index, (tag, link) in enumerate(zip(tags, links, strict=True)):
        open_type = out[-1][2:] if out and out[-1] != "O" else None
        if after_dot:  # the word after a joining name dot reads as joined, whatever its link
            tag = {"B": "I", "S": "E"}.get(tag[0], tag[0]) + out[-1][1:]
            after_dot = False
        elif (
            link == 5
            and open_type == "PER"
            and index + 1 < len(tags)
            and links[index + 1] != 2
            and tags[index + 1][2:] == "PER"
        ):
            out[-1] = {"E": "I", "S": "B"}.get(out[-1][0], out[-1][0]) + out[-1][1:]
            tag = "I-" + open_type
            after_dot = True
        elif (link == 3 and open_type == "LOC") or (link == 4 and has_org and open_type in ("LOC", "ORG", "MISC")):
            entity_type = "ORG" if link == 4 else "LOC"
            first = len(out) - 1
            while first > 0 and out[first][0] in "IE" and out[first - 1][0] in "BI" and out[first - 1][2:] == open_type:
                first -= 1
            # retyped, the entity's first word must still start it (an I- after an entity of the new type would not)
            out[first:] = [{"I": "B", "E": "S"}.get(out[first][0], out[first][0]) + "-" + entity_type] + [
                t[:2] + entity_type for t in out[first + 1 :]
            ]
            out[-1] = {"E": "I", "S": "B"}.get(out[-1][0], out[-1][0]) + out[-1][1:]
            tag = "I-" + entity_type
        elif link == 2:
            tag = "O"
        elif link in (1, 3, 4) and tag != "O" and out and out[-1] != "O":
            out[-1] = {"E": "I", "S": "B"}.get(out[-1][0], out[-1][0]) + out[-1][1:]
            tag = {"B": "I", "S": "E"}.get(tag[0], tag[0]) + out[-1][1:]
        out.append(tag)
    return out


def decode_row(
    labels: Sequence[int], scores: Sequence[float], names: Sequence[str], links: Sequence[int] | None = None
) -> list[tuple[str, int, int, float]]:
    """(type, first_word, end_word, mean score) spans of one row; label -1 reads as O."""
    tags = [names[label] if label >= 0 else "O" for label in labels]
    if links is not None:
        tags = linked_tags(tags, links, {name[2:] for name in names if name != "O"})
    return [
        (type_, first, last + 1, sum(scores[first : last + 1]) / (last + 1 - first))
        for type_, first, last in get_entities(tags)
    ]


def cut_windows(
    ids: Sequence[int], word_ids: Sequence[int], num_words: int, budget: int, stride: int
) -> list[tuple[int, int, list[int], list[int]]]:
    """(word_start, num_words, subword ids, their word ids) of each window of a whole tokenised document:
    the longest run of whole words from ``start`` whose subwords fit ``budget`` (at least one word, cut to
    ``budget`` subwords), the next starting about ``stride`` subwords before the previous one ends."""
    first_token = [next((t for t, w in enumerate(word_ids) if w >= word), len(ids)) for word in range(num_words + 1)]
    windows = []
    start = 0
    while start < num_words:
        end = max(w for w in range(num_words + 1) if first_token[w] <= first_token[start] + budget)
        end = min(max(end, start + 1), num_words)
        lo, hi = first_token[start], min(first_token[end], first_token[start] + budget)
        windows.append((start, end - start, list(ids[lo:hi]), list(word_ids[lo:hi])))
        if end >= num_words:
            break
        overlap = min(w for w in range(num_words + 1) if first_token[w] >= first_token[end] - stride)
        start = min(max(overlap, start + 1), end)
    return windows
