#!/usr/bin/env python3
"""Time PyTorch's attention on the shapes of `wgpu-mha bench`'s presets.

The ratio that matters for wgpu-mha is its own time over PyTorch's on the same machine, in
the same session: run this script right after `wgpu-mha bench` (same presets, same FLOP
count, so the GFLOP/s columns compare directly).

    python3 benches/pytorch_reference.py                 # CUDA if present, else the CPU
    python3 benches/pytorch_reference.py --device cpu --threads 2 --json torch.json

Rows: `F.scaled_dot_product_attention` (sdpa) and `nn.MultiheadAttention` (mha), each in
float32 with TF32 off (the arithmetic wgpu-mha does) and in float16 (what `--dtype f16`
stores; PyTorch also computes in f16 there, so it is an upper bound on what f16 storage buys).
Times are the median of timed runs after a warm-up, with CUDA events on a GPU.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

# name, batch, seq, kv_seq, d_model, heads, causal, has_mha — as `Shape::preset` in
# src/cli/bench.rs.
PRESETS = [
    ("bert-base", 1, 512, 512, 768, 12, False, True),
    ("long", 1, 2048, 2048, 512, 8, False, True),
    ("batched", 8, 128, 128, 512, 8, False, True),
    ("long-causal", 1, 2048, 2048, 512, 8, True, True),
    ("decode", 1, 1, 4096, 4096, 32, False, False),
]


def pairs(seq, kv_seq, causal):
    if not causal:
        return seq * kv_seq
    return sum(min(l + 1, kv_seq) for l in range(seq))


def flops(batch, seq, kv_seq, d_model, heads, causal, with_projections):
    """The count `wgpu-mha bench` uses: 4·B·H·pairs·d, plus 2·B·L·E² per projection."""
    core = 4.0 * batch * heads * pairs(seq, kv_seq, causal) * (d_model // heads)
    if not with_projections:
        return core
    return core + 2.0 * batch * d_model * d_model * (2 * seq + 2 * kv_seq)


def time_ms(fn, device, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    ap.add_argument("--dtype", action="append", choices=["f32", "f16"], help="default: both")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--json", help="write the rows as JSON")
    args = ap.parse_args()

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    # wgpu-mha computes in plain f32: keep PyTorch's f32 rows off the TF32 units.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtypes = {"f32": torch.float32, "f16": torch.float16}
    wanted = args.dtype or ["f32", "f16"]
    if device.type == "cpu" and "f16" in wanted and not args.dtype:
        wanted = ["f32"]  # f16 attention on the CPU is not what anyone runs

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"PyTorch {torch.__version__} on {name}, {torch.get_num_threads()} CPU threads")
    rows = []
    gen = torch.Generator(device="cpu").manual_seed(7)
    with torch.inference_mode():
        for preset, b, l, s, e, h, causal, has_mha in PRESETS:
            d = e // h
            for dt in wanted:
                dtype = dtypes[dt]

                def rand(*shape):
                    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)

                q, k, v = rand(b, h, l, d), rand(b, h, s, d), rand(b, h, s, d)
                sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
                runs = [("sdpa", sdpa, False)]
                if has_mha:
                    mha = torch.nn.MultiheadAttention(e, h, batch_first=True)
                    mha = mha.to(device=device, dtype=dtype).eval()
                    x = rand(b, l, e)
                    mask = (
                        torch.nn.Transformer.generate_square_subsequent_mask(l, device=device, dtype=dtype)
                        if causal
                        else None
                    )
                    fwd = lambda: mha(x, x, x, need_weights=False, attn_mask=mask, is_causal=causal)  # noqa: E731
                    runs.append(("mha", fwd, True))
                for path, fn, proj in runs:
                    ms = time_ms(fn, device, args.warmup, args.reps)
                    gf = flops(b, l, s, e, h, causal, proj) / (ms * 1e6)
                    rows.append(
                        dict(preset=preset, path=path, dtype=dt, device=name, median_ms=ms, gflops=gf)
                    )
                    print(f"{preset:<12} {path:<5} {dt:<4} {ms:10.4f} ms {gf:10.1f} GFLOP/s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
