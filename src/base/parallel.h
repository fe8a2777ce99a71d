// A fork-join loop over [0, n): thread i takes one contiguous range, so results never depend on scheduling.
#pragma once

#include <algorithm>
#include <cstddef>
#include <exception>
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

}  // namespace headfuse
