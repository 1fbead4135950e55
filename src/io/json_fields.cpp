#include "io/json_fields.h"

#include <cmath>

#include "dsv4/error.h"

namespace dsv4 {

using nlohmann::json;

bool json_integer(const json& value, int64_t* out) {
  if (value.is_number_integer()) {
    *out = value.get<int64_t>();
    return true;
  }
  if (value.is_number_float()) {  // 4096.0 is accepted as 4096, 1.5 is not
    const double number = value.get<double>();
    if (std::isfinite(number) && std::floor(number) == number && std::fabs(number) < 9.0e18) {
      *out = static_cast<int64_t>(number);
      return true;
    }
  }
  return false;
}

JsonFields::JsonFields(const json& object, const std::string& source, std::string path)
    : object_(object), source_(source), path_(std::move(path)) {}

bool JsonFields::has(const std::string& key) const {
  auto it = object_.find(key);
  return it != object_.end() && !it->is_null();
}

bool JsonFields::contains(const std::string& key) const { return object_.contains(key); }

const json& JsonFields::at(const std::string& key) const { return object_.at(key); }

void JsonFields::fail_type(const std::string& key, const char* expected) const {
  fail("{}: field '{}' must be {}, got {}", source_, field_name(key), expected, at(key).dump());
}

void JsonFields::read(const std::string& key, int64_t& out) const {
  if (!has(key)) return;
  if (!json_integer(at(key), &out)) fail_type(key, "an integer");
}

void JsonFields::read(const std::string& key, double& out) const {
  if (!has(key)) return;
  if (!at(key).is_number()) fail_type(key, "a number");
  out = at(key).get<double>();
}

void JsonFields::read(const std::string& key, bool& out) const {
  if (!has(key)) return;
  if (!at(key).is_boolean()) fail_type(key, "true or false");
  out = at(key).get<bool>();
}

void JsonFields::read(const std::string& key, std::string& out) const {
  if (!has(key)) return;
  if (!at(key).is_string()) fail_type(key, "a string");
  out = at(key).get<std::string>();
}

void JsonFields::read(const std::string& key, std::vector<int64_t>& out) const {
  if (!has(key)) return;
  const json& list = at(key);
  if (!list.is_array()) fail_type(key, "a list of integers");
  std::vector<int64_t> values;
  for (const json& item : list) {
    int64_t value;
    if (!json_integer(item, &value)) fail_type(key, "a list of integers");
    values.push_back(value);
  }
  out = std::move(values);
}

void JsonFields::read(const std::string& key, std::vector<std::string>& out) const {
  if (!has(key)) return;
  const json& list = at(key);
  if (!list.is_array()) fail_type(key, "a list of strings");
  std::vector<std::string> values;
  for (const json& item : list) {
    if (!item.is_string()) fail_type(key, "a list of strings");
    values.push_back(item.get<std::string>());
  }
  out = std::move(values);
}

void JsonFields::require(const std::string& key, int64_t& out) const {
  DSV4_CHECK(has(key), "{}: missing required field '{}'", source_, field_name(key));
  read(key, out);
}

JsonFields JsonFields::object(const std::string& key) const {
  if (!at(key).is_object()) fail_type(key, "an object");
  return JsonFields(at(key), source_, path_ + key + ".");
}

}  // namespace dsv4
