// What a test needs and whether its absence is a failure or a skip: in CI (CI=true or CI=1) everything the
// repository ships or scripts/setup.sh installs (the Node.js judges and their tokenizers, ggml's and llama.cpp's
// libraries, root's tmpfs and setpriv) must be there, so a test that finds it missing fails; elsewhere it skips
// and says why.
#pragma once

#include <gtest/gtest.h>

namespace headfuse::test {

// True when the environment says the tests run in CI (CI=true or CI=1).
bool running_in_ci();

}  // namespace headfuse::test

// In a test body or SetUp: ends the test when `available` is false, as a failure in CI and as a skip elsewhere,
// with the message `why` (anything gtest's << takes, e.g. "x" << name << " is missing").
#define HEADFUSE_REQUIRE(available, why)                          \
    do {                                                          \
        if (!(available)) {                                       \
            if (::headfuse::test::running_in_ci()) FAIL() << why; \
            GTEST_SKIP() << why;                                  \
        }                                                         \
    } while (0)
