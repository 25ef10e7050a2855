//! Hot loops compiled for the widest vector unit the CPU has, chosen at run time.
//!
//! The crate is built for baseline x86-64 (SSE2), so plain loops vectorise four lanes wide. A
//! closure run through [`wide`] is inlined into a copy of its caller compiled with AVX-512 or
//! AVX2+FMA enabled, and its loops vectorise to that width; the closure gets the level, so that
//! it can call intrinsics of that level.

use std::mem::MaybeUninit;

/// The vector instructions a [`wide`] closure may use: a proof that the CPU has them.
///
/// Only [`level`] (by detection), [`wide`] and [`Level::BASELINE`] make one, so a value
/// naming AVX2 or AVX-512 exists only on a CPU that has those features; the functions here
/// that take a level run that level's instructions on it without another check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Level(Isa);

/// The instruction sets a [`Level`] can name (read with [`Level::isa`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Baseline,
    Avx2,
    Avx512,
}

impl Level {
    /// Baseline x86-64 (or any other target): every CPU has it.
    pub const BASELINE: Level = Level(Isa::Baseline);

    /// The instruction set this level names.
    pub fn isa(self) -> Isa {
        self.0
    }
}

/// The best level this CPU supports (detected once).
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq") {
                return Level(Isa::Avx512);
            }
            if has!("avx2") && has!("fma") {
                return Level(Isa::Avx2);
            }
        }
        Level::BASELINE
    })
}

/// Runs `f` compiled for [`level`].
#[inline(always)]
pub fn wide<R>(f: impl FnOnce(Level) -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    match level().isa() {
        // SAFETY: the CPU has these features (checked by `level`).
        Isa::Avx512 => return unsafe { avx512(f) },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { avx2(f) },
        Isa::Baseline => {}
    }
    f(Level::BASELINE)
}

/// Safety: the CPU has AVX-512 F, BW, VL and DQ, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce(Level) -> R) -> R {
    f(Level(Isa::Avx512))
}

/// Safety: the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce(Level) -> R) -> R {
    f(Level(Isa::Avx2))
}

/// Splits `row` by phase: `out[q * stride + k] = row[m * k + q]` for k < `len(q)`, where
/// phases 0 and 1 take `n + 1` values and the others `n` (m is 2 or 4; `row` holds at least
/// m * n + 2 values).
#[inline(always)]
pub fn split_phases(level: Level, row: &[f32], m: usize, n: usize, out: &mut [f32], stride: usize) {
    assert!(row.len() >= m * n + 2 && out.len() > (m - 1) * stride + n && stride > n);
    let mut k0 = 0;
    #[cfg(target_arch = "x86_64")]
    if level.isa() == Isa::Avx512 && m == 4 {
        // SAFETY: AVX-512 is present; the bounds were checked above.
        k0 = unsafe { split4_avx512(row, n, out, stride) };
    } else if level.isa() == Isa::Avx2 && m == 4 {
        // SAFETY: AVX2 is present; the bounds were checked above.
        k0 = unsafe { split4_avx2(row, n, out, stride) };
    }
    for q in 0..m {
        let len = if q < 2 { n + 1 } else { n };
        for k in k0..len {
            out[q * stride + k] = row[m * k + q];
        }
    }
}

/// The 16-block chunks of [`split_phases`] for m = 4; returns the lanes done.
///
/// # Safety
/// The CPU has AVX-512F; `row` holds at least 4 * n values and `out` at least 3 * stride + n.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn split4_avx512(row: &[f32], n: usize, out: &mut [f32], stride: usize) -> usize {
    use std::arch::x86_64::*;
    debug_assert!(row.len() >= 4 * n && out.len() >= 3 * stride + n);
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    let (src, dst) = (row.as_ptr(), out.as_mut_ptr());
    let mut k = 0;
    while k + 16 <= n {
        // SAFETY: k + 16 <= n, so the 64 values 4k..4k+64 lie inside `row` (4n values).
        let (a, b, c, d) = unsafe {
            let p = src.add(4 * k);
            (
                _mm512_loadu_ps(p),
                _mm512_loadu_ps(p.add(16)),
                _mm512_loadu_ps(p.add(32)),
                _mm512_loadu_ps(p.add(48)),
            )
        };
        // Pixels 2i and 2i+1 of each half, then every second of those.
        let (ab0, ab1) = (
            _mm512_permutex2var_ps(a, even, b),
            _mm512_permutex2var_ps(a, odd, b),
        );
        let (cd0, cd1) = (
            _mm512_permutex2var_ps(c, even, d),
            _mm512_permutex2var_ps(c, odd, d),
        );
        // SAFETY: lanes k..k+16 of the four phases end at 3 * stride + k + 16 <= 3 * stride +
        // n, inside `out`.
        unsafe {
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
        }
        k += 16;
    }
    k
}

/// Transposes four rows of 4x4 blocks, one block per 128-bit lane: lane l of output q holds
/// element q of lane l of each input, in input order (its own inverse).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose4_in_lanes(
    r: [std::arch::x86_64::__m256; 4],
) -> [std::arch::x86_64::__m256; 4] {
    use std::arch::x86_64::*;
    let (t0, t1) = (_mm256_unpacklo_ps(r[0], r[1]), _mm256_unpackhi_ps(r[0], r[1]));
    let (t2, t3) = (_mm256_unpacklo_ps(r[2], r[3]), _mm256_unpackhi_ps(r[2], r[3]));
    [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xEE>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xEE>(t1, t3),
    ]
}

/// The 8-block chunks of [`split_phases`] for m = 4 on AVX2 (whose shuffles stay within
/// 128-bit lanes: the blocks are paired across lanes first); returns the lanes done.
///
/// # Safety
/// The CPU has AVX2; `row` holds at least 4 * n values and `out` at least 3 * stride + n.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn split4_avx2(row: &[f32], n: usize, out: &mut [f32], stride: usize) -> usize {
    use std::arch::x86_64::*;
    debug_assert!(row.len() >= 4 * n && out.len() >= 3 * stride + n);
    let (src, dst) = (row.as_ptr(), out.as_mut_ptr());
    let mut k = 0;
    while k + 8 <= n {
        // SAFETY: k + 8 <= n, so the 32 values 4k..4k+32 (blocks k..k+8) lie inside `row`.
        let pair = |i: usize| unsafe { _mm256_loadu_ps(src.add(4 * k + 8 * i)) };
        let (a, b, c, d) = (pair(0), pair(1), pair(2), pair(3));
        // Lanes (block j | block j + 4) for j = 0..4, then one transpose gives the phases.
        let lanes = [
            _mm256_permute2f128_ps::<0x20>(a, c),
            _mm256_permute2f128_ps::<0x31>(a, c),
            _mm256_permute2f128_ps::<0x20>(b, d),
            _mm256_permute2f128_ps::<0x31>(b, d),
        ];
        // SAFETY: AVX2 is present (this function's contract).
        let phases = unsafe { transpose4_in_lanes(lanes) };
        for (q, v) in phases.into_iter().enumerate() {
            // SAFETY: lanes k..k+8 of phase q end at 3 * stride + k + 8 <= 3 * stride + n.
            unsafe { _mm256_storeu_ps(dst.add(q * stride + k), v) };
        }
        k += 8;
    }
    k
}

/// The inverse of [`split_phases`] with bias and ReLU: `row[m * k + q] = act(cols[q * stride +
/// k] + bias)` for every index of `row` (m is 2 or 4; `cols` holds m phases of at least
/// `row.len().div_ceil(m)` lanes). `row` may be uninitialised: every value of it is written.
#[inline(always)]
pub fn merge_phases(
    level: Level,
    cols: &[f32],
    m: usize,
    stride: usize,
    row: &mut [MaybeUninit<f32>],
    bias: f32,
    relu: bool,
) {
    let n = row.len().div_ceil(m);
    assert!(m > 0 && stride >= n && cols.len() >= (m - 1) * stride + n);
    let act = |v: f32| {
        let v = v + bias;
        if relu {
            v.max(0.0)
        } else {
            v
        }
    };
    let mut k0 = 0;
    #[cfg(target_arch = "x86_64")]
    if level.isa() == Isa::Avx512 && m == 4 {
        // SAFETY: the level proves AVX-512; the bounds were checked above (n = len / 4
        // rounded up).
        k0 = unsafe { merge4_avx512(cols, stride, row, bias, relu) };
    } else if level.isa() == Isa::Avx2 && m == 4 {
        // SAFETY: the level proves AVX2; the bounds were checked above.
        k0 = unsafe { merge4_avx2(cols, stride, row, bias, relu) };
    }
    for (k, block) in row.chunks_mut(m).enumerate().skip(k0) {
        for (q, dst) in block.iter_mut().enumerate() {
            dst.write(act(cols[q * stride + k]));
        }
    }
}

/// The 16-block chunks of [`merge_phases`] for m = 4; returns the blocks done.
///
/// # Safety
/// The CPU has AVX-512F; `cols` holds at least 3 * stride + row.len() / 4 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn merge4_avx512(
    cols: &[f32],
    stride: usize,
    row: &mut [MaybeUninit<f32>],
    bias: f32,
    relu: bool,
) -> usize {
    use std::arch::x86_64::*;
    debug_assert!(cols.len() >= 3 * stride + row.len() / 4);
    // Pairs (c0[b], c1[b]) for b = 0..8 and 8..16, then pairs of pairs.
    let lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let lo2 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    let hi2 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    let b = _mm512_set1_ps(bias);
    let zero = _mm512_setzero_ps();
    // Writing through a raw pointer is fine on uninitialised memory (no reference to it).
    let (src, dst) = (cols.as_ptr(), row.as_mut_ptr().cast::<f32>());
    let mut k = 0;
    while 4 * (k + 16) <= row.len() {
        // SAFETY: k + 16 <= row.len() / 4, so lanes k..k+16 of phase q < 4 end inside `cols`.
        let c = |q: usize| unsafe { _mm512_loadu_ps(src.add(q * stride + k)) };
        let (c0, c1, c2, c3) = (
            _mm512_add_ps(c(0), b),
            _mm512_add_ps(c(1), b),
            _mm512_add_ps(c(2), b),
            _mm512_add_ps(c(3), b),
        );
        let (p_lo, p_hi) = (
            _mm512_castps_pd(_mm512_permutex2var_ps(c0, lo, c1)),
            _mm512_castps_pd(_mm512_permutex2var_ps(c0, hi, c1)),
        );
        let (q_lo, q_hi) = (
            _mm512_castps_pd(_mm512_permutex2var_ps(c2, lo, c3)),
            _mm512_castps_pd(_mm512_permutex2var_ps(c2, hi, c3)),
        );
        let outs = [
            _mm512_permutex2var_pd(p_lo, lo2, q_lo),
            _mm512_permutex2var_pd(p_lo, hi2, q_lo),
            _mm512_permutex2var_pd(p_hi, lo2, q_hi),
            _mm512_permutex2var_pd(p_hi, hi2, q_hi),
        ];
        for (j, v) in outs.into_iter().enumerate() {
            let v = _mm512_castpd_ps(v);
            let v = if relu { _mm512_max_ps(v, zero) } else { v };
            // SAFETY: 4k + 16j + 16 <= 4(k + 16) <= row.len().
            unsafe { _mm512_storeu_ps(dst.add(4 * k + 16 * j), v) };
        }
        k += 16;
    }
    k
}

/// The 8-block chunks of [`merge_phases`] for m = 4 on AVX2; returns the blocks done.
///
/// # Safety
/// The CPU has AVX2; `cols` holds at least 3 * stride + row.len() / 4 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn merge4_avx2(
    cols: &[f32],
    stride: usize,
    row: &mut [MaybeUninit<f32>],
    bias: f32,
    relu: bool,
) -> usize {
    use std::arch::x86_64::*;
    debug_assert!(cols.len() >= 3 * stride + row.len() / 4);
    let b = _mm256_set1_ps(bias);
    let zero = _mm256_setzero_ps();
    // Writing through a raw pointer is fine on uninitialised memory (no reference to it).
    let (src, dst) = (cols.as_ptr(), row.as_mut_ptr().cast::<f32>());
    let mut k = 0;
    while 4 * (k + 8) <= row.len() {
        // SAFETY: k + 8 <= row.len() / 4, so lanes k..k+8 of phase q < 4 end inside `cols`.
        let c = |q: usize| unsafe { _mm256_add_ps(_mm256_loadu_ps(src.add(q * stride + k)), b) };
        // Lanes (block j | block j + 4) for j = 0..4, then pairs of blocks in order.
        // SAFETY: AVX2 is present (this function's contract).
        let r = unsafe { transpose4_in_lanes([c(0), c(1), c(2), c(3)]) };
        let outs = [
            _mm256_permute2f128_ps::<0x20>(r[0], r[1]),
            _mm256_permute2f128_ps::<0x20>(r[2], r[3]),
            _mm256_permute2f128_ps::<0x31>(r[0], r[1]),
            _mm256_permute2f128_ps::<0x31>(r[2], r[3]),
        ];
        for (j, v) in outs.into_iter().enumerate() {
            let v = if relu { _mm256_max_ps(v, zero) } else { v };
            // SAFETY: 4k + 8j + 8 <= 4(k + 8) <= row.len().
            unsafe { _mm256_storeu_ps(dst.add(4 * k + 8 * j), v) };
        }
        k += 8;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of a vector made with `MaybeUninit::new` (so initialised throughout).
    fn init(v: Vec<MaybeUninit<f32>>) -> Vec<f32> {
        // SAFETY: every element was initialised when the vector was made.
        v.into_iter().map(|x| unsafe { x.assume_init() }).collect()
    }

    /// Every level this CPU has (AVX2 kernels are checked on AVX-512 machines too).
    fn levels() -> Vec<Level> {
        [Isa::Baseline, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&isa| isa <= level().isa())
            .map(Level)
            .collect()
    }

    #[test]
    fn phases_split_alike_at_every_level() {
        for m in [2usize, 4] {
            for n in [1usize, 15, 16, 17, 40] {
                let row: Vec<f32> = (0..m * n + 2).map(|i| i as f32).collect();
                let stride = n + 3;
                let mut want = vec![-1f32; m * stride];
                split_phases(Level::BASELINE, &row, m, n, &mut want, stride);
                for q in 0..m {
                    let len = if q < 2 { n + 1 } else { n };
                    for k in 0..len {
                        assert_eq!(want[q * stride + k], (m * k + q) as f32);
                    }
                }
                let mut got = vec![-1f32; m * stride];
                wide(|l| split_phases(l, &row, m, n, &mut got, stride));
                assert_eq!(got, want, "m {m} n {n}");
                for l in levels() {
                    let mut got = vec![-1f32; m * stride];
                    split_phases(l, &row, m, n, &mut got, stride);
                    assert_eq!(got, want, "m {m} n {n} {l:?}");
                }
            }
        }
    }

    #[test]
    fn phases_merge_alike_at_every_level() {
        for m in [2usize, 4] {
            for len in [1usize, 63, 64, 65, 130, 200] {
                let n = len.div_ceil(m);
                let stride = n + 2;
                let cols: Vec<f32> = (0..m * stride).map(|i| i as f32 - 40.0).collect();
                for relu in [false, true] {
                    let mut want = vec![MaybeUninit::new(0f32); len];
                    merge_phases(Level::BASELINE, &cols, m, stride, &mut want, 0.5, relu);
                    let want = init(want);
                    for (i, &v) in want.iter().enumerate() {
                        let x = cols[(i % m) * stride + i / m] + 0.5;
                        assert_eq!(v, if relu { x.max(0.0) } else { x });
                    }
                    let mut got = vec![MaybeUninit::new(0f32); len];
                    wide(|l| merge_phases(l, &cols, m, stride, &mut got, 0.5, relu));
                    let got = init(got);
                    assert_eq!(got, want, "m {m} len {len} relu {relu}");
                    for l in levels() {
                        let mut got = vec![MaybeUninit::new(0f32); len];
                        merge_phases(l, &cols, m, stride, &mut got, 0.5, relu);
                        assert_eq!(init(got), want, "m {m} len {len} relu {relu} {l:?}");
                    }
                }
            }
        }
    }
}
