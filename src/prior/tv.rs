//! Total variation on the image: squared differences of neighbouring pixels.

use candle_core::{Result, Tensor};

/// Loss and gradient of `weight / 2 * sum((dx)^2 + (dy)^2)` for `x` [1, 3, H, W]: the gradient is
/// `weight` times the differences, as neural-style's and CNNMRF's TVLoss modules return, so a
/// weight means what it means there. With `wrap`, the image is treated as a torus (seamless tiles).
pub fn tv_loss_and_grad(x: &Tensor, weight: f64, wrap: bool) -> Result<(f64, Tensor)> {
    let mut loss = 0.0;
    let mut grad = x.zeros_like()?;
    for dim in [2usize, 3] {
        let n = x.dim(dim)?;
        if n < 2 {
            continue;
        }
        if wrap {
            // d_i = x_{i+1 mod n} - x_i
            let shifted = Tensor::cat(&[x.narrow(dim, 1, n - 1)?, x.narrow(dim, 0, 1)?], dim)?;
            let d = (shifted - x)?;
            loss += super::sum_sq_f64(&d)?;
            // dL/dx_i = w (d_{i-1} - d_i)
            let d_prev = Tensor::cat(&[d.narrow(dim, n - 1, 1)?, d.narrow(dim, 0, n - 1)?], dim)?;
            grad = (grad + (d_prev - &d)?.affine(weight, 0.0)?)?;
        } else {
            let d = (x.narrow(dim, 1, n - 1)? - x.narrow(dim, 0, n - 1)?)?;
            loss += super::sum_sq_f64(&d)?;
            let into_next = d.pad_with_zeros(dim, 1, 0)?; // d_{i-1} at i
            let into_self = d.pad_with_zeros(dim, 0, 1)?; // d_i at i
            grad = (grad + (into_next - into_self)?.affine(weight, 0.0)?)?;
        }
    }
    Ok((0.5 * weight * loss, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        for wrap in [false, true] {
            let x = Tensor::rand(0f32, 10f32, (1, 3, 4, 5), &Device::Cpu)?;
            let (_, g) = tv_loss_and_grad(&x, 0.5, wrap)?;
            let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
            let base: Vec<f32> = x.flatten_all()?.to_vec1()?;
            for &i in &[0usize, 7, 23, 59] {
                let mut p = base.clone();
                p[i] += 0.01;
                let mut m = base.clone();
                m[i] -= 0.01;
                let lp =
                    tv_loss_and_grad(&Tensor::from_vec(p, (1, 3, 4, 5), &Device::Cpu)?, 0.5, wrap)?
                        .0;
                let lm =
                    tv_loss_and_grad(&Tensor::from_vec(m, (1, 3, 4, 5), &Device::Cpu)?, 0.5, wrap)?
                        .0;
                let fd = (lp - lm) / 0.02;
                assert!(
                    (fd - g[i] as f64).abs() < 1e-2 * fd.abs().max(1.0),
                    "wrap={wrap} i={i}: {fd} vs {}",
                    g[i]
                );
            }
        }
        Ok(())
    }
}
