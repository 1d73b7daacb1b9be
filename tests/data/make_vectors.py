#!/usr/bin/env python3
"""Generate PyTorch reference vectors for wgpu-mha's tests.

Writes one safetensors file per case into tests/data/cases/: the inputs, the module weights
(for MHA cases) and PyTorch's own float32 CPU outputs. See tests/data/README.md for the
conventions. Deterministic: fixed per-case seeds, one CPU thread, deterministic algorithms,
and the safetensors header is rewritten with sorted metadata keys (safetensors' own writer
emits the metadata in hash order, which changes from run to run).

Regenerate with:
    python3 -m venv .venv && .venv/bin/pip install torch safetensors
    .venv/bin/python tests/data/make_vectors.py
"""

import copy
import json
import struct
import sys
import zlib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float32)

HERE = Path(__file__).resolve().parent
OUT = HERE / "cases"
RTOL = 1e-4
NOTES = []  # (case, observation) printed at the end


# --------------------------------------------------------------------------------------------
# helpers


def seed_of(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def fmt_float(x):
    return "%.6g" % x


def causal_allowed(L, S, causal):
    """Bool [L, S], True = query l may attend key s."""
    l = torch.arange(L).unsqueeze(1)
    s = torch.arange(S).unsqueeze(0)
    if causal == "top-left":
        return s <= l
    if causal == "bottom-right":
        return s <= l + (S - L)
    raise ValueError(causal)


def causal_float_mask(L, S, causal):
    m = torch.zeros(L, S)
    m.masked_fill_(~causal_allowed(L, S, causal), float("-inf"))
    return m


def rand_bool_blocked(gen, shape, p):
    return torch.rand(shape, generator=gen) < p


def rand_float_mask(gen, shape, p_inf=0.2, scale=1.0):
    m = torch.randn(shape, generator=gen) * scale
    m.masked_fill_(torch.rand(shape, generator=gen) < p_inf, float("-inf"))
    return m


def canonicalize_header(path):
    """Rewrite the JSON header with sorted metadata keys, same length, so the bytes are stable."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    new = {}
    if meta is not None:
        new["__metadata__"] = dict(sorted(meta.items()))
    new.update(header)
    s = json.dumps(new, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(s) <= n, (len(s), n)
    s += b" " * (n - len(s))
    path.write_bytes(data[:8] + s + data[8 + n :])


def tol_check(expected, ref64, atol):
    """max over elements of |exp - ref| / (atol + rtol*|ref|); <= 1 means within tolerance."""
    worst = 0.0
    for k, e in expected.items():
        r = ref64[k]
        ok = ~torch.isnan(r)
        if ok.any():
            err = (e.double() - r).abs()[ok]
            bound = atol + RTOL * r.abs()[ok]
            worst = max(worst, (err / bound).max().item())
    return worst


def write_case(name, tensors, meta, expected, ref64=None, extra=""):
    for k, v in expected.items():
        assert not torch.isnan(v).any(), f"{name}: {k} has NaN"
        assert torch.isfinite(v).all(), f"{name}: {k} not finite"
    maxabs = max(v.abs().max().item() for v in expected.values())
    atol = 1e-5 * max(1.0, maxabs)
    meta = dict(meta)
    meta["rtol"] = fmt_float(RTOL)
    meta["atol"] = fmt_float(atol)
    meta["torch_version"] = torch.__version__.split("+")[0]
    assert all(isinstance(v, str) for v in meta.values())
    all_t = dict(tensors)
    for k, v in expected.items():
        all_t["expected_" + k] = v
    all_t = {k: v.detach().contiguous().clone() for k, v in all_t.items()}
    for k, v in all_t.items():
        assert v.dtype in (torch.float32, torch.bool), (name, k, v.dtype)
    path = OUT / f"{name}.safetensors"
    save_file(all_t, str(path), metadata=meta)
    canonicalize_header(path)
    # read back
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == meta
        for k in f.keys():
            got = f.get_tensor(k)
            assert got.dtype == all_t[k].dtype and got.shape == all_t[k].shape
            assert torch.equal(got.isnan(), all_t[k].isnan())
    ratio = tol_check({k: v for k, v in expected.items()}, ref64, atol) if ref64 else float("nan")
    if ref64 and ratio > 1.0:
        NOTES.append((name, f"float32 PyTorch result is {ratio:.2f}x outside rtol/atol of float64"))
    shapes = " ".join(f"{k}{list(v.shape)}" for k, v in sorted(all_t.items()) if not k.startswith(("in_proj", "out_proj", "q_proj", "k_proj", "v_proj")))
    print(
        f"{name:40s} {path.stat().st_size:7d} B  max|exp|={maxabs:.4g} atol={meta['atol']} "
        f"err/tol(f64)={ratio:.3f}{extra}  {shapes}"
    )
    return path.stat().st_size


# --------------------------------------------------------------------------------------------
# MHA


def mha_case(
    name,
    *,
    E,
    h,
    L,
    S,
    B=2,  # None = unbatched (2-D inputs)
    kdim=None,
    vdim=None,
    bias=True,
    batch_first=False,
    need_weights=False,
    average=True,
    causal="none",
    self_attn=False,
    attn_mask=None,  # None | "bool2d" | "float2d" | "bool3d" | "float3d" | "fully2d"
    kpm=None,  # None | "bool" | "float" | "fully_bool"
    input_scale=1.0,
):
    seed = seed_of(name)
    kdim = kdim or E
    vdim = vdim or E
    if self_attn:
        assert L == S and kdim == E and vdim == E
    torch.manual_seed(seed)  # nn.init uses the global generator
    m = nn.MultiheadAttention(E, h, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first)
    m.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    if bias:
        with torch.no_grad():
            m.in_proj_bias.copy_(torch.randn(m.in_proj_bias.shape, generator=gen) * 0.1)
            m.out_proj.bias.copy_(torch.randn(m.out_proj.bias.shape, generator=gen) * 0.1)

    def inp(n, width):
        if B is None:
            shape = (n, width)
        elif batch_first:
            shape = (B, n, width)
        else:
            shape = (n, B, width)
        return torch.randn(shape, generator=gen) * input_scale

    q = inp(L, E)
    if self_attn:
        k = v = q
    else:
        k = inp(S, kdim)
        v = inp(S, vdim)

    nb = 1 if B is None else B
    # masks; allowed[b, head, l, s] tracks what is visible, to find fully-masked rows
    for attempt in range(100):
        am = kp = None
        allowed = torch.ones(nb, h, L, S, dtype=torch.bool)
        if kpm is not None:
            kshape = (S,) if B is None else (B, S)
            if kpm == "bool":
                kp = rand_bool_blocked(gen, kshape, 0.3)
                blocked = kp
            elif kpm == "float":
                kp = rand_float_mask(gen, kshape, p_inf=0.25, scale=0.5)
                blocked = torch.isneginf(kp)
            else:
                raise ValueError(kpm)
            allowed &= ~blocked.reshape(nb, 1, 1, S)
        if attn_mask is not None:
            three = attn_mask.endswith("3d")
            ashape = ((h, L, S) if B is None else (B * h, L, S)) if three else (L, S)
            if attn_mask in ("bool2d", "bool3d"):
                am = rand_bool_blocked(gen, ashape, 0.3)
                blocked = am
            elif attn_mask in ("float2d", "float3d"):
                am = rand_float_mask(gen, ashape, p_inf=0.2)
                blocked = torch.isneginf(am)
            elif attn_mask == "fully2d":
                am = rand_bool_blocked(gen, ashape, 0.3)
                am[1] = True  # rows 1 and L-2 see nothing, in every batch
                am[L - 2] = True
                blocked = am
            else:
                raise ValueError(attn_mask)
            allowed &= ~(blocked.reshape(nb, h, L, S) if three else blocked.reshape(1, 1, L, S))
        if causal != "none":
            allowed &= causal_allowed(L, S, causal)
        dead = ~allowed.any(-1)  # [nb, h, L]
        if attn_mask == "fully2d":
            # want: the two fully blocked rows, plus at least one row dead only through kpm
            if (dead.sum() > 2 * nb * h) and not dead.all(-1).all():
                break
        elif not dead.any():
            break
    else:
        raise RuntimeError(f"{name}: could not draw masks")

    mask_for_torch = am
    if causal != "none":
        assert am is None
        mask_for_torch = causal_float_mask(L, S, causal)

    kwargs = dict(
        key_padding_mask=kp,
        attn_mask=mask_for_torch,
        need_weights=need_weights,
        average_attn_weights=average,
    )
    # grad enabled (parameters require grad): the documented, non-fast path
    out, w = m(q, k, v, **kwargs)
    out = out.detach()
    w = w.detach() if w is not None else None
    # no_grad: may take the native fast path; compare
    with torch.no_grad():
        out_ng, w_ng = m(q, k, v, **kwargs)
    # float64 reference
    m64 = copy.deepcopy(m).double()
    d = lambda t: None if t is None else (t.double() if t.is_floating_point() else t)
    q64 = d(q)
    k64, v64 = (q64, q64) if self_attn else (d(k), d(v))
    kw64 = dict(kwargs, key_padding_mask=d(kp), attn_mask=d(mask_for_torch))
    out64, w64 = m64(q64, k64, v64, **kw64)
    out64 = out64.detach()
    w64 = w64.detach() if w64 is not None else None

    note = None
    if dead.any():
        # which output rows: [nb, L] rows where any head is dead (for averaged output)
        row_dead = dead.any(1)  # [nb, L]
        has_nan = torch.isnan(out).any().item() or (w is not None and torch.isnan(w).any().item())
        if not has_nan:
            note = (
                "fully-masked rows: PyTorch gives attention probabilities 0, so the attention "
                "context is 0 and attn_output rows equal out_proj.bias (0 without bias); no NaN"
            )
        else:
            # PyTorch MHA with need_weights=True softmaxes explicitly and gives NaN. Apply the
            # library convention: probabilities 0 -> context 0 -> attn_output row = out_proj.bias
            # (exactly what PyTorch itself returns for these rows with need_weights=False).
            with torch.no_grad():
                out_nw, _ = m(q, k, v, **dict(kwargs, need_weights=False))
            fb = m.out_proj.bias.detach() if bias else torch.zeros(E)

            def fix_out(o):
                o = o.clone()
                if B is None:
                    o[row_dead[0]] = fb.to(o.dtype)
                elif batch_first:
                    o[row_dead] = fb.to(o.dtype)
                else:
                    o.transpose(0, 1)[row_dead] = fb.to(o.dtype)
                return o

            def fix_w(ww):
                ww = torch.nan_to_num(ww, nan=0.0)
                return ww

            assert torch.isnan(out).any()
            out = fix_out(out)
            out64 = fix_out(out64)
            assert not torch.isnan(out).any()
            assert torch.allclose(out, out_nw, rtol=1e-5, atol=1e-6), "fix disagrees with need_weights=False"
            w = fix_w(w)
            w64 = fix_w(w64)
            out_ng, w_ng = fix_out(out_ng), fix_w(w_ng)
            note = (
                "fully-masked rows: PyTorch MHA gives NaN with need_weights=True; expected set to the "
                "library convention (weights rows 0, attention context 0, so attn_output rows = "
                "out_proj.bias, which is what PyTorch returns with need_weights=False)"
            )
            NOTES.append((name, "PyTorch MHA need_weights=True gives NaN for fully-masked rows (weights and output)"))
        # every dead row of attn_output must now be out_proj.bias (0 without bias)
        fb = m.out_proj.bias.detach() if bias else torch.zeros(E)
        o_bl = out.unsqueeze(0) if B is None else (out if batch_first else out.transpose(0, 1))
        assert torch.allclose(o_bl[row_dead], fb.expand_as(o_bl[row_dead]), atol=1e-6)
        if need_weights:
            ww = w.unsqueeze(0) if B is None else w
            ww = ww if not average else ww.unsqueeze(1)
            assert (ww.transpose(1, 2)[row_dead] == 0).all()

    ng_diff = (out_ng - out).abs().max().item()
    if w is not None and w_ng is not None:
        ng_diff = max(ng_diff, (w_ng - w).abs().max().item())

    tensors = {k_: v_.detach() for k_, v_ in m.state_dict().items()}
    tensors["query"] = q
    tensors["key"] = k.clone()
    tensors["value"] = v.clone()
    if am is not None:
        tensors["attn_mask"] = am
    if kp is not None:
        tensors["key_padding_mask"] = kp
    expected = {"attn_output": out}
    ref64 = {"attn_output": out64}
    if need_weights:
        expected["attn_output_weights"] = w
        ref64["attn_output_weights"] = w64
    meta = {
        "kind": "mha",
        "embed_dim": str(E),
        "num_heads": str(h),
        "kdim": str(kdim),
        "vdim": str(vdim),
        "bias": str(bias).lower(),
        "batch_first": str(batch_first).lower(),
        "need_weights": str(need_weights).lower(),
        "average_attn_weights": str(average).lower(),
        "causal": causal,
        "self_attention": str(self_attn).lower(),
    }
    if note:
        meta["note"] = note
    if ng_diff > 1e-5 * max(1.0, out.abs().max().item()):
        NOTES.append((name, f"no_grad (fast path) result differs from grad path by {ng_diff:.3g}"))
    return write_case(name, tensors, meta, expected, ref64, extra=f" no_grad-diff={ng_diff:.2g}")


# --------------------------------------------------------------------------------------------
# SDPA


def sdpa_case(
    name,
    *,
    B=2,  # None = 3-D inputs [H, L, d]
    Hq=3,
    Hkv=None,
    L=9,
    S=9,
    d=16,
    dv=None,
    mask=None,  # None | "bool_LS" | "bool_BHLS" | "float_B1LS" | "float_111S" | "fully_LS"
    causal="none",
    scale=None,
    enable_gqa=False,
):
    seed = seed_of(name)
    gen = torch.Generator().manual_seed(seed)
    Hkv = Hkv or Hq
    dv = dv or d
    lead_q = (Hq,) if B is None else (B, Hq)
    lead_kv = (Hkv,) if B is None else (B, Hkv)
    q = torch.randn(*lead_q, L, d, generator=gen)
    k = torch.randn(*lead_kv, S, d, generator=gen)
    v = torch.randn(*lead_kv, S, dv, generator=gen)
    nb = 1 if B is None else B
    for attempt in range(100):
        am = None
        allowed = torch.ones(nb, Hq, L, S, dtype=torch.bool)
        if mask == "bool_LS":
            am = ~rand_bool_blocked(gen, (L, S), 0.3)  # SDPA: True = allowed
            allowed &= am
        elif mask == "bool_BHLS":
            am = ~rand_bool_blocked(gen, (*lead_q, L, S), 0.3)
            allowed &= am.reshape(nb, Hq, L, S)
        elif mask == "float_B1LS":
            shp = (1, L, S) if B is None else (B, 1, L, S)
            am = rand_float_mask(gen, shp, p_inf=0.2)
            allowed &= ~torch.isneginf(am).reshape(nb, 1, L, S)
        elif mask == "float_111S":
            shp = (1, 1, S) if B is None else (1, 1, 1, S)
            am = rand_float_mask(gen, shp, p_inf=0.2, scale=2.0)
            allowed &= ~torch.isneginf(am).reshape(1, 1, 1, S)
        elif mask == "fully_LS":
            am = ~rand_bool_blocked(gen, (L, S), 0.3)
            am[2] = False
            am[L - 1] = False
            allowed &= am
        elif mask is not None:
            raise ValueError(mask)
        if causal != "none":
            assert am is None
            allowed &= causal_allowed(L, S, causal)
        dead = ~allowed.any(-1)
        if mask == "fully_LS" or not dead.any():
            break
    else:
        raise RuntimeError(name)

    kw = dict(scale=scale, enable_gqa=enable_gqa)

    def run(qq, kk, vv, backend=SDPBackend.MATH, dtype=torch.float32):
        cast = lambda t: t.to(dtype) if t is not None and t.is_floating_point() else t
        qq, kk, vv = cast(qq), cast(kk), cast(vv)
        with sdpa_kernel(backend):
            if causal == "top-left":
                return F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, **kw)
            if causal == "bottom-right":
                return F.scaled_dot_product_attention(qq, kk, vv, attn_mask=causal_lower_right(L, S), **kw)
            return F.scaled_dot_product_attention(qq, kk, vv, attn_mask=cast(am), **kw)

    out = run(q, k, v)
    out64 = run(q, k, v, dtype=torch.float64)
    # cross-checks: default CPU backend; causal via an explicit mask
    out_default = run(q, k, v, backend=[SDPBackend.FLASH_ATTENTION, SDPBackend.MATH])
    extra = f" flash-cpu-diff={(out_default - out).abs().max().item():.2g}"
    if causal != "none":
        with sdpa_kernel(SDPBackend.MATH):
            out_explicit = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_allowed(L, S, causal), **kw)
        cd = (out_explicit - out).abs().max().item()
        extra += f" explicit-causal-diff={cd:.2g}"
        assert cd < 1e-5, (name, cd)
    note = None
    if dead.any():
        rows = out.reshape(nb, Hq, L, dv)[dead]
        if torch.isnan(out).any():
            out = torch.nan_to_num(out, nan=0.0)
            out64 = torch.nan_to_num(out64, nan=0.0)
            note = "fully-masked rows set to 0 (library convention; PyTorch SDPA gives NaN)"
            NOTES.append((name, "PyTorch math SDPA gave NaN for fully-masked rows"))
        else:
            assert (rows == 0).all(), "fully-masked rows are neither NaN nor 0"
            note = "fully-masked rows: PyTorch math SDPA gives 0 (matches the library convention)"

    tensors = {"query": q, "key": k, "value": v}
    if am is not None:
        tensors["attn_mask"] = am
    meta = {
        "kind": "sdpa",
        "causal": causal,
        "scale": "default" if scale is None else repr(scale),
        "enable_gqa": str(enable_gqa).lower(),
    }
    if note:
        meta["note"] = note
    return write_case(name, tensors, meta, {"attn_output": out}, {"attn_output": out64}, extra=extra)


# --------------------------------------------------------------------------------------------


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*.safetensors"):
        p.unlink()
    total = 0
    print(f"torch {torch.__version__}")

    # ---- MHA ----
    total += mha_case("mha_self_seqfirst_default", E=32, h=4, L=10, S=10, self_attn=True,
                      need_weights=True)  # PyTorch's defaults: need_weights=True, averaged
    total += mha_case("mha_self_batch_first", E=32, h=4, L=10, S=10, batch_first=True, self_attn=True)
    total += mha_case("mha_unbatched_2d", E=32, h=4, L=9, S=9, B=None, need_weights=True)
    total += mha_case("mha_unbatched_2d_masks", E=24, h=3, L=7, S=10, B=None, attn_mask="bool3d",
                      kpm="bool", need_weights=True, average=False)
    total += mha_case("mha_cross_L7_S11", E=32, h=4, L=7, S=11, B=3, need_weights=True)
    total += mha_case("mha_kdim16_vdim20_E24", E=24, h=4, L=6, S=9, kdim=16, vdim=20, need_weights=True)
    total += mha_case("mha_kdim16_vdim20_batch_first_unbatched", E=24, h=2, L=5, S=8, B=None, kdim=16,
                      vdim=20, batch_first=True)
    total += mha_case("mha_no_bias", E=32, h=4, L=10, S=10, bias=False, self_attn=True, need_weights=True)
    total += mha_case("mha_no_bias_kdim_vdim", E=24, h=4, L=6, S=7, kdim=12, vdim=28, bias=False)
    total += mha_case("mha_attn_mask_bool_2d", E=32, h=4, L=8, S=12, attn_mask="bool2d", need_weights=True)
    total += mha_case("mha_attn_mask_float_3d", E=32, h=4, L=8, S=12, attn_mask="float3d", need_weights=True)
    total += mha_case("mha_attn_mask_bool_3d", E=16, h=2, L=6, S=6, attn_mask="bool3d", self_attn=True)
    total += mha_case("mha_attn_mask_float_2d", E=16, h=2, L=6, S=9, attn_mask="float2d", batch_first=True)
    total += mha_case("mha_kpm_bool", E=32, h=4, L=8, S=12, B=3, kpm="bool", need_weights=True,
                      batch_first=True)
    total += mha_case("mha_kpm_float", E=32, h=4, L=8, S=12, B=3, kpm="float", need_weights=True)
    total += mha_case("mha_masks_combined_bool", E=32, h=4, L=9, S=13, attn_mask="bool2d", kpm="bool",
                      need_weights=True)
    total += mha_case("mha_masks_combined_float", E=32, h=4, L=9, S=13, attn_mask="float3d",
                      kpm="float", need_weights=True, average=False)
    total += mha_case("mha_causal_top_left", E=32, h=4, L=12, S=12, self_attn=True, causal="top-left",
                      need_weights=True)
    total += mha_case("mha_causal_top_left_cross_L6_S10", E=32, h=4, L=6, S=10, causal="top-left",
                      need_weights=True)
    total += mha_case("mha_causal_bottom_right_L5_S12", E=32, h=4, L=5, S=12, causal="bottom-right",
                      need_weights=True)
    total += mha_case("mha_need_weights_averaged", E=32, h=4, L=6, S=10, kpm="bool", need_weights=True,
                      average=True)
    total += mha_case("mha_need_weights_per_head", E=32, h=4, L=6, S=10, attn_mask="float2d",
                      need_weights=True, average=False)
    total += mha_case("mha_odd_L37_E60_h5", E=60, h=5, L=37, S=37, need_weights=True)
    total += mha_case("mha_head13_E39_h3", E=39, h=3, L=13, S=17, need_weights=True, average=False)
    total += mha_case("mha_one_head", E=16, h=1, L=8, S=11, need_weights=True)
    total += mha_case("mha_16_heads_E64", E=64, h=16, L=12, S=12, self_attn=True, need_weights=True,
                      average=False)
    total += mha_case("mha_inputs_scaled_1e3", E=32, h=4, L=8, S=8, input_scale=1000.0, need_weights=True)
    total += mha_case("mha_fully_masked_rows", E=32, h=4, L=8, S=10, attn_mask="fully2d", kpm="bool",
                      need_weights=False)
    total += mha_case("mha_fully_masked_rows_need_weights", E=32, h=4, L=8, S=10, attn_mask="fully2d",
                      kpm="bool", need_weights=True, average=False)

    # ---- SDPA ----
    total += sdpa_case("sdpa_plain")
    total += sdpa_case("sdpa_cross_L7_S13", L=7, S=13)
    total += sdpa_case("sdpa_custom_scale", scale=0.3)
    total += sdpa_case("sdpa_bool_mask_LS", L=8, S=11, mask="bool_LS")
    total += sdpa_case("sdpa_bool_mask_BHLS", L=8, S=11, mask="bool_BHLS")
    total += sdpa_case("sdpa_float_mask_B1LS", L=8, S=11, mask="float_B1LS")
    total += sdpa_case("sdpa_float_mask_111S", L=8, S=11, mask="float_111S")
    total += sdpa_case("sdpa_causal_top_left", L=10, S=10, causal="top-left")
    total += sdpa_case("sdpa_causal_top_left_cross_L6_S10", L=6, S=10, causal="top-left")
    total += sdpa_case("sdpa_causal_bottom_right_L5_S12", L=5, S=12, causal="bottom-right")
    total += sdpa_case("sdpa_gqa_hq8_hkv2", Hq=8, Hkv=2, L=7, S=9, enable_gqa=True)
    total += sdpa_case("sdpa_gqa_causal_bottom_right", Hq=6, Hkv=2, L=4, S=9, causal="bottom-right",
                       enable_gqa=True)
    total += sdpa_case("sdpa_mqa_hkv1", Hq=4, Hkv=1, L=7, S=9, enable_gqa=True)
    total += sdpa_case("sdpa_dv_ne_d", d=16, dv=24, L=7, S=9)
    total += sdpa_case("sdpa_3d_input", B=None, Hq=4, L=8, S=10, d=8)
    total += sdpa_case("sdpa_3d_input_float_mask", B=None, Hq=4, L=8, S=10, d=8, mask="float_B1LS")
    total += sdpa_case("sdpa_odd_sizes_d13", B=1, Hq=3, L=37, S=29, d=13, dv=7, scale=0.2)
    total += sdpa_case("sdpa_fully_masked_rows", L=8, S=10, mask="fully_LS")

    n = len(list(OUT.glob("*.safetensors")))
    print(f"{n} cases, {total} bytes total")
    assert total < 1_500_000
    if NOTES:
        print("observations:")
        for name, obs in NOTES:
            print(f"  {name}: {obs}")


if __name__ == "__main__":
    sys.exit(main())
