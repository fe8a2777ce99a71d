// Every fuzz target's default limits, put before the command line's flags (which come later and win): a
// per-input time limit, so that a slow path (time more than linear in the input, such as a header read in
// quadratic time) is a finding rather than a slow campaign, and a memory limit.
#include <cstddef>
#include <vector>

namespace {

// Seconds one input may take: many times what any corpus file needs (a whole target's corpus replays in under
// 0.3 s in a Release build, tests/test_fuzz_replay), while a path quadratic in its input exceeds it on inputs of a
// few hundred kilobytes (the tokenizer.json conversion, when it looked up every split of a piece, took 1.1 s of
// CPU on a 121 kB piece in a Release build; the sanitizers multiply that).
char kTimeout[] = "-timeout=2";
// The allocation the fuzzers' inputs (up to a few hundred kilobytes) never need.
char kRssLimit[] = "-rss_limit_mb=2048";

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
    static std::vector<char*> args;
    args.assign(*argv, *argv + *argc);
    args.insert(args.begin() + (args.empty() ? 0 : 1), {kTimeout, kRssLimit});
    args.push_back(nullptr);
    *argc = static_cast<int>(args.size() - 1);
    *argv = args.data();
    return 0;
}
