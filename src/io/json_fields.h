// Typed reads of config.json fields. Every error names the file and the field path
// ("config.json: field 'rope_parameters.compress.factor' must be a number, got "x"").
// A field that is absent or JSON null counts as absent (transformers' defaults apply).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dsv4 {

class JsonFields {
 public:
  // `path` prefixes field names in messages ("" at top level, "rope_parameters.main." below).
  JsonFields(const nlohmann::json& object, const std::string& source, std::string path = "");

  bool has(const std::string& key) const;           // present and not null
  bool contains(const std::string& key) const;      // present, possibly null
  const nlohmann::json& at(const std::string& key) const;
  std::string field_name(const std::string& key) const { return path_ + key; }
  const std::string& source() const { return source_; }

  // Overwrite `out` when the field is present; error when it has the wrong type.
  void read(const std::string& key, int64_t& out) const;     // integer (or integral float)
  void read(const std::string& key, double& out) const;      // any number
  void read(const std::string& key, bool& out) const;
  void read(const std::string& key, std::string& out) const;
  void read(const std::string& key, std::vector<int64_t>& out) const;  // list of integers
  void read(const std::string& key, std::vector<std::string>& out) const;
  void require(const std::string& key, int64_t& out) const;  // error when absent

  JsonFields object(const std::string& key) const;  // nested object (error if not one)
  [[noreturn]] void fail_type(const std::string& key, const char* expected) const;

 private:
  const nlohmann::json& object_;
  const std::string& source_;
  std::string path_;
};

// Integer value of a JSON number that is integral, or false.
bool json_integer(const nlohmann::json& value, int64_t* out);

}  // namespace dsv4
