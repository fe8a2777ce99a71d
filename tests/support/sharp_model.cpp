#include "support/sharp_model.h"

#include <cmath>
#include <random>

#include "model/roles.h"

namespace headfuse::test {

std::vector<SharpTensor> sharp_tensors(const Config& c, std::uint64_t seed, float norm_spread) {
    std::mt19937_64 rng(seed);
    std::vector<SharpTensor> out;
    for (const TensorSpec& s : tensor_layout(c, ModelKind::PerHead)) {
        std::uint64_t n = 1;
        for (auto d : s.ne) n *= d;
        const bool rope_freqs =
            s.role->role == Role::RopeFreqs || s.role->role == Role::RopeLong || s.role->role == Role::RopeShort;
        const float a = s.kind == TensorKind::Norm      ? (rope_freqs ? 0.0f : norm_spread)
                        : s.kind == TensorKind::Bias    ? 0.5f
                        : s.name == "token_embd.weight" ? 1.0f
                                                        : 2.0f / std::sqrt(float(s.ne[0]));
        std::uniform_real_distribution<float> u(-a, a);
        SharpTensor& t = out.emplace_back(SharpTensor{s.name, s.ne, std::vector<float>(n, 1.0f)});
        if (a > 0)
            for (float& x : t.values) x = (s.kind == TensorKind::Norm ? 1.0f : 0.0f) + u(rng);
        // divisors from 0.25 (the fastest pair) to 8 (the slowest); LongRoPE's long ones from 1 to 16, its short
        // ones from 0.5 to 2
        const float lo = s.role->role == Role::RopeLong ? 1.0f : s.role->role == Role::RopeShort ? 0.5f : 0.25f;
        const float span = s.role->role == Role::RopeLong ? 16.0f : s.role->role == Role::RopeShort ? 4.0f : 32.0f;
        if (rope_freqs)
            for (std::uint64_t i = 0; i < n; ++i) t.values[i] = lo * std::pow(span, float(i) / float(n - 1));
    }
    return out;
}

PerHeadModel sharp_model(const Config& c, const std::vector<SharpTensor>& tensors) {
    std::vector<ExternalTensor> ext;
    for (const SharpTensor& t : tensors)
        ext.push_back({t.name,
                       DType::F32,
                       t.ne,
                       {reinterpret_cast<const std::byte*>(t.values.data()), t.values.size() * sizeof(float)}});
    return PerHeadModel::from_tensors(c, ext);
}

}  // namespace headfuse::test
