#!/usr/bin/env node
// External judge: Hugging Face's JavaScript GGUF parser (@huggingface/gguf).
//
//   node judge/hf_parse.mjs [--full-arrays] FILE.gguf
//
// Prints ONE JSON object on stdout:
//   {
//     "version": 3, "tensor_count": T, "kv_count": K, "little_endian": true,
//     "tensor_data_offset": N,                 // absolute byte offset of the data section
//     "metadata": {KEY: VALUE, ...},           // the K key/value pairs of the file, in file order
//     "metadata_types": {KEY: TYPE, ...},      // "UINT32", "FLOAT32", "STRING", ..., "ARRAY[STRING]"
//     "tensors": [{"name", "shape", "dtype", "dtype_name", "offset", "nbytes"}, ...]   // in file order
//   }
// VALUE encoding: integers that fit a double exactly are numbers, larger 64-bit ones are decimal strings;
// NaN and +-Infinity are the strings "NaN", "Infinity", "-Infinity"; arrays longer than 16 elements are
// summarised as {"array_length": n} unless --full-arrays is given. "shape" is ggml order (ne[0] first),
// "dtype" the ggml type number (0 F32, 1 F16, 2 Q4_0, 8 Q8_0, 30 BF16), "offset" relative to the data
// section.
//
// "nbytes" is the tensor's data size when its type is one of the ggml types listed in TYPE_SIZES below
// (and ne[0] is a whole number of blocks), else null.
//
// @huggingface/gguf reads past the end of a file as if it were zeros, so a truncated file "parses". On
// top of the library's own checks this script therefore rejects: a header (metadata + tensor infos)
// that extends past the end of the file, a data section starting past the end, tensor data (for types
// with a known size) extending past the end, duplicate metadata keys (the parsed key count differs
// from kv_count) and a tensor count that differs from tensor_count.
//
// Exit status: 0 on success, 2 on bad usage, 1 when the file cannot be read, cannot be parsed or fails
// one of the checks above (one line on stderr, prefixed "hf_parse: ").

import process from "node:process";
import fs from "node:fs";
import path from "node:path";

const SUMMARY_THRESHOLD = 16;

// ggml type number -> [bytes per block, elements per block]
const TYPE_SIZES = new Map([
    [0, [4, 1]], [1, [2, 1]], [2, [18, 32]], [3, [20, 32]], [6, [22, 32]], [7, [24, 32]], [8, [34, 32]],
    [9, [36, 32]], [10, [84, 256]], [11, [110, 256]], [12, [144, 256]], [13, [176, 256]], [14, [210, 256]],
    [15, [292, 256]], [24, [1, 1]], [25, [2, 1]], [26, [4, 1]], [27, [8, 1]], [28, [8, 1]], [30, [2, 1]],
]);

function tensorBytes(dtype, shape) {
    const size = TYPE_SIZES.get(dtype);
    if (size === undefined || shape.length === 0) return null;
    const [blockBytes, blockElems] = size;
    if (shape[0] % BigInt(blockElems) !== 0n) return null;
    let rows = 1n;
    for (const n of shape.slice(1)) rows *= n;
    return (shape[0] / BigInt(blockElems)) * BigInt(blockBytes) * rows;
}

function fail(message, code = 1) {
    process.stderr.write(`hf_parse: ${String(message).replace(/\s+/g, " ").trim()}\n`);
    process.exit(code);
}

const args = process.argv.slice(2);
let fullArrays = false;
if (args[0] === "--full-arrays") {
    fullArrays = true;
    args.shift();
}
if (args.length !== 1 || args[0].startsWith("--")) fail("usage: node hf_parse.mjs [--full-arrays] FILE.gguf", 2);
const file = path.resolve(args[0]);

let fileSize;
try {
    const st = fs.statSync(file);
    if (!st.isFile()) fail(`not a regular file: ${args[0]}`);
    fileSize = BigInt(st.size);
} catch (e) {
    fail(`cannot open ${args[0]}: ${e.code ?? e.message}`);
}

let hf;
try {
    hf = await import("@huggingface/gguf");
} catch (e) {
    fail(`cannot import @huggingface/gguf (run "npm ci --omit=optional" in the judge directory): ${e.message}`);
}
const { gguf, GGUFValueType, GGMLQuantizationType } = hf;

let parsed;
try {
    parsed = await gguf(file, { allowLocalFile: true, typedMetadata: true });
} catch (e) {
    fail(`cannot parse ${args[0]}: ${e?.message ?? e}`);
}

function scalar(v) {
    if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
    if (typeof v === "number" && !Number.isFinite(v)) return String(v);
    return v;
}

function value(v) {
    if (Array.isArray(v)) {
        if (!fullArrays && v.length > SUMMARY_THRESHOLD) return { array_length: v.length };
        return v.map(value);
    }
    return scalar(v);
}

function typeName(t) {
    return GGUFValueType[t] ?? `UNKNOWN(${t})`;
}

const PSEUDO_KEYS = new Set(["version", "tensor_count", "kv_count"]);
const metadata = {};
const metadataTypes = {};
for (const [key, entry] of Object.entries(parsed.typedMetadata)) {
    if (PSEUDO_KEYS.has(key)) continue;
    metadata[key] = value(entry.value);
    metadataTypes[key] = entry.type === GGUFValueType.ARRAY
        ? `ARRAY[${entry.subType === undefined ? "?" : typeName(entry.subType)}]`
        : typeName(entry.type);
}

const headerEnd = BigInt(parsed.tensorInfoByteRange[1]);
if (headerEnd > fileSize) fail(`truncated file: the header needs ${headerEnd} bytes, the file has ${fileSize}`);
const dataOffset = BigInt(parsed.tensorDataOffset);
if (dataOffset > fileSize) fail(`truncated file: the data section starts at ${dataOffset}, the file has ${fileSize} bytes`);
const kvCount = BigInt(parsed.metadata.kv_count);
if (BigInt(Object.keys(metadata).length) !== kvCount) {
    fail(`kv_count is ${kvCount} but ${Object.keys(metadata).length} distinct keys were read (duplicate keys?)`);
}
if (BigInt(parsed.tensorInfos.length) !== BigInt(parsed.metadata.tensor_count)) {
    fail(`tensor_count is ${parsed.metadata.tensor_count} but ${parsed.tensorInfos.length} tensor infos were read`);
}

const tensors = parsed.tensorInfos.map((t) => {
    const nbytes = tensorBytes(t.dtype, t.shape);
    if (nbytes !== null && dataOffset + BigInt(t.offset) + nbytes > fileSize) {
        fail(`truncated file: tensor ${t.name} ends at ${dataOffset + BigInt(t.offset) + nbytes}, the file has ${fileSize} bytes`);
    }
    return {
        name: t.name,
        shape: t.shape.map(scalar),
        dtype: t.dtype,
        dtype_name: GGMLQuantizationType[t.dtype] ?? `UNKNOWN(${t.dtype})`,
        offset: scalar(t.offset),
        nbytes: nbytes === null ? null : scalar(nbytes),
    };
});

const result = {
    version: scalar(parsed.metadata.version),
    tensor_count: scalar(parsed.metadata.tensor_count),
    kv_count: scalar(parsed.metadata.kv_count),
    little_endian: parsed.littleEndian,
    tensor_data_offset: scalar(parsed.tensorDataOffset),
    metadata,
    metadata_types: metadataTypes,
    tensors,
};

process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
