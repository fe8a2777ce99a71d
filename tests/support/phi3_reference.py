#!/usr/bin/python3
"""An independent reference for headfuse's Phi-3, written for the tests with numpy alone (a sibling of
hf_reference.py, whose safetensors reader and writer it uses).

It makes random checkpoints in Hugging Face's Phi3ForCausalLM layout (self_attn.qkv_proj holds the Q, K and V
rows stacked, mlp.gate_up_proj the gate's rows then the up rows) and computes next-token log-probabilities as
transformers' modeling_phi3.py does: RMS norms, qkv split by rows, rotate-half RoPE on the full head,
softmax(q k^T / sqrt(head_dim)) causal attention with grouped key/value heads, up * silu(gate), in float64.
Phi3Config's sliding_window is left out of the checkpoints it makes (llama.cpp's phi3 graph attends to every
earlier position; Hugging Face would mask by the window).

  phi3_reference.py make DIR --d-model 64 --n-heads 4 --n-kv-heads 2 --d-ff 96 --n-layers 2 --vocab 300
                    [--tied] [--seed 1] [--dtype F32|F16|BF16] [--sliding-window N]
  phi3_reference.py logprobs DIR TOKENS_CSV        JSON [[log p(t) for t in vocab] per position]
"""
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
    c.update({"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "original_max_position_embeddings": 256,
              "rope_scaling": None, "sliding_window": a.sliding_window or None})
    hf.write_checkpoint(a.dir, t, {k: a.dtype for k in t}, 0)
    json.dump(c, open(os.path.join(a.dir, "config.json"), "w"), indent=2)


def logprobs(a):
    c = json.load(open(os.path.join(a.dir, "config.json")))
    t = hf.read_checkpoint(a.dir)
    tokens = [int(x) for x in a.tokens.split(",")]
    dm, nh, nkv, nl = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    ff, eps, theta = c["intermediate_size"], c["rms_norm_eps"], c["rope_theta"]
    dh, T = dm // nh, len(tokens)
    if c.get("rope_scaling"):
        sys.exit("logprobs: LongRoPE scaling is not part of this reference")
    inv_freq = 1.0 / theta ** (np.arange(0, dh, 2) / dh)
    ang = np.outer(np.arange(T), inv_freq)
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
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
    lp = sub.add_parser("logprobs")
    lp.add_argument("dir")
    lp.add_argument("tokens")
    a = ap.parse_args()
    {"make": make, "logprobs": logprobs}[a.cmd](a)


if __name__ == "__main__":
    main()
