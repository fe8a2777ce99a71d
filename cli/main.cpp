// headfuse: the command line. Each command registers its own options and runs itself (options.h); the work lives in
// the library.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "base/text.h"
#include "headfuse/error.h"
#include "options.h"
#include "signals.h"

using namespace headfuse;
using namespace headfuse::cli;

namespace {

// An error as one line: names read from a file may hold newlines, terminal escapes or bytes that are not UTF-8;
// they are shown escaped ("\x0a", see printable()).
std::string one_line(const char* message) { return printable(message, false, false); }

}  // namespace

int main(int argc, char** argv) {
    // A file-size limit must end in EFBIG and a clear error, not in a signal.
    std::signal(SIGXFSZ, SIG_IGN);
    headfuse::cli::install_stop_handlers();

    CLI::App app{"headfuse: per-head checkpoints to llama.cpp GGUF files and back, exactly."};
    app.name("headfuse");
    app.set_version_flag("--version", "headfuse " HEADFUSE_VERSION);  // the project version, from CMake
    app.require_subcommand(1);
    app.footer("Run 'headfuse COMMAND --help' for a command's options.");
    std::vector<std::unique_ptr<Command>> commands;
    add_model_commands(commands);
    add_read_commands(commands);
    add_heads_command(commands);
    for (auto& c : commands) c->add(app);

    // verify answers as cmp does: 0 the same model, 1 they differ, 2 they could not be compared.
    const int failure = argc > 1 && std::string_view(argv[1]) == "verify" ? 2 : 1;

    // An unknown command is named, not reported as a missing one.
    std::vector<std::string> names;
    for (const auto& c : commands) names.push_back(c->name());
    if (argc > 1 && argv[1][0] != '-' && std::find(names.begin(), names.end(), argv[1]) == names.end()) {
        std::string list;
        for (const std::string& n : names) list += (list.empty() ? "" : ", ") + n;
        std::fprintf(stderr, "headfuse: unknown command '%s'; the commands are %s (see 'headfuse --help')\n",
                     one_line(argv[1]).c_str(), list.c_str());
        return failure;
    }
    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
        std::string where = "headfuse";
        if (argc > 1 && argv[1][0] != '-') where += " " + std::string(argv[1]);
        std::string message = e.what();
        if (message == "A subcommand is required") message = "a command is required";
        std::fprintf(stderr, "headfuse: %s (see '%s --help')\n", one_line(message.c_str()).c_str(), where.c_str());
        return failure;
    }

    try {
        for (auto& c : commands)
            if (c->given()) return c->execute();
    } catch (const Error& e) {
        std::fprintf(stderr, "headfuse: %s\n", one_line(e.what()).c_str());
        headfuse::cli::end_if_stopped();
        return failure;
    } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "headfuse: out of memory\n");
        return failure;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "headfuse: %s\n", one_line(e.what()).c_str());
        return failure;
    }
    return failure;
}
