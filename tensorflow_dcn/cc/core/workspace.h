// Carves 256-byte aligned buffers out of one workspace. A plan lays its buffers out twice with the
// same code: once without memory to size the workspace, once on the memory the binding provides.
#ifndef TENSORFLOW_DCN_CC_CORE_WORKSPACE_H_
#define TENSORFLOW_DCN_CC_CORE_WORKSPACE_H_

#include <cstddef>
#include <cstdint>

namespace tensorflow_dcn {

class WorkspaceLayout {
 public:
  static constexpr int64_t kAlignment = 256;

  explicit WorkspaceLayout(void* base = nullptr) : base_(static_cast<char*>(base)) {}

  // `count` elements of U (null while sizing).
  template <typename U>
  U* Take(int64_t count) {
    char* p = base_ ? base_ + used_ : nullptr;
    const int64_t bytes = count * static_cast<int64_t>(sizeof(U));
    used_ += (bytes + kAlignment - 1) / kAlignment * kAlignment;
    return reinterpret_cast<U*>(p);
  }
  size_t bytes() const { return static_cast<size_t>(used_); }

  // The workspace's start inside memory of bytes + kAlignment from an allocator that aligns
  // less than kAlignment.
  static void* AlignUp(void* memory) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(memory);
    return reinterpret_cast<void*>((p + kAlignment - 1) / kAlignment * kAlignment);
  }

 private:
  char* base_;
  int64_t used_ = 0;
};

}  // namespace tensorflow_dcn

#endif  // TENSORFLOW_DCN_CC_CORE_WORKSPACE_H_
