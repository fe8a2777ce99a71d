// llama.cpp's next-token log-probabilities through node-llama-cpp, shared by llama_eval.mjs and tokenize.mjs --eval.
//
// What the numbers are: node-llama-cpp 3.21.1's controlledEvaluate with generateNext.probabilities samples with its
// default options (temperature 0), which selects a chain holding only llama.cpp's greedy sampler: the candidate
// array keeps every vocabulary entry with its raw logit. The addon (llama/addon/AddonContext.cpp,
// AddonContextSampleTokenWorker) then sorts the candidates by logit and computes p = expf(logit - max) / sum in
// float32. The Map therefore holds every token id, with no temperature, top-k, top-p or min-p applied (with
// temperature > 0 the chain would be top-k 40, top-p 0.95, ... and the Map truncated). Temperature 0 is passed
// explicitly so that a change of defaults cannot silently truncate the distribution; the Map must cover the whole
// vocabulary; and the result is renormalised in float64 (see below).
//
// Context settings follow the project notes: CPU only, no flash attention, F32 KV cache, 2 threads.

// The log-softmax of llama.cpp's logits after each of `ids` (no BOS added) on a loaded LlamaModel, position-major
// in one Float64Array (positions x vocab), -Infinity where the probability is 0. Throws Error; its `usage` is true
// when the ids do not fit the model (outside the vocabulary, beyond its context). `contextSize` (optional) is the
// context llama.cpp runs with (n_ctx, which it rounds up to a multiple of 256); it must hold the ids. It matters to
// what llama.cpp computes for LongRoPE models only (Phi-3: the long factors when it exceeds the original context).
export async function nextTokenLogprobs(model, ids, vocab, contextSize = null) {
    const refuse = (message) => Object.assign(new Error(message), { usage: true });
    if (ids.length === 0) throw refuse("no tokens");
    const bad = ids.find((t) => t >= vocab);
    if (bad !== undefined) throw refuse(`token id ${bad} is outside the vocabulary (size ${vocab})`);
    const trainContext = model.trainContextSize;
    if (ids.length > trainContext) throw refuse(`${ids.length} tokens exceed the model's context length ${trainContext}`);
    // A small context keeps the KV cache tiny; it must hold every token we evaluate.
    if (contextSize === null) contextSize = Math.min(trainContext, Math.max(64, 32 * Math.ceil(ids.length / 32)));
    else if (!Number.isSafeInteger(contextSize) || contextSize < ids.length)
        throw refuse(`a context of ${contextSize} cannot hold ${ids.length} tokens`);
    let context;
    try {
        context = await model.createContext({
            contextSize,
            batchSize: contextSize,
            sequences: 1,
            flashAttention: false,
            experimentalKvCacheKeyType: "F32",
            experimentalKvCacheValueType: "F32",
            threads: 2,
        });
    } catch (e) {
        throw new Error(`cannot create a context: ${e.message}`);
    }
    let results;
    try {
        results = await context.getSequence().controlledEvaluate(
            ids.map((t) => [t, { generateNext: { probabilities: true, options: { temperature: 0 } } }]),
        );
    } catch (e) {
        throw new Error(`evaluation failed: ${e.message}`);
    }
    const raw = new Float64Array(ids.length * vocab);
    for (let i = 0; i < ids.length; i++) {
        const probs = results[i]?.next?.probabilities;
        if (!(probs instanceof Map)) throw new Error(`no probabilities returned at position ${i}`);
        if (probs.size !== vocab)
            throw new Error(`position ${i}: ${probs.size} probabilities for a vocabulary of ${vocab} (truncated distribution)`);
        // The addon normalises in float32 (sum += prob over the whole vocabulary), which leaves a common relative
        // error of up to ~1e-4 at a 32k vocabulary. Renormalising in float64 removes it: log(p_t) - log(sum p) =
        // (logit_t - max) - log(sum exp(logit - max)) up to the float32 rounding of each expf.
        let sum = 0;
        for (const [token, p] of probs) {
            if (!Number.isInteger(token) || token < 0 || token >= vocab)
                throw new Error(`position ${i}: token id ${token} outside the vocabulary`);
            if (!(p >= 0) || p > 1) throw new Error(`position ${i}: probability ${p} for token ${token} is not in [0, 1]`);
            sum += p;
        }
        if (!(sum > 0)) throw new Error(`position ${i}: all probabilities are 0`);
        const logSum = Math.log(sum);
        const row = raw.subarray(i * vocab, (i + 1) * vocab);
        for (const [token, p] of probs) row[token] = p > 0 ? Math.log(p) - logSum : -Infinity;
    }
    return raw;
}
