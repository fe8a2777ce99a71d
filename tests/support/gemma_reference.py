#!/usr/bin/python3
"""An independent reference for headfuse's Gemma family, written for the tests with numpy alone, from the published
architecture (Hugging Face's modeling_gemma.py, modeling_gemma2.py, modeling_gemma3.py), not from headfuse.

It makes random Gemma, Gemma 2 and Gemma 3 checkpoints in Hugging Face's layout (safetensors written by
hf_reference.py's few lines), optionally as a Gemma3ForConditionalGeneration with a vision tower, and computes
next-token log-probabilities in Hugging Face's convention, in float64:
  - GemmaRMSNorm multiplies by (1 + w); the embedding is multiplied by sqrt(hidden_size);
  - rotate-half RoPE (Gemma 3: local layers with rope_local_base_freq, global ones with rope_theta and the linear
    rope_scaling); Gemma 3 RMS-norms each query and key head (1 + w) before RoPE;
  - scores scaled by query_pre_attn_scalar^-0.5, soft-capped (Gemma 2: tanh(s / c) * c), masked causally and,
    on sliding layers, to keys j with i - j < sliding_window (Gemma 2: even layers; Gemma 3: all but every 6th);
  - Gemma 2/3 norm attention's and the MLP's outputs (post_attention_layernorm, post_feedforward_layernorm),
    the MLP's input with pre_feedforward_layernorm; Gemma 1's MLP input norm is post_attention_layernorm;
  - the gate is gelu_pytorch_tanh; with --ggml-gelu it is evaluated as ggml-cpu's table is (input rounded to f16,
    the f32 formula, the result rounded to f16; x <= -10 gives 0, x >= 10 gives x);
  - logits from the tied embedding, final soft-cap tanh(l / c) * c when set.

  gemma_reference.py make DIR --family gemma|gemma2|gemma3 --d-model 64 --n-heads 4 --n-kv-heads 2 --head-dim 32
                     --d-ff 128 --n-layers 2 --vocab 300 [--window 8] [--attn-softcap C] [--final-softcap C]
                     [--rope-linear F] [--seed 1] [--dtype F32|BF16] [--multimodal old|new]
  gemma_reference.py make-tl HF_DIR OUT_DIR [--tl-preset-windows]   TransformerLens state dict of an F32 Gemma,
                     Gemma 2 or Gemma 3 folder, as convert_gemma_weights makes it (--tl-preset-windows: attn_types as
                     TransformerLens's own Gemma 2 presets list them, ["global", "local"] * n)
  gemma_reference.py logprobs DIR TOKENS_CSV [--ggml-gelu]   JSON [[log p(t) for t in vocab] per position]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_reference import add_shape_arguments, dump_log_softmax, read_checkpoint, rotate_half, write_checkpoint  # noqa: E402

ARCHS = {"gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}
# Gemma3ForConditionalGeneration's language model prefix: older transformers, newer transformers.
PREFIXES = {"old": "language_model.model.", "new": "model.language_model."}


def make(a):
    rng = np.random.default_rng(a.seed)
    dm, nh, nkv, dh, ff, nl, vocab = a.d_model, a.n_heads, a.n_kv_heads, a.head_dim, a.d_ff, a.n_layers, a.vocab
    w = lambda *shape: rng.uniform(-2.0, 2.0, shape) / np.sqrt(shape[-1])  # noqa: E731 (sharp attention)
    norm = lambda n=dm: rng.uniform(-0.5, 0.5, n)  # noqa: E731 (w of 1 + w)
    g2, g3 = a.family == "gemma2", a.family == "gemma3"
    t = {"model.embed_tokens.weight": rng.uniform(-1.0, 1.0, (vocab, dm))}
    for l in range(nl):
        p = "model.layers.%d." % l
        t[p + "input_layernorm.weight"] = norm()
        t[p + "self_attn.q_proj.weight"] = w(nh * dh, dm)
        t[p + "self_attn.k_proj.weight"] = w(nkv * dh, dm)
        t[p + "self_attn.v_proj.weight"] = w(nkv * dh, dm)
        t[p + "self_attn.o_proj.weight"] = w(dm, nh * dh)
        if g3:
            t[p + "self_attn.q_norm.weight"] = norm(dh)
            t[p + "self_attn.k_norm.weight"] = norm(dh)
        t[p + "post_attention_layernorm.weight"] = norm()
        if g2 or g3:
            t[p + "pre_feedforward_layernorm.weight"] = norm()
            t[p + "post_feedforward_layernorm.weight"] = norm()
        t[p + "mlp.gate_proj.weight"] = w(ff, dm)
        t[p + "mlp.up_proj.weight"] = w(ff, dm)
        t[p + "mlp.down_proj.weight"] = w(dm, ff)
    t["model.norm.weight"] = norm()
    config = {
        "architectures": [ARCHS[a.family]], "model_type": "gemma3_text" if g3 else a.family, "hidden_size": dm,
        "num_attention_heads": nh, "num_key_value_heads": nkv, "head_dim": dh, "intermediate_size": ff,
        "num_hidden_layers": nl, "vocab_size": vocab, "rms_norm_eps": 1e-6, "max_position_embeddings": 512,
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
        "rope_theta": 1000000.0 if g3 else 10000.0,
        "torch_dtype": {"F32": "float32", "BF16": "bfloat16"}[a.dtype],
    }
    if g2 or g3:
        config["query_pre_attn_scalar"] = dh
        config["sliding_window"] = a.window
    if g2:
        config["attn_logit_softcapping"] = a.attn_softcap
        config["final_logit_softcapping"] = a.final_softcap
    if g3:
        config["rope_local_base_freq"] = 10000.0
        config["sliding_window_pattern"] = 6
        config["final_logit_softcapping"] = a.final_softcap or None
        if a.rope_linear:
            config["rope_scaling"] = {"rope_type": "linear", "factor": a.rope_linear}
    if a.multimodal:
        prefix = PREFIXES[a.multimodal]
        t = {prefix + k[len("model."):]: v for k, v in t.items()}
        vision = "model.vision_tower." if a.multimodal == "new" else "vision_tower."
        proj = "model.multi_modal_projector." if a.multimodal == "new" else "multi_modal_projector."
        t[vision + "vision_model.embeddings.patch_embedding.weight"] = w(8, 12)
        t[vision + "vision_model.post_layernorm.weight"] = norm(8)
        t[proj + "mm_input_projection_weight"] = w(8, dm)
        t[proj + "mm_soft_emb_norm.weight"] = norm(8)
        config = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
                  "text_config": config, "vision_config": {"model_type": "siglip_vision_model"}}
    write_checkpoint(a.dir, t, {k: a.dtype for k in t}, 0)
    json.dump(config, open(os.path.join(a.dir, "config.json"), "w"), indent=2)


def make_tl(a):
    """TransformerLens's Gemma conversion (pretrained/weight_conversions/gemma.py, convert_gemma_weights) of an F32
    checkpoint, with the config of its Gemma presets (loading_from_pretrained.py): embed.W_E is the embedding times
    torch.tensor(d_model**0.5, dtype=float32), product in float32; every norm is w.float() + 1 in float32 (ln1, ln2 =
    Gemma 1's post_attention_layernorm or Gemma 2's pre_feedforward_layernorm, ln1_post, ln2_post, ln_final);
    W_Q "(n h) m -> n m h", _W_K and _W_V always (its Gemma configs set n_key_value_heads), W_O "m (n h) -> n h m",
    zero biases; unembed.W_U the tied lm_head transposed. Gemma 3 (cfg.use_qk_norm) adds attn.q_norm.w and
    attn.k_norm.w, q_norm.weight.float() + 1 in float32, and its presets' keys: rotary_base (the global layers'),
    rotary_base_local, rotary_scaling_factor (the linear factor of the global layers), window_size and attn_types
    (five "local" then one "global", repeated), use_qk_norm."""
    c = json.load(open(os.path.join(a.hf_dir, "config.json")))
    hf = read_checkpoint(a.hf_dir)
    dm, nh, nkv, nl = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    dh, g3 = c["head_dim"], c["model_type"] == "gemma3_text"
    g2 = c["model_type"] == "gemma2" or g3  # post norms: Gemma 2 and 3 (use_normalization_before_and_after)
    if c["model_type"] not in ("gemma", "gemma2", "gemma3_text") or c["torch_dtype"] != "float32":
        sys.exit("make-tl: an F32 Gemma, Gemma 2 or Gemma 3 folder")
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    plus1 = lambda w: f32(w) + np.float32(1.0)  # noqa: E731
    t = {"embed.W_E": f32(hf["model.embed_tokens.weight"]) * np.float32(dm ** 0.5)}
    for l in range(nl):
        p, b = "model.layers.%d." % l, "blocks.%d." % l
        t[b + "ln1.w"] = plus1(hf[p + "input_layernorm.weight"])
        if g2:
            t[b + "ln1_post.w"] = plus1(hf[p + "post_attention_layernorm.weight"])
            t[b + "ln2.w"] = plus1(hf[p + "pre_feedforward_layernorm.weight"])
            t[b + "ln2_post.w"] = plus1(hf[p + "post_feedforward_layernorm.weight"])
        else:
            t[b + "ln2.w"] = plus1(hf[p + "post_attention_layernorm.weight"])
        t[b + "attn.W_Q"] = hf[p + "self_attn.q_proj.weight"].reshape(nh, dh, dm).transpose(0, 2, 1)
        t[b + "attn._W_K"] = hf[p + "self_attn.k_proj.weight"].reshape(nkv, dh, dm).transpose(0, 2, 1)
        t[b + "attn._W_V"] = hf[p + "self_attn.v_proj.weight"].reshape(nkv, dh, dm).transpose(0, 2, 1)
        if g3:
            t[b + "attn.q_norm.w"] = plus1(hf[p + "self_attn.q_norm.weight"])
            t[b + "attn.k_norm.w"] = plus1(hf[p + "self_attn.k_norm.weight"])
        t[b + "attn.W_O"] = hf[p + "self_attn.o_proj.weight"].reshape(dm, nh, dh).transpose(1, 2, 0)
        t[b + "attn.b_Q"], t[b + "attn._b_K"], t[b + "attn._b_V"] = np.zeros((nh, dh)), np.zeros((nkv, dh)), np.zeros((nkv, dh))
        t[b + "attn.b_O"] = np.zeros(dm)
        t[b + "mlp.W_in"], t[b + "mlp.W_gate"] = hf[p + "mlp.up_proj.weight"].T, hf[p + "mlp.gate_proj.weight"].T
        t[b + "mlp.b_in"], t[b + "mlp.W_out"] = np.zeros(c["intermediate_size"]), hf[p + "mlp.down_proj.weight"].T
        t[b + "mlp.b_out"] = np.zeros(dm)
    t["ln_final.w"] = plus1(hf["model.norm.weight"])
    t["unembed.W_U"], t["unembed.b_U"] = hf["model.embed_tokens.weight"].T, np.zeros(c["vocab_size"])
    cfg = {
        "d_model": dm, "d_head": dh, "n_heads": nh, "d_mlp": c["intermediate_size"], "n_layers": nl,
        "n_ctx": c["max_position_embeddings"], "eps": c["rms_norm_eps"], "d_vocab": c["vocab_size"],
        "act_fn": "gelu_pytorch_tanh", "normalization_type": "RMS", "rotary_base": c["rope_theta"],
        "rotary_dim": dh, "positional_embedding_type": "rotary", "use_attn_scale": True,
        "n_key_value_heads": nkv, "gated_mlp": True, "final_rms": True, "original_architecture": c["architectures"][0],
    }
    if g3:
        rs = c.get("rope_scaling") or {}
        cfg.update({"window_size": c["sliding_window"], "use_local_attn": True,
                    "attn_types": [("global" if l % 6 == 5 else "local") for l in range(nl)],
                    "rotary_base_local": c["rope_local_base_freq"], "use_qk_norm": True,
                    "use_normalization_before_and_after": True, "attn_scale": c["query_pre_attn_scalar"] ** 0.5})
        if rs.get("rope_type") == "linear":
            cfg["rotary_scaling_factor"] = rs["factor"]
        if c.get("final_logit_softcapping"):
            cfg["output_logits_soft_cap"] = c["final_logit_softcapping"]
    elif g2:
        order = ["global", "local"] if a.tl_preset_windows else ["local", "global"]  # Gemma2: sliding on even layers
        cfg.update({"window_size": c["sliding_window"], "use_local_attn": True, "attn_types": (order * nl)[:nl],
                    "attn_scores_soft_cap": c["attn_logit_softcapping"],
                    "output_logits_soft_cap": c["final_logit_softcapping"],
                    "use_normalization_before_and_after": True, "attn_scale": c["query_pre_attn_scalar"] ** 0.5})
    write_checkpoint(a.out_dir, t, {k: "F32" for k in t}, 0)
    json.dump(cfg, open(os.path.join(a.out_dir, "config.json"), "w"), indent=2)


def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * (1.0 + w)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def gelu_ggml(x):
    """ggml-cpu's GELU: f16(gelu_f32(f16(x))) from its table; x <= -10 gives 0, x >= 10 passes x."""
    h = x.astype(np.float16).astype(np.float32)
    c = np.float32(0.79788456080286535587989211986876)
    g = np.float32(0.5) * h * (np.float32(1.0) + np.tanh(c * h * (np.float32(1.0) + np.float32(0.044715) * h * h)))
    out = g.astype(np.float16).astype(np.float64)
    return np.where(x <= -10.0, 0.0, np.where(x >= 10.0, x, out))


def logprobs(a):
    c = json.load(open(os.path.join(a.dir, "config.json")))
    t = read_checkpoint(a.dir)
    if "text_config" in c:
        c = c["text_config"]
        for prefix in PREFIXES.values():
            t = {("model." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in t.items()}
    family = {"gemma": "gemma", "gemma2": "gemma2", "gemma3_text": "gemma3"}[c["model_type"]]
    g2, g3 = family == "gemma2", family == "gemma3"
    tokens = [int(x) for x in a.tokens.split(",")]
    dm, nh, nkv, nl = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["num_hidden_layers"]
    dh, eps, T = c["head_dim"], c["rms_norm_eps"], len(tokens)
    scale = c.get("query_pre_attn_scalar", dh) ** -0.5
    window = c.get("sliding_window") if (g2 or g3) else None
    gelu = gelu_ggml if a.ggml_gelu else gelu_tanh

    def rope_tables(theta, factor):
        inv_freq = 1.0 / theta ** (np.arange(0, dh, 2) / dh) / factor
        ang = np.outer(np.arange(T), inv_freq)
        return np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))

    rs = c.get("rope_scaling") or {}
    global_rope = rope_tables(c["rope_theta"], rs.get("factor", 1.0) if rs.get("rope_type") == "linear" else 1.0)
    local_rope = rope_tables(c.get("rope_local_base_freq", 10000.0), 1.0) if g3 else global_rope
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    causal = np.where(j <= i, 0.0, -np.inf)
    sliding_mask = np.where((j <= i) & (i - j < (window or T + 1)), 0.0, -np.inf)
    x = t["model.embed_tokens.weight"][tokens] * np.sqrt(dm)
    for l in range(nl):
        p = "model.layers.%d." % l
        sliding = (g2 and l % 2 == 0) or (g3 and (l + 1) % 6 != 0)
        lin = lambda x, k: x @ t[p + k + ".weight"].T  # noqa: E731
        h = rmsnorm(x, t[p + "input_layernorm.weight"], eps)
        q = lin(h, "self_attn.q_proj").reshape(T, nh, dh).transpose(1, 0, 2)
        k = lin(h, "self_attn.k_proj").reshape(T, nkv, dh).transpose(1, 0, 2)
        v = lin(h, "self_attn.v_proj").reshape(T, nkv, dh).transpose(1, 0, 2)
        if g3:
            q, k = rmsnorm(q, t[p + "self_attn.q_norm.weight"], eps), rmsnorm(k, t[p + "self_attn.k_norm.weight"], eps)
        cos, sin = local_rope if sliding else global_rope
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, nh // nkv, axis=0), np.repeat(v, nh // nkv, axis=0)
        s = q @ k.transpose(0, 2, 1) * scale
        if g2:
            cap = c["attn_logit_softcapping"]
            s = np.tanh(s / cap) * cap
        s = s + (sliding_mask if sliding and window else causal)
        s = np.exp(s - s.max(-1, keepdims=True))
        o = lin(((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(T, nh * dh), "self_attn.o_proj")
        if g2 or g3:
            o = rmsnorm(o, t[p + "post_attention_layernorm.weight"], eps)
        x = x + o
        h = rmsnorm(x, t[p + ("pre_feedforward_layernorm.weight" if g2 or g3 else "post_attention_layernorm.weight")],
                    eps)
        m = lin(gelu(lin(h, "mlp.gate_proj")) * lin(h, "mlp.up_proj"), "mlp.down_proj")
        if g2 or g3:
            m = rmsnorm(m, t[p + "post_feedforward_layernorm.weight"], eps)
        x = x + m
    h = rmsnorm(x, t["model.norm.weight"], eps)
    logits = h @ t["model.embed_tokens.weight"].T
    if c.get("final_logit_softcapping"):
        cap = c["final_logit_softcapping"]
        logits = np.tanh(logits / cap) * cap
    dump_log_softmax(logits)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--family", required=True, choices=sorted(ARCHS))
    add_shape_arguments(m, dtypes=("F32", "BF16"), extra_shape=("head-dim",))
    m.add_argument("--window", type=int, default=4096)
    m.add_argument("--attn-softcap", type=float, default=50.0)
    m.add_argument("--final-softcap", type=float, default=0.0)
    m.add_argument("--rope-linear", type=float, default=0.0)
    m.add_argument("--multimodal", choices=sorted(PREFIXES))
    tl = sub.add_parser("make-tl")
    tl.add_argument("hf_dir")
    tl.add_argument("out_dir")
    tl.add_argument("--tl-preset-windows", action="store_true")
    lp = sub.add_parser("logprobs")
    lp.add_argument("dir")
    lp.add_argument("tokens")
    lp.add_argument("--ggml-gelu", action="store_true")
    a = ap.parse_args()
    {"make": make, "make-tl": make_tl, "logprobs": logprobs}[a.cmd](a)


if __name__ == "__main__":
    main()
