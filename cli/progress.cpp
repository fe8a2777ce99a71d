#include "progress.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "base/text.h"

namespace headfuse::cli {

ProgressFn make_progress(std::string label, bool quiet, std::string unit) {
    if (quiet || !::isatty(STDERR_FILENO)) return {};
    using Clock = std::chrono::steady_clock;
    struct State {
        std::string label, unit;
        Clock::time_point start = Clock::now(), last{};
        bool finished = false;
    };
    auto st = std::make_shared<State>();
    st->label = std::move(label);
    st->unit = std::move(unit);
    return [st](std::uint64_t done, std::uint64_t total) {
        if (st->finished) return;
        const auto now = Clock::now();
        const bool end = total && done >= total;
        if (!end && now - st->last < std::chrono::milliseconds(100)) return;
        st->last = now;
        const double secs = std::chrono::duration<double>(now - st->start).count();
        const double rate = secs > 0 ? done / secs : 0;
        const double frac = total ? static_cast<double>(done) / total : 0;
        constexpr int kWidth = 30;
        const int fill = static_cast<int>(frac * kWidth);
        std::string bar(fill, '#');
        bar.resize(kWidth, ' ');
        char eta[32] = "";
        if (!end && rate > 0) std::snprintf(eta, sizeof eta, " ETA %.0fs", (total - done) / rate);
        if (st->unit.empty())
            std::fprintf(stderr, "\r%s [%s] %3.0f%% %s / %s  %s/s%s\033[K", st->label.c_str(), bar.c_str(), frac * 100,
                         human_bytes(done).c_str(), human_bytes(total).c_str(), human_bytes(rate).c_str(), eta);
        else
            std::fprintf(stderr, "\r%s [%s] %3.0f%% %llu / %llu %s  %.1f %s/s%s\033[K", st->label.c_str(), bar.c_str(),
                         frac * 100, static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
                         st->unit.c_str(), rate, st->unit.c_str(), eta);
        if (end) {
            std::fprintf(stderr, "\n");
            st->finished = true;
        }
        std::fflush(stderr);
    };
}

}  // namespace headfuse::cli
