//! Complex FFTs in `f64`, 1-D and 2-D, for the exhaustive cross-correlations of the copy score
//! and of the periodicity metric. The transforms are rustfft's; this module only plans them
//! once per size, spreads rows over rayon's threads and does the 2-D transposes.
//!
//! Any length works; [`fast_len`] gives the padded length callers use (a product of 2, 3 and 5,
//! which rustfft transforms fastest). Inverses are unscaled, as rustfft's: divide by the number
//! of points yourself.

use std::sync::Arc;

use rayon::prelude::*;
use rustfft::{Fft, FftPlanner};

pub type Complex = rustfft::num_complex::Complex<f64>;

/// The smallest length >= `n` whose only prime factors are 2, 3 and 5 (1 for 0).
pub fn fast_len(n: usize) -> usize {
    let smooth = |mut m: usize| {
        for p in [2, 3, 5] {
            while m.is_multiple_of(p) {
                m /= p;
            }
        }
        m == 1
    };
    (n.max(1)..)
        .find(|&m| smooth(m))
        .expect("a 5-smooth number follows")
}

/// Forward and inverse transforms of one length.
pub struct Plan {
    forward: Arc<dyn Fft<f64>>,
    inverse: Arc<dyn Fft<f64>>,
}

impl Plan {
    pub fn new(n: usize) -> Self {
        let mut planner = FftPlanner::new();
        Self {
            forward: planner.plan_fft_forward(n),
            inverse: planner.plan_fft_inverse(n),
        }
    }

    pub fn len(&self) -> usize {
        self.forward.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fft(&self, inverse: bool) -> &Arc<dyn Fft<f64>> {
        if inverse {
            &self.inverse
        } else {
            &self.forward
        }
    }

    /// In-place transform of `buf` (length n). The inverse is unscaled: divide by n yourself.
    pub fn run(&self, buf: &mut [Complex], inverse: bool) {
        assert_eq!(buf.len(), self.len(), "FFT buffer length");
        self.fft(inverse).process(buf);
    }

    /// In-place transform of every length-n row of `buf`, the rows spread over rayon's threads.
    pub fn run_rows(&self, buf: &mut [Complex], inverse: bool) {
        let n = self.len();
        if n == 0 {
            return;
        }
        assert!(
            buf.len().is_multiple_of(n),
            "FFT buffer is not a whole number of rows"
        );
        let fft = self.fft(inverse);
        // A few batches per thread: rustfft transforms a batch of rows in one call.
        let rows = buf.len() / n;
        let per_task = rows.div_ceil(4 * rayon::current_num_threads()).max(1);
        buf.par_chunks_mut(per_task * n).for_each_init(
            || vec![Complex::default(); fft.get_inplace_scratch_len()],
            |scratch, batch| fft.process_with_scratch(batch, scratch),
        );
    }
}

/// 2-D plans for an `h` x `w` (rows x columns) grid.
pub struct Plan2 {
    pub h: usize,
    pub w: usize,
    rows: Plan,
    cols: Plan,
}

impl Plan2 {
    pub fn new(h: usize, w: usize) -> Self {
        Self {
            h,
            w,
            rows: Plan::new(w),
            cols: Plan::new(h),
        }
    }

    /// In-place 2-D transform of a row-major `h` x `w` grid (inverse unscaled).
    pub fn run(&self, data: &mut [Complex], inverse: bool) {
        let (h, w) = (self.h, self.w);
        assert_eq!(data.len(), h * w, "FFT grid size");
        self.rows.run_rows(data, inverse);
        let mut t = vec![Complex::default(); h * w];
        transpose::transpose(data, &mut t, w, h);
        self.cols.run_rows(&mut t, inverse);
        transpose::transpose(&t, data, h, w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_lengths_are_5_smooth_and_minimal() {
        assert_eq!(fast_len(0), 1);
        assert_eq!(fast_len(7), 8);
        assert_eq!(fast_len(256), 256);
        assert_eq!(fast_len(257), 270);
        assert_eq!(fast_len(385), 400);
        assert_eq!(fast_len(769), 800);
    }

    #[test]
    fn matches_the_naive_dft_and_inverts() {
        for n in [16, 12, 15] {
            let x: Vec<Complex> = (0..n)
                .map(|i| Complex::new((i as f64 * 0.7).sin() + 0.1 * i as f64, (i as f64).cos()))
                .collect();
            let mut f = x.clone();
            Plan::new(n).run(&mut f, false);
            for (k, fk) in f.iter().enumerate() {
                let mut s = Complex::default();
                for (j, xj) in x.iter().enumerate() {
                    let a = -2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                    s += xj * Complex::new(a.cos(), a.sin());
                }
                assert!((s.re - fk.re).abs() < 1e-9 && (s.im - fk.im).abs() < 1e-9);
            }
        }
        for (h, w) in [(8, 4), (6, 10)] {
            let grid: Vec<Complex> = (0..h * w)
                .map(|i| Complex::new(i as f64, -(i as f64) / 3.0))
                .collect();
            let p = Plan2::new(h, w);
            let mut g = grid.clone();
            p.run(&mut g, false);
            // The DC term is the sum of the grid.
            let sum: Complex = grid.iter().sum();
            assert!((g[0] - sum).norm() < 1e-9);
            p.run(&mut g, true);
            for (a, b) in g.iter().zip(&grid) {
                assert!((a.re / (h * w) as f64 - b.re).abs() < 1e-9);
                assert!((a.im / (h * w) as f64 - b.im).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn rows_match_one_at_a_time() {
        let (rows, n) = (37, 12);
        let grid: Vec<Complex> = (0..rows * n)
            .map(|i| Complex::new((i as f64 * 0.3).sin(), (i as f64 * 0.1).cos()))
            .collect();
        let plan = Plan::new(n);
        let mut all = grid.clone();
        plan.run_rows(&mut all, false);
        for (r, want) in grid.chunks(n).zip(all.chunks(n)) {
            let mut one = r.to_vec();
            plan.run(&mut one, false);
            assert_eq!(one, want);
        }
    }
}
