// headfuse: the role a tensor plays in a model of one of headfuse's families, whatever its file calls it.
//
// Every tensor headfuse reads or writes is one role at one place (global, a layer, or a head of a layer).
// The names, shapes and presence rules of each role live in one table (src/roles.cpp); this header only names
// the roles, for callers that pick tensors out of a model (FusedModel::fused) or say which optional roles a
// model has (Config::optional_roles).
#pragma once

#include <cstddef>
#include <cstdint>

namespace headfuse {

// In file order (a model file lists its tensors in this order, layer by layer).
enum class Role : std::uint8_t {
    TokenEmbd,       // token_embd.weight [d_model, vocab]
    LensDonor,       // a per-head lens model's token_embd.weight: the frozen donor table [donor_d_in, vocab]
    LensProj,        // lens.proj.weight [donor_d_in, d_model], per-head lens models only
    OutputNorm,      // output_norm.weight [d_model]
    Output,          // output.weight [d_model, vocab], untied models only
    RopeFreqs,       // rope_freqs.weight [d_head/2], optional: Llama 3.1's per-dimension frequency divisors
    RopeLong,        // rope_factors_long.weight [d_head/2], optional: LongRoPE's divisors beyond the original context
    RopeShort,       // rope_factors_short.weight [d_head/2], optional: LongRoPE's divisors within it (Phi-3)
    AttnNorm,        // blk.N.attn_norm.weight [d_model]
    AttnQ,           // blk.N.attn_q.head_H.weight [d_model, d_head] per head; fused blk.N.attn_q.weight
    AttnK,           // blk.N.attn_k.head_H.weight, per kv head
    AttnV,           // blk.N.attn_v.head_H.weight, per kv head
    AttnQBias,       // blk.N.attn_q.head_H.bias [d_head] per head, optional; fused blk.N.attn_q.bias
    AttnKBias,       // blk.N.attn_k.head_H.bias, per kv head, optional
    AttnVBias,       // blk.N.attn_v.head_H.bias, per kv head, optional
    AttnQNorm,       // blk.N.attn_q_norm.weight [d_head], optional: RMS norm of every query head before RoPE
    AttnKNorm,       // blk.N.attn_k_norm.weight [d_head], optional: the same for every key head
    AttnOutput,      // blk.N.attn_output.weight [n_heads*d_head, d_model]
    AttnOutputBias,  // blk.N.attn_output.bias [d_model], optional
    PostAttnNorm,    // blk.N.post_attention_norm.weight [d_model], optional: RMS norm of attention's output (Gemma 2/3)
    FfnNorm,         // blk.N.ffn_norm.weight [d_model]
    FfnGate,         // blk.N.ffn_gate.weight [d_model, d_ff]
    FfnGateBias,     // blk.N.ffn_gate.bias [d_ff], optional
    FfnUp,           // blk.N.ffn_up.weight [d_model, d_ff]
    FfnUpBias,       // blk.N.ffn_up.bias [d_ff], optional
    FfnDown,         // blk.N.ffn_down.weight [d_ff, d_model]
    FfnDownBias,     // blk.N.ffn_down.bias [d_model], optional
    PostFfwNorm,     // blk.N.post_ffw_norm.weight [d_model], optional: RMS norm of the FFN's output (Gemma 2/3)
    Count_,          // not a role: the number of roles
};

inline constexpr std::size_t kRoleCount = static_cast<std::size_t>(Role::Count_);

// A set of roles, e.g. the optional roles a model has.
class RoleSet {
public:
    constexpr bool contains(Role r) const noexcept { return (bits_ >> static_cast<unsigned>(r)) & 1u; }
    constexpr void insert(Role r) noexcept { bits_ |= std::uint64_t{1} << static_cast<unsigned>(r); }
    constexpr bool empty() const noexcept { return bits_ == 0; }
    constexpr bool operator==(const RoleSet&) const = default;

private:
    static_assert(kRoleCount <= 64);
    std::uint64_t bits_ = 0;
};

}  // namespace headfuse
