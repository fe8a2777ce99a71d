// The safetensors reader and writer. Every size computed from the header is checked before it is used, so a
// crafted file ends in an Error naming the file and the tensor, never in an out-of-bounds access.
#include "formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "base/checked.h"
#include "headfuse/error.h"
#include "headfuse/file_io.h"
#include "io/mapped_file.h"
#include "io/output_file.h"

namespace headfuse {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Tensors (and metadata entries) one file may declare. Real checkpoints hold a few thousand per file; the cap
// bounds the memory a 100 MB header of empty entries could ask for.
constexpr std::size_t kMaxEntries = std::size_t{1} << 18;

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

// The JSON of a header, parsed with its shape enforced while it streams: nesting at most 3 deep (the tensor
// entries' arrays), no duplicate key in any object, at most kMaxEntries entries.
json parse_header_json(std::string_view text, const std::string& name) {
    std::vector<std::set<std::string>> keys;  // one per open object
    std::size_t entries = 0;
    auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
        switch (event) {
            case json::parse_event_t::object_start:
                if (depth > 2) fail(name + ": header JSON nests deeper than a tensor entry");
                keys.emplace_back();
                break;
            case json::parse_event_t::object_end: keys.pop_back(); break;
            case json::parse_event_t::array_start:
                if (depth > 2) fail(name + ": header JSON nests deeper than a tensor entry");
                break;
            case json::parse_event_t::key: {
                const std::string& k = parsed.get_ref<const std::string&>();
                if (!keys.back().insert(k).second) fail(name + ": header has key " + in_quotes(k) + " twice");
                if (++entries > kMaxEntries)
                    fail(name + ": header has more than " + std::to_string(kMaxEntries) +
                         " entries, the most headfuse reads");
                break;
            }
            default: break;
        }
        return true;
    };
    try {
        return json::parse(text.begin(), text.end(), cb);
    } catch (const json::exception& e) {
        fail(name + ": header is not valid JSON: " + e.what());
    }
}

std::uint64_t read_u64_le(const std::byte* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | static_cast<std::uint8_t>(p[i]);
    return v;
}

const DtypeName& parse_dtype_name(const json& v, const std::string& where) {
    if (!v.is_string()) fail(where + ": \"dtype\" must be a string, found " + v.dump());
    const auto& s = v.get_ref<const std::string&>();
    for (const DtypeName& d : kDtypes)
        if (s == d.name) return d;
    fail(where + ": unknown dtype " + in_quotes(s));
}

std::uint64_t unsigned_of(const json& v, const std::string& where, std::string_view field) {
    if (!v.is_number_unsigned())
        fail(where + ": \"" + std::string(field) + "\" must hold unsigned integers, found " + v.dump());
    return v.get<std::uint64_t>();
}

struct Entry {
    StTensor t;
    std::uint64_t begin = 0, end = 0;
};

// The tensors a header declares, checked against a data buffer of `buffer_size` bytes.
std::vector<Entry> parse_entries(const json& j, std::uint64_t buffer_size, const std::string& name,
                                 std::map<std::string, std::string>& metadata) {
    if (!j.is_object()) fail(name + ": header must be a JSON object, found " + std::string(j.type_name()));
    std::vector<Entry> out;
    for (const auto& [key, v] : j.items()) {
        if (key == "__metadata__") {
            if (!v.is_object()) fail(name + ": \"__metadata__\" must be an object of strings");
            for (const auto& [mk, mv] : v.items()) {
                if (!mv.is_string())
                    fail(name + ": \"__metadata__\" value of " + in_quotes(mk) + " must be a string, found " +
                         mv.dump());
                metadata[mk] = mv.get<std::string>();
            }
            continue;
        }
        const std::string where = name + ": tensor " + in_quotes(key);
        if (!v.is_object()) fail(where + ": entry must be an object, found " + std::string(v.type_name()));
        for (const auto& [field, fv] : v.items())
            if (field != "dtype" && field != "shape" && field != "data_offsets")
                fail(where + ": unexpected field " + in_quotes(field) + " (expected dtype, shape, data_offsets)");
        for (const char* field : {"dtype", "shape", "data_offsets"})
            if (!v.contains(field)) fail(where + ": missing field \"" + field + "\"");
        Entry e;
        e.t.name = key;
        const DtypeName& dt = parse_dtype_name(v["dtype"], where);
        e.t.dtype = dt.name;
        e.t.type = dt.type;
        const json& shape = v["shape"];
        if (!shape.is_array()) fail(where + ": \"shape\" must be an array, found " + shape.dump());
        if (shape.size() > kMaxSafetensorsDims)
            fail(ErrorKind::Unsupported, where + ": " + std::to_string(shape.size()) +
                                             " dimensions, headfuse reads at most " +
                                             std::to_string(kMaxSafetensorsDims));
        std::uint64_t elements = 1;
        for (const json& d : shape) {
            e.t.shape.push_back(unsigned_of(d, where, "shape"));
            elements = checked_mul(elements, e.t.shape.back(), where + ": element count");
        }
        const json& off = v["data_offsets"];
        if (!off.is_array() || off.size() != 2)
            fail(where + ": \"data_offsets\" must be [begin, end], found " + off.dump());
        e.begin = unsigned_of(off[0], where, "data_offsets");
        e.end = unsigned_of(off[1], where, "data_offsets");
        if (e.end < e.begin)
            fail(where + ": data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                 "] end before they begin");
        const std::uint64_t nbytes = checked_mul(elements, dt.size, where + ": byte length");
        if (e.end - e.begin != nbytes)
            fail(where + ": " + std::string(dt.name) + " " + format_shape(e.t.shape) + " needs " +
                 std::to_string(nbytes) + " bytes, data_offsets give " + std::to_string(e.end - e.begin));
        if (e.end > buffer_size)
            fail(where + ": data_offsets end at " + std::to_string(e.end) + ", past the data buffer of " +
                 std::to_string(buffer_size) + " bytes");
        out.push_back(std::move(e));
    }
    // The tensors must tile the buffer: sorted by offset, each begins where the previous ended.
    std::sort(out.begin(), out.end(),
              [](const Entry& a, const Entry& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
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
    const json j = parse_header_json(text, f.name_);
    std::vector<Entry> entries = parse_entries(j, bytes.size() - data_start, f.name_, f.metadata_);
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
        for (const auto& entry : weight_map) {
            // Named, not a structured binding: clang before 16 cannot capture a binding in a lambda.
            const std::string &tensor = entry.first, &file = entry.second;
            const auto it = std::find_if(s.files_.begin(), s.files_.end(), [&](const SafetensorsFile& f) {
                return fs::path(f.name()).filename() == file;
            });
            if (it == s.files_.end() || !it->find(tensor))
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
        parse_entries(parse_header_json(text, name), data, name, md);
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
