// headfuse: folding a projection lens into a standard embedding table.
//
// A model trained under a projection lens keeps a frozen donor table D (stored [donor_d_in, vocab]) and a
// trainable projection P (stored [donor_d_in, d_model]); its effective embedding is E = D · Pᵀ:
//
//   embd[v*d_model + r] = sum_c donor[v*donor_d_in + c] * proj[r*donor_d_in + c]
//
// accumulated in f64 (a BLAS dgemm) and rounded once to f32. The fold works in blocks of kFoldBlockRows
// vocabulary rows; every caller (fuse, the forward pass, verify) folds the same blocks so the bits agree.
#pragma once

#include <cstdint>
#include <vector>

#include "headfuse/model.h"

namespace headfuse {

// Vocabulary rows per fold block: every caller folds blocks starting at multiples of it.
inline constexpr std::uint64_t kFoldBlockRows = 2048;

// The fold of one lens model, with the projection widened to f64 once. It keeps a copy of the donor view (a
// borrow: the donor's model must outlive it).
class LensFold {
public:
    // donor: [donor_d_in, vocab] F32; proj: [donor_d_in, d_model] F32.
    LensFold(const TensorView& donor, const TensorView& proj);
    std::uint64_t vocab() const noexcept { return vocab_; }      // rows of the folded table
    std::uint64_t d_model() const noexcept { return d_model_; }  // elements of each row
    // Folds vocabulary rows [v0, v0 + n) (n <= kFoldBlockRows) into out[(v - v0) * d_model + r].
    // Not reentrant: it reuses this object's f64 workspace.
    void rows(std::uint64_t v0, std::uint64_t n, float* out);

private:
    TensorView donor_;
    std::uint64_t donor_d_in_, d_model_, vocab_;
    std::vector<double> proj_;   // [d_model][donor_d_in]
    std::vector<double> a_, c_;  // one block of donor rows, and its fold
};

}  // namespace headfuse
