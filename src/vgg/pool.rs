//! 2x2 stride-2 pooling (floor for odd sizes) and its input gradient.
//!
//! candle's `max_pool2d` backward spreads a quarter of the gradient over the window; the true
//! gradient goes to ONE argmax. Ties are common (pool1 of a photo has tens of thousands of tied
//! windows), so the first maximum in scan order takes it, as PyTorch does.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::cpu::ops::contiguous_f32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    #[default]
    Max,
    Avg,
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "max" => Ok(Pooling::Max),
            "avg" | "average" => Ok(Pooling::Avg),
            _ => Err(format!("unknown pooling '{s}' (expected max or avg)")),
        }
    }
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Max => "max",
            Pooling::Avg => "avg",
        }
    }

    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            return x.contiguous()?.apply_op1_no_bwd(&CpuPoolForward(self));
        }
        match self {
            Pooling::Max => x.max_pool2d(2),
            Pooling::Avg => x.avg_pool2d(2),
        }
    }

    /// Gradient at the pool's input `x` `[N,C,H,W]` given the gradient `g` at its output.
    pub fn backward(self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            let (x, g) = (x.contiguous()?, g.contiguous()?);
            return x.apply_op2_no_bwd(&g, &CpuPoolBackward(self));
        }
        self.backward_generic(x, g)
    }

    /// Any-device version built from tensor ops.
    fn backward_generic(self, x: &Tensor, g: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let quads: [Tensor; 4] = match self {
            Pooling::Avg => {
                let q = (g * 0.25)?;
                [q.clone(), q.clone(), q.clone(), q]
            }
            Pooling::Max => {
                let xe = x
                    .narrow(2, 0, 2 * ho)?
                    .narrow(3, 0, 2 * wo)?
                    .contiguous()?
                    .reshape((n, c, ho, 2, wo, 2))?;
                let q = |i: usize, j: usize| -> Result<Tensor> {
                    xe.narrow(3, i, 1)?.narrow(5, j, 1)?.squeeze(5)?.squeeze(3)
                };
                let qs = [q(0, 0)?, q(0, 1)?, q(1, 0)?, q(1, 1)?];
                let m = qs[0].maximum(&qs[1])?.maximum(&qs[2].maximum(&qs[3])?)?;
                // First maximum in scan order wins: mask_k = [q_k == m] * (1 - taken).
                let mut taken = m.zeros_like()?;
                let mut out: Vec<Tensor> = Vec::with_capacity(4);
                for qk in &qs {
                    let hit = qk.eq(&m)?.to_dtype(DType::F32)?;
                    let mask = (&hit * (1.0 - &taken)?)?;
                    taken = (&taken + &mask)?;
                    out.push((g * mask)?);
                }
                [
                    out[0].clone(),
                    out[1].clone(),
                    out[2].clone(),
                    out[3].clone(),
                ]
            }
        };
        let row0 = Tensor::stack(&[&quads[0], &quads[1]], 4)?.reshape((n, c, ho, 2 * wo))?;
        let row1 = Tensor::stack(&[&quads[2], &quads[3]], 4)?.reshape((n, c, ho, 2 * wo))?;
        let full = Tensor::stack(&[&row0, &row1], 3)?.reshape((n, c, 2 * ho, 2 * wo))?;
        // Rows and columns that floor pooling dropped get no gradient.
        full.pad_with_zeros(2, 0, h - 2 * ho)?
            .pad_with_zeros(3, 0, w - 2 * wo)
    }
}

/// The forward pass on the CPU: one pass per plane, in parallel over planes.
struct CpuPoolForward(Pooling);

impl CustomOp1 for CpuPoolForward {
    fn name(&self) -> &'static str {
        "mrfsynth-pool2x2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        let x = contiguous_f32(s, l, "pool")?;
        let mut out = vec![0f32; n * c * ho * wo];
        let pooling = self.0;
        if ho * wo > 0 {
            out.par_chunks_mut(ho * wo)
                .enumerate()
                .for_each(|(p, dst)| {
                    let xp = &x[p * h * w..(p + 1) * h * w];
                    crate::cpu::simd::wide(
                        #[inline(always)]
                        |_| {
                            for (oy, row) in dst.chunks_mut(wo).enumerate() {
                                let (x0, x1) = (
                                    &xp[2 * oy * w..][..2 * wo],
                                    &xp[(2 * oy + 1) * w..][..2 * wo],
                                );
                                for (ox, o) in row.iter_mut().enumerate() {
                                    let (a, b) = (x0[2 * ox], x0[2 * ox + 1]);
                                    let (c, d) = (x1[2 * ox], x1[2 * ox + 1]);
                                    *o = match pooling {
                                        Pooling::Max => a.max(b).max(c.max(d)),
                                        Pooling::Avg => 0.25 * ((a + b) + (c + d)),
                                    };
                                }
                            }
                        },
                    );
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }
}

/// One pass on the CPU: each output gradient goes to its window's first maximum (or a quarter
/// to each cell for average pooling).
struct CpuPoolBackward(Pooling);

impl CustomOp2 for CpuPoolBackward {
    fn name(&self) -> &'static str {
        "mrfsynth-pool2x2-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (ho, wo) = (h / 2, w / 2);
        if l2.shape().dims4()? != (n, c, ho, wo) {
            candle_core::bail!(
                "pool backward: gradient shape {:?} for input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        let op = "pool backward";
        let (x, g) = (contiguous_f32(s1, l1, op)?, contiguous_f32(s2, l2, op)?);
        let pooling = self.0;
        let fill = |p: usize, dst: &mut [std::mem::MaybeUninit<f32>]| {
            let zero = std::mem::MaybeUninit::new(0f32);
            let xp = &x[p * h * w..(p + 1) * h * w];
            let gp = &g[p * ho * wo..(p + 1) * ho * wo];
            crate::cpu::simd::wide(
                #[inline(always)]
                |_| {
                    for oy in 0..ho {
                        let (top, bottom) = dst[2 * oy * w..(2 * oy + 2) * w].split_at_mut(w);
                        let (x0, x1) = (&xp[2 * oy * w..][..w], &xp[(2 * oy + 1) * w..][..w]);
                        let gr = &gp[oy * wo..(oy + 1) * wo];
                        for ox in 0..wo {
                            let gv = gr[ox];
                            let (a, b) = (x0[2 * ox], x0[2 * ox + 1]);
                            let (c, d) = (x1[2 * ox], x1[2 * ox + 1]);
                            let (ga, gb, gc, gd) = match pooling {
                                Pooling::Avg => {
                                    let q = 0.25 * gv;
                                    (q, q, q, q)
                                }
                                Pooling::Max => {
                                    // The first maximum in scan order takes it all.
                                    let m = a.max(b).max(c.max(d));
                                    let (ta, tb, tc) = (a == m, b == m, c == m);
                                    let pick = |hit: bool| if hit { gv } else { 0.0 };
                                    (
                                        pick(ta),
                                        pick(tb && !ta),
                                        pick(tc && !ta && !tb),
                                        pick(!ta && !tb && !tc),
                                    )
                                }
                            };
                            top[2 * ox].write(ga);
                            top[2 * ox + 1].write(gb);
                            bottom[2 * ox].write(gc);
                            bottom[2 * ox + 1].write(gd);
                        }
                        // A column that floor pooling dropped gets no gradient.
                        top[2 * wo..].fill(zero);
                        bottom[2 * wo..].fill(zero);
                    }
                    // Nor does a dropped row.
                    dst[2 * ho * w..].fill(zero);
                },
            );
        };
        // SAFETY: `fill` writes every value of its plane.
        let out = unsafe { crate::cpu::ops::par_filled(n * c * h * w, h * w, fill) };
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn max_gradient_goes_to_one_argmax_even_on_ties() -> Result<()> {
        // 3x5 input: floor pooling gives 1x2 outputs; the first window is all ties.
        let x = Tensor::new(
            &[[[
                [1f32, 1., 0., 5., 9.],
                [1., 1., 7., 2., 9.],
                [3., 3., 3., 3., 3.],
            ]]],
            &Device::Cpu,
        )?;
        let y = Pooling::Max.forward(&x)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, vec![1., 7.]);
        // Our CPU forward equals candle's, both poolings.
        let r = Tensor::rand(-1f32, 1f32, (2, 3, 7, 9), &Device::Cpu)?;
        for (ours, theirs) in [
            (Pooling::Max.forward(&r)?, r.max_pool2d(2)?),
            (Pooling::Avg.forward(&r)?, r.avg_pool2d(2)?),
        ] {
            let d = (ours - theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(d < 1e-6, "{d}");
        }
        let g = Tensor::new(&[[[[10f32, 20.]]]], &Device::Cpu)?;
        for gx in [
            Pooling::Max.backward(&x, &g)?,
            Pooling::Max.backward_generic(&x, &g)?,
        ] {
            assert_eq!(gx.dims(), &[1, 1, 3, 5]);
            let v = gx.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(
                v,
                vec![10., 0., 0., 0., 0., 0., 0., 20., 0., 0., 0., 0., 0., 0., 0.]
            );
        }
        Ok(())
    }

    #[test]
    fn avg_gradient_is_a_quarter_each() -> Result<()> {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu)?;
        let g = Tensor::new(&[[[[8f32]]]], &Device::Cpu)?;
        for gx in [
            Pooling::Avg.backward(&x, &g)?,
            Pooling::Avg.backward_generic(&x, &g)?,
        ] {
            assert_eq!(gx.flatten_all()?.to_vec1::<f32>()?, vec![2.; 4]);
        }
        Ok(())
    }
}
