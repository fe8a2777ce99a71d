// Rows of a view in any storage order (TensorView::rotate_half, transposed), read into a buffer: the one place
// that knows how a foreign checkpoint's bytes map to headfuse's rows. Whole rows move; nothing else is held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "headfuse/model.h"

namespace headfuse {

// The views only the library makes (TensorView's invariants, checked here as TensorView::of checks them).
struct ViewAccess {
    // A plain view of bytes that lie in `file` (null: in memory) at absolute offset `offset`. Error naming the
    // tensor when the bytes are not the type and shape's, or not the file's bytes at that offset.
    static TensorView in_file(std::string name, DType type, std::span<const std::uint64_t> ne,
                              std::span<const std::byte> bytes, const MappedFile* file, std::uint64_t offset);
    // The plain view `v`, its stored bytes read in a foreign checkpoint's order (see TensorView): groups of
    // `group_rows` rows (0: all rows). Error naming the tensor when a group is not a whole, non-zero divisor of the
    // rows, a rotate-half group is odd, or a transposed view's type has blocks (f32, f16 and bf16 only).
    static TensorView in_order(TensorView v, bool rotate_half, bool transposed, std::uint64_t group_rows);
};

// The stored row (within its group of g rows) that holds logical row r of a rotate-half group: r = 2i+j is
// stored as j*(g/2)+i. Its inverse, rotate_half_row_of, gives the logical row a stored row holds.
inline std::uint64_t rotate_half_stored_row(std::uint64_t r, std::uint64_t g) noexcept {
    return (r % 2) * (g / 2) + r / 2;
}
inline std::uint64_t rotate_half_row_of(std::uint64_t s, std::uint64_t g) noexcept {
    return 2 * (s % (g / 2)) + s / (g / 2);
}

// Copies logical rows [r0, r0 + n) of `v` into out (n * v.row_nbytes() bytes), in v's type. Plain views are
// read with pread when they lie in a file (no page of the mapping becomes resident), or copied from memory; a
// rotate-half view's rows straight into their places (preadv), in any run of rows.
void read_rows(const TensorView& v, std::uint64_t r0, std::uint64_t n, std::span<std::byte> out,
               std::vector<std::byte>& scratch);

// Rows [r, r + n) of a view: borrowed from memory when the view is plain and in memory, else read into `buf`.
std::span<const std::byte> rows_of(const TensorView& v, std::uint64_t r, std::uint64_t n, std::vector<std::byte>& buf,
                                   std::vector<std::byte>& scratch);

// Rows per window of about `window_bytes` (at least one; whole groups for a rotate-half view, although any run
// of rows is read at its own cost).
std::uint64_t window_rows(const TensorView& v, std::uint64_t window_bytes);

// Calls f(rows, r, n) for consecutive windows [r, r + n) of v's logical rows, in v's type.
void for_each_window(const TensorView& v, std::uint64_t window_bytes,
                     const std::function<void(std::span<const std::byte>, std::uint64_t, std::uint64_t)>& f);

}  // namespace headfuse
