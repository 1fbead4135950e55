// safetensors reader: round trip for every dtype, and a clear error naming the file
// and tensor for each kind of corruption.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

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

std::string checkpoint_error(const fs::path& dir) {
  try {
    Checkpoint checkpoint(dir);
  } catch (const Error& error) {
    return error.what();
  }
  return "(no error)";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

TEST(Safetensors, WriterLayout) {
  // 8-byte little-endian length, JSON padded with spaces to a multiple of 8, then the
  // data in the given order (not the header's sorted order).
  const fs::path dir = temp_dir("layout");
  const uint8_t a[3] = {1, 2, 3}, b[2] = {9, 8};
  write_safetensors(dir / "x.safetensors", {{"zeta", DType::kU8, {3}, a, 3}, {"alpha", DType::kU8, {2}, b, 2}});
  std::ifstream in(dir / "x.safetensors", std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  uint64_t length;
  std::memcpy(&length, bytes.data(), 8);
  EXPECT_EQ(length % 8, 0u);
  ASSERT_EQ(bytes.size(), 8 + length + 5);
  const std::string header = bytes.substr(8, length);
  EXPECT_EQ(header.find_first_not_of(' ', header.rfind('}') + 1), std::string::npos) << header;
  EXPECT_EQ(bytes.substr(8 + length), std::string("\x01\x02\x03\x09\x08", 5));
  SafetensorsFile file(dir / "x.safetensors");
  EXPECT_EQ(file.tensors().at("alpha").data[1], 8);
  EXPECT_EQ(file.tensors().at("zeta").shape_string(), "[3]");
  EXPECT_TRUE(file.metadata().empty());
}

TEST(Safetensors, WriterRejectsBadInput) {
  const fs::path dir = temp_dir("writer");
  const uint8_t a[4] = {};
  try {
    write_safetensors(dir / "x.safetensors", {{"a", DType::kU8, {2}, a, 2}, {"a", DType::kU8, {2}, a, 2}});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(error.what(), "tensor name 'a' is empty, reserved or given twice");
  }
  try {
    write_safetensors(dir / "x.safetensors", {{"a", DType::kF32, {2}, a, 4}});
    ADD_FAILURE() << "expected an error";
  } catch (const Error& error) {
    EXPECT_CONTAINS(error.what(), "tensor a has 4 bytes, dtype/shape need 8");
  }
  EXPECT_FALSE(fs::exists(dir / "x.safetensors"));
}

TEST(Safetensors, OffsetsPastEndAndBackwards) {
  const fs::path dir = temp_dir("offsets");
  write_raw(dir / "m.safetensors", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", 6);
  std::string message = error_of(dir / "m.safetensors");
  EXPECT_CONTAINS(message, "m.safetensors: tensor w data_offsets [4, 8) run past the end of the data (6 bytes");
  write_raw(dir / "n.safetensors", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,2]}})", 6);
  EXPECT_CONTAINS(error_of(dir / "n.safetensors"), "tensor w data_offsets [4, 2) run backwards");
  write_raw(dir / "o.safetensors", R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[-2,0]}})", 6);
  EXPECT_CONTAINS(error_of(dir / "o.safetensors"), "tensor w data_offsets must be two non-negative integers");
  write_raw(dir / "p.safetensors", R"({"w":{"dtype":"U8","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0);
  EXPECT_CONTAINS(error_of(dir / "p.safetensors"), "tensor w has an impossible shape");
  write_raw(dir / "q.safetensors", R"({"w":{"dtype":"U8","shape":[2]}})", 2);
  EXPECT_CONTAINS(error_of(dir / "q.safetensors"), "tensor w needs dtype, shape and data_offsets");
  write_raw(dir / "r.safetensors", R"({"w":{"dtype":"U8","shape":[-2],"data_offsets":[0,2]}})", 2);
  EXPECT_CONTAINS(error_of(dir / "r.safetensors"), "tensor w has a bad dimension -2");
  write_raw(dir / "s.safetensors", R"([1, 2])", 0);
  EXPECT_CONTAINS(error_of(dir / "s.safetensors"), "header must be a JSON object");
}

TEST(Safetensors, WrongShapeForBytes) {
  const fs::path dir = temp_dir("shape");
  write_raw(dir / "m.safetensors", R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20);
  EXPECT_CONTAINS(error_of(dir / "m.safetensors"), "tensor w has 20 bytes but dtype F32 x shape [2, 3] needs 24");
  write_raw(dir / "f4.safetensors", R"({"w":{"dtype":"F4","shape":[2,3],"data_offsets":[0,6]}})", 6);
  EXPECT_CONTAINS(error_of(dir / "f4.safetensors"), "tensor w has 6 bytes but dtype F4 x shape [2, 3] needs 3");
}

TEST(Safetensors, AdjacentAndEmptyTensorsDoNotOverlap) {
  const fs::path dir = temp_dir("adjacent");
  write_raw(dir / "m.safetensors",
            R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"e":{"dtype":"U8","shape":[0],"data_offsets":[2,2]},)"
            R"("b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},"__metadata__":{"format":"pt"}})",
            8);
  SafetensorsFile file(dir / "m.safetensors");
  EXPECT_EQ(file.tensors().size(), 3u);
  EXPECT_EQ(file.metadata().at("format"), "pt");
  write_raw(dir / "n.safetensors",
            R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}})",
            4);
  const std::string message = error_of(dir / "n.safetensors");
  EXPECT_CONTAINS(message, "tensors a and b overlap (data_offsets [0, 4) and [3, 4))");
}

TEST(Checkpoint, IndexListsTensorMissingFromItsShard) {
  const fs::path dir = temp_dir("index_missing");
  const float values[2] = {1, 2};
  write_safetensors(dir / "s1.safetensors", {{"a", DType::kF32, {2}, values, 8}});
  std::ofstream(dir / "model.safetensors.index.json") << R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s1.safetensors"}})";
  std::string message = checkpoint_error(dir);
  EXPECT_CONTAINS(message, "model.safetensors.index.json: tensor b is listed in the index (file s1.safetensors) but is not in that shard");
  write_safetensors(dir / "s2.safetensors", {{"b", DType::kF32, {2}, values, 8}});
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc)
      << R"({"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s2.safetensors"}})";
  message = checkpoint_error(dir);
  EXPECT_CONTAINS(message, "tensor b is listed in s1.safetensors but found in s2.safetensors");
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << R"({"weight_map":{"a":"../s1.safetensors"}})";
  EXPECT_CONTAINS(checkpoint_error(dir), "shard name '../s1.safetensors' must be a file inside the checkpoint directory");
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << R"({"weights":{}})";
  EXPECT_CONTAINS(checkpoint_error(dir), "model.safetensors.index.json: missing weight_map");
  std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << R"({"weight_map":)";
  EXPECT_CONTAINS(checkpoint_error(dir), "model.safetensors.index.json: invalid JSON");
}

TEST(Checkpoint, AllShardsWithoutIndexAndDuplicates) {
  const fs::path dir = temp_dir("glob");
  const float values[2] = {1, 2};
  write_safetensors(dir / "b.safetensors", {{"y", DType::kF32, {2}, values, 8}});
  write_safetensors(dir / "a.safetensors", {{"x", DType::kF32, {1}, values, 4}});
  std::ofstream(dir / "notes.txt") << "not a shard";
  Checkpoint checkpoint(dir);
  EXPECT_EQ(checkpoint.names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(checkpoint.files().size(), 2u);
  EXPECT_EQ(checkpoint.get("y").file, "b.safetensors");
  EXPECT_TRUE(checkpoint.has("x"));
  EXPECT_EQ(checkpoint.find("z"), nullptr);
  write_safetensors(dir / "c.safetensors", {{"x", DType::kF32, {1}, values + 1, 4}});
  EXPECT_CONTAINS(checkpoint_error(dir), "tensor x appears in both a.safetensors and c.safetensors");
  // model.safetensors alone wins over the other files.
  write_safetensors(dir / "model.safetensors", {{"m", DType::kF32, {1}, values, 4}});
  EXPECT_EQ(Checkpoint(dir).names(), (std::vector<std::string>{"m"}));
}

TEST(Checkpoint, EmptyOrMissingDirectory) {
  const fs::path dir = temp_dir("empty");
  EXPECT_CONTAINS(checkpoint_error(dir), "no safetensors files in");
  EXPECT_CONTAINS(checkpoint_error(dir / "nope"), "does not exist");
  fs::create_directories(dir / "model.safetensors");  // a directory where a file should be
  EXPECT_CONTAINS(checkpoint_error(dir), "not a regular file");
}

}  // namespace
}  // namespace dsv4
