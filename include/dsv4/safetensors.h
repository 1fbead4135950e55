// Read-only, memory-mapped safetensors checkpoints (single file or sharded with
// model.safetensors.index.json). Every header is validated before any use:
// offsets inside the file, non-overlapping, sizes matching dtype x shape.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/dtype.h"

namespace dsv4 {

// A tensor inside a mapped file. `data` stays valid while its Checkpoint lives.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;   // as in the header (F4: counts FP4 elements)
  const uint8_t* data = nullptr;
  int64_t nbytes = 0;
  std::string file;             // file name, for error messages

  int64_t numel() const;
  std::string shape_string() const;  // "[4096, 1024]"
};

class SafetensorsFile {
 public:
  // Maps the file and parses/validates its header. Throws dsv4::Error naming the
  // file and the tensor for truncation, bad JSON, overlapping or out-of-range offsets,
  // unknown dtypes, or a byte size that disagrees with dtype and shape.
  explicit SafetensorsFile(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::filesystem::path path_;
  const uint8_t* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards listed in
// model.safetensors.index.json, or (fallback) every *.safetensors file in the folder.
class Checkpoint {
 public:
  explicit Checkpoint(const std::filesystem::path& directory);
  const std::filesystem::path& directory() const { return directory_; }

  bool has(const std::string& name) const;
  // Throws dsv4::Error("missing tensor NAME in DIR") when absent.
  const TensorView& get(const std::string& name) const;
  const TensorView* find(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::filesystem::path directory_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

// Writes tensors to one safetensors file (used by `dsv4 quantize`, tests, fixtures).
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  int64_t nbytes;
};
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace dsv4
