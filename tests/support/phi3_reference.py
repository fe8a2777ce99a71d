#!/usr/bin/python3
"""An independent reference for headfuse's Phi-3, written for the tests with numpy alone (a sibling of
hf_reference.py, whose safetensors reader and writer it uses).

It makes random checkpoints in Hugging Face's Phi3ForCausalLM layout (self_attn.qkv_proj holds the Q, K and V
rows stacked, mlp.gate_up_proj the gate's rows then the up rows) and computes next-token log-probabilities as
transformers' modeling_phi3.py does: RMS norms, qkv split by rows, rotate-half RoPE on the full head,
softmax(q k^T / sqrt(head_dim)) causal attention with grouped key/value heads, up * silu(gate), in float64.
Phi3Config's sliding_window is left out of the checkpoints it makes (llama.cpp's phi3 graph attends to every
earlier position; Hugging Face would mask by the window).

LongRoPE (rope_scaling {"type": "longrope", "long_factor", "short_factor"}), as transformers computes it
(modeling_rope_utils.py _compute_longrope_parameters, and the dynamic update of Phi3RotaryEmbedding): the factors
as float32 tensors, inv_freq = 1 / (factors * base^(2i/d)) with the long factors when the sequence run (the largest
position + 1) exceeds original_max_position_embeddings and the short ones otherwise, and cos and sin multiplied by
attention_factor = sqrt(1 + ln(s) / ln(original_max_position_embeddings)), s = max_position_embeddings /
original_max_position_embeddings (1 when s <= 1). llama.cpp picks the factors by its context size instead.

  phi3_reference.py make DIR --d-model 64 --n-heads 4 --n-kv-heads 2 --d-ff 96 --n-layers 2 --vocab 300
                    [--tied] [--seed 1] [--dtype F32|F16|BF16] [--sliding-window N]
                    [--longrope] [--original-context 256] [--max-context 256]
  phi3_reference.py logprobs DIR TOKENS_CSV        JSON [[log p(t) for t in vocab] per position]
"""
import math
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference as hf  # noqa: E402 (the safetensors reader and writer, by hand)


def make(a):
    """A random LLaMA of make-hf's kind, its projections stacked as Phi3ForCausalLM stacks them."""
    llama = argparse.Namespace(**vars(a), head_dim=0, shard_bytes=0, rope_linear=0.0, rope_llama3=0.0,
                               attention_bias=False, mlp_bias=False, family="llama")
    t, c = hf.llama_checkpoint(llama)
    for l in range(a.n_layers):
        p = "model.layers.%d." % l
        q, k, v = (t.pop(p + "self_attn.%s_proj.weight" % x) for x in "qkv")
        t[p + "self_attn.qkv_proj.weight"] = np.concatenate([q, k, v])
        gate, up = t.pop(p + "mlp.gate_proj.weight"), t.pop(p + "mlp.up_proj.weight")
        t[p + "mlp.gate_up_proj.weight"] = np.concatenate([gate, up])
    c.update({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
              "original_max_position_embeddings": a.original_context, "max_position_embeddings": a.max_context,
              "rope_scaling": None, "sliding_window": a.sliding_window or None})
    if a.longrope:  # distinct long and short factors, none 1, with more digits than a float32 holds
        rng = np.random.default_rng(a.seed + 1000)
        half = c["hidden_size"] // c["num_attention_heads"] // 2
        c["rope_scaling"] = {"type": "longrope",
                             "long_factor": [float(x) for x in np.sort(rng.uniform(1.0, 24.0, half))],
                             "short_factor": [float(x) for x in rng.uniform(0.6, 1.8, half)]}
    hf.write_checkpoint(a.dir, t, {k: a.dtype for k in t}, 0)
    json.dump(c, open(os.path.join(a.dir, "config.json"), "w"), indent=2)


def logprobs(a):
    c = json.load(open(os.path.join(a.dir, "config.json")))
    t = hf.read_checkpoint(a.dir)
    tokens = [int(x) for x in a.tokens.split(",")]
    dm, nh, nkv, nl = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    ff, eps, theta = c["intermediate_size"], c["rms_norm_eps"], c["rope_theta"]
    dh, T = dm // nh, len(tokens)
    ext, attention_factor = np.ones(dh // 2), 1.0
    if c.get("rope_scaling"):
        rs = c["rope_scaling"]
        if rs.get("rope_type", rs.get("type")) not in ("longrope", "su"):
            sys.exit("logprobs: rope_scaling %r is not part of this reference" % rs)
        orig = c["original_max_position_embeddings"]
        factor = c["max_position_embeddings"] / orig
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        ext = np.array(rs["long_factor"] if T > orig else rs["short_factor"], np.float32).astype(np.float64)
    inv_freq = 1.0 / (ext * theta ** (np.arange(0, dh, 2) / dh))
    ang = np.outer(np.arange(T), inv_freq)
    cos = np.cos(np.concatenate([ang, ang], -1)) * attention_factor
    sin = np.sin(np.concatenate([ang, ang], -1)) * attention_factor
    x = t["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(nl):
        p = "model.layers.%d." % l
        h = hf.rmsnorm(x, t[p + "input_layernorm.weight"], eps)
        qkv = h @ t[p + "self_attn.qkv_proj.weight"].T  # Q rows, then K's, then V's
        q, k, v = qkv[:, :nh * dh], qkv[:, nh * dh:(nh + nkv) * dh], qkv[:, (nh + nkv) * dh:]
        x = x + hf.attend(q, k, v, cos, sin, mask) @ t[p + "self_attn.o_proj.weight"].T
        h = hf.rmsnorm(x, t[p + "post_attention_layernorm.weight"], eps)
        up_states = h @ t[p + "mlp.gate_up_proj.weight"].T
        gate, up = up_states[:, :ff], up_states[:, ff:]  # chunk(2, dim=-1)
        x = x + (up * (gate / (1 + np.exp(-gate)))) @ t[p + "mlp.down_proj.weight"].T
    hf.print_logprobs(x, t, eps)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    hf.add_shape_arguments(m)
    m.add_argument("--tied", action="store_true")
    m.add_argument("--sliding-window", type=int, default=0)
    m.add_argument("--longrope", action="store_true")
    m.add_argument("--original-context", type=int, default=256)
    m.add_argument("--max-context", type=int, default=256)
    lp = sub.add_parser("logprobs")
    lp.add_argument("dir")
    lp.add_argument("tokens")
    a = ap.parse_args()
    {"make": make, "logprobs": logprobs}[a.cmd](a)


if __name__ == "__main__":
    main()
