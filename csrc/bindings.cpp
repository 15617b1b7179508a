// pybind11 bindings: check dtypes and shapes, release the GIL, call the core.
#include <pybind11/native_enum.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "postprocess.hpp"

namespace py = pybind11;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;
// Any integer array, widened to int64 (a uint64 array only after its values were checked to fit).
using IntArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

py::array as_array(const py::handle& obj, const char* name) {
    if (!py::isinstance<py::array>(obj)) {
        throw py::type_error(std::string(name) + " must be a numpy array, got " +
                             std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
    return py::reinterpret_borrow<py::array>(obj);
}

// "[i, j]" of the flat (C-order) index of an element of a.
std::string index_of(const py::array& a, py::ssize_t flat) {
    std::string s;
    for (py::ssize_t axis = a.ndim() - 1; axis >= 0; --axis) {
        s = std::to_string(flat % a.shape(axis)) + (s.empty() ? "" : ", ") + s;
        flat /= a.shape(axis);
    }
    return "[" + s + "]";
}

void check_ndim(const py::array& a, py::ssize_t ndim, const char* name) {
    if (a.ndim() != ndim) {
        throw py::value_error(std::string(name) + " must have " + std::to_string(ndim) +
                              " dimensions, got shape " + shape_of(a));
    }
}

// Whether a's dtype is of one of these kinds ("iu": any integer) and, unless itemsize is 0, of this size;
// any byte order.
bool has_dtype(const py::array& a, const char* kinds, py::ssize_t itemsize = 0) {
    const py::dtype dtype = a.dtype();
    return std::strchr(kinds, dtype.kind()) != nullptr && (itemsize == 0 || dtype.itemsize() == itemsize);
}

void check_dtype(const py::array& a, bool ok, const char* name, const char* expected) {
    if (!ok) {
        throw py::type_error(std::string(name) + " must be " + expected + " array, got dtype " +
                             std::string(py::str(a.dtype())));
    }
}

// Only uint64 has values beyond int64, which a cast would silently wrap to negative numbers.
void check_fits_int64(const py::array& a, const char* name) {
    if (!has_dtype(a, "u", 8)) return;
    const CArray<uint64_t> values(a);
    constexpr auto max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    for (py::ssize_t i = 0; i < values.size(); ++i) {
        if (values.data()[i] > max) {
            throw py::value_error(std::string(name) + index_of(a, i) + " = " + std::to_string(values.data()[i]) +
                                  " does not fit in int64");
        }
    }
}

// Integer arrays of any width and byte order are accepted and widened to int64.
IntArray int_array(const py::handle& obj, const char* name, py::ssize_t ndim) {
    const py::array a = as_array(obj, name);
    check_dtype(a, has_dtype(a, "iu"), name, "an integer");
    check_ndim(a, ndim, name);
    check_fits_int64(a, name);
    return IntArray(a);  // unlike IntArray::ensure, throws (rather than returning null) if numpy fails
}

// float32 only: a silent cast from float64 would hide a caller's mistake.
CArray<float> float_array(const py::handle& obj, const char* name, py::ssize_t ndim) {
    const py::array a = as_array(obj, name);
    check_dtype(a, has_dtype(a, "f", 4), name, "a float32");
    check_ndim(a, ndim, name);
    return CArray<float>(a);
}

// A copy, for the lengths that the core reads more than once: while the GIL is released, another thread
// could change the caller's array between the core's checks and its use of a length.
std::vector<int64_t> owned(const IntArray& a) { return {a.data(), a.data() + a.size()}; }

// A Python float is a double; one beyond float's range becomes an infinity (which the core rejects),
// since converting it to float is undefined behaviour.
float to_float(double value) {
    constexpr double max = std::numeric_limits<float>::max();
    if (value > max) return std::numeric_limits<float>::infinity();
    if (value < -max) return -std::numeric_limits<float>::infinity();
    return static_cast<float>(value);
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

py::tuple predictions_to_python(nertron::WordPredictions&& p) {
    const auto words = static_cast<py::ssize_t>(p.labels.size());
    return py::make_tuple(to_numpy(std::move(p.labels), {words}), to_numpy(std::move(p.scores), {words}));
}

// Labels of any integer width, range-checked against the label table before narrowing to int32.
std::vector<int32_t> label_ids(const py::object& obj, int64_t num_labels) {
    const auto wide = int_array(obj, "labels", 1);
    std::vector<int32_t> labels(wide.shape(0));
    for (py::ssize_t i = 0; i < wide.shape(0); ++i) {
        const int64_t label = wide.data()[i];
        if (label < -1 || label >= num_labels) {
            throw py::value_error("labels[" + std::to_string(i) + "] = " + std::to_string(label) +
                                  " is out of range [-1, " + std::to_string(num_labels) + ")");
        }
        labels[i] = static_cast<int32_t>(label);
    }
    return labels;
}

// Spans as numpy arrays, one per field.
struct PySpans {
    py::array row, first_word, end_word, type, score, start_char, end_char;
    py::ssize_t size;
};

PySpans spans_to_python(nertron::Spans&& spans) {
    const auto n = static_cast<py::ssize_t>(spans.row.size());
    const auto chars = static_cast<py::ssize_t>(spans.start_char.size());  // 0 unless word offsets were given
    return PySpans{to_numpy(std::move(spans.row), {n}),
                   to_numpy(std::move(spans.first_word), {n}),
                   to_numpy(std::move(spans.end_word), {n}),
                   to_numpy(std::move(spans.type), {n}),
                   to_numpy(std::move(spans.score), {n}),
                   to_numpy(std::move(spans.start_char), {chars}),
                   to_numpy(std::move(spans.end_char), {chars}),
                   n};
}

py::tuple align(const nertron::PostProcessor& self, const py::object& logits_obj,
                const py::object& word_ids_obj, const py::object& num_words_obj) {
    const auto logits = float_array(logits_obj, "logits", 3);
    const auto word_ids = int_array(word_ids_obj, "word_ids", 2);
    const auto num_words = int_array(num_words_obj, "num_words", 1);
    const std::vector<int64_t> words = owned(num_words);
    const py::ssize_t batch = logits.shape(0), seq = logits.shape(1), labels = logits.shape(2);
    check_length(word_ids, 0, batch, "word_ids", "logits has batch size " + std::to_string(batch));
    check_length(word_ids, 1, seq, "word_ids", "logits has sequence length " + std::to_string(seq));
    check_length(num_words, 0, batch, "num_words", "logits has batch size " + std::to_string(batch));
    nertron::WordPredictions result;
    {
        py::gil_scoped_release release;
        result = self.align(logits.data(), word_ids.data(), batch, seq, labels, words.data());
    }
    return predictions_to_python(std::move(result));
}

PySpans decode(const nertron::PostProcessor& self, const py::object& labels_obj, const py::object& scores_obj,
               const py::object& row_words_obj, const py::object& word_start_obj,
               const py::object& word_end_obj, const py::object& word_links_obj) {
    const std::vector<int32_t> labels = label_ids(labels_obj, self.labels().size());
    const auto scores = float_array(scores_obj, "scores", 1);
    const std::vector<int64_t> row_words = owned(int_array(row_words_obj, "row_words", 1));
    const auto rows = static_cast<int64_t>(row_words.size());
    const int64_t total = nertron::checked_total(row_words.data(), rows, "row_words");
    if (static_cast<int64_t>(labels.size()) != total) {
        throw py::value_error("labels has " + std::to_string(labels.size()) + " words but row_words sums to " +
                              std::to_string(total));
    }
    check_length(scores, 0, total, "scores", "row_words sums to " + std::to_string(total));
    if (word_start_obj.is_none() != word_end_obj.is_none()) {
        throw py::value_error("word_start_char and word_end_char must be given together");
    }
    std::optional<IntArray> starts, ends;
    if (!word_start_obj.is_none()) {
        starts = int_array(word_start_obj, "word_start_char", 1);
        ends = int_array(word_end_obj, "word_end_char", 1);
        check_length(*starts, 0, total, "word_start_char", "row_words sums to " + std::to_string(total));
        check_length(*ends, 0, total, "word_end_char", "row_words sums to " + std::to_string(total));
    }
    std::optional<std::vector<uint8_t>> links;  // a copy: the core checks the values, then reads them again
    if (!word_links_obj.is_none()) {
        const py::array a = as_array(word_links_obj, "word_links");
        check_dtype(a, has_dtype(a, "u", 1), "word_links", "a uint8");
        check_ndim(a, 1, "word_links");
        check_length(a, 0, total, "word_links", "row_words sums to " + std::to_string(total));
        const CArray<uint8_t> values(a);
        links.emplace(values.data(), values.data() + values.size());
    }
    nertron::Spans spans;
    {
        py::gil_scoped_release release;
        spans = self.decode(labels.data(), scores.data(), row_words.data(), rows,
                            starts ? starts->data() : nullptr, ends ? ends->data() : nullptr,
                            links ? links->data() : nullptr);
    }
    return spans_to_python(std::move(spans));
}

// The merger keeps the GIL: its work per call is small, and it is not safe for concurrent use.
void merge(nertron::WindowMerger& self, const py::object& window_doc_obj, const py::object& word_start_obj,
           const py::object& window_words_obj, const py::object& labels_obj, const py::object& scores_obj) {
    const auto window_doc = int_array(window_doc_obj, "window_doc", 1);
    const auto word_start = int_array(word_start_obj, "word_start", 1);
    const auto window_words = int_array(window_words_obj, "window_words", 1);
    const py::array labels_any = as_array(labels_obj, "labels");
    check_dtype(labels_any, has_dtype(labels_any, "i", 4), "labels", "an int32");
    check_ndim(labels_any, 1, "labels");
    const CArray<int32_t> labels(labels_any);
    const auto scores = float_array(scores_obj, "scores", 1);
    const py::ssize_t windows = window_doc.shape(0);
    check_length(word_start, 0, windows, "word_start", "window_doc has " + std::to_string(windows));
    check_length(window_words, 0, windows, "window_words", "window_doc has " + std::to_string(windows));
    const int64_t total = nertron::checked_total(window_words.data(), windows, "window_words");
    check_length(labels, 0, total, "labels", "window_words sums to " + std::to_string(total));
    check_length(scores, 0, total, "scores", "window_words sums to " + std::to_string(total));
    self.merge(window_doc.data(), word_start.data(), window_words.data(), windows, labels.data(), scores.data());
}

py::tuple take(nertron::WindowMerger& self, int64_t count) {
    std::vector<int64_t> doc_words;
    nertron::WordPredictions taken = self.take(count, doc_words);
    const auto docs = static_cast<py::ssize_t>(doc_words.size());
    const auto words = static_cast<py::ssize_t>(taken.labels.size());
    return py::make_tuple(to_numpy(std::move(taken.labels), {words}), to_numpy(std::move(taken.scores), {words}),
                          to_numpy(std::move(doc_words), {docs}));
}

}  // namespace

PYBIND11_MODULE(_native, m) {
    using nertron::Aggregation;
    using nertron::PostProcessor;
    using nertron::WindowMerger;
    m.doc() = "nertron's compiled post-processing: subword alignment, window merging, span decoding.";

    // A real enum.Enum on the Python side (Aggregation["FIRST"], iteration, pickling).
    py::native_enum<Aggregation>(m, "Aggregation", "enum.Enum",
                                 "How the subword predictions of a word become one prediction.")
        .value("FIRST", Aggregation::First, "the word's first subword")
        .value("AVERAGE", Aggregation::Average, "mean of the subwords' softmax distributions")
        .value("MAX", Aggregation::Max, "the subword whose top probability is highest")
        .finalize();

    // decode's word_links values (nertron::WordLink), as plain ints: the links travel as a uint8 array.
    m.attr("WORD_FREE") = static_cast<int>(nertron::WordLink::Free);
    m.attr("WORD_JOINED") = static_cast<int>(nertron::WordLink::Joined);
    m.attr("WORD_PARTICLE") = static_cast<int>(nertron::WordLink::Particle);
    m.attr("WORD_PLACE_ENDING") = static_cast<int>(nertron::WordLink::PlaceEnding);
    m.attr("WORD_ORG_ENDING") = static_cast<int>(nertron::WordLink::OrgEnding);
    m.attr("WORD_NAME_DOT") = static_cast<int>(nertron::WordLink::NameDot);

    py::class_<PySpans>(m, "Spans", "Entity spans as arrays, one entry per span.")
        .def_readonly("row", &PySpans::row)
        .def_readonly("first_word", &PySpans::first_word)
        .def_readonly("end_word", &PySpans::end_word)
        .def_readonly("type", &PySpans::type)
        .def_readonly("score", &PySpans::score)
        .def_readonly("start_char", &PySpans::start_char)
        .def_readonly("end_char", &PySpans::end_char)
        .def("__len__", [](const PySpans& s) { return s.size; });

    py::class_<PostProcessor>(m, "PostProcessor", "Alignment and span decoding for one model's labels.")
        .def(py::init([](const std::vector<std::string>& labels, Aggregation aggregation, double temperature,
                         bool constrained) {
                 return PostProcessor(labels, aggregation, to_float(temperature), constrained);
             }),
             py::arg("labels"), py::arg("aggregation") = Aggregation::First, py::arg("temperature") = 1.0,
             py::kw_only(), py::arg("constrained") = false)
        .def_property_readonly("labels", [](const PostProcessor& p) { return p.labels().labels(); })
        .def_property_readonly("types", [](const PostProcessor& p) { return p.labels().types(); })
        .def_property_readonly("aggregation", &PostProcessor::aggregation)
        .def_property_readonly("temperature", &PostProcessor::temperature,
                               "scores are softmax(logits / temperature); labels do not depend on it")
        .def_property_readonly("constrained", &PostProcessor::constrained,
                               "align gives each window the most likely label sequence the tag scheme allows")
        .def("align", &align, py::arg("logits"), py::arg("word_ids"), py::arg("num_words"),
             "Subword logits [batch, seq, labels] -> flat per-word (labels int32, scores float32).")
        .def("decode", &decode, py::arg("labels"), py::arg("scores"), py::arg("row_words"),
             py::arg("word_start_char") = py::none(), py::arg("word_end_char") = py::none(),
             py::arg("word_links") = py::none(),
             "Per-word labels (flat over rows) -> Spans (conlleval/seqeval semantics); word_links (uint8, "
             "WORD_FREE / WORD_JOINED / WORD_PARTICLE / WORD_PLACE_ENDING / WORD_ORG_ENDING / WORD_NAME_DOT per word) "
             "keep entities whole across the segmenter's cuts.");

    py::class_<WindowMerger>(m, "WindowMerger", "Merges overlapping windows' word predictions into documents.")
        .def(py::init<>())
        .def("add_document", &WindowMerger::add_document, py::arg("num_words"))
        .def("merge", &merge, py::arg("window_doc"), py::arg("word_start"), py::arg("window_words"),
             py::arg("labels"), py::arg("scores"))
        .def("take", &take, py::arg("count"),
             "The count oldest documents' (labels, scores, doc_words), flat; they leave the merger.")
        .def_property_readonly("pending", &WindowMerger::pending);
}
