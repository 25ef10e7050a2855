//! 3x3 convolution by Winograd's minimal filtering, F(2x2, 3x3): each 2x2 block of outputs
//! comes from a 4x4 block of input through 16 elementwise products instead of 36, so the
//! convolution becomes 16 matrix products of (out x in) by (in x blocks) with 2.25 times fewer
//! multiply-adds than the direct method. The transforms are cheap next to those products once
//! a layer has 256 or more channels in and out (VGG19's conv3_2 onwards); smaller layers stay
//! direct.
//!
//! Works on the same padded buffer as the direct kernel; bias and ReLU are fused into the
//! output transform.

// The transforms index small fixed matrices by row and column, as written on paper.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

/// Layers with fewer input or output channels stay direct: below 256 the transforms and the
/// small products cost more than the saved multiply-adds (measured on 2 cores: 64->64 at
/// 256 px 0.65x the direct speed, 128->128 0.80x, 256->256 1.22x, 512->512 1.28x).
pub const MIN_CHANNELS: usize = 256;

/// Transformed weights U[16][cout][cin] = G g G^T for tap-major weights `taps` [9][cout][cin].
fn transform_weights(taps: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let per = cout * cin;
    let mut u = vec![0f32; 16 * per];
    // Per output channel in parallel: its 16 rows of cin values.
    let rows: Vec<(usize, Vec<f32>)> = (0..cout)
        .into_par_iter()
        .map(|o| {
            let mut out = vec![0f32; 16 * cin];
            for c in 0..cin {
                let g = |ky: usize, kx: usize| taps[((ky * 3 + kx) * cout + o) * cin + c];
                // t = G g (4x3), then t G^T (4x4).
                let mut t = [[0f32; 3]; 4];
                for kx in 0..3 {
                    let (g0, g1, g2) = (g(0, kx), g(1, kx), g(2, kx));
                    t[0][kx] = g0;
                    t[1][kx] = 0.5 * (g0 + g1 + g2);
                    t[2][kx] = 0.5 * (g0 - g1 + g2);
                    t[3][kx] = g2;
                }
                for (i, r) in t.iter().enumerate() {
                    let v = [
                        r[0],
                        0.5 * (r[0] + r[1] + r[2]),
                        0.5 * (r[0] - r[1] + r[2]),
                        r[2],
                    ];
                    for (j, &x) in v.iter().enumerate() {
                        out[(i * 4 + j) * cin + c] = x;
                    }
                }
            }
            (o, out)
        })
        .collect();
    for (o, out) in rows {
        for xi in 0..16 {
            u[xi * per + o * cin..xi * per + (o + 1) * cin]
                .copy_from_slice(&out[xi * cin..(xi + 1) * cin]);
        }
    }
    u
}

/// Raw pointer shared by bands that write disjoint regions.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Convolution of a padded image `padded` [cin][hp][wp] (one pixel of padding on every side,
/// `hp >= 2 * ceil(h / 2) + 2`, `wp >= 2 * ceil(w / 2) + 2`, zeros beyond) into [cout][h][w].
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_winograd(
    padded: &[f32],
    hp: usize,
    wp: usize,
    cin: usize,
    h: usize,
    w: usize,
    taps: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let u = transform_weights(taps, cout, cin);
    let (ty_n, tx_n) = (h.div_ceil(2), w.div_ceil(2));
    debug_assert!(hp >= 2 * ty_n + 2 && wp >= 2 * tx_n + 2);
    let plane_in = hp * wp;

    // Bands of whole block rows, sized so a band's transformed input and products stay small,
    // and enough of them for every core.
    let threads = rayon::current_num_threads().max(1);
    let target_blocks = (262_144 / (cin + cout)).clamp(128, 4096);
    let mut rows = (target_blocks / tx_n).max(1);
    while rows > 1 && ty_n.div_ceil(rows) < 2 * threads {
        rows /= 2;
    }
    let mut out = vec![0f32; cout * h * w];
    let out_ptr = SendPtr(out.as_mut_ptr());
    let u = &u;
    (0..ty_n)
        .step_by(rows)
        .collect::<Vec<_>>()
        .into_par_iter()
        .for_each(|by0| {
            let by1 = (by0 + rows).min(ty_n);
            let nb = (by1 - by0) * tx_n;
            // V[16][cin][nb]: B^T d B of every 4x4 input block.
            let mut v = vec![0f32; 16 * cin * nb];
            for c in 0..cin {
                let src = &padded[c * plane_in..(c + 1) * plane_in];
                for by in by0..by1 {
                    for bx in 0..tx_n {
                        let t = (by - by0) * tx_n + bx;
                        let (y0, x0) = (2 * by, 2 * bx);
                        let mut d = [[0f32; 4]; 4];
                        for (i, row) in d.iter_mut().enumerate() {
                            row.copy_from_slice(&src[(y0 + i) * wp + x0..(y0 + i) * wp + x0 + 4]);
                        }
                        // B^T d (rows), then (B^T d) B (columns).
                        let mut e = [[0f32; 4]; 4];
                        for j in 0..4 {
                            e[0][j] = d[0][j] - d[2][j];
                            e[1][j] = d[1][j] + d[2][j];
                            e[2][j] = d[2][j] - d[1][j];
                            e[3][j] = d[1][j] - d[3][j];
                        }
                        for (i, r) in e.iter().enumerate() {
                            let f = [r[0] - r[2], r[1] + r[2], r[2] - r[1], r[1] - r[3]];
                            for (j, &x) in f.iter().enumerate() {
                                v[((i * 4 + j) * cin + c) * nb + t] = x;
                            }
                        }
                    }
                }
            }
            // M[16][cout][nb] = U[xi] V[xi].
            let mut m = vec![0f32; 16 * cout * nb];
            for xi in 0..16 {
                // SAFETY: the slices are in bounds: U[xi] is cout x cin, V[xi] cin x nb, M[xi]
                // cout x nb, all row-major.
                unsafe {
                    gemm::gemm(
                        cout,
                        nb,
                        cin,
                        m.as_mut_ptr().add(xi * cout * nb),
                        1,
                        nb as isize,
                        false,
                        u.as_ptr().add(xi * cout * cin),
                        1,
                        cin as isize,
                        v.as_ptr().add(xi * cin * nb),
                        1,
                        nb as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            // A^T m A per block, plus bias and ReLU, into the output rows of this band.
            let dst = out_ptr.get();
            for o in 0..cout {
                let b = bias.map_or(0.0, |b| b[o]);
                for by in by0..by1 {
                    for bx in 0..tx_n {
                        let t = (by - by0) * tx_n + bx;
                        let q = |xi: usize| m[(xi * cout + o) * nb + t];
                        // A^T m: rows 0 = m0+m1+m2, 1 = m1-m2-m3 (over the 4 columns).
                        let mut r = [[0f32; 4]; 2];
                        for j in 0..4 {
                            let (m0, m1, m2, m3) = (q(j), q(4 + j), q(8 + j), q(12 + j));
                            r[0][j] = m0 + m1 + m2;
                            r[1][j] = m1 - m2 - m3;
                        }
                        for (i, rr) in r.iter().enumerate() {
                            let y = 2 * by + i;
                            if y >= h {
                                continue;
                            }
                            let vals = [rr[0] + rr[1] + rr[2], rr[1] - rr[2] - rr[3]];
                            for (j, &val) in vals.iter().enumerate() {
                                let x = 2 * bx + j;
                                if x < w {
                                    let val = val + b;
                                    // SAFETY: each band writes only its own output rows.
                                    unsafe {
                                        *dst.add((o * h + y) * w + x) =
                                            if relu { val.max(0.0) } else { val };
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
    out
}
