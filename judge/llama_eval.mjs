#!/usr/bin/env node
// External judge: llama.cpp, through node-llama-cpp's prebuilt CPU binaries.
//
//   node judge/llama_eval.mjs MODEL.gguf 1,2,3,...
//       Evaluates the token ids (no BOS is added) and prints ONE JSON object on stdout:
//         {"vocab": N, "positions": [[lp_0, ..., lp_{N-1}], ...]}
//       positions[i][t] = natural log of P(next token = t | ids[0..i]), i.e. the log-softmax of the
//       logits llama.cpp computes after position i. A probability of exactly 0 (a logit of -inf, or
//       expf underflowing in float32 more than ~87 below the maximum) is written as null: -Infinity.
//       N is the length of tokenizer.ggml.tokens (llama.cpp's n_vocab).
//   node judge/llama_eval.mjs --out FILE MODEL.gguf 1,2,3,...
//       The same numbers written to FILE as raw little-endian float64, position-major (positions x N, -Infinity
//       for a probability of 0), and {"vocab": N, "positions": P} on stdout. For large vocabularies: JSON text of
//       every log-probability costs seconds per position at 150k tokens, the raw file milliseconds.
//   node judge/llama_eval.mjs --ctx N [--out FILE] MODEL.gguf 1,2,3,...
//       The same, in a context of N tokens (llama.cpp's n_ctx, node-llama-cpp's contextSize; llama.cpp rounds it up
//       to a multiple of 256). Without it the context is the smallest multiple of 32 (at least 64) that holds the
//       tokens, at most the model's context_length. It picks LongRoPE's factors (Phi-3): the long ones when the
//       rounded context exceeds rope.scaling.original_context_length.
//   node judge/llama_eval.mjs --check MODEL.gguf
//       Loads the model, evaluates 3 tokens (ids 0, 1, 2 clamped to the vocabulary) and prints "ok".
//
// Exit status: 0 on success, 2 on bad usage or token ids outside the vocabulary / context, 1 on any
// other failure (one line on stderr, prefixed "llama_eval: ", quoting llama.cpp's error lines). An abort
// inside llama.cpp (GGML_ASSERT, an uncaught C++ exception) kills the process with SIGABRT (status 134);
// for the most common one, a SentencePiece vocabulary without the byte tokens node-llama-cpp needs, a
// "llama_eval: warning: ..." line is printed first. HEADFUSE_JUDGE_VERBOSE=1 copies llama.cpp's log (info
// level) to stderr.
//
// What the numbers are, and the context they are computed in: judge/logprobs.mjs (shared with tokenize.mjs --eval).
// Measured against a float64 reference forward pass on random tiny models: max |delta log p| ~ 4e-6 at
// vocab 300, ~2e-5 at vocab 32000.

import process from "node:process";
import fs from "node:fs";
import { nextTokenLogprobs } from "./logprobs.mjs";

function fail(message, code = 1) {
    const line = String(message).replace(/\s+/g, " ").trim();
    process.stderr.write(`llama_eval: ${line}\n`);
    process.exit(code);
}

function usage() {
    fail("usage: node llama_eval.mjs [--ctx N] [--out FILE] MODEL.gguf ID,ID,...  |  node llama_eval.mjs --check MODEL.gguf", 2);
}

const args = process.argv.slice(2);
let check = false;
let outPath = null;
let contextSize = null;
if (args[0] === "--ctx" && args.length >= 2) {
    if (!/^[1-9]\d*$/.test(args[1])) fail(`--ctx must be a positive integer, got "${args[1]}"`, 2);
    contextSize = Number(args[1]);
    args.splice(0, 2);
}
if (args[0] === "--out" && args.length === 4) {
    outPath = args[1];
    args.splice(0, 2);
} else if (args[0] === "--check") {
    check = true;
    args.shift();
}
if (args.length !== (check ? 1 : 2)) usage();
const modelPath = args[0];

let ids = null;
if (!check) {
    const text = args[1].trim();
    if (!/^\d+(,\d+)*$/.test(text)) fail(`token list must be comma-separated non-negative integers, got "${args[1]}"`, 2);
    ids = text.split(",").map(Number);
    if (ids.some((t) => !Number.isSafeInteger(t) || t > 0x7fffffff)) fail("token id out of range", 2);
}

try {
    const st = fs.statSync(modelPath);
    if (!st.isFile()) fail(`not a regular file: ${modelPath}`);
} catch (e) {
    fail(`cannot open ${modelPath}: ${e.code ?? e.message}`);
}

// Keep stdout for the single JSON result: buffer the library's console output and llama.cpp's own log
// lines (warn level and above); they are quoted only when something goes wrong.
const logs = [];
for (const name of ["log", "info", "warn", "debug"]) {
    console[name] = (...a) => logs.push(a.map(String).join(" "));
}
// HEADFUSE_JUDGE_VERBOSE=1 copies every buffered line (llama.cpp at info level) to stderr at exit.
const verbose = /^(1|true|yes)$/i.test(process.env.HEADFUSE_JUDGE_VERBOSE ?? "");
// The most useful lines for a failure message: llama.cpp's errors, else its last warnings.
const lastLogs = () => {
    const errors = logs.filter((l) => l.startsWith("[error]") || l.startsWith("[fatal]"));
    return [...new Set(errors.length ? errors : logs)].slice(-3).join(" | ");
};
process.on("exit", () => {
    if (verbose && logs.length) process.stderr.write(logs.join("\n") + "\n");
});

let llamaCpp;
try {
    llamaCpp = await import("node-llama-cpp");
} catch (e) {
    fail(`cannot import node-llama-cpp (run "npm ci --omit=optional" in the judge directory): ${e.message}`);
}
const { getLlama, LlamaLogLevel } = llamaCpp;

let llama, model;
try {
    llama = await getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        progressLogs: false,
        logLevel: verbose ? LlamaLogLevel.info : LlamaLogLevel.warn,
        logger: (level, message) => {
            logs.push(`[${level}] ${String(message).trimEnd()}`);
        },
    });
} catch (e) {
    fail(`cannot initialise llama.cpp: ${e.message}`);
}

// node-llama-cpp tokenizes "\nsome test text here" while loading a model (LlamaModel.getWarnings). With a
// SentencePiece ("llama") vocabulary, a character that is neither a token of its own nor covered by a byte
// token "<0xXX>" (uppercase hex) makes llama.cpp throw std::out_of_range, which aborts the process (exit
// 134) with only "_Map_base::at" on stderr. Say beforehand what is about to go wrong; the load still runs,
// so llama.cpp keeps the last word.
try {
    const { readGgufFileInfo } = llamaCpp;
    const info = await readGgufFileInfo(modelPath, { sourceType: "filesystem" });
    const ggml = info.metadata?.tokenizer?.ggml ?? {};
    if (ggml.model === "no_vocab") {
        process.stderr.write("llama_eval: warning: tokenizer.ggml.model is \"no_vocab\"; node-llama-cpp aborts on such models\n");
    } else if (ggml.model === "llama" && Array.isArray(ggml.tokens)) {
        const vocabSet = new Set(ggml.tokens);
        const missing = [];
        for (const ch of new Set("\u2581\nsometxhr")) {
            if (vocabSet.has(ch)) continue;
            const bytes = [...Buffer.from(ch, "utf8")].map((b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
            if (!bytes.every((b) => vocabSet.has(b))) missing.push(JSON.stringify(ch));
        }
        if (missing.length > 0) {
            process.stderr.write(`llama_eval: warning: the vocabulary has neither a token nor byte tokens for ${missing.join(", ")}; ` +
                "node-llama-cpp tokenizes \"\\nsome test text here\" on load and llama.cpp will likely abort\n");
        }
    }
} catch {
    // the load below reports unreadable files
}

try {
    model = await llama.loadModel({ modelPath, gpuLayers: 0, useMmap: true, checkTensors: true });
} catch (e) {
    fail(`cannot load ${modelPath}: ${e.message}${logs.length ? ` (llama.cpp: ${lastLogs()})` : ""}`);
}

// llama.cpp's n_vocab is the length of tokenizer.ggml.tokens (llama.vocab_size only for "no_vocab").
const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? model.fileInfo.architectureMetadata?.vocab_size;
if (!Number.isSafeInteger(vocab) || vocab <= 0) fail("cannot determine the vocabulary size");

if (check) {
    ids = [0, 1, 2].map((t) => Math.min(t, vocab - 1));
}
let raw;
try {
    raw = await nextTokenLogprobs(model, ids, vocab, check ? null : contextSize);
} catch (e) {
    fail(`${e.message}${logs.length ? ` (llama.cpp: ${lastLogs()})` : ""}`, e.usage ? 2 : 1);
}

if (outPath !== null) {
    try {
        fs.writeFileSync(outPath, new Uint8Array(raw.buffer));
    } catch (e) {
        fail(`cannot write ${outPath}: ${e.message}`);
    }
}
const positions = [];
if (outPath === null && !check)
    for (let i = 0; i < ids.length; i++)
        positions.push(Array.from(raw.subarray(i * vocab, (i + 1) * vocab), (x) => (x === -Infinity ? null : x)));
const output = check ? "ok\n" : JSON.stringify(outPath !== null ? { vocab, positions: ids.length } : { vocab, positions }) + "\n";
// Exit without disposing: process teardown frees everything and avoids waiting on the backend.
process.stdout.write(output, () => process.exit(0));
