#include "signals.h"

#include <csignal>

#include "headfuse/file_io.h"

namespace headfuse::cli {
namespace {

// Async-signal-safe: lock-free atomic loads and stores, sigaction and raise.
extern "C" void on_stop_signal(int sig) {
    if (headfuse::stop_requested() != 0 || !headfuse::write_in_progress()) {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(sig, &dfl, nullptr);
        ::raise(sig);
        return;
    }
    headfuse::request_stop(sig);
}

}  // namespace

void install_stop_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
        struct sigaction old {};
        // A signal the parent ignores (nohup, a background job's SIGINT) stays ignored.
        if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
        ::sigaction(sig, &sa, nullptr);
    }
}

void end_if_stopped() {
    const int sig = headfuse::stop_requested();
    if (sig <= 0) return;
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(sig, &dfl, nullptr);
    ::raise(sig);
}

}  // namespace headfuse::cli
