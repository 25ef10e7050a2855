//! A small radix-2 complex FFT in `f64`, 1-D and 2-D, for the exhaustive cross-correlation of the
//! copy score. Sizes are powers of two; callers zero-pad.

use rayon::prelude::*;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Complex {
    pub re: f64,
    pub im: f64,
}

impl Complex {
    pub fn new(re: f64, im: f64) -> Self {
        Self { re, im }
    }
    fn plus(self, o: Self) -> Self {
        Self::new(self.re + o.re, self.im + o.im)
    }
    fn minus(self, o: Self) -> Self {
        Self::new(self.re - o.re, self.im - o.im)
    }
    pub fn times(self, o: Self) -> Self {
        Self::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
    pub fn conj(self) -> Self {
        Self::new(self.re, -self.im)
    }
}

/// Precomputed twiddle factors and bit-reversal table for one power-of-two length.
pub struct Plan {
    n: usize,
    /// exp(-2 pi i k / n), k < n/2.
    twiddles: Vec<Complex>,
    rev: Vec<usize>,
}

impl Plan {
    pub fn new(n: usize) -> Self {
        assert!(n.is_power_of_two(), "FFT length {n} is not a power of two");
        let twiddles = (0..n / 2)
            .map(|k| {
                let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                Complex::new(a.cos(), a.sin())
            })
            .collect();
        let bits = n.trailing_zeros();
        let rev = (0..n)
            .map(|i| {
                if bits == 0 {
                    0
                } else {
                    i.reverse_bits() >> (usize::BITS - bits)
                }
            })
            .collect();
        Self { n, twiddles, rev }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// In-place transform of `buf` (length n). The inverse is unscaled: divide by n yourself.
    pub fn run(&self, buf: &mut [Complex], inverse: bool) {
        let n = self.n;
        debug_assert_eq!(buf.len(), n);
        for i in 0..n {
            let j = self.rev[i];
            if i < j {
                buf.swap(i, j);
            }
        }
        let mut len = 2;
        while len <= n {
            let half = len / 2;
            let step = n / len;
            for start in (0..n).step_by(len) {
                for k in 0..half {
                    let mut w = self.twiddles[k * step];
                    if inverse {
                        w = w.conj();
                    }
                    let a = buf[start + k];
                    let b = buf[start + k + half].times(w);
                    buf[start + k] = a.plus(b);
                    buf[start + k + half] = a.minus(b);
                }
            }
            len *= 2;
        }
    }
}

fn transpose(src: &[Complex], h: usize, w: usize) -> Vec<Complex> {
    let mut out = vec![Complex::default(); h * w];
    out.par_chunks_mut(h).enumerate().for_each(|(x, col)| {
        for (y, o) in col.iter_mut().enumerate() {
            *o = src[y * w + x];
        }
    });
    out
}

/// 2-D plans for an `h` x `w` (rows x columns) grid, both powers of two.
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
    pub fn run(&self, data: &mut Vec<Complex>, inverse: bool) {
        let (h, w) = (self.h, self.w);
        assert_eq!(data.len(), h * w);
        data.par_chunks_mut(w)
            .for_each(|row| self.rows.run(row, inverse));
        let mut t = transpose(data, h, w);
        t.par_chunks_mut(h)
            .for_each(|col| self.cols.run(col, inverse));
        *data = transpose(&t, w, h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_naive_dft_and_inverts() {
        let n = 16;
        let x: Vec<Complex> = (0..n)
            .map(|i| Complex::new((i as f64 * 0.7).sin() + 0.1 * i as f64, (i as f64).cos()))
            .collect();
        let mut f = x.clone();
        Plan::new(n).run(&mut f, false);
        for (k, fk) in f.iter().enumerate() {
            let mut s = Complex::default();
            for (j, xj) in x.iter().enumerate() {
                let a = -2.0 * std::f64::consts::PI * (j * k) as f64 / n as f64;
                s = s.plus(xj.times(Complex::new(a.cos(), a.sin())));
            }
            assert!((s.re - fk.re).abs() < 1e-9 && (s.im - fk.im).abs() < 1e-9);
        }
        let (h, w) = (8, 4);
        let grid: Vec<Complex> = (0..h * w)
            .map(|i| Complex::new(i as f64, -(i as f64) / 3.0))
            .collect();
        let p = Plan2::new(h, w);
        let mut g = grid.clone();
        p.run(&mut g, false);
        p.run(&mut g, true);
        for (a, b) in g.iter().zip(&grid) {
            assert!((a.re / (h * w) as f64 - b.re).abs() < 1e-9);
            assert!((a.im / (h * w) as f64 - b.im).abs() < 1e-9);
        }
    }
}
