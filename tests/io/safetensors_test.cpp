// safetensors reader: round trip for every dtype, and a clear error naming the file
// and tensor for each kind of corruption.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "dsv4/error.h"
#include "dsv4/safetensors.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("dsv4_io_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Writes a raw file: 8-byte header length, header text, data bytes.
void write_raw(const fs::path& path, const std::string& header, size_t data_bytes) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t length = header.size();
  out.write(reinterpret_cast<const char*>(&length), 8);
  out << header;
  out << std::string(data_bytes, '\0');
}

std::string error_of(const fs::path& path) {
  try {
    SafetensorsFile file(path);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(Safetensors, RoundTripEveryDtype) {
  const fs::path dir = temp_dir("roundtrip");
  std::vector<uint8_t> bytes(64);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7);
  std::vector<TensorToWrite> tensors = {
      {"f32", DType::kF32, {2, 3}, bytes.data(), 24},       {"f16", DType::kF16, {4}, bytes.data(), 8},
      {"bf16", DType::kBF16, {3, 1}, bytes.data(), 6},      {"e4m3", DType::kF8_E4M3, {5}, bytes.data(), 5},
      {"e8m0", DType::kF8_E8M0, {2, 2}, bytes.data(), 4},   {"u8", DType::kU8, {7}, bytes.data(), 7},
      {"i8", DType::kI8, {1, 3}, bytes.data(), 3},          {"i64", DType::kI64, {2}, bytes.data(), 16},
      {"f4", DType::kF4, {3, 4}, bytes.data(), 6},          {"empty", DType::kF32, {0, 4}, bytes.data(), 0},
  };
  write_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  Checkpoint checkpoint(dir);
  for (const auto& t : tensors) {
    const TensorView& view = checkpoint.get(t.name);
    EXPECT_EQ(view.dtype, t.dtype) << t.name;
    EXPECT_EQ(view.shape, t.shape) << t.name;
    ASSERT_EQ(view.nbytes, t.nbytes) << t.name;
    EXPECT_EQ(std::memcmp(view.data, t.data, t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(checkpoint.files()[0]->metadata().at("format"), "pt");
}

TEST(Safetensors, TruncatedFile) {
  const fs::path dir = temp_dir("truncated");
  write_raw(dir / "a.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8);
  const std::string message = error_of(dir / "a.safetensors");
  EXPECT_NE(message.find("a.safetensors"), std::string::npos) << message;
  EXPECT_NE(message.find("tensor w"), std::string::npos) << message;
  EXPECT_NE(message.find("past the end"), std::string::npos) << message;
  std::ofstream(dir / "b.safetensors") << "abc";
  EXPECT_NE(error_of(dir / "b.safetensors").find("truncated"), std::string::npos);
  write_raw(dir / "c.safetensors", "", 0);
  std::ofstream(dir / "c.safetensors", std::ios::binary | std::ios::trunc).write("\xff\x00\x00\x00\x00\x00\x00\x00", 8);
  EXPECT_NE(error_of(dir / "c.safetensors").find("header length"), std::string::npos);
}

TEST(Safetensors, OverlappingOffsets) {
  const fs::path dir = temp_dir("overlap");
  write_raw(dir / "m.safetensors",
            R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})",
            24);
  const std::string message = error_of(dir / "m.safetensors");
  EXPECT_NE(message.find("overlap"), std::string::npos) << message;
  EXPECT_NE(message.find("a"), std::string::npos) << message;
}

TEST(Safetensors, SizeDisagreesWithDtypeAndShape) {
  const fs::path dir = temp_dir("size");
  write_raw(dir / "m.safetensors", R"({"w":{"dtype":"BF16","shape":[4],"data_offsets":[0,16]}})", 16);
  const std::string message = error_of(dir / "m.safetensors");
  EXPECT_NE(message.find("tensor w has 16 bytes"), std::string::npos) << message;
}

TEST(Safetensors, UnknownDtypeAndBadJson) {
  const fs::path dir = temp_dir("dtype");
  write_raw(dir / "m.safetensors", R"({"w":{"dtype":"Q3","shape":[4],"data_offsets":[0,4]}})", 4);
  EXPECT_NE(error_of(dir / "m.safetensors").find("unsupported dtype Q3"), std::string::npos);
  write_raw(dir / "n.safetensors", R"({"w":{"dtype":)", 0);
  EXPECT_NE(error_of(dir / "n.safetensors").find("not valid JSON"), std::string::npos);
}

TEST(Checkpoint, ShardedIndexAndMissingShard) {
  const fs::path dir = temp_dir("sharded");
  float values[4] = {1, 2, 3, 4};
  write_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", DType::kF32, {2}, values, 8}});
  write_safetensors(dir / "model-00002-of-00002.safetensors", {{"b", DType::kF32, {2}, values + 2, 8}});
  std::ofstream(dir / "model.safetensors.index.json")
      << R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})";
  Checkpoint checkpoint(dir);
  float b;
  std::memcpy(&b, checkpoint.get("b").data, 4);
  EXPECT_EQ(b, 3.0f);
  try {
    checkpoint.get("c");
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("missing tensor c"), std::string::npos);
  }
  fs::remove(dir / "model-00002-of-00002.safetensors");
  try {
    Checkpoint broken(dir);
    FAIL() << "expected an error";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("shard model-00002-of-00002.safetensors listed in the index is missing"),
              std::string::npos)
        << error.what();
  }
}

}  // namespace
}  // namespace dsv4
