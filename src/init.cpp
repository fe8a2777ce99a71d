// random_init and per-head checkpoint writing.
#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "headfuse/error.h"
#include "headfuse/model.h"
#include "order.h"
#include "parallel.h"
#include "random.h"
#include "roles.h"
#include "view_rows.h"

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

namespace {

// True when llama.cpp, reading `md` without `key`, takes the value `c` would write for it: such a key is not
// added to a file that lacks it, so that a file read and written again keeps exactly its keys.
bool implied(const Metadata& md, const Config& c, std::string_view key) {
    const std::uint32_t heads0 = c.n_heads_at(0);       // llama.cpp's n_head(): layer 0's
    const std::uint32_t per_head = c.d_model / heads0;  // llama.cpp's n_embd_head_k default
    if (key == c.key("attention.head_count_kv")) return c.n_kv_heads == c.n_heads && c.layer_kv_heads == c.layer_heads;
    if (key == c.key("attention.key_length") || key == c.key("attention.value_length") ||
        key == c.key("rope.dimension_count"))
        return c.d_head == per_head && c.d_model % heads0 == 0;
    if (key == c.key("rope.freq_base")) return c.rope_theta == 10000.0f;
    if (key == c.key("vocab_size")) {  // llama.cpp counts the tokenizer's tokens
        const Value* tokens = md.find("tokenizer.ggml.tokens");
        return tokens && tokens->type == ValueType::ARRAY && tokens->items.size() == c.vocab;
    }
    return false;
}

// `carried` with its ARCH.* keys renamed to c's architecture, in place, when the two differ (a llama model given
// per-layer head counts becomes a deci one).
Metadata renamed(const Metadata& carried, const Config& c) {
    const std::string from = carried.get_string("general.architecture", "the model") + ".";
    const std::string to = std::string(c.architecture()) + ".";
    if (from == to) return carried;
    Metadata md;
    for (const auto& e : carried.entries())
        md.set(e.key.starts_with(from) ? to + e.key.substr(from.size()) : e.key, e.value);
    return md;
}

// A count as `c` writes it (u32, or an i32 array when per layer), in the form the carried file gave it: a scalar
// when the file had one and every layer has the same count, an array of the file's element type.
Value carried_form(const Value& owned, const Value* carried) {
    if (!carried || owned.type != ValueType::ARRAY) return owned;
    if (carried->type != ValueType::ARRAY) {
        for (const Value& x : owned.items)
            if (x != owned.items.front()) return owned;
        return owned.items.empty()
                   ? owned
                   : Value::u32(static_cast<std::uint32_t>(std::get<std::int64_t>(owned.items[0].scalar)));
    }
    if (carried->elem_type != ValueType::U32) return owned;
    std::vector<Value> items;
    for (const Value& x : owned.items)
        items.push_back(Value::u32(static_cast<std::uint32_t>(std::get<std::int64_t>(x.scalar))));
    return Value::array(ValueType::U32, std::move(items));
}

}  // namespace

Metadata per_head_metadata(const Config& c, const Metadata& carried) {
    Metadata owned;
    c.write_metadata(owned);
    if (!carried.find("general.architecture")) {  // a model from memory: the hyperparameters, then the rest
        Metadata md = std::move(owned);
        for (const auto& e : carried.entries())
            if (!md.find(e.key)) md.set(e.key, e.value);
        return md;
    }
    // A model read from a file: its keys in their order, the hyperparameters set in place.
    Metadata md = renamed(carried, c);
    for (const auto& e : owned.entries())
        if (md.find(e.key) || !implied(md, c, e.key)) md.set(e.key, carried_form(e.value, md.find(e.key)));
    return md;
}

namespace {

std::function<void(ByteSink&)> copy_of(const TensorView& v) {
    return [v](ByteSink& sink) {
        if (!v.plain())  // a foreign checkpoint's order: whole rows, a window at a time
            for_each_window(v, std::uint64_t{4} << 20,
                            [&](std::span<const std::byte> rows, std::uint64_t, std::uint64_t) { sink.write(rows); });
        else if (v.file)
            sink.copy_from(*v.file, v.file_offset, v.bytes.size());
        else
            sink.write(v.bytes);
    };
}

void add_view(GgufWriter& w, const TensorView& v) {
    w.add_tensor(v.name, static_cast<std::uint32_t>(v.type), {v.ne.data(), v.n_dims}, copy_of(v));
}

}  // namespace

std::vector<std::filesystem::path> PerHeadModel::save(const std::filesystem::path& path, const ProgressFn& progress,
                                                      const OutputLayout& layout) const {
    const ModelViews& m = views_;
    GgufWriter w;
    w.alignment = layout.alignment;
    w.split = layout.split;
    w.metadata = per_head_metadata(m.config, metadata_);
    // In the source file's order (split keeps a fused file's order, head tensors where their fused tensor was).
    std::vector<const TensorView*> views;
    std::vector<std::string> names;
    for_each_view(m, [&](const TensorView& v) {
        views.push_back(&v);
        names.push_back(v.name);
    });
    for (std::size_t i : source_order(file_.get(), names)) add_view(w, *views[i]);
    return w.write(path, file_ ? file_->paths() : std::vector<std::filesystem::path>{}, progress);
}

namespace {

// write_random_init's generator: `workers` threads draw the tensors' elements, in pieces of at most a job,
// into a ring of slots, running ahead of the writing thread, which takes the pieces in file order. Piece j
// lives in slot j % slots; a worker draws piece j only once piece j - slots has been written. Each piece is
// fill_random of its own range, so the bytes do not depend on the number of workers or on scheduling.
class RandomPipeline {
public:
    struct Piece {
        const TensorSpec* spec;
        std::uint64_t begin, n;
    };

    RandomPipeline(const std::vector<TensorSpec>& layout, std::uint64_t seed, unsigned workers) : seed_(seed) {
        // Bounded memory whatever the thread count: slots * job * 4 bytes is about 8 MiB (at least one chunk
        // per slot; workers are at most 32), and at most 16 chunks per job.
        const std::size_t slots = std::size_t{workers} + 2;
        const std::uint64_t budget_chunks = (std::uint64_t{8} << 20) / (kRandomChunk * sizeof(float));
        const std::uint64_t job = kRandomChunk * std::clamp<std::uint64_t>(budget_chunks / slots, 1, 16);
        for (const TensorSpec& s : layout) {
            std::uint64_t n = 1;
            for (auto d : s.ne) n *= d;
            first_piece_.push_back(pieces_.size());
            for (std::uint64_t pos = 0; pos < n; pos += job) pieces_.push_back({&s, pos, std::min(job, n - pos)});
        }
        first_piece_.push_back(pieces_.size());
        std::uint64_t largest = 0;
        for (const Piece& p : pieces_) largest = std::max(largest, p.n);
        buffers_.resize(std::min(slots, pieces_.size()));
        for (auto& b : buffers_) b.resize(static_cast<std::size_t>(largest));
        ready_.assign(buffers_.size(), kNone);
        for (unsigned i = 0; i < workers && i < pieces_.size(); ++i) pool_.emplace_back([this] { work(); });
    }

    ~RandomPipeline() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_free_.notify_all();
        for (auto& t : pool_) t.join();
    }

    RandomPipeline(const RandomPipeline&) = delete;
    RandomPipeline& operator=(const RandomPipeline&) = delete;

    // Writes tensor `t` of the layout to `sink`, piece by piece as the workers finish them.
    void write_tensor(std::size_t t, ByteSink& sink) {
        for (std::size_t j = first_piece_[t]; j < first_piece_[t + 1]; ++j) {
            const std::size_t slot = j % buffers_.size();
            {
                std::unique_lock lock(mu_);
                cv_ready_.wait(lock, [&] { return ready_[slot] == j || error_; });
                if (error_) std::rethrow_exception(error_);
            }
            const float* data = buffers_[slot].data();
            sink.write({reinterpret_cast<const std::byte*>(data), pieces_[j].n * sizeof(float)});
            {
                std::lock_guard lock(mu_);
                ready_[slot] = kNone;
                written_ = j + 1;
            }
            cv_free_.notify_all();
        }
    }

private:
    static constexpr std::size_t kNone = ~std::size_t{0};

    void work() {
        for (;;) {
            std::size_t j;
            {
                std::unique_lock lock(mu_);
                if (stop_ || next_ >= pieces_.size()) return;
                j = next_++;
                // Slot j % size is free once piece j - size has been written.
                cv_free_.wait(lock, [&] { return stop_ || j < written_ + buffers_.size(); });
                if (stop_) return;
            }
            const std::size_t slot = j % buffers_.size();
            try {
                const Piece& p = pieces_[j];
                fill_random(*p.spec, seed_, p.begin, p.n, buffers_[slot].data());
            } catch (...) {
                std::lock_guard lock(mu_);
                if (!error_) error_ = std::current_exception();
                cv_ready_.notify_all();
                return;
            }
            {
                std::lock_guard lock(mu_);
                ready_[slot] = j;
            }
            cv_ready_.notify_all();
        }
    }

    std::uint64_t seed_;
    std::vector<Piece> pieces_;
    std::vector<std::size_t> first_piece_;
    std::vector<std::vector<float>> buffers_;
    std::vector<std::size_t> ready_;  // per slot: the piece it holds, drawn and not yet written, or kNone
    std::mutex mu_;
    std::condition_variable cv_ready_, cv_free_;
    std::size_t next_ = 0, written_ = 0;
    bool stop_ = false;
    std::exception_ptr error_;
    std::vector<std::thread> pool_;
};

}  // namespace

std::vector<std::filesystem::path> write_random_init(const Config& config, std::uint64_t seed,
                                                     const std::filesystem::path& path, const ProgressFn& progress,
                                                     unsigned threads, const OutputLayout& out_layout) {
    config.validate();
    const std::vector<TensorSpec> layout = tensor_layout(config, ModelKind::PerHead);
    GgufWriter w;
    w.alignment = out_layout.alignment;
    w.split = out_layout.split;
    w.metadata = per_head_metadata(config, {});
    // One writer takes whatever a few generators make (~2 GB/s each with AVX-512): more would only cost memory.
    RandomPipeline pipeline(layout, seed, std::min(resolve_threads(threads), 32u));
    for (std::size_t t = 0; t < layout.size(); ++t)
        w.add_tensor(layout[t].name, static_cast<std::uint32_t>(DType::F32), layout[t].ne,
                     [&pipeline, t](ByteSink& sink) { pipeline.write_tensor(t, sink); });
    return w.write(path, {}, progress);
}

}  // namespace headfuse
