// llama.cpp's quantizer as a benchmark baseline: llama_model_quantize from the judge's libllama (see
// tests/support/llama_quantize.h), with its default parameters.
//
//   llama_quantize IN OUT FTYPE THREADS    FTYPE: llama.cpp's enum llama_ftype (15 is Q4_K_M)
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "support/llama_quantize.h"

int main(int argc, char** argv) {
    using namespace headfuse::test;
    try {
        if (argc != 5) {
            std::fprintf(stderr, "usage: llama_quantize IN OUT FTYPE THREADS\n");
            return 1;
        }
        LlamaQuantizer* q = LlamaQuantizer::get();
        if (q == nullptr) {
            std::fprintf(stderr, "llama_quantize: %s\n", LlamaQuantizer::load_error().c_str());
            return 1;
        }
        q->quantize(
            argv[1], argv[2],
            {.ftype = static_cast<LlamaFtype>(std::atoi(argv[3])), .pure = false, .threads = std::atoi(argv[4])});
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "llama_quantize: %s\n", e.what());
        return 1;
    }
}
