// random_init and per-head checkpoint writing.
#include <algorithm>
#include <vector>

#include "headfuse/error.h"
#include "headfuse/model.h"
#include "layout.h"
#include "parallel.h"
#include "random.h"

namespace headfuse {

void fill_random(const TensorSpec& s, std::uint64_t seed, std::uint64_t begin, std::uint64_t n, float* out) {
    if (s.kind == TensorKind::Norm) {
        std::fill(out, out + n, 1.0f);
        return;
    }
    const std::uint64_t hash = name_hash(s.name);
    std::vector<float> scratch;
    const std::uint64_t end = begin + n;
    for (std::uint64_t pos = begin; pos < end;) {
        const std::uint64_t chunk = pos / kRandomChunk, chunk_begin = chunk * kRandomChunk;
        const std::uint64_t take = std::min<std::uint64_t>(end, chunk_begin + kRandomChunk) - pos;
        if (pos == chunk_begin) {
            random_normal_chunk(seed, hash, chunk, out + (pos - begin), take);
        } else {  // an unaligned start: draw the chunk's head and keep its tail
            scratch.resize(pos - chunk_begin + take);
            random_normal_chunk(seed, hash, chunk, scratch.data(), scratch.size());
            std::copy(scratch.end() - static_cast<std::ptrdiff_t>(take), scratch.end(), out + (pos - begin));
        }
        pos += take;
    }
}

Metadata per_head_metadata(const Config& c, const Metadata& carried) {
    Metadata md;
    c.write_metadata(md);
    for (const auto& e : carried.entries()) md.set(e.key, e.value);
    return md;
}

namespace {

std::function<void(ByteSink&)> copy_of(const TensorView& v) {
    return [v](ByteSink& sink) {
        if (v.file) sink.copy_from(*v.file, v.file_offset, v.bytes.size());
        else sink.write(v.bytes);
    };
}

void add_view(GgufWriter& w, const TensorView& v) {
    w.add_tensor(v.name, static_cast<std::uint32_t>(v.type), {v.ne.data(), v.n_dims}, copy_of(v));
}

}  // namespace

void PerHeadModel::save(const std::filesystem::path& path, const ProgressFn& progress) const {
    const ModelViews& m = views_;
    GgufWriter w;
    w.metadata = per_head_metadata(m.config, metadata_);
    add_view(w, m.token_embd);
    if (m.lens_proj) add_view(w, *m.lens_proj);
    add_view(w, m.output_norm);
    if (m.output) add_view(w, *m.output);
    for (const LayerViews& L : m.layers) {
        add_view(w, L.attn_norm);
        for (const auto* heads : {&L.q, &L.k, &L.v})
            for (const TensorView& h : *heads) add_view(w, h);
        add_view(w, L.attn_output);
        add_view(w, L.ffn_norm);
        add_view(w, L.ffn_gate);
        add_view(w, L.ffn_up);
        add_view(w, L.ffn_down);
    }
    std::vector<std::filesystem::path> inputs;
    if (file_ && file_->mapping()) inputs.push_back(file_->mapping()->path());
    w.write(path, inputs, progress);
}

void write_random_init(const Config& config, std::uint64_t seed, const std::filesystem::path& path,
                       const ProgressFn& progress, unsigned threads) {
    config.validate();
    // Elements generated per batch: a few chunks per thread, written before the next batch is drawn.
    const std::uint64_t batch = kRandomChunk * 16 * resolve_threads(threads);
    GgufWriter w;
    w.metadata = per_head_metadata(config, {});
    for (const TensorSpec& s : per_head_layout(config)) {
        w.add_tensor(s.name, static_cast<std::uint32_t>(DType::F32), s.ne, [s, seed, batch, threads](ByteSink& sink) {
            std::uint64_t n = 1;
            for (auto d : s.ne) n *= d;
            std::vector<float> buf(static_cast<std::size_t>(std::min(n, batch)));
            for (std::uint64_t pos = 0; pos < n; pos += batch) {
                const std::uint64_t take = std::min(batch, n - pos);
                const std::size_t chunks = static_cast<std::size_t>((take + kRandomChunk - 1) / kRandomChunk);
                parallel_for(chunks, threads, [&](std::size_t c0, std::size_t c1) {
                    const std::uint64_t b = c0 * kRandomChunk, e = std::min<std::uint64_t>(take, c1 * kRandomChunk);
                    fill_random(s, seed, pos + b, e - b, buf.data() + b);
                });
                sink.write({reinterpret_cast<const std::byte*>(buf.data()), take * sizeof(float)});
            }
        });
    }
    w.write(path, {}, progress);
}

}  // namespace headfuse
