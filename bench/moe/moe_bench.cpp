// MoE layer benchmark, V4-Flash shapes (hidden 4096, intermediate 2048, 256 routed
// experts + 1 shared, top-6), NVFP4 and MXFP4 experts.
// Method (shared/docs/benchmarking.md): median of CUDA-event times after warm-up, L2
// flushed (256 MB write) before every iteration; the HBM copy bandwidth is measured in
// the same process. Figures per token count:
//   layer_ms       router + dispatch + L1 + L2 + combine (eager; <= 64 tokens fused into 4 launches)
//   layer_graph_ms the same captured in a CUDA graph and replayed
//   layer_unfused_ms  (<= 64 tokens) eager layer with the decode fusions off (separate top-k,
//                  dispatch and combine kernels: MoeForwardParams::fuse_route_dispatch /
//                  fuse_combine = false); -1 above 64 tokens
//   gemm_ms        L1 (+SwiGLU) + L2 alone
//   weight bytes   packed bytes of every expert with at least one slot (incl. shared),
//                  divided by the time -> GB/s and fraction of the copy bandwidth
//   TFLOP/s        2 * slots * 3 * hidden * intermediate (useful FLOPs) / time
//   config         compute path: decode_ksplit (default <= 8 tokens: mma.sync 8-slot tiles,
//                  in-CTA split-K over 16 warps), decode (the older 4-warp tile, default 9..512),
//                  decode_splitk (opt-in: K split across CTAs, S slices per GEMM from
//                  moe_decode_split_k, in the JSON as split_l1 / split_l2; DSV4_MOE_SPLITK=S forces
//                  S); all three measured at <= 64 tokens; with --stream 1 (opt-in, not yet run on a
//                  GPU) also decode_stream (TileConfig::kDecodeStream: decode's kernel on a second
//                  copy of the weights re-packed per CTA by launch_moe_stream_repack, 3.4 / 3.2 GB
//                  NVFP4 / MXFP4; same weight bytes counted), decode_stream_kmajor (k-major chunk
//                  order, another copy), decode_stream_pdl (L2 launched by PDL: overlap_l2) and
//                  decode_stream_bulk (kDecodeStreamBulk: one TMA bulk copy per stage);
//                  prefill_wgmma_pipe (default above 512 tokens), prefill_mma (the mma.sync
//                  prefill, also measured above 512)
// W4A8 rows (MXFP4, > 512 tokens, after the prefill_wgmma_pipe row; --w4a8 0 skips them):
//   config prefill_w4a8 (TileConfig::kPrefillW4A8, opt-in, not the default): on the same
//   dispatch state, quantize x (launch_act_quant_fp8) + L1 W4A8 + quantize h + L2 W4A8
//   (w4a8_ms) and L1 + L2 alone (w4a8_gemm_ms); TFLOP/s = the same useful FLOPs / time.
//   A failing launch prints the error and the bench goes on (JSON "error"). Then the same for
//   prefill_w4a8_serial (kPrefillW4A8Serial: no convert / wgmma overlap), prefill_w4a8_lut and
//   prefill_w4a8_producer (kPrefillW4A8Producer: weights converted once per stage by a producer
//   warpgroup, SS FP8 wgmma, persistent CTAs) and prefill_w4a8_ws (kPrefillW4A8Ws: producer
//   warpgroup moving bytes through mbarriers, 2 converting consumer warpgroups, 128 x 256 tiles:
//   its own 256-slot dispatch of the same top-k and the per-row references launch_w4a8_row_ref,
//   both made before timing and not timed), then prefill_w4a8_ws_ss (kPrefillW4A8WsSS:
//   kPrefillW4A8Ws with the weight conversion in the producer warpgroup, SS FP8 wgmma; the same
//   256-slot dispatch and row references), then prefill_w4a8_ws_tma (kPrefillW4A8WsTma: the
//   same consumers fed by TMA; its quant step quantizes x per slot, gathered, with transposed
//   scales, as the TMA needs). --w4a8-config NAME prints only that W4A8 row.
// prefill_wgmma_tma rows (TileConfig::kPrefillWgmmaTma, opt-in; > 512 tokens, only with --tma 1
//   or --config prefill_wgmma_tma, so that a trapping first run cannot take the other rows
//   with it): TMA producer warp + persistent CTAs; its gemm_ms includes L1's gather of x into
//   slot order (one extra kernel inside launch_moe_l1), as moe_forward runs it.
// prefill_wgmma_wide rows (TileConfig::kPrefillWgmmaWide, opt-in, not yet GPU-run; > 512 tokens,
//   printed by default after the prefill_wgmma_pipe row and its W4A8 rows): wgmma N = 256, 128
//   weight rows x 256 slots per CTA, the dispatch builds 256-slot tiles for it; same columns.
// decode_persistent rows (TileConfig::kDecodePersistent, opt-in, not yet GPU-run; <= 64 tokens, only with
//   --persistent 1 or --config decode_persistent / decode_persistent_s1, so that a trapping first run
//   cannot take the other rows with it): L1 + L2 (+ fused combine in the layer) in one launch of resident
//   CTAs with a grid barrier; gemm_ms = that one launch without the combine (as the other rows' L1 + L2);
//   gemm_l1_ms / gemm_l2_ms read -1 (no separate GEMMs). decode_persistent: K slices from
//   moe_persistent_split_k (S1/S2 column); decode_persistent_chain: the same with chained units
//   (MoeForwardParams::persistent_chain: the next unit's weights prefetched in each unit's tail);
//   decode_persistent_s1: S = 1 forced (kDecode's arithmetic), unchained.
// Usage: bench_moe [--json PATH] [--tokens 1,8,64,4096,16384] [--formats nvfp4,mxfp4]
//                  [--config decode|decode_ksplit|decode_splitk|decode_stream|decode_stream_kmajor|
//                   decode_stream_pdl|decode_stream_bulk|decode_persistent|decode_persistent_chain|
//                   decode_persistent_s1|prefill_mma|
//                   prefill_wgmma|prefill_wgmma_pipe|prefill_wgmma_tma|prefill_wgmma_wide] (forces one path)
//                  [--tma 1]
//                  [--stream 1] [--persistent 1] [--w4a8 0] [--w4a8-config prefill_w4a8_producer]
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common/bench_util.h"
#include "cuda/moe/grouped_gemm_w4a8_ws.cuh"
#include "moe/moe_fixture.h"

namespace dsv4::moe_test {
namespace {

const char* config_name(cuda::moe::TileConfig config) {
  using cuda::moe::TileConfig;
  if (config == TileConfig::kPrefillWgmmaPipe) return "prefill_wgmma_pipe";
  if (config == TileConfig::kPrefillWgmmaTma) return "prefill_wgmma_tma";
  if (config == TileConfig::kPrefillWgmmaWide) return "prefill_wgmma_wide";
  if (config == TileConfig::kDecodeKSplit) return "decode_ksplit";
  if (config == TileConfig::kDecodeSplitK) return "decode_splitk";
  if (config == TileConfig::kDecodeStream) return "decode_stream";
  if (config == TileConfig::kDecodeStreamBulk) return "decode_stream_bulk";
  if (config == TileConfig::kDecodePersistent) return "decode_persistent";
  return config == TileConfig::kDecode ? "decode" : config == TileConfig::kPrefill ? "prefill_mma" : "prefill_wgmma";
}

// Compute paths measured per token count: the default one, and above 512 tokens both
// prefill paths (wgmma, the default, and the mma.sync one). --config NAME keeps one.
std::vector<cuda::moe::TileConfig> configs_for(int tokens, const std::string& filter, bool tma_rows,
                                               bool stream_rows, bool persistent_rows) {
  using cuda::moe::TileConfig;
  std::vector<TileConfig> all = {cuda::moe::moe_default_tile_config(tokens)};
  if (tokens > 512) all.push_back(TileConfig::kPrefill);
  if (tokens <= 512 && all.front() != TileConfig::kDecode) all.push_back(TileConfig::kDecode);
  // <= 64 tokens: the three decode paths side by side (split-K across CTAs, in-CTA split-K, plain)
  if (tokens <= 64 && all.front() != TileConfig::kDecodeKSplit) all.push_back(TileConfig::kDecodeKSplit);
  if (tokens <= 64 && all.front() != TileConfig::kDecodeSplitK) all.push_back(TileConfig::kDecodeSplitK);
  // <= 64 tokens, --stream 1: the opt-in stream-layout decode (kDecode's kernel, weights
  // re-packed per CTA; the engine does not use it: a second copy of the experts)
  if (stream_rows && tokens <= 64 && all.front() != TileConfig::kDecodeStream) all.push_back(TileConfig::kDecodeStream);
  if (stream_rows && tokens <= 64 && all.front() != TileConfig::kDecodeStreamBulk)
    all.push_back(TileConfig::kDecodeStreamBulk);
  // <= 64 tokens, --persistent 1: the opt-in one-launch decode (L1 + L2, grid barrier)
  if ((persistent_rows || filter == "decode_persistent") && tokens <= 64) all.push_back(TileConfig::kDecodePersistent);
  if (tokens > 512 && all.front() != TileConfig::kPrefillWgmmaPipe) all.push_back(TileConfig::kPrefillWgmmaPipe);
  // opt-in kPrefillWgmmaWide (wgmma N = 256, 256-slot tiles): right after prefill_wgmma_pipe's rows
  if (tokens > 512) {
    auto pipe = std::find(all.begin(), all.end(), TileConfig::kPrefillWgmmaPipe);
    all.insert(pipe == all.end() ? all.end() : pipe + 1, TileConfig::kPrefillWgmmaWide);
  }
  if (tokens > 512 && tma_rows) all.push_back(TileConfig::kPrefillWgmmaTma);  // opt-in (--tma 1), last
  if (filter.empty()) return all;
  for (TileConfig c : {TileConfig::kDecode, TileConfig::kDecodeKSplit, TileConfig::kDecodeSplitK,
                       TileConfig::kDecodeStream, TileConfig::kDecodeStreamBulk, TileConfig::kDecodePersistent,
                       TileConfig::kPrefill, TileConfig::kPrefillWgmma,
                       TileConfig::kPrefillWgmmaPipe, TileConfig::kPrefillWgmmaTma, TileConfig::kPrefillWgmmaWide})
    if (filter == config_name(c)) return {c};
  DSV4_CHECK(false,
             "--config {}: expected decode, decode_ksplit, decode_splitk, decode_stream, decode_stream_kmajor, "
             "decode_stream_pdl, decode_stream_bulk, decode_persistent, decode_persistent_chain, decode_persistent_s1, "
             "prefill_mma, "
             "prefill_wgmma, prefill_wgmma_pipe, "
             "prefill_wgmma_tma or prefill_wgmma_wide",
             filter);
  return {};
}

// A measured path: the tile config, and for kDecodeStream the chunk order of its weight copy.
struct BenchPath {
  cuda::moe::TileConfig config;
  bool k_major = false;  // kDecodeStream: the k-major chunk order
  bool pdl = false;      // kDecodeStream: L2 launched with PDL (overlap_l2)
  int decode_split = 0;  // kDecodePersistent: forced S (MoeForwardParams::decode_split; 0 automatic)
  bool chain = false;    // kDecodePersistent: chained units (MoeForwardParams::persistent_chain)
};
const char* path_name(const BenchPath& path) {
  if (path.k_major) return "decode_stream_kmajor";
  if (path.pdl) return "decode_stream_pdl";
  if (path.config == cuda::moe::TileConfig::kDecodePersistent && path.decode_split == 1) return "decode_persistent_s1";
  if (path.config == cuda::moe::TileConfig::kDecodePersistent && path.chain) return "decode_persistent_chain";
  return config_name(path.config);
}
std::vector<BenchPath> paths_for(int tokens, const std::string& filter, bool tma_rows, bool stream_rows,
                                 bool persistent_rows) {
  std::vector<BenchPath> paths;
  const bool kmajor_only = filter == "decode_stream_kmajor", pdl_only = filter == "decode_stream_pdl";
  const bool s1_only = filter == "decode_persistent_s1", chain_only = filter == "decode_persistent_chain";
  const bool variant_only = kmajor_only || pdl_only;
  const std::string base = variant_only            ? std::string("decode_stream")
                           : s1_only || chain_only ? std::string("decode_persistent")
                                                   : filter;
  for (cuda::moe::TileConfig c : configs_for(tokens, base, tma_rows, stream_rows, persistent_rows)) {
    if (c == cuda::moe::TileConfig::kDecodePersistent) {  // automatic S (unchained, chained), then S = 1
      if (!s1_only && !chain_only) paths.push_back({c, false, false, 0, false});
      if (filter.empty() || chain_only) paths.push_back({c, false, false, 0, true});
      if (filter.empty() || s1_only) paths.push_back({c, false, false, 1, false});
      continue;
    }
    if (!variant_only) paths.push_back({c, false, false});
    if (c != cuda::moe::TileConfig::kDecodeStream) continue;
    if (filter.empty() || kmajor_only) paths.push_back({c, true, false});
    if (filter.empty() || pdl_only) paths.push_back({c, false, true});
  }
  return paths;
}

const char* w4a8_config_name(cuda::moe::TileConfig c) {
  switch (c) {
    case cuda::moe::TileConfig::kPrefillW4A8: return "prefill_w4a8";
    case cuda::moe::TileConfig::kPrefillW4A8Lut: return "prefill_w4a8_lut";
    case cuda::moe::TileConfig::kPrefillW4A8Producer: return "prefill_w4a8_producer";
    case cuda::moe::TileConfig::kPrefillW4A8Ws: return "prefill_w4a8_ws";
    case cuda::moe::TileConfig::kPrefillW4A8WsSS: return "prefill_w4a8_ws_ss";
    case cuda::moe::TileConfig::kPrefillW4A8WsTma: return "prefill_w4a8_ws_tma";
    default: return "prefill_w4a8_serial";
  }
}

int run(int argc, char** argv) {
  std::string json_path, formats = "nvfp4,mxfp4", config_filter;
  std::vector<int> token_counts = {1, 8, 64, 4096, 16384};
  bool w4a8_rows = true;  // --w4a8 0: no W4A8 rows
  std::string w4a8_only;  // --w4a8-config NAME: only that W4A8 row (prefill_w4a8_producer, ...)
  bool tma_rows = false;  // --tma 1: prefill_wgmma_tma rows (opt-in kernel: slower than the pipelined one on the H200)
  bool stream_rows = false;  // --stream 1: decode_stream* rows (opt-in kernels)
  bool persistent_rows = false;  // --persistent 1: decode_persistent rows (opt-in kernel)
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i], value = argv[i + 1];
    if (key == "--json") json_path = value;
    else if (key == "--tokens") token_counts = bench::parse_ints(value);
    else if (key == "--formats") formats = value;
    else if (key == "--config") config_filter = value;
    else if (key == "--w4a8") w4a8_rows = value != "0";
    else if (key == "--w4a8-config") w4a8_only = value;
    else if (key == "--tma") tma_rows = value != "0";
    else if (key == "--stream") stream_rows = value != "0";
    else if (key == "--persistent") persistent_rows = value != "0";
  }
  FILE* json = json_path.empty() ? nullptr : std::fopen(json_path.c_str(), "a");
  cudaDeviceProp prop{};
  DSV4_CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  const std::string date = bench::utc_now();
  bench::Timer timer(/*default_warmup=*/3);
  const double copy_gbps = bench::hbm_copy_gbps(timer);
  std::printf("device %s, %d SMs; HBM copy %.0f GB/s (read + write)\n", prop.name, prop.multiProcessorCount, copy_gbps);
  if (json)
    std::fprintf(json, "{\"bench\":\"hbm_copy\",\"device\":\"%s\",\"date\":\"%s\",\"gbps\":%.1f}\n", prop.name,
                 date.c_str(), copy_gbps);

  constexpr int kExperts = 256, kHidden = 4096, kInter = 2048, kTopK = 6;
  std::printf("%-6s %6s %-13s %9s %9s %9s %7s %8s %7s %8s %8s %10s %5s\n", "format", "tokens", "config", "layer_ms",
              "graph_ms", "gemm_ms", "experts", "GB/s", "of_HBM", "TFLOP/s", "layerTF", "unfused_ms", "S1/S2");
  for (const std::string& fname : {std::string("nvfp4"), std::string("mxfp4")}) {
    if (formats.find(fname) == std::string::npos) continue;
    const ExpertFormat format = fname == "nvfp4" ? ExpertFormat::kNVFP4 : ExpertFormat::kMXFP4;
    const ExpertSet set = make_expert_set(format, kHidden, kInter, kExperts, 77);
    const RouterWeights router = make_router(kExperts, kHidden, 78);
    const DeviceMoe dev(set, router, kTopK, 1.5f, 10.0f);
    // kDecodeStream's second copy of W13 / W2 (+ scales) in the decode stream layout, made on
    // first use (freed with this format's weights).
    cuda::moe::MoeLayerWeights weights_default = dev.weights, weights_kmajor = dev.weights;
    std::vector<void*> stream_copies;
    auto ensure_stream_layout = [&](bool k_major) {
      cuda::moe::MoeLayerWeights& target = k_major ? weights_kmajor : weights_default;
      if (target.w13_stream != nullptr) return;
      const int groups = kExperts + 1;
      uint8_t* w13s = nullptr;
      uint8_t* w2s = nullptr;
      DSV4_CUDA_OK(cudaMalloc(&w13s, cuda::moe::moe_stream_layout_bytes(format, groups, 2 * kInter, kHidden)));
      DSV4_CUDA_OK(cudaMalloc(&w2s, cuda::moe::moe_stream_layout_bytes(format, groups, kHidden, kInter)));
      stream_copies.push_back(w13s);
      stream_copies.push_back(w2s);
      cuda::moe::StreamRepackParams r1;
      r1.format = format;
      r1.groups = groups;
      r1.n = 2 * kInter;
      r1.k = kHidden;
      r1.weights = dev.weights.w13;
      r1.scales = dev.weights.w13_scales;
      r1.out = w13s;
      r1.k_major = k_major;
      DSV4_CUDA_OK(cuda::moe::launch_moe_stream_repack(r1));
      cuda::moe::StreamRepackParams r2 = r1;
      r2.n = kHidden;
      r2.k = kInter;
      r2.weights = dev.weights.w2;
      r2.scales = dev.weights.w2_scales;
      r2.out = w2s;
      DSV4_CUDA_OK(cuda::moe::launch_moe_stream_repack(r2));
      DSV4_CUDA_OK(cudaDeviceSynchronize());
      target.w13_stream = w13s;
      target.w2_stream = w2s;
      target.stream_k_major = k_major;
    };
    for (int tokens : token_counts) {
      for (const BenchPath path : paths_for(tokens, config_filter, tma_rows, stream_rows, persistent_rows)) {
        const cuda::moe::TileConfig config = path.config;
        if (config == cuda::moe::TileConfig::kDecodeStream || config == cuda::moe::TileConfig::kDecodeStreamBulk)
          ensure_stream_layout(path.k_major);
        const cuda::moe::MoeLayerWeights& weights = path.k_major ? weights_kmajor : weights_default;
        const std::vector<uint16_t> x = make_activations(tokens, kHidden, 500 + tokens);
        uint16_t* d_x = device_copy(x);
        const cuda::moe::MoeWorkspace size =
            cuda::moe::moe_workspace(dev.weights, tokens, config, nullptr, path.decode_split);
        void* d_ws = nullptr;
        float* d_out = nullptr;
        int32_t* d_flag = nullptr;
        DSV4_CUDA_OK(cudaMalloc(&d_ws, size.bytes));
        DSV4_CUDA_OK(cudaMalloc(&d_out, static_cast<size_t>(tokens) * kHidden * 4));
        DSV4_CUDA_OK(cudaMalloc(&d_flag, 4));
        DSV4_CUDA_OK(cudaMemset(d_flag, 0, 4));
        const cuda::moe::MoeWorkspace ws = cuda::moe::moe_workspace(dev.weights, tokens, config, d_ws, path.decode_split);
        cudaStream_t stream;
        DSV4_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        cuda::moe::MoeForwardParams p;
        p.weights = &weights;
        p.x = d_x;
        p.tokens = tokens;
        p.config = config;
        p.overlap_l2 = path.pdl;
        p.decode_split = path.decode_split;
        p.persistent_chain = path.chain;
        p.workspace = d_ws;
        p.out = d_out;
        p.error_flag = d_flag;
        p.stream = nullptr;  // legacy stream: ordered with the timer's flush and events
        const int iters = tokens >= 8192 ? 5 : tokens >= 1024 ? 10 : 30;
        const double layer_ms = timer.median_ms([&] { DSV4_CUDA_OK(cuda::moe::moe_forward(p)); }, iters);
        // Decode fusion off (separate top-k, dispatch and combine kernels), eager; -1 where
        // the fusions do not apply (> kFusedRouteMaxTokens).
        double layer_unfused_ms = -1.0;
        if (tokens <= cuda::moe::kFusedRouteMaxTokens) {
          cuda::moe::MoeForwardParams pu = p;
          pu.fuse_route_dispatch = false;
          pu.fuse_combine = false;
          layer_unfused_ms = timer.median_ms([&] { DSV4_CUDA_OK(cuda::moe::moe_forward(pu)); }, iters);
        }

        // Graph of the whole layer (captured on a side stream, replayed on the legacy one).
        cuda::moe::MoeForwardParams pg = p;
        pg.stream = stream;
        cudaGraph_t graph;
        cudaGraphExec_t graph_exec;
        DSV4_CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        DSV4_CUDA_OK(cuda::moe::moe_forward(pg));
        DSV4_CUDA_OK(cudaStreamEndCapture(stream, &graph));
        DSV4_CUDA_OK(cudaGraphInstantiate(&graph_exec, graph, 0));
        const double graph_ms = timer.median_ms([&] { DSV4_CUDA_OK(cudaGraphLaunch(graph_exec, nullptr)); }, iters);

        // The two expert GEMMs alone, on the dispatch state the forward left.
        cuda::moe::GroupedGemmParams gemm;
        gemm.format = format;
        gemm.config = config;
        gemm.tile_expert = ws.tile_expert;
        gemm.tile_slot_begin = ws.tile_slot_begin;
        gemm.tile_row_count = ws.tile_row_count;
        gemm.tile_count = ws.tile_count;
        gemm.max_tiles = ws.max_tiles;
        cuda::moe::GroupedGemmParams l1 = gemm, l2 = gemm;
        l1.weights = dev.weights.w13;
        l1.scales = dev.weights.w13_scales;
        l1.factor_a = dev.weights.gate_factor;
        l1.factor_b = dev.weights.up_factor;
        l1.act = d_x;
        l1.slot_token = ws.slot_token;
        l1.n = 2 * kInter;
        l1.k = kHidden;
        l1.swiglu_limit = 10.0f;
        l1.out = ws.h;
        l2.weights = dev.weights.w2;
        l2.scales = dev.weights.w2_scales;
        l2.factor_a = dev.weights.down_factor;
        l2.act = ws.h;
        l2.slot_weight = ws.slot_weight;
        l2.n = kHidden;
        l2.k = kInter;
        l2.out = ws.slot_out;
        l1.split_k = ws.split_l1;  // kDecodeSplitK (1 otherwise): the S moe_forward uses
        l1.split_partials = ws.split_partials;
        l1.split_done = ws.split_done_l1;
        l1.split_slots = ws.split_slots;
        l2.split_k = ws.split_l2;
        l2.split_partials = ws.split_partials;
        l2.split_done = ws.split_done_l2;
        l2.split_slots = ws.split_slots;
        l1.stream_weights = weights.w13_stream;  // kDecodeStream only
        l2.stream_weights = weights.w2_stream;
        l1.stream_k_major = l2.stream_k_major = weights.stream_k_major;
        l2.programmatic_wait = path.pdl;
        l1.act_rows = l2.act_rows = ws.split_slots;  // kPrefillWgmmaTma: rows the TMA reads (pairs = slots)
        l1.act_perm = ws.x_perm;                     // kPrefillWgmmaTma: L1's slot-order copy of x  // L2 right after L1 in the gemm-only loop (PDL needs that)
        // kDecodePersistent: both GEMMs in its one launch (no combine), on the same dispatch state;
        // repeated launches need no re-zeroing (epoch barrier; split counters reset by their last arrivers).
        const bool persistent = config == cuda::moe::TileConfig::kDecodePersistent;
        cuda::moe::DecodePersistentParams pp;
        pp.l1 = l1;
        pp.l2 = l2;
        pp.grid_barrier = ws.grid_barrier;
        pp.chain_units = path.chain;
        const double gemm_ms = timer.median_ms(
            [&] {
              if (persistent) {
                DSV4_CUDA_OK(cuda::moe::launch_moe_decode_persistent(pp));
                return;
              }
              DSV4_CUDA_OK(cuda::moe::launch_moe_l1(l1));
              DSV4_CUDA_OK(cuda::moe::launch_moe_l2(l2));
            },
            iters);
        // <= 64 tokens: L1 and L2 alone too (JSON gemm_l1_ms / gemm_l2_ms; -1 above), to see
        // which GEMM loses the time at decode (docs/kernels/moe.md, decode analysis).
        double gemm_l1_ms = -1.0, gemm_l2_ms = -1.0;
        if (tokens <= cuda::moe::kFusedRouteMaxTokens && !persistent) {
          gemm_l1_ms = timer.median_ms([&] { DSV4_CUDA_OK(cuda::moe::launch_moe_l1(l1)); }, iters);
          gemm_l2_ms = timer.median_ms([&] { DSV4_CUDA_OK(cuda::moe::launch_moe_l2(l2)); }, iters);
        }

        std::vector<int32_t> counts(kExperts + 1);
        int32_t flag = 0;
        DSV4_CUDA_OK(cudaMemcpy(counts.data(), ws.expert_counts, counts.size() * 4, cudaMemcpyDeviceToHost));
        DSV4_CUDA_OK(cudaMemcpy(&flag, d_flag, 4, cudaMemcpyDeviceToHost));
        DSV4_CHECK(flag == 0, "error flag {}", flag);
        int active = 0;
        int64_t slots = 0;
        for (int c : counts) active += c > 0, slots += c;
        const double bytes = static_cast<double>(active) * dev.packed_expert_bytes;
        const double flops = 2.0 * slots * 3.0 * kHidden * kInter;
        const double best_ms = std::min(layer_ms, graph_ms);
        const double gbps_layer = bytes / (best_ms * 1e-3) / 1e9, gbps_gemm = bytes / (gemm_ms * 1e-3) / 1e9;
        const double tflops_gemm = flops / (gemm_ms * 1e-3) / 1e12, tflops_layer = flops / (best_ms * 1e-3) / 1e12;
        std::printf("%-6s %6d %-13s %9.4f %9.4f %9.4f %7d %8.0f %6.1f%% %8.1f %8.1f %10.4f %2d/%-2d\n", fname.c_str(),
                    tokens, path_name(path), layer_ms, graph_ms, gemm_ms, active, gbps_gemm,
                    100.0 * gbps_gemm / copy_gbps, tflops_gemm, tflops_layer, layer_unfused_ms, ws.split_l1,
                    ws.split_l2);
        if (json)
          std::fprintf(json,
                       "{\"bench\":\"moe\",\"device\":\"%s\",\"date\":\"%s\",\"format\":\"%s\",\"tokens\":%d,"
                       "\"config\":\"%s\",\"layer_ms\":%.5f,\"layer_graph_ms\":%.5f,\"gemm_ms\":%.5f,"
                       "\"active_experts\":%d,\"slots\":%lld,\"weight_bytes\":%.0f,\"weight_gbps_gemm\":%.1f,"
                       "\"weight_gbps_layer\":%.1f,\"hbm_copy_gbps\":%.1f,\"frac_hbm_gemm\":%.4f,"
                       "\"frac_hbm_layer\":%.4f,\"tflops_gemm\":%.2f,\"tflops_layer\":%.2f,"
                       "\"layer_unfused_ms\":%.5f,\"split_l1\":%d,\"split_l2\":%d,\"gemm_l1_ms\":%.5f,"
                       "\"gemm_l2_ms\":%.5f}\n",
                       prop.name, date.c_str(), fname.c_str(), tokens,
                       path_name(path), layer_ms, graph_ms, gemm_ms,
                       active, static_cast<long long>(slots), bytes, gbps_gemm, gbps_layer, copy_gbps,
                       gbps_gemm / copy_gbps, gbps_layer / copy_gbps, tflops_gemm, tflops_layer, layer_unfused_ms,
                       ws.split_l1, ws.split_l2, gemm_l1_ms, gemm_l2_ms);
        std::fflush(stdout);
        if (w4a8_rows && format == ExpertFormat::kMXFP4 && config == cuda::moe::TileConfig::kPrefillWgmmaPipe) {
          // W4A8 (opt-in kPrefillW4A8) on the same dispatch state: quantizers + L1 + L2.
          const size_t pairs = static_cast<size_t>(tokens) * (kTopK + 1);
          uint8_t *d_x8 = nullptr, *d_h8 = nullptr;
          float *d_xs = nullptr, *d_hs = nullptr;
          DSV4_CUDA_OK(cudaMalloc(&d_x8, static_cast<size_t>(tokens) * kHidden));
          DSV4_CUDA_OK(cudaMalloc(&d_xs, static_cast<size_t>(tokens) * (kHidden / 128) * 4));
          DSV4_CUDA_OK(cudaMalloc(&d_h8, pairs * kInter));
          DSV4_CUDA_OK(cudaMalloc(&d_hs, pairs * (kInter / 128) * 4));
          cuda::moe::ActQuantParams qx, qh;
          qx.x = d_x;
          qx.rows = tokens;
          qx.k = kHidden;
          qx.x8 = d_x8;
          qx.scale = d_xs;
          qh.x = ws.h;
          qh.rows = static_cast<int>(slots);
          qh.k = kInter;
          qh.x8 = d_h8;
          qh.scale = d_hs;
          // The serial kernel first (GPU-verified 2026-12-01), then the overlapped one and its
          // table-lookup variant (register hazard fixed offline, not yet run on a GPU: their
          // figures count only once cuda_moe_w4a8_test passes).
          // Then kPrefillW4A8Producer (producer warpgroup, persistent CTAs; not yet GPU-run).
          for (const cuda::moe::TileConfig wconfig :
               {cuda::moe::TileConfig::kPrefillW4A8Serial, cuda::moe::TileConfig::kPrefillW4A8,
                cuda::moe::TileConfig::kPrefillW4A8Lut, cuda::moe::TileConfig::kPrefillW4A8Producer,
                cuda::moe::TileConfig::kPrefillW4A8Ws, cuda::moe::TileConfig::kPrefillW4A8WsSS,
                cuda::moe::TileConfig::kPrefillW4A8WsTma}) {
          if (!w4a8_only.empty() && w4a8_only != w4a8_config_name(wconfig)) continue;
          const char* wname = w4a8_config_name(wconfig);
          cuda::moe::GroupedGemmParams q1 = l1, q2 = l2;
          q1.config = q2.config = wconfig;
          q1.act8 = d_x8;
          q1.act_scale = d_xs;
          q2.act8 = d_h8;
          q2.act_scale = d_hs;
          // kPrefillW4A8Ws / kPrefillW4A8WsSS: 256-slot tiles (a second dispatch of the forward's top-k into its own
          // slot arrays and tile list) and the per-row weight references of W13 / W2.
          std::vector<void*> ws_buffers;
          cuda::moe::ActQuantParams qx_run = qx, qh_run = qh;
          const bool tile256 = cuda::moe::tile_config_rows(wconfig) == 256;
          if (tile256) {
            auto alloc = [&](size_t bytes) {
              void* ptr = nullptr;
              DSV4_CUDA_OK(cudaMalloc(&ptr, bytes));
              ws_buffers.push_back(ptr);
              return ptr;
            };
            const int groups = kExperts + 1;
            const int max_tiles256 = cuda::moe::moe_max_tiles(tokens, kTopK + 1, groups, 256);
            cuda::moe::DispatchParams dp;
            dp.topk_ids = ws.topk_ids;
            dp.topk_weights = ws.topk_weights;
            dp.tokens = tokens;
            dp.top_k = kTopK;
            dp.experts = kExperts;
            dp.has_shared = true;
            dp.tile_rows = 256;
            dp.max_tiles = max_tiles256;
            dp.expert_counts = static_cast<int32_t*>(alloc(groups * 4));
            dp.expert_offsets = static_cast<int32_t*>(alloc((groups + 1) * 4));
            dp.slot_of_pair = static_cast<int32_t*>(alloc(pairs * 4));
            dp.slot_token = static_cast<int32_t*>(alloc(pairs * 4));
            dp.slot_weight = static_cast<float*>(alloc(pairs * 4));
            dp.tile_expert = static_cast<int32_t*>(alloc(max_tiles256 * 4));
            dp.tile_slot_begin = static_cast<int32_t*>(alloc(max_tiles256 * 4));
            dp.tile_row_count = static_cast<int32_t*>(alloc(max_tiles256 * 4));
            dp.tile_count = static_cast<int32_t*>(alloc(4));
            dp.error_flag = d_flag;
            DSV4_CUDA_OK(cuda::moe::launch_dispatch(dp));
            cuda::moe::W4a8RowRefParams r13, r2;
            r13.scales = dev.weights.w13_scales;
            r13.groups = groups;
            r13.n = 2 * kInter;
            r13.k = kHidden;
            r13.row_ref = static_cast<uint8_t*>(alloc(static_cast<size_t>(groups) * r13.n));
            r2.scales = dev.weights.w2_scales;
            r2.groups = groups;
            r2.n = kHidden;
            r2.k = kInter;
            r2.row_ref = static_cast<uint8_t*>(alloc(static_cast<size_t>(groups) * r2.n));
            DSV4_CUDA_OK(cuda::moe::launch_w4a8_row_ref(r13));
            DSV4_CUDA_OK(cuda::moe::launch_w4a8_row_ref(r2));
            DSV4_CUDA_OK(cudaDeviceSynchronize());
            for (cuda::moe::GroupedGemmParams* q : {&q1, &q2}) {
              q->tile_expert = dp.tile_expert;
              q->tile_slot_begin = dp.tile_slot_begin;
              q->tile_row_count = dp.tile_row_count;
              q->tile_count = dp.tile_count;
              q->max_tiles = max_tiles256;
            }
            q1.slot_token = dp.slot_token;
            q2.slot_weight = dp.slot_weight;
            q1.w4a8_row_ref = r13.row_ref;
            q2.w4a8_row_ref = r2.row_ref;
            if (wconfig == cuda::moe::TileConfig::kPrefillW4A8WsTma) {
              // TMA reads slot-ordered rows: x is quantized per slot (gathered through the 256-slot
              // dispatch's slot_token, inside the timed quant step) and both scale sets transposed.
              const int rows = static_cast<int>(pairs), stride = (rows + 3) / 4 * 4;
              qx_run.gather = dp.slot_token;
              qx_run.x_rows = tokens;
              qx_run.rows = rows;
              qx_run.x8 = static_cast<uint8_t*>(alloc(pairs * kHidden));
              qx_run.scale = static_cast<float*>(alloc(static_cast<size_t>(kHidden / 128) * stride * 4));
              qx_run.scale_stride = stride;
              qx_run.error_flag = d_flag;
              qh_run.scale = static_cast<float*>(alloc(static_cast<size_t>(kInter / 128) * stride * 4));
              qh_run.scale_stride = stride;
              q1.act8 = qx_run.x8;
              q1.act_scale = qx_run.scale;
              q2.act_scale = qh_run.scale;
              for (cuda::moe::GroupedGemmParams* q : {&q1, &q2}) {
                q->act_rows = rows;
                q->act_scale_stride = stride;
              }
            }
          }
          cudaError_t err = cudaSuccess;
          auto keep = [&](cudaError_t e) { if (err == cudaSuccess) err = e; };
          const double w4a8_ms = timer.median_ms(
              [&] {
                keep(cuda::moe::launch_act_quant_fp8(qx_run));
                keep(cuda::moe::launch_moe_l1(q1));
                keep(cuda::moe::launch_act_quant_fp8(qh_run));
                keep(cuda::moe::launch_moe_l2(q2));
              },
              iters);
          const double w4a8_gemm_ms = timer.median_ms(
              [&] {
                keep(cuda::moe::launch_moe_l1(q1));
                keep(cuda::moe::launch_moe_l2(q2));
              },
              iters);
          keep(cudaDeviceSynchronize());
          if (err != cudaSuccess) {
            std::printf("%-6s %6d %-13s failed: %s\n", fname.c_str(), tokens, wname, cudaGetErrorString(err));
            if (json)
              std::fprintf(json,
                           "{\"bench\":\"moe\",\"device\":\"%s\",\"date\":\"%s\",\"format\":\"%s\",\"tokens\":%d,"
                           "\"config\":\"%s\",\"error\":\"%s\"}\n",
                           prop.name, date.c_str(), fname.c_str(), tokens, wname, cudaGetErrorString(err));
          } else {
            const double tf = flops / (w4a8_ms * 1e-3) / 1e12, tf_gemm = flops / (w4a8_gemm_ms * 1e-3) / 1e12;
            std::printf("%-6s %6d %-13s w4a8_ms (quant + L1 + quant + L2) %.4f = %.1f TFLOP/s; L1 + L2 %.4f ms = %.1f "
                        "TFLOP/s (vs prefill_wgmma_pipe gemm %.1f)\n",
                        fname.c_str(), tokens, wname, w4a8_ms, tf, w4a8_gemm_ms, tf_gemm, tflops_gemm);
            if (json)
              std::fprintf(json,
                           "{\"bench\":\"moe\",\"device\":\"%s\",\"date\":\"%s\",\"format\":\"%s\",\"tokens\":%d,"
                           "\"config\":\"%s\",\"slots\":%lld,\"w4a8_ms\":%.5f,\"w4a8_gemm_ms\":%.5f,"
                           "\"tflops_w4a8\":%.2f,\"tflops_w4a8_gemm\":%.2f,\"w4a16_gemm_ms\":%.5f,"
                           "\"tflops_w4a16_gemm\":%.2f}\n",
                           prop.name, date.c_str(), fname.c_str(), tokens, wname, static_cast<long long>(slots), w4a8_ms,
                           w4a8_gemm_ms, tf, tf_gemm, gemm_ms, tflops_gemm);
          }
          std::fflush(stdout);
          for (void* ptr : ws_buffers) cudaFree(ptr);
          }
          cudaFree(d_x8);
          cudaFree(d_xs);
          cudaFree(d_h8);
          cudaFree(d_hs);
        }
        cudaGraphExecDestroy(graph_exec);
        cudaGraphDestroy(graph);
        cudaStreamDestroy(stream);
        cudaFree(d_x);
        cudaFree(d_ws);
        cudaFree(d_out);
        cudaFree(d_flag);
      }
    }
    for (void* b : stream_copies) cudaFree(b);
  }
  if (json) std::fclose(json);
  return 0;
}

}  // namespace
}  // namespace dsv4::moe_test

int main(int argc, char** argv) {
  try {
    return dsv4::moe_test::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_moe: %s\n", e.what());
    return 1;
  }
}
