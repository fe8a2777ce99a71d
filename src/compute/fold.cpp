#include "headfuse/fold.h"

#include <cblas.h>

#include <cstring>
#include <string>
#include <vector>

#include "base/fail.h"
#include "headfuse/error.h"

namespace headfuse {

LensFold::LensFold(const TensorView& donor, const TensorView& proj)
    : donor_(donor), donor_d_in_(donor.ne()[0]), d_model_(proj.ne()[1]), vocab_(donor.ne()[1]) {
    if (donor.type() != DType::F32 || proj.type() != DType::F32)
        fail(ErrorKind::Unsupported, "the lens fold needs F32 tensors, found " + std::string(type_name(donor.type())) +
                                         " and " + std::string(type_name(proj.type())));
    if (proj.ne()[0] != donor_d_in_)
        fail("tensor '" + proj.name() + "' has " + std::to_string(proj.ne()[0]) + " columns, expected donor_d_in " +
             std::to_string(donor_d_in_));
    // Through a copy: a file may align its tensors to 1 byte, too little for float loads.
    std::vector<float> p(d_model_ * donor_d_in_);
    if (!p.empty()) std::memcpy(p.data(), proj.bytes().data(), p.size() * sizeof(float));
    proj_.assign(p.begin(), p.end());  // exact f32 -> f64 widening
}

void LensFold::rows(std::uint64_t v0, std::uint64_t n, float* out) {
    if (n == 0) return;
    if (n > kFoldBlockRows || v0 + n > vocab_) fail(ErrorKind::InvalidArgument, "lens fold: rows out of range");
    const std::uint64_t k = donor_d_in_;
    std::vector<double>& a = a_;
    std::vector<double>& c = c_;
    std::vector<float> rows(n * k);
    std::memcpy(rows.data(), donor_.bytes().data() + v0 * k * sizeof(float), rows.size() * sizeof(float));
    a.assign(rows.begin(), rows.end());
    c.resize(n * d_model_);  // dgemm with beta 0 writes every element
    // C[n, d_model] = A[n, k] · Pᵀ  (P stored [d_model][k], row-major)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(d_model_),
                static_cast<int>(k), 1.0, a.data(), static_cast<int>(k), proj_.data(), static_cast<int>(k), 0.0,
                c.data(), static_cast<int>(d_model_));
    for (std::size_t i = 0; i < c.size(); ++i) out[i] = static_cast<float>(c[i]);  // the one rounding
}

}  // namespace headfuse
