// The quantize pipeline: plan every output tensor (names, dtypes, shapes are fixed by
// the input shapes and the options), declare them to the streaming shard writer, then
// convert one matrix at a time in stripes of 128 rows, measuring the error of each
// stripe against the source as it goes.
#include "formats/checkpoint_quantizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "dsv4/error.h"
#include "dsv4/formats.h"
#include "dsv4/weight_format.h"
#include "formats/checkpoint_survey.h"
#include "formats/shard_writer.h"
#include "io/key_names.h"

namespace dsv4::formats {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

enum class Target { kCopy, kBF16, kFP8Block, kMXFP4, kNVFP4 };

const char* target_name(Target t) {
  switch (t) {
    case Target::kCopy: return "copy";
    case Target::kBF16: return "bf16";
    case Target::kFP8Block: return "fp8_block";
    case Target::kMXFP4: return "mxfp4";
    case Target::kNVFP4: return "nvfp4";
  }
  return "?";
}

struct OutputTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

// One unit of work: a matrix to convert, or a stored entry to copy.
struct Job {
  Target target = Target::kCopy;
  QuantMatrix source;                 // converted jobs
  const SurveyEntry* entry = nullptr; // copy jobs: every part
  std::vector<OutputTensor> outputs;  // in write order
  TensorReport report;
};

std::string strip_weight(const std::string& name) {
  return name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0 ? name.substr(0, name.size() - 7) : name;
}

std::vector<OutputTensor> outputs_of(Target target, const std::string& base, int64_t rows, int64_t cols) {
  switch (target) {
    case Target::kBF16: return {{base + ".weight", DType::kBF16, {rows, cols}}};
    case Target::kFP8Block:
      return {{base + ".weight", DType::kF8_E4M3, {rows, cols}},
              {base + ".scale", DType::kF8_E8M0, {(rows + 127) / 128, (cols + 127) / 128}}};
    case Target::kMXFP4:
      return {{base + ".weight", DType::kI8, {rows, cols / 2}}, {base + ".scale", DType::kF8_E8M0, {rows, cols / 32}}};
    case Target::kNVFP4:
      return {{base + ".weight", DType::kU8, {rows, cols / 2}},
              {base + ".weight_scale", DType::kF8_E4M3, {rows, cols / 16}},
              {base + ".weight_scale_2", DType::kF32, {}}};
    case Target::kCopy: break;
  }
  return {};
}

Job matrix_job(const QuantMatrix& source, const std::string& out_base, Target wanted, TensorRole role,
               const std::string& source_name, int64_t source_bytes) {
  Job job;
  job.source = source;
  job.target = wanted;
  const int64_t rows = source.rows, cols = source.cols;
  if ((wanted == Target::kMXFP4 && cols % kMXFP4BlockSize != 0) || (wanted == Target::kNVFP4 && cols % kNVFP4BlockSize != 0)) {
    job.target = Target::kFP8Block;
    job.report.note = fmt::format("{} needs in_features divisible by {}, this one has {}: stored fp8_block",
                                  target_name(wanted), wanted == Target::kMXFP4 ? kMXFP4BlockSize : kNVFP4BlockSize, cols);
  }
  if (job.target == Target::kBF16 && source.format == WeightFormat::kBF16) job.report.note = "already bf16: copied";
  job.outputs = outputs_of(job.target, out_base, rows, cols);
  TensorReport& r = job.report;
  r.name = out_base + ".weight";
  r.source = source_name;
  r.role = tensor_role_name(role);
  r.source_format = weight_format_name(source.format);
  r.format = target_name(job.target);
  r.shape = {rows, cols};
  r.source_bytes = source_bytes;
  r.converted = true;
  for (const OutputTensor& o : job.outputs) {
    int64_t numel = 1;
    for (int64_t d : o.shape) numel *= d;
    r.bytes += dtype_storage_bytes(o.dtype, numel);
  }
  return job;
}

// transformers' fused experts [E, 2I, H] (gate_up: w1 rows [0, I), w3 rows [I, 2I)) and
// [E, H, I] (down: w2): one job per official expert matrix, views into the tensor.
void fused_jobs(const SurveyEntry& e, Target wanted, std::vector<Job>& jobs) {
  const TensorView& t = *e.parts.front();
  WeightFormat format;
  switch (t.dtype) {
    case DType::kF32: format = WeightFormat::kF32; break;
    case DType::kBF16: format = WeightFormat::kBF16; break;
    case DType::kF16: format = WeightFormat::kF16; break;
    default:
      fail("tensor {} in {}: fused experts of dtype {} are not supported (expected F32, BF16 or F16)", t.name, t.file,
           dtype_name(t.dtype));
  }
  const bool gate_up = t.name.size() >= 12 && t.name.compare(t.name.size() - 12, 12, "gate_up_proj") == 0;
  const int64_t experts = t.shape[0], rows = t.shape[1], cols = t.shape[2];
  DSV4_CHECK(!gate_up || rows % 2 == 0, "tensor {} in {}: fused gate_up_proj {} needs an even middle dimension (2 * I)",
             t.name, t.file, t.shape_string());
  const int64_t element = dtype_storage_bytes(t.dtype, 1);
  auto view = [&](int64_t first_row, int64_t count) {
    QuantMatrix m;
    m.name = t.name;
    m.format = format;
    m.rows = count;
    m.cols = cols;
    m.data = t.data + first_row * cols * element;
    return m;
  };
  for (int64_t x = 0; x < experts; ++x) {
    const std::string base = fmt::format("layers.{}.ffn.experts.{}.", e.layer, x);
    if (gate_up) {
      const int64_t inter = rows / 2;
      jobs.push_back(matrix_job(view(x * rows, inter), base + "w1", wanted, TensorRole::kRoutedExpert,
                                fmt::format("{}[{}, :{}]", t.name, x, inter), inter * cols * element));
      jobs.push_back(matrix_job(view(x * rows + inter, inter), base + "w3", wanted, TensorRole::kRoutedExpert,
                                fmt::format("{}[{}, {}:]", t.name, x, inter), inter * cols * element));
    } else {
      jobs.push_back(matrix_job(view(x * rows, rows), base + "w2", wanted, TensorRole::kRoutedExpert,
                                fmt::format("{}[{}]", t.name, x), rows * cols * element));
    }
  }
}

Job copy_job(const SurveyEntry& e) {
  Job job;
  job.entry = &e;
  for (const TensorView* p : e.parts) {
    const std::string official = official_name_for(p->name);
    job.outputs.push_back({official.empty() ? p->name : official, p->dtype, p->shape});
  }
  TensorReport& r = job.report;
  r.name = job.outputs.front().name;
  r.source = e.name;
  r.role = tensor_role_name(e.role);
  r.source_format = e.format;
  r.format = e.format;
  r.shape = e.is_matrix ? std::vector<int64_t>{e.matrix.rows, e.matrix.cols} : e.parts.front()->shape;
  r.source_bytes = r.bytes = e.bytes;
  if (e.official.empty() && e.layer != -2) r.note = "not a DeepSeek-V4 tensor name: copied under its own name";
  return job;
}

void check_finite(const float* values, int64_t rows, int64_t cols, int64_t first_row, const std::string& name) {
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(values[i]))
      fail("tensor {}: value {} at [{}, {}] is not finite; refusing to quantize (fix the source checkpoint)", name,
           values[i], first_row + i / cols, i % cols);
}

// Converts one matrix job and writes its outputs.
void run_matrix_job(Job& job, ShardWriter& writer) {
  const QuantMatrix& src = job.source;
  const int64_t rows = src.rows, cols = src.cols;
  TensorReport& report = job.report;
  ErrorStats stats;
  std::vector<std::vector<uint8_t>> buffers;
  for (const OutputTensor& o : job.outputs) {
    int64_t numel = 1;
    for (int64_t d : o.shape) numel *= d;
    buffers.emplace_back(static_cast<size_t>(dtype_storage_bytes(o.dtype, numel)));
  }
  if (job.target == Target::kBF16 && src.format == WeightFormat::kBF16) {  // exact: copy
    std::memcpy(buffers[0].data(), src.data, buffers[0].size());
  } else {
    const int64_t stripe_rows = kFP8BlockSize;
    std::vector<float> stripe(static_cast<size_t>(stripe_rows * cols)), back(stripe.size());
    float tensor_scale = 1.0f;
    if (job.target == Target::kNVFP4) {  // pass 1: the tensor's amax
      float amax = 0;
      for (int64_t r0 = 0; r0 < rows; r0 += stripe_rows) {
        const int64_t n = std::min(stripe_rows, rows - r0);
        dequantize_rows(src, r0, n, stripe.data());
        check_finite(stripe.data(), n, cols, r0, src.name);
        for (int64_t i = 0; i < n * cols; ++i) amax = std::max(amax, std::fabs(stripe[i]));
      }
      tensor_scale = amax > 0 ? amax / (6.0f * 448.0f) : 1.0f;  // = nvfp4_tensor_scale
      std::memcpy(buffers[2].data(), &tensor_scale, 4);
    }
    QuantMatrix out;  // view of the outputs, to measure the error stripe by stripe
    out.name = report.name;
    out.rows = rows;
    out.cols = cols;
    out.data = buffers[0].data();
    out.scales = buffers.size() > 1 ? buffers[1].data() : nullptr;
    out.tensor_scale = tensor_scale;
    switch (job.target) {
      case Target::kBF16: out.format = WeightFormat::kBF16; break;
      case Target::kFP8Block:
        out.format = WeightFormat::kFP8Block;
        out.scale_dtype = DType::kF8_E8M0;
        out.scale_rows = (rows + 127) / 128;
        out.scale_cols = (cols + 127) / 128;
        break;
      case Target::kMXFP4:
        out.format = WeightFormat::kMXFP4;
        out.scale_dtype = DType::kF8_E8M0;
        out.scale_rows = rows;
        out.scale_cols = cols / 32;
        break;
      case Target::kNVFP4:
        out.format = WeightFormat::kNVFP4;
        out.scale_dtype = DType::kF8_E4M3;
        out.scale_rows = rows;
        out.scale_cols = cols / 16;
        break;
      case Target::kCopy: break;
    }
    for (int64_t r0 = 0; r0 < rows; r0 += stripe_rows) {
      const int64_t n = std::min(stripe_rows, rows - r0);
      dequantize_rows(src, r0, n, stripe.data());
      check_finite(stripe.data(), n, cols, r0, src.name);
      uint8_t* data = buffers[0].data();
      switch (job.target) {
        case Target::kBF16:
          for (int64_t i = 0; i < n * cols; ++i) {
            const uint16_t bits = float_to_bf16(stripe[i]);
            std::memcpy(data + 2 * (r0 * cols + i), &bits, 2);
          }
          break;
        case Target::kFP8Block:
          quantize_fp8_block_stripe(stripe.data(), n, cols, data + r0 * cols, buffers[1].data() + (r0 / 128) * out.scale_cols);
          break;
        case Target::kMXFP4:
          for (int64_t r = 0; r < n; ++r)
            quantize_mxfp4_row(&stripe[r * cols], cols, data + (r0 + r) * cols / 2, buffers[1].data() + (r0 + r) * (cols / 32));
          break;
        case Target::kNVFP4:
          for (int64_t r = 0; r < n; ++r)
            quantize_nvfp4_row(&stripe[r * cols], cols, tensor_scale, data + (r0 + r) * cols / 2,
                               buffers[1].data() + (r0 + r) * (cols / 16));
          break;
        case Target::kCopy: break;
      }
      dequantize_rows(out, r0, n, back.data());
      stats.add(stripe.data(), back.data(), n * cols);
    }
  }
  report.relative_frobenius = stats.relative_frobenius();
  report.cosine = stats.cosine();
  report.max_abs_diff = stats.max_abs_diff;
  for (size_t i = 0; i < job.outputs.size(); ++i)
    writer.write(job.outputs[i].name, buffers[i].data(), static_cast<int64_t>(buffers[i].size()));
}

// Module globs that are not NVFP4, for ModelOpt's exclude_modules.
const std::vector<std::string> kNotExpertModules = {
    "embed", "head", "layers.*.attn*", "layers.*.ffn.gate", "layers.*.ffn.shared_experts*", "mtp*"};

json output_config(const fs::path& input_config, const QuantizeOptions& options) {
  std::ifstream in(input_config);
  DSV4_CHECK(in.good(), "cannot read {}", input_config.string());
  json config;
  try {
    config = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", input_config.string(), e.what());
  }
  DSV4_CHECK(config.is_object(), "{}: expected a JSON object", input_config.string());
  config.erase("quantization_config");
  config.erase("expert_dtype");
  if (options.experts == ExpertFormat::kNVFP4) {
    config["quantization_config"] = {{"quant_method", "modelopt"},
                                     {"quant_algo", "NVFP4"},
                                     {"group_size", 16},
                                     {"exclude_modules", kNotExpertModules}};
  } else {
    config["quantization_config"] = {{"quant_method", "fp8"},
                                     {"fmt", "e4m3"},
                                     {"scale_fmt", "ue8m0"},
                                     {"weight_block_size", {128, 128}},
                                     {"activation_scheme", "dynamic"}};
    config["expert_dtype"] = options.experts == ExpertFormat::kMXFP4 ? "fp4" : "fp8";
  }
  return config;
}

}  // namespace

ExpertFormat parse_expert_format(const std::string& text) {
  if (text == "nvfp4") return ExpertFormat::kNVFP4;
  if (text == "mxfp4") return ExpertFormat::kMXFP4;
  if (text == "fp8") return ExpertFormat::kFP8;
  fail("--experts '{}' is not a format: expected nvfp4, mxfp4 or fp8", text);
}

DenseFormat parse_dense_format(const std::string& text) {
  if (text == "fp8") return DenseFormat::kFP8;
  if (text == "bf16") return DenseFormat::kBF16;
  fail("--dense '{}' is not a format: expected fp8 or bf16", text);
}

QuantizeReport quantize_checkpoint(const QuantizeOptions& options, const ProgressCallback& progress) {
  DSV4_CHECK(fs::is_directory(options.input), "input {} is not a directory", options.input.string());
  const fs::path input_config = options.input / "config.json";
  DSV4_CHECK(fs::exists(input_config), "input {} has no config.json (the output needs one with quantization_config)",
             options.input.string());
  std::error_code ec;
  DSV4_CHECK(!fs::exists(options.output) || !fs::equivalent(options.input, options.output, ec),
             "--out {} is the input folder: write the quantized checkpoint somewhere else", options.output.string());
  if (fs::exists(options.output)) {
    DSV4_CHECK(fs::is_directory(options.output), "--out {} exists and is not a directory", options.output.string());
    for (const auto& item : fs::directory_iterator(options.output)) {
      const std::string file = item.path().filename().string();
      DSV4_CHECK(item.path().extension() != ".safetensors" && file != "model.safetensors.index.json",
                 "--out {} already holds a checkpoint ({}): choose an empty or new folder", options.output.string(), file);
    }
  }
  const Checkpoint checkpoint(options.input);
  const std::vector<SurveyEntry> entries = survey_checkpoint(checkpoint);

  const Target expert_target = options.experts == ExpertFormat::kNVFP4   ? Target::kNVFP4
                               : options.experts == ExpertFormat::kMXFP4 ? Target::kMXFP4
                                                                         : Target::kFP8Block;
  const Target dense_target = options.dense == DenseFormat::kFP8 ? Target::kFP8Block : Target::kBF16;
  std::vector<Job> jobs;
  for (const SurveyEntry& e : entries) {
    if (e.role == TensorRole::kRoutedExpert && !e.is_matrix) {
      fused_jobs(e, expert_target, jobs);
    } else if (e.role != TensorRole::kKeep && e.is_matrix) {
      jobs.push_back(matrix_job(e.matrix, strip_weight(e.official), e.role == TensorRole::kRoutedExpert ? expert_target : dense_target,
                                e.role, e.name, e.bytes));
    } else {
      jobs.push_back(copy_job(e));
    }
  }

  std::map<std::string, std::string> source_of;  // output name -> input name
  for (const Job& job : jobs)
    for (const OutputTensor& o : job.outputs) {
      const auto [it, inserted] = source_of.emplace(o.name, job.report.source);
      DSV4_CHECK(inserted, "input tensors {} and {} in {} are both the official tensor {}: remove one of them",
                 it->second, job.report.source, options.input.string(), o.name);
    }
  fs::create_directories(options.output);
  ShardWriter writer(options.output, options.max_shard_bytes);
  for (const Job& job : jobs)
    for (const OutputTensor& o : job.outputs) writer.declare(o.name, o.dtype, o.shape);

  QuantizeReport report;
  const int64_t total = static_cast<int64_t>(jobs.size());
  for (int64_t i = 0; i < total; ++i) {
    Job& job = jobs[i];
    if (progress) progress(i, total, job.report.name);
    if (job.target == Target::kCopy) {
      for (size_t p = 0; p < job.outputs.size(); ++p)
        writer.write(job.outputs[p].name, job.entry->parts[p]->data, job.entry->parts[p]->nbytes);
    } else {
      run_matrix_job(job, writer);
    }
    report.source_bytes += job.report.source_bytes;
    report.bytes += job.report.bytes;
    report.tensors.push_back(std::move(job.report));
  }
  writer.finish();
  report.shards = writer.shard_count();
  if (progress) progress(total, total, "");

  const json config = output_config(input_config, options);
  std::ofstream(options.output / "config.json") << config.dump(2) << "\n";
  // The input's other files (tokenizer, generation config, ...) travel along.
  for (const auto& item : fs::directory_iterator(options.input)) {
    const std::string file = item.path().filename().string();
    if (!item.is_regular_file() || item.path().extension() == ".safetensors" || file == "config.json" ||
        file == "model.safetensors.index.json" || file == "quantize_report.json")
      continue;
    fs::copy_file(item.path(), options.output / file, fs::copy_options::overwrite_existing);
  }
  std::ofstream(options.output / "quantize_report.json") << report.to_json().dump(1) << "\n";
  return report;
}

json QuantizeReport::to_json() const {
  json list = json::array();
  for (const TensorReport& t : tensors) {
    json item = {{"name", t.name},     {"source", t.source},  {"role", t.role},
                 {"source_format", t.source_format},          {"format", t.format},
                 {"shape", t.shape},   {"source_bytes", t.source_bytes}, {"bytes", t.bytes},
                 {"converted", t.converted}};
    if (t.converted) {
      item["relative_frobenius"] = t.relative_frobenius;
      item["cosine"] = t.cosine;
      item["max_abs_diff"] = t.max_abs_diff;
    }
    if (!t.note.empty()) item["note"] = t.note;
    list.push_back(std::move(item));
  }
  return {{"source_bytes", source_bytes}, {"bytes", bytes}, {"shards", shards}, {"tensors", list}};
}

std::string QuantizeReport::table(int64_t worst) const {
  struct Group {
    int64_t count = 0, source_bytes = 0, bytes = 0;
    double max_rel = 0, min_cos = 1;
  };
  std::map<std::pair<std::string, std::string>, Group> groups;
  for (const TensorReport& t : tensors) {
    Group& g = groups[{t.role, t.source_format + " -> " + t.format}];
    ++g.count;
    g.source_bytes += t.source_bytes;
    g.bytes += t.bytes;
    if (t.converted) {
      g.max_rel = std::max(g.max_rel, t.relative_frobenius);
      g.min_cos = std::min(g.min_cos, t.cosine);
    }
  }
  auto mb = [](int64_t bytes) { return bytes / 1048576.0; };
  std::string out = fmt::format("{:<14} {:<26} {:>7} {:>12} {:>12} {:>11} {:>10}\n", "role", "format", "tensors",
                                "source MiB", "output MiB", "max relerr", "min cos");
  for (const auto& [key, g] : groups)
    out += fmt::format("{:<14} {:<26} {:>7} {:>12.2f} {:>12.2f} {:>11.3e} {:>10.6f}\n", key.first, key.second, g.count,
                       mb(g.source_bytes), mb(g.bytes), g.max_rel, g.min_cos);
  out += fmt::format("{:<14} {:<26} {:>7} {:>12.2f} {:>12.2f}\n", "total", "", tensors.size(), mb(source_bytes), mb(bytes));
  std::vector<const TensorReport*> converted;
  for (const TensorReport& t : tensors)
    if (t.converted && t.relative_frobenius > 0) converted.push_back(&t);
  std::sort(converted.begin(), converted.end(),
            [](const TensorReport* a, const TensorReport* b) { return a->relative_frobenius > b->relative_frobenius; });
  if (!converted.empty()) {
    out += fmt::format("\nlargest relative errors:\n{:<56} {:<10} {:>11} {:>10}\n", "tensor", "format", "rel frob", "cosine");
    for (size_t i = 0; i < converted.size() && static_cast<int64_t>(i) < worst; ++i)
      out += fmt::format("{:<56} {:<10} {:>11.3e} {:>10.6f}\n", converted[i]->name, converted[i]->format,
                         converted[i]->relative_frobenius, converted[i]->cosine);
  }
  std::map<std::string, int64_t> notes;
  for (const TensorReport& t : tensors)
    if (!t.note.empty() && t.note != "already bf16: copied") ++notes[t.note.substr(0, t.note.find(", this one"))];
  if (!notes.empty()) {
    out += "\nnotes:\n";
    for (const auto& [note, count] : notes) out += fmt::format("  {} tensor(s): {}\n", count, note);
  }
  return out;
}

}  // namespace dsv4::formats
