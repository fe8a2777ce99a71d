// headfuse: proof that a fused file is the per-head model it came from.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "headfuse/model.h"

namespace headfuse {

// What verify found. Every field is filled whatever the verdict, so a caller can print all of it.
struct VerifyReport {
    // One line per hyperparameter that differs, with both values ("rope_theta (llama.rope.freq_base): per-head
    // 10000, fused 500000"). When one changes the tensors' shapes, nothing else is compared.
    std::vector<std::string> config_differences;
    std::uint64_t tensors_checked = 0;
    std::vector<std::string> mismatches;  // one line per tensor that differs
    bool same_types = true;               // every fused weight has its per-head source's type
    // False when a weight has a type headfuse carries but does not decode (iq2_xxs, tq1_0, ...; see
    // TypeTraits::carries) and no tokens were asked for: the logits are not computed, the tensors compared byte for
    // byte are the whole proof. `undecoded_type` names the first such type.
    bool logits_compared = true;
    std::string undecoded_type;
    bool logits_identical = false;  // bit for bit
    bool logits_finite = false;     // no NaN or infinity in the fused file's logits
    double max_logprob_diff = 0;    // over every position and token
    bool top_token_agrees = true;   // the most likely next token is the same at every position
    // The hyperparameters agree, every tensor matches (an encoded tensor: the exact encoding of its f32 source) and the
    // logits are bit-identical. For an encoded file the logits differ by the encoding's rounding, which is reported
    // (max_logprob_diff, top_token_agrees) but is no verdict: the tensors are the proof there, as they are when
    // the logits are not compared.
    bool ok() const noexcept;
};

// What verify compares the logits on, and how.
struct VerifyOptions {
    std::vector<std::uint32_t> tokens;  // empty: a default prompt within the vocabulary
    unsigned threads = 0;
    ProgressFn progress;  // tensors compared, in bytes of the per-head model
};

// Compares every tensor (fused against the concatenated heads, encoded as the fused file is; token_embd
// against the recomputed lens fold) and the logits of both models on `tokens`. A model with weights headfuse
// does not decode is compared by its tensors alone, unless `tokens` are given (then Error, Unsupported).
VerifyReport verify(const PerHeadModel& per_head, const FusedModel& fused, const VerifyOptions& options = {});

// log-softmax of each row of `logits` (n_rows x vocab), in f64.
std::vector<double> log_softmax(std::span<const float> logits, std::uint32_t vocab);

// A short default prompt: tokens spread over the vocabulary.
std::vector<std::uint32_t> default_tokens(std::uint32_t vocab, std::size_t n = 8);

}  // namespace headfuse
