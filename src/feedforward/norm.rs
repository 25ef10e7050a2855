//! Instance normalisation (and the ReLU after it) as one CPU op with its own backward pass.
//!
//! Built from candle's tensor ops, a normalisation is eight operations, each with a new
//! buffer, and its backward pass sums broadcast gradients through candle's generic strided
//! reduction: together they took most of the generator's training step on the CPU. Here each
//! (image, channel) plane is one pass forwards and two backwards, planes in parallel.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::ops::contiguous_f32;

/// `max(0, (x - mean) / sqrt(var + eps) * scale + shift)` per plane of x [N, C, H, W] (without
/// the max when `relu` is off), scale and shift [C].
pub(super) struct InstanceNormOp {
    pub(super) relu: bool,
}

pub(super) const EPS: f64 = 1e-5;

/// Mean and 1 / sqrt(variance + eps) of one plane (f64 sums: planes hold up to 10^6 values).
fn moments(plane: &[f32]) -> (f32, f32) {
    let n = plane.len() as f64;
    let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = plane
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean as f32, (1.0 / (var + EPS).sqrt()) as f32)
}

fn dims(l: &Layout) -> Result<(usize, usize, usize)> {
    let (n, c, h, w) = l.shape().dims4()?;
    Ok((n, c, h * w))
}

impl CustomOp3 for InstanceNormOp {
    fn name(&self) -> &'static str {
        "generator-instance-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "instance norm")?;
        let scale = contiguous_f32(s2, l2, "instance norm")?;
        let shift = contiguous_f32(s3, l3, "instance norm")?;
        let (_, c, m) = dims(l1)?;
        if scale.len() != c || shift.len() != c {
            candle_core::bail!("instance norm: {c} channels, {} scales", scale.len());
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(m)
            .zip(x.par_chunks(m))
            .enumerate()
            .for_each(|(p, (out, plane))| {
                let (mean, inv) = moments(plane);
                let (gain, offset) = (inv * scale[p % c], shift[p % c] - mean * inv * scale[p % c]);
                for (o, &v) in out.iter_mut().zip(plane) {
                    let t = v * gain + offset;
                    *o = if self.relu { t.max(0.0) } else { t };
                }
            });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let m = h * w;
        let xs = x.flatten_all()?.to_vec1::<f32>()?;
        let ys = y.flatten_all()?.to_vec1::<f32>()?;
        let gs = gy.flatten_all()?.to_vec1::<f32>()?;
        let scales = scale.to_vec1::<f32>()?;
        let mut gx = vec![0f32; xs.len()];
        // Per plane: d scale and d shift (summed over the batch below), and dx in place.
        let partial: Vec<(f64, f64)> = gx
            .par_chunks_mut(m)
            .enumerate()
            .map(|(p, dx)| {
                let span = p * m..(p + 1) * m;
                let (plane, out, grad) = (&xs[span.clone()], &ys[span.clone()], &gs[span]);
                let (mean, inv) = moments(plane);
                let gamma = scales[p % c];
                // g: the gradient at the normalised-and-scaled value (through the ReLU).
                let (mut sum_g, mut sum_g_xhat) = (0f64, 0f64);
                for i in 0..m {
                    let g = if self.relu && out[i] <= 0.0 {
                        0.0
                    } else {
                        grad[i]
                    };
                    let xhat = (plane[i] - mean) * inv;
                    sum_g += g as f64;
                    sum_g_xhat += (g * xhat) as f64;
                    dx[i] = g;
                }
                // dx = gamma * inv * (g - mean(g) - xhat * mean(g * xhat)).
                let (mean_g, mean_gx) = ((sum_g / m as f64) as f32, (sum_g_xhat / m as f64) as f32);
                let k = gamma * inv;
                for i in 0..m {
                    let xhat = (plane[i] - mean) * inv;
                    dx[i] = k * (dx[i] - mean_g - xhat * mean_gx);
                }
                (sum_g_xhat, sum_g)
            })
            .collect();
        let mut d_scale = vec![0f64; c];
        let mut d_shift = vec![0f64; c];
        for (p, (gx_sum, g_sum)) in partial.iter().enumerate() {
            d_scale[p % c] += gx_sum;
            d_shift[p % c] += g_sum;
        }
        let dev = x.device();
        let to = |v: Vec<f64>| {
            Tensor::from_vec(v.into_iter().map(|s| s as f32).collect::<Vec<_>>(), c, dev)
        };
        Ok((
            Some(Tensor::from_vec(gx, (n, c, h, w), dev)?),
            Some(to(d_scale)?),
            Some(to(d_shift)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedforward::generator::{max_abs_diff, normal_noise};
    use candle_core::{Device, Var, D};

    /// candle's ops for the same normalisation: the reference for values and gradients.
    fn reference(x: &Tensor, scale: &Tensor, shift: &Tensor, relu: bool) -> Tensor {
        let (n, c, h, w) = x.dims4().unwrap();
        let flat = x.reshape((n, c, h * w)).unwrap();
        let mean = flat.mean_keepdim(D::Minus1).unwrap();
        let centred = flat.broadcast_sub(&mean).unwrap();
        let var = centred.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let normed = centred
            .broadcast_div(&(var + EPS).unwrap().sqrt().unwrap())
            .unwrap();
        let y = normed
            .broadcast_mul(&scale.reshape((1, c, 1)).unwrap())
            .unwrap()
            .broadcast_add(&shift.reshape((1, c, 1)).unwrap())
            .unwrap()
            .reshape((n, c, h, w))
            .unwrap();
        if relu {
            y.relu().unwrap()
        } else {
            y
        }
    }

    #[test]
    fn matches_candles_ops_and_their_gradients() {
        let dev = Device::Cpu;
        let (n, c, h, w) = (2, 3, 5, 7);
        let x = Var::from_vec(normal_noise(n * c * h * w, 1), (n, c, h, w), &dev).unwrap();
        let scale = Var::from_vec(normal_noise(c, 2), c, &dev).unwrap();
        let shift = Var::from_vec(normal_noise(c, 3), c, &dev).unwrap();
        let r = Tensor::from_vec(normal_noise(n * c * h * w, 4), (n, c, h, w), &dev).unwrap();
        for relu in [false, true] {
            let ours = x
                .as_tensor()
                .apply_op3(
                    scale.as_tensor(),
                    shift.as_tensor(),
                    InstanceNormOp { relu },
                )
                .unwrap();
            let theirs = reference(x.as_tensor(), scale.as_tensor(), shift.as_tensor(), relu);
            assert!(max_abs_diff(&ours, &theirs) < 1e-5);
            let ga = (ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (theirs * &r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for v in [&x, &scale, &shift] {
                let (a, b) = (
                    ga.get(v.as_tensor()).unwrap(),
                    gb.get(v.as_tensor()).unwrap(),
                );
                let d = max_abs_diff(a, b);
                assert!(d < 1e-4, "relu {relu}, {:?}: {d}", v.dims());
            }
        }
    }
}
