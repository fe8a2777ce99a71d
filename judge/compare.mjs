#!/usr/bin/env node
// Compares headfuse's reference forward pass with llama.cpp on the same file.
//
//   node judge/compare.mjs MODEL.gguf LOGITS.f32 1,2,3,...
//
// LOGITS.f32 is what `headfuse logits MODEL --tokens 1,2,3 -o LOGITS.f32` writes (n_tokens x vocab raw
// little-endian float32). llama.cpp reports probabilities, so both sides are compared as log-softmax.
// Prints one line: the largest |difference| in next-token log-probability and the top-token agreement;
// with --json, a JSON object {max_abs_diff, top_agree, positions}.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const args = process.argv.slice(2);
const json = args[0] === "--json" ? (args.shift(), true) : false;
if (args.length !== 3) {
    process.stderr.write("usage: node judge/compare.mjs [--json] MODEL.gguf LOGITS.f32 ID,ID,...\n");
    process.exit(2);
}
const [model, logitsPath, tokens] = args;
const here = path.dirname(fileURLToPath(import.meta.url));
let llama;
try {
    llama = JSON.parse(execFileSync(process.execPath, [path.join(here, "llama_eval.mjs"), model, tokens],
                                    { encoding: "utf8", maxBuffer: 1 << 30, stdio: ["ignore", "pipe", "inherit"] }));
} catch (e) {
    process.stderr.write(`compare: llama.cpp could not evaluate ${model}\n`);
    process.exit(1);
}
const buf = fs.readFileSync(logitsPath);
const ours = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
const vocab = llama.vocab;
const n = llama.positions.length;
if (ours.length !== n * vocab) {
    process.stderr.write(`compare: ${logitsPath} holds ${ours.length} logits, expected ${n} x ${vocab}\n`);
    process.exit(1);
}
let maxDiff = 0, topAgree = 0;
for (let p = 0; p < n; p++) {
    const row = ours.subarray(p * vocab, (p + 1) * vocab);
    let mx = -Infinity;
    for (const x of row) mx = Math.max(mx, x);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - mx);
    const lse = mx + Math.log(sum);
    let ourTop = 0, theirTop = 0;
    const theirs = llama.positions[p];
    for (let t = 0; t < vocab; t++) {
        const a = row[t] - lse;
        const b = theirs[t] === null ? -Infinity : theirs[t];
        if (row[t] > row[ourTop]) ourTop = t;
        if (b > (theirs[theirTop] ?? -Infinity)) theirTop = t;
        // Tokens whose probability underflows in llama.cpp's float32 softmax carry no information.
        if (Number.isFinite(b)) maxDiff = Math.max(maxDiff, Math.abs(a - b));
    }
    if (ourTop === theirTop) topAgree++;
}
if (json) {
    process.stdout.write(JSON.stringify({ max_abs_diff: maxDiff, top_agree: topAgree, positions: n }) + "\n");
} else {
    process.stdout.write(`llama.cpp vs headfuse: max |log-prob difference| ${maxDiff.toExponential(2)}, ` +
                         `top token agrees at ${topAgree}/${n} positions\n`);
}
