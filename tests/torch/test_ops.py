"""Tests of the dsv4 torch ops (torch_ops/): values, not just shapes.

CPU: quantizers bitwise against a pure-torch statement of the recipes (dsv4_torch.reference)
and against `dsv4 quantize`'s output on a fixture checkpoint; dequantizers; moe_pack's
fragment layout decoded in torch; moe_forward_reference against the FP64 torch layer; fake
implementations under FakeTensorMode, torch.library.opcheck and torch.compile(fullgraph=True);
every bad input's error message. CUDA (skipped with the reason printed when there is no GPU,
an error instead when DSV4_TORCH_REQUIRE_CUDA=1): quantizer bytes == CPU bytes, moe_forward vs
the torch layer on the torch-dequantized packed weights (cosine >= 0.9999 per token row), CUDA
graph replay == eager. Run: bash scripts/torch_ops.sh (or pytest -rs tests/torch)."""
import json
import os
import struct
import subprocess
import tempfile

import pytest
import torch

import dsv4_torch
from dsv4_torch import reference

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURE = os.path.join(REPO, "tests", "fixtures", "golden", "small_rates")
COSINE_BOUND = 0.9999  # per token row, GPU layer vs FP64 torch layer (BF16 intermediates in the kernels)
REQUIRE_CUDA = os.environ.get("DSV4_TORCH_REQUIRE_CUDA") == "1"


def assert_bytes_equal(got, want, what):
    got, want = got.view(torch.uint8).cpu(), want.view(torch.uint8).cpu()
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    diff = (got != want).nonzero()
    if diff.numel():
        first = tuple(diff[0].tolist())
        raise AssertionError(f"{what}: {diff.shape[0]} of {got.numel()} bytes differ; first at {first}: "
                             f"got {got[first].item():#04x}, want {want[first].item():#04x}")


def hunting_weights(rows, cols, seed, dtype=torch.bfloat16):
    """Normal weights with blocks that hunt the special cases: an all-zero block, a tiny block
    (E4M3 subnormal / underflowing scales), a huge value, exact ties of the E2M1 grid."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    w[0, :32] = 0
    if rows > 1:
        w[1, :32] *= 1e-6
    if rows > 2:
        w[2, 5] = 30.0
    if rows > 3:
        w[3, :8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25]) * w[3, 8:16].abs().max() / 6
    return w.to(dtype)




# ---- quantizers: bitwise against the recipes -------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(37, 96), (1, 16), (64, 256)])
def test_quantize_nvfp4_matches_recipe(shape, dtype):
    w = hunting_weights(*shape, seed=shape[0], dtype=dtype)
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(w)
    want_packed, want_scales, want_global = reference.quantize_nvfp4(w)
    assert packed.dtype == scales.dtype == torch.uint8 and global_scale.dtype == torch.float32
    assert global_scale.shape == ()
    assert_bytes_equal(global_scale.reshape(1).view(torch.uint8), want_global.reshape(1).view(torch.uint8),
                       "global_scale")
    assert_bytes_equal(scales, want_scales, "nvfp4 scales")
    assert_bytes_equal(packed, want_packed, "nvfp4 packed")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(37, 96), (1, 32), (64, 256)])
def test_quantize_mxfp4_matches_recipe(shape, dtype):
    w = hunting_weights(*shape, seed=shape[1], dtype=dtype)
    packed, scales = dsv4_torch.quantize_mxfp4(w)
    want_packed, want_scales = reference.quantize_mxfp4(w)
    assert_bytes_equal(scales, want_scales, "mxfp4 scales")
    assert_bytes_equal(packed, want_packed, "mxfp4 packed")


def test_quantize_stacked_matrices_have_one_global_scale_each():
    w = torch.stack([hunting_weights(8, 64, seed=s) * (s + 1) for s in range(3)])  # [3, 8, 64]
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(w)
    assert packed.shape == (3, 8, 32) and scales.shape == (3, 8, 4) and global_scale.shape == (3,)
    for e in range(3):
        want_packed, want_scales, want_global = reference.quantize_nvfp4(w[e])
        assert global_scale[e].item() == want_global.item()
        assert_bytes_equal(packed[e], want_packed, f"packed[{e}]")
        assert_bytes_equal(scales[e], want_scales, f"scales[{e}]")
    mx_packed, mx_scales = dsv4_torch.quantize_mxfp4(w)
    for e in range(3):
        want_packed, want_scales = reference.quantize_mxfp4(w[e])
        assert_bytes_equal(mx_packed[e], want_packed, f"mxfp4 packed[{e}]")
        assert_bytes_equal(mx_scales[e], want_scales, f"mxfp4 scales[{e}]")


def test_quantize_empty_and_zero_matrices():
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(torch.zeros(0, 32))
    assert packed.shape == (0, 16) and scales.shape == (0, 2) and global_scale.item() == 1.0
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(torch.zeros(2, 32))
    assert global_scale.item() == 1.0 and (scales == 0x38).all() and (packed == 0).all()  # E4M3 1.0, codes 0


# ---- dequantizers ------------------------------------------------------------------------------

def test_dequantize_nvfp4_round_trip():
    w = hunting_weights(33, 128, seed=7)
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(w)
    exact = dsv4_torch.dequantize_nvfp4(packed, scales, global_scale, torch.float32)
    want = reference.dequantize_nvfp4(packed, scales, global_scale)
    assert torch.equal(exact, want), f"max |diff| {(exact - want).abs().max().item()}"
    bf16 = dsv4_torch.dequantize_nvfp4(packed, scales, global_scale)
    assert bf16.dtype == torch.bfloat16 and torch.equal(bf16, want.to(torch.bfloat16))
    # torch's own FP4 / FP8 dtypes are accepted as the same bytes.
    typed = dsv4_torch.dequantize_nvfp4(packed.view(torch.float4_e2m1fn_x2), scales.view(torch.float8_e4m3fn),
                                        global_scale, torch.float32)
    assert torch.equal(typed, exact)
    cosine = torch.nn.functional.cosine_similarity(exact.flatten(), w.float().flatten(), dim=0).item()
    assert cosine > 0.99, f"NVFP4 round trip cosine {cosine}"


def test_dequantize_mxfp4_round_trip():
    w = hunting_weights(33, 128, seed=8)
    packed, scales = dsv4_torch.quantize_mxfp4(w)
    exact = dsv4_torch.dequantize_mxfp4(packed, scales, torch.float32)
    assert torch.equal(exact, reference.dequantize_mxfp4(packed, scales))
    assert torch.equal(dsv4_torch.dequantize_mxfp4(packed.view(torch.int8), scales.view(torch.float8_e8m0fnu),
                                                   torch.float32), exact)


# ---- bitwise against `dsv4 quantize` -------------------------------------------------------------

_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "U8": torch.uint8, "I8": torch.int8,
                       "F8_E4M3": torch.float8_e4m3fn, "F8_E8M0": torch.float8_e8m0fnu}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    header_bytes = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + header_bytes])
    base = 8 + header_bytes
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] not in _SAFETENSORS_DTYPES:
            continue
        begin, end = info["data_offsets"]
        raw = torch.frombuffer(bytearray(blob[base + begin:base + end]), dtype=torch.uint8)
        tensors[name] = raw.view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def dsv4_cli():
    for candidate in [os.environ.get("DSV4_CLI"), os.path.join(REPO, "build-torch", "tools", "dsv4"),
                      os.path.join(REPO, "build", "tools", "dsv4")]:
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


@pytest.mark.parametrize("experts", ["nvfp4", "mxfp4"])
def test_quantize_matches_dsv4_quantize_cli(experts):
    cli = dsv4_cli()
    if cli is None:
        reason = "no dsv4 CLI built (set DSV4_CLI or build build-torch/tools/dsv4): the CLI comparison did not run"
        print("SKIP:", reason)
        pytest.skip(reason)
    source = read_safetensors(os.path.join(FIXTURE, "model.safetensors"))
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([cli, "quantize", "--in", FIXTURE, "--out", out, "--experts", experts, "--dense", "bf16"],
                       check=True, capture_output=True)
        written = read_safetensors(os.path.join(out, "model.safetensors"))
    scale_suffix = ".weight_scale" if experts == "nvfp4" else ".scale"
    compared = 0
    for name, data in written.items():
        base = name[:-len(".weight")] if name.endswith(".weight") else None
        # 4-bit outputs only (MXFP4 leaves matrices whose k is not a multiple of 32 in FP8).
        if ".experts." not in name or base is None or data.dtype not in (torch.uint8, torch.int8):
            continue
        w = source["model." + name]
        if experts == "nvfp4":
            packed, scales, global_scale = dsv4_torch.quantize_nvfp4(w)
            assert global_scale.item() == written[base + ".weight_scale_2"].item(), name
        else:
            packed, scales = dsv4_torch.quantize_mxfp4(w)
        assert_bytes_equal(packed, data, name)
        assert_bytes_equal(scales, written[base + scale_suffix], base + scale_suffix)
        compared += 1
    print(f"[torch_ops] {experts}: {compared} expert matrices bitwise equal to `dsv4 quantize`")
    assert compared >= 16


# ---- moe_pack: the fragment layout decoded in torch ------------------------------------------------

def make_layer(fmt, groups, hidden, intermediate, seed, device="cpu"):
    """Random experts quantized by the ops: (dict of moe_pack / moe_forward_reference kwargs)."""
    g = torch.Generator().manual_seed(seed)
    quantize = dsv4_torch.quantize_nvfp4 if fmt == "nvfp4" else dsv4_torch.quantize_mxfp4
    layer = {}
    for name, shape in [("w1", (groups, intermediate, hidden)), ("w3", (groups, intermediate, hidden)),
                        ("w2", (groups, hidden, intermediate))]:
        w = (torch.randn(shape, generator=g) * (0.6 / shape[2] ** 0.5)).to(torch.bfloat16).to(device)
        parts = quantize(w)
        layer[name], layer[name + "_scales"] = parts[0], parts[1]
        layer[name + "_global_scale"] = parts[2] if fmt == "nvfp4" else None
    return layer


def stored_weights(fmt, layer):
    """FP32 w1, w3 [G, I, H], w2 [G, H, I] from the checkpoint-layout tensors (the library's dequantizer)."""
    out = []
    for name in ("w1", "w3", "w2"):
        if fmt == "nvfp4":
            out.append(dsv4_torch.dequantize_nvfp4(layer[name].cpu(), layer[name + "_scales"].cpu(),
                                                   layer[name + "_global_scale"].cpu(), torch.float32))
        else:
            out.append(dsv4_torch.dequantize_mxfp4(layer[name].cpu(), layer[name + "_scales"].cpu(), torch.float32))
    return out


def packed_weights(fmt, packed):
    """FP64 w1, w3, w2 decoded in torch from moe_pack's outputs (the kernels' arithmetic)."""
    nvfp4 = fmt == "nvfp4"
    factors = packed.factors.cpu()
    w13 = reference.dequantize_packed(packed.w13_packed.cpu(), packed.w13_packed_scales.cpu(), factors[0], nvfp4)
    w13_up = reference.dequantize_packed(packed.w13_packed.cpu(), packed.w13_packed_scales.cpu(), factors[1], nvfp4)
    w1, _ = reference.split_w13(w13)
    _, w3 = reference.split_w13(w13_up)
    w2 = reference.dequantize_packed(packed.w2_packed.cpu(), packed.w2_packed_scales.cpu(), factors[2], nvfp4)
    return w1, w3, w2


def pack(fmt, layer):
    return dsv4_torch.moe_pack(fmt, layer["w1"], layer["w1_scales"], layer["w3"], layer["w3_scales"], layer["w2"],
                               layer["w2_scales"], layer["w1_global_scale"], layer["w3_global_scale"],
                               layer["w2_global_scale"])


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_moe_pack_layout_decodes_to_the_stored_weights(fmt):
    groups, hidden, intermediate = 3, 128, 64
    layer = make_layer(fmt, groups, hidden, intermediate, seed=11)
    packed = pack(fmt, layer)
    sb = 64 if fmt == "nvfp4" else 32
    assert packed.w13_packed.shape == (groups, 2 * intermediate // 16, hidden // 64, 512)
    assert packed.w13_packed_scales.shape == (groups, 2 * intermediate // 16, hidden // 64, sb)
    assert packed.w2_packed.shape == (groups, hidden // 16, intermediate // 64, 512)
    assert packed.w2_packed_scales.shape == (groups, hidden // 16, intermediate // 64, sb)
    assert packed.factors.shape == (3, groups)
    for got, want, name in zip(packed_weights(fmt, packed), stored_weights(fmt, layer), ("w1", "w3", "w2")):
        # NVFP4: the stored dequantizer rounds s_block x s_tensor to FP32 once (2^-24 relative).
        torch.testing.assert_close(got, want.to(torch.float64), rtol=2 ** -23, atol=0, msg=lambda m: f"{name}: {m}")


# ---- CPU reference layer -----------------------------------------------------------------------------

def make_routing(tokens, experts, top_k, seed, device="cpu", dropped=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.rand(tokens, experts, generator=g).topk(top_k, dim=1).indices.to(torch.int32)
    if dropped:  # vLLM's expert parallelism marks experts of other ranks -1
        ids.view(-1)[torch.randperm(ids.numel(), generator=g)[:dropped]] = -1
    weights = torch.rand(tokens, top_k, generator=g) + 0.1
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(torch.float32)
    return ids.to(device), weights.to(device)


def reference_kwargs(layer):
    return {k: layer[k].cpu() if layer[k] is not None else None
            for k in ("w1", "w1_scales", "w3", "w3_scales", "w2", "w2_scales", "w1_global_scale", "w3_global_scale",
                      "w2_global_scale")}


def row_cosines(got, want):
    return torch.nn.functional.cosine_similarity(got.to(torch.float64), want.to(torch.float64), dim=1)


def check_rows(got, want, label):
    cosines = row_cosines(got, want)
    worst = int(cosines.argmin())
    message = (f"{label}: min row cosine {cosines[worst].item():.7f} at token {worst} "
               f"(max |diff| {(got.double() - want.double()).abs().max().item():.3g}, "
               f"row max |ref| {want[worst].abs().max().item():.3g})")
    print("[torch_ops]", message)
    assert bool(torch.isfinite(got).all()), f"{label}: non-finite outputs"
    assert cosines.min().item() >= COSINE_BOUND, message


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
@pytest.mark.parametrize("has_shared", [True, False])
def test_moe_forward_reference_matches_torch_layer(fmt, has_shared):
    groups, hidden, intermediate, top_k, tokens, limit = 5, 128, 64, 2, 7, 0.6
    layer = make_layer(fmt, groups, hidden, intermediate, seed=3)
    experts = groups - (1 if has_shared else 0)
    ids, weights = make_routing(tokens, experts, top_k, seed=4, dropped=2)
    x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16)
    got = dsv4_torch.moe_forward_reference(fmt, x, ids, weights, **reference_kwargs(layer), swiglu_limit=limit,
                                           has_shared=has_shared)
    w1, w3, w2 = stored_weights(fmt, layer)
    want = reference.moe_forward(x, ids, weights, w1, w3, w2, limit, has_shared)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    rounded = dsv4_torch.moe_forward_reference(fmt, x, ids, weights, **reference_kwargs(layer), swiglu_limit=limit,
                                               has_shared=has_shared, round_bf16_operands=True)
    check_rows(rounded, want, f"cpu reference with BF16 operands {fmt}")


# ---- fake implementations / torch.compile ----------------------------------------------------------------

def test_fake_shapes_under_fake_tensor_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        w = torch.empty(4, 24, 96, dtype=torch.bfloat16)
        packed, scales, global_scale = torch.ops.dsv4.quantize_nvfp4(w)
        assert packed.shape == (4, 24, 48) and scales.shape == (4, 24, 6) and global_scale.shape == (4,)
        mx_packed, mx_scales = torch.ops.dsv4.quantize_mxfp4(w)
        assert mx_packed.shape == (4, 24, 48) and mx_scales.shape == (4, 24, 3)
        assert torch.ops.dsv4.dequantize_nvfp4(packed, scales, global_scale).dtype == torch.bfloat16
        assert torch.ops.dsv4.dequantize_mxfp4(mx_packed, mx_scales, torch.float32).shape == (4, 24, 96)
        w1 = torch.empty(5, 64, 64, dtype=torch.uint8)
        w1s = torch.empty(5, 64, 8, dtype=torch.uint8)
        w2 = torch.empty(5, 128, 32, dtype=torch.uint8)
        w2s = torch.empty(5, 128, 4, dtype=torch.uint8)
        gs = torch.empty(5)
        w13, w13s, w2p, w2ps, factors = torch.ops.dsv4.moe_pack("nvfp4", w1, w1s, w1, w1s, w2, w2s, gs, gs, gs)
        assert w13.shape == (5, 8, 2, 512) and w13s.shape == (5, 8, 2, 64)
        assert w2p.shape == (5, 8, 1, 512) and w2ps.shape == (5, 8, 1, 64) and factors.shape == (3, 5)
        x = torch.empty(9, 128, dtype=torch.bfloat16)
        ids = torch.empty(9, 2, dtype=torch.int32)
        weights = torch.empty(9, 2)
        out = torch.ops.dsv4.moe_forward(x, ids, weights, w13, w13s, w2p, w2ps, factors, 10.0)
        assert out.shape == (9, 128) and out.dtype == torch.float32
        ref = torch.ops.dsv4.moe_forward_reference("nvfp4", x, ids, weights, w1, w1s, w1, w1s, w2, w2s, gs, gs, gs,
                                                   10.0)
        assert ref.shape == (9, 128)


def test_opcheck_cpu_ops():
    w = hunting_weights(16, 64, seed=1)
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(w)
    mx_packed, mx_scales = dsv4_torch.quantize_mxfp4(w)
    layer = make_layer("nvfp4", 3, 128, 64, seed=2)
    ids, weights = make_routing(5, 2, 2, seed=3)
    x = torch.randn(5, 128).to(torch.bfloat16)
    cases = [
        (torch.ops.dsv4.quantize_nvfp4.default, (w,)),
        (torch.ops.dsv4.quantize_mxfp4.default, (w,)),
        (torch.ops.dsv4.dequantize_nvfp4.default, (packed, scales, global_scale)),
        (torch.ops.dsv4.dequantize_mxfp4.default, (mx_packed, mx_scales, torch.float32)),
        (torch.ops.dsv4.moe_pack.default, ("nvfp4", layer["w1"], layer["w1_scales"], layer["w3"], layer["w3_scales"],
                                           layer["w2"], layer["w2_scales"], layer["w1_global_scale"],
                                           layer["w3_global_scale"], layer["w2_global_scale"])),
        (torch.ops.dsv4.moe_forward_reference.default,
         ("nvfp4", x, ids, weights, *reference_kwargs(layer).values(), 10.0)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_torch_compile_fullgraph_cpu():
    def quantize_round_trip(w):
        packed, scales, global_scale = torch.ops.dsv4.quantize_nvfp4(w)
        return torch.ops.dsv4.dequantize_nvfp4(packed, scales, global_scale, torch.float32) * 2

    w = hunting_weights(32, 128, seed=9)
    compiled = torch.compile(quantize_round_trip, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(w), quantize_round_trip(w))


# ---- bad inputs: errors name the argument, what it is and what was expected -----------------------------------

def expect_error(call, *fragments):
    with pytest.raises(RuntimeError) as error:
        call()
    message = str(error.value).splitlines()[0]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_bad_inputs_are_named():
    w = hunting_weights(8, 64, seed=1)
    packed, scales, global_scale = dsv4_torch.quantize_nvfp4(w)
    expect_error(lambda: dsv4_torch.quantize_nvfp4(w.half()), "dsv4::quantize_nvfp4", "'w'", "Half[8, 64]",
                 "BFloat16 or Float")
    expect_error(lambda: dsv4_torch.quantize_nvfp4(w[:, :40]), "'w'", "[8, 40]", "multiple of 16")
    expect_error(lambda: dsv4_torch.quantize_mxfp4(w[:, :48]), "dsv4::quantize_mxfp4", "multiple of 32")
    expect_error(lambda: dsv4_torch.quantize_nvfp4(w[0]), "'w'", "at least 2 dimensions")
    bad = w.clone()
    bad[3, 7] = float("nan")
    expect_error(lambda: dsv4_torch.quantize_nvfp4(bad), "non-finite", "flat index 199")
    expect_error(lambda: dsv4_torch.dequantize_nvfp4(packed, scales[:, :2], global_scale), "'scales'", "[8, 2]",
                 "size 4 in dimension 1")
    expect_error(lambda: dsv4_torch.dequantize_nvfp4(packed, scales.float(), global_scale), "'scales'",
                 "Byte or Float8_e4m3fn")
    expect_error(lambda: dsv4_torch.dequantize_nvfp4(packed, scales, global_scale.double()), "'global_scale'",
                 "Double")
    expect_error(lambda: dsv4_torch.dequantize_nvfp4(packed, scales, global_scale, torch.int32), "out_dtype")
    layer = make_layer("nvfp4", 2, 128, 64, seed=1)
    args = [layer[k] for k in ("w1", "w1_scales", "w3", "w3_scales", "w2", "w2_scales")]
    globals_ = [layer[k] for k in ("w1_global_scale", "w3_global_scale", "w2_global_scale")]
    expect_error(lambda: dsv4_torch.moe_pack("fp8", *args, *globals_), "format 'fp8'", "'nvfp4' or 'mxfp4'")
    expect_error(lambda: dsv4_torch.moe_pack("nvfp4", *args), "'w1_global_scale' is missing")
    expect_error(lambda: dsv4_torch.moe_pack("mxfp4", *args, *globals_), "'w1_scales'", "Byte[2, 64, 8]",
                 "size 4 in dimension 2", "one mxfp4 block scale per 32 values")
    expect_error(lambda: dsv4_torch.moe_pack("mxfp4", args[0], args[1].view(torch.float8_e4m3fn), *args[2:]),
                 "'w1_scales'", "Byte or Float8_e8m0fnu")
    expect_error(lambda: dsv4_torch.moe_pack("nvfp4", *args[:4], args[4][:1], args[5][:1], *globals_[:2],
                                            globals_[2][:1]), "'w2'", "Byte[1, 128, 32]", "experts, as w1")
    neg = layer["w1_scales"].clone()
    neg[0, 0, 0] = 0x80 | 0x30  # negative E4M3 scale
    expect_error(lambda: dsv4_torch.moe_pack("nvfp4", args[0], neg, *args[2:], *globals_), "dsv4::moe_pack",
                 "negative or NaN")
    ids, weights = make_routing(3, 1, 1, seed=1)
    x = torch.randn(3, 128).to(torch.bfloat16)
    kwargs = reference_kwargs(layer)
    expect_error(lambda: dsv4_torch.moe_forward_reference("nvfp4", x, ids.long(), weights, **kwargs, swiglu_limit=1.0),
                 "'topk_ids'", "Long[3, 1]", "Int")
    expect_error(lambda: dsv4_torch.moe_forward_reference("nvfp4", x[:, :64], ids, weights, **kwargs,
                                                          swiglu_limit=1.0), "'x'", "size 128")
    expect_error(lambda: dsv4_torch.moe_forward_reference("nvfp4", x, ids, weights[:2], **kwargs, swiglu_limit=1.0),
                 "'topk_weights'", "leading dimensions")


# ---- CUDA ---------------------------------------------------------------------------------------------

def cuda_unavailable_reason():
    if not torch.cuda.is_available():
        return "no CUDA device visible to torch"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("dsv4::moe_forward", "CUDA"):
        return "libdsv4_torch_ops was built without the CUDA backend (no nvcc at configure time)"
    return None


def require_cuda():
    reason = cuda_unavailable_reason()
    if reason is None:
        return
    if REQUIRE_CUDA:
        pytest.fail(f"DSV4_TORCH_REQUIRE_CUDA=1 but {reason}")
    print("SKIP (CUDA test):", reason)
    pytest.skip(reason)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_cuda_quantizers_match_cpu_bytes(fmt):
    require_cuda()
    w = torch.stack([hunting_weights(64, 256, seed=s) for s in range(2)])
    quantize = dsv4_torch.quantize_nvfp4 if fmt == "nvfp4" else dsv4_torch.quantize_mxfp4
    for got, want, name in zip(quantize(w.cuda()), quantize(w), ("packed", "scales", "global_scale")):
        assert got.is_cuda
        assert_bytes_equal(got.contiguous().view(torch.uint8), want.contiguous().view(torch.uint8), f"{fmt} {name}")
    if fmt == "nvfp4":
        packed, scales, global_scale = quantize(w)
        got = dsv4_torch.dequantize_nvfp4(packed.cuda(), scales.cuda(), global_scale.cuda())
        assert torch.equal(got.cpu(), dsv4_torch.dequantize_nvfp4(packed, scales, global_scale))
    else:
        packed, scales = quantize(w)
        got = dsv4_torch.dequantize_mxfp4(packed.cuda(), scales.cuda())
        assert torch.equal(got.cpu(), dsv4_torch.dequantize_mxfp4(packed, scales))


CUDA_TOKENS = [1, 7, 64, 333, 1024]  # 1024: the prefill tile config (> 512 tokens)


@pytest.mark.parametrize("fmt", ["nvfp4", "mxfp4"])
def test_cuda_moe_forward_matches_torch_layer(fmt):
    require_cuda()
    groups, hidden, intermediate, top_k, limit = 9, 256, 256, 4, 0.6  # 8 routed experts + the shared one
    layer = make_layer(fmt, groups, hidden, intermediate, seed=21, device="cuda")
    packed = pack(fmt, layer)
    assert packed.w13_packed.is_cuda
    w1, w3, w2 = packed_weights(fmt, packed)  # the packed bytes, dequantized in torch
    for tokens in CUDA_TOKENS:
        ids, weights = make_routing(tokens, groups - 1, top_k, seed=tokens, device="cuda", dropped=tokens // 7)
        x = torch.randn(tokens, hidden, generator=torch.Generator().manual_seed(tokens)).to(torch.bfloat16).cuda()
        out = dsv4_torch.moe_forward(x, ids, weights, *packed, swiglu_limit=limit)
        torch.cuda.synchronize()
        assert out.shape == (tokens, hidden) and out.dtype == torch.float32
        want = reference.moe_forward(x.cpu(), ids.cpu(), weights.cpu(), w1, w3, w2, limit)
        check_rows(out.cpu(), want, f"cuda moe_forward {fmt} T={tokens}")
        if tokens == 64:
            cpu = dsv4_torch.moe_forward_reference(fmt, x.cpu(), ids.cpu(), weights.cpu(), **reference_kwargs(layer),
                                                   swiglu_limit=limit, round_bf16_operands=True)
            check_rows(out.cpu(), cpu, f"cuda moe_forward {fmt} T={tokens} vs moe_forward_reference")


def test_cuda_moe_forward_graph_replay_and_compile():
    require_cuda()
    fmt, groups, hidden, intermediate, limit = "nvfp4", 5, 128, 128, 1.0
    packed = pack(fmt, make_layer(fmt, groups, hidden, intermediate, seed=5, device="cuda"))
    ids, weights = make_routing(8, groups - 1, 2, seed=6, device="cuda")
    x = torch.randn(8, hidden, device="cuda").to(torch.bfloat16)
    eager = dsv4_torch.moe_forward(x, ids, weights, *packed, swiglu_limit=limit)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream, as torch's graph docs ask
        dsv4_torch.moe_forward(x, ids, weights, *packed, swiglu_limit=limit)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = dsv4_torch.moe_forward(x, ids, weights, *packed, swiglu_limit=limit)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager), "graph replay differs from eager"

    def layer(x, ids, weights):
        return torch.ops.dsv4.moe_forward(x, ids, weights, *packed, limit) + 1

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(x, ids, weights), eager + 1)


def test_cuda_moe_forward_bad_inputs():
    require_cuda()
    packed = pack("nvfp4", make_layer("nvfp4", 3, 128, 128, seed=1, device="cuda"))
    ids, weights = make_routing(4, 2, 2, seed=1, device="cuda")
    x = torch.randn(4, 128, device="cuda").to(torch.bfloat16)
    expect_error(lambda: dsv4_torch.moe_forward(x.float(), ids, weights, *packed, swiglu_limit=1.0), "'x'",
                 "Float[4, 128]", "BFloat16")
    expect_error(lambda: dsv4_torch.moe_forward(x.cpu(), ids, weights, *packed, swiglu_limit=1.0), "'x'",
                 "the device of 'w13_packed'")
    expect_error(lambda: dsv4_torch.moe_forward(x, ids, weights, *packed, swiglu_limit=0.0), "swiglu_limit")
    expect_error(lambda: dsv4_torch.moe_forward(x, ids, weights, packed.w13_packed, packed.w13_packed_scales[..., :16].contiguous(),
                                                *packed[2:], swiglu_limit=1.0), "'w13_packed_scales'", "64 (NVFP4)")
    expect_error(lambda: dsv4_torch.moe_forward(x, ids, weights, packed.w13_packed[:, :, :1], *packed[1:],
                                                swiglu_limit=1.0), "'w13_packed'", "a contiguous tensor")
    small = pack("nvfp4", make_layer("nvfp4", 3, 64, 64, seed=1, device="cuda"))
    expect_error(lambda: dsv4_torch.moe_forward(x[:, :64], ids, weights, *small, swiglu_limit=1.0),
                 "multiples of 128")
