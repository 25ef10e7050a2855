//! 3x3 convolution by Winograd's minimal filtering, F(2x2, 3x3) and F(4x4, 3x3).
//!
//! Each m x m block of outputs comes from an (m+2) x (m+2) block of input through (m+2)^2
//! elementwise products, so the convolution becomes (m+2)^2 matrix products of (out x in) by
//! (in x blocks): 2.25 (m = 2) or 4 (m = 4) times fewer multiply-adds than the direct method.
//! The transforms run over whole block rows, one lane per block, so they vectorise and stay
//! cheap next to the products from 64 channels up; VGG19's first layer (3 input channels) and
//! its gradient use other kernels (`conv.rs` chooses).
//!
//! Works on the same kind of zero-padded buffer as the direct kernel; bias and ReLU are fused
//! into the output transform.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ops::Range;

use rayon::prelude::*;

use crate::cpu::bf16_gemm::{self, PackedA};
use crate::cpu::simd;
use crate::cpu::SendPtr;

/// Layers with fewer input or output channels use another kernel (VGG19's first, with 3
/// inputs, and its gradient, with 3 outputs).
pub const MIN_CHANNELS: usize = 64;

/// The block size of a Winograd convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// F(2x2, 3x3): 16 products per 4 outputs, transforms with coefficients 0 and +-1.
    F2,
    /// F(4x4, 3x3): 36 products per 16 outputs; coefficients up to 8, so it rounds more than
    /// F2 (in the conv tests a shifted input's outputs differ by up to 2e-5 of the largest).
    F4,
}

impl Tile {
    /// Outputs per block side.
    pub const fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input (and transformed) block side, m + 2.
    pub const fn alpha(self) -> usize {
        self.m() + 2
    }

    /// The filter transform G (alpha x 3).
    fn g(self) -> &'static [[f64; 3]] {
        const F2: [[f64; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        const F4: [[f64; 3]; 6] = [
            [0.25, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ];
        match self {
            Tile::F2 => &F2,
            Tile::F4 => &F4,
        }
    }

    /// Padded input size for an h x w output: one pixel of padding on each side, and whole
    /// blocks (zeros beyond the image).
    pub fn padded_dims(self, h: usize, w: usize) -> (usize, usize) {
        let m = self.m();
        (m * h.div_ceil(m) + 2, m * w.div_ceil(m) + 2)
    }
}

/// Transformed weights U[alpha^2][cout][cin] = G g G^T for tap-major weights `taps`
/// [9][cout][cin].
pub(super) fn transform_weights(tile: Tile, taps: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let a = tile.alpha();
    let g_mat = tile.g();
    let per = cout * cin;
    let mut u = vec![0f32; a * a * per];
    // Per output channel in parallel: its alpha^2 rows of cin values.
    let rows: Vec<(usize, Vec<f32>)> = (0..cout)
        .into_par_iter()
        .map(|o| {
            let mut out = vec![0f32; a * a * cin];
            for c in 0..cin {
                let g = |ky: usize, kx: usize| taps[((ky * 3 + kx) * cout + o) * cin + c] as f64;
                for i in 0..a {
                    // t = (G g)[i], then t G^T.
                    let t: [f64; 3] = std::array::from_fn(|kx| {
                        (0..3).map(|ky| g_mat[i][ky] * g(ky, kx)).sum::<f64>()
                    });
                    for j in 0..a {
                        let v: f64 = (0..3).map(|kx| t[kx] * g_mat[j][kx]).sum();
                        out[(i * a + j) * cin + c] = v as f32;
                    }
                }
            }
            (o, out)
        })
        .collect();
    for (o, out) in rows {
        for xi in 0..a * a {
            u[xi * per + o * cin..xi * per + (o + 1) * cin]
                .copy_from_slice(&out[xi * cin..(xi + 1) * cin]);
        }
    }
    u
}

/// `y[k] = f(a[k], b[k], ...)` over the lanes of `y` (one lane per block).
macro_rules! lanes {
    ($y:expr, |$($v:ident),+| $body:expr, $($x:expr),+) => {{
        let y: &mut [f32] = $y;
        let n = y.len();
        $(let $v = &$x[..n];)+
        for k in 0..n {
            $(let $v = $v[k];)+
            y[k] = $body;
        }
    }};
}

/// Row `i` of B^T applied across `x` (alpha input rows or columns, one lane per block).
#[inline(always)]
fn input_row(tile: Tile, i: usize, x: &[&[f32]], y: &mut [f32]) {
    match (tile, i) {
        (Tile::F2, 0) => lanes!(y, |a, b| a - b, x[0], x[2]),
        (Tile::F2, 1) => lanes!(y, |a, b| a + b, x[1], x[2]),
        (Tile::F2, 2) => lanes!(y, |a, b| b - a, x[1], x[2]),
        (Tile::F2, _) => lanes!(y, |a, b| a - b, x[1], x[3]),
        (Tile::F4, 0) => lanes!(y, |a, b, c| 4.0 * a - 5.0 * b + c, x[0], x[2], x[4]),
        (Tile::F4, 1) => lanes!(
            y,
            |a, b, c, d| c + d - 4.0 * (a + b),
            x[1],
            x[2],
            x[3],
            x[4]
        ),
        (Tile::F4, 2) => lanes!(
            y,
            |a, b, c, d| d - c + 4.0 * (a - b),
            x[1],
            x[2],
            x[3],
            x[4]
        ),
        (Tile::F4, 3) => lanes!(
            y,
            |a, b, c, d| d - b + 2.0 * (c - a),
            x[1],
            x[2],
            x[3],
            x[4]
        ),
        (Tile::F4, 4) => lanes!(
            y,
            |a, b, c, d| d - b + 2.0 * (a - c),
            x[1],
            x[2],
            x[3],
            x[4]
        ),
        (Tile::F4, _) => lanes!(y, |a, b, c| 4.0 * a - 5.0 * b + c, x[1], x[3], x[5]),
    }
}

/// Row `k` of A^T applied across `x` (alpha transformed rows or columns).
#[inline(always)]
fn output_row(tile: Tile, k: usize, x: &[&[f32]], y: &mut [f32]) {
    match (tile, k) {
        (Tile::F2, 0) => lanes!(y, |a, b, c| a + b + c, x[0], x[1], x[2]),
        (Tile::F2, _) => lanes!(y, |a, b, c| a - b - c, x[1], x[2], x[3]),
        (Tile::F4, 0) => lanes!(
            y,
            |a, b, c, d, e| a + (b + c) + (d + e),
            x[0],
            x[1],
            x[2],
            x[3],
            x[4]
        ),
        (Tile::F4, 1) => lanes!(
            y,
            |a, b, c, d| (a - b) + 2.0 * (c - d),
            x[1],
            x[2],
            x[3],
            x[4]
        ),
        (Tile::F4, 2) => lanes!(
            y,
            |a, b, c, d| (a + b) + 4.0 * (c + d),
            x[1],
            x[2],
            x[3],
            x[4]
        ),
        (Tile::F4, _) => lanes!(
            y,
            |a, b, c, d, e| (a - b) + 8.0 * (c - d) + e,
            x[1],
            x[2],
            x[3],
            x[4],
            x[5]
        ),
    }
}

/// Transformed input and products of a band.
type Scratch = (Vec<f32>, Vec<f32>);

thread_local! {
    /// The transformed input and the products of a band, kept between calls: allocating and
    /// faulting in tens of megabytes per layer cost more than some of the transforms.
    static SCRATCH: RefCell<Scratch> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Floats of transformed input plus products in a band of the band-after-band path (small
/// maps).
const BAND_FLOATS: usize = 1 << 22;

/// Convolution with transformed weights `u` ([`transform_weights`]) of a padded image `padded`
/// [cin][hp][wp] (one pixel of padding on every side and zeros beyond, at least
/// [`Tile::padded_dims`]) into [cout][h][w].
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_winograd(
    tile: Tile,
    padded: &[f32],
    hp: usize,
    wp: usize,
    cin: usize,
    h: usize,
    w: usize,
    u: Weights,
    cout: usize,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (m, a) = (tile.m(), tile.alpha());
    let aa = a * a;
    let (ty_n, tx_n) = (h.div_ceil(m), w.div_ceil(m));
    // Both sides: a tuple comparison would be lexicographic (a taller buffer would pass with
    // too short rows).
    let (hp_min, wp_min) = tile.padded_dims(h, w);
    assert!(
        hp >= hp_min && wp >= wp_min && padded.len() >= cin * hp * wp,
        "winograd: padded input too small"
    );
    if cout * h * w == 0 {
        return Vec::new();
    }

    // Not zeroed: the output transform writes every value (through `MaybeUninit` slices).
    let mut out: Vec<f32> = Vec::with_capacity(cout * h * w);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let plan = BandPlan::new(aa, cin, cout, ty_n, tx_n, rayon::current_num_threads());
    let band = |bufs: &mut Scratch, by: Range<usize>, bx: Range<usize>, par: bool| {
        let nb = by.len() * bx.len();
        let (v_buf, m_buf) = bufs;
        for (buf, len) in [(&mut *v_buf, aa * cin * nb), (&mut *m_buf, aa * cout * nb)] {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        let v = &mut v_buf[..aa * cin * nb];
        input_transform(tile, padded, hp, wp, cin, by.clone(), bx.clone(), v, par);
        let mm = &mut m_buf[..aa * cout * nb];
        products(u, v, mm, aa, cout, cin, nb, par);
        output_transform(tile, mm, cout, by, bx, h, w, bias, relu, out_ptr, par);
    };
    let with_scratch = |f: &mut dyn FnMut(&mut Scratch)| {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut bufs) => f(&mut bufs),
            // A convolution started on this thread while another waits in its parallel phases
            // (rayon lets a waiting worker take other work): it gets buffers of its own.
            Err(_) => f(&mut Default::default()),
        })
    };
    if plan.parallel_bands {
        plan.bands()
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(|(by, bx)| {
                with_scratch(&mut |bufs| band(bufs, by.clone(), bx.clone(), false))
            });
    } else {
        with_scratch(&mut |bufs| {
            for (by, bx) in plan.bands() {
                band(bufs, by, bx, true);
            }
        });
    }
    // SAFETY: the capacity is cout * h * w, and the output transform wrote every one of those
    // values: the bands cover every block, and each block row writes its m rows (but none at
    // h or past it) over columns m * bx.start..min(m * bx.end, w) of every channel.
    unsafe { out.set_len(cout * h * w) };
    out
}

/// How a convolution is cut into bands of blocks (a range of block rows by a range of block
/// columns). Where the map is large enough, each core takes whole bands of about 2 MB of
/// transformed input and products (the best of 0.5 to 16 MB measured: the transforms are
/// memory-bound, the products want wide matrices); small maps go band after band, each phase
/// split over the cores, so the products stay large.
struct BandPlan {
    ty_n: usize,
    tx_n: usize,
    rows: usize,
    cols: usize,
    parallel_bands: bool,
}

/// Floats of transformed input plus products in a band that one core works on alone.
const CORE_BAND_FLOATS: usize = 1 << 19;
/// Fewest blocks in such a band: fewer make products too thin to run at speed.
const MIN_CORE_BAND_BLOCKS: usize = 48;

impl BandPlan {
    /// The plan for `threads` cores (`rayon::current_num_threads()`), for ty_n x tx_n blocks
    /// (both at least 1).
    fn new(aa: usize, cin: usize, cout: usize, ty_n: usize, tx_n: usize, threads: usize) -> Self {
        let threads = threads.max(1);
        let per_block = (aa * (cin + cout)).max(1);
        let blocks = (CORE_BAND_FLOATS / per_block).max(1);
        let (rows, cols) = if blocks >= tx_n {
            ((blocks / tx_n).min(ty_n), tx_n)
        } else {
            (1, blocks)
        };
        let n_bands = ty_n.div_ceil(rows) * tx_n.div_ceil(cols);
        if blocks >= MIN_CORE_BAND_BLOCKS && n_bands >= 2 * threads {
            return Self {
                ty_n,
                tx_n,
                rows,
                cols,
                parallel_bands: true,
            };
        }
        let rows = (BAND_FLOATS / (per_block * tx_n)).clamp(1, ty_n);
        Self {
            ty_n,
            tx_n,
            rows,
            cols: tx_n,
            parallel_bands: false,
        }
    }

    fn bands(&self) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
        (0..self.ty_n).step_by(self.rows).flat_map(move |by0| {
            (0..self.tx_n).step_by(self.cols).map(move |bx0| {
                (
                    by0..(by0 + self.rows).min(self.ty_n),
                    bx0..(bx0 + self.cols).min(self.tx_n),
                )
            })
        })
    }
}

/// `f(i)` for i in 0..n, split over the cores when `par`.
fn for_each_maybe_par<S: Send>(
    n: usize,
    par: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize) + Sync + Send,
) {
    if par {
        (0..n).into_par_iter().for_each_init(init, f);
    } else {
        let mut state = init();
        (0..n).for_each(|i| f(&mut state, i));
    }
}

/// V[alpha^2][cin][nb] = B^T d B of every input block of the band `bys` x `bxs` (nb blocks,
/// row-major). Each input row is split by pixel phase (x mod m) so that the horizontal
/// transform runs over contiguous arrays (one lane per block).
#[allow(clippy::too_many_arguments)]
fn input_transform(
    tile: Tile,
    padded: &[f32],
    hp: usize,
    wp: usize,
    cin: usize,
    bys: Range<usize>,
    bxs: Range<usize>,
    v: &mut [f32],
    par: bool,
) {
    let (m, a) = (tile.m(), tile.alpha());
    let n = bxs.len();
    let nb = bys.len() * n;
    let v_ptr = SendPtr(v.as_mut_ptr());
    for_each_maybe_par(
        cin,
        par,
        || (vec![0f32; m * (n + 1)], vec![0f32; a * a * n]),
        |(phases, hrow), c| {
            simd::wide(
                #[inline(always)]
                |level| {
                    let src = &padded[c * hp * wp..(c + 1) * hp * wp];
                    for by in bys.clone() {
                        for r in 0..a {
                            let at = (m * by + r) * wp + m * bxs.start;
                            let row = &src[at..at + m * n + 2];
                            // Phases 0 and 1 take one more lane: the band's last two columns.
                            simd::split_phases(level, row, m, n, phases, n + 1);
                            // Column k of block b is phase k at lane b for k < m, else phase k - m at
                            // lane b + 1.
                            let phase = |k: usize| {
                                let (q, shift) = if k < m { (k, 0) } else { (k - m, 1) };
                                &phases[q * (n + 1) + shift..q * (n + 1) + shift + n]
                            };
                            let x: [&[f32]; 6] = std::array::from_fn(|k| phase(k.min(a - 1)));
                            for j in 0..a {
                                input_row(
                                    tile,
                                    j,
                                    &x[..a],
                                    &mut hrow[(r * a + j) * n..(r * a + j + 1) * n],
                                );
                            }
                        }
                        // B^T over the rows, straight into V.
                        let t0 = (by - bys.start) * n;
                        for j in 0..a {
                            let x: [&[f32]; 6] = std::array::from_fn(|r| {
                                let r = r.min(a - 1);
                                &hrow[(r * a + j) * n..(r * a + j + 1) * n]
                            });
                            for i in 0..a {
                                let at = ((i * a + j) * cin + c) * nb + t0;
                                // SAFETY: channel c owns V[..][c][..]; the slices of different
                                // channels are disjoint and inside `v`.
                                let dst = unsafe {
                                    std::slice::from_raw_parts_mut(v_ptr.get().add(at), n)
                                };
                                input_row(tile, i, &x[..a], dst);
                            }
                        }
                    }
                },
            )
        },
    );
}

/// The transformed weights of a layer, as the products take them.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    /// U[alpha^2][cout][cin], f32.
    F32(&'a [f32]),
    /// One packed bf16 matrix per xi ([`crate::cpu::bf16_gemm`]).
    Bf16(&'a [PackedA]),
}

/// U[xi] packed for the bf16 products.
pub(super) fn pack_bf16(u: &[f32], aa: usize, cout: usize, cin: usize) -> Vec<PackedA> {
    (0..aa)
        .into_par_iter()
        .map(|xi| PackedA::new(&u[xi * cout * cin..(xi + 1) * cout * cin], cout, cin))
        .collect()
}

/// M[xi] = U[xi] V[xi] for every xi, split over xi when `par`.
#[allow(clippy::too_many_arguments)]
fn products(
    u: Weights,
    v: &[f32],
    mm: &mut [f32],
    aa: usize,
    cout: usize,
    cin: usize,
    nb: usize,
    par: bool,
) {
    let mm_ptr = SendPtr(mm.as_mut_ptr());
    assert!(v.len() >= aa * cin * nb && mm.len() >= aa * cout * nb);
    match u {
        Weights::F32(u) => {
            assert!(u.len() >= aa * cout * cin);
            for_each_maybe_par(
                aa,
                par,
                || (),
                |_, xi| {
                    // SAFETY: the three matrices are row-major and in bounds (checked above);
                    // each xi writes its own M[xi].
                    unsafe {
                        crate::cpu::ops::gemm_rowmajor(
                            cout,
                            nb,
                            cin,
                            mm_ptr.get().add(xi * cout * nb),
                            nb,
                            u.as_ptr().add(xi * cout * cin),
                            cin,
                            v.as_ptr().add(xi * cin * nb),
                            nb,
                        );
                    }
                },
            );
        }
        Weights::Bf16(u) => {
            assert!(u.len() >= aa && u.iter().all(|p| (p.rows(), p.depth()) == (cout, cin)));
            for_each_maybe_par(aa, par, Vec::new, |pack, xi| {
                // SAFETY: each xi writes its own M[xi], inside `mm` (checked above).
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(mm_ptr.get().add(xi * cout * nb), cout * nb)
                };
                let rhs = &v[xi * cin * nb..(xi + 1) * cin * nb];
                bf16_gemm::gemm(&u[xi], rhs, nb, nb, dst, nb, pack);
            });
        }
    }
}

/// A^T m A per block of the band `bys` x `bxs`, plus bias and ReLU, into the output; again one
/// lane per block, the m output columns of a block interleaved at the end.
#[allow(clippy::too_many_arguments)]
fn output_transform(
    tile: Tile,
    mm: &[f32],
    cout: usize,
    bys: Range<usize>,
    bxs: Range<usize>,
    h: usize,
    w: usize,
    bias: Option<&[f32]>,
    relu: bool,
    out: SendPtr,
    par: bool,
) {
    let (m, a) = (tile.m(), tile.alpha());
    let n = bxs.len();
    let nb = bys.len() * n;
    let x0 = m * bxs.start;
    let x1 = (m * bxs.end).min(w);
    for_each_maybe_par(
        cout,
        par,
        || (vec![0f32; m * a * n], vec![0f32; m * n]),
        |(r, cols), o| {
            simd::wide(
                #[inline(always)]
                |level| {
                    let bias_o = bias.map_or(0.0, |b| b[o]);
                    for by in bys.clone() {
                        let t0 = (by - bys.start) * n;
                        let q = |xi: usize| {
                            &mm[(xi * cout + o) * nb + t0..(xi * cout + o) * nb + t0 + n]
                        };
                        for j in 0..a {
                            let x: [&[f32]; 6] = std::array::from_fn(|i| q(i.min(a - 1) * a + j));
                            for k in 0..m {
                                output_row(
                                    tile,
                                    k,
                                    &x[..a],
                                    &mut r[(k * a + j) * n..(k * a + j + 1) * n],
                                );
                            }
                        }
                        for k in 0..m {
                            let y = m * by + k;
                            if y >= h {
                                break;
                            }
                            let x: [&[f32]; 6] = std::array::from_fn(|j| {
                                let j = j.min(a - 1);
                                &r[(k * a + j) * n..(k * a + j + 1) * n]
                            });
                            for l in 0..m {
                                output_row(tile, l, &x[..a], &mut cols[l * n..(l + 1) * n]);
                            }
                            // SAFETY: each (channel, row, column range) is written by one band and one
                            // channel only, inside the output's capacity of cout * h * w (y < h,
                            // x0 < x1 <= w). The memory is not initialised yet: the slice is of
                            // `MaybeUninit`, which `merge_phases` writes whole.
                            let row = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out.get()
                                        .add((o * h + y) * w + x0)
                                        .cast::<MaybeUninit<f32>>(),
                                    x1 - x0,
                                )
                            };
                            simd::merge_phases(level, cols, m, n, row, bias_o, relu);
                        }
                    }
                },
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How [`conv3x3_winograd`] splits a convolution on the current rayon pool.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Path {
        /// Band after band of whole block rows, each phase split over the cores.
        Sequential { bands: usize },
        /// Whole bands of whole block rows, one per core at a time.
        ParallelRows { bands: usize },
        /// Whole bands, each a run of blocks of one block row, one per core at a time.
        ParallelColumns { bands: usize },
    }

    fn path(tile: Tile, cin: usize, cout: usize, h: usize, w: usize) -> Path {
        let m = tile.m();
        let (ty_n, tx_n) = (h.div_ceil(m), w.div_ceil(m));
        let aa = tile.alpha() * tile.alpha();
        let plan = BandPlan::new(aa, cin, cout, ty_n, tx_n, rayon::current_num_threads());
        let bands = plan.bands().count();
        match (plan.parallel_bands, plan.cols < tx_n) {
            (false, split) => {
                assert!(!split, "the sequential path takes whole block rows");
                Path::Sequential { bands }
            }
            (true, false) => Path::ParallelRows { bands },
            (true, true) => Path::ParallelColumns { bands },
        }
    }

    use crate::vgg::test_values as pseudo;

    /// Zero-padded 3x3 convolution of x [cin][h][w] by wt [cout][cin][3][3], in f64.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        x: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        wt: &[f32],
        bias: &[f32],
        cout: usize,
        relu: bool,
    ) -> Vec<f32> {
        let mut out = vec![0f32; cout * h * w];
        for o in 0..cout {
            for y in 0..h {
                for xx in 0..w {
                    let mut acc = bias[o] as f64;
                    for c in 0..cin {
                        for ky in 0..3 {
                            let Some(sy) = (y + ky).checked_sub(1).filter(|&sy| sy < h) else {
                                continue;
                            };
                            for kx in 0..3 {
                                let Some(sx) = (xx + kx).checked_sub(1).filter(|&sx| sx < w) else {
                                    continue;
                                };
                                acc += wt[((o * cin + c) * 3 + ky) * 3 + kx] as f64
                                    * x[(c * h + sy) * w + sx] as f64;
                            }
                        }
                    }
                    out[(o * h + y) * w + xx] = if relu { acc.max(0.0) } else { acc } as f32;
                }
            }
        }
        out
    }

    /// The Winograd convolution against [`direct`]; returns the largest error relative to the
    /// largest output.
    fn max_error(tile: Tile, cin: usize, cout: usize, h: usize, w: usize, relu: bool) -> f32 {
        let x = pseudo(cin * h * w, 21);
        let wt = pseudo(cout * cin * 9, 22);
        let bias = pseudo(cout, 23);
        let mut taps = vec![0f32; 9 * cout * cin];
        for o in 0..cout {
            for c in 0..cin {
                for k in 0..9 {
                    taps[(k * cout + o) * cin + c] = wt[(o * cin + c) * 9 + k];
                }
            }
        }
        let u = transform_weights(tile, &taps, cout, cin);
        // A buffer larger than needed on both sides (its rows are longer than the blocks').
        let (hp, wp) = tile.padded_dims(h, w);
        let (hp, wp) = (hp + 1, wp + 3);
        let mut padded = vec![0f32; cin * hp * wp];
        for c in 0..cin {
            for y in 0..h {
                padded[(c * hp + y + 1) * wp + 1..][..w]
                    .copy_from_slice(&x[(c * h + y) * w..][..w]);
            }
        }
        let got = conv3x3_winograd(
            tile,
            &padded,
            hp,
            wp,
            cin,
            h,
            w,
            Weights::F32(&u),
            cout,
            Some(&bias),
            relu,
        );
        let want = direct(&x, cin, h, w, &wt, &bias, cout, relu);
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs())).max(1e-3);
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |a, (g, e)| a.max((g - e).abs()));
        err / scale
    }

    /// Every way of cutting a convolution into bands (on a pool of two threads, so that the
    /// thresholds do not depend on the machine), at both tile sizes, on sides that are not
    /// whole blocks, against a direct convolution.
    #[test]
    fn every_band_path_matches_direct_convolution() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        // (tile, cin, cout, h, w, the path): few input channels keep the reference cheap; the
        // output channels set the floats per block and so the band sizes.
        let cases = [
            (Tile::F2, 16, 24, 13, 11, Path::Sequential { bands: 1 }),
            (Tile::F4, 16, 24, 13, 11, Path::Sequential { bands: 1 }),
            (Tile::F2, 2, 700, 41, 39, Path::Sequential { bands: 2 }),
            (Tile::F4, 2, 310, 81, 79, Path::Sequential { bands: 2 }),
            (Tile::F2, 4, 60, 63, 127, Path::ParallelRows { bands: 4 }),
            (Tile::F4, 4, 60, 61, 250, Path::ParallelRows { bands: 6 }),
            (Tile::F2, 2, 630, 5, 107, Path::ParallelColumns { bands: 6 }),
            (Tile::F4, 2, 286, 7, 207, Path::ParallelColumns { bands: 4 }),
        ];
        pool.install(|| {
            for (i, &(tile, cin, cout, h, w, want)) in cases.iter().enumerate() {
                assert_eq!(
                    path(tile, cin, cout, h, w),
                    want,
                    "{tile:?} {cin}->{cout} {h}x{w}"
                );
                // F4's transforms have coefficients up to 8: it rounds more than F2 (measured
                // up to 1.9e-7 and 2.9e-6 of the largest output; a block out of place costs
                // its whole value).
                let tol = match tile {
                    Tile::F2 => 1e-6,
                    Tile::F4 => 1e-5,
                };
                let err = max_error(tile, cin, cout, h, w, i % 2 == 1);
                assert!(
                    err < tol,
                    "{tile:?} {cin}->{cout} {h}x{w} ({want:?}): error {err:e} of the largest output"
                );
            }
        });
    }

    /// A buffer taller than needed does not make up for rows too short.
    #[test]
    #[should_panic(expected = "padded input too small")]
    fn short_rows_are_refused() {
        let (tile, cin, cout, h, w) = (Tile::F2, 1, 1, 4, 8);
        let (hp, wp) = tile.padded_dims(h, w);
        let (hp, wp) = (hp + 4, wp - 1);
        let u = transform_weights(tile, &[0.0; 9], cout, cin);
        let padded = vec![0f32; cin * hp * wp];
        assert!(padded.len() >= cin * (h + 2) * (w + 2));
        conv3x3_winograd(
            tile,
            &padded,
            hp,
            wp,
            cin,
            h,
            w,
            Weights::F32(&u),
            cout,
            None,
            false,
        );
    }
}
