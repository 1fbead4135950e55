// Decode stream layout (TileConfig::kDecodeStream): the one-time re-pack of a matrix's
// fragment-layout weights + scales into per-CTA-contiguous chunks (moe.h, docs/kernels/moe.md).
// A pure permutation of 16-byte pieces: thread i writes piece i of the output.
#include "cuda/moe/moe.h"

namespace dsv4::cuda::moe {

namespace {

constexpr int kRowBlocks = kDecodeStreamRows / kFragRows;  // fragment row blocks per chunk (8)
constexpr int kKBlocks = kDecodeStreamK / kFragCols;       // fragment k blocks per chunk (2)
constexpr int kBlocks = kRowBlocks * kKBlocks;             // fragment blocks per chunk (16)

__global__ void stream_repack_kernel(const uint8_t* __restrict__ weights, const uint8_t* __restrict__ scales,
                                     uint8_t* __restrict__ out, int n, int k, int sb, bool k_major, int64_t pieces) {
  const int64_t chunk_pieces = kBlocks * (kFragBytes + sb) / 16;
  const int row_chunks = n / kDecodeStreamRows, k_chunks = k / kDecodeStreamK, kb_count = k / kFragCols;
  const int64_t group_blocks = static_cast<int64_t>(n / kFragRows) * kb_count;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < pieces;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t chunk = i / chunk_pieces;
    const int piece = static_cast<int>(i % chunk_pieces);
    // chunk = (group * row_chunks + rc) * k_chunks + kt, or (group * k_chunks + kt) * row_chunks + rc
    const int inner = static_cast<int>(chunk % (k_major ? row_chunks : k_chunks));
    const int64_t rest = chunk / (k_major ? row_chunks : k_chunks);
    const int outer = static_cast<int>(rest % (k_major ? k_chunks : row_chunks));
    const int64_t group = rest / (k_major ? k_chunks : row_chunks);
    const int kt = k_major ? outer : inner, rc = k_major ? inner : outer;
    const int byte = piece * 16;
    const bool is_scale = byte >= kBlocks * kFragBytes;
    const int local = is_scale ? byte - kBlocks * kFragBytes : byte;
    const int block_bytes = is_scale ? sb : kFragBytes;
    const int fb = local / block_bytes, offset = local % block_bytes;  // fb = row block * kKBlocks + k block
    const int64_t gfb =
        group * group_blocks + static_cast<int64_t>(rc * kRowBlocks + fb / kKBlocks) * kb_count + kt * kKBlocks +
        fb % kKBlocks;
    const uint8_t* src = is_scale ? scales + gfb * sb + offset : weights + gfb * kFragBytes + offset;
    *reinterpret_cast<uint4*>(out + i * 16) = *reinterpret_cast<const uint4*>(src);
  }
}

}  // namespace

size_t moe_stream_layout_bytes(ExpertFormat format, int groups, int n, int k) {
  if (groups <= 0 || n <= 0 || k <= 0) return 0;
  // Per group: n * k / 2 weight bytes + (n / 16) * (k / 64) * SB scale bytes.
  return static_cast<size_t>(groups) * (static_cast<size_t>(n) * k / 2 +
                                        static_cast<size_t>(n / kFragRows) * (k / kFragCols) * frag_scale_bytes(format));
}

cudaError_t launch_moe_stream_repack(const StreamRepackParams& p) {
  if (p.groups <= 0 || p.n <= 0 || p.k <= 0 || p.n % kDecodeStreamRows != 0 || p.k % kDecodeStreamK != 0 ||
      p.weights == nullptr || p.scales == nullptr || p.out == nullptr)
    return cudaErrorInvalidValue;  // n, k multiples of 128; groups >= 1; all three buffers
  const int sb = frag_scale_bytes(p.format);
  const int64_t pieces = static_cast<int64_t>(moe_stream_layout_bytes(p.format, p.groups, p.n, p.k) / 16);
  constexpr int kThreads = 256;
  const int64_t want = (pieces + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(want < 65536 ? want : 65536);
  stream_repack_kernel<<<blocks, kThreads, 0, p.stream>>>(p.weights, p.scales, p.out, p.n, p.k, sb, p.k_major,
                                                                  pieces);
  return cudaGetLastError();
}

}  // namespace dsv4::cuda::moe
