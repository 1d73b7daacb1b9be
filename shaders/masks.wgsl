// Shared by qk.wgsl and fused.wgsl: one score after the masks and the causal limit. Each of
// them binds `mask0` and `mask1` and has in its parameter block `p` the fields `flags`
// (bit 0: mask0, bit 1: mask1, bit 2: causal), `causal_offset` (key s is visible from row l
// iff s <= l + causal_offset) and each mask's strides on the [B, H, L, S] grid (0 =
// broadcast). heads.wgsl and float.wgsl (prepended) supply `Head` and the float helpers.

// Score `x` of query row `l` and key `s` of head `hd`, masked: a blocked position (causal,
// or a mask entry of -inf) is -inf outright, so a non-finite key never reaches a row that
// may not attend to it; other mask entries are added.
fn masked_score(x: f32, hd: Head, l: u32, s: u32) -> f32 {
    var v = x;
    var blocked = (p.flags & 4u) != 0u && i32(s) > i32(l) + p.causal_offset;
    if (p.flags & 1u) != 0u {
        let m = mask0[hd.batch * p.mask0_stride_b + hd.head_q * p.mask0_stride_h
            + l * p.mask0_stride_l + s * p.mask0_stride_s];
        blocked = blocked || is_neg_inf(m);
        v += m;
    }
    if (p.flags & 2u) != 0u {
        let m = mask1[hd.batch * p.mask1_stride_b + hd.head_q * p.mask1_stride_h
            + l * p.mask1_stride_l + s * p.mask1_stride_s];
        blocked = blocked || is_neg_inf(m);
        v += m;
    }
    if blocked {
        return neg_inf();
    }
    return v;
}
