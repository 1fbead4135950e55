"""Pure-torch statements of the formats and the MoE layer, written from their definitions
(include/dsv4/formats.h, src/cuda/moe/fragment.h, src/cpu/moe.h) and independent of the C++
library: the oracles of tests/torch/test_ops.py, and readable documentation of the bytes."""
import torch

E2M1_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                            -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=torch.float64)


def e2m1_codes(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest E2M1, ties to the even code, |x| > 6 saturates; sign bit = x < 0."""
    m = x.abs()
    code = ((m > 0.25).int() + (m >= 0.75).int() + (m > 1.25).int() + (m >= 1.75).int() + (m > 2.5).int()
            + (m >= 3.5).int() + (m > 5.0).int())
    return (code | torch.where(x < 0, 8, 0)).to(torch.uint8)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """[..., k] codes -> [..., k/2] bytes, even column in the low nibble."""
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[..., k/2] bytes -> [..., k] codes."""
    packed = packed.view(torch.uint8)
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(-2)


def e4m3_values(codes: torch.Tensor) -> torch.Tensor:
    return codes.view(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)


def e8m0_values(codes: torch.Tensor) -> torch.Tensor:
    return torch.exp2(codes.view(torch.uint8).to(torch.float64) - 127)


def quantize_nvfp4(w: torch.Tensor):
    """[n, k] -> (packed, E4M3 scales, global scale): ModelOpt's recipe in FP32."""
    x = w.to(torch.float32)
    amax = x.abs().max() if x.numel() else torch.tensor(0.0)
    tensor_scale = torch.where(amax > 0, amax / torch.tensor(6.0 * 448.0), torch.tensor(1.0)).to(torch.float32)
    blocks = x.reshape(x.shape[0], -1, 16)
    block_amax = blocks.abs().amax(dim=-1)
    ratio = block_amax / (torch.tensor(6.0, dtype=torch.float32) * tensor_scale)
    # The reference quantizers clamp to 448 before the E4M3 cast; zero blocks get scale 1.0.
    scale_codes = torch.where(block_amax == 0, torch.tensor(1.0), ratio.clamp(max=448.0))
    scale_codes = scale_codes.to(torch.float8_e4m3fn).view(torch.uint8)
    scale = e4m3_values(scale_codes) * tensor_scale  # FP32 product, as the quantizer divides by it
    codes = e2m1_codes(blocks / scale[..., None])
    codes = torch.where((scale > 0)[..., None], codes, torch.zeros_like(codes))  # underflowed block scale
    return pack_nibbles(codes.reshape(x.shape)), scale_codes, tensor_scale


def quantize_mxfp4(w: torch.Tensor):
    """[n, k] -> (packed, E8M0 scales): e = floor(log2(block amax)) - 2, clamped to [-127, 127]."""
    x = w.to(torch.float32)
    blocks = x.reshape(x.shape[0], -1, 32)
    block_amax = blocks.abs().amax(dim=-1)
    _, frexp_exponent = torch.frexp(block_amax)  # amax = m 2^e', m in [0.5, 1): floor(log2) = e' - 1
    exponent = torch.where(block_amax > 0, frexp_exponent - 3, torch.full_like(frexp_exponent, -127)).clamp(-127, 127)
    # x * 2^-e is exact in FP64; one rounding to FP32 as the library's FP32 product.
    scaled = (blocks.to(torch.float64) * torch.exp2(-exponent.to(torch.float64))[..., None]).to(torch.float32)
    return pack_nibbles(e2m1_codes(scaled).reshape(x.shape)), (exponent + 127).to(torch.uint8)


def dequantize_nvfp4(packed, scales, global_scale) -> torch.Tensor:
    """FP32 [n, k]: E2M1 value x fl32(E4M3 scale x global scale)."""
    values = E2M1_VALUES.to(torch.float32)[unpack_nibbles(packed).long()]
    block_scale = e4m3_values(scales) * global_scale.to(torch.float32)
    return values * block_scale.repeat_interleave(16, dim=-1)


def dequantize_mxfp4(packed, scales) -> torch.Tensor:
    values = E2M1_VALUES[unpack_nibbles(packed).long()]
    return (values * e8m0_values(scales).repeat_interleave(32, dim=-1)).to(torch.float32)


def unpack_fragments(blocks: torch.Tensor) -> torch.Tensor:
    """Fragment layout [G, N/16, K/64, 512] -> E2M1 codes [G, N, K] (fragment.h: lane l holds
    4 words s; register r, half h of word s is (row l/4 + 8 (r & 1), col 16 s + 2 (l % 4) + 8 (r >> 1) + h)
    in nibble (3 - r) + 4 h)."""
    groups, row_blocks, col_blocks, _ = blocks.shape
    words = blocks.reshape(groups, row_blocks, col_blocks, 32, 4, 4).to(torch.int64)  # [.., lane, s, byte]
    words = (words * torch.tensor([1, 1 << 8, 1 << 16, 1 << 24])).sum(-1)           # little-endian words
    out = torch.zeros(groups, row_blocks, 16, col_blocks, 64, dtype=torch.uint8)
    for lane in range(32):
        for s in range(4):
            word = words[:, :, :, lane, s]
            for r in range(4):
                for h in range(2):
                    row = lane // 4 + 8 * (r & 1)
                    col = 16 * s + 2 * (lane % 4) + 8 * (r >> 1) + h
                    out[:, :, row, :, col] = ((word >> (4 * ((3 - r) + 4 * h))) & 0xF).to(torch.uint8)
    return out.reshape(groups, row_blocks * 16, col_blocks * 64)


def unpack_fragment_scales(scales: torch.Tensor, nvfp4: bool) -> torch.Tensor:
    """Fragment scale bytes [G, N/16, K/64, SB] -> kernel scale codes [G, N, K/block]
    (offset g * 8 + s * 2 + hr for NVFP4 block s, g * 4 + j * 2 + hr for MXFP4 block j; row g + 8 hr)."""
    groups, row_blocks, col_blocks, _ = scales.shape
    per_block = 4 if nvfp4 else 2
    out = torch.zeros(groups, row_blocks, 16, col_blocks, per_block, dtype=torch.uint8)
    for g in range(8):
        for j in range(per_block):
            for hr in range(2):
                offset = g * 8 + j * 2 + hr if nvfp4 else g * 4 + j * 2 + hr
                out[:, :, g + 8 * hr, :, j] = scales[..., offset]
    return out.reshape(groups, row_blocks * 16, col_blocks * per_block)


def dequantize_packed(blocks, scales, factor, nvfp4: bool) -> torch.Tensor:
    """A packed GEMM operand [G, N/16, K/64, 512] -> FP64 weights [G, N, K] through the kernels'
    arithmetic (fragment.h): E2M1 value x 2^-126 x BF16(kernel scale bits) x epilogue factor;
    a kernel code 0 is a zero (or flushed) block."""
    values = E2M1_VALUES[unpack_fragments(blocks).long()] * 2.0 ** -126
    codes = unpack_fragment_scales(scales, nvfp4).to(torch.int64)
    bits = (codes << 4) + (236 << 7) if nvfp4 else codes << 7
    multiplier = torch.where(codes == 0, torch.zeros_like(codes), bits).to(torch.int32) << 16
    multiplier = multiplier.view(torch.float32).to(torch.float64)
    block = 16 if nvfp4 else 32
    return values * multiplier.repeat_interleave(block, dim=-1) * factor.to(torch.float64)[:, None, None]


def split_w13(w13: torch.Tensor):
    """Packed W13 rows [G, 2I, H] -> (w1 [G, I, H], w3 [G, I, H]): row 16 b + r is w1 row 8 b + r
    for r < 8, w3 row 8 b + r - 8 otherwise."""
    groups, rows, cols = w13.shape
    pairs = w13.reshape(groups, rows // 16, 2, 8, cols)
    return pairs[:, :, 0].reshape(groups, rows // 2, cols), pairs[:, :, 1].reshape(groups, rows // 2, cols)


def moe_forward(x, topk_ids, topk_weights, w1, w3, w2, swiglu_limit: float, has_shared: bool = True):
    """FP64 MoE layer: out[t] = sum_k weight[t, k] expert_{id}(x[t]) (+ shared, the last group),
    expert(x) = (silu(min(x W1^T, limit)) * clamp(x W3^T, -limit, limit)) W2^T; ids outside
    [0, experts) dropped. w1, w3 [G, I, H], w2 [G, H, I]."""
    x = x.to(torch.float64)
    w1, w3, w2 = (w.to(torch.float64) for w in (w1, w3, w2))
    experts = w1.shape[0] - (1 if has_shared else 0)

    def expert(e, rows):
        gate = (rows @ w1[e].T).clamp(max=swiglu_limit)
        up = (rows @ w3[e].T).clamp(-swiglu_limit, swiglu_limit)
        return (gate * torch.sigmoid(gate) * up) @ w2[e].T

    out = torch.zeros(x.shape[0], w2.shape[1], dtype=torch.float64)
    for e in range(experts):
        token, k = (topk_ids == e).nonzero(as_tuple=True)
        if token.numel():
            out.index_add_(0, token, expert(e, x[token]) * topk_weights[token, k].to(torch.float64)[:, None])
    if has_shared:
        out += expert(experts, x)
    return out
