// pybind11 bindings: check dtypes and shapes, release the GIL, call the core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "postprocess.hpp"

namespace py = pybind11;
using nertron::WordPredictions;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

py::array as_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             std::string(py::str(obj.get_type().attr("__name__"))));
    }
    return py::reinterpret_borrow<py::array>(obj);
}

void check_ndim(const py::array& a, py::ssize_t ndim, const char* name) {
    if (a.ndim() != ndim) {
        throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                              " dimensions, got shape " + shape_of(a));
    }
}

// Integer arrays of any width are accepted and widened to int64.
CArray<int64_t> int_array(const py::handle& obj, const char* name, py::ssize_t ndim) {
    py::array a = as_array(obj, name);
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u') {
        throw py::type_error(std::string(name) + " must be an integer array, got dtype " +
                             std::string(py::str(a.dtype())));
    }
    check_ndim(a, ndim, name);
    return CArray<int64_t>::ensure(a);
}

// float32 only: a silent cast from float64 would hide a caller's mistake.
CArray<float> float_array(const py::handle& obj, const char* name, py::ssize_t ndim) {
    py::array a = as_array(obj, name);
    if (!a.dtype().is(py::dtype::of<float>())) {
        throw py::type_error(std::string(name) + " must be a float32 array, got dtype " +
                             std::string(py::str(a.dtype())));
    }
    check_ndim(a, ndim, name);
    return CArray<float>::ensure(a);
}

void check_length(const py::array& a, py::ssize_t axis, py::ssize_t expected, const char* name,
                  const std::string& why) {
    if (a.shape(axis) != expected) {
        throw py::value_error(std::string(name) + " has shape " + shape_of(a) + " but " + why);
    }
}

template <typename T>
py::array to_numpy(std::vector<T>&& values, std::vector<py::ssize_t> shape) {
    auto* owner = new std::vector<T>(std::move(values));
    py::capsule free_owner(owner, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>(shape, owner->data(), free_owner);
}

py::tuple predictions_to_python(WordPredictions&& p, py::ssize_t num_labels, bool with_probs) {
    const auto words = static_cast<py::ssize_t>(p.labels.size());
    py::object probs = py::none();
    if (with_probs) probs = to_numpy(std::move(p.probs), {words, num_labels});
    return py::make_tuple(to_numpy(std::move(p.labels), {words}),
                          to_numpy(std::move(p.scores), {words}), probs);
}

py::tuple align_words(const py::object& logits_obj, const py::object& word_ids_obj,
                      const py::object& num_words_obj, const std::string& aggregation,
                      bool with_probs) {
    const auto logits = float_array(logits_obj, "logits", 3);
    const auto word_ids = int_array(word_ids_obj, "word_ids", 2);
    const auto num_words = int_array(num_words_obj, "num_words", 1);
    const py::ssize_t batch = logits.shape(0), seq = logits.shape(1), labels = logits.shape(2);
    check_length(word_ids, 0, batch, "word_ids", "logits has batch size " + std::to_string(batch));
    check_length(word_ids, 1, seq, "word_ids", "logits has sequence length " + std::to_string(seq));
    check_length(num_words, 0, batch, "num_words", "logits has batch size " + std::to_string(batch));
    const auto strategy = nertron::parse_aggregation(aggregation);

    WordPredictions result;
    {
        py::gil_scoped_release release;
        result = nertron::align_words(logits.data(), word_ids.data(), batch, seq, labels,
                                      num_words.data(), strategy, with_probs);
    }
    return predictions_to_python(std::move(result), labels, with_probs);
}

py::tuple merge_windows(const py::object& window_doc_obj, const py::object& word_start_obj,
                        const py::object& window_words_obj, const py::object& labels_obj,
                        const py::object& scores_obj, const py::object& doc_words_obj,
                        const py::object& probs_obj) {
    const auto window_doc = int_array(window_doc_obj, "window_doc", 1);
    const auto word_start = int_array(word_start_obj, "word_start", 1);
    const auto window_words = int_array(window_words_obj, "window_words", 1);
    const auto doc_words = int_array(doc_words_obj, "doc_words", 1);
    const py::array labels_any = as_array(labels_obj, "labels");
    if (!labels_any.dtype().is(py::dtype::of<int32_t>())) {
        throw py::type_error("labels must be an int32 array, got dtype " +
                             std::string(py::str(labels_any.dtype())));
    }
    check_ndim(labels_any, 1, "labels");
    const auto labels = CArray<int32_t>::ensure(labels_any);
    const auto scores = float_array(scores_obj, "scores", 1);
    const py::ssize_t windows = window_doc.shape(0);
    check_length(word_start, 0, windows, "word_start", "window_doc has " + std::to_string(windows));
    check_length(window_words, 0, windows, "window_words", "window_doc has " + std::to_string(windows));
    const int64_t total = nertron::checked_total(window_words.data(), windows, "window_words");
    check_length(labels, 0, total, "labels", "window_words sums to " + std::to_string(total));
    check_length(scores, 0, total, "scores", "window_words sums to " + std::to_string(total));
    std::optional<CArray<float>> probs;
    py::ssize_t num_labels = 0;
    if (!probs_obj.is_none()) {
        probs = float_array(probs_obj, "probs", 2);
        check_length(*probs, 0, total, "probs", "window_words sums to " + std::to_string(total));
        num_labels = probs->shape(1);
    }

    WordPredictions result;
    {
        py::gil_scoped_release release;
        result = nertron::merge_windows(window_doc.data(), word_start.data(), window_words.data(),
                                        windows, labels.data(), scores.data(),
                                        probs ? probs->data() : nullptr, num_labels,
                                        doc_words.data(), doc_words.shape(0));
    }
    return predictions_to_python(std::move(result), num_labels, probs.has_value());
}

py::dict decode_spans(const py::object& labels_obj, const py::object& scores_obj,
                      const py::object& row_words_obj, const py::object& label_prefix_obj,
                      const py::object& label_type_obj, const py::object& word_start_obj,
                      const py::object& word_end_obj) {
    const auto labels64 = int_array(labels_obj, "labels", 1);
    const auto scores = float_array(scores_obj, "scores", 1);
    const auto row_words = int_array(row_words_obj, "row_words", 1);
    const auto prefix64 = int_array(label_prefix_obj, "label_prefix", 1);
    const auto type64 = int_array(label_type_obj, "label_type", 1);
    const py::ssize_t num_labels = prefix64.shape(0);
    check_length(type64, 0, num_labels, "label_type",
                 "label_prefix has " + std::to_string(num_labels) + " labels");
    std::vector<uint8_t> prefix(num_labels);
    std::vector<int32_t> type(num_labels);
    for (py::ssize_t k = 0; k < num_labels; ++k) {
        const int64_t p = prefix64.at(k);
        if (p < 0 || p > 4) {
            throw py::value_error("label_prefix[" + std::to_string(k) + "] = " + std::to_string(p) +
                                  " is not a prefix code (0=O, 1=B, 2=I, 3=E, 4=S)");
        }
        prefix[k] = static_cast<uint8_t>(p);
        type[k] = static_cast<int32_t>(type64.at(k));
    }
    const py::ssize_t rows = row_words.shape(0);
    const int64_t total = nertron::checked_total(row_words.data(), rows, "row_words");
    check_length(labels64, 0, total, "labels", "row_words sums to " + std::to_string(total));
    check_length(scores, 0, total, "scores", "row_words sums to " + std::to_string(total));
    // Narrow to int32 only after the range check, so no value can wrap.
    std::vector<int32_t> labels(total);
    for (int64_t i = 0; i < total; ++i) {
        const int64_t label = labels64.data()[i];
        if (label < -1 || label >= num_labels) {
            throw py::value_error("labels[" + std::to_string(i) + "] = " + std::to_string(label) +
                                  " is out of range [-1, " + std::to_string(num_labels) + ")");
        }
        labels[i] = static_cast<int32_t>(label);
    }
    if (word_start_obj.is_none() != word_end_obj.is_none()) {
        throw py::value_error("word_start_char and word_end_char must be given together");
    }
    std::optional<CArray<int64_t>> starts, ends;
    if (!word_start_obj.is_none()) {
        starts = int_array(word_start_obj, "word_start_char", 1);
        ends = int_array(word_end_obj, "word_end_char", 1);
        check_length(*starts, 0, total, "word_start_char", "row_words sums to " + std::to_string(total));
        check_length(*ends, 0, total, "word_end_char", "row_words sums to " + std::to_string(total));
    }

    nertron::Spans spans;
    {
        py::gil_scoped_release release;
        spans = nertron::decode_spans(labels.data(), scores.data(), row_words.data(), rows,
                                      prefix.data(), type.data(), num_labels,
                                      starts ? starts->data() : nullptr,
                                      ends ? ends->data() : nullptr);
    }
    const auto n = static_cast<py::ssize_t>(spans.row.size());
    py::dict out;
    out["row"] = to_numpy(std::move(spans.row), {n});
    out["first_word"] = to_numpy(std::move(spans.first_word), {n});
    out["end_word"] = to_numpy(std::move(spans.end_word), {n});
    out["type"] = to_numpy(std::move(spans.type), {n});
    out["score"] = to_numpy(std::move(spans.score), {n});
    if (starts) {
        out["start_char"] = to_numpy(std::move(spans.start_char), {n});
        out["end_char"] = to_numpy(std::move(spans.end_char), {n});
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    m.doc() = "nertron's compiled post-processing: subword alignment, window merging, span decoding.";
    m.def("align_words", &align_words, py::arg("logits"), py::arg("word_ids"), py::arg("num_words"),
          py::arg("aggregation") = "first", py::arg("with_probs") = false,
          "Aligns subword logits [batch, seq, labels] to words; returns flat (labels, scores, probs).");
    m.def("merge_windows", &merge_windows, py::arg("window_doc"), py::arg("word_start"),
          py::arg("window_words"), py::arg("labels"), py::arg("scores"), py::arg("doc_words"),
          py::arg("probs") = py::none(),
          "Merges overlapping windows' word predictions into documents (most-context rule).");
    m.def("decode_spans", &decode_spans, py::arg("labels"), py::arg("scores"), py::arg("row_words"),
          py::arg("label_prefix"), py::arg("label_type"), py::arg("word_start_char") = py::none(),
          py::arg("word_end_char") = py::none(),
          "Decodes per-word labels into entity spans (conlleval/seqeval semantics).");
}
