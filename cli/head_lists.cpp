#include "head_lists.h"

#include <algorithm>
#include <charconv>
#include <set>
#include <string>

#include "headfuse/error.h"

namespace headfuse::cli {
namespace {

std::string head_name(const HeadRef& h) { return std::to_string(h.layer) + ":" + std::to_string(h.head); }

std::uint32_t parse_number(std::string_view& s, std::string_view flag, std::string_view item) {
    std::uint32_t v = 0;
    const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc{} || end == s.data())
        throw Error(
            ErrorKind::InvalidArgument,
            std::string(flag) + ": expected LAYER:HEAD (decimal numbers, e.g. 3:1), found '" + std::string(item) + "'");
    s.remove_prefix(static_cast<std::size_t>(end - s.data()));
    return v;
}

HeadRef parse_head(std::string_view item, std::string_view flag) {
    std::string_view s = item;
    HeadRef h;
    h.layer = parse_number(s, flag, item);
    if (s.empty() || s.front() != ':')
        throw Error(
            ErrorKind::InvalidArgument,
            std::string(flag) + ": expected LAYER:HEAD (decimal numbers, e.g. 3:1), found '" + std::string(item) + "'");
    s.remove_prefix(1);
    h.head = parse_number(s, flag, item);
    if (!s.empty())
        throw Error(
            ErrorKind::InvalidArgument,
            std::string(flag) + ": expected LAYER:HEAD (decimal numbers, e.g. 3:1), found '" + std::string(item) + "'");
    return h;
}

// The items of a comma-separated list, each without the spaces around it ("0:1, 1:2").
std::vector<std::string_view> split_commas(std::string_view text) {
    std::vector<std::string_view> out;
    for (std::size_t pos = 0;;) {
        const std::size_t comma = text.find(',', pos);
        std::string_view item =
            text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        out.push_back(item);
        if (comma == std::string_view::npos) return out;
        pos = comma + 1;
    }
}

}  // namespace

std::vector<HeadRef> parse_heads(std::string_view text, std::string_view flag) {
    std::vector<HeadRef> out;
    for (std::string_view item : split_commas(text)) out.push_back(parse_head(item, flag));
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
}

std::vector<HeadMove> parse_head_moves(std::string_view text, std::string_view flag) {
    std::vector<HeadMove> out;
    std::set<HeadRef> seen;
    for (std::string_view item : split_commas(text)) {
        const std::size_t eq = item.find('=');
        HeadMove m;
        m.to = parse_head(item.substr(0, eq), flag);
        m.from = eq == std::string_view::npos ? m.to : parse_head(item.substr(eq + 1), flag);
        if (!seen.insert(m.to).second)
            throw Error(ErrorKind::InvalidArgument,
                        std::string(flag) + ": head " + head_name(m.to) + " receives more than one head");
        out.push_back(m);
    }
    std::sort(out.begin(), out.end(), [](const HeadMove& a, const HeadMove& b) { return a.to < b.to; });
    return out;
}
}  // namespace headfuse::cli
