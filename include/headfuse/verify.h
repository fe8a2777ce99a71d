// headfuse: proof that two models are the same, in any layouts headfuse reads (or that one is the other encoded).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "headfuse/model.h"

namespace headfuse {

// What verify found. Every field is filled whatever the verdict, so a caller can print all of it.
struct VerifyReport {
    // One line per hyperparameter that differs, with both values under VerifyOptions::labels ("rope_theta
    // (llama.rope.freq_base): per-head 10000, fused 500000"). When one changes the tensors' shapes, nothing else is
    // compared.
    std::vector<std::string> config_differences;
    std::uint64_t tensors_checked = 0;
    // One line per tensor that differs (by its fused name), with the first row that differs and the largest
    // |difference| of the decoded values.
    std::vector<std::string> mismatches;
    std::string first_difference;  // the first tensor that differs; empty when none does
    // The largest |A - B| over every decoded value of every tensor, whether it differs or B encodes A (then it is
    // the encoding's error), and the tensor where it is; 0 and empty when every value is the same.
    double max_abs_diff = 0;
    std::string max_abs_diff_tensor;
    bool same_types = true;  // every tensor of B has A's type
    // False when a weight has a type headfuse carries but does not decode (iq2_xxs, tq1_0, ...; see
    // TypeTraits::carries) and no tokens were asked for: the logits are not computed, the tensors compared byte for
    // byte are the whole proof. `undecoded_type` names the first such type.
    bool logits_compared = true;
    std::string undecoded_type;
    bool logits_identical = false;  // bit for bit
    bool logits_finite = false;     // no NaN or infinity in the fused file's logits
    double max_logprob_diff = 0;    // over every position and token
    bool top_token_agrees = true;   // the most likely next token is the same at every position
    // The hyperparameters agree, every tensor matches (in B's type: the exact encoding of A's values) and the
    // logits are bit-identical. For an encoded file the logits differ by the encoding's rounding, which is reported
    // (max_logprob_diff, top_token_agrees) but is no verdict: the tensors are the proof there, as they are when
    // the logits are not compared.
    bool ok() const noexcept;
};

// What verify compares the logits on, and how.
struct VerifyOptions {
    std::vector<std::uint32_t> tokens;  // empty: a default prompt within the vocabulary
    unsigned threads = 0;
    ProgressFn progress;  // tensors compared, in bytes of A
    // The context size llama.cpp would run the models with: it picks LongRoPE's factors (forward_logits); 0 is each
    // model's original context.
    std::uint32_t n_ctx = 0;
    // What the report calls the two models, in hyperparameter and tensor lines.
    std::array<std::string, 2> labels{"A", "B"};
};

// Compares models A and B read from any layout (per-head or fused GGUF, split sets, safetensors checkpoints): the
// hyperparameters, every tensor in a common form (its logical rows in llama.cpp's order, per head where the
// layouts differ; bytes when both have one type, else the values decoded to f32, a row of B also matching when
// it is the exact encoding of A's values at B's type, as fuse writes an encoded file; token_embd of a lens model A
// against the recomputed lens fold) and the logits of both on `tokens`. A model with weights headfuse does not
// decode is compared by its tensors alone (a tensor of such a type must have it on both sides), unless `tokens`
// are given; otherwise Error, Unsupported. A lens model as B and a folded one as A: Error, Unsupported.
VerifyReport verify(const PerHeadModel& a, const PerHeadModel& b, const VerifyOptions& options = {});
// verify(per_head, fused.per_head(), options).
VerifyReport verify(const PerHeadModel& per_head, const FusedModel& fused, const VerifyOptions& options = {});

// log-softmax of each row of `logits` (n_rows x vocab), in f64.
std::vector<double> log_softmax(std::span<const float> logits, std::uint32_t vocab);

// A short default prompt: tokens spread over the vocabulary.
std::vector<std::uint32_t> default_tokens(std::uint32_t vocab, std::size_t n = 8);

}  // namespace headfuse
