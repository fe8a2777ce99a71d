// Comparing the tensors of two model files: a GGUF file headfuse wrote against llama.cpp's (llama_model_quantize),
// a safetensors checkpoint headfuse exported against the one it came from.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>

#include "headfuse/gguf.h"

namespace headfuse::test {

// The tensors of `ours` and `theirs` agree by name, type and bytes (order aside), or a message on the first that
// does not.
::testing::AssertionResult same_tensors(const GgufFile& ours, const GgufFile& theirs);

// The safetensors checkpoints (a file, an index or a folder) have the same tensor names, dtypes, shapes and
// bytes; each difference is a test failure naming the tensor.
void expect_same_safetensors(const std::filesystem::path& a, const std::filesystem::path& b);

}  // namespace headfuse::test
