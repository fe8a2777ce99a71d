#!/usr/bin/env bash
# headfuse's speed and memory, side by side with baselines in one run (issue: convert at copy speed, in
# memory that does not grow with the model). Prints one table: the median wall time of each operation, its
# median ratio to its baseline over REPS runs, and its peak RSS as /usr/bin/time -v reports it.
#
#   bench/run.sh [BUILD_DIR]          env: REPS (5), SIZE (1.4g | 8g), BENCH_DIR (out/bench), KEEP (0),
#                                          ONLY (operations to run, e.g. "fuse_q4_k_m llama_q4_k_m"; default all)
#
# Baselines: a durable copy of the same input (`cp IN OUT && sync OUT`, since headfuse fsyncs what it
# publishes; for the safetensors import, a durable copy of the model.safetensors it reads), and for the lens fold
# one f64 GEMM of the fold's shape by the same BLAS (bench/gemm_baseline).
# Every output is removed before it is written again, for headfuse and cp alike. The page cache is warm.
# fuse --type q4_k_m is also compared with llama.cpp's llama_model_quantize (bench/llama_quantize, libllama from
# the judge) turning the same model's F32 fused file into Q4_K_M, both with the same 2 threads.
# Head surgery on the same model's F32 fused file (and, for pool-kv, on a multi-head model of the same shape):
# heads_prune removes a quarter of the heads of every layer (one query head of each kv group), heads_ablate all
# heads of layer 0 and two more, heads_pool_kv pools 16 key/value heads into 4, heads_transplant gives layer 0
# every head of layer 1 (the model is its own donor); each against the durable copy.
# BF16 checkpoints, as Hugging Face ships them: the same model exported as one BF16 model.safetensors, fused to F16,
# BF16 and Q8_0 (bf16_f16, bf16_bf16, bf16_q8_0), each against a durable copy of that file (copy_bf16). llama.cpp's
# own converter (convert_hf_to_gguf.py) is not run beside them: it imports transformers, which Debian does not
# package, and needs torch 2 (torch.float8_e4m3fn), where Debian has 1.13.
# st_header_100k: the time to refuse safetensors' attack payload of 100,000 tensors sharing one byte range
# (attacks/safetensors_abuse_attempt_3.py: a header of 8.2 MB), target under a second.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
hf="$build/headfuse"
gemm="$build/bench/gemm_baseline"
lq="$build/bench/llama_quantize"
reps=${REPS:-5}
size=${SIZE:-1.4g}
dir=${BENCH_DIR:-out/bench}
mkdir -p "$dir"
[ -x "$hf" ] && [ -x "$gemm" ] || { echo "bench: build first (make build)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

case "$size" in
  1.4g) n_layers=5 n_heads=16 n_kv=4 shape=(--d-model 2048 --d-head 128 --d-ff 5632 --n-layers 5 --vocab 32000) ;;
  8g)   n_layers=10 n_heads=32 n_kv=8 shape=(--d-model 4096 --d-head 128 --d-ff 11008 --n-layers 10 --vocab 32000) ;;
  *) echo "bench: SIZE is 1.4g or 8g" >&2; exit 1 ;;
esac
mha_shape=(--n-heads "$n_heads" --n-kv-heads "$n_heads" "${shape[@]}")  # heads pool-kv's input
shape=(--n-heads "$n_heads" --n-kv-heads "$n_kv" "${shape[@]}")
lens_shape=(--d-model 1024 --n-heads 8 --n-kv-heads 8 --d-head 128 --d-ff 1024 --n-layers 1 --vocab 32000 --donor-d-in 1024)

results="$dir/results.txt"
: > "$results"
only=" ${ONLY:-} "
# wanted NAME: true when ONLY runs NAME.
wanted() { [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]; }
# measure NAME CMD...: appends "NAME seconds peak_kib" to the results (unless ONLY leaves NAME out).
measure() {
  local name=$1; shift
  if [ "$name" != copy ] && [ "$name" != copy_bf16 ] && ! wanted "$name"; then return 0; fi
  /usr/bin/time -f "%e %M" -o "$dir/time.txt" "$@" >/dev/null
  echo "$name $(cat "$dir/time.txt")" >> "$results"
}

# Every measured command finds its inputs in the same state: in the page cache, read back from disk. On these
# virtual machines pages that a write has just put in the cache copy up to ten times slower, the first time,
# than pages read in from disk; without this the baseline would depend on which command wrote its input last.
warm() {
  for f in "$@"; do [ -f "$f" ] || continue; dd if="$f" iflag=nocache count=0 status=none; cat "$f" > /dev/null; done
}

ph="$dir/per-head.gguf"
echo "bench: models in $dir ($size, $reps runs)" >&2
[ -f "$ph" ] || "$hf" init -q -o "$ph" "${shape[@]}" --seed 1 >/dev/null
[ -f "$dir/lens.gguf" ] || ! wanted fuse_lens || "$hf" init -q -o "$dir/lens.gguf" "${lens_shape[@]}" --seed 1 >/dev/null
# llama.cpp's input: the same model fused to F32 (the default alignment, which llama.cpp's tools need).
f32_32="$dir/fused-f32.gguf"
# Also the input of heads prune, ablate and transplant.
if [ ! -f "$f32_32" ] && { { [ -x "$lq" ] && wanted llama_q4_k_m; } || wanted heads_prune || wanted heads_ablate ||
  wanted heads_transplant; }; then
  "$hf" fuse -q "$ph" -o "$f32_32"
fi
# heads pool-kv's input: a multi-head model of the same shape (a key/value head per query head), fused to F32.
mha="$dir/fused-mha-f32.gguf"
if wanted heads_pool_kv && [ ! -f "$mha" ]; then
  "$hf" init -q -o "$dir/per-head-mha.gguf" "${mha_shape[@]}" --seed 1 >/dev/null
  "$hf" fuse -q "$dir/per-head-mha.gguf" -o "$mha"
  rm -f "$dir/per-head-mha.gguf"
fi
# The heads the surgery benchmarks edit: a quarter of every layer's (head 0 of each kv group), and layer 0 whole.
quarter=$(for ((l = 0; l < n_layers; l++)); do for ((h = 0; h < n_heads; h += n_heads / n_kv)); do printf '%s:%s,' $l $h; done; done)
ablated=$(for ((h = 0; h < n_heads; h++)); do printf '0:%s,' $h; done)"1:3,$((n_layers - 1)):$((n_heads - 1))"
moved=$(for ((h = 0; h < n_heads; h++)); do printf '0:%s=1:%s,' $h $h; done)
# The same model as a Hugging Face checkpoint (one model.safetensors, rotate-half Q/K rows), for the import.
st="$dir/hf/model.safetensors"
[ -f "$st" ] || { ! wanted import && ! wanted copy_st; } || "$hf" export -q "$ph" -o "$dir/hf" --format hf --max-shard-size 100000000000 >/dev/null
# The same model as a BF16 Hugging Face checkpoint.
bf="$dir/hf-bf16/model.safetensors"
if [ ! -f "$bf" ] && { wanted bf16_f16 || wanted bf16_bf16 || wanted bf16_q8_0; }; then
  "$hf" fuse -q "$ph" -o "$dir/bf16.gguf" --type bf16 >/dev/null
  "$hf" export -q "$dir/bf16.gguf" -o "$dir/hf-bf16" --format hf --max-shard-size 100000000000 >/dev/null
  rm -f "$dir/bf16.gguf"
fi
attack="$dir/attack-100k.safetensors"
[ -f "$attack" ] || ! wanted st_header_100k || python3 - "$attack" <<'PY'
import json, sys
header = {f"weight_{i}": {"dtype": "F32", "shape": [200, 200], "data_offsets": [0, 160000]} for i in range(100000)}
b = json.dumps(header).encode()
open(sys.argv[1], "wb").write(len(b).to_bytes(8, "little") + b + bytes(len(b)))
PY

for rep in $(seq 1 "$reps"); do
  echo "bench: run $rep/$reps" >&2
  rm -f "$dir"/out-*.gguf; sync
  warm "$ph";                 measure copy sh -c 'cp "$1" "$2" && sync "$2"' copy "$ph" "$dir/out-copy.gguf"
  rm -f "$dir/out-copy.gguf"; measure init "$hf" init -q -o "$dir/out-init.gguf" "${shape[@]}" --seed 1
  rm -f "$dir/out-init.gguf"; warm "$ph"; measure fuse_f32 "$hf" fuse -q "$ph" -o "$dir/out-f32.gguf"
  for t in f16 bf16 q8_0 q4_0; do
    warm "$ph"; measure "fuse_$t" "$hf" fuse -q "$ph" -o "$dir/out-$t.gguf" --type "$t"; rm -f "$dir/out-$t.gguf"
  done
  warm "$dir/out-f32.gguf";   measure split "$hf" split -q "$dir/out-f32.gguf" -o "$dir/out-split.gguf"
  rm -f "$dir/out-split.gguf"; warm "$ph" "$dir/out-f32.gguf"; measure verify "$hf" verify -q "$ph" "$dir/out-f32.gguf"
  rm -f "$dir/out-f32.gguf"
  warm "$ph";                 measure fuse_q4_k_m "$hf" fuse -q --threads 2 "$ph" -o "$dir/out-q4km.gguf" --type q4_k_m
  rm -f "$dir/out-q4km.gguf"
  if [ -x "$lq" ]; then
    warm "$f32_32";           measure llama_q4_k_m "$lq" "$f32_32" "$dir/out-llama-q4km.gguf" 15 2
    rm -f "$dir/out-llama-q4km.gguf"
  fi
  measure gemm "$gemm" 32000 1024 1024
  warm "$dir/lens.gguf";      measure fuse_lens "$hf" fuse -q "$dir/lens.gguf" -o "$dir/out-lens.gguf"
  rm -f "$dir/out-lens.gguf"
  warm "$st";                 measure copy_st sh -c 'cp "$1" "$2" && sync "$2"' copy "$st" "$dir/out-copy.st"
  rm -f "$dir/out-copy.st"; warm "$st"; measure import "$hf" fuse -q "$dir/hf" -o "$dir/out-import.gguf"
  rm -f "$dir/out-import.gguf"
  if [ -f "$bf" ] && { wanted bf16_f16 || wanted bf16_bf16 || wanted bf16_q8_0; }; then
    warm "$bf";               measure copy_bf16 sh -c 'cp "$1" "$2" && sync "$2"' copy "$bf" "$dir/out-copy-bf16.st"
    rm -f "$dir/out-copy-bf16.st"
    for t in f16 bf16 q8_0; do
      warm "$bf"; measure "bf16_$t" "$hf" fuse -q "$dir/hf-bf16" -o "$dir/out-bf16-$t.gguf" --type "$t"
      rm -f "$dir/out-bf16-$t.gguf"
    done
  fi
  # Refused (exit 1) is the expected end.
  [ ! -f "$attack" ] || measure st_header_100k sh -c '"$1" fuse -q "$2" -o "$3" 2>/dev/null; [ $? = 1 ]' st "$hf" \
    "$attack" "$dir/out-attack.gguf"
  warm "$f32_32";             measure heads_prune "$hf" heads prune -q "$f32_32" -o "$dir/out-prune.gguf" --heads "${quarter%,}"
  rm -f "$dir/out-prune.gguf"; warm "$f32_32"
  measure heads_ablate "$hf" heads ablate -q "$f32_32" -o "$dir/out-ablate.gguf" --heads "$ablated"
  rm -f "$dir/out-ablate.gguf"; warm "$mha"
  measure heads_pool_kv "$hf" heads pool-kv -q "$mha" -o "$dir/out-pool.gguf" --kv-heads "$n_kv"
  rm -f "$dir/out-pool.gguf"; warm "$f32_32"
  measure heads_transplant "$hf" heads transplant -q "$f32_32" --from "$f32_32" -o "$dir/out-transplant.gguf" \
    --heads "${moved%,}"
  rm -f "$dir/out-transplant.gguf"
  # Every run's ratios are taken within the run, against that run's baseline.
  awk -v rep="$rep" '{t[$1] = $2} END {
      for (k in t) if (k != "copy" && k != "gemm" && k != "llama_q4_k_m" && k != "copy_st" && k != "copy_bf16" && k != "st_header_100k") print "ratio", rep, k, t[k] / (k == "fuse_lens" ? t["gemm"] : k == "import" ? t["copy_st"] : k ~ /^bf16_/ ? t["copy_bf16"] : t["copy"])
      if ("fuse_q4_k_m" in t && "llama_q4_k_m" in t) print "ratio", rep, "q4_k_m_vs_llama", t["fuse_q4_k_m"] / t["llama_q4_k_m"]
    }' <(awk -v rep="$rep" '$1 == "copy" {c++} c == rep' "$results") >> "$dir/ratios.txt.$$"
done
[ "${KEEP:-0}" = 1 ] || rm -f "$dir/time.txt"

echo
printf 'headfuse benchmark: %s per-head checkpoint (%s), %s runs, %s cores; medians\n' \
  "$(du -h --apparent-size "$ph" | cut -f1)" "$size" "$reps" "$(nproc)"
echo
awk -v ratios="$dir/ratios.txt.$$" '
function median(arr, n,    i, j, tmp) {
  for (i = 2; i <= n; i++) { tmp = arr[i]; for (j = i - 1; j >= 1 && arr[j] > tmp; j--) arr[j + 1] = arr[j]; arr[j + 1] = tmp }
  return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
}
{ n[$1]++; secs[$1, n[$1]] = $2; rss[$1, n[$1]] = $3 }
END {
  while ((getline line < ratios) > 0) { split(line, f, " "); m[f[3]]++; r[f[3], m[f[3]]] = f[4] }
  n_order = split("init fuse_f32 fuse_f16 fuse_bf16 fuse_q8_0 fuse_q4_0 fuse_q4_k_m split verify fuse_lens import bf16_f16 bf16_bf16 bf16_q8_0 heads_prune heads_ablate heads_pool_kv heads_transplant st_header_100k copy copy_st copy_bf16 gemm llama_q4_k_m", order, " ")
  target["init"] = 2.0; target["fuse_f32"] = 1.0; target["fuse_q8_0"] = 1.0; target["fuse_lens"] = 3.0
  target["fuse_q4_k_m"] = 1.0; target["import"] = 1.2
  target["bf16_f16"] = 1.0; target["bf16_bf16"] = 1.0; target["bf16_q8_0"] = 1.0
  printf "%-16s %9s  %-14s %7s %8s  %9s %8s\n", "operation", "median s", "baseline", "ratio", "target", "peak RSS", "target"
  for (i = 1; i <= n_order; i++) {
    k = order[i]; if (!(k in n)) continue
    delete a; for (j = 1; j <= n[k]; j++) a[j] = secs[k, j]; s = median(a, n[k])
    delete a; for (j = 1; j <= n[k]; j++) a[j] = rss[k, j]; peak = 0; for (j = 1; j <= n[k]; j++) if (a[j] > peak) peak = a[j]
    base = (k == "fuse_lens") ? "1 f64 GEMM" : (k == "import") ? "copy of .st" : (k ~ /^bf16_/) ? "copy of bf16" : (k == "copy" || k == "copy_st" || k == "copy_bf16" || k == "gemm" || k == "llama_q4_k_m" || k == "st_header_100k") ? "-" : "durable copy"
    ratio = "-"; if (k in m) { delete a; for (j = 1; j <= m[k]; j++) a[j] = r[k, j]; ratio = sprintf("%.2f", median(a, m[k])) }
    tgt = (k in target) ? sprintf("<= %.1f", target[k]) : "-"
    rtgt = (k == "copy" || k == "copy_st" || k == "copy_bf16" || k == "gemm" || k == "llama_q4_k_m") ? "-" : "<= 256"
    verdict = ""
    if (k == "st_header_100k") { tgt = "< 1 s"; if (s >= 1) verdict = verdict " SLOW" }
    if (k in target && ratio != "-" && ratio + 0 > target[k]) verdict = verdict " SLOW"
    if (rtgt != "-" && peak / 1024 > 256) verdict = verdict " RSS"
    printf "%-16s %9.2f  %-14s %7s %8s  %6.0f MiB %8s%s\n", k, s, base, ratio, tgt, peak / 1024, rtgt, verdict
  }
  if ("q4_k_m_vs_llama" in m) {
    delete a; for (j = 1; j <= m["q4_k_m_vs_llama"]; j++) a[j] = r["q4_k_m_vs_llama", j]
    v = median(a, m["q4_k_m_vs_llama"])
    slow = (v > 1 / 3) ? " SLOW" : ""
    printf "\nfuse_q4_k_m / llama_model_quantize (same model, F32 fused input, 2 threads): %.2f (target <= 0.33)%s\n", v, slow
  }
}' "$results"
rm -f "$dir/ratios.txt.$$"
