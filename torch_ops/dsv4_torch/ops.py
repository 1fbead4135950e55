"""Python entry points of the dsv4 ops: the same arguments as torch.ops.dsv4.<name>, with
the layouts written down. W[n, k] is a linear layer's weight (y = x W^T), k the blocked
dimension; "..." stacks matrices (e.g. experts), each with its own NVFP4 global scale."""
from typing import NamedTuple, Optional

import torch

_ops = torch.ops.dsv4


def quantize_nvfp4(w: torch.Tensor):
    """w [..., n, k] bf16/f32 (k % 16 == 0, finite) -> (packed u8 [..., n, k/2] (low nibble = even
    column), scales u8 E4M3 [..., n, k/16], global_scale f32 [...] = amax / (6 * 448)): the bytes
    `dsv4 quantize --experts nvfp4` writes (ModelOpt's NVFP4 recipe). CPU and CUDA."""
    return _ops.quantize_nvfp4(w)


def quantize_mxfp4(w: torch.Tensor):
    """w [..., n, k] bf16/f32 (k % 32 == 0, finite) -> (packed u8 [..., n, k/2], scales u8 E8M0
    [..., n, k/32]): OCP MX v1.0 shared exponents, as `dsv4 quantize --experts mxfp4`. CPU and CUDA."""
    return _ops.quantize_mxfp4(w)


def dequantize_nvfp4(packed, scales, global_scale, out_dtype: Optional[torch.dtype] = None):
    """-> [..., n, k] out_dtype (default bf16). Packed may be uint8, int8 or float4_e2m1fn_x2, scales
    uint8 or float8_e4m3fn. CPU: exact FP32 then rounded; CUDA: bf16 only."""
    return _ops.dequantize_nvfp4(packed, scales, global_scale, out_dtype)


def dequantize_mxfp4(packed, scales, out_dtype: Optional[torch.dtype] = None):
    """-> [..., n, k] out_dtype (default bf16); scales uint8 or float8_e8m0fnu."""
    return _ops.dequantize_mxfp4(packed, scales, out_dtype)


class PackedMoe(NamedTuple):
    """One MoE layer in the CUDA kernels' fragment layout (src/cuda/moe/fragment.h)."""
    w13_packed: torch.Tensor         # u8 [G, 2I/16, H/64, 512]: gate / up rows interleaved by 8
    w13_packed_scales: torch.Tensor  # u8 [G, 2I/16, H/64, 64 (nvfp4) | 32 (mxfp4)] kernel scale codes
    w2_packed: torch.Tensor          # u8 [G, H/16, I/64, 512]
    w2_packed_scales: torch.Tensor   # u8 [G, H/16, I/64, 64 | 32]
    factors: torch.Tensor            # f32 [3, G]: epilogue factors of gate, up, down


def moe_pack(format: str, w1, w1_scales, w3, w3_scales, w2, w2_scales, w1_global_scale=None,
             w3_global_scale=None, w2_global_scale=None) -> PackedMoe:
    """Experts in checkpoint layout -> PackedMoe. format 'nvfp4' | 'mxfp4'; G experts (with the shared
    one last when moe_forward gets has_shared=True): w1 (gate), w3 (up) packed [G, I, H/2], w2 (down)
    [G, H, I/2], scales [G, rows, cols/block], NVFP4 global scales f32 [G]. On CUDA inputs the packing
    runs on the host and the results come back on the inputs' device."""
    return PackedMoe(*_ops.moe_pack(format, w1, w1_scales, w3, w3_scales, w2, w2_scales, w1_global_scale,
                                    w3_global_scale, w2_global_scale))


def moe_forward(x, topk_ids, topk_weights, w13_packed, w13_packed_scales, w2_packed, w2_packed_scales, factors,
                swiglu_limit: float, has_shared: bool = True):
    """CUDA. x bf16 [T, H], topk_ids i32 [T, K] (ids outside [0, experts) are dropped, e.g. -1),
    topk_weights f32 [T, K], a PackedMoe (H, I multiples of 128) -> out f32 [T, H] =
    sum_k topk_weights[t, k] * expert_{ids[t, k]}(x[t]) (+ the shared expert, group G-1, weight 1),
    expert(x) = (silu(min(x W1^T, limit)) * clamp(x W3^T, -limit, limit)) W2^T. BF16 intermediates
    (the SwiGLU output and each weighted expert output), FP32 accumulation. No host sync."""
    return _ops.moe_forward(x, topk_ids, topk_weights, w13_packed, w13_packed_scales, w2_packed, w2_packed_scales,
                            factors, swiglu_limit, has_shared)


def moe_forward_reference(format: str, x, topk_ids, topk_weights, w1, w1_scales, w3, w3_scales, w2, w2_scales,
                          w1_global_scale, w3_global_scale, w2_global_scale, swiglu_limit: float,
                          has_shared: bool = True, round_bf16_operands: bool = False):
    """CPU oracle of moe_forward from the checkpoint-layout experts (moe_pack's inputs): the CPU
    backend's FP32 expert_forward. round_bf16_operands rounds x, the SwiGLU output and each weighted
    expert output to BF16 as the CUDA kernels store them."""
    return _ops.moe_forward_reference(format, x, topk_ids, topk_weights, w1, w1_scales, w3, w3_scales, w2, w2_scales,
                                      w1_global_scale, w3_global_scale, w2_global_scale, swiglu_limit, has_shared,
                                      round_bf16_operands)
