#!/bin/sh
# Rebuilds the seed corpus (fuzz/corpus/<target>/) with a headfuse CLI: small valid per-head and fused
# files (F32, F16, Q8_0, Q4_0; tied, untied, a lens; MHA, GQA) and a few broken ones.
#   fuzz/make_corpus.sh path/to/headfuse
# Reproducers of fixed findings live beside the seeds as crash-*/timeout-*/oom-* files: keep them.
set -eu
H=${1:?usage: make_corpus.sh path/to/headfuse}
C=$(cd "$(dirname "$0")" && pwd)/corpus
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cd "$W"

$H init -q -o ph_f32_tiny.gguf --d-model 8 --n-heads 2 --n-kv-heads 1 --d-ff 8 --n-layers 1 --vocab 12 --seed 1
$H init -q -o ph_f32_tied.gguf --d-model 8 --n-heads 2 --d-head 6 --d-ff 12 --n-layers 2 --vocab 10 --tied --seed 2
$H init -q -o ph_f32_lens.gguf --d-model 8 --n-heads 2 --n-kv-heads 1 --d-ff 8 --n-layers 1 --vocab 12 --donor-d-in 4 --seed 3
$H init -q -o ph_f32_32.gguf --d-model 32 --n-heads 2 --n-kv-heads 1 --d-ff 32 --n-layers 1 --vocab 16 --seed 4
$H fuse -q ph_f32_tiny.gguf -o fu_f32_tiny.gguf
$H fuse -q ph_f32_tied.gguf -o fu_f32_tied.gguf
$H fuse -q ph_f32_lens.gguf -o fu_f32_lens.gguf
$H fuse -q ph_f32_32.gguf -o fu_q8_0.gguf --type q8_0
$H fuse -q ph_f32_32.gguf -o fu_q4_0.gguf --type q4_0
$H fuse -q ph_f32_32.gguf -o fu_f16.gguf --type f16
$H split -q fu_q8_0.gguf -o ph_q8_0.gguf
$H split -q fu_f32_tied.gguf -o ph_split_tied.gguf

# Broken files: each a different early exit of the reader or the realize step.
python3 - <<'PY'
import struct
def s(x): b = x.encode(); return struct.pack('<Q', len(b)) + b
def kv_u32(k, v): return s(k) + struct.pack('<II', 4, v)
def kv_f32(k, v): return s(k) + struct.pack('<If', 6, v)
def kv_str(k, v): return s(k) + struct.pack('<I', 8) + s(v)
tiny = open('fu_f32_tiny.gguf', 'rb').read()
open('broken_empty.gguf', 'wb').write(b'')
open('broken_magic.gguf', 'wb').write(b'GGML' + tiny[4:])
open('broken_version1.gguf', 'wb').write(tiny[:4] + struct.pack('<I', 1) + tiny[8:])
open('broken_truncated.gguf', 'wb').write(tiny[:len(tiny) // 2])
open('broken_huge_counts.gguf', 'wb').write(b'GGUF' + struct.pack('<IQQ', 3, 2**63, 2**63))
# Metadata alone: the llama.* keys of a model, no tensors (the config target's favourite).
kvs = [kv_str('general.architecture', 'llama'), kv_u32('llama.context_length', 256),
       kv_u32('llama.embedding_length', 64), kv_u32('llama.block_count', 2),
       kv_u32('llama.feed_forward_length', 128), kv_u32('llama.attention.head_count', 4),
       kv_u32('llama.attention.head_count_kv', 2), kv_u32('llama.attention.key_length', 16),
       kv_u32('llama.rope.dimension_count', 16), kv_f32('llama.attention.layer_norm_rms_epsilon', 1e-5),
       kv_u32('general.alignment', 64),
       s('tokenizer.ggml.scores') + struct.pack('<IIQ', 9, 6, 2) + struct.pack('<ff', 0.5, -1.0)]
open('meta_only.gguf', 'wb').write(b'GGUF' + struct.pack('<IQQ', 3, 0, len(kvs)) + b''.join(kvs))
PY

# safetensors: small valid files (each dtype, a scalar, an empty tensor, metadata) and broken ones.
python3 - <<'PY'
import json, struct
def st(entries, data, meta=None, pad=True, raw=None):
    h = {}
    if meta is not None: h['__metadata__'] = meta
    h.update(entries)
    text = raw if raw is not None else json.dumps(h, separators=(',', ':')).encode()
    if pad: text += b' ' * ((8 - len(text) % 8) % 8)
    return struct.pack('<Q', len(text)) + text + data
def ent(dtype, shape, b, e): return {'dtype': dtype, 'shape': shape, 'data_offsets': [b, e]}
f32 = struct.pack('<6f', 1, -2, 3.5, 0, 1e-3, 7)
valid = {
  'st_f32': st({'w': ent('F32', [2, 3], 0, 24)}, f32, {'format': 'pt'}),
  'st_mixed': st({'a': ent('F16', [4], 0, 8), 'b': ent('BF16', [2, 2], 8, 16), 'c': ent('F32', [], 16, 20),
                  'z': ent('F32', [0, 5], 20, 20)}, bytes(range(20))),
  'st_hf_names': st({'model.embed_tokens.weight': ent('F32', [3, 2], 0, 24),
                     'model.norm.weight': ent('F32', [2], 24, 32)}, f32 + f32[:8], {'format': 'pt'}),
  'st_empty': st({}, b''),
  # many entries (reading them was quadratic in their number)
  'st_1500_tensors': st({f't{i}': ent('U8', [1], i, i + 1) for i in range(1500)}, bytes(1500)),
}
broken = {
  'broken_short': b'\x05\x00',
  'broken_len_huge': struct.pack('<Q', 2**63) + b'{}',
  'broken_len_past_end': struct.pack('<Q', 64) + b'{}',
  'broken_not_object': st({}, b'', raw=b'[1,2]'),
  'broken_dtype_f7': st({'w': ent('F7', [3], 0, 24)}, f32),
  'broken_len_mismatch': st({'w': ent('F32', [5], 0, 24)}, f32),
  'broken_gap': st({'w': ent('F32', [5], 4, 24)}, f32),
  'broken_overlap': st({'a': ent('F32', [3], 0, 12), 'b': ent('F32', [3], 8, 20)}, f32[:20]),
  'broken_trailing': st({'w': ent('F32', [5], 0, 20)}, f32),
  'broken_overflow': st({'w': ent('F32', [2**62, 8], 0, 24)}, f32),
  'broken_duplicate': st({}, f32, raw=b'{"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},'
                                     b'"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}'),
  'broken_negative': st({'w': ent('F32', [-6], 0, 24)}, f32),
  'broken_deep': st({}, b'', raw=b'{"w":{"shape":[[[[1]]]]}}'),
}
for k, v in list(valid.items()) + list(broken.items()):
    open(k + '.safetensors', 'wb').write(v)
PY

put() {  # put TARGET FILE...
    mkdir -p "$C/$1"
    t=$1
    shift
    for f in "$@"; do cp "$f" "$C/$t/seed-$f"; done
}
broken="broken_empty.gguf broken_magic.gguf broken_version1.gguf broken_truncated.gguf broken_huge_counts.gguf"
put gguf *.gguf
put config fu_f32_tiny.gguf ph_f32_tied.gguf ph_f32_lens.gguf fu_q8_0.gguf meta_only.gguf $broken
put per_head ph_*.gguf fu_f32_tiny.gguf $broken
put fused fu_*.gguf ph_f32_tiny.gguf $broken
put safetensors st_*.safetensors broken_*.safetensors
# tokenizer: a fused file's tokenizer keys; its tokenizer.json seeds (seed-tk_*.json, seed-broken_*.json) are
# small hand-made files kept in the corpus itself (seed-tk_long_piece.json: seed-tk_spm.json with pieces of 30,000
# and 15,000 bytes, which the conversion once handled in time quadratic in a piece's length).
cp fu_f32_tiny.gguf tk_fused.gguf
put tokenizer tk_fused.gguf
# sp_model: its seeds (seed-sp_*.model: one SentencePiece trained with tests/support/sp_reference.py, one written
# by hand; seed-broken_*.model) are kept in the corpus itself.
du -sh "$C"
