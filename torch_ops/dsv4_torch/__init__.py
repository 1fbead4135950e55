"""dsv4_torch: the dsv4 engine's 4-bit weight formats and CUDA MoE layer as PyTorch custom
ops (torch.ops.dsv4.*), for vLLM and other torch programs. See torch_ops/README.md.

    import dsv4_torch
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(w_bf16)   # or torch.ops.dsv4.quantize_nvfp4
"""
from . import _library

LIBRARY_PATH = _library.load()

from . import _fake  # noqa: E402,F401  (registers the fake implementations; needs the ops loaded)
from .ops import (  # noqa: E402,F401
    dequantize_mxfp4,
    dequantize_nvfp4,
    moe_forward,
    moe_forward_reference,
    moe_pack,
    quantize_mxfp4,
    quantize_nvfp4,
)
