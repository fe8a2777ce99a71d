// A training engine's view of headfuse: hand over per-head tensors you already hold in memory, get a
// llama.cpp GGUF, read it back as per-head views and check the logits agree.
//
//   headfuse_example [OUT.gguf]
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "headfuse/error.h"
#include "headfuse/forward.h"
#include "headfuse/fuse.h"
#include "headfuse/model.h"

int main(int argc, char** argv) {
    const char* out = argc > 1 ? argv[1] : "example-fused.gguf";
    headfuse::Config cfg;
    cfg.d_model = 64;
    cfg.n_heads = 4;
    cfg.n_kv_heads = 2;
    cfg.d_head = 16;
    cfg.d_ff = 128;
    cfg.n_layers = 2;
    cfg.vocab = 300;

    try {
        // Stand-in for an engine's own buffers: random_init's tensors, handed over as borrowed memory.
        const headfuse::PerHeadModel source = headfuse::PerHeadModel::random_init(cfg, 42);
        std::vector<headfuse::ExternalTensor> tensors;
        headfuse::for_each_view(source.views(), [&](const headfuse::TensorView& v) {
            tensors.push_back({v.name(), v.type(), {v.ne().begin(), v.ne().begin() + v.n_dims()}, v.bytes()});
        });
        const headfuse::PerHeadModel engine = headfuse::PerHeadModel::from_tensors(cfg, tensors);

        headfuse::fuse(engine, out);
        const headfuse::FusedModel fused = headfuse::FusedModel::open(out);

        const std::vector<std::uint32_t> tokens{1, 17, 42, 99};
        const auto a = headfuse::forward_logits(engine.views(), tokens);
        const auto b = headfuse::forward_logits(fused.views(), tokens);
        const bool same = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
        std::printf("wrote %s (%s); logits of the in-memory model and the fused file are %s\n", out,
                    headfuse::describe(fused.config()).c_str(), same ? "bit-identical" : "DIFFERENT");
        return same ? 0 : 1;
    } catch (const headfuse::Error& e) {
        // e.kind() tells a bad file (InvalidInput) from a failed write (Io), a bad request (InvalidArgument)
        // and a feature headfuse does not handle (Unsupported); the message names what it is about.
        std::fprintf(stderr, "headfuse_example: %s error: %s\n",
                     std::string(headfuse::error_kind_name(e.kind())).c_str(), e.what());
        return e.kind() == headfuse::ErrorKind::Io ? 2 : 1;
    }
}
