// Comparing the tensors of two GGUF files: one headfuse wrote against llama.cpp's (llama_model_quantize).
#pragma once

#include <gtest/gtest.h>

#include "headfuse/gguf.h"

namespace headfuse::test {

// The tensors of `ours` and `theirs` agree by name, type and bytes (order aside), or a message on the first that
// does not.
::testing::AssertionResult same_tensors(const GgufFile& ours, const GgufFile& theirs);

}  // namespace headfuse::test
