#include "model/tensor_order.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <string>
#include <string_view>
#include <unordered_map>

#include "headfuse/gguf.h"

namespace headfuse {

std::string fused_name(std::string_view name) {
    if (name == "lens.proj.weight") return "token_embd.weight";
    // ".head_<digits>." is the per-head part of a name
    for (std::size_t at = name.find(".head_"); at != std::string_view::npos; at = name.find(".head_", at + 1)) {
        std::size_t end = at + 6;
        while (end < name.size() && name[end] >= '0' && name[end] <= '9') ++end;
        if (end > at + 6 && end < name.size() && name[end] == '.')
            return std::string(name.substr(0, at)) + std::string(name.substr(end));
    }
    return std::string(name);
}

std::vector<std::size_t> source_order(const GgufFile* source, const std::vector<std::string>& names) {
    std::vector<std::size_t> order(names.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    if (!source) return order;
    std::unordered_map<std::string, std::size_t> place;  // fused name -> first position in the source
    for (std::size_t i = 0; i < source->tensors().size(); ++i) place.emplace(fused_name(source->tensors()[i].name), i);
    std::vector<std::size_t> rank(names.size(), std::numeric_limits<std::size_t>::max());
    for (std::size_t i = 0; i < names.size(); ++i) {
        const std::string name = fused_name(names[i]);
        if (auto it = place.find(name); it != place.end()) {
            rank[i] = it->second;
            continue;
        }
        // A stacked tensor (phi3's attn_qkv, its ffn_up holding the gate) stands where its parts stood, and
        // they where it stood.
        for (const auto& [part, stacked] : {std::pair{".attn_q.", ".attn_qkv."}, std::pair{".attn_k.", ".attn_qkv."},
                                            std::pair{".attn_v.", ".attn_qkv."}, std::pair{".ffn_gate.", ".ffn_up."},
                                            std::pair{".attn_qkv.", ".attn_q."}}) {
            const std::size_t at = name.find(part);
            if (at == std::string::npos) continue;
            std::string other = name;
            other.replace(at, std::string_view(part).size(), stacked);
            if (auto it = place.find(other); it != place.end()) {
                rank[i] = it->second;
                break;
            }
        }
    }
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return rank[a] < rank[b]; });
    return order;
}

}  // namespace headfuse
