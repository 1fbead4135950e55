#!/usr/bin/env python3
"""Independent cross-check of the E4M3 / E8M0 codecs: PyTorch's own float8 dtypes.

Writes tests/fixtures/formats/torch_float8.safetensors:
  e4m3_decode F32 [256]: torch.float8_e4m3fn value of every code
  e8m0_decode F32 [256]: torch.float8_e8m0fnu value of every code
  e4m3_inputs F32 [N], e4m3_encoded U8 [N]: random and adversarial floats (ties,
  subnormals, the largest finite values, signed zeros) and torch's rounding of them.
(torch 2.11 cannot convert floats to float4_e2m1fn_x2 on the CPU, so E2M1 is checked
exhaustively against its definition in the C++ test instead.)
"""
import os
import torch
from safetensors.torch import save_file

codes = torch.arange(256, dtype=torch.uint8)
gen = torch.Generator().manual_seed(0)
grid = torch.tensor([m * 2.0 ** e for e in range(-10, 9) for m in [1.0, 1.0625, 1.125, 1.1875, 1.5625, 1.9375]])
ties = (codes.view(torch.float8_e4m3fn).float()[:126] + codes.view(torch.float8_e4m3fn).float()[1:127]) / 2
inputs = torch.cat([torch.randn(2000, generator=gen) * 30, torch.rand(500, generator=gen) * 0.01, grid, -grid,
                    ties, -ties, torch.tensor([0.0, -0.0, 448.0, -448.0, 463.9, 2 ** -9, 2 ** -10, 3 * 2 ** -11])])
inputs = inputs[inputs.abs() < 464]  # torch turns overflow into NaN; our encoder saturates (documented)
out = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "formats", "torch_float8.safetensors")
save_file({"e4m3_decode": codes.view(torch.float8_e4m3fn).float(),
           "e8m0_decode": codes.view(torch.float8_e8m0fnu).float(),
           "e4m3_inputs": inputs.float().contiguous(),
           "e4m3_encoded": inputs.to(torch.float8_e4m3fn).view(torch.uint8).contiguous()}, out)
print("wrote", out, len(inputs), "inputs; torch", torch.__version__)
