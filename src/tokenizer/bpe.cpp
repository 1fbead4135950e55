// BPE model of `tokenizers`: a piece's characters (with continuing_subword_prefix /
// end_of_word_suffix) become symbols, unknown ones go to <0xXX> byte tokens
// (byte_fallback) or the unk token (fused when fuse_unk); then the pair of adjacent
// symbols with the lowest merge rank is merged, leftmost first, until none is left.
#include <functional>
#include <queue>

#include "components.h"
#include "dsv4/error.h"
#include "utf8.h"

namespace dsv4::tokenizer {

namespace {

struct PairHash {
  size_t operator()(uint64_t key) const { return std::hash<uint64_t>()(key * 0x9e3779b97f4a7c15ull); }
};
uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

class BpeModel final : public Model {
 public:
  explicit BpeModel(const nlohmann::json& json) {
    if (!json.at("dropout").is_null() && json.at("dropout").get<double>() > 0) {
      fail("tokenizer.json: BPE dropout is a training feature; inference needs dropout null");
    }
    for (const auto& [token, id] : json.at("vocab").items()) {
      const auto value = id.get<int32_t>();
      vocab_.emplace(token, value);
      if (value >= static_cast<int32_t>(tokens_.size())) tokens_.resize(value + 1);
      tokens_[value] = token;
    }
    if (json.contains("unk_token") && json.at("unk_token").is_string()) {
      const auto it = vocab_.find(json.at("unk_token").get<std::string>());
      if (it == vocab_.end()) fail("tokenizer.json: BPE unk_token '{}' is not in the vocabulary", json.at("unk_token").get<std::string>());
      unk_ = it->second;
    }
    if (json.contains("continuing_subword_prefix") && json.at("continuing_subword_prefix").is_string()) {
      prefix_ = json.at("continuing_subword_prefix").get<std::string>();
    }
    if (json.contains("end_of_word_suffix") && json.at("end_of_word_suffix").is_string()) {
      suffix_ = json.at("end_of_word_suffix").get<std::string>();
    }
    fuse_unk_ = json_bool(json, "fuse_unk", false);
    byte_fallback_ = json_bool(json, "byte_fallback", false);
    ignore_merges_ = json_bool(json, "ignore_merges", false);
    int32_t rank = 0;
    for (const auto& merge : json.at("merges")) {
      std::string left, right;
      if (merge.is_array()) {  // tokenizers >= 0.20 writes ["a", "b"]
        left = merge.at(0).get<std::string>();
        right = merge.at(1).get<std::string>();
      } else {  // older files: "a b"
        const std::string text = merge.get<std::string>();
        const size_t space = text.find(' ');
        if (space == std::string::npos) fail("tokenizer.json: merge '{}' is not two tokens separated by a space", text);
        left = text.substr(0, space);
        right = text.substr(space + 1);
      }
      const std::string joined = left + right.substr(prefix_.size() <= right.size() && right.compare(0, prefix_.size(), prefix_) == 0 ? prefix_.size() : 0);
      const auto a = vocab_.find(left), b = vocab_.find(right), merged = vocab_.find(joined);
      if (a == vocab_.end() || b == vocab_.end() || merged == vocab_.end()) {
        fail("tokenizer.json: merge #{} ('{}' + '{}') uses a token missing from the vocabulary", rank, left, right);
      }
      merges_.emplace(pair_key(a->second, b->second), std::make_pair(rank++, merged->second));
    }
  }

  void tokenize(std::string_view piece, std::vector<int32_t>& ids) const override {
    if (piece.empty()) return;
    if (ignore_merges_) {
      if (const auto it = vocab_.find(std::string(piece)); it != vocab_.end()) {
        ids.push_back(it->second);
        return;
      }
    }
    std::vector<int32_t> symbols = initial_symbols(piece);
    merge(symbols);
    ids.insert(ids.end(), symbols.begin(), symbols.end());
  }

  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const auto it = vocab_.find(std::string(token));
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  std::optional<std::string> id_to_token(int32_t id) const override {
    if (id < 0 || id >= static_cast<int32_t>(tokens_.size())) return std::nullopt;
    if (tokens_[id].empty() && vocab_.find("") == vocab_.end()) return std::nullopt;
    return tokens_[id];
  }
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }

 private:
  std::vector<int32_t> initial_symbols(std::string_view word) const {
    std::vector<int32_t> symbols;
    int32_t pending_unk = -1;  // fused unk waiting to be emitted
    for (size_t pos = 0; pos < word.size();) {
      const size_t begin = pos;
      if (utf8::valid_sequence_length(word, pos)) {
        utf8::next(word, pos);
      } else {
        ++pos;  // encode() sanitizes input, so this is only reachable through odd vocabularies
      }
      std::string symbol(word.substr(begin, pos - begin));
      if (begin > 0) symbol = prefix_ + symbol;
      if (pos == word.size()) symbol += suffix_;
      if (const auto it = vocab_.find(symbol); it != vocab_.end()) {
        if (pending_unk >= 0) symbols.push_back(pending_unk);
        pending_unk = -1;
        symbols.push_back(it->second);
        continue;
      }
      if (byte_fallback_) {
        std::vector<int32_t> bytes;
        for (unsigned char byte : symbol) {
          char name[8];
          std::snprintf(name, sizeof(name), "<0x%02X>", byte);
          const auto it = vocab_.find(name);
          if (it == vocab_.end()) break;
          bytes.push_back(it->second);
        }
        if (bytes.size() == symbol.size()) {
          // tokenizers emits the byte tokens without flushing a pending unk first.
          symbols.insert(symbols.end(), bytes.begin(), bytes.end());
          continue;
        }
      }
      if (unk_ >= 0) {
        if (pending_unk >= 0 && !fuse_unk_) symbols.push_back(pending_unk);
        pending_unk = unk_;
      }
    }
    if (pending_unk >= 0) symbols.push_back(pending_unk);
    return symbols;
  }

  // Word::merge_all: a min-queue of (rank, position) over live adjacent pairs.
  void merge(std::vector<int32_t>& symbols) const {
    const size_t n = symbols.size();
    if (n < 2) return;
    std::vector<int> prev(n), next(n);
    std::vector<bool> alive(n, true);
    for (size_t i = 0; i < n; ++i) {
      prev[i] = static_cast<int>(i) - 1;
      next[i] = i + 1 < n ? static_cast<int>(i) + 1 : -1;
    }
    struct Candidate {
      int32_t rank;
      int pos;
      int32_t new_id;
      bool operator>(const Candidate& other) const { return rank != other.rank ? rank > other.rank : pos > other.pos; }
    };
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    auto push_pair = [&](int left) {
      if (left < 0 || next[left] < 0) return;
      const auto it = merges_.find(pair_key(symbols[left], symbols[next[left]]));
      if (it != merges_.end()) queue.push({it->second.first, left, it->second.second});
    };
    for (size_t i = 0; i + 1 < n; ++i) push_pair(static_cast<int>(i));
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      if (!alive[top.pos] || next[top.pos] < 0) continue;
      const int right = next[top.pos];
      const auto it = merges_.find(pair_key(symbols[top.pos], symbols[right]));
      if (it == merges_.end() || it->second.second != top.new_id) continue;  // stale entry
      symbols[top.pos] = top.new_id;
      alive[right] = false;
      next[top.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = top.pos;
      push_pair(prev[top.pos]);
      push_pair(top.pos);
    }
    std::vector<int32_t> merged;
    for (int i = 0; i >= 0; i = next[i]) merged.push_back(symbols[i]);
    symbols = std::move(merged);
  }

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> tokens_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>, PairHash> merges_;  // (left, right) -> (rank, merged id)
  std::string prefix_, suffix_;
  int32_t unk_ = -1;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
};

}  // namespace

std::unique_ptr<Model> make_bpe_model(const nlohmann::json& json) {
  const std::string type = json.value("type", std::string("BPE"));
  if (type != "BPE") fail("tokenizer.json: model type '{}' is not supported (only BPE)", type);
  return std::make_unique<BpeModel>(json);
}

}  // namespace dsv4::tokenizer
