#include "support/same_tensors.h"

#include <cstring>

namespace headfuse::test {

::testing::AssertionResult same_tensors(const GgufFile& ours, const GgufFile& theirs) {
    if (ours.tensors().size() != theirs.tensors().size())
        return ::testing::AssertionFailure()
               << ours.tensors().size() << " tensors, llama.cpp wrote " << theirs.tensors().size();
    for (const TensorInfo& t : theirs.tensors()) {
        const TensorInfo* o = ours.find_tensor(t.name);
        if (o == nullptr) return ::testing::AssertionFailure() << "no tensor " << t.name;
        if (o->type != t.type)
            return ::testing::AssertionFailure()
                   << t.name << ": type " << o->type << ", llama.cpp wrote type " << t.type;
        const auto a = ours.tensor_data(*o), b = theirs.tensor_data(t);
        if (a.size() != b.size())
            return ::testing::AssertionFailure() << t.name << ": " << a.size() << " bytes, llama.cpp " << b.size();
        if (std::memcmp(a.data(), b.data(), a.size()) != 0) {
            std::size_t i = 0;
            while (a[i] == b[i]) ++i;
            return ::testing::AssertionFailure()
                   << t.name << " (type " << t.type << "): bytes differ from offset " << i;
        }
    }
    return ::testing::AssertionSuccess();
}

}  // namespace headfuse::test
