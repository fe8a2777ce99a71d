// headfuse: the one CPU check, the scalar kernel table, and the choice among the tables (quant/kernels.h).
#include "quant/kernels.h"

#include <cassert>

#include "compute/dot.h"
#include "model/random.h"
#include "quant/blocks.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define HEADFUSE_X86_KERNELS 1
#include <cpuid.h>
#else
#define HEADFUSE_X86_KERNELS 0
#endif

namespace headfuse {

#if HEADFUSE_X86_KERNELS
// Built whole for their targets by kernels_avx2.cpp and kernels_avx512.cpp.
extern const Kernels kKernelsAvx2;
extern const Kernels kKernelsAvx512;
#endif

namespace {

// ggml's reference functions, and the dot product built for the baseline target.
constexpr Kernels kKernelsScalar{
    .isa = Isa::Scalar,
    .encode_f16 = blocks::encode_f16,
    .encode_bf16 = blocks::encode_bf16,
    .encode_q8_0 = blocks::encode_q8_0,
    .encode_q4_0 = blocks::encode_q4_0,
    .decode_f16 = blocks::decode_f16,
    .decode_bf16 = blocks::decode_bf16,
    .decode_q8_0 = blocks::decode_q8_0,
    .decode_q4_0 = blocks::decode_q4_0,
    .all_finite = blocks::all_finite,
    .k4_search = blocks::k4_search_scalar,
    .k4_supers = 1,
    .q6_search = blocks::q6_search_scalar,
    .q6_subs = 1,
    .random_chunk = random_normal_chunk_scalar,
    .dot = compute::dot_lanes,
    .dot_tile = compute::dot_tile,
    .transposed = compute::transposed_lanes,
};

#if HEADFUSE_X86_KERNELS
// CPUID leaf 1, ECX bit 29. Asked directly because not every compiler's __builtin_cpu_supports knows "f16c".
bool cpu_has_f16c() {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
#endif

}  // namespace

bool isa_supported(Isa isa) noexcept {
#if HEADFUSE_X86_KERNELS
    // Asked once. __builtin_cpu_supports also asks the OS (XGETBV) whether it saves the AVX and AVX-512
    // registers; __builtin_cpu_init is needed when this runs before constructors have.
    static const bool avx2 = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") && cpu_has_f16c();
    }();
    static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                               __builtin_cpu_supports("avx512vl");
    switch (isa) {
        case Isa::Scalar: return true;
        case Isa::Avx2: return avx2;
        case Isa::Avx512: return avx512;
    }
    return false;
#else
    return isa == Isa::Scalar;
#endif
}

Isa best_isa() noexcept {
    for (Isa isa : {Isa::Avx512, Isa::Avx2})
        if (isa_supported(isa)) return isa;
    return Isa::Scalar;
}

const char* isa_name(Isa isa) noexcept {
    switch (isa) {
        case Isa::Avx512: return "avx512";
        case Isa::Avx2: return "avx2";
        case Isa::Scalar: break;
    }
    return "scalar";
}

namespace kernels {

const Kernels& for_isa(Isa isa) noexcept {
    assert(isa_supported(isa));
#if HEADFUSE_X86_KERNELS
    if (isa == Isa::Avx512) return kKernelsAvx512;
    if (isa == Isa::Avx2) return kKernelsAvx2;
#endif
    return kKernelsScalar;
}

const Kernels& active() noexcept {
    static const Kernels& best = for_isa(best_isa());
    return best;
}

}  // namespace kernels

}  // namespace headfuse
