// The safetensors reader and writer. Every size computed from the header is checked before it is used, so a
// crafted file ends in an Error naming the file and the tensor, never in an out-of-bounds access.
#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "base/checked.h"
#include "base/fail.h"
#include "base/text.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"
#include "io/mapped_file.h"
#include "io/output_file.h"

namespace headfuse {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Tensors one file may declare, and entries of its __metadata__. Real checkpoints hold a few thousand tensors per
// file (a mixture-of-experts shard some tens of thousands); the cap bounds the memory the entries of a 100 MB
// header could ask for (about 64 MB of them at this count).
constexpr std::size_t kMaxEntries = std::size_t{1} << 18;
// How much of a value that is not the expected one an error message shows.
constexpr std::size_t kShownChars = 80;

struct DtypeName {
    std::string_view name;
    std::uint32_t size;         // bytes per element
    std::optional<DType> type;  // the dtypes headfuse reads
};
// Every dtype of the format, so that a file is validated whole; tensors of the last rows are refused when used.
constexpr DtypeName kDtypes[] = {
    {"F32", 4, DType::F32}, {"F16", 2, DType::F16}, {"BF16", 2, DType::BF16}, {"F64", 8, {}},     {"I64", 8, {}},
    {"U64", 8, {}},         {"I32", 4, {}},         {"U32", 4, {}},           {"I16", 2, {}},     {"U16", 2, {}},
    {"I8", 1, {}},          {"U8", 1, {}},          {"BOOL", 1, {}},          {"F8_E4M3", 1, {}}, {"F8_E5M2", 1, {}},
};

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

// A JSON string as JSON writes it, cut to kShownChars.
std::string shown_string(const std::string& s) {
    std::string d = json(s).dump();
    return d.size() > kShownChars ? d.substr(0, kShownChars) + "..." : d;
}

struct Entry {
    StTensor t;
    std::uint64_t begin = 0, end = 0;
};

// The header's JSON read as it streams (nlohmann's SAX interface) straight into its entries, its shape
// enforced on the way: one object of tensor entries {dtype, shape, data_offsets} and an optional
// "__metadata__" object of strings, nothing nested deeper, no key twice in an object, unsigned integers only,
// at most kMaxEntries tensors and metadata entries (counted to the end, so that the refusal says how many).
// Time is linear in the header: no document is built (a document built with nlohmann's parse callback rescans
// the top object at the end of every entry, which made a header of n tensors cost n^2).
class HeaderReader {
public:
    HeaderReader(const std::string& name, std::uint64_t buffer_size, std::map<std::string, std::string>& metadata)
        : name_(name), buffer_size_(buffer_size), metadata_(metadata) {}

    std::vector<Entry> read(std::string_view text) {
        json::sax_parse(text.begin(), text.end(), this);
        return std::move(entries_);
    }

    // The SAX interface.
    bool null() { return scalar("null"); }
    bool boolean(bool b) { return scalar(b ? "true" : "false"); }
    bool number_integer(std::int64_t v) { return scalar(std::to_string(v)); }
    bool number_unsigned(std::uint64_t v) { return scalar(std::to_string(v), v); }
    bool number_float(double, const std::string& text) { return scalar(text); }
    bool string(std::string& s) {
        if (over_) return true;
        if (depth_ == 2 && ctx_ == Ctx::Metadata) {
            if (!over_) metadata_[key_] = std::move(s);
            return true;
        }
        if (depth_ == 2 && ctx_ == Ctx::Entry && key_ == "dtype") {
            for (const DtypeName& d : kDtypes)
                if (s == d.name) {
                    entry_.t.dtype = d.name;
                    entry_.t.type = d.type;
                    dtype_size_ = d.size;
                    return true;
                }
            fail(where() + ": unknown dtype " + in_quotes(s));
        }
        return scalar(shown_string(s));
    }
    bool binary(json::binary_t&) { return scalar("binary"); }

    bool start_object(std::size_t) { return open(true); }
    bool start_array(std::size_t) { return open(false); }

    bool key(std::string& k) {
        if (depth_ == 1) {
            if (k == "__metadata__") {
                if (metadata_seen_) fail(name_ + ": header has key '__metadata__' twice");
                metadata_seen_ = true;
                ctx_ = Ctx::Metadata;
            } else {
                ctx_ = Ctx::Entry;
                if (++tensors_ > kMaxEntries) over_ = true;
                if (!over_ && !names_.insert(k).second) fail(name_ + ": header has key " + in_quotes(k) + " twice");
            }
            entry_name_ = k;
        } else if (depth_ == 2 && ctx_ == Ctx::Metadata) {
            if (++metadata_entries_ > kMaxEntries) over_ = true;
            if (!over_ && metadata_.count(k)) fail(name_ + ": \"__metadata__\" has key " + in_quotes(k) + " twice");
        } else if (depth_ == 2 && !over_) {  // a field of a tensor entry
            int i = 0;
            while (i < 3 && k != kFields[i]) ++i;
            if (i == 3) fail(where() + ": unexpected field " + in_quotes(k) + " (expected dtype, shape, data_offsets)");
            if (has_[i]) fail(where() + ": key " + in_quotes(k) + " twice");
            has_[i] = true;
        }
        key_ = std::move(k);
        return true;
    }

    bool end_array() {
        --depth_;
        if (over_ || depth_ != 2 || ctx_ != Ctx::Entry) return true;
        if (key_ == "shape") {
            if (dims_ > kMaxSafetensorsDims)
                fail(ErrorKind::Unsupported, where() + ": " + std::to_string(dims_) +
                                                 " dimensions, headfuse reads at most " +
                                                 std::to_string(kMaxSafetensorsDims));
            if (!not_unsigned_.empty())
                fail(where() + ": \"shape\" must hold unsigned integers, found " + not_unsigned_);
        } else {  // data_offsets
            if (offsets_.size() != 2)
                fail(where() + ": \"data_offsets\" must be [begin, end], found [" + offsets_text_ +
                     (offsets_.size() > 3 ? ",...]" : "]"));
            if (!not_unsigned_.empty())
                fail(where() + ": \"data_offsets\" must hold unsigned integers, found " + not_unsigned_);
            entry_.begin = offsets_[0];
            entry_.end = offsets_[1];
        }
        return true;
    }

    bool end_object() {
        --depth_;
        if (depth_ == 0) {
            if (tensors_ > kMaxEntries)
                fail(name_ + ": header declares " + std::to_string(tensors_) + " tensors, more than the " +
                     std::to_string(kMaxEntries) + " headfuse reads from one file");
            if (metadata_entries_ > kMaxEntries)
                fail(name_ + ": \"__metadata__\" holds " + std::to_string(metadata_entries_) +
                     " entries, more than the " + std::to_string(kMaxEntries) + " headfuse reads");
        }
        if (depth_ == 1 && ctx_ == Ctx::Entry && !over_) finish_entry();
        return true;
    }

    bool parse_error(std::size_t, const std::string&, const json::exception& e) {
        fail(name_ + ": header is not valid JSON: " + e.what());
    }

private:
    enum class Ctx { Metadata, Entry };
    static constexpr const char* kFields[3] = {"dtype", "shape", "data_offsets"};

    std::string where() const { return name_ + ": tensor " + in_quotes(entry_name_); }

    // An object or array begins.
    bool open(bool object) {
        const char* kind = object ? "an object" : "an array";
        if (depth_ >= 3) fail(name_ + ": header JSON nests deeper than a tensor entry");
        if (depth_ == 1 && !over_) {
            if (ctx_ == Ctx::Metadata && !object) fail(name_ + ": \"__metadata__\" must be an object of strings");
            if (ctx_ == Ctx::Entry && !object) fail(where() + ": entry must be an object, found array");
            if (ctx_ == Ctx::Entry) {
                entry_ = Entry{};
                entry_.t.name = entry_name_;
                has_[0] = has_[1] = has_[2] = false;
            }
        } else if (depth_ == 2 && !over_) {
            if (ctx_ == Ctx::Metadata)
                fail(name_ + ": \"__metadata__\" value of " + in_quotes(key_) + " must be a string, found " + kind);
            if (key_ == "dtype") fail(where() + ": \"dtype\" must be a string, found " + kind);
            if (object) {
                if (key_ == "shape") fail(where() + ": \"shape\" must be an array, found an object");
                fail(where() + ": \"data_offsets\" must be [begin, end], found an object");
            }
            dims_ = 0;
            not_unsigned_.clear();
            offsets_.clear();
            offsets_text_.clear();
        }
        ++depth_;
        return true;
    }

    // A value that is not an object or an array; `text` as JSON shows it, `u` when it is an unsigned integer.
    bool scalar(const std::string& text, std::optional<std::uint64_t> u = std::nullopt) {
        if (over_) return true;
        if (depth_ == 1)  // a tensor entry or __metadata__ that is not an object
            fail(ctx_ == Ctx::Metadata ? name_ + ": \"__metadata__\" must be an object of strings"
                                       : where() + ": entry must be an object, found " + json_type(text));
        if (depth_ == 2) {
            if (ctx_ == Ctx::Metadata)
                fail(name_ + ": \"__metadata__\" value of " + in_quotes(key_) + " must be a string, found " + text);
            if (key_ == "dtype") fail(where() + ": \"dtype\" must be a string, found " + text);
            if (key_ == "shape") fail(where() + ": \"shape\" must be an array, found " + text);
            fail(where() + ": \"data_offsets\" must be [begin, end], found " + text);
        }
        // depth 3: an element of shape or data_offsets
        if (!u && not_unsigned_.empty()) not_unsigned_ = text;
        if (key_ == "shape") {
            if (++dims_ <= kMaxSafetensorsDims && u) entry_.t.shape.push_back(*u);
        } else {
            if (offsets_.size() < 3) offsets_text_ += (offsets_.empty() ? "" : ",") + text;
            if (offsets_.size() < 4) offsets_.push_back(u.value_or(0));  // counted no further than "more than 3"
        }
        return true;
    }

    static std::string json_type(const std::string& text) {
        if (text == "null") return "null";
        if (text == "true" || text == "false") return "boolean";
        if (!text.empty() && text.front() == '"') return "string";
        return "number";
    }

    // The checks of one complete tensor entry.
    void finish_entry() {
        const std::string w = where();
        for (int i = 0; i < 3; ++i)
            if (!has_[i]) fail(w + ": missing field \"" + kFields[i] + "\"");
        Entry& e = entry_;
        std::uint64_t elements = 1;
        for (std::uint64_t d : e.t.shape) elements = checked_mul(elements, d, w + ": element count");
        if (e.end < e.begin)
            fail(w + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 "] end before they begin");
        const std::uint64_t nbytes = checked_mul(elements, dtype_size_, w + ": byte length");
        if (e.end - e.begin != nbytes)
            fail(w + ": " + std::string(e.t.dtype) + " " + format_shape(e.t.shape) + " needs " +
                 std::to_string(nbytes) + " bytes, data_offsets give " + std::to_string(e.end - e.begin));
        if (e.end > buffer_size_)
            fail(w + ": data_offsets end at " + std::to_string(e.end) + ", past the data buffer of " +
                 std::to_string(buffer_size_) + " bytes");
        entries_.push_back(std::move(e));
    }

    const std::string& name_;
    const std::uint64_t buffer_size_;
    std::map<std::string, std::string>& metadata_;
    std::vector<Entry> entries_;
    std::unordered_set<std::string> names_;
    std::size_t tensors_ = 0, metadata_entries_ = 0;
    bool over_ = false;  // past kMaxEntries: only counting now
    bool metadata_seen_ = false;
    int depth_ = 0;  // open objects and arrays
    Ctx ctx_ = Ctx::Entry;
    std::string entry_name_, key_;
    // The entry being read.
    Entry entry_;
    bool has_[3] = {};
    std::uint32_t dtype_size_ = 0;
    std::size_t dims_ = 0;
    std::vector<std::uint64_t> offsets_;
    std::string offsets_text_, not_unsigned_;
};

std::uint64_t read_u64_le(const std::byte* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<std::uint8_t>(p[i]);
    return v;
}

// The tensors a header's JSON declares, checked against a data buffer of `buffer_size` bytes.
std::vector<Entry> parse_entries(std::string_view text, std::uint64_t buffer_size, const std::string& name,
                                 std::map<std::string, std::string>& metadata) {
    std::vector<Entry> out = HeaderReader(name, buffer_size, metadata).read(text);
    // The tensors must tile the buffer: sorted by offset, each begins where the previous ended.
    // Stable: of entries with the same range, the first in the header is named first.
    std::stable_sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) {
        return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
    });
    std::uint64_t at = 0;
    const Entry* prev = nullptr;
    for (const Entry& e : out) {
        if (e.begin < at)
            fail(name + ": tensor " + in_quotes(e.t.name) + " at [" + std::to_string(e.begin) + ", " +
                 std::to_string(e.end) + ") overlaps tensor " + in_quotes(prev->t.name) + " (ends at " +
                 std::to_string(at) + ")");
        if (e.begin > at)
            fail(name + ": " + std::to_string(e.begin - at) + " bytes at offset " + std::to_string(at) +
                 " of the data buffer belong to no tensor (before " + in_quotes(e.t.name) + ")");
        at = e.end;
        prev = &e;
    }
    if (at != buffer_size)
        fail(name + ": the tensors end at offset " + std::to_string(at) + " of a data buffer of " +
             std::to_string(buffer_size) + " bytes");
    return out;
}

// The header of a file of `file_size` bytes: its JSON text, after the length checks.
std::string_view header_text(std::span<const std::byte> bytes, const std::string& name) {
    if (bytes.size() < 8)
        fail(name + ": " + std::to_string(bytes.size()) + " bytes, too short for the 8-byte header length");
    const std::uint64_t n = read_u64_le(bytes.data());
    if (n > kMaxSafetensorsHeader)
        fail(name + ": header length " + std::to_string(n) + " exceeds the " + std::to_string(kMaxSafetensorsHeader) +
             " bytes safetensors allows");
    if (n > bytes.size() - 8)
        fail(name + ": header length " + std::to_string(n) + " runs past the end of the file (" +
             std::to_string(bytes.size()) + " bytes)");
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()) + 8, n);
    if (text.empty() || text.front() != '{') fail(name + ": header must start with '{'");
    return text;
}

}  // namespace

DType StTensor::readable_type() const {
    if (!type)
        fail(ErrorKind::Unsupported,
             "tensor '" + name + "' has dtype " + std::string(dtype) + "; headfuse reads F32, F16 and BF16");
    return *type;
}

std::string_view safetensors_dtype_name(DType t) {
    for (const DtypeName& d : kDtypes)
        if (d.type == t) return d.name;
    fail(ErrorKind::Unsupported,
         "type " + std::string(type_name(t)) + " cannot be written to safetensors (f32, f16 and bf16 can)");
}

SafetensorsFile SafetensorsFile::parse(std::span<const std::byte> bytes, std::string name) {
    SafetensorsFile f;
    f.name_ = std::move(name);
    const std::string_view text = header_text(bytes, f.name_);
    const std::uint64_t data_start = 8 + text.size();
    std::vector<Entry> entries = parse_entries(text, bytes.size() - data_start, f.name_, f.metadata_);
    f.tensors_.reserve(entries.size());
    for (Entry& e : entries) {
        e.t.file_offset = data_start + e.begin;
        e.t.bytes = bytes.subspan(e.t.file_offset, e.end - e.begin);
        f.index_.emplace(e.t.name, f.tensors_.size());
        f.tensors_.push_back(std::move(e.t));
    }
    return f;
}

SafetensorsFile SafetensorsFile::open(const fs::path& path) {
    auto file = std::make_shared<MappedFile>(MappedFile::open(path));
    SafetensorsFile f = parse(file->bytes(), path.string());
    for (StTensor& t : f.tensors_) t.file = file.get();
    f.file_ = std::move(file);
    return f;
}

const StTensor* SafetensorsFile::find(std::string_view name) const noexcept {
    const auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
}

namespace {

// The index's JSON: {"metadata": {...}, "weight_map": {tensor: file}}. Returns the files in first-use order.
std::vector<std::string> read_index(const fs::path& path, std::map<std::string, std::string>& weight_map) {
    const MappedFile m = MappedFile::open(path);
    const std::string name = path.string();
    if (m.bytes().size() > kMaxSafetensorsHeader)
        fail(name + ": " + std::to_string(m.bytes().size()) + " bytes, more than the " +
             std::to_string(kMaxSafetensorsHeader) + " headfuse reads from an index");
    const std::string_view text(reinterpret_cast<const char*>(m.bytes().data()), m.bytes().size());
    json j;
    try {
        j = json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {
        fail(name + ": not valid JSON: " + e.what());
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        fail(name + ": expected an object with a \"weight_map\" object");
    std::vector<std::string> files;
    std::set<std::string> seen;
    for (const auto& [tensor, file] : j["weight_map"].items()) {
        if (!file.is_string())
            fail(name + ": weight_map entry " + in_quotes(tensor) + " must name a file, found " + file.dump());
        const std::string& f = file.get_ref<const std::string&>();
        if (f.empty() || f == "." || f == ".." || f.find('/') != std::string::npos || f.find('\0') != std::string::npos)
            fail(name + ": weight_map entry " + in_quotes(tensor) + " names " + in_quotes(f) +
                 ", expected a file in the index's folder");
        weight_map[tensor] = f;
        if (seen.insert(f).second) files.push_back(f);
    }
    if (files.empty()) fail(name + ": weight_map lists no tensors");
    return files;
}

}  // namespace

SafetensorsSet SafetensorsSet::open(const fs::path& path) {
    SafetensorsSet s;
    fs::path p = path;
    std::error_code ec;
    if (fs::is_directory(p, ec)) {
        const bool index = fs::exists(p / kSafetensorsIndexName, ec);
        const bool single = fs::exists(p / kSafetensorsSingleName, ec);
        // Both: two checkpoints in one folder (one written over the other), and loaders disagree on which
        // wins (Hugging Face's takes the single file). Neither is guessed.
        if (index && single)
            fail(path.string() + ": folder holds both " + std::string(kSafetensorsSingleName) + " and " +
                 std::string(kSafetensorsIndexName) + ", two checkpoints; remove the stale one");
        if (index)
            p = p / kSafetensorsIndexName;
        else if (single)
            p = p / kSafetensorsSingleName;
        else
            fail(path.string() + ": folder holds neither " + std::string(kSafetensorsSingleName) + " nor " +
                 std::string(kSafetensorsIndexName));
    }
    s.folder_ = p.parent_path().empty() ? fs::path(".") : p.parent_path();
    if (p.extension() != ".json") {
        s.name_ = p.string();
        s.files_.push_back(SafetensorsFile::open(p));
    } else {
        s.index_path_ = p;
        std::map<std::string, std::string> weight_map;
        const std::vector<std::string> files = read_index(p, weight_map);
        s.name_ = p.string() + " (" + std::to_string(files.size()) + " shards)";
        s.files_.reserve(files.size());
        for (const std::string& f : files) s.files_.push_back(SafetensorsFile::open(s.folder_ / f));
        // Every listed tensor is in the file the map names, and every tensor of a shard is listed there.
        for (const SafetensorsFile& f : s.files_) {
            const std::string file = fs::path(f.name()).filename().string();
            for (const StTensor& t : f.tensors()) {
                const auto it = weight_map.find(t.name);
                if (it == weight_map.end())
                    fail(p.string() + ": tensor " + in_quotes(t.name) + " of " + f.name() +
                         " is not in the weight_map");
                if (it->second != file)
                    fail(p.string() + ": tensor " + in_quotes(t.name) + " is in " + f.name() +
                         ", the weight_map says " + in_quotes(it->second));
            }
        }
        // A map of the shards by name: one look-up per entry, not a scan of the shards.
        std::map<std::string, const SafetensorsFile*, std::less<>> shard;
        for (const SafetensorsFile& f : s.files_) shard.emplace(fs::path(f.name()).filename().string(), &f);
        for (const auto& [tensor, file] : weight_map) {
            const auto it = shard.find(file);
            if (it == shard.end() || !it->second->find(tensor))
                fail(p.string() + ": weight_map puts tensor " + in_quotes(tensor) + " in " + in_quotes(file) +
                     ", which does not hold it");
        }
    }
    for (const SafetensorsFile& f : s.files_)
        for (const StTensor& t : f.tensors())
            if (!s.by_name_.emplace(t.name, &t).second)
                fail(s.name_ + ": tensor " + in_quotes(t.name) + " appears in two files");
    return s;
}

const StTensor* SafetensorsSet::find(std::string_view name) const noexcept {
    const auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

std::vector<const StTensor*> SafetensorsSet::tensors() const {
    std::vector<const StTensor*> out;
    for (const SafetensorsFile& f : files_)
        for (const StTensor& t : f.tensors()) out.push_back(&t);
    return out;
}

std::vector<fs::path> SafetensorsSet::paths() const {
    std::vector<fs::path> out;
    for (const SafetensorsFile& f : files_) out.emplace_back(f.name());
    if (!index_path_.empty()) out.push_back(index_path_);
    return out;
}

// ------------------------------------------------------------------------------------------------------------
// The writer.

std::uint64_t StTensorPlan::nbytes() const {
    std::uint64_t n = traits(type).type_size;
    for (std::uint64_t d : shape) n = checked_mul(n, d, "tensor '" + name + "': byte length");
    return n;
}

namespace {

// The header bytes (length, JSON padded with spaces to a multiple of 8, as the reference writer does).
std::vector<std::byte> header_bytes(const std::vector<StTensorPlan>& tensors,
                                    const std::map<std::string, std::string>& metadata) {
    nlohmann::ordered_json j = nlohmann::ordered_json::object();
    if (!metadata.empty()) j["__metadata__"] = metadata;
    std::uint64_t at = 0;
    std::set<std::string_view> names{"__metadata__"};
    for (const StTensorPlan& t : tensors) {
        const std::uint64_t end = checked_add(at, t.nbytes(), "safetensors data");
        if (!names.insert(t.name).second)
            fail(ErrorKind::InvalidArgument, "tensor '" + t.name + "' cannot be written: the name is taken");
        j[t.name] = {{"dtype", safetensors_dtype_name(t.type)}, {"shape", t.shape}, {"data_offsets", {at, end}}};
        at = end;
    }
    std::string text = j.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    std::vector<std::byte> out(8 + text.size());
    for (int i = 0; i < 8; ++i) out[i] = static_cast<std::byte>(std::uint64_t{text.size()} >> (8 * i) & 0xff);
    std::memcpy(out.data() + 8, text.data(), text.size());
    return out;
}

void write_one(const fs::path& path, const std::vector<StTensorPlan>& tensors,
               const std::map<std::string, std::string>& metadata, std::span<const fs::path> inputs,
               const ProgressFn& progress, std::uint64_t done_before, std::uint64_t total, OutputSet* set = nullptr) {
    const std::vector<std::byte> head = header_bytes(tensors, metadata);
    std::uint64_t data = 0;
    for (const StTensorPlan& t : tensors) data += t.nbytes();
    // The writer agrees with the reader: the header about to go out passes the reader's rules.
    {
        const std::string name = path.string() + " (header about to be written)";
        std::map<std::string, std::string> md;
        const std::string_view text(reinterpret_cast<const char*>(head.data()) + 8, head.size() - 8);
        parse_entries(text, data, name, md);
    }
    OutputFile out(path, inputs, head.size() + data, set);
    if (progress)
        out.set_progress([&](std::uint64_t d, std::uint64_t) { progress(done_before + d, total); }, head.size() + data);
    out.write(head);
    for (const StTensorPlan& t : tensors) {
        CountingSink sink(out, t.name, t.nbytes());
        t.produce(sink);
        sink.finish();
    }
    out.commit();
}

}  // namespace

void write_safetensors_file(const fs::path& path, const std::vector<StTensorPlan>& tensors,
                            const std::map<std::string, std::string>& metadata, std::span<const fs::path> inputs,
                            const ProgressFn& progress) {
    std::uint64_t total = 0;
    for (const StTensorPlan& t : tensors) total += t.nbytes();
    write_one(path, tensors, metadata, inputs, progress, 0, total);
}

std::vector<fs::path> write_safetensors(const fs::path& folder, const std::vector<StTensorPlan>& tensors,
                                        const StWriteOptions& options, std::span<const fs::path> inputs) {
    if (options.max_shard_bytes == 0) fail(ErrorKind::InvalidArgument, "the shard size limit must be positive");
    // Greedy shards, as Hugging Face cuts them: a tensor that would overflow the current shard starts the next.
    std::vector<std::vector<StTensorPlan>> shards(1);
    std::uint64_t in_shard = 0, total = 0;
    for (const StTensorPlan& t : tensors) {
        const std::uint64_t n = t.nbytes();
        total = checked_add(total, n, "safetensors data");
        if (!shards.back().empty() && n > options.max_shard_bytes - std::min(in_shard, options.max_shard_bytes)) {
            shards.emplace_back();
            in_shard = 0;
        }
        shards.back().push_back(t);
        in_shard += n;
    }
    std::vector<fs::path> written;
    std::error_code ec;
    const bool folder_existed = fs::exists(folder, ec);
    std::optional<OutputSet> own;  // without the caller's set, the files are a set of their own
    try {
        fs::create_directories(folder, ec);
        if (ec) fail(ErrorKind::Io, "cannot create folder '" + folder.string() + "': " + ec.message());
        OutputSet* set = options.set ? options.set : &own.emplace(folder, std::string(kCheckpointStem));
        // Room for every shard, checked before the first is written.
        check_free_space(folder, total,
                         "'" + folder.string() + "' (" + std::to_string(shards.size()) + " safetensors file" +
                             (shards.size() == 1 ? ")" : "s)"));
        if (shards.size() == 1) {
            write_one(folder / kSafetensorsSingleName, shards[0], options.metadata, inputs, options.progress, 0, total,
                      set);
            written.push_back(folder / kSafetensorsSingleName);
        } else {
            char buf[64];
            nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
            std::uint64_t done = 0;
            for (std::size_t i = 0; i < shards.size(); ++i) {
                std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
                const fs::path p = folder / buf;
                write_one(p, shards[i], options.metadata, inputs, options.progress, done, total, set);
                written.push_back(p);
                for (const StTensorPlan& t : shards[i]) {
                    weight_map[t.name] = std::string(buf);
                    done += t.nbytes();
                }
            }
            nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
            const std::string text = index.dump(2) + "\n";
            OutputFile out(folder / kSafetensorsIndexName, inputs, text.size(), set);
            out.write({reinterpret_cast<const std::byte*>(text.data()), text.size()});
            out.commit();
            written.push_back(folder / kSafetensorsIndexName);
        }
        if (own) own->publish();
        return written;
    } catch (...) {
        own.reset();                                  // the staging folder and what it holds
        if (!folder_existed) fs::remove(folder, ec);  // the folder we made, if it is empty
        throw;
    }
}

}  // namespace headfuse
