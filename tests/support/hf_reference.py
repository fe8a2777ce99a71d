#!/usr/bin/python3
"""An independent reference for headfuse's safetensors import, written for the tests with numpy alone.

It makes random checkpoints in Hugging Face's LLaMA layout (and its Mistral, Qwen2 and Qwen3 variants) and in
TransformerLens's (writing safetensors with its own few lines, no torch, no safetensors package), and computes
next-token log-probabilities in Hugging Face's own convention: rotate-half RoPE applied to the unpermuted
q_proj/k_proj outputs, in float64. The families, as transformers' modeling files define them:
  llama, mistral  q/k/v/o biases only with attention_bias (mistral: none);
  qwen2           q/k/v biases always (Qwen2Attention: q_proj, k_proj, v_proj with bias, o_proj without);
  qwen3           q_norm and k_norm (an RMSNorm of head_dim over each head of q and k, before RoPE), no biases.

  hf_reference.py make-hf DIR --d-model 64 --n-heads 4 --n-kv-heads 2 [--head-dim 16] --d-ff 96 --n-layers 2
                  --vocab 300 [--tied] [--seed 1] [--dtype F32|F16|BF16] [--shard-bytes N] [--rope-linear F]
                  [--rope-llama3 F] [--attention-bias] [--mlp-bias] [--family llama|mistral|qwen2|qwen3]
  hf_reference.py make-tl HF_DIR OUT_DIR [--processed] [--b-in]      TransformerLens state dict of an HF model
  hf_reference.py logprobs HF_DIR TOKENS_CSV [--out FILE]            JSON [[log p(t) for t in vocab] per position]
                                                                      (--out: raw float64 in FILE instead)
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16}


# --- safetensors, by hand -----------------------------------------------------------------------------------

def to_bf16(a):
    """float32 -> bfloat16 bits, round to nearest even (finite input)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def encode(a, dtype):
    if dtype == "BF16":
        return to_bf16(a).tobytes()
    return np.ascontiguousarray(a, dtype=DTYPES[dtype]).tobytes()


def write_safetensors(path, tensors, dtypes):
    """tensors: name -> float array; dtypes: name -> "F32" | "F16" | "BF16"."""
    header, blobs, at = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors.items():
        b = encode(a, dtypes[name])
        header[name] = {"dtype": dtypes[name], "shape": list(a.shape), "data_offsets": [at, at + len(b)]}
        blobs.append(b)
        at += len(b)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    buf = data[8 + n:]
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = buf[s:e]
        if v["dtype"] == "BF16":
            a = from_bf16(np.frombuffer(raw, dtype=np.uint16))
        else:
            a = np.frombuffer(raw, dtype=DTYPES[v["dtype"]])
        out[name] = a.astype(np.float64).reshape(v["shape"])
    return out


def write_checkpoint(folder, tensors, dtypes, shard_bytes):
    """One model.safetensors, or shards of at most shard_bytes plus model.safetensors.index.json."""
    os.makedirs(folder, exist_ok=True)
    if not shard_bytes:
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors, dtypes)
        return
    shards, size = [[]], 0
    for name, a in tensors.items():
        n = len(encode(a, dtypes[name]))
        if shards[-1] and size + n > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    weight_map = {}
    for i, names in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
        write_safetensors(os.path.join(folder, fname), {k: tensors[k] for k in names}, dtypes)
        weight_map.update({k: fname for k in names})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=2)


def read_checkpoint(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if not os.path.exists(index):
        return read_safetensors(os.path.join(folder, "model.safetensors"))
    out = {}
    for fname in sorted(set(json.load(open(index))["weight_map"].values())):
        out.update(read_safetensors(os.path.join(folder, fname)))
    return out


# --- a random Hugging Face LLaMA -----------------------------------------------------------------------------

def make_hf(a):
    t, config = llama_checkpoint(a)
    write_checkpoint(a.dir, t, {k: a.dtype for k in t}, a.shard_bytes)
    json.dump(config, open(os.path.join(a.dir, "config.json"), "w"), indent=2)


def llama_checkpoint(a):
    """The tensors and config.json of a random Hugging Face LLaMA with make-hf's options."""
    rng = np.random.default_rng(a.seed)
    dm, nh, nkv, ff, nl, vocab = a.d_model, a.n_heads, a.n_kv_heads, a.d_ff, a.n_layers, a.vocab
    dh = a.head_dim or dm // nh
    w = lambda *shape: rng.normal(0.0, 0.25, shape) / np.sqrt(shape[-1]) * 4  # noqa: E731 (rows of norm ~1)
    norm = lambda: 1.0 + 0.2 * rng.normal(0.0, 1.0, dm)  # noqa: E731 (not 1: the norms must be carried)
    t = {"model.embed_tokens.weight": rng.normal(0.0, 1.0, (vocab, dm))}
    for l in range(nl):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = norm()
        t[p + "self_attn.q_proj.weight"] = w(nh * dh, dm)
        t[p + "self_attn.k_proj.weight"] = w(nkv * dh, dm)
        t[p + "self_attn.v_proj.weight"] = w(nkv * dh, dm)
        t[p + "self_attn.o_proj.weight"] = w(dm, nh * dh)
        t[p + "post_attention_layernorm.weight"] = norm()
        t[p + "mlp.gate_proj.weight"] = w(ff, dm)
        t[p + "mlp.up_proj.weight"] = w(ff, dm)
        t[p + "mlp.down_proj.weight"] = w(dm, ff)
        bias = lambda n: rng.normal(0.0, 0.3, n)  # noqa: E731
        if a.family == "qwen2":
            for k, n in (("q", nh * dh), ("k", nkv * dh), ("v", nkv * dh)):
                t[p + "self_attn.%s_proj.bias" % k] = bias(n)
        if a.family == "qwen3":
            t[p + "self_attn.q_norm.weight"] = 1.0 + 0.3 * rng.normal(0.0, 1.0, dh)
            t[p + "self_attn.k_norm.weight"] = 1.0 + 0.3 * rng.normal(0.0, 1.0, dh)
        if a.attention_bias:
            for k, n in (("q", nh * dh), ("k", nkv * dh), ("v", nkv * dh), ("o", dm)):
                t[p + "self_attn.%s_proj.bias" % k] = bias(n)
        if a.mlp_bias:
            for k, n in (("gate", ff), ("up", ff), ("down", dm)):
                t[p + "mlp.%s_proj.bias" % k] = bias(n)
    t["model.norm.weight"] = norm()
    if not a.tied:
        t["lm_head.weight"] = w(vocab, dm)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dm,
        "num_attention_heads": nh, "num_key_value_heads": nkv, "intermediate_size": ff,
        "num_hidden_layers": nl, "vocab_size": vocab, "rms_norm_eps": 1e-5, "rope_theta": 10000.0 + 7.0,
        "max_position_embeddings": 256, "tie_word_embeddings": bool(a.tied), "hidden_act": "silu",
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[a.dtype],
    }
    if a.head_dim or a.family == "qwen3":
        config["head_dim"] = dh
    if a.family == "mistral":
        config.update({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "sliding_window": None})
    if a.family in ("qwen2", "qwen3"):  # as the published configs carry them: a window, switched off
        arch = {"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}[a.family]
        config.update({"architectures": [arch], "model_type": a.family, "use_sliding_window": False,
                       "sliding_window": 4096, "max_window_layers": nl})
    if a.family == "qwen3":
        config["attention_bias"] = False
    if a.rope_linear:
        config["rope_scaling"] = {"type": "linear", "factor": a.rope_linear}
    if a.rope_llama3:  # Llama 3.1's rule; an original context of 64 puts
        # the dimensions of a 16-wide head in all three of its bands
        config["rope_scaling"] = {"rope_type": "llama3", "factor": a.rope_llama3, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    if a.attention_bias:
        config["attention_bias"] = True
    if a.mlp_bias:
        config["mlp_bias"] = True
    return t, config


# --- the same model in TransformerLens's layout ----------------------------------------------------------------

def make_tl(a):
    """TransformerLens's LLaMA conversion (pretrained/weight_conversions/llama.py; qwen2.py and qwen3.py, which
    add Qwen3's q/k norms as attn.q_norm.w and attn.k_norm.w), optionally processed as
    from_pretrained processes it: RMSNorm weights folded into the next weights, W_U centred over the vocabulary."""
    c = json.load(open(os.path.join(a.hf_dir, "config.json")))
    hf = read_checkpoint(a.hf_dir)
    dm, nh, nkv, nl = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    dh = c.get("head_dim", dm // nh)
    gqa = nkv != nh
    if any(k.endswith(("gate_proj.bias", "up_proj.bias")) for k in hf):
        sys.exit("make-tl: TransformerLens's gated MLP has no bias before its product")
    t = {"embed.W_E": hf["model.embed_tokens.weight"]}
    rng = np.random.default_rng(7)
    for l in range(nl):
        p, b = "model.layers.%d." % l, "blocks.%d." % l
        ln1, ln2 = hf[p + "input_layernorm.weight"], hf[p + "post_attention_layernorm.weight"]
        wq = hf[p + "self_attn.q_proj.weight"].reshape(nh, dh, dm).transpose(0, 2, 1)   # "(n h) m -> n m h"
        wk = hf[p + "self_attn.k_proj.weight"].reshape(nkv, dh, dm).transpose(0, 2, 1)
        wv = hf[p + "self_attn.v_proj.weight"].reshape(nkv, dh, dm).transpose(0, 2, 1)
        wo = hf[p + "self_attn.o_proj.weight"].reshape(dm, nh, dh).transpose(1, 2, 0)   # "m (n h) -> n h m"
        w_in, w_gate = hf[p + "mlp.up_proj.weight"].T, hf[p + "mlp.gate_proj.weight"].T
        w_out = hf[p + "mlp.down_proj.weight"].T
        if a.processed:  # fold_ln: RMSPre, the norm weights go into the weights that read the normed stream
            wq, wk, wv = wq * ln1[None, :, None], wk * ln1[None, :, None], wv * ln1[None, :, None]
            w_in, w_gate = w_in * ln2[:, None], w_gate * ln2[:, None]
        else:
            t[b + "ln1.w"], t[b + "ln2.w"] = ln1, ln2
        kv = "_" if gqa else ""
        t[b + "attn.W_Q"], t[b + "attn.%sW_K" % kv], t[b + "attn.%sW_V" % kv], t[b + "attn.W_O"] = wq, wk, wv, wo
        hb = lambda k, n: hf.get(p + k, np.zeros(n))  # noqa: E731 (Hugging Face's bias, or TransformerLens's zeros)
        t[b + "attn.b_Q"] = hb("self_attn.q_proj.bias", nh * dh).reshape(nh, dh)
        t[b + "attn.%sb_K" % kv] = hb("self_attn.k_proj.bias", nkv * dh).reshape(nkv, dh)
        t[b + "attn.%sb_V" % kv] = hb("self_attn.v_proj.bias", nkv * dh).reshape(nkv, dh)
        t[b + "attn.b_O"] = hb("self_attn.o_proj.bias", dm)
        if p + "self_attn.q_norm.weight" in hf:  # convert_qwen3_weights: the per-layer q/k norms, not folded
            t[b + "attn.q_norm.w"] = hf[p + "self_attn.q_norm.weight"]
            t[b + "attn.k_norm.w"] = hf[p + "self_attn.k_norm.weight"]
        t[b + "mlp.W_in"], t[b + "mlp.W_gate"], t[b + "mlp.W_out"] = w_in, w_gate, w_out
        # TransformerLens adds b_in after the gate's product, so it is not up_proj.bias; --b-in sets one anyway.
        t[b + "mlp.b_in"] = rng.normal(0, 0.1, w_in.shape[1]) if a.b_in else np.zeros(w_in.shape[1])
        t[b + "mlp.b_out"] = hb("mlp.down_proj.bias", dm)
    w_u = (hf["lm_head.weight"] if "lm_head.weight" in hf else hf["model.embed_tokens.weight"]).T
    b_u = np.zeros(w_u.shape[1])
    if a.processed:
        w_u = w_u * hf["model.norm.weight"][:, None]
        w_u = w_u - w_u.mean(-1, keepdims=True)  # centre_unembed: log-probabilities unchanged
    else:
        t["ln_final.w"] = hf["model.norm.weight"]
    t["unembed.W_U"], t["unembed.b_U"] = w_u, b_u
    cfg = {
        "d_model": dm, "n_heads": nh, "d_head": dh, "d_mlp": c["intermediate_size"], "n_layers": nl,
        "d_vocab": c["vocab_size"], "n_key_value_heads": nkv if gqa else None, "n_ctx": c["max_position_embeddings"],
        "eps": c["rms_norm_eps"], "rotary_base": c["rope_theta"], "rotary_dim": dh,
        "normalization_type": "RMSPre" if a.processed else "RMS", "rotary_adjacent_pairs": False,
        "positional_embedding_type": "rotary", "act_fn": "silu", "gated_mlp": True, "final_rms": True,
        "original_architecture": c["architectures"][0],
    }
    if c["model_type"] == "qwen3":
        cfg["use_qk_norm"] = True
    write_checkpoint(a.out_dir, t, {k: "F32" for k in t}, 0)
    json.dump(cfg, open(os.path.join(a.out_dir, "config.json"), "w"), indent=2)


# --- Hugging Face's forward pass, in float64 -------------------------------------------------------------------

def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


# logprobs --out FILE: where dump_log_softmax writes raw float64 instead of JSON on stdout.
RAW_OUT = ""


def dump_log_softmax(logits):
    """Writes log-softmax over the last axis of [positions, vocab] logits to stdout as JSON, or with --out as raw
    little-endian float64, position-major (JSON of every log-probability takes seconds at a 150k vocabulary)."""
    m = logits.max(-1, keepdims=True)
    lp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    if RAW_OUT:
        lp.astype("<f8").tofile(RAW_OUT)
    else:
        json.dump(lp.tolist(), sys.stdout)


def attend(q, k, v, cos, sin, mask):
    """Causal attention of heads [T, n*dh] as Hugging Face computes it: rotate-half RoPE on q and k, each kv head
    shared by n_heads / n_kv_heads query heads, softmax(q k^T / sqrt(dh) + mask) v; returns [T, n_heads*dh]."""
    T, nh, nkv, dh = q.shape[0], q.shape[1] // cos.shape[1], k.shape[1] // cos.shape[1], cos.shape[1]
    q, k, v = (x.reshape(T, n, dh).transpose(1, 0, 2) for x, n in ((q, nh), (k, nkv), (v, nkv)))
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    k, v = np.repeat(k, nh // nkv, axis=0), np.repeat(v, nh // nkv, axis=0)
    s = q @ k.transpose(0, 2, 1) / np.sqrt(dh) + mask
    s = np.exp(s - s.max(-1, keepdims=True))
    return ((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(T, nh * dh)


def logprobs(a):
    c = json.load(open(os.path.join(a.dir, "config.json")))
    t = read_checkpoint(a.dir)
    tokens = [int(x) for x in a.tokens.split(",")]
    dm, nh, nkv, nl = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    dh, eps, theta = c.get("head_dim", dm // nh), c["rms_norm_eps"], c["rope_theta"]
    T = len(tokens)
    inv_freq = 1.0 / theta ** (np.arange(0, dh, 2) / dh)
    rs = c.get("rope_scaling") or {}
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        inv_freq = inv_freq / rs["factor"]  # positions divided by the factor
    elif kind == "llama3":  # transformers' _compute_llama3_parameters
        f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
        wavelen = 2 * np.pi / inv_freq
        smooth = (old / wavelen - lo) / (hi - lo)
        smoothed = (1 - smooth) * inv_freq / f + smooth * inv_freq
        inv_freq = np.where(wavelen > old / lo, inv_freq / f, np.where(wavelen < old / hi, inv_freq, smoothed))
    ang = np.outer(np.arange(T), inv_freq)
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    x = t["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(nl):
        p = "model.layers.%d." % l
        h = rmsnorm(x, t[p + "input_layernorm.weight"], eps)
        lin = lambda x, k: x @ t[p + k + ".weight"].T + t.get(p + k + ".bias", 0.0)  # noqa: E731
        q, k = lin(h, "self_attn.q_proj"), lin(h, "self_attn.k_proj")
        if c["model_type"] == "qwen3":  # Qwen3Attention: q_norm, k_norm over head_dim, before RoPE
            q = rmsnorm(q.reshape(T, nh, dh), t[p + "self_attn.q_norm.weight"], eps).reshape(T, nh * dh)
            k = rmsnorm(k.reshape(T, nkv, dh), t[p + "self_attn.k_norm.weight"], eps).reshape(T, nkv * dh)
        x = x + lin(attend(q, k, lin(h, "self_attn.v_proj"), cos, sin, mask), "self_attn.o_proj")
        h = rmsnorm(x, t[p + "post_attention_layernorm.weight"], eps)
        g = lin(h, "mlp.gate_proj")
        x = x + lin((g / (1 + np.exp(-g))) * lin(h, "mlp.up_proj"), "mlp.down_proj")
    print_logprobs(x, t, eps)


def print_logprobs(x, t, eps):
    """The final norm and the output layer (the embedding when tied) on the residual stream x, written to stdout
    as JSON log-softmax rows."""
    h = rmsnorm(x, t["model.norm.weight"], eps)
    logits = h @ t.get("lm_head.weight", t["model.embed_tokens.weight"]).T
    dump_log_softmax(logits)


def add_shape_arguments(parser, dtypes=("F32", "F16", "BF16"), extra_shape=()):
    """The options every `make` command of the references takes: the shape (required integers), the seed and the
    stored dtype."""
    for k in ("d-model", "n-heads", "n-kv-heads", "d-ff", "n-layers", "vocab") + tuple(extra_shape):
        parser.add_argument("--" + k, type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dtype", default="F32", choices=list(dtypes))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-hf")
    m.add_argument("dir")
    add_shape_arguments(m)
    m.add_argument("--head-dim", type=int, default=0)
    m.add_argument("--tied", action="store_true")
    m.add_argument("--shard-bytes", type=int, default=0)
    m.add_argument("--rope-linear", type=float, default=0.0)
    m.add_argument("--rope-llama3", type=float, default=0.0)
    m.add_argument("--attention-bias", action="store_true")
    m.add_argument("--mlp-bias", action="store_true")
    m.add_argument("--family", default="llama", choices=["llama", "mistral", "qwen2", "qwen3"])
    tl = sub.add_parser("make-tl")
    tl.add_argument("hf_dir")
    tl.add_argument("out_dir")
    tl.add_argument("--processed", action="store_true")
    tl.add_argument("--b-in", action="store_true")
    lp = sub.add_parser("logprobs")
    lp.add_argument("dir")
    lp.add_argument("tokens")
    lp.add_argument("--out", default="")
    a = ap.parse_args()
    global RAW_OUT
    RAW_OUT = getattr(a, "out", "")
    {"make-hf": make_hf, "make-tl": make_tl, "logprobs": logprobs}[a.cmd](a)


if __name__ == "__main__":
    main()
