// A fork-join loop over [0, n): thread i takes one contiguous range, so results never depend on scheduling.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace headfuse {

inline unsigned resolve_threads(unsigned threads) noexcept {
    // hardware_concurrency() reads /sys on every call: ask once.
    static const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    return threads ? threads : cores;
}

// Calls f(begin, end) on up to `threads` disjoint ranges covering [0, n); rethrows the first exception.
template <class F>
void parallel_for(std::size_t n, unsigned threads, F&& f) {
    const std::size_t t = std::min<std::size_t>(resolve_threads(threads), n);
    if (t <= 1) {
        if (n) f(std::size_t{0}, n);
        return;
    }
    std::vector<std::exception_ptr> errors(t);
    std::vector<std::thread> pool;
    pool.reserve(t - 1);
    auto run = [&](std::size_t i) {
        try {
            f(n * i / t, n * (i + 1) / t);
        } catch (...) {
            errors[i] = std::current_exception();
        }
    };
    for (std::size_t i = 1; i < t; ++i) pool.emplace_back(run, i);
    run(0);
    for (auto& th : pool) th.join();
    for (auto& e : errors)
        if (e) std::rethrow_exception(e);
}

// parallel_for on threads that stay alive from call to call: a loop run once per window of a large tensor
// creates no thread per window. The ranges are parallel_for's, so results are the same. The workers start on
// the first call that needs them; one caller at a time.
class WorkerPool {
public:
    explicit WorkerPool(unsigned threads) : threads_(resolve_threads(threads)) {}
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;
    ~WorkerPool() {
        {
            const std::lock_guard lock(mu_);
            stop_ = true;
        }
        wake_.notify_all();
        for (auto& w : workers_) w.join();
    }

    unsigned threads() const noexcept { return threads_; }

    // Calls f(begin, end) on up to threads() disjoint ranges covering [0, n); rethrows the first exception.
    template <class F>
    void run(std::size_t n, F&& f) {
        const std::size_t t = std::min<std::size_t>(threads_, n);
        if (t <= 1) {
            if (n) f(std::size_t{0}, n);
            return;
        }
        if (workers_.empty()) {
            workers_.reserve(threads_ - 1);
            for (unsigned i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { work(i); });
        }
        errors_.assign(t, nullptr);
        auto part = [&](std::size_t i) {
            try {
                f(n * i / t, n * (i + 1) / t);
            } catch (...) {
                errors_[i] = std::current_exception();
            }
        };
        {
            const std::lock_guard lock(mu_);
            job_ = &part;
            call_ = [](void* job, std::size_t i) { (*static_cast<decltype(part)*>(job))(i); };
            parts_ = t;
            pending_ = t - 1;
            ++generation_;
        }
        wake_.notify_all();
        part(0);
        {
            std::unique_lock lock(mu_);
            done_.wait(lock, [this] { return pending_ == 0; });
            job_ = nullptr;
        }
        for (auto& e : errors_)
            if (e) std::rethrow_exception(e);
    }

private:
    void work(std::size_t i) {
        std::uint64_t seen = 0;
        for (;;) {
            void* job = nullptr;
            void (*call)(void*, std::size_t) = nullptr;
            {
                std::unique_lock lock(mu_);
                wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
                if (stop_) return;
                seen = generation_;
                if (i >= parts_) continue;  // fewer ranges than threads this time
                job = job_;
                call = call_;
            }
            call(job, i);
            {
                const std::lock_guard lock(mu_);
                if (--pending_ == 0) done_.notify_one();
            }
        }
    }

    unsigned threads_;
    std::vector<std::thread> workers_;
    std::vector<std::exception_ptr> errors_;
    std::mutex mu_;
    std::condition_variable wake_, done_;
    void* job_ = nullptr;
    void (*call_)(void*, std::size_t) = nullptr;
    std::size_t parts_ = 0, pending_ = 0;
    std::uint64_t generation_ = 0;
    bool stop_ = false;
};

}  // namespace headfuse
