#!/usr/bin/env bash
# heads scan's speed, memory and agreement (docs/SURGERY.md, "Which method"):
#
#   bench/scan.sh [BUILD_DIR]     env: SCAN_DIR (/tmp/headfuse-scan), TOKENS (64), REFINE (64),
#                                      ONLY ("7b agreement families"; default all three)
#
# 7b: a 7B-shaped model (32 layers, 32 heads, 8 kv heads, d_model 4096, d_ff 11008, vocab 32000), made once with
#     `init` and `fuse --type q8_0` in SCAN_DIR (about 7.2 GB; the 27 GB per-head F32 file is removed after), scanned
#     over TOKENS tokens with --method attribution and with --method attribution --refine REFINE: wall time, CPU time
#     and peak RSS
#     (/usr/bin/time), against the model's mapped size. The exact method's time is estimated from the refined heads'
#     exact ablations (their share of the layer passes an exact scan runs), an upper bound: an exact scan batches all
#     32 heads of a layer where refine batches the few it picked there.
# agreement: a model of the issue's example (d_model 1024, 16 heads, 8 layers, d_ff 2816, vocab 32000, Q8_0),
#     scanned by the exact and the attribution method with zero and with mean ablation: Spearman's rank correlation
#     of estimate and exact delta over every head, the overlap of their top 10 by |delta|, and the times.
# families: the same agreement on a small model of each other family (d_model 256, 8 heads, 4 kv heads but phi3's 8,
#     4 layers, vocab 1000; qwen2, qwen3 and phi3 from `init`, gemma, gemma2 and gemma3 from the numpy reference's
#     Hugging Face checkpoints, tests/support/gemma_reference.py, window 16, Gemma 2 with soft-caps 50 and 30).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
hf="$(realpath "$build/headfuse")"
dir=${SCAN_DIR:-/tmp/headfuse-scan}
n_tok=${TOKENS:-64}
refine=${REFINE:-64}
only=" ${ONLY:-7b agreement families} "
mkdir -p "$dir"
[ -x "$hf" ] || { echo "bench/scan.sh: build first (make build)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench/scan.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }

python3 -c "print(' '.join(str((i * 389 + 11) % 32000) for i in range($n_tok)))" > "$dir/tokens.txt"

# timed NAME CMD...: runs CMD, prints "NAME: S s wall, C s of CPU (user + system), peak RSS M MiB". On a shared
# machine the CPU time says more than the wall time: divided by the cores, it is the wall time the scan would take
# with the machine to itself.
timed() {
  local name=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$dir/time.txt" "$@" > /dev/null
  read -r secs user sys kib < "$dir/time.txt"
  local cpu
  cpu=$(python3 -c "print(f'{$user + $sys:.1f}')")
  echo "$name: $secs s wall, $cpu s of CPU, peak RSS $((kib / 1024)) MiB"
  echo "$secs" > "$dir/$name.secs"
  echo "$cpu" > "$dir/$name.cpu"
}

# compare EXACT.json ESTIMATE.json: Spearman's rho over the heads both have exactly/estimated, top-10 overlap.
compare() {
  python3 - "$1" "$2" <<'EOF'
import json, sys
ex = {(h["layer"], h["head"]): h["delta"] for h in json.load(open(sys.argv[1]))["heads"] if h["exact"]}
est = {(h["layer"], h["head"]): h["delta"] for h in json.load(open(sys.argv[2]))["heads"] if not h["exact"]}
keys = sorted(set(ex) & set(est))
def ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(v):  # ties share their mean rank
        j = i
        while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2
        i = j + 1
    return r
a, b = ranks([ex[k] for k in keys]), ranks([est[k] for k in keys])
n = len(keys)
ma, mb = sum(a) / n, sum(b) / n
cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
rho = cov / (sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b)) ** 0.5
top = lambda d: set(sorted(keys, key=lambda k: -abs(d[k]))[:10])
print(f"{n} heads: Spearman rho {rho:.3f}, top-10 overlap {len(top(ex) & top(est))}/10")
EOF
}

if [[ "$only" == *" 7b "* ]]; then
  model="$dir/7b-q8_0.gguf"
  if [ ! -f "$model" ]; then
    echo "bench/scan.sh: making $model (init + fuse --type q8_0)" >&2
    "$hf" init -q -o "$dir/7b-ph.gguf" --d-model 4096 --n-heads 32 --n-kv-heads 8 --d-head 128 --d-ff 11008 \
      --n-layers 32 --vocab 32000 --seed 1 > /dev/null
    "$hf" fuse -q "$dir/7b-ph.gguf" -o "$model" --type q8_0 > /dev/null
    rm -f "$dir/7b-ph.gguf"
  fi
  echo "7B-shaped Q8_0 model, $(($(stat -L -c %s "$model") / 1048576)) MiB mapped, $n_tok tokens, $(nproc) cores"
  timed attribution "$hf" heads scan "$model" --tokens-file "$dir/tokens.txt" --method attribution \
    -o "$dir/7b-attribution.json" -q
  timed refine "$hf" heads scan "$model" --tokens-file "$dir/tokens.txt" --method attribution --refine "$refine" \
    -o "$dir/7b-refine.json" -q
  # The exact method: the refined heads' exact ablations took (refine - attribution) seconds for their layer passes.
  # Wall and CPU time alike; the clean forward pass both methods run is counted as half of attribution's time.
  python3 - "$dir/7b-refine.json" "$dir" "$refine" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
layers = 1 + max(h["layer"] for h in j["heads"])
refined = sum(layers - h["layer"] for h in j["heads"] if h["exact"])
every = sum(layers - h["layer"] for h in j["heads"])
read = lambda name: float(open(f"{sys.argv[2]}/{name}").read())
for kind in ("secs", "cpu"):
    attribution, refine = read("attribution." + kind), read("refine." + kind)
    per_pass = (refine - attribution) / refined
    unit = 'wall' if kind == 'secs' else 'of CPU'
    print(f"exact, estimated from the {sum(h['exact'] for h in j['heads'])} refined heads' {refined} layer passes: "
          f"{per_pass * every + attribution / 2:.0f} s {unit} (about {(per_pass * every + attribution / 2) / 3600:.1f} h)")
    if int(sys.argv[3]) != 64:  # refine 64, at this rate and these heads' mean depth
        print(f"refine 64, estimated at the same rate: {attribution + per_pass * refined / int(sys.argv[3]) * 64:.0f} s {unit}")
EOF
  printf "refined heads, estimate vs exact: "
  compare "$dir/7b-refine.json" "$dir/7b-attribution.json"
fi

if [[ "$only" == *" agreement "* ]]; then
  model="$dir/mid-q8_0.gguf"
  if [ ! -f "$model" ]; then
    "$hf" init -q -o "$dir/mid-ph.gguf" --d-model 1024 --n-heads 16 --d-ff 2816 --n-layers 8 --vocab 32000 \
      --seed 5 > /dev/null
    "$hf" fuse -q "$dir/mid-ph.gguf" -o "$model" --type q8_0 > /dev/null
    rm -f "$dir/mid-ph.gguf"
  fi
  echo "d_model 1024, 16 heads, 8 layers, Q8_0, $n_tok tokens"
  for ablation in zero mean; do
    timed "exact_$ablation" "$hf" heads scan "$model" --tokens-file "$dir/tokens.txt" --ablation "$ablation" \
      -o "$dir/mid-exact-$ablation.json" -q
    timed "attribution_$ablation" "$hf" heads scan "$model" --tokens-file "$dir/tokens.txt" --method attribution \
      --ablation "$ablation" -o "$dir/mid-attribution-$ablation.json" -q
    printf "%s ablation, estimate vs exact: " "$ablation"
    compare "$dir/mid-exact-$ablation.json" "$dir/mid-attribution-$ablation.json"
  done
fi

if [[ "$only" == *" families "* ]]; then
  numpy_python=/usr/bin/python3  # Debian's python3-numpy (scripts/setup.sh)
  echo "other families: d_model 256, 8 heads, 4 layers, vocab 1000, F32, $n_tok tokens"
  python3 -c "print(' '.join(str((i * 389 + 11) % 1000) for i in range($n_tok)))" > "$dir/tokens-1000.txt"
  for fam in qwen2 qwen3 phi3 gemma gemma2 gemma3; do
    model="$dir/$fam.gguf"
    if [ ! -f "$model" ]; then
      case $fam in
        gemma*)
          extra=()
          [ $fam = gemma2 ] && extra=(--attn-softcap 50 --final-softcap 30)
          rm -rf "$dir/$fam-hf"
          "$numpy_python" tests/support/gemma_reference.py make --family $fam --d-model 256 --n-heads 8 --n-kv-heads 4 \
            --head-dim 32 --d-ff 512 --n-layers 4 --vocab 1000 --window 16 "${extra[@]}" --seed 7 "$dir/$fam-hf" > /dev/null
          "$hf" fuse -q "$dir/$fam-hf" -o "$model" > /dev/null ;;
        *)
          kv=4
          [ $fam = phi3 ] && kv=8  # fused attn_qkv: headfuse's phi3 has as many kv heads as heads
          "$hf" init -q -o "$dir/$fam-ph.gguf" --family $fam --d-model 256 --n-heads 8 --n-kv-heads $kv --d-ff 512 \
            --n-layers 4 --vocab 1000 --seed 7 > /dev/null
          "$hf" fuse -q "$dir/$fam-ph.gguf" -o "$model" > /dev/null
          rm -f "$dir/$fam-ph.gguf" ;;
      esac
    fi
    for ablation in zero mean; do
      "$hf" heads scan "$model" --tokens-file "$dir/tokens-1000.txt" --ablation $ablation -o "$dir/$fam-exact.json" -q \
        > /dev/null
      "$hf" heads scan "$model" --tokens-file "$dir/tokens-1000.txt" --method attribution --ablation $ablation \
        -o "$dir/$fam-attribution.json" -q > /dev/null
      printf "%s, %s ablation, estimate vs exact: " $fam $ablation
      compare "$dir/$fam-exact.json" "$dir/$fam-attribution.json"
    done
  done
fi
