// A progress bar on stderr for long work: bytes (or other units) done, rate, time left. Only when stderr is a
// terminal.
#pragma once

#include <string>

#include "headfuse/gguf.h"

namespace headfuse::cli {

// A progress callback labelled `label`, or an empty one when `quiet` or stderr is not a terminal. It counts bytes,
// or, given a `unit` ("layers"), plain numbers of it.
ProgressFn make_progress(std::string label, bool quiet, std::string unit = "");

}  // namespace headfuse::cli
