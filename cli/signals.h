// SIGINT, SIGTERM and SIGHUP: a write in progress is stopped cleanly (headfuse::request_stop: its temporaries
// removed, nothing published), then the process ends by the signal, as if it had not been caught. Outside a
// write, or at a second signal, the process ends at once.
#pragma once

namespace headfuse::cli {

void install_stop_handlers();
// After a command ends: if a stop was requested, end the process by that signal (its default action).
void end_if_stopped();

}  // namespace headfuse::cli
