// Post-processors for a single sequence: TemplateProcessing, Roberta/Bert ([cls] A
// [sep]), ByteLevel (offsets only: ids unchanged), Sequence.
#include "components.h"
#include "dsv4/error.h"

namespace dsv4::tokenizer {

namespace {

class TemplateProcessor final : public PostProcessor {
 public:
  explicit TemplateProcessor(const nlohmann::json& json) {
    const nlohmann::json& specials = json.at("special_tokens");
    for (const auto& item : json.at("single")) {
      if (item.contains("Sequence")) {
        pieces_.push_back({});  // empty: the sequence itself
        continue;
      }
      const std::string name = json_string(item.at("SpecialToken"), "id", "TemplateProcessing SpecialToken");
      if (!specials.contains(name)) fail("tokenizer.json: TemplateProcessing uses '{}' but special_tokens lacks it", name);
      pieces_.push_back(specials.at(name).at("ids").get<std::vector<int32_t>>());
      if (pieces_.back().empty()) fail("tokenizer.json: TemplateProcessing special token '{}' has no ids", name);
    }
  }
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    std::vector<int32_t> out;
    for (const auto& piece : pieces_) {
      if (piece.empty()) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), piece.begin(), piece.end());
      }
    }
    return out;
  }

 private:
  std::vector<std::vector<int32_t>> pieces_;
};

class WrapProcessor final : public PostProcessor {
 public:
  WrapProcessor(int32_t first, int32_t last) : first_(first), last_(last) {}
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    if (first_ >= 0) ids.insert(ids.begin(), first_);
    if (last_ >= 0) ids.push_back(last_);
    return ids;
  }

 private:
  int32_t first_, last_;
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(const nlohmann::json& json) {
    for (const auto& item : json.at("processors")) {
      if (auto step = make_post_processor(item)) steps_.push_back(std::move(step));
    }
  }
  std::vector<int32_t> process(std::vector<int32_t> ids) const override {
    for (const auto& step : steps_) ids = step->process(std::move(ids));
    return ids;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(const nlohmann::json& json) {
  if (json.is_null()) return nullptr;
  const std::string type = json_string(json, "type", "post_processor");
  if (type == "TemplateProcessing") return std::make_unique<TemplateProcessor>(json);
  if (type == "ByteLevel") return nullptr;
  if (type == "Sequence") return std::make_unique<SequenceProcessor>(json);
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    return std::make_unique<WrapProcessor>(json.at("cls").at(1).get<int32_t>(), json.at("sep").at(1).get<int32_t>());
  }
  fail("tokenizer.json: post-processor type '{}' is not supported (supported: TemplateProcessing, ByteLevel, "
       "Sequence, RobertaProcessing, BertProcessing)", type);
}

std::unique_ptr<PostProcessor> make_prepend_processor(int32_t id) { return std::make_unique<WrapProcessor>(id, -1); }

}  // namespace dsv4::tokenizer
