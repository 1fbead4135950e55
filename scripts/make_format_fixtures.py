#!/usr/bin/env python3
"""Independent references for the C++ codecs and block quantizers (src/formats).

Writes tests/fixtures/formats/torch_formats.safetensors (< 300 KB), compared bit for
bit by tests/formats/torch_fixture_test.cpp. Everything here is computed by PyTorch,
never by the C++ code:

* E4M3 / E8M0: torch's own dtypes (torch.float8_e4m3fn, torch.float8_e8m0fnu) decode
  every code and encode random + adversarial inputs (ties, subnormals and their ties,
  the region around 448 / 464 / 480, +-inf, NaN, signed zeros). Saturating E4M3 is
  the reference quantizers' `clamp(-448, 448).to(float8_e4m3fn)`.
* E2M1: torch 2.11 has no conversion for torch.float4_e2m1fn_x2 (neither way, CPU);
  the script tries it and otherwise uses ModelOpt's `_cast_fp4` algorithm written
  with torch ops (searchsorted on the midpoints + a tie fix-up: a different
  algorithm from the C++ compare chain). Nibble order: transformers' own
  `Fp8Dequantize._unpack_fp4` (the converter of the official V4 FP4 experts) on all
  256 bytes, and float4_e2m1fn_x2 -> float when torch can do it.
* Block quantizers, in torch: MXFP4 (OCP: exponent bits of amax - 2, clamp, x / 2^e),
  NVFP4 (ModelOpt NVFP4QTensor: block scale cast by torch.float8_e4m3fn), FP8 128x128
  weights and 1x128 activations (DeepSeek's fast_round_scale with torch's float8 cast),
  on ragged shapes with adversarial blocks (all zero, denormal, exact ties, clipping).

Runs unchanged on the CPU machine and on the GPU machine (CPU tensors only; needs
torch >= 2.7 for float8_e8m0fnu, safetensors, and transformers for the nibble-order
tensor). From the repo root:
    python3 scripts/make_format_fixtures.py            # rewrites the committed fixture
On the GPU machine only files under $OUT come back, so write there and compare with
the committed file (exit status 1 when a tensor differs):
    python3 scripts/make_format_fixtures.py --out "$OUT/torch_formats.safetensors" --compare tests/fixtures/formats/torch_formats.safetensors
then copy the new file over tests/fixtures/formats/torch_formats.safetensors if wanted.
"""
import argparse
import os
import sys
import types

import torch
from safetensors.torch import load_file, save_file

DEFAULT_OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                                            "formats", "torch_formats.safetensors"))
parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--out", default=DEFAULT_OUT, help="file to write (default: the committed fixture)")
parser.add_argument("--compare", metavar="REF", help="compare every tensor bit for bit with this fixture file")
args = parser.parse_args()

torch.manual_seed(0)
gen = torch.Generator().manual_seed(1234)
F32 = torch.float32
u8 = torch.uint8


def bits_u8(t):
    return t.contiguous().view(u8)


# ----------------------------------------------------------------------------- E4M3
codes = torch.arange(256, dtype=u8)
e4m3_values = codes.view(torch.float8_e4m3fn).float()
finite = e4m3_values[torch.isfinite(e4m3_values) & (codes < 0x7F)]  # positive finite codes in order
mids = (finite[:-1] + finite[1:]) / 2                                 # exact in FP32: every tie
grid = torch.tensor([m * 2.0 ** e for e in range(-12, 9) for m in [1.0, 1.0625, 1.125, 1.1875, 1.5625, 1.9375]])
edges = torch.tensor([0.0, -0.0, 447.0, 448.0, 448.5, 455.9, 456.0, 463.9, 464.0, 464.1, 479.9, 480.0, 481.0,
                      1e4, 3e38, float("inf"), float("-inf"), float("nan"), 2 ** -9, 2 ** -10, 3 * 2 ** -11,
                      2 ** -10 + 2 ** -20, 2 ** -6, 2 ** -6 - 2 ** -10, 2 ** -6 - 2 ** -11, 1e-30, 1e-45])
e4m3_inputs = torch.cat([torch.randn(1500, generator=gen) * 40, torch.rand(500, generator=gen) * 0.02,
                         grid, -grid, mids, -mids, mids * (1 + 2 ** -20), mids * (1 - 2 ** -20), edges, -edges]).float()
e4m3_torch = bits_u8(e4m3_inputs.to(torch.float8_e4m3fn))                            # torch: overflow -> NaN
e4m3_saturated = bits_u8(e4m3_inputs.clamp(-448.0, 448.0).to(torch.float8_e4m3fn))   # reference quantizers

# ----------------------------------------------------------------------------- E8M0
pow2 = torch.tensor([2.0 ** e for e in range(-127, 128)], dtype=F32)
e8m0_inputs = torch.cat([pow2, pow2 * 1.5, pow2 * 1.4999, pow2 * 1.5001, pow2 * 0.75,
                         torch.rand(300, generator=gen) * 100, torch.tensor([0.0, -2.0, 1e-40, 3e38, float("inf"),
                                                                              float("nan"), 2.0 ** -149])]).float()
e8m0_torch = bits_u8(e8m0_inputs.to(torch.float8_e8m0fnu))

# ----------------------------------------------------------------------------- E2M1
E2M1_BOUNDS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
E2M1_ODD_BOUNDS = torch.tensor([0.75, 1.75, 3.5])  # ties whose lower neighbour has the odd code


def cast_fp4(x):
    """ModelOpt _cast_fp4: E2M1 codes (uint8, 0..15) of x, RNE on the code, saturating."""
    sign = (x < 0).to(u8)
    a = x.abs()
    order = torch.searchsorted(E2M1_BOUNDS, a.contiguous(), out_int32=True).to(u8)
    tie_up = (a.unsqueeze(-1) == E2M1_ODD_BOUNDS).any(dim=-1).to(u8)
    return (sign * 8 + order + tie_up).to(u8)


def torch_fp4_cast_or_none(x):
    try:  # torch.float4_e2m1fn_x2 conversion, where some version supports it
        return x.to(torch.float4_e2m1fn_x2)
    except (RuntimeError, NotImplementedError, TypeError):
        return None


e2m1_values = torch.tensor([0, .5, 1, 1.5, 2, 3, 4, 6])
e2m1_mids = (e2m1_values[:-1] + e2m1_values[1:]) / 2
e2m1_inputs = torch.cat([torch.randn(400, generator=gen) * 3, e2m1_values, -e2m1_values, e2m1_mids, -e2m1_mids,
                         e2m1_mids * (1 + 2 ** -20), e2m1_mids * (1 - 2 ** -20), -e2m1_mids * (1 + 2 ** -20),
                         torch.tensor([0.0, -0.0, -0.1, 6.0, 7.0, 8.0, 1e30, -1e30, float("inf"), float("-inf"),
                                       1e-40, -1e-40])]).float()
e2m1_codes = cast_fp4(e2m1_inputs)
torch_fp4_supported = torch_fp4_cast_or_none(torch.zeros(2)) is not None

# Nibble order of the official converter: transformers' Fp8Dequantize._unpack_fp4.
try:
    from transformers.integrations.finegrained_fp8 import Fp8Dequantize

    all_bytes = torch.arange(256, dtype=u8).view(torch.int8).reshape(1, 256)
    unpack_self = types.SimpleNamespace(_FP4_E2M1_LUT=Fp8Dequantize._FP4_E2M1_LUT)
    transformers_unpack = Fp8Dequantize._unpack_fp4(unpack_self, all_bytes).reshape(256, 2).float()
except ImportError as error:  # the C++ test then skips the nibble-order comparison
    print("WARNING: transformers unavailable, fixture without fp4_unpack_transformers:", error)
    transformers_unpack = None
try:
    torch_fp4_unpack = torch.arange(256, dtype=u8).view(torch.float4_e2m1fn_x2).float()
    torch_fp4_unpack_supported = True
except (RuntimeError, NotImplementedError, TypeError):
    torch_fp4_unpack_supported = False


# ----------------------------------------------------------------------------- blocks
def adversarial_rows(rows, cols, block, gen):
    """Random rows with special blocks: zero, denormal, exact ties, clipping, outliers."""
    x = torch.randn(rows, cols, generator=gen) * torch.exp(torch.randn(rows, 1, generator=gen))
    x[0, :block] = 0.0                                                   # amax 0
    x[1, :block] = torch.randn(block, generator=gen) * 1e-40             # FP32 denormals
    ties = torch.tensor([4.0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -2.5, -5.0, 0.5, 6.0, -1.25, -3.5])
    x[2, :block] = ties.repeat(block // 16 + 1)[:block] * 2.0 ** 3       # amax 32: MX exponent 3, scaled ties exact
    x[3, :block] = torch.linspace(-7.9, 7.9, block) * 2.0 ** -5          # amax in [6, 8) * 2^e: OCP clipping
    outlier = x[4, block:2 * block]
    outlier.copy_(torch.randn(outlier.numel(), generator=gen) * 1e4)  # outlier block
    x[4, 0] = 1e-3
    return x.float()


def mxfp4_reference(x):
    rows, cols = x.shape
    blocks = x.reshape(rows, cols // 32, 32)
    amax = blocks.abs().amax(dim=-1)
    # floor(log2(amax)) from the exponent bits (torchao's FLOOR mode); amax 0 -> -127.
    exponent_bits = ((amax.view(torch.int32) >> 23) & 0xFF) - 127
    exponent = torch.where(amax > 0, exponent_bits - 2, torch.full_like(exponent_bits, -127)).clamp(-127, 127)
    scale = torch.pow(2.0, exponent.double()).float()                    # exact (2^-127 is a denormal)
    codes = cast_fp4((blocks / scale.unsqueeze(-1)).reshape(rows, cols))
    packed = (codes[:, 1::2] << 4) | codes[:, 0::2]
    return packed.to(u8), (exponent + 127).to(u8)


def nvfp4_reference(x):
    rows, cols = x.shape
    s2 = x.abs().amax().float() / (6.0 * 448.0)
    blocks = x.reshape(rows, cols // 16, 16)
    per_block_amax = blocks.abs().amax(dim=-1).float()
    per_block_scale = per_block_amax / (6.0 * s2)
    per_block_scale[per_block_scale == 0] = 1.0
    scale_fp8 = per_block_scale.to(torch.float8_e4m3fn)
    eff = (scale_fp8.float() * s2).unsqueeze(-1)
    codes = cast_fp4((blocks / eff).reshape(rows, cols))
    codes = torch.where((eff == 0).expand_as(blocks).reshape(rows, cols), torch.zeros_like(codes), codes)
    packed = (codes[:, 1::2] << 4) | codes[:, 0::2]
    return packed.to(u8), bits_u8(scale_fp8), s2.reshape(1)


def pow2_ceil_scale(amax):
    """DeepSeek fast_round_scale: 2^ceil(log2(max(amax, 1e-4) * (1/448))) by FP32 bits."""
    ratio = amax.clamp(min=1e-4).float() * torch.tensor(1.0 / 448.0, dtype=F32)
    b = ratio.view(torch.int32)
    exponent = ((b >> 23) & 0xFF) - 127 + ((b & 0x7FFFFF) != 0).to(torch.int32)
    return exponent


def fp8_block_reference(x):
    rows, cols = x.shape
    srows, scols = -(-rows // 128), -(-cols // 128)
    q = torch.empty(rows, cols, dtype=u8)
    scales = torch.empty(srows, scols, dtype=u8)
    for i in range(srows):
        for j in range(scols):
            blk = x[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128]
            e = pow2_ceil_scale(blk.abs().amax())
            scales[i, j] = int(e) + 127
            s = torch.pow(torch.tensor(2.0, dtype=torch.float64), e.double()).float()
            q[i * 128:(i + 1) * 128, j * 128:(j + 1) * 128] = bits_u8((blk / s).clamp(-448, 448).to(torch.float8_e4m3fn))
    return q, scales


def fp8_activation_reference(x, power_of_two):
    tokens, cols = x.shape
    q = torch.empty(tokens, cols, dtype=u8)
    scales = torch.empty(tokens, -(-cols // 128), dtype=F32)
    for j in range(0, cols, 128):
        blk = x[:, j:j + 128]
        amax = blk.abs().amax(dim=-1)
        if power_of_two:
            s = torch.pow(2.0, pow2_ceil_scale(amax).double()).float()
        else:
            s = amax.clamp(min=1e-4) / 448.0
        scales[:, j // 128] = s
        q[:, j:j + 128] = bits_u8((blk / s.unsqueeze(-1)).clamp(-448, 448).to(torch.float8_e4m3fn))
    return q, scales


mx_in = adversarial_rows(8, 128, 32, gen)
mx_packed, mx_scales = mxfp4_reference(mx_in)
nv_in = adversarial_rows(8, 128, 16, gen)
nv_packed, nv_scales, nv_tensor_scale = nvfp4_reference(nv_in)
fp8_in = adversarial_rows(131, 136, 128, gen)        # ragged: 131 = 128 + 3 rows, 136 = 128 + 8 columns
fp8_in[5, :] = torch.tensor([2.0 ** -30]).expand(136)  # a tiny row inside the first block row
fp8_q, fp8_scales = fp8_block_reference(fp8_in)
act_in = adversarial_rows(6, 200, 128, gen)
act_q_pow2, act_scales_pow2 = fp8_activation_reference(act_in, True)
act_q_plain, act_scales_plain = fp8_activation_reference(act_in, False)

tensors = {
    "e4m3_decode": e4m3_values, "e8m0_decode": codes.view(torch.float8_e8m0fnu).float(),
    "e4m3_inputs": e4m3_inputs, "e4m3_torch": e4m3_torch, "e4m3_saturated": e4m3_saturated,
    "e8m0_inputs": e8m0_inputs, "e8m0_torch": e8m0_torch,
    "e2m1_inputs": e2m1_inputs, "e2m1_codes": e2m1_codes,
    "mxfp4_input": mx_in, "mxfp4_packed": mx_packed, "mxfp4_scales": mx_scales,
    "nvfp4_input": nv_in, "nvfp4_packed": nv_packed, "nvfp4_scales": nv_scales, "nvfp4_tensor_scale": nv_tensor_scale,
    "fp8_block_input": fp8_in, "fp8_block_q": fp8_q, "fp8_block_scales": fp8_scales,
    "act_input": act_in, "act_q_pow2": act_q_pow2, "act_scales_pow2": act_scales_pow2,
    "act_q_plain": act_q_plain, "act_scales_plain": act_scales_plain,
}
if transformers_unpack is not None:
    tensors["fp4_unpack_transformers"] = transformers_unpack
if torch_fp4_unpack_supported:
    tensors["fp4_unpack_torch"] = torch_fp4_unpack.reshape(256, 2)
# One metadata key: safetensors writes the metadata map in hash order, so several keys
# would make the file differ from run to run.
metadata = {"made_by": f"torch {torch.__version__}; float4_e2m1fn_x2 cast {torch_fp4_supported}, "
                       f"unpack {torch_fp4_unpack_supported}"}
out = args.out
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
save_file({k: v.contiguous() for k, v in tensors.items()}, out, metadata=metadata)
print(f"wrote {os.path.normpath(out)} ({os.path.getsize(out)} bytes); torch {torch.__version__}; "
      f"float4_e2m1fn_x2 cast: {torch_fp4_supported}, unpack: {torch_fp4_unpack_supported}")

if args.compare:
    # Byte views: NaN payloads and signs count, and NaN == NaN.
    reference = load_file(args.compare)
    differing = []
    for name in sorted(set(tensors) | set(reference)):
        if name not in tensors or name not in reference:
            differing.append(name)
            print(f"  {name}: only in {'the reference' if name in reference else 'the new file'}")
            continue
        ours, theirs = tensors[name].contiguous(), reference[name].contiguous()
        if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
            differing.append(name)
            print(f"  {name}: {ours.dtype} {list(ours.shape)} vs reference {theirs.dtype} {list(theirs.shape)}")
            continue
        mismatch = (ours.view(u8) != theirs.view(u8)).nonzero()
        if mismatch.numel():
            differing.append(name)
            print(f"  {name}: {mismatch.shape[0]} bytes differ, first at byte {mismatch[0].tolist()}")
    print(f"compare with {args.compare}: " + (f"{len(differing)} tensors differ: {differing}" if differing
                                               else f"all {len(tensors)} tensors identical"))
    sys.exit(1 if differing else 0)
