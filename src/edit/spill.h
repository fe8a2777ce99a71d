// The tensors a head edit makes, computed a window of rows at a time into an unnamed temporary file (the spill)
// and handed to the edited model as views of that file. No tensor is ever held whole, so an edit runs in memory
// that does not grow with the model; the writer copies these views as it copies the input's (pread, window by
// window), and the forward pass reads them as any mapped tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "headfuse/model.h"

namespace headfuse {

class Spill {
public:
    // Computes rows [r0, r0 + n) of a new tensor into `out` (n rows, in the tensor's type).
    using RowsFn = std::function<void(std::uint64_t r0, std::uint64_t n, std::span<std::byte> out)>;

    // Plans a new tensor: `*slot` becomes its view when write() has run. The slot must stay where it is until
    // then (a member of a layer, or an element of a vector that is no longer resized).
    void add(TensorView* slot, std::string name, DType type, std::span<const std::uint64_t> ne, RowsFn rows);

    // Computes every planned tensor, a window of rows at a time, into an unnamed file in
    // std::filesystem::temp_directory_path() ($TMPDIR, else /tmp), maps it and fills the slots. Returns the
    // mapping, which the views borrow (null when nothing was planned). The folder's free space is checked first
    // (Error "needs 1.20 GB, 800.00 MB free on '/tmp'"). Error naming the folder on failure; nothing is left
    // behind.
    std::shared_ptr<const void> write();

private:
    struct Planned {
        TensorView* slot;
        std::string name;
        DType type;
        std::vector<std::uint64_t> ne;
        std::uint64_t nbytes;  // what the type and shape take
        RowsFn rows;
    };
    std::vector<Planned> planned_;
};

}  // namespace headfuse
