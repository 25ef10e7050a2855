//! The generator's 3x3 convolution on the CPU: the engine's own kernel in both directions.
//!
//! candle's `conv2d` backward takes the input gradient with `conv_transpose2d`, whose CPU code
//! is a plain loop (a dot product per pixel, tap and channel); for the generator's thin layers
//! at full size it cost more than the VGG loss. Here the input gradient is the engine's
//! transposed 3x3 kernel and the weight gradient nine GEMMs.

use candle_core::{CpuStorage, CustomOp2, Device, Layout, Result, Shape, Tensor};

use crate::cpu::ops::contiguous_f32;
use crate::vgg::conv::Conv3x3;

/// Valid (unpadded) 3x3 convolution of an already padded input [N, C, H+2, W+2] with weights
/// [O, C, 3, 3]: output [N, O, H, W]. No bias (added outside, where autograd sees it).
pub(super) struct ValidConv3x3;

fn tensor(storage: &CpuStorage, layout: &Layout) -> Result<Tensor> {
    let data = contiguous_f32(storage, layout, "generator conv")?;
    Tensor::from_slice(data, layout.shape(), &Device::Cpu)
}

/// The kernel for `w` with a zero bias.
fn kernel(w: &Tensor) -> Result<Conv3x3> {
    let cout = w.dim(0)?;
    Conv3x3::new(w, &Tensor::zeros(cout, w.dtype(), w.device())?, w.device())
}

/// Same-size convolution of each image, then the interior: the valid convolution.
fn valid(xp: &Tensor, w: &Tensor) -> Result<Tensor> {
    let conv = kernel(w)?;
    let (n, _, hp, wp) = xp.dims4()?;
    let outs = (0..n)
        .map(|i| {
            conv.forward(&xp.narrow(0, i, 1)?.contiguous()?, false)?
                .narrow(2, 1, hp - 2)?
                .narrow(3, 1, wp - 2)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&outs, 0)
}

impl CustomOp2 for ValidConv3x3 {
    fn name(&self) -> &'static str {
        "generator-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = valid(&tensor(s1, l1)?, &tensor(s2, l2)?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1()?), shape))
    }

    fn bwd(
        &self,
        xp: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = xp.dim(0)?;
        let g = g.contiguous()?;
        // Input: the same-size convolution's input gradient of g zero-padded to the padded
        // size; outputs on the border were never made, so they carry no gradient.
        let conv = kernel(w)?;
        let gx = (0..n)
            .map(|i| {
                let gi = g
                    .narrow(0, i, 1)?
                    .pad_with_zeros(2, 1, 1)?
                    .pad_with_zeros(3, 1, 1)?;
                conv.backward_input(&gi, false)
            })
            .collect::<Result<Vec<_>>>()?;
        let gx = Tensor::cat(&gx, 0)?;
        let gw = weight_gradient(&xp.contiguous()?, &g, w.dims4()?)?;
        Ok((Some(gx), Some(gw)))
    }
}

/// dL/dw [O, C, 3, 3] = sum over images of G_i [O, H*W] times col_i^T, where col_i [C*9, H*W]
/// holds image i's padded input shifted by each tap (rows copied whole, in parallel): one GEMM
/// per image instead of a strided copy and a GEMM per tap.
fn weight_gradient(xp: &Tensor, g: &Tensor, wdims: (usize, usize, usize, usize)) -> Result<Tensor> {
    use rayon::prelude::*;
    let (n, c, hp, wp) = xp.dims4()?;
    let (o, h, w) = (wdims.0, hp - 2, wp - 2);
    let hw = h * w;
    let xs = xp.flatten_all()?.to_vec1::<f32>()?;
    let mut gw: Option<Tensor> = None;
    for i in 0..n {
        let image = &xs[i * c * hp * wp..(i + 1) * c * hp * wp];
        let mut col = vec![0f32; c * 9 * hw];
        col.par_chunks_mut(hw).enumerate().for_each(|(r, row)| {
            let (ci, ky, kx) = (r / 9, r % 9 / 3, r % 3);
            let plane = &image[ci * hp * wp..(ci + 1) * hp * wp];
            for y in 0..h {
                let from = (y + ky) * wp + kx;
                row[y * w..(y + 1) * w].copy_from_slice(&plane[from..from + w]);
            }
        });
        let col = Tensor::from_vec(col, (c * 9, hw), xp.device())?;
        let gi = g.narrow(0, i, 1)?.reshape((o, hw))?;
        let part = gi.matmul(&col.t()?)?;
        gw = Some(match gw {
            Some(acc) => (acc + part)?,
            None => part,
        });
    }
    let gw = gw.ok_or_else(|| candle_core::Error::Msg("an empty batch".into()))?;
    gw.reshape((o, c, 3, 3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedforward::generator::max_abs_diff;

    /// Gradients of sum(conv(x) * r) for input and weights: ours against candle's conv2d.
    #[test]
    fn matches_candles_convolution_and_its_gradients() {
        let dev = Device::Cpu;
        let noise = |n: usize, seed: u64| -> Vec<f32> {
            crate::feedforward::generator::normal_noise(n, seed)
        };
        for (n, c, o, h, w) in [(2, 5, 3, 9, 11), (1, 3, 8, 16, 7)] {
            let x = candle_core::Var::from_vec(
                noise(n * c * (h + 2) * (w + 2), 1),
                (n, c, h + 2, w + 2),
                &dev,
            )
            .unwrap();
            let k = candle_core::Var::from_vec(noise(o * c * 9, 2), (o, c, 3, 3), &dev).unwrap();
            let r = Tensor::from_vec(noise(n * o * h * w, 3), (n, o, h, w), &dev).unwrap();
            let ours = x
                .as_tensor()
                .apply_op2(k.as_tensor(), ValidConv3x3)
                .unwrap();
            let theirs = x.as_tensor().conv2d(k.as_tensor(), 0, 1, 1, 1).unwrap();
            assert!(max_abs_diff(&ours, &theirs) < 1e-4);
            let ga = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (theirs * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &k] {
                let a = ga.get(v.as_tensor()).unwrap();
                let b = gb.get(v.as_tensor()).unwrap();
                let scale = max_abs_diff(b, &b.zeros_like().unwrap()).max(1.0);
                let d = max_abs_diff(a, b);
                assert!(d < 1e-4 * scale, "{:?}: {d} of {scale}", v.dims());
            }
        }
    }
}
