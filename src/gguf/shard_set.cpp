// Split sets, as llama.cpp's llama-gguf-split writes them and llama.cpp's loader reads them
// (tools/gguf-split/gguf-split.cpp, src/llama-model-loader.cpp): opening every shard from any one of them, and
// the names and sizes the writer uses.
#include <cstdio>
#include <optional>
#include <string>
#include <unordered_map>

#include "base/checked.h"
#include "base/fail.h"
#include "headfuse/error.h"
#include "headfuse/gguf.h"

namespace headfuse {
namespace {

std::string five_digits(std::uint32_t n) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%05u", n);
    return buf;
}

// "PREFIX-00002-of-00005.gguf" -> {PREFIX, 1, 5}; nothing when the name is not a shard's.
struct ShardName {
    std::string prefix;
    std::uint32_t index = 0, count = 0;
};
std::optional<ShardName> parse_shard_name(const std::string& path) {
    // "-" 5 digits "-of-" 5 digits ".gguf" is 20 characters; llama.cpp also wants a non-empty prefix.
    constexpr std::size_t kTail = 20;
    if (path.size() <= kTail) return std::nullopt;
    const std::string tail = path.substr(path.size() - kTail);
    auto digits = [&](std::size_t at) {
        std::uint32_t v = 0;
        for (std::size_t i = at; i < at + 5; ++i) {
            if (tail[i] < '0' || tail[i] > '9') return std::uint32_t{0};
            v = v * 10 + static_cast<std::uint32_t>(tail[i] - '0');
        }
        return v;
    };
    if (tail[0] != '-' || tail.compare(6, 4, "-of-") != 0 || tail.compare(15, 5, ".gguf") != 0) return std::nullopt;
    const std::uint32_t no = digits(1), count = digits(10);
    if (no == 0 || count == 0 || no > count) return std::nullopt;
    return ShardName{path.substr(0, path.size() - kTail), no - 1, count};
}

// The value of a split.* key of a shard, checked for its type; nothing when absent.
std::optional<std::int64_t> split_key(const GgufFile& f, std::string_view key, ValueType want) {
    const Value* v = f.metadata().find(key);
    if (!v) return std::nullopt;
    if (v->type != want)
        fail(f.name() + ": key '" + std::string(key) + "' has type " + std::string(value_type_name(v->type)) +
             ", expected " + std::string(value_type_name(want)));
    if (want == ValueType::I32) return std::get<std::int64_t>(v->scalar);
    return static_cast<std::int64_t>(std::get<std::uint64_t>(v->scalar));
}

}  // namespace

std::filesystem::path shard_path(const std::filesystem::path& prefix, std::uint32_t index, std::uint32_t count) {
    std::string p = prefix.string();
    if (p.size() > 5 && p.compare(p.size() - 5, 5, ".gguf") == 0) p.resize(p.size() - 5);
    return p + "-" + five_digits(index + 1) + "-of-" + five_digits(count) + ".gguf";
}

GgufFile GgufFile::open(const std::filesystem::path& path) {
    GgufFile named = open_one(path);
    const auto count = split_key(named, kSplitCount, ValueType::U16);
    if (!count || *count <= 1) return named;  // a single file (llama.cpp reads split.count 0 or 1 so too)
    const auto n = static_cast<std::uint32_t>(*count);
    const auto no = split_key(named, kSplitNo, ValueType::U16);
    if (!no) fail(named.name() + ": key 'split.count' is " + std::to_string(n) + " but key 'split.no' is missing");
    if (*no >= n)
        fail(named.name() + ": key 'split.no' is " + std::to_string(*no) + ", expected 0.." + std::to_string(n - 1));
    const auto name = parse_shard_name(path.string());
    if (!name || name->index != *no || name->count != n)
        fail(named.name() + ": keys 'split.no' " + std::to_string(*no) + " and 'split.count' " + std::to_string(n) +
             " make it shard " + std::to_string(*no + 1) + " of " + std::to_string(n) +
             ", which must be named PREFIX-" + five_digits(static_cast<std::uint32_t>(*no) + 1) + "-of-" +
             five_digits(n) + ".gguf");

    // Shard 0 first, then the others in order; the named one is not opened twice.
    std::vector<GgufFile> all;
    all.reserve(n);
    for (std::uint32_t i = 0; i < n; ++i) {
        if (i == *no) {
            all.push_back(std::move(named));
            continue;
        }
        const std::filesystem::path p = shard_path(name->prefix, i, n);
        std::error_code ec;
        if (!std::filesystem::exists(p, ec))
            fail(p.string() + ": missing shard " + std::to_string(i + 1) + " of the split set of " + std::to_string(n) +
                 " that " + path.string() + " belongs to");
        all.push_back(open_one(p));
    }
    std::uint64_t total = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
        const GgufFile& f = all[i];
        const auto fi_no = split_key(f, kSplitNo, ValueType::U16);
        const auto fi_count = split_key(f, kSplitCount, ValueType::U16);
        if (fi_no != std::optional<std::int64_t>(i))
            fail(f.name() + ": key 'split.no' is " + (fi_no ? std::to_string(*fi_no) : "missing") + ", expected " +
                 std::to_string(i));
        if (fi_count != std::optional<std::int64_t>(n))
            fail(f.name() + ": key 'split.count' is " + (fi_count ? std::to_string(*fi_count) : "missing") +
                 ", expected " + std::to_string(n));
        total += f.tensors().size();
    }
    for (std::uint32_t i = 0; i < n; ++i) {
        const auto tc = split_key(all[i], kSplitTensorsCount, ValueType::I32);
        if (i == 0 && !tc) fail(all[0].name() + ": missing key 'split.tensors.count'");
        if (tc && *tc != static_cast<std::int64_t>(total))
            fail(all[i].name() + ": key 'split.tensors.count' is " + std::to_string(*tc) + ", the " +
                 std::to_string(n) + " shards hold " + std::to_string(total) + " tensors");
    }

    // One file: shard 0's metadata without the split keys, every shard's tensors in order.
    std::vector<std::string> names;
    for (const GgufFile& f : all) names.push_back(f.name());
    GgufFile set = std::move(all[0]);
    for (std::string_view k : {kSplitNo, kSplitCount, kSplitTensorsCount}) set.metadata_.erase(k);
    std::unordered_map<std::string, std::uint32_t> where;
    for (const TensorInfo& t : set.tensors_) where.emplace(t.name, 0);
    for (std::uint32_t i = 1; i < n; ++i) {
        for (TensorInfo t : all[i].tensors()) {
            if (auto [it, fresh] = where.emplace(t.name, i); !fresh)
                fail(names[i] + ": tensor '" + t.name + "' is also in " + names[it->second]);
            t.shard = i;
            set.tensors_.push_back(std::move(t));
        }
        set.shards_.push_back(std::move(all[i]));
    }
    return set;
}

}  // namespace headfuse
