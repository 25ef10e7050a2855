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
        let (n, c, hp, wp) = xp.dims4()?;
        let (o, h, wd) = (g.dim(1)?, hp - 2, wp - 2);
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
        // Weights: per tap, G [O, N*H*W] times the shifted input [N*H*W, C].
        let g2 = g.transpose(0, 1)?.reshape((o, n * h * wd))?;
        let mut taps = Vec::with_capacity(9);
        for ky in 0..3 {
            for kx in 0..3 {
                let xs = xp
                    .narrow(2, ky, h)?
                    .narrow(3, kx, wd)?
                    .transpose(0, 1)?
                    .reshape((c, n * h * wd))?;
                taps.push(g2.matmul(&xs.t()?)?); // [O, C]
            }
        }
        let gw = Tensor::stack(&taps, 2)?.reshape((o, c, 3, 3))?;
        Ok((Some(gx), Some(gw)))
    }
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
