// The reproducible initialiser: fill_random, and write_random_init streaming it to a file.
#include <algorithm>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "base/parallel.h"
#include "gguf/writer.h"
#include "headfuse/error.h"
#include "headfuse/model.h"
#include "model/init.h"
#include "model/model_keys.h"
#include "model/random.h"
#include "model/roles.h"

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
                                                     const std::filesystem::path& path, const InitOptions& options) {
    config.validate();
    const std::vector<TensorSpec> layout = tensor_layout(config, ModelKind::PerHead);
    GgufWriter w;
    w.alignment = options.output.alignment;
    w.shards = options.output.shards;
    w.metadata = per_head_metadata(config, {});
    // One writer takes whatever a few generators make (~2 GB/s each with AVX-512): more would only cost memory.
    RandomPipeline pipeline(layout, seed, std::min(resolve_threads(options.threads), 32u));
    for (std::size_t t = 0; t < layout.size(); ++t)
        w.add_tensor(layout[t].name, static_cast<std::uint32_t>(DType::F32), layout[t].ne,
                     [&pipeline, t](ByteSink& sink) { pipeline.write_tensor(t, sink); });
    return w.write(path, {}, options.progress);
}

}  // namespace headfuse
