// Streaming sharded safetensors writer (layout in shard_writer.h).
#include "formats/shard_writer.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "dsv4/error.h"

namespace dsv4::formats {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

ShardWriter::ShardWriter(fs::path directory, int64_t max_shard_bytes)
    : directory_(std::move(directory)), max_shard_bytes_(max_shard_bytes) {
  DSV4_CHECK(max_shard_bytes_ > 0, "shard size must be positive, got {}", max_shard_bytes_);
}

ShardWriter::~ShardWriter() {
  if (out_.is_open()) {  // an exception left a shard half written: do not leave it behind
    out_.close();
    std::error_code ignored;
    fs::remove(directory_ / (shards_[open_shard_] + ".partial"), ignored);
  }
}

void ShardWriter::declare(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  DSV4_CHECK(!assigned_, "ShardWriter: tensor {} declared after writing started", name);
  DSV4_CHECK(!name.empty() && name != "__metadata__" && !index_of_.count(name),
             "ShardWriter: tensor name '{}' is empty, reserved or declared twice", name);
  int64_t numel = 1;
  for (int64_t d : shape) {
    DSV4_CHECK(d >= 0, "ShardWriter: tensor {} has a negative dimension", name);
    numel *= d;
  }
  index_of_[name] = planned_.size();
  planned_.push_back({name, dtype, shape, dtype_storage_bytes(dtype, numel), 0});
}

void ShardWriter::assign_shards() {
  // Greedy in declaration order; a tensor larger than the limit gets a shard of its own.
  size_t shard = 0;
  int64_t in_shard = 0;
  for (size_t i = 0; i < planned_.size(); ++i) {
    if (in_shard > 0 && in_shard + planned_[i].nbytes > max_shard_bytes_) {
      ++shard;
      in_shard = 0;
    }
    planned_[i].shard = shard;
    in_shard += planned_[i].nbytes;
    total_bytes_ += planned_[i].nbytes;
  }
  const size_t count = planned_.empty() ? 1 : shard + 1;
  for (size_t s = 0; s < count; ++s)
    shards_.push_back(count == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, count));
  assigned_ = true;
}

void ShardWriter::open_shard(size_t shard) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  uint64_t offset = 0;
  for (const Planned& p : planned_) {
    if (p.shard != shard) continue;
    header[p.name] = {{"dtype", std::string(dtype_name(p.dtype))},
                      {"shape", p.shape},
                      {"data_offsets", {offset, offset + static_cast<uint64_t>(p.nbytes)}}};
    offset += static_cast<uint64_t>(p.nbytes);
  }
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  const fs::path partial = directory_ / (shards_[shard] + ".partial");
  out_.open(partial, std::ios::binary | std::ios::trunc);
  DSV4_CHECK(out_.good(), "cannot create {}", partial.string());
  const uint64_t length = text.size();
  out_.write(reinterpret_cast<const char*>(&length), 8);
  out_.write(text.data(), static_cast<std::streamsize>(text.size()));
  open_shard_ = shard;
}

void ShardWriter::close_shard() {
  if (!out_.is_open()) return;
  out_.close();
  const fs::path partial = directory_ / (shards_[open_shard_] + ".partial");
  DSV4_CHECK(!out_.fail(), "write to {} failed (disk full?)", partial.string());
  fs::rename(partial, directory_ / shards_[open_shard_]);
}

void ShardWriter::write(const std::string& name, const void* data, int64_t nbytes) {
  if (!assigned_) assign_shards();
  DSV4_CHECK(next_ < planned_.size() && planned_[next_].name == name,
             "ShardWriter: wrote tensor {} but the next declared one is {}", name,
             next_ < planned_.size() ? planned_[next_].name : "(none)");
  const Planned& p = planned_[next_];
  DSV4_CHECK(p.nbytes == nbytes, "ShardWriter: tensor {} declared as {} bytes ({} {}), written with {}", name, p.nbytes,
             dtype_name(p.dtype), p.shape.size(), nbytes);
  if (open_shard_ != p.shard) {
    close_shard();
    open_shard(p.shard);
  }
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(nbytes));
  DSV4_CHECK(out_.good(), "write of tensor {} to {} failed (disk full?)", name, shards_[p.shard]);
  ++next_;
}

void ShardWriter::finish() {
  if (!assigned_) assign_shards();
  DSV4_CHECK(next_ == planned_.size(), "ShardWriter: {} declared tensors were never written (first: {})",
             planned_.size() - next_, next_ < planned_.size() ? planned_[next_].name : "");
  if (planned_.empty()) open_shard(0);  // an empty checkpoint still gets its (empty) file
  close_shard();
  json index;
  index["metadata"] = {{"total_size", total_bytes_}};
  json map = json::object();
  for (const Planned& p : planned_) map[p.name] = shards_[p.shard];
  index["weight_map"] = map;
  std::ofstream out(directory_ / "model.safetensors.index.json");
  out << index.dump(2) << "\n";
  DSV4_CHECK(out.good(), "cannot write {}", (directory_ / "model.safetensors.index.json").string());
}

}  // namespace dsv4::formats
