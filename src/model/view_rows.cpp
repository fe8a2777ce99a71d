#include "model/view_rows.h"

#include <algorithm>
#include <cstring>

#include "base/fail.h"
#include "headfuse/error.h"
#include "io/mapped_file.h"

namespace headfuse {
namespace {

// Stored bytes [off, off + n) of a view: pread from its file, or copied from memory.
void stored(const TensorView& v, std::uint64_t off, std::span<std::byte> out) {
    if (v.file())
        v.file()->read(v.file_offset() + off, out);
    else
        std::memcpy(out.data(), v.bytes().data() + off, out.size());
}

}  // namespace

TensorView ViewAccess::in_file(std::string name, DType type, std::span<const std::uint64_t> ne,
                               std::span<const std::byte> bytes, const MappedFile* file, std::uint64_t offset) {
    TensorView v = TensorView::of(std::move(name), type, ne, bytes);
    if (file) {
        const std::span<const std::byte> all = file->bytes();
        if (offset > all.size() || bytes.size() > all.size() - offset || bytes.data() != all.data() + offset)
            fail(ErrorKind::InvalidArgument, "tensor '" + v.name_ + "': its bytes are not those of " +
                                                 file->path().string() + " at offset " + std::to_string(offset));
        v.file_ = file;
        v.file_offset_ = offset;
    }
    return v;
}

TensorView ViewAccess::in_order(TensorView v, bool rotate_half, bool transposed, std::uint64_t group_rows) {
    if (!v.plain()) fail(ErrorKind::InvalidArgument, "tensor '" + v.name_ + "': already in a foreign row order");
    const std::uint64_t g = group_rows ? group_rows : v.n_rows();
    if ((rotate_half || transposed) && (g == 0 || v.n_rows() % g != 0 || (rotate_half && g % 2 != 0)))
        fail(ErrorKind::InvalidArgument, "tensor '" + v.name_ + "': " + std::to_string(v.n_rows()) +
                                             " rows cannot be read in groups of " + std::to_string(g) +
                                             (rotate_half ? " in rotate-half order" : ""));
    if (transposed && traits(v.type()).block_size != 1)
        fail(ErrorKind::Unsupported, "tensor '" + v.name_ + "': a transposed tensor must be f32, f16 or bf16");
    v.rotate_half_ = rotate_half;
    v.transposed_ = transposed;
    v.group_rows_ = rotate_half || transposed ? group_rows : 0;
    return v;
}

void read_rows(const TensorView& v, std::uint64_t r0, std::uint64_t n, std::span<std::byte> out,
               std::vector<std::byte>& scratch) {
    const std::uint64_t rb = v.row_nbytes();
    if (v.plain()) return stored(v, r0 * rb, out.first(n * rb));
    const std::uint64_t g = v.group_rows() ? v.group_rows() : v.n_rows();
    const std::uint64_t gb = g * rb;  // bytes of a group
    if (v.transposed()) {
        // The group holds ne[0] stored rows of g elements; logical row r is stored column r (or its rotate-half
        // place). Each stored row gives its span of the columns wanted; nothing beyond the window is held.
        const std::uint64_t es = traits(v.type()).type_size;
        if (traits(v.type()).block_size != 1)
            fail(ErrorKind::Unsupported, "tensor '" + v.name() + "': a transposed tensor must be f32, f16 or bf16");
        const std::uint64_t ne0 = v.ne()[0];
        for (std::uint64_t r = r0; r < r0 + n;) {
            const std::uint64_t grp = r / g, end = std::min(r0 + n, (grp + 1) * g);
            const std::uint64_t lo = v.rotate_half() ? 0 : r - grp * g;  // the first stored column wanted
            const std::byte* base = v.bytes().data() + grp * gb;
            for (std::uint64_t c = 0; c < ne0; ++c) {
                const std::byte* src = base + (c * g + lo) * es;
                for (std::uint64_t q = r; q < end; ++q) {
                    const std::uint64_t local = q - grp * g;
                    const std::uint64_t col = v.rotate_half() ? rotate_half_stored_row(local, g) : local;
                    std::memcpy(out.data() + (q - r0) * rb + c * es, src + (col - lo) * es, es);
                }
            }
            r = end;
        }
        return;
    }
    // Rotate-half rows: logical rows 2i+j of a group are stored rows j*(g/2)+i, so the even (odd) rows of a window
    // are one run of stored rows, read straight into every other row of `out`. Any range of rows costs its own
    // bytes only, whole groups or not, and passes through memory once.
    (void)scratch;
    for (std::uint64_t r = r0; r < r0 + n;) {
        const std::uint64_t grp = r / g, a = r - grp * g, b = std::min(r0 + n, (grp + 1) * g) - grp * g;
        for (std::uint64_t j = 0; j < 2; ++j) {
            const std::uint64_t q0 = a + (a % 2 != j ? 1 : 0);  // the first logical row of parity j
            if (q0 >= b) continue;
            const std::uint64_t count = (b - q0 + 1) / 2, s0 = grp * g + rotate_half_stored_row(q0, g);
            std::byte* dst = out.data() + (grp * g + q0 - r0) * rb;
            if (v.file()) {
                v.file()->read_rows(v.file_offset() + s0 * rb, rb, count, dst, 2 * rb);
            } else {
                for (std::uint64_t i = 0; i < count; ++i)
                    std::memcpy(dst + 2 * i * rb, v.bytes().data() + (s0 + i) * rb, rb);
            }
        }
        r = grp * g + b;
    }
}

std::uint64_t window_rows(const TensorView& v, std::uint64_t window_bytes) {
    const std::uint64_t step = std::max<std::uint64_t>(1, window_bytes / std::max<std::uint64_t>(1, v.row_nbytes()));
    if (!v.rotate_half() || v.transposed()) return step;
    const std::uint64_t g = v.group_rows() ? v.group_rows() : v.n_rows();
    return std::max<std::uint64_t>(1, step / g) * g;
}

void for_each_window(const TensorView& v, std::uint64_t window_bytes,
                     const std::function<void(std::span<const std::byte>, std::uint64_t, std::uint64_t)>& f) {
    const std::uint64_t step = window_rows(v, window_bytes), n_rows = v.n_rows();
    std::vector<std::byte> buf, scratch;
    for (std::uint64_t r = 0; r < n_rows; r += step) {
        const std::uint64_t n = std::min(step, n_rows - r);
        f(rows_of(v, r, n, buf, scratch), r, n);
    }
}

std::span<const std::byte> rows_of(const TensorView& v, std::uint64_t r, std::uint64_t n, std::vector<std::byte>& buf,
                                   std::vector<std::byte>& scratch) {
    const std::uint64_t rb = v.row_nbytes();
    if (v.plain() && !v.file()) return v.bytes().subspan(r * rb, n * rb);
    buf.resize(n * rb);
    read_rows(v, r, n, buf, scratch);
    return buf;
}

}  // namespace headfuse
