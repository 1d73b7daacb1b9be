//! Comparing a GPU result with the CPU reference: the error measures the CLI and the
//! benchmark report, and the tolerance rule `|got − want| ≤ atol + rtol·|want|`.

use crate::options::Dtype;
use crate::tensor::Tensor;

/// Relative tolerance of the f32 GPU path against the f64 reference.
pub const RTOL: f32 = 1e-4;

/// Absolute tolerance per unit of the reference's magnitude: `atol = ATOL_SCALE · max(1, max|want|)`.
pub const ATOL_SCALE: f32 = 1e-5;

/// Relative tolerance of f16 storage, against the reference run on the same f16-rounded
/// inputs and weights: what remains is the rounding of the intermediates an f16 MHA forward
/// stores (projected q/k/v, the attention output), 2⁻¹¹ ≈ 4.9e-4 each, with room for their
/// accumulation.
pub const RTOL_F16: f32 = 5e-3;

/// Absolute tolerance of f16 storage per unit of the reference's magnitude.
pub const ATOL_SCALE_F16: f32 = 5e-3;

/// `(rtol, atol_scale)` for results computed from `dtype` storage.
pub fn tolerance(dtype: Dtype) -> (f32, f32) {
    match dtype {
        Dtype::F32 => (RTOL, ATOL_SCALE),
        Dtype::F16 => (RTOL_F16, ATOL_SCALE_F16),
    }
}

/// How far one tensor is from another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Comparison {
    /// max |got − want|.
    pub max_abs: f32,
    /// max |got − want| / |want| over elements with |want| > atol (elsewhere the relative
    /// error says nothing).
    pub max_rel: f32,
    /// The absolute tolerance used.
    pub atol: f32,
    /// The relative tolerance used.
    pub rtol: f32,
    /// Elements outside `atol + rtol·|want|` (NaN on one side only counts; shapes that differ
    /// count every element).
    pub failures: usize,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.failures == 0
    }
}

/// Compares with the f32 tolerance ([`RTOL`], [`ATOL_SCALE`]).
pub fn compare(got: &Tensor, want: &Tensor) -> Comparison {
    compare_as(got, want, Dtype::F32)
}

/// Compares with the tolerance of results computed from `dtype` storage ([`tolerance`]).
pub fn compare_as(got: &Tensor, want: &Tensor, dtype: Dtype) -> Comparison {
    let magnitude = want
        .data
        .iter()
        .filter(|v| v.is_finite())
        .fold(1f32, |m, v| m.max(v.abs()));
    let (rtol, atol_scale) = tolerance(dtype);
    compare_with(got, want, rtol, atol_scale * magnitude)
}

/// Compares with an explicit tolerance.
pub fn compare_with(got: &Tensor, want: &Tensor, rtol: f32, atol: f32) -> Comparison {
    let mut c = Comparison {
        max_abs: 0.0,
        max_rel: 0.0,
        atol,
        rtol,
        failures: 0,
    };
    if got.shape != want.shape {
        c.failures = want.numel().max(1);
        c.max_abs = f32::INFINITY;
        return c;
    }
    for (&g, &w) in got.data.iter().zip(&want.data) {
        if g == w || (g.is_nan() && w.is_nan()) {
            continue;
        }
        let err = (g - w).abs();
        // Written so that a NaN error counts as a failure.
        let within = err <= atol + rtol * w.abs();
        if !within {
            c.failures += 1;
        }
        let err = if err.is_nan() { f32::INFINITY } else { err };
        c.max_abs = c.max_abs.max(err);
        if w.abs() > atol {
            c.max_rel = c.max_rel.max(err / w.abs());
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(data: &[f32]) -> Tensor {
        Tensor::new([data.len()], data.to_vec()).unwrap()
    }

    #[test]
    fn within_and_outside_tolerance() {
        let want = t(&[1.0, -2.0, 100.0]);
        assert!(compare(&t(&[1.0, -2.0, 100.005]), &want).passed());
        let c = compare(&t(&[1.0, -2.0, 100.1]), &want);
        assert_eq!(c.failures, 1);
        assert!((c.max_abs - 0.1).abs() < 1e-4);
        assert!((c.max_rel - 1e-3).abs() < 1e-5);
    }

    #[test]
    fn nan_fails_and_shape_mismatch_fails() {
        assert_eq!(compare(&t(&[f32::NAN, 1.0]), &t(&[0.5, 1.0])).failures, 1);
        assert!(!compare(&t(&[1.0]), &t(&[1.0, 2.0])).passed());
    }
}
