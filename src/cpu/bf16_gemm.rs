//! Matrix products with bf16 operands and f32 sums, on AVX-512 BF16 (`vdpbf16ps`): twice the
//! multiply-adds per cycle of f32 FMA on the CPUs that have it (AMD Zen 4 and later, Intel
//! Cooper Lake and Sapphire Rapids). Operands are rounded to bf16 (8 significant bits) as they
//! are packed; every sum is f32.
//!
//! The left operand is packed once ([`PackedA`]: VGG's weights are constants); the right one is
//! packed per call, a block of columns at a time, small enough to stay in L2.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of C per micro-kernel call.
const MR: usize = 8;
/// Columns of C per micro-kernel call (three 16-lane vectors).
const NR: usize = 48;
/// Bytes of packed right operand per column block (about half of a Zen 4 core's L2).
const B_BLOCK_BYTES: usize = 512 << 10;

/// Whether this CPU runs the bf16 kernel.
pub fn available() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// The bf16 bits of `x`, rounded to nearest even (finite inputs).
#[inline(always)]
fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    (b + 0x7fff + ((b >> 16) & 1)) >> 16
}

/// Two bf16 values in one 32-bit lane, `lo` first along K (the order `vdpbf16ps` pairs them).
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) | (bf16_bits(hi) << 16)
}

/// A left operand (m x k) in bf16, packed in panels of MR rows: [panel][k / 2][MR] pairs.
#[derive(Debug)]
pub struct PackedA {
    m: usize,
    k: usize,
    data: Vec<u32>,
}

impl PackedA {
    /// Packs the row-major `a` (m x k).
    pub fn new(a: &[f32], m: usize, k: usize) -> Self {
        assert!(a.len() >= m * k, "bf16 gemm: left operand too small");
        let kp = k.div_ceil(2);
        let mut data = vec![0u32; m.div_ceil(MR) * kp * MR];
        for (p, panel) in data.chunks_mut(kp * MR).enumerate() {
            for k2 in 0..kp {
                for r in 0..MR.min(m - p * MR) {
                    let row = &a[(p * MR + r) * k..(p * MR + r + 1) * k];
                    let hi = if 2 * k2 + 1 < k { row[2 * k2 + 1] } else { 0.0 };
                    panel[k2 * MR + r] = pair(row[2 * k2], hi);
                }
            }
        }
        Self { m, k, data }
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn depth(&self) -> usize {
        self.k
    }
}

/// C (m x n, row stride `ldc`) = A B, with B (k x n, row stride `ldb`) in f32; `pack` is scratch
/// for the packed columns (kept by the caller between calls). Panics unless [`available`].
pub fn gemm(
    a: &PackedA,
    b: &[f32],
    ldb: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    pack: &mut Vec<u32>,
) {
    assert!(available(), "bf16 gemm: this CPU has no AVX-512 BF16");
    let (m, k) = (a.m, a.k);
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        k > 0
            && ldb >= n
            && ldc >= n
            && b.len() >= (k - 1) * ldb + n
            && c.len() >= (m - 1) * ldc + n,
        "bf16 gemm: operands out of bounds"
    );
    let kp = k.div_ceil(2);
    let nc = (B_BLOCK_BYTES / 4 / kp / NR).max(1) * NR;
    for n0 in (0..n).step_by(nc) {
        let nb = nc.min(n - n0);
        let panels = nb.div_ceil(NR);
        if pack.len() < panels * kp * NR {
            pack.resize(panels * kp * NR, 0);
        }
        pack_b(b, ldb, k, n0, nb, &mut pack[..panels * kp * NR]);
        for p in 0..m.div_ceil(MR) {
            let ap = &a.data[p * kp * MR..(p + 1) * kp * MR];
            let rows = MR.min(m - p * MR);
            for q in 0..panels {
                let cols = NR.min(nb - q * NR);
                let at = p * MR * ldc + n0 + q * NR;
                // SAFETY: the CPU has the features (asserted above); the kernel writes rows x
                // cols values of C from `at` with stride ldc, inside `c` (bounds asserted), and
                // reads kp * MR packed values of A and kp * NR of B.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    kernel(
                        ap.as_ptr(),
                        pack[q * kp * NR..(q + 1) * kp * NR].as_ptr(),
                        kp,
                        c.as_mut_ptr().add(at),
                        ldc,
                        rows,
                        cols,
                    );
                }
            }
        }
    }
}

/// Columns n0..n0+nb of B as [panel][k / 2][NR] pairs, zeros past the last column and row.
fn pack_b(b: &[f32], ldb: usize, k: usize, n0: usize, nb: usize, out: &mut [u32]) {
    let kp = k.div_ceil(2);
    crate::cpu::simd::wide(
        #[inline(always)]
        |_| {
            for (q, panel) in out.chunks_mut(kp * NR).enumerate() {
                let c0 = n0 + q * NR;
                let cols = NR.min(n0 + nb - c0);
                for k2 in 0..kp {
                    let dst = &mut panel[k2 * NR..(k2 + 1) * NR];
                    let lo = &b[2 * k2 * ldb + c0..2 * k2 * ldb + c0 + cols];
                    if 2 * k2 + 1 < k {
                        let hi = &b[(2 * k2 + 1) * ldb + c0..(2 * k2 + 1) * ldb + c0 + cols];
                        for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                            *d = pair(l, h);
                        }
                    } else {
                        for (d, &l) in dst.iter_mut().zip(lo) {
                            *d = pair(l, 0.0);
                        }
                    }
                    dst[cols..].fill(0);
                }
            }
        },
    );
}

/// MR x NR of C = the packed A panel times the packed B panel, over kp pairs of K.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `ap` points to kp * MR values, `bp` to kp * NR, and
/// C holds `rows` (at most MR) rows of `cols` (at most NR) values from `c`, stride `ldc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(
    ap: *const u32,
    bp: *const u32,
    kp: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
) {
    // SAFETY: the two types have the same size, and every bit pattern is a value of both.
    let bh = |v: __m512i| unsafe { std::mem::transmute::<__m512i, __m512bh>(v) };
    let mut acc = [[_mm512_setzero_ps(); 3]; MR];
    for k2 in 0..kp {
        // SAFETY: pair row k2 < kp of the B panel: NR = 48 values from k2 * NR, inside `bp`.
        let b: [__m512bh; 3] = unsafe {
            let bk = bp.add(k2 * NR);
            [
                bh(_mm512_loadu_si512(bk as *const _)),
                bh(_mm512_loadu_si512(bk.add(16) as *const _)),
                bh(_mm512_loadu_si512(bk.add(32) as *const _)),
            ]
        };
        // SAFETY: pair row k2 < kp of the A panel: MR values from k2 * MR, inside `ap`.
        let ak = unsafe { std::slice::from_raw_parts(ap.add(k2 * MR), MR) };
        for (acc_r, &a) in acc.iter_mut().zip(ak) {
            let a = bh(_mm512_set1_epi32(a as i32));
            for (j, acc_rj) in acc_r.iter_mut().enumerate() {
                *acc_rj = _mm512_dpbf16_ps(*acc_rj, a, b[j]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(rows) {
        for (j, v) in acc_r.iter().enumerate() {
            let left = cols.saturating_sub(16 * j).min(16);
            if left == 0 {
                continue;
            }
            // SAFETY: row r < rows, columns 16j..16j + left with 0 < left and 16j + left <=
            // cols: inside C.
            unsafe {
                let at = c.add(r * ldc + 16 * j);
                if left == 16 {
                    _mm512_storeu_ps(at, *v);
                } else {
                    _mm512_mask_storeu_ps(at, ((1u32 << left) - 1) as __mmask16, *v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() - 0.5).collect()
    }

    fn round(x: f32) -> f32 {
        f32::from_bits(bf16_bits(x) << 16)
    }

    /// Equals the product of the bf16-rounded operands (summed in f64) to f32 rounding, on
    /// shapes with tails in every dimension, and stays within bf16's precision of the f32
    /// product.
    #[test]
    fn matches_the_rounded_product() {
        if !available() {
            eprintln!("skipping: no AVX-512 BF16 on this CPU");
            return;
        }
        for &(m, k, n) in &[
            (8, 2, 48),
            (13, 7, 50),
            (64, 64, 100),
            (24, 301, 1000),
            (3, 1, 5),
        ] {
            let a = noise(m * k, 1);
            let b = noise(k * n + 3, 2);
            let ldc = n + 5;
            let mut c = vec![f32::NAN; m * ldc];
            let packed = PackedA::new(&a, m, k);
            gemm(&packed, &b, n, n, &mut c, ldc, &mut Vec::new());
            for i in 0..m {
                for j in 0..n {
                    let (mut exact, mut rounded, mut scale) = (0f64, 0f64, 0f64);
                    for t in 0..k {
                        let (x, y) = (a[i * k + t], b[t * n + j]);
                        exact += x as f64 * y as f64;
                        rounded += round(x) as f64 * round(y) as f64;
                        scale += (x as f64 * y as f64).abs();
                    }
                    let got = c[i * ldc + j] as f64;
                    assert!(
                        (got - rounded).abs() <= 1e-5 * scale + 1e-7,
                        "{m}x{k}x{n} at {i},{j}: {got} vs {rounded}"
                    );
                    assert!((got - exact).abs() <= 1e-2 * scale + 1e-7);
                }
                // The padding columns of C are left alone.
                assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()));
            }
        }
    }
}
