// safetensors: 8-byte little-endian header length, JSON header, data section.
// Every tensor is validated against the file before anything reads it.
#include "dsv4/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "dsv4/error.h"

namespace dsv4 {

namespace fs = std::filesystem;
using nlohmann::json;

int64_t TensorView::numel() const {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

std::string TensorView::shape_string() const {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

SafetensorsFile::SafetensorsFile(const fs::path& path) : path_(path) {
  const std::string file = path.string();
  const int fd = ::open(file.c_str(), O_RDONLY);
  DSV4_CHECK(fd >= 0, "cannot open safetensors file {}: {}", file, std::strerror(errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    fail("cannot read safetensors file {}: not a regular file", file);
  }
  mapping_size_ = static_cast<size_t>(info.st_size);
  if (mapping_size_ > 0) {
    void* mapped = ::mmap(nullptr, mapping_size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    DSV4_CHECK(mapped != MAP_FAILED, "cannot map {}: {}", file, std::strerror(errno));
    mapping_ = static_cast<const uint8_t*>(mapped);
  } else {
    ::close(fd);
  }
  try {
    DSV4_CHECK(mapping_size_ >= 8, "{}: truncated file ({} bytes, a safetensors file starts with an 8-byte header length)",
               file, mapping_size_);
    uint64_t header_length = 0;
    std::memcpy(&header_length, mapping_, 8);
    DSV4_CHECK(header_length <= mapping_size_ - 8, "{}: truncated file: header length {} but only {} bytes follow", file,
               header_length, mapping_size_ - 8);
    const char* header_begin = reinterpret_cast<const char*>(mapping_ + 8);
    json header;
    try {
      header = json::parse(header_begin, header_begin + header_length);
    } catch (const json::exception& error) {
      fail("{}: header is not valid JSON: {}", file, error.what());
    }
    DSV4_CHECK(header.is_object(), "{}: header must be a JSON object", file);
    const uint64_t data_begin = 8 + header_length;
    const uint64_t data_size = mapping_size_ - data_begin;
    std::vector<std::pair<uint64_t, uint64_t>> spans;  // [begin, end) for overlap checks
    std::vector<std::string> span_names;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (it.value().is_object())
          for (auto m = it.value().begin(); m != it.value().end(); ++m)
            if (m.value().is_string()) metadata_[m.key()] = m.value().get<std::string>();
        continue;
      }
      const std::string& name = it.key();
      const json& entry = it.value();
      DSV4_CHECK(entry.is_object() && entry.contains("dtype") && entry.contains("shape") && entry.contains("data_offsets"),
                 "{}: tensor {} needs dtype, shape and data_offsets", file, name);
      TensorView view;
      view.name = name;
      view.file = path.filename().string();
      const std::string dtype = entry["dtype"].is_string() ? entry["dtype"].get<std::string>() : entry["dtype"].dump();
      DSV4_CHECK(parse_dtype(dtype, &view.dtype),
                 "{}: tensor {} has unsupported dtype {} (expected F32, F16, BF16, F8_E4M3, F8_E8M0, U8, I8, I32, I64 or F4)",
                 file, name, dtype);
      DSV4_CHECK(entry["shape"].is_array(), "{}: tensor {} shape is not a list", file, name);
      int64_t numel = 1;
      for (const json& d : entry["shape"]) {
        DSV4_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0, "{}: tensor {} has a bad dimension {}", file, name,
                   d.dump());
        view.shape.push_back(d.get<int64_t>());
        DSV4_CHECK(!__builtin_mul_overflow(numel, d.get<int64_t>(), &numel) && numel < (int64_t{1} << 60),
                   "{}: tensor {} has an impossible shape {}", file, name, entry["shape"].dump());
      }
      const json& offsets = entry["data_offsets"];
      DSV4_CHECK(offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
                     offsets[1].is_number_unsigned(),
                 "{}: tensor {} data_offsets must be two non-negative integers", file, name);
      const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
      DSV4_CHECK(begin <= end, "{}: tensor {} data_offsets [{}, {}) run backwards", file, name, begin, end);
      DSV4_CHECK(end <= data_size, "{}: tensor {} data_offsets [{}, {}) run past the end of the data ({} bytes; file truncated?)",
                 file, name, begin, end, data_size);
      const int64_t expected = dtype_storage_bytes(view.dtype, view.numel());
      DSV4_CHECK(static_cast<int64_t>(end - begin) == expected,
                 "{}: tensor {} has {} bytes but dtype {} x shape {} needs {}", file, name, end - begin, dtype,
                 view.shape_string(), expected);
      view.data = mapping_ + data_begin + begin;
      view.nbytes = static_cast<int64_t>(end - begin);
      spans.emplace_back(begin, end);
      span_names.push_back(name);
      tensors_.emplace(name, std::move(view));
    }
    // Overlap check: sort spans by start; empty tensors never overlap.
    std::vector<size_t> order(spans.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return spans[a] < spans[b]; });
    for (size_t i = 1; i < order.size(); ++i) {
      const auto& prev = spans[order[i - 1]];
      const auto& cur = spans[order[i]];
      if (prev.second > prev.first && cur.second > cur.first)
        DSV4_CHECK(cur.first >= prev.second, "{}: tensors {} and {} overlap (data_offsets [{}, {}) and [{}, {}))", file,
                   span_names[order[i - 1]], span_names[order[i]], prev.first, prev.second, cur.first, cur.second);
    }
  } catch (...) {
    if (mapping_) ::munmap(const_cast<uint8_t*>(mapping_), mapping_size_);
    mapping_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) ::munmap(const_cast<uint8_t*>(mapping_), mapping_size_);
}

Checkpoint::Checkpoint(const fs::path& directory) : directory_(directory) {
  DSV4_CHECK(fs::is_directory(directory), "checkpoint directory {} does not exist", directory.string());
  std::vector<fs::path> shards;
  const fs::path index = directory / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;
  if (fs::exists(index)) {
    std::ifstream in(index);
    DSV4_CHECK(in.good(), "cannot open {}", index.string());
    json object;
    try {
      object = json::parse(in);
    } catch (const json::exception& error) {
      fail("{}: invalid JSON: {}", index.string(), error.what());
    }
    DSV4_CHECK(object.contains("weight_map") && object["weight_map"].is_object(), "{}: missing weight_map",
               index.string());
    std::set<std::string> files;
    for (auto it = object["weight_map"].begin(); it != object["weight_map"].end(); ++it) {
      DSV4_CHECK(it.value().is_string(), "{}: weight_map[{}] must be a file name", index.string(), it.key());
      weight_map[it.key()] = it.value().get<std::string>();
      files.insert(it.value().get<std::string>());
    }
    for (const auto& f : files) {
      const fs::path relative(f);
      DSV4_CHECK(!relative.empty() && relative.is_relative() &&
                     std::find(relative.begin(), relative.end(), "..") == relative.end(),
                 "{}: shard name '{}' must be a file inside the checkpoint directory", index.string(), f);
      DSV4_CHECK(fs::exists(directory / f), "{}: shard {} listed in the index is missing", index.string(), f);
      shards.push_back(directory / f);
    }
  } else if (fs::exists(directory / "model.safetensors")) {
    shards.push_back(directory / "model.safetensors");
  } else {
    for (const auto& entry : fs::directory_iterator(directory))
      if (entry.path().extension() == ".safetensors") shards.push_back(entry.path());
    std::sort(shards.begin(), shards.end());
  }
  DSV4_CHECK(!shards.empty(), "no safetensors files in {}", directory.string());
  for (const auto& shard : shards) {
    files_.push_back(std::make_unique<SafetensorsFile>(shard));
    for (const auto& [name, view] : files_.back()->tensors()) {
      auto [it, inserted] = index_.emplace(name, &view);
      DSV4_CHECK(inserted, "tensor {} appears in both {} and {}", name, it->second->file, view.file);
    }
  }
  for (const auto& [name, file] : weight_map) {
    auto it = index_.find(name);
    DSV4_CHECK(it != index_.end(), "{}: tensor {} is listed in the index (file {}) but is not in that shard",
               index.string(), name, file);
    DSV4_CHECK(it->second->file == file, "{}: tensor {} is listed in {} but found in {}", index.string(), name, file,
               it->second->file);
  }
}

bool Checkpoint::has(const std::string& name) const { return index_.count(name) > 0; }

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* view = find(name);
  DSV4_CHECK(view != nullptr, "missing tensor {} in {}", name, directory_.string());
  return *view;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> result;
  for (const auto& [name, view] : index_) result.push_back(name);
  return result;
}

void write_safetensors(const fs::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    DSV4_CHECK(!t.name.empty() && t.name != "__metadata__" && !header.contains(t.name),
               "write_safetensors {}: tensor name '{}' is empty, reserved or given twice", path.string(), t.name);
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    DSV4_CHECK(dtype_storage_bytes(t.dtype, numel) == t.nbytes, "write_safetensors: tensor {} has {} bytes, dtype/shape need {}",
               t.name, t.nbytes, dtype_storage_bytes(t.dtype, numel));
    header[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + static_cast<uint64_t>(t.nbytes)}}};
    offset += static_cast<uint64_t>(t.nbytes);
  }
  std::string text = header.dump();
  while (text.size() % 8) text += ' ';
  const fs::path temporary = path.string() + ".partial";
  {
    std::ofstream out(temporary, std::ios::binary);
    DSV4_CHECK(out.good(), "cannot write {}", temporary.string());
    const uint64_t length = text.size();
    out.write(reinterpret_cast<const char*>(&length), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : tensors) out.write(static_cast<const char*>(t.data), t.nbytes);
    DSV4_CHECK(out.good(), "write to {} failed", temporary.string());
  }
  fs::rename(temporary, path);  // never leave a half-written file under the final name
}

}  // namespace dsv4
