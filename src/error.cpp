#include "headfuse/error.h"

#include <string>

namespace headfuse {

void fail(const std::string& message) { throw Error(message); }

}  // namespace headfuse
