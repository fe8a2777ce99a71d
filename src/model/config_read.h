// headfuse: checking a config read from a file (internal; defined in config.cpp).
#pragma once

#include <string>

#include "headfuse/config.h"

namespace headfuse {

// c.validate() for a config a file described: the message is prefixed with `where` (the file), and a field out
// of range is the file's fault (InvalidInput) rather than the caller's; Unsupported stays Unsupported.
void validate_read(const Config& c, const std::string& where);

}  // namespace headfuse
