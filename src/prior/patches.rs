//! Cutting feature maps into k x k patches and putting patch gradients back.
//!
//! Written with plain tensor ops (narrow, pad, reshape) so it runs on any candle device.
//! A patch vector is laid out channel-major: element `c * k*k + ky * k + kx`.

use candle_core::{Result, Tensor};

/// Number of patch positions along a side of length `n`.
pub fn positions(n: usize, k: usize, stride: usize) -> usize {
    if n < k {
        0
    } else {
        (n - k) / stride + 1
    }
}

/// Every `stride`-th element of dim `dim`, starting at 0, `count` of them.
fn subsample(x: &Tensor, dim: usize, stride: usize, count: usize) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, 0, count);
    }
    let len = x.dim(dim)?;
    let need = count * stride;
    let x = if len < need {
        x.pad_with_zeros(dim, 0, need - len)?
    } else {
        x.narrow(dim, 0, need)?
    };
    let mut shape = x.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, stride);
    x.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Inverse of `subsample`: places `x` at every `stride`-th position of a dim of length `len`.
fn upsample_zeros(x: &Tensor, dim: usize, stride: usize, len: usize) -> Result<Tensor> {
    let count = x.dim(dim)?;
    let spread = if stride == 1 {
        x.clone()
    } else {
        let x = x.unsqueeze(dim + 1)?.pad_with_zeros(dim + 1, 0, stride - 1)?;
        let mut shape = x.dims().to_vec();
        shape.remove(dim + 1);
        shape[dim] = count * stride;
        x.reshape(shape)?
    };
    let have = spread.dim(dim)?;
    if have >= len {
        spread.narrow(dim, 0, len)
    } else {
        spread.pad_with_zeros(dim, 0, len - have)
    }
}

/// `x` [C, H, W] -> patches [N, C*k*k], N = positions(H) * positions(W), row-major positions.
pub fn unfold(x: &Tensor, k: usize, stride: usize) -> Result<Tensor> {
    let (c, h, w) = x.dims3()?;
    let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
    if ph == 0 || pw == 0 {
        candle_core::bail!("feature map {h}x{w} is smaller than a {k}x{k} patch");
    }
    let mut taps = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            let v = x.narrow(1, ky, h - ky)?.narrow(2, kx, w - kx)?;
            let v = subsample(&v, 1, stride, ph)?;
            let v = subsample(&v, 2, stride, pw)?;
            taps.push(v.reshape((c, ph * pw))?);
        }
    }
    // [C, k*k, N] -> [N, C*k*k]
    Tensor::stack(&taps, 1)?
        .reshape((c * k * k, ph * pw))?
        .t()?
        .contiguous()
}

/// Adjoint of `unfold`: sums patch values [N, C*k*k] back onto a [C, H, W] map.
pub fn fold(patches: &Tensor, c: usize, h: usize, w: usize, k: usize, stride: usize) -> Result<Tensor> {
    let (ph, pw) = (positions(h, k, stride), positions(w, k, stride));
    let per_tap = patches.t()?.contiguous()?.reshape((c, k * k, ph, pw))?;
    let mut out: Option<Tensor> = None;
    for ky in 0..k {
        for kx in 0..k {
            let v = per_tap.narrow(1, ky * k + kx, 1)?.squeeze(1)?;
            let v = upsample_zeros(&v, 1, stride, h - ky)?;
            let v = upsample_zeros(&v, 2, stride, w - kx)?;
            let v = v.pad_with_zeros(1, ky, 0)?.pad_with_zeros(2, kx, 0)?;
            out = Some(match out {
                Some(o) => (o + v)?,
                None => v,
            });
        }
    }
    Ok(out.expect("k >= 1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn unfold_picks_the_right_values_and_fold_is_its_adjoint() -> Result<()> {
        let (c, h, w, k, s) = (2, 7, 6, 3, 2);
        let data: Vec<f32> = (0..c * h * w).map(|i| i as f32).collect();
        let x = Tensor::from_vec(data.clone(), (c, h, w), &Device::Cpu)?;
        let p = unfold(&x, k, s)?;
        assert_eq!(p.dims(), &[3 * 2, c * 9]);
        let pv: Vec<Vec<f32>> = p.to_vec2()?;
        // Patch at position (py=1, px=1) -> top-left (2, 2); element c=1, ky=2, kx=0.
        let row = 1 * 2 + 1;
        assert_eq!(pv[row][9 + 2 * 3], data[(1 * h + 4) * w + 2]);
        // <unfold(x), g> == <x, fold(g)>
        let g = Tensor::rand(0f32, 1f32, p.dims(), &Device::Cpu)?;
        let lhs = (p * &g)?.sum_all()?.to_scalar::<f32>()?;
        let rhs = (x * fold(&g, c, h, w, k, s)?)?.sum_all()?.to_scalar::<f32>()?;
        assert!((lhs - rhs).abs() < 1e-2 * lhs.abs(), "{lhs} vs {rhs}");
        Ok(())
    }
}
