// Lists of heads as the command line spells them: "3:1,0:2" and transplant's "3:1=2:1,0:2".
#pragma once

#include <string_view>
#include <vector>

#include "headfuse/heads.h"

namespace headfuse::cli {

// "3:1,0:2" (spaces around the items allowed: "3:1, 0:2") -> {{0, 2}, {3, 1}}: sorted, each once. Error naming
// `flag` on anything else.
std::vector<HeadRef> parse_heads(std::string_view text, std::string_view flag);
// "3:1=2:1,0:2" -> {{0:2 from 0:2}, {3:1 from 2:1}}: a head without "=" comes from the same place; sorted by the
// head that receives.
std::vector<HeadMove> parse_head_moves(std::string_view text, std::string_view flag);

}  // namespace headfuse::cli
