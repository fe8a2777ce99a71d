#!/usr/bin/env bash
# The main job on an embedded default model: initialise a per-head checkpoint, fuse it for llama.cpp
# (F32 and Q8_0), realize it back, verify every tensor and the logits, split it again, and ask llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
hf="$build/headfuse"
out=out/demo
mkdir -p "$out"
tokens=1,7,42,300,1000,2047,4000,12

echo "== 1. a per-head checkpoint: d_model 256, 8 query heads sharing 2 kv heads of 32, 4 layers, vocab 4096"
"$hf" init -o "$out/per-head.gguf" --d-model 256 --n-heads 8 --n-kv-heads 2 --d-head 32 --d-ff 704 \
  --n-layers 4 --vocab 4096 --seed 7
echo
echo "== 2. fuse it for llama.cpp, as F32 and as Q8_0"
"$hf" fuse "$out/per-head.gguf" -o "$out/fused-f32.gguf"
"$hf" fuse "$out/per-head.gguf" -o "$out/fused-q8_0.gguf" --type q8_0
"$hf" inspect "$out/fused-f32.gguf" | sed -n '1,2p'
echo
echo "== 3. realize the fused file as per-head views and verify every tensor and the logits"
"$hf" verify "$out/per-head.gguf" "$out/fused-f32.gguf" --tokens "$tokens"
"$hf" verify "$out/per-head.gguf" "$out/fused-q8_0.gguf" --tokens "$tokens"
echo
echo "== 4. split the fused file back into a per-head checkpoint"
"$hf" split "$out/fused-f32.gguf" -o "$out/per-head-again.gguf"
"$hf" verify "$out/per-head-again.gguf" "$out/fused-f32.gguf" --tokens "$tokens" | tail -n 1
echo
echo "== 5. llama.cpp (node-llama-cpp) on the same files"
for t in f32 q8_0; do
  "$hf" logits "$out/fused-$t.gguf" --tokens "$tokens" -o "$out/logits-$t.f32" >/dev/null
  printf '%-5s ' "$t:"
  node judge/compare.mjs "$out/fused-$t.gguf" "$out/logits-$t.f32" "$tokens"
done
echo
echo "demo: done. Files are in $out/; try: $hf logits $out/fused-f32.gguf --tokens 1,2,3"
