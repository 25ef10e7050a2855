//! Hot loops compiled for the widest vector unit the CPU has, chosen at run time.
//!
//! The crate is built for baseline x86-64 (SSE2), so plain loops vectorise four lanes wide. A
//! closure run through [`wide`] is inlined into a copy of its caller compiled with AVX-512 or
//! AVX2+FMA enabled, and its loops vectorise to that width; the closure gets the level, so that
//! it can call intrinsics of that level.

/// The vector instructions a [`wide`] closure may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Baseline,
    Avx2,
    Avx512,
}

/// The best level this CPU supports (detected once).
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
                return Level::Avx512;
            }
            if has!("avx2") && has!("fma") {
                return Level::Avx2;
            }
        }
        Level::Baseline
    })
}

/// Runs `f` compiled for [`level`].
#[inline(always)]
pub fn wide<R>(f: impl FnOnce(Level) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level() {
        // SAFETY: the CPU has these features (checked by `level`).
        Level::Avx512 => return unsafe { avx512(f) },
        Level::Avx2 => return unsafe { avx2(f) },
        Level::Baseline => {}
    }
    f(Level::Baseline)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce(Level) -> R) -> R {
    f(Level::Avx512)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce(Level) -> R) -> R {
    f(Level::Avx2)
}

/// Splits `row` by phase: `out[q * stride + k] = row[m * k + q]` for k < `len(q)`, where
/// phases 0 and 1 take `n + 1` values and the others `n` (m is 2 or 4; `row` holds at least
/// m * n + 2 values).
#[inline(always)]
pub fn split_phases(level: Level, row: &[f32], m: usize, n: usize, out: &mut [f32], stride: usize) {
    assert!(row.len() >= m * n + 2 && out.len() > (m - 1) * stride + n && stride > n);
    let mut k0 = 0;
    #[cfg(target_arch = "x86_64")]
    if level == Level::Avx512 && m == 4 {
        // SAFETY: AVX-512 is present; the bounds were checked above.
        k0 = unsafe { split4_avx512(row, n, out, stride) };
    }
    for q in 0..m {
        let len = if q < 2 { n + 1 } else { n };
        for k in k0..len {
            out[q * stride + k] = row[m * k + q];
        }
    }
}

/// The 16-block chunks of [`split_phases`] for m = 4; returns the lanes done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn split4_avx512(row: &[f32], n: usize, out: &mut [f32], stride: usize) -> usize {
    use std::arch::x86_64::*;
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (src, dst) = (row.as_ptr(), out.as_mut_ptr());
    let mut k = 0;
    while k + 16 <= n {
        let p = src.add(4 * k);
        let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        let (c, d) = (_mm512_loadu_ps(p.add(32)), _mm512_loadu_ps(p.add(48)));
        // Pixels 2i and 2i+1 of each half, then every second of those.
        let (ab0, ab1) = (
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
        );
        let (cd0, cd1) = (
            _mm512_permutex2var_ps(c, even, d),
            _mm512_permutex2var_ps(c, odd, d),
        );
        _mm512_storeu_ps(dst.add(k), _mm512_permutex2var_ps(ab0, even, cd0));
        _mm512_storeu_ps(dst.add(stride + k), _mm512_permutex2var_ps(ab1, even, cd1));
        _mm512_storeu_ps(
            dst.add(2 * stride + k),
            _mm512_permutex2var_ps(ab0, odd, cd0),
        );
        _mm512_storeu_ps(
            dst.add(3 * stride + k),
            _mm512_permutex2var_ps(ab1, odd, cd1),
        );
        k += 16;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_alike_at_every_level() {
        for m in [2usize, 4] {
            for n in [1usize, 15, 16, 17, 40] {
                let row: Vec<f32> = (0..m * n + 2).map(|i| i as f32).collect();
                let stride = n + 3;
                let mut want = vec![-1f32; m * stride];
                split_phases(Level::Baseline, &row, m, n, &mut want, stride);
                for q in 0..m {
                    let len = if q < 2 { n + 1 } else { n };
                    for k in 0..len {
                        assert_eq!(want[q * stride + k], (m * k + q) as f32);
                    }
                }
                let mut got = vec![-1f32; m * stride];
                wide(|l| split_phases(l, &row, m, n, &mut got, stride));
                assert_eq!(got, want, "m {m} n {n}");
            }
        }
    }
}
