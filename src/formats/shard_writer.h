// Streaming writer of a sharded safetensors checkpoint: every tensor's name, dtype and
// shape is declared first (so each shard's header can be written before its data),
// then the tensors are written one at a time in declaration order. Memory stays at one
// tensor, unlike write_safetensors, which needs a whole file's tensors at once.
//
// Files: model.safetensors when everything fits one shard, else
// model-0000K-of-0000N.safetensors; always model.safetensors.index.json
// ({"metadata": {"total_size": bytes}, "weight_map": {name: file}}). Each shard is
// written as FILE.partial and renamed when complete. Header layout as the reference
// implementation: 8-byte little-endian header length, JSON padded with spaces to a
// multiple of 8, then the tensors back to back in declaration order.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "dsv4/dtype.h"

namespace dsv4::formats {

class ShardWriter {
 public:
  ShardWriter(std::filesystem::path directory, int64_t max_shard_bytes);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Phase 1: declare every tensor, in the order they will be written.
  void declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  // Phase 2: the bytes of the next declared tensor (checked by name and size).
  void write(const std::string& name, const void* data, int64_t nbytes);
  // Closes the last shard and writes the index. Throws if a declared tensor is missing.
  void finish();

  int64_t total_bytes() const { return total_bytes_; }
  int64_t shard_count() const { return static_cast<int64_t>(shards_.size()); }

 private:
  struct Planned {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    int64_t nbytes;
    size_t shard;
  };
  void assign_shards();
  void open_shard(size_t shard);
  void close_shard();

  std::filesystem::path directory_;
  int64_t max_shard_bytes_;
  std::vector<Planned> planned_;
  std::map<std::string, size_t> index_of_;
  std::vector<std::string> shards_;  // file names
  size_t next_ = 0;
  bool assigned_ = false;
  size_t open_shard_ = static_cast<size_t>(-1);
  std::ofstream out_;
  int64_t total_bytes_ = 0;
};

}  // namespace dsv4::formats
