"""Fake (meta) implementations of the dsv4 ops: output shapes and dtypes only, so that
torch.compile, FakeTensorMode and vLLM's graph capture can trace the ops without running
them. They mirror the shape rules of torch_ops/csrc/registration.cpp; the argument checks
with their full messages run in the real kernels."""
import torch

_NVFP4_BLOCK, _MXFP4_BLOCK = 16, 32
_FRAG_ROWS, _FRAG_COLS, _FRAG_BYTES = 16, 64, 512
_FRAG_SCALE_BYTES = {"nvfp4": 64, "mxfp4": 32}


def _quantized(w, block):
    torch._check(w.dim() >= 2, lambda: f"w must be [..., n, k], got {tuple(w.shape)}")
    *stacked, n, k = w.shape
    torch._check(k % block == 0, lambda: f"k = {k} must be a multiple of {block}")
    packed = w.new_empty((*stacked, n, k // 2), dtype=torch.uint8)
    scales = w.new_empty((*stacked, n, k // block), dtype=torch.uint8)
    return stacked, packed, scales


@torch.library.register_fake("dsv4::quantize_nvfp4")
def _quantize_nvfp4(w):
    stacked, packed, scales = _quantized(w, _NVFP4_BLOCK)
    return packed, scales, w.new_empty(tuple(stacked), dtype=torch.float32)


@torch.library.register_fake("dsv4::quantize_mxfp4")
def _quantize_mxfp4(w):
    _, packed, scales = _quantized(w, _MXFP4_BLOCK)
    return packed, scales


def _dequantized(packed, out_dtype):
    torch._check(packed.dim() >= 2, lambda: f"packed must be [..., n, k/2], got {tuple(packed.shape)}")
    *stacked, n, half_k = packed.shape
    return packed.new_empty((*stacked, n, 2 * half_k), dtype=out_dtype or torch.bfloat16)


@torch.library.register_fake("dsv4::dequantize_nvfp4")
def _dequantize_nvfp4(packed, scales, global_scale, out_dtype=None):
    return _dequantized(packed, out_dtype)


@torch.library.register_fake("dsv4::dequantize_mxfp4")
def _dequantize_mxfp4(packed, scales, out_dtype=None):
    return _dequantized(packed, out_dtype)


@torch.library.register_fake("dsv4::moe_pack")
def _moe_pack(format, w1, w1_scales, w3, w3_scales, w2, w2_scales, w1_global_scale=None, w3_global_scale=None,
              w2_global_scale=None):
    torch._check(format in _FRAG_SCALE_BYTES, lambda: f"format {format!r}: expected 'nvfp4' or 'mxfp4'")
    groups, intermediate, half_hidden = w1.shape
    hidden = 2 * half_hidden
    scale_bytes = _FRAG_SCALE_BYTES[format]
    w13_blocks = (groups, 2 * intermediate // _FRAG_ROWS, hidden // _FRAG_COLS)
    w2_blocks = (groups, hidden // _FRAG_ROWS, intermediate // _FRAG_COLS)
    return (w1.new_empty((*w13_blocks, _FRAG_BYTES), dtype=torch.uint8),
            w1.new_empty((*w13_blocks, scale_bytes), dtype=torch.uint8),
            w1.new_empty((*w2_blocks, _FRAG_BYTES), dtype=torch.uint8),
            w1.new_empty((*w2_blocks, scale_bytes), dtype=torch.uint8),
            w1.new_empty((3, groups), dtype=torch.float32))


@torch.library.register_fake("dsv4::moe_forward")
def _moe_forward(x, topk_ids, topk_weights, w13_packed, w13_packed_scales, w2_packed, w2_packed_scales, factors,
                 swiglu_limit, has_shared=True):
    hidden = w13_packed.shape[2] * _FRAG_COLS
    torch._check(x.shape[1] == hidden, lambda: f"x is {tuple(x.shape)}, hidden of the weights is {hidden}")
    return x.new_empty((x.shape[0], hidden), dtype=torch.float32)


@torch.library.register_fake("dsv4::moe_forward_reference")
def _moe_forward_reference(format, x, topk_ids, topk_weights, w1, w1_scales, w3, w3_scales, w2, w2_scales,
                           w1_global_scale, w3_global_scale, w2_global_scale, swiglu_limit, has_shared=True,
                           round_bf16_operands=False):
    return x.new_empty((x.shape[0], 2 * w1.shape[2]), dtype=torch.float32)
