// headfuse: the metadata of a model file headfuse writes (internal; defined in model_metadata.cpp).
#pragma once

#include "headfuse/config.h"
#include "headfuse/gguf.h"

namespace headfuse {

// The metadata of a model file written from a model whose metadata is `carried`: from a file, its keys in
// their order with the ARCH.* hyperparameters of c set in place (added only when llama.cpp would not infer
// them); from memory, the hyperparameters, then the carried keys.
Metadata per_head_metadata(const Config& c, const Metadata& carried);

}  // namespace headfuse
