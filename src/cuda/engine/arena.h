// The CUDA engine's device memory: everything (weights, caches, activations,
// workspaces) is carved from ONE cudaMalloc made at engine creation. The same
// builder code runs twice: a sizing pass (no base: pointers stay null, only the plan
// of named regions is recorded; runs without a GPU, for `dsv4 inspect --plan`) and
// the real pass over the allocated base. Nothing is allocated after that.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dsv4::cuda {

enum class RegionKind : int { kWeights = 0, kCache = 1, kActivations = 2, kWorkspace = 3 };
const char* region_kind_name(RegionKind kind);

struct Region {
  std::string name;
  RegionKind kind;
  size_t bytes;
};

struct MemoryPlan {
  std::vector<Region> regions;
  size_t total_bytes = 0;
  size_t bytes_of(RegionKind kind) const;
  std::string describe(bool per_region) const;  // human-readable table
};

class Carver {
 public:
  explicit Carver(char* base = nullptr, size_t capacity = 0) : base_(base), capacity_(capacity) {}
  bool sizing() const { return base_ == nullptr; }

  // 256-byte aligned region of `count` elements, recorded in the plan. Returns null in
  // the sizing pass.
  template <typename T>
  T* take(const std::string& name, RegionKind kind, size_t count) {
    return static_cast<T*>(take_bytes(name, kind, count * sizeof(T)));
  }
  void* take_bytes(const std::string& name, RegionKind kind, size_t bytes);

  const MemoryPlan& plan() const { return plan_; }
  size_t used() const { return offset_; }

 private:
  char* base_;
  size_t capacity_;
  size_t offset_ = 0;
  MemoryPlan plan_;
};

}  // namespace dsv4::cuda
