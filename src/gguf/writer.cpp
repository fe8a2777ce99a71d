// The GGUF writer: the header goes out first (every size is known from the plan), then each tensor is
// streamed by its producer and padded, into an OutputFile that is published atomically.
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>

#include "base/checked.h"
#include "base/fail.h"
#include "gguf/writer.h"
#include "headfuse/error.h"
#include "headfuse/gguf.h"
#include "io/output_file.h"

namespace headfuse {
namespace {

// The file name of a split set's prefix, a trailing ".gguf" dropped (as shard_path does).
std::string set_stem(const std::filesystem::path& prefix) {
    std::string stem = prefix.filename().string();
    if (stem.size() > 5 && stem.ends_with(".gguf")) stem.resize(stem.size() - 5);
    return stem;
}

// PREFIX-0000i-of-0000n.gguf files in PREFIX's folder whose n is not `n_shards`: the shards of another set (none
// that is one of `inputs`: those stay).
std::vector<std::filesystem::path> older_shards(const std::filesystem::path& prefix, std::size_t n_shards,
                                                std::span<const std::filesystem::path> inputs) {
    std::vector<std::filesystem::path> out;
    const std::filesystem::path dir = prefix.parent_path().empty() ? std::filesystem::path(".") : prefix.parent_path();
    const std::string stem = set_stem(prefix) + "-";
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        // "-00001-of-00003.gguf": 20 characters after the stem.
        if (name.size() != stem.size() + 20 || !name.starts_with(stem) || !name.ends_with(".gguf")) continue;
        const std::string_view tail = std::string_view(name).substr(stem.size());
        auto digits = [](std::string_view d) { return d.find_first_not_of("0123456789") == std::string_view::npos; };
        if (!digits(tail.substr(0, 5)) || tail.substr(5, 4) != "-of-" || !digits(tail.substr(9, 5))) continue;
        if (std::stoul(std::string(tail.substr(9, 5))) == n_shards) continue;
        bool input = false;
        for (const auto& in : inputs) input = input || std::filesystem::equivalent(in, dir / name, ec);
        if (!input) out.push_back(dir / name);
    }
    return out;
}

class HeaderBuilder {
public:
    template <class T>
    void put(T v) {
        auto p = reinterpret_cast<const std::byte*>(&v);
        out.insert(out.end(), p, p + sizeof(T));
    }
    void put_string(std::string_view s) {
        put<std::uint64_t>(s.size());
        auto p = reinterpret_cast<const std::byte*>(s.data());
        out.insert(out.end(), p, p + s.size());
    }
    void put_scalar(const Value& v) {
        switch (v.type) {
            case ValueType::U8: put(static_cast<std::uint8_t>(std::get<std::uint64_t>(v.scalar))); break;
            case ValueType::I8: put(static_cast<std::int8_t>(std::get<std::int64_t>(v.scalar))); break;
            case ValueType::U16: put(static_cast<std::uint16_t>(std::get<std::uint64_t>(v.scalar))); break;
            case ValueType::I16: put(static_cast<std::int16_t>(std::get<std::int64_t>(v.scalar))); break;
            case ValueType::U32: put(static_cast<std::uint32_t>(std::get<std::uint64_t>(v.scalar))); break;
            case ValueType::I32: put(static_cast<std::int32_t>(std::get<std::int64_t>(v.scalar))); break;
            case ValueType::U64: put(std::get<std::uint64_t>(v.scalar)); break;
            case ValueType::I64: put(std::get<std::int64_t>(v.scalar)); break;
            case ValueType::F32: put(static_cast<float>(std::get<double>(v.scalar))); break;
            case ValueType::F64: put(std::get<double>(v.scalar)); break;
            case ValueType::BOOL: put(static_cast<std::uint8_t>(std::get<bool>(v.scalar) ? 1 : 0)); break;
            case ValueType::STRING: put_string(std::get<std::string>(v.scalar)); break;
            case ValueType::ARRAY: fail(ErrorKind::InvalidArgument, "GGUF arrays cannot hold arrays");
        }
    }
    void put_value(const Value& v) {
        put(static_cast<std::uint32_t>(v.type));
        if (v.type != ValueType::ARRAY) return put_scalar(v);
        put(static_cast<std::uint32_t>(v.elem_type));
        put<std::uint64_t>(v.items.size());
        for (const Value& item : v.items) {
            if (item.type != v.elem_type)
                fail(ErrorKind::InvalidArgument, "array item type differs from the array's element type");
            put_scalar(item);
        }
    }
    std::vector<std::byte> out;
};

}  // namespace

void GgufWriter::add_tensor(std::string name, std::uint32_t type, std::span<const std::uint64_t> ne,
                            std::function<void(ByteSink&)> produce) {
    const std::string tn = "tensor '" + name + "'";
    if (name.size() > kMaxTensorName)
        fail(ErrorKind::InvalidArgument,
             tn + ": name is " + std::to_string(name.size()) + " bytes, at most " + std::to_string(kMaxTensorName));
    if (names_.contains(name)) fail(ErrorKind::InvalidArgument, "duplicate " + tn);
    if (ne.empty() || ne.size() > kMaxDims)
        fail(ErrorKind::InvalidArgument, tn + ": n_dims must be 1..4, found " + std::to_string(ne.size()));
    if (!find_type(type)) fail(ErrorKind::InvalidArgument, tn + ": unknown ggml type id " + std::to_string(type));
    TensorPlan p;
    p.info.name = std::move(name);
    p.info.type = type;
    p.info.n_dims = static_cast<std::uint32_t>(ne.size());
    std::uint64_t n = 1;
    for (std::size_t d = 0; d < ne.size(); ++d) {
        p.info.ne[d] = ne[d];
        n = checked_mul(n, ne[d], tn + " element count");
    }
    if (n > static_cast<std::uint64_t>(INT64_MAX)) fail(ErrorKind::InvalidArgument, tn + ": element count overflows");
    p.info.nbytes = checked_mul(row_bytes(type, ne[0]), p.info.n_rows(), tn + " size");
    std::uint64_t offset = 0;
    if (!tensors_.empty()) {
        const TensorInfo& last = tensors_.back().info;
        offset = checked_align(checked_add(last.offset, last.nbytes, tn), alignment, tn);
    }
    p.info.offset = offset;
    p.produce = std::move(produce);
    names_.insert(p.info.name);
    tensors_.push_back(std::move(p));
}

std::vector<std::byte> GgufWriter::header() const { return header_of(metadata, tensors_); }

std::vector<std::byte> GgufWriter::header_of(const Metadata& md, std::span<const TensorPlan> tensors) const {
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        fail(ErrorKind::InvalidArgument, "alignment must be a power of two, found " + std::to_string(alignment));
    // general.alignment is written as the writer's alignment: in its place if the metadata has it, else right
    // after general.architecture (as a writer that sets its alignment when created writes it), else last; and
    // not at all when it is the default. A fixed place for an added key makes a model built in memory and the
    // same model read from a file headfuse wrote give the same bytes.
    const bool has_key = md.find("general.alignment") != nullptr;
    const bool write_key = alignment != kDefaultAlignment;
    const std::uint64_t n_kv = md.size() - (has_key ? 1 : 0) + (write_key ? 1 : 0);
    HeaderBuilder h;
    for (char c : {'G', 'G', 'U', 'F'}) h.out.push_back(static_cast<std::byte>(c));
    h.put<std::uint32_t>(kGgufVersion);
    h.put<std::uint64_t>(tensors.size());
    h.put<std::uint64_t>(n_kv);
    auto put_alignment = [&] {
        h.put_string("general.alignment");
        h.put_value(Value::u32(alignment));
    };
    for (const auto& e : md.entries()) {
        if (e.key == "general.alignment") {
            if (write_key) put_alignment();
            continue;
        }
        h.put_string(e.key);
        h.put_value(e.value);
        if (e.key == "general.architecture" && write_key && !has_key) put_alignment();
    }
    if (write_key && !has_key && !md.find("general.architecture")) put_alignment();
    // Offsets are recomputed here so that a change of `alignment` after add_tensor stays consistent.
    std::uint64_t offset = 0;
    for (const TensorPlan& p : tensors) {
        h.put_string(p.info.name);
        h.put<std::uint32_t>(p.info.n_dims);
        for (std::uint32_t d = 0; d < p.info.n_dims; ++d) h.put<std::uint64_t>(p.info.ne[d]);
        h.put<std::uint32_t>(p.info.type);
        h.put<std::uint64_t>(offset);
        offset = checked_align(checked_add(offset, p.info.nbytes, "data section"), alignment, "data section");
    }
    h.out.resize(checked_align(h.out.size(), alignment, "header"));
    return h.out;
}

std::uint64_t GgufWriter::file_size() const { return file_size(header().size()); }

std::uint64_t GgufWriter::file_size(std::uint64_t header_size) const {
    std::uint64_t size = header_size;
    for (const TensorPlan& p : tensors_)
        size = checked_align(checked_add(size, p.info.nbytes, "file size"), alignment, "file size");
    return size;
}

std::vector<std::filesystem::path> GgufWriter::write(const std::filesystem::path& path,
                                                     std::span<const std::filesystem::path> inputs,
                                                     const ProgressFn& progress) const {
    if (shards.active()) return write_split(path, inputs, progress);
    std::vector<std::byte> head = header();
    // The writer agrees with the reader: parse what is about to go out with the reader's rules.
    GgufFile::validate_header(head, path.string() + " (header about to be written)");
    const std::uint64_t total = file_size(head.size());
    OutputFile out(path, inputs, total);
    out.set_progress(progress, total);
    out.write(head);
    for (const TensorPlan& p : tensors_) {
        CountingSink sink(out, p.info.name, p.info.nbytes);
        p.produce(sink);
        sink.finish();
        out.pad_to(alignment);
    }
    out.commit();
    return {path};
}

std::vector<std::filesystem::path> GgufWriter::write_split(const std::filesystem::path& prefix,
                                                           std::span<const std::filesystem::path> inputs,
                                                           const ProgressFn& progress) const {
    // Cut the tensors into shards as llama-gguf-split does: a new shard when the next tensor (padded) would
    // take this one past max_bytes, or when it holds max_tensors; never an empty shard.
    std::vector<std::size_t> first{0};  // first tensor of each shard
    std::uint64_t bytes = 0, count = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
        const std::uint64_t n = checked_align(tensors_[i].info.nbytes, alignment, "tensor size");
        if (count > 0 && ((shards.max_bytes && bytes + n > shards.max_bytes) ||
                          (shards.max_tensors && count >= shards.max_tensors))) {
            first.push_back(i);
            bytes = count = 0;
        }
        bytes += n;
        ++count;
    }
    const std::size_t n_shards = first.size();
    if (n_shards > 99999)
        fail(ErrorKind::InvalidArgument,
             prefix.string() + ": a split set of " + std::to_string(n_shards) + " shards, at most 99999");
    first.push_back(tensors_.size());

    struct Shard {
        std::filesystem::path path;
        std::vector<std::byte> head;
        std::span<const TensorPlan> tensors;
    };
    std::vector<Shard> shards;
    std::uint64_t total = 0;
    for (std::size_t s = 0; s < n_shards; ++s) {
        Metadata md;
        if (s == 0) md = metadata;
        md.set(std::string(kSplitNo), Value::u16(static_cast<std::uint16_t>(s)));
        md.set(std::string(kSplitCount), Value::u16(static_cast<std::uint16_t>(n_shards)));
        md.set(std::string(kSplitTensorsCount), Value::i32(static_cast<std::int32_t>(tensors_.size())));
        Shard sh;
        sh.path = shard_path(prefix, static_cast<std::uint32_t>(s), static_cast<std::uint32_t>(n_shards));
        sh.tensors = std::span(tensors_).subspan(first[s], first[s + 1] - first[s]);
        sh.head = header_of(md, sh.tensors);
        GgufFile::validate_header(sh.head, sh.path.string() + " (header about to be written)");
        total += sh.head.size();
        for (const TensorPlan& p : sh.tensors) total = checked_align(total + p.info.nbytes, alignment, "file size");
        shards.push_back(std::move(sh));
    }
    if (tensors_.size() > INT32_MAX)
        fail(ErrorKind::InvalidArgument, prefix.string() + ": too many tensors for split.tensors.count");

    // Shard after shard (one open file and one buffer at a time), each staged in the set's staging folder, then
    // published together: a failure or a stop leaves no shard of the new set and the old files as they were.
    const std::filesystem::path dir = prefix.parent_path().empty() ? std::filesystem::path(".") : prefix.parent_path();
    OutputSet set(dir, set_stem(prefix));
    std::vector<std::filesystem::path> published;
    std::uint64_t base = 0;
    for (const Shard& sh : shards) {
        OutputFile out(sh.path, inputs, 0, &set);
        if (progress)
            out.set_progress(
                [&progress, base, total](std::uint64_t done, std::uint64_t) { progress(base + done, total); }, total);
        out.write(sh.head);
        for (const TensorPlan& p : sh.tensors) {
            CountingSink sink(out, p.info.name, p.info.nbytes);
            p.produce(sink);
            sink.finish();
            out.pad_to(alignment);
        }
        base += out.position();
        out.commit();
        published.push_back(sh.path);
    }
    // The shards of an older set with this prefix and another shard count would stay beside the new set, and a
    // reader given one of them would load the old model: they go when the new set is published.
    for (const std::filesystem::path& old : older_shards(prefix, n_shards, inputs)) set.remove_on_publish(old);
    set.publish();
    return published;
}

}  // namespace headfuse
