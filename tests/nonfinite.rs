mod common;

// NaN and ±inf in one row of the query, key, value or mask stay where the README's rules
// put them: a NaN query row poisons only its own output row; a NaN key poisons every row
// that may attend to it, and none that may not (causal, a blocked bool, a -inf float entry:
// blocked outright, not added); a NaN value poisons its column in the rows that may attend
// to it; a NaN or +inf score poisons its row; a row whose mask is all -inf gives zeros.
// Every other row matches the reference and is bit-identical to the same call without the
// bad value. Nothing hangs or panics. Each SDPA check runs on both attention paths.

use std::sync::mpsc;
use std::time::Duration;

use common::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use wgpu_mha::*;

/// Runs `f` on its own thread and fails if it takes longer than `secs` (a hung GPU call).
fn deadline<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(f()).ok();
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the call did not return in {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the call panicked"),
    }
}

/// Element-wise against the reference: NaN exactly where it has NaN, infinities equal,
/// finite values within the tolerance of its finite part.
#[track_caller]
fn check(what: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let (rtol, atol) = tolerance(want);
    for (i, (&g, &w)) in got.data.iter().zip(&want.data).enumerate() {
        assert!(
            matches_nonfinite(g, w, rtol, atol),
            "{what}: element {i} of {:?}: got {g}, want {w}",
            want.shape
        );
    }
}

/// Row `r` (the last dimension being a row) of `t`.
fn row(t: &Tensor, r: usize) -> &[f32] {
    let w = *t.shape.last().unwrap();
    &t.data[r * w..(r + 1) * w]
}

fn rows(t: &Tensor) -> usize {
    t.numel() / t.shape.last().unwrap()
}

/// Asserts that the rows `affected` says are all NaN, and that every other row holds no NaN
/// and is bit-identical to `clean` (the same call without the bad value).
#[track_caller]
fn nan_rows(what: &str, got: &Tensor, clean: &Tensor, affected: impl Fn(usize) -> bool) {
    confined(what, got, clean, affected, true)
}

/// As [`nan_rows`]; with `require_nan` false the affected rows are only checked against the
/// reference (by the caller), not required to be NaN.
#[track_caller]
fn confined(
    what: &str,
    got: &Tensor,
    clean: &Tensor,
    affected: impl Fn(usize) -> bool,
    require_nan: bool,
) {
    for r in 0..rows(got) {
        let g = row(got, r);
        if affected(r) {
            assert!(
                !require_nan || g.iter().all(|x| x.is_nan()),
                "{what}: row {r} should be NaN: {g:?}"
            );
        } else {
            assert!(
                g.iter().all(|x| !x.is_nan()),
                "{what}: row {r} should be untouched: {g:?}"
            );
            let c = row(clean, r);
            assert!(
                g.iter().zip(c).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{what}: row {r} differs from the same call without the bad value: {g:?} vs {c:?}"
            );
        }
    }
}

/// Both algorithms of the attention core; each test runs on each.
const PATHS: [AttentionPath; 2] = [AttentionPath::ThreePass, AttentionPath::Fused];

// SDPA problem: [B, H, L, d] with GQA (H = 4 query heads over 2 key/value heads).
const B: usize = 2;
const HQ: usize = 4;
const HKV: usize = 2;
const L: usize = 5;
// A multiple of 4, as are D and the strides: the register-blocked QKᵀ and P·V and the vec4
// softmax kernels can run (`sdpa_both` runs the staged ones too).
const S: usize = 8;
const D: usize = 8;

struct Sdpa {
    q: Tensor,
    k: Tensor,
    v: Tensor,
}

fn sdpa_inputs(seed: u64) -> Sdpa {
    let mut rng = StdRng::seed_from_u64(seed);
    Sdpa {
        q: random(&mut rng, &[B, HQ, L, D], 1.0),
        k: random(&mut rng, &[B, HKV, S, D], 1.0),
        v: random(&mut rng, &[B, HKV, S, D], 1.0),
    }
}

/// GPU (on `path`) and reference, with a deadline.
fn sdpa_both(
    x: &Sdpa,
    mask: Option<&Mask>,
    causal: Option<Causal>,
    path: AttentionPath,
) -> (Tensor, Tensor) {
    let (q, k, v) = (x.q.clone(), x.k.clone(), x.v.clone());
    let mask = mask.cloned();
    let run = move || {
        let opts = SdpaOptions {
            attn_mask: mask.as_ref(),
            causal,
            enable_gqa: true,
            path,
            ..Default::default()
        };
        let got = scaled_dot_product_attention(&gpu(), &q, &k, &v, &opts).unwrap();
        // The same path on the staged kernels (matrix products and fused attention through
        // workgroup memory, a workgroup per softmax row): NaN and infinities alike.
        let staged = scaled_dot_product_attention(&staged_gpu(), &q, &k, &v, &opts).unwrap();
        check("staged kernels against the adapter's", &staged, &got);
        let want = reference::sdpa(&q, &k, &v, &opts).unwrap();
        (got, want)
    };
    deadline(60, run)
}

/// Flat index of element `(b, h, r, j)` of a `[B, H, R, W]` tensor.
fn at(shape: &[usize], b: usize, h: usize, r: usize, j: usize) -> usize {
    ((b * shape[1] + h) * shape[2] + r) * shape[3] + j
}

/// Output row index of (b, h, l).
fn out_row(b: usize, h: usize, l: usize) -> usize {
    (b * HQ + h) * L + l
}

#[test]
fn sdpa_nan_or_inf_query_row_poisons_only_that_row() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_nan_or_inf_query_row_poisons_only_that_row_on(path);
    }
}

fn sdpa_nan_or_inf_query_row_poisons_only_that_row_on(path: AttentionPath) {
    let clean_in = sdpa_inputs(1);
    for causal in [None, Some(Causal::TopLeft), Some(Causal::BottomRight)] {
        let (clean, _) = sdpa_both(&clean_in, None, causal, path);
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let (b, h, l) = (1, 2, 3);
            let mut x = sdpa_inputs(1);
            let i = at(&x.q.shape, b, h, l, 4);
            x.q.data[i] = bad;
            let (got, want) = sdpa_both(&x, None, causal, path);
            let what = format!("query {bad} causal {causal:?}");
            check(&what, &got, &want);
            // NaN: the row is NaN. ±inf in one element: the row's scores are ±inf, and a row
            // holding +inf is NaN (inf − inf) while one of only -inf is fully blocked (zeros);
            // the reference decides which. Every other row is untouched.
            confined(&what, &got, &clean, |r| r == out_row(b, h, l), bad.is_nan());
        }
    }
}

#[test]
fn sdpa_nan_key_poisons_every_row_that_sees_it() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_nan_key_poisons_every_row_that_sees_it_on(path);
    }
}

fn sdpa_nan_key_poisons_every_row_that_sees_it_on(path: AttentionPath) {
    let clean_in = sdpa_inputs(2);
    for causal in [None, Some(Causal::TopLeft), Some(Causal::BottomRight)] {
        let (clean, _) = sdpa_both(&clean_in, None, causal, path);
        let (b, hkv, s) = (0, 1, 3);
        let mut x = sdpa_inputs(2);
        let i = at(&x.k.shape, b, hkv, s, 0);
        x.k.data[i] = f32::NAN;
        let (got, want) = sdpa_both(&x, None, causal, path);
        let what = format!("NaN key, causal {causal:?}");
        check(&what, &got, &want);
        let offset = causal.map_or(i64::MAX / 2, |c| c.offset(L, S));
        // Query heads 2 and 3 use key/value head 1; rows that see key 3 are poisoned.
        nan_rows(&what, &got, &clean, |r| {
            let (rb, rh, rl) = (r / (HQ * L), (r / L) % HQ, r % L);
            rb == b && rh / (HQ / HKV) == hkv && (s as i64) <= rl as i64 + offset
        });
    }
}

#[test]
fn sdpa_nan_key_behind_a_mask() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_nan_key_behind_a_mask_on(path);
    }
}

fn sdpa_nan_key_behind_a_mask_on(path: AttentionPath) {
    // A bool mask that blocks key 3 (SDPA: false), or a -inf float entry, excludes it
    // outright: the NaN never reaches a row. A finite mask entry, however negative, does not
    // block: NaN + -1e30 is NaN.
    let mut x = sdpa_inputs(3);
    let i = at(&x.k.shape, 0, 0, 3, 5);
    x.k.data[i] = f32::NAN;
    let bool_mask = Mask::bool([L, S], (0..L * S).map(|i| i % S != 3).collect()).unwrap();
    let float = |v: f32| {
        Mask::float(
            [L, S],
            (0..L * S)
                .map(|i| if i % S == 3 { v } else { 0.0 })
                .collect(),
        )
        .unwrap()
    };
    for (what, mask, poisoned) in [
        ("bool mask", bool_mask, false),
        ("-inf entry", float(f32::NEG_INFINITY), false),
        ("-1e30 entry", float(-1e30), true),
    ] {
        let (clean, _) = sdpa_both(&sdpa_inputs(3), Some(&mask), None, path);
        let (got, want) = sdpa_both(&x, Some(&mask), None, path);
        let what = format!("NaN key behind a {what}");
        check(&what, &got, &want);
        // Heads 0 and 1 of batch 0 use key/value head 0.
        nan_rows(&what, &got, &clean, |r| {
            poisoned && r / (HQ * L) == 0 && (r / L) % HQ < 2
        });
    }
}

#[test]
fn sdpa_nan_value_poisons_its_column() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_nan_value_poisons_its_column_on(path);
    }
}

fn sdpa_nan_value_poisons_its_column_on(path: AttentionPath) {
    let clean_in = sdpa_inputs(4);
    for (causal, s) in [
        (None, 5),
        (Some(Causal::TopLeft), 2),
        (Some(Causal::TopLeft), 5),
        (Some(Causal::BottomRight), 6),
    ] {
        let (clean, _) = sdpa_both(&clean_in, None, causal, path);
        let (b, hkv, j) = (1, 0, 2);
        let mut x = sdpa_inputs(4);
        let i = at(&x.v.shape, b, hkv, s, j);
        x.v.data[i] = f32::NAN;
        let (got, want) = sdpa_both(&x, None, causal, path);
        let what = format!("NaN value at key {s}, causal {causal:?}");
        check(&what, &got, &want);
        // Column j of the rows of heads 0 and 1 of batch 1 that may attend to key s, and
        // nothing else: a key a row may not attend to never touches it.
        let offset = causal.map_or(i64::MAX / 2, |c| c.offset(L, S));
        for r in 0..rows(&got) {
            let (rb, rh, rl) = (r / (HQ * L), (r / L) % HQ, r % L);
            let sees = rb == b && rh / (HQ / HKV) == hkv && (s as i64) <= rl as i64 + offset;
            for (c, (&g, &k)) in row(&got, r).iter().zip(row(&clean, r)).enumerate() {
                if sees && c == j {
                    assert!(g.is_nan(), "{what}: row {r} col {c}: {g}");
                } else {
                    assert_eq!(g.to_bits(), k.to_bits(), "{what}: row {r} col {c}");
                }
            }
        }
    }
}

#[test]
fn sdpa_nan_value_behind_a_finite_mask_is_not_blocked() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_nan_value_behind_a_finite_mask_is_not_blocked_on(path);
    }
}

fn sdpa_nan_value_behind_a_finite_mask_is_not_blocked_on(path: AttentionPath) {
    // Only a blocked position (-inf) is excluded outright. A finite mask of -100 leaves the
    // key attended with probability e^-100 ≈ 4e-44 — below f32's smallest normal, but not
    // blocked: its NaN value still makes the row NaN, as in the reference.
    let mut x = sdpa_inputs(9);
    let i = at(&x.v.shape, 0, 0, 4, 1);
    x.v.data[i] = f32::NAN;
    for value in [-100.0f32, -300.0] {
        let mask = Mask::float(
            [L, S],
            (0..L * S)
                .map(|i| if i % S == 4 { value } else { 0.0 })
                .collect(),
        )
        .unwrap();
        let (got, want) = sdpa_both(&x, Some(&mask), None, path);
        check(&format!("NaN value behind a mask of {value}"), &got, &want);
    }
}

#[test]
fn sdpa_mask_entries_nan_inf_and_blocked_rows() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_mask_entries_nan_inf_and_blocked_rows_on(path);
    }
}

fn sdpa_mask_entries_nan_inf_and_blocked_rows_on(path: AttentionPath) {
    let x = sdpa_inputs(5);
    let zeros = Mask::float([L, S], vec![0.0; L * S]).unwrap();
    let (clean, _) = sdpa_both(&x, Some(&zeros), None, path);
    let set = |f: &dyn Fn(&mut Vec<f32>)| {
        let mut data = vec![0.0f32; L * S];
        f(&mut data);
        Mask::float([L, S], data).unwrap()
    };
    let every_row = |l: usize| move |r: usize| r % L == l;

    // NaN at (l=1, s=4): row 1 of every batch and head.
    let (got, want) = sdpa_both(&x, Some(&set(&|m| m[S + 4] = f32::NAN)), None, path);
    check("NaN mask entry", &got, &want);
    nan_rows("NaN mask entry", &got, &clean, every_row(1));

    // +inf at (l=2, s=0): softmax of a row holding +inf is NaN (inf − inf).
    let (got, want) = sdpa_both(&x, Some(&set(&|m| m[2 * S] = f32::INFINITY)), None, path);
    check("+inf mask entry", &got, &want);
    nan_rows("+inf mask entry", &got, &clean, every_row(2));

    // -inf at one entry: a finite row, as if that key were absent.
    let (got, want) = sdpa_both(
        &x,
        Some(&set(&|m| m[3 * S + 6] = f32::NEG_INFINITY)),
        None,
        path,
    );
    check("-inf mask entry", &got, &want);
    nan_rows("-inf mask entry", &got, &got.clone(), |_| false);

    // A whole row of -inf: zeros, never NaN.
    let (got, want) = sdpa_both(
        &x,
        Some(&set(&|m| m[4 * S..5 * S].fill(f32::NEG_INFINITY))),
        None,
        path,
    );
    check("row of -inf", &got, &want);
    for r in (0..rows(&got)).filter(|r| r % L == 4) {
        assert!(row(&got, r).iter().all(|&v| v == 0.0), "row {r}");
    }

    // A row of -inf but one +inf: NaN (the only visible score is +inf; inf − inf).
    let (got, want) = sdpa_both(
        &x,
        Some(&set(&|m| {
            m[..S].fill(f32::NEG_INFINITY);
            m[3] = f32::INFINITY;
        })),
        None,
        path,
    );
    check("row of -inf and one +inf", &got, &want);
    nan_rows("row of -inf and one +inf", &got, &clean, every_row(0));

    // A row of -inf but one NaN: NaN, not the zeros of a fully blocked row.
    let (got, want) = sdpa_both(
        &x,
        Some(&set(&|m| {
            m[3 * S..4 * S].fill(f32::NEG_INFINITY);
            m[3 * S + 2] = f32::NAN;
        })),
        None,
        path,
    );
    check("row of -inf and one NaN", &got, &want);
    nan_rows("row of -inf and one NaN", &got, &clean, every_row(3));
}

#[test]
fn sdpa_nan_query_row_under_causal_sees_one_key() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_nan_query_row_under_causal_sees_one_key_on(path);
    }
}

fn sdpa_nan_query_row_under_causal_sees_one_key_on(path: AttentionPath) {
    // Top-left causal: row 0 sees only key 0, all its other scores are -inf. A NaN in query
    // row 0 makes its single visible score NaN: the row is NaN, not the zeros of a row that
    // sees nothing.
    let clean_in = sdpa_inputs(6);
    let (clean, _) = sdpa_both(&clean_in, None, Some(Causal::TopLeft), path);
    let mut x = sdpa_inputs(6);
    let i = at(&x.q.shape, 0, 0, 0, 0);
    x.q.data[i] = f32::NAN;
    let (got, want) = sdpa_both(&x, None, Some(Causal::TopLeft), path);
    check("NaN query row 0, causal", &got, &want);
    nan_rows("NaN query row 0, causal", &got, &clean, |r| r == 0);
}

#[test]
fn sdpa_extreme_finite_values_neither_hang_nor_panic() {
    for path in PATHS {
        eprintln!("path {path:?}");
        sdpa_extreme_finite_values_neither_hang_nor_panic_on(path);
    }
}

fn sdpa_extreme_finite_values_neither_hang_nor_panic_on(path: AttentionPath) {
    // f32::MAX overflows the f32 scores to ±inf (the f64 reference does not overflow, so no
    // comparison here): the call must still return, with the right shape.
    for value in [f32::MAX, -f32::MAX, f32::MIN_POSITIVE / 8.0, 1e-30] {
        let mut x = sdpa_inputs(7);
        x.q.data.iter_mut().for_each(|v| *v *= value);
        x.k.data.iter_mut().for_each(|v| *v *= value);
        let (q, k, v) = (x.q.clone(), x.k.clone(), x.v.clone());
        let got = deadline(60, move || {
            scaled_dot_product_attention(
                &gpu(),
                &q,
                &k,
                &v,
                &SdpaOptions {
                    enable_gqa: true,
                    path,
                    ..Default::default()
                },
            )
        })
        .unwrap();
        assert_eq!(got.shape, [B, HQ, L, D]);
        if value.abs() < 1.0 {
            // Tiny scores: (almost) uniform attention, which the reference agrees with.
            let want = reference::sdpa(
                &x.q,
                &x.k,
                &x.v,
                &SdpaOptions {
                    enable_gqa: true,
                    ..Default::default()
                },
            )
            .unwrap();
            check("tiny values", &got, &want);
        }
    }
    // Every input NaN: every output NaN, no hang.
    let mut x = sdpa_inputs(8);
    x.q.data.fill(f32::NAN);
    x.k.data.fill(f32::NAN);
    x.v.data.fill(f32::NAN);
    let (got, want) = sdpa_both(&x, None, Some(Causal::BottomRight), path);
    check("all NaN", &got, &want);
    assert!(got.data.iter().all(|v| v.is_nan()));
}

// ---------------------------------------------------------------------------------------------
// MHA
// ---------------------------------------------------------------------------------------------

const E: usize = 12;
const H: usize = 3;

struct Mha {
    config: MhaConfig,
    weights: MhaWeights,
    mha: MultiHeadAttention,
}

fn mha() -> Mha {
    let config = MhaConfig::new(E, H).with_batch_first(true);
    let weights = MhaWeights::random(&config, &mut StdRng::seed_from_u64(11));
    let mha = MultiHeadAttention::new(&gpu(), config, &weights).unwrap();
    Mha {
        config,
        weights,
        mha,
    }
}

/// GPU and reference of a batch-first forward.
fn mha_both(
    m: &Mha,
    q: &Tensor,
    kv: (&Tensor, &Tensor),
    opts: &MhaOptions,
) -> (MhaOutput, MhaOutput) {
    let got = m.mha.forward(q, kv.0, kv.1, opts).unwrap();
    let want = reference::mha_forward(&m.config, &m.weights, q, kv.0, kv.1, opts).unwrap();
    check("attn_output", &got.attn_output, &want.attn_output);
    if let (Some(g), Some(w)) = (&got.attn_weights, &want.attn_weights) {
        check("attn_weights", g, w);
    }
    (got, want)
}

#[test]
fn mha_nan_in_query_key_value_inputs() {
    let m = mha();
    for path in PATHS {
        eprintln!("path {path:?}");
        mha_nan_in_inputs_on(&m, path);
    }
}

fn mha_nan_in_inputs_on(m: &Mha, path: AttentionPath) {
    let mut rng = StdRng::seed_from_u64(12);
    let (b, lq, s) = (2, 4, 6);
    let q = random(&mut rng, &[b, lq, E], 1.0);
    let k = random(&mut rng, &[b, s, E], 1.0);
    let v = random(&mut rng, &[b, s, E], 1.0);
    let causal = MhaOptions {
        causal: Some(Causal::TopLeft),
        path,
        ..Default::default()
    };
    let plain = MhaOptions {
        path,
        ..Default::default()
    };
    let (clean, _) = mha_both(m, &q, (&k, &v), &causal);
    let clean = clean.attn_output;

    // Query row (batch 1, row 2): only that output row.
    let mut bad = q.clone();
    bad.data[(lq + 2) * E + 5] = f32::NAN;
    let (got, _) = mha_both(m, &bad, (&k, &v), &causal);
    nan_rows("NaN query row", &got.attn_output, &clean, |r| r == lq + 2);

    // Key row (batch 0, key 2): rows of batch 0 that see key 2 under top-left causal (l ≥ 2).
    let mut bad = k.clone();
    bad.data[2 * E] = f32::NAN;
    let (got, _) = mha_both(m, &q, (&bad, &v), &causal);
    nan_rows("NaN key row", &got.attn_output, &clean, |r| {
        r < lq && r >= 2
    });

    // Value row (batch 1, key 1): the rows of batch 1 that see key 1 (l ≥ 1) — the
    // out-projection mixes the NaN column into the whole row.
    let mut bad = v.clone();
    bad.data[(s + 1) * E + 7] = f32::NAN;
    let (got, _) = mha_both(m, &q, (&k, &bad), &causal);
    nan_rows("NaN value row", &got.attn_output, &clean, |r| r > lq);

    // Value row (batch 1, key 5), +inf: no row sees key 5 under top-left causal (L = 4), so
    // nothing changes.
    let mut bad = v.clone();
    bad.data[(s + 5) * E + 7] = f32::INFINITY;
    let (got, _) = mha_both(m, &q, (&k, &bad), &causal);
    nan_rows(
        "inf value row nobody sees",
        &got.attn_output,
        &clean,
        |_| false,
    );

    // Self-attention (one packed projection): a NaN in row 1 of batch 0 is a NaN query, key
    // and value at once: every row of batch 0.
    let mut x = random(&mut rng, &[b, lq, E], 1.0);
    let (clean_self, _) = mha_both(m, &x, (&x, &x), &plain);
    x.data[E + 3] = f32::NAN;
    let (got, _) = mha_both(m, &x, (&x, &x), &plain);
    nan_rows(
        "NaN self-attention row",
        &got.attn_output,
        &clean_self.attn_output,
        |r| r < lq,
    );
}

#[test]
fn mha_masks_with_nan_inf_and_blocked_rows_and_weights() {
    let m = mha();
    let mut rng = StdRng::seed_from_u64(13);
    let (b, lq, s) = (2, 5, 4);
    let q = random(&mut rng, &[b, lq, E], 1.0);
    let k = random(&mut rng, &[b, s, E], 1.0);
    let v = random(&mut rng, &[b, s, E], 1.0);
    let zero = Mask::float([lq, s], vec![0.0; lq * s]).unwrap();
    let clean = m
        .mha
        .forward(
            &q,
            &k,
            &v,
            &MhaOptions {
                attn_mask: Some(&zero),
                need_weights: true,
                ..Default::default()
            },
        )
        .unwrap();
    for average in [true, false] {
        let mut data = vec![0.0f32; lq * s];
        data[s + 2] = f32::NAN; // row 1: NaN
        data[2 * s + 1] = f32::INFINITY; // row 2: +inf
        data[3 * s..4 * s].fill(f32::NEG_INFINITY); // row 3: fully blocked
        data[4 * s] = f32::NEG_INFINITY; // row 4: one key blocked
        let mask = Mask::float([lq, s], data).unwrap();
        let opts = MhaOptions {
            attn_mask: Some(&mask),
            need_weights: true,
            average_attn_weights: average,
            ..Default::default()
        };
        let (got, want) = mha_both(&m, &q, (&k, &v), &opts);
        let out = &got.attn_output;
        nan_rows("mask rows", out, out, |r| r % lq == 1 || r % lq == 2);
        // The output alone, on both paths: the same rows.
        for path in PATHS {
            let opts = |mask| MhaOptions {
                attn_mask: Some(mask),
                path,
                ..Default::default()
            };
            let (clean, _) = mha_both(&m, &q, (&k, &v), &opts(&zero));
            let (alone, _) = mha_both(&m, &q, (&k, &v), &opts(&mask));
            let (clean, alone) = (&clean.attn_output, &alone.attn_output);
            let bias = m.weights.out_proj_bias.as_ref().unwrap();
            for r in 0..rows(alone) {
                let what = format!("{path:?}, row {r}: {:?}", row(alone, r));
                match r % lq {
                    0 => assert!(
                        row(alone, r)
                            .iter()
                            .zip(row(clean, r))
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{what}"
                    ),
                    1 | 2 => assert!(row(alone, r).iter().all(|x| x.is_nan()), "{what}"),
                    3 => assert_eq!(row(alone, r), &bias[..], "{what}"),
                    _ => assert!(row(alone, r).iter().all(|x| x.is_finite()), "{what}"),
                }
            }
        }
        // The fully blocked row is the out-projection bias.
        let bias = m.weights.out_proj_bias.as_ref().unwrap();
        for bi in 0..b {
            assert_eq!(
                row(out, bi * lq + 3),
                &bias[..],
                "blocked row of batch {bi}"
            );
            assert_eq!(
                row(out, bi * lq),
                row(&clean.attn_output, bi * lq),
                "row 0 is untouched"
            );
        }
        // Weights: NaN rows all NaN (softmax of a NaN or +inf row), the blocked row zeros.
        let w = got.attn_weights.as_ref().unwrap();
        let wr = want.attn_weights.as_ref().unwrap();
        check("weights", w, wr);
        for r in 0..rows(w) {
            let wrow = row(w, r);
            match r % lq {
                1 | 2 => assert!(wrow.iter().all(|x| x.is_nan()), "weights row {r}: {wrow:?}"),
                3 => assert!(wrow.iter().all(|&x| x == 0.0), "weights row {r}: {wrow:?}"),
                4 => {
                    assert_eq!(wrow[0], 0.0);
                    let sum: f32 = wrow.iter().sum();
                    assert!((sum - 1.0).abs() < 1e-5, "weights row {r} sums to {sum}");
                }
                _ => assert!(wrow.iter().all(|x| x.is_finite())),
            }
        }
    }
}

#[test]
fn mha_key_padding_mask_with_nan_and_inf() {
    let m = mha();
    let mut rng = StdRng::seed_from_u64(14);
    let (b, lq, s) = (3, 3, 5);
    let q = random(&mut rng, &[b, lq, E], 1.0);
    let kv = random(&mut rng, &[b, s, E], 1.0);
    let mut data = vec![0.0f32; b * s];
    data[s + 2] = f32::NAN; // batch 1: every row NaN (every row sees key 2)
    data[2 * s..3 * s].fill(f32::NEG_INFINITY); // batch 2: every key blocked
    let kpm = Mask::float([b, s], data).unwrap();
    for (causal, path) in [None, Some(Causal::BottomRight)]
        .into_iter()
        .flat_map(|c| PATHS.map(|p| (c, p)))
    {
        let opts = MhaOptions {
            key_padding_mask: Some(&kpm),
            causal,
            path,
            ..Default::default()
        };
        let (got, _) = mha_both(&m, &q, (&kv, &kv), &opts);
        let out = &got.attn_output;
        let clean = m
            .mha
            .forward(
                &q,
                &kv,
                &kv,
                &MhaOptions {
                    path,
                    ..Default::default()
                },
            )
            .unwrap();
        // Bottom-right with L=3 < S=5: row l sees keys s <= l + 2, so every row sees key 2.
        for r in 0..rows(out) {
            let bi = r / lq;
            match bi {
                1 => assert!(row(out, r).iter().all(|x| x.is_nan()), "row {r}"),
                2 => assert_eq!(
                    row(out, r),
                    &m.weights.out_proj_bias.as_ref().unwrap()[..],
                    "row {r}"
                ),
                _ if causal.is_none() => assert_eq!(
                    row(out, r).iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    row(&clean.attn_output, r)
                        .iter()
                        .map(|x| x.to_bits())
                        .collect::<Vec<_>>(),
                    "row {r}"
                ),
                _ => assert!(row(out, r).iter().all(|x| x.is_finite()), "row {r}"),
            }
        }
    }
}

#[test]
fn mha_nan_weights_poison_what_they_touch() {
    let m = mha();
    let mut rng = StdRng::seed_from_u64(15);
    let x = random(&mut rng, &[2, 3, E], 1.0);
    // A NaN in out_proj.bias[j]: column j of every output row, nothing else.
    let mut w = m.weights.clone();
    w.out_proj_bias.as_mut().unwrap()[4] = f32::NAN;
    let mha = MultiHeadAttention::new(&gpu(), m.config, &w).unwrap();
    let got = mha.forward(&x, &x, &x, &MhaOptions::default()).unwrap();
    let want = reference::mha_forward(&m.config, &w, &x, &x, &x, &MhaOptions::default()).unwrap();
    check("NaN out_proj bias", &got.attn_output, &want.attn_output);
    for r in 0..rows(&got.attn_output) {
        for (c, v) in row(&got.attn_output, r).iter().enumerate() {
            assert_eq!(v.is_nan(), c == 4, "row {r} col {c}");
        }
    }
}

/// The fused path with subgroups of 32 query rows (where the device shares keys among
/// subgroup lanes; 45 rows, so that one subgroup is partly past the end) and 40 keys (two
/// blocks and a half), d 8, dv 40 (two output vec4s for some lanes, one for others): a NaN
/// key, scored by one lane only, poisons every row that sees it in every column; a
/// non-finite value only its column, of the rows that see it; a +inf query its row.
/// Against the reference, with and without the causal limit and a bool mask.
#[test]
fn sdpa_fused_subgroup_rows_nonfinite() {
    let (b, hq, hkv, l, s, d, dv) = (1, 2, 1, 45, 40, 8, 40);
    let mut rng = StdRng::seed_from_u64(11);
    let clean = Sdpa {
        q: random(&mut rng, &[b, hq, l, d], 1.0),
        k: random(&mut rng, &[b, hkv, s, d], 1.0),
        v: random(&mut rng, &[b, hkv, s, dv], 1.0),
    };
    // Where the subgroups are 8 wide (lavapipe), the call runs the kernel of 32-row subgroups.
    let gpu = gpu();
    if gpu.fused_subgroup_width() == Some(8) {
        let opts = SdpaOptions {
            enable_gqa: true,
            path: AttentionPath::Fused,
            ..Default::default()
        };
        let prepared = PreparedSdpa::prepare(&gpu, &clean.q, &clean.k, &clean.v, &opts).unwrap();
        assert!(prepared.register_blocked_fused() && prepared.fused_subgroups());
    }
    let blocks_key_9 = Mask::bool([l, s], (0..l * s).map(|i| i % s != 9).collect()).unwrap();
    // Keys 9 (behind the mask) and 16 (past the causal limit of rows 0–15, which walk it
    // with their subgroup) have probability 0 where blocked: their non-finite values must
    // not reach those rows.
    type Spoil = fn(&mut Sdpa);
    let poison: [(&str, Spoil); 6] = [
        ("NaN key 21", |x| x.k.data[21 * 8 + 3] = f32::NAN),
        ("NaN key 9", |x| x.k.data[9 * 8] = f32::NAN),
        ("NaN value of key 30, column 37", |x| {
            x.v.data[30 * 40 + 37] = f32::NAN
        }),
        ("+inf value of key 16, column 2", |x| {
            x.v.data[16 * 40 + 2] = f32::INFINITY
        }),
        ("NaN value of key 9, column 8", |x| {
            x.v.data[9 * 40 + 8] = f32::NAN
        }),
        ("+inf query row 33", |x| {
            x.q.data[33 * 8 + 1] = f32::INFINITY
        }),
    ];
    for (what, spoil) in poison {
        let mut x = Sdpa {
            q: clean.q.clone(),
            k: clean.k.clone(),
            v: clean.v.clone(),
        };
        spoil(&mut x);
        for (mask, causal) in [
            (None, None),
            (None, Some(Causal::TopLeft)),
            (Some(&blocks_key_9), None),
        ] {
            let (got, want) = sdpa_both(&x, mask, causal, AttentionPath::Fused);
            check(
                &format!("{what}, mask {}, causal {causal:?}", mask.is_some()),
                &got,
                &want,
            );
        }
    }
}

/// Rows whose keys the fused kernel walks in runs, one launch each (where the driver caps an
/// invocation's loops: lavapipe takes 1088 to 4744 keys per run at d 64, by kernel), carry their state
/// from run to run: a NaN key met in the first run, a +inf score of a query row, and a row
/// whose mask blocks every key (zeros) come out as the reference has them, at 40 query
/// rows (the 8-lane subgroup kernel where the device shares loads) and 6000 keys.
#[test]
fn sdpa_fused_row_state_carries_across_runs_of_keys() {
    let (l, s, d) = (40, 6000, 64);
    let mut rng = StdRng::seed_from_u64(12);
    let mut x = Sdpa {
        q: random(&mut rng, &[1, 2, l, d], 1.0),
        k: random(&mut rng, &[1, 1, s, d], 1.0),
        v: random(&mut rng, &[1, 1, s, d], 1.0),
    };
    x.k.data[100 * d + 7] = f32::NAN;
    x.q.data[(l + 35) * d + 2] = f32::INFINITY; // head 1, row 35
    // Row 3 blocked everywhere; key 100 blocked for rows 10 and up (their rows stay finite).
    let mask = Mask::bool(
        [l, s],
        (0..l * s)
            .map(|i| i / s != 3 && !(i % s == 100 && i / s >= 10))
            .collect(),
    )
    .unwrap();
    let (got, want) = sdpa_both(&x, Some(&mask), None, AttentionPath::Fused);
    check("runs of keys", &got, &want);
    let finite_rows = (0..2 * l).filter(|r| row(&got, *r).iter().all(|v| v.is_finite()));
    // Head 0: rows 0–2 and 4–9 see the NaN key; head 1 also loses row 35 to +inf.
    assert_eq!(finite_rows.count(), 2 * (l - 9) - 1);
    assert!(row(&got, 3).iter().all(|&v| v == 0.0), "row 3 sees no key");
}
