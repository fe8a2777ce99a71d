#!/usr/bin/env node
// External judges for tokenizers: Hugging Face's tokenizer (transformers.js's code, npm @lenml/tokenizers 3.7.2)
// and llama.cpp (node-llama-cpp 3.21.1) tokenize the same texts.
//
//   node judge/tokenize.mjs HF_DIR MODEL.gguf CORPUS.json
//       HF_DIR holds tokenizer.json (and tokenizer_config.json when there is one); CORPUS.json is an array of
//       strings. Prints ONE JSON array on stdout, one object per text:
//         {"hf": [ids], "llama": [ids], "detok": "text", "hf_detok": "text"}
//       hf: TokenizerLoader.fromPreTrained({tokenizerJSON, tokenizerConfig}).encode(text, {add_special_tokens:
//       false}) (special-token text such as "<s>" is still matched, as Hugging Face always does).
//       llama: the GGUF loaded with vocabOnly: true, model.tokenize(text, true) (special-token text matched,
//       no BOS added). detok: model.detokenize(llama ids, true), llama.cpp's text back from its own ids; hf_detok:
//       the reference's decode(hf ids) (special tokens kept).
//       llama_nfc: llama.cpp's ids for the text put in Unicode NFC first (String.prototype.normalize), given
//       only where that changes the text.
//   node judge/tokenize.mjs --eval OUT N HF_DIR MODEL.gguf CORPUS.json
//       The same, with the whole model loaded: then llama.cpp's next-token log-probabilities after each of the first
//       N reference ids (every text's, one after the other) are written to OUT as llama_eval.mjs --out writes them
//       (judge/logprobs.mjs: raw float64, positions x vocabulary). One process and one load instead of two: at a
//       vocabulary of 260k tokens a load costs seconds.
//   HF_DIR may also be one of the names llama2, llama3, qwen2_5, qwen3, gemma, gemma2, gemma3 or mistral_nemo
//   (Mistral NeMo's Tekken): the tokenizer folders that @lenml/tokenizer-NAME ships (models/), printed by
//   `node judge/tokenize.mjs --dir NAME`.
//
//   node judge/tokenize.mjs --reference IDS.json MODEL.gguf CORPUS.json
//       The reference ids come from another implementation (IDS.json: an array of id arrays, one per text;
//       e.g. SentencePiece's own encode). Prints {"ref": [ids], "llama": [ids], "detok": "text"} per text.
//
// Exit status: 0 on success, 2 on bad usage, 1 on any other failure (one line on stderr, "tokenize: ...").
import fs from "node:fs";
import path from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

function fail(message, code = 1) {
    process.stderr.write(`tokenize: ${String(message).replace(/\s+/g, " ").trim()}\n`);
    process.exit(code);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const names = ["llama2", "llama3", "qwen2_5", "qwen3", "gemma", "gemma2", "gemma3", "mistral_nemo"];
const shipped = (name) => path.join(here, "node_modules", "@lenml", `tokenizer-${name}`, "models");
const args = process.argv.slice(2);
let evalOut = null, evalCount = 0;
if (args[0] === "--eval" && args.length === 6) {
    evalOut = args[1];
    evalCount = Number(args[2]);
    if (!Number.isSafeInteger(evalCount) || evalCount <= 0) fail(`--eval: N must be a positive integer, got "${args[2]}"`, 2);
    args.splice(0, 3);
}
if (args[0] === "--dir" && args.length === 2) {
    if (!names.includes(args[1])) fail(`unknown tokenizer ${args[1]}`, 2);
    process.stdout.write(shipped(args[1]) + "\n");
    process.exit(0);
}
const given = args[0] === "--reference" && args.length === 4;
if (!given && args.length !== 3)
    fail(`usage: node tokenize.mjs [--eval OUT N] HF_DIR|NAME MODEL.gguf CORPUS.json | --reference IDS.json MODEL.gguf CORPUS.json | --dir NAME (NAME: ${names.join(", ")})`, 2);
if (given) args.shift();
const hfDir = names.includes(args[0]) ? shipped(args[0]) : args[0];
const [, modelPath, corpusPath] = args;

const readJson = (p) => {
    try {
        return JSON.parse(fs.readFileSync(p, "utf8"));
    } catch (e) {
        fail(`cannot read ${p}: ${e.message}`);
    }
};
const corpus = readJson(corpusPath);
if (!Array.isArray(corpus) || corpus.some((t) => typeof t !== "string")) fail(`${corpusPath}: expected an array of strings`, 2);
let givenIds;
if (given) {
    givenIds = readJson(args[0]);
    if (!Array.isArray(givenIds) || givenIds.length !== corpus.length || givenIds.some((ids) => !Array.isArray(ids) || ids.some((t) => !Number.isInteger(t))))
        fail(`${args[0]}: expected ${corpus.length} arrays of token ids`, 2);
}

// Libraries print to the console; stdout is kept for the one JSON result.
const logs = [];
for (const name of ["log", "info", "warn", "debug"]) console[name] = (...a) => logs.push(a.map(String).join(" "));

let reference;
if (!given) {
    const tokenizerJSON = readJson(path.join(hfDir, "tokenizer.json"));
    const configPath = path.join(hfDir, "tokenizer_config.json");
    const tokenizerConfig = fs.existsSync(configPath) ? readJson(configPath) : {};
    try {
        const { TokenizerLoader } = await import("@lenml/tokenizers");
        reference = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
    } catch (e) {
        fail(`the reference tokenizer does not load ${hfDir}: ${e.message}`);
    }
}

let model;
try {
    const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");
    const llama = await getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        progressLogs: false,
        logLevel: LlamaLogLevel.warn,
        logger: (level, message) => logs.push(`[${level}] ${String(message).trimEnd()}`),
    });
    model = await llama.loadModel({ modelPath, gpuLayers: 0, vocabOnly: evalOut === null });
} catch (e) {
    fail(`llama.cpp does not load ${modelPath}: ${e.message} (${logs.slice(-3).join(" | ")})`);
}

const out = corpus.map((text, i) => {
    const ids = Array.from(model.tokenize(text, true));
    if (given) return { ref: givenIds[i], llama: ids, detok: model.detokenize(ids, true) };
    const hf = Array.from(reference.encode(text, { add_special_tokens: false }));
    const result = { hf, llama: ids, detok: model.detokenize(ids, true), hf_detok: reference.decode(hf) };
    const nfc = text.normalize("NFC");
    if (nfc !== text) result.llama_nfc = Array.from(model.tokenize(nfc, true));
    return result;
});
if (evalOut !== null) {
    if (given) fail("--eval needs the reference tokenizer (HF_DIR), not --reference", 2);
    const ids = out.flatMap((r) => r.hf);
    if (ids.length < evalCount) fail(`--eval ${evalCount}: the corpus has ${ids.length} tokens`, 2);
    const vocab = model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
    try {
        const { nextTokenLogprobs } = await import("./logprobs.mjs");
        const raw = await nextTokenLogprobs(model, ids.slice(0, evalCount), vocab);
        fs.writeFileSync(evalOut, new Uint8Array(raw.buffer));
    } catch (e) {
        fail(`llama.cpp's log-probabilities: ${e.message} (${logs.slice(-3).join(" | ")})`, e.usage ? 2 : 1);
    }
}
process.stdout.write(JSON.stringify(out) + "\n", () => process.exit(0));
