#include "support/required.h"

#include <cstdlib>
#include <cstring>

namespace headfuse::test {

bool running_in_ci() {
    const char* ci = std::getenv("CI");
    return ci != nullptr && (std::strcmp(ci, "true") == 0 || std::strcmp(ci, "1") == 0);
}

}  // namespace headfuse::test
