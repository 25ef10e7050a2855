//! 3x3 convolutions with few input channels: VGG19's first layer (3 -> 64). As nine GEMMs with
//! an inner dimension of 3 it runs far below speed; here the 9 * cin shifted copies of the input
//! are stacked (im2col, a band of rows at a time), and one GEMM of (out x 9 in) by (9 in x
//! pixels) does the rest. (Its input gradient, 64 -> 3, was tried the other way round, one GEMM
//! giving every tap's products and then per-tap sums: no faster than the direct kernel, 0.88x to
//! 1.15x over two runs, so it stays direct.)
//!
//! Reads the padded input of the direct kernel (one pixel of padding, rows of w + 2).

use rayon::prelude::*;

use crate::cpu::SendPtr;

/// Output pixels per band (one band per task).
const BAND_PIXELS: usize = 8192;

/// Bands of whole output rows, at least one row each.
fn bands(h: usize, w: usize) -> Vec<(usize, usize)> {
    let rows = (BAND_PIXELS / w.max(1)).clamp(1, h.max(1));
    (0..h)
        .step_by(rows)
        .map(|y0| (y0, (y0 + rows).min(h)))
        .collect()
}

/// `relu(bias + x)` over a band of one output channel.
fn finish(dst: &mut [f32], bias: f32, relu: bool) {
    for v in dst {
        let x = *v + bias;
        *v = if relu { x.max(0.0) } else { x };
    }
}

/// Convolution of `padded` [cin][h + 2][w + 2] with tap-major weights `taps` [9][cout][cin]
/// through im2col, into [cout][h][w].
#[allow(clippy::too_many_arguments)]
pub fn conv_im2col(
    padded: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    taps: &[f32],
    cout: usize,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let (hp, wp) = (h + 2, w + 2);
    assert!(padded.len() >= cin * hp * wp && taps.len() >= 9 * cout * cin);
    let k = 9 * cin;
    // A[o][c * 9 + tap]: the rows of the stacked copies below.
    let mut a = vec![0f32; cout * k];
    for tap in 0..9 {
        for o in 0..cout {
            for c in 0..cin {
                a[o * k + c * 9 + tap] = taps[(tap * cout + o) * cin + c];
            }
        }
    }
    // Every value is written by one band's product below, so the output is not zeroed first.
    let mut out = Vec::with_capacity(cout * h * w);
    let out_ptr = SendPtr(out.as_mut_ptr());
    bands(h, w).into_par_iter().for_each(|(y0, y1)| {
        let n = (y1 - y0) * w;
        let mut col = vec![0f32; k * n];
        for c in 0..cin {
            for tap in 0..9 {
                let (ky, kx) = (tap / 3, tap % 3);
                let dst = &mut col[(c * 9 + tap) * n..(c * 9 + tap + 1) * n];
                for y in y0..y1 {
                    let src = &padded[(c * hp + y + ky) * wp + kx..][..w];
                    dst[(y - y0) * w..(y - y0 + 1) * w].copy_from_slice(src);
                }
            }
        }
        // SAFETY: A is cout x k, col k x n, and the band's columns y0*w.. of every output
        // channel (row stride h*w) belong to this band only.
        unsafe {
            let c = out_ptr.get().add(y0 * w);
            crate::cpu::ops::gemm_rowmajor(cout, n, k, c, h * w, a.as_ptr(), k, col.as_ptr(), n);
            for o in 0..cout {
                let dst = std::slice::from_raw_parts_mut(c.add(o * h * w), n);
                finish(dst, bias.map_or(0.0, |b| b[o]), relu);
            }
        }
    });
    // SAFETY: the bands cover every output row of every channel, and each band's product
    // wrote all of its values.
    unsafe { out.set_len(cout * h * w) };
    out
}
