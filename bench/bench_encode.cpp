// Encoder throughput in bytes of f32 input per second: headfuse's fast path against the scalar reference
// (ggml's algorithm), for each type, on rows the size of a 2048-wide model's.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "headfuse/quantize.h"
#include "quant/kernels.h"

namespace {

std::vector<float> weights(std::size_t n) {
    std::vector<float> x(n);
    std::mt19937 rng(42);
    std::normal_distribution<float> dist(0.0f, 0.02f);
    for (float& v : x) v = dist(rng);
    return x;
}

template <bool Fast>
void encode(benchmark::State& state) {
    const auto type = static_cast<headfuse::DType>(state.range(0));
    constexpr std::size_t kRow = 2048, kRows = 256;  // 2 MiB of input: the encoder, not memory, is timed
    const std::vector<float> x = weights(kRow * kRows);
    std::vector<std::byte> out(headfuse::row_bytes(type, kRow) * kRows);
    for (auto _ : state) {
        for (std::size_t r = 0; r < kRows; ++r) {
            std::byte* dst = out.data() + r * headfuse::row_bytes(type, kRow);
            if constexpr (Fast)
                headfuse::encode_row(type, x.data() + r * kRow, dst, kRow);
            else
                headfuse::reference::encode_row(type, x.data() + r * kRow, dst, kRow);
        }
        benchmark::DoNotOptimize(out.data());
    }
    state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * x.size() * sizeof(float)));
    state.SetLabel(std::string(headfuse::type_name(type)));
}

void types(benchmark::internal::Benchmark* b) {
    using headfuse::DType;
    for (auto t : {DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                   DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K})
        b->Arg(static_cast<int>(t));
}

}  // namespace

BENCHMARK(encode<true>)->Name("encode/fast")->Apply(types);
BENCHMARK(encode<false>)->Name("encode/reference")->Apply(types);
BENCHMARK_MAIN();
