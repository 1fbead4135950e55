#include "cuda/engine/arena.h"

#include <fmt/format.h>

#include <map>

#include "dsv4/error.h"

namespace dsv4::cuda {

const char* region_kind_name(RegionKind kind) {
  switch (kind) {
    case RegionKind::kWeights: return "weights";
    case RegionKind::kCache: return "caches";
    case RegionKind::kActivations: return "activations";
    case RegionKind::kWorkspace: return "workspace";
  }
  return "?";
}

size_t MemoryPlan::bytes_of(RegionKind kind) const {
  size_t total = 0;
  for (const Region& r : regions)
    if (r.kind == kind) total += r.bytes;
  return total;
}

std::string MemoryPlan::describe(bool per_region) const {
  auto gib = [](size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); };
  std::string out = fmt::format("device memory plan: {:.3f} GiB in one allocation\n", gib(total_bytes));
  for (RegionKind kind : {RegionKind::kWeights, RegionKind::kCache, RegionKind::kActivations, RegionKind::kWorkspace})
    out += fmt::format("  {:<12} {:>10.3f} GiB\n", region_kind_name(kind), gib(bytes_of(kind)));
  if (per_region) {
    // Regions with the same name pattern per layer are listed once per layer; keep
    // the table readable by folding identical names.
    std::map<std::string, std::pair<size_t, int>> folded;
    std::vector<std::string> order;
    for (const Region& r : regions) {
      auto [it, inserted] = folded.try_emplace(r.name, 0, 0);
      if (inserted) order.push_back(r.name);
      it->second.first += r.bytes;
      it->second.second += 1;
    }
    for (const std::string& name : order)
      out += fmt::format("    {:<48} {:>12.3f} MiB{}\n", name, folded[name].first / (1024.0 * 1024.0),
                         folded[name].second > 1 ? fmt::format(" (x{})", folded[name].second) : "");
  }
  return out;
}

void* Carver::take_bytes(const std::string& name, RegionKind kind, size_t bytes) {
  offset_ = (offset_ + 255) / 256 * 256;
  void* ptr = nullptr;
  if (!sizing()) {
    DSV4_CHECK(offset_ + bytes <= capacity_, "device arena overflow at region '{}': {} + {} bytes > {}", name,
               offset_, bytes, capacity_);
    ptr = base_ + offset_;
  }
  offset_ += bytes;
  plan_.regions.push_back({name, kind, bytes});
  plan_.total_bytes = offset_;
  return ptr;
}

}  // namespace dsv4::cuda
