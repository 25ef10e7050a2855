//! The one 3x3 convolution (stride 1, padding 1) of the network, forward and input-gradient.
//!
//! The input gradient of a 3x3 convolution is itself a 3x3 convolution, with the kernel flipped
//! and its in/out channels swapped, so one kernel serves both directions. On the CPU that
//! kernel is ours (nine shifted GEMMs over a zero-padded copy, no im2col buffer); elsewhere it is
//! candle's `conv2d`. Swapping this file is all a faster kernel needs.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::winograd::{Tile, Weights};
use crate::cpu::bf16_gemm::{self, PackedA};
use crate::cpu::ops::contiguous_f32;
use crate::cpu::SendPtr;

/// Tap-major CPU weights [9][out][in], with their Winograd transforms made on first use (once
/// per layer, direction and tile, not once per call: for a small image the transform costs as
/// much as the convolution).
#[derive(Debug)]
pub struct Taps {
    data: Vec<f32>,
    cout: usize,
    cin: usize,
    winograd_f2: std::sync::OnceLock<Vec<f32>>,
    winograd_f4: std::sync::OnceLock<Vec<f32>>,
    winograd_f4_bf16: std::sync::OnceLock<Vec<PackedA>>,
}

impl Taps {
    pub fn new(data: Vec<f32>, cout: usize, cin: usize) -> Self {
        assert_eq!(
            data.len(),
            9 * cout * cin,
            "taps: 9 x {cout} x {cin} weights expected"
        );
        Self {
            data,
            cout,
            cin,
            winograd_f2: std::sync::OnceLock::new(),
            winograd_f4: std::sync::OnceLock::new(),
            winograd_f4_bf16: std::sync::OnceLock::new(),
        }
    }

    fn winograd(&self, tile: Tile) -> &[f32] {
        let cell = match tile {
            Tile::F2 => &self.winograd_f2,
            Tile::F4 => &self.winograd_f4,
        };
        cell.get_or_init(|| {
            super::winograd::transform_weights(tile, &self.data, self.cout, self.cin)
        })
    }

    /// The F(4x4, 3x3) transform packed for bf16 products.
    fn winograd_bf16(&self) -> &[PackedA] {
        self.winograd_f4_bf16.get_or_init(|| {
            let aa = Tile::F4.alpha() * Tile::F4.alpha();
            super::winograd::pack_bf16(self.winograd(Tile::F4), aa, self.cout, self.cin)
        })
    }
}

/// One convolution layer with both weight layouts prepared.
#[derive(Debug, Clone)]
pub struct Conv3x3 {
    pub cin: usize,
    pub cout: usize,
    device: Device,
    /// [out, in, 3, 3] and [in, out, 3, 3] flipped, on the device (non-CPU path).
    weight: Tensor,
    weight_grad: Tensor,
    bias: Tensor,
    /// Tap-major copies for the CPU kernel: [9][out][in] and [9][in][out].
    taps_fwd: Arc<Taps>,
    taps_bwd: Arc<Taps>,
    bias_cpu: Arc<Vec<f32>>,
    /// Number format of the CPU products (both directions).
    precision: Precision,
}

impl Conv3x3 {
    /// `weight` `[out, in, 3, 3]` and `bias` `[out]`, any device.
    pub fn new(weight: &Tensor, bias: &Tensor, device: &Device) -> Result<Self> {
        let (cout, cin, kh, kw) = weight.dims4()?;
        if (kh, kw) != (3, 3) {
            candle_core::bail!("expected a 3x3 kernel, got {kh}x{kw}");
        }
        let w: Vec<f32> = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut taps_fwd = vec![0f32; 9 * cout * cin];
        let mut taps_bwd = vec![0f32; 9 * cout * cin];
        for o in 0..cout {
            for c in 0..cin {
                for k in 0..9 {
                    let v = w[(o * cin + c) * 9 + k];
                    taps_fwd[(k * cout + o) * cin + c] = v;
                    // Flipped tap (8 - k), channels swapped.
                    taps_bwd[((8 - k) * cin + c) * cout + o] = v;
                }
            }
        }
        let weight = weight.to_dtype(DType::F32)?.to_device(device)?;
        let weight_grad = weight.flip(&[2, 3])?.transpose(0, 1)?.contiguous()?;
        let bias_cpu: Vec<f32> = bias.to_dtype(DType::F32)?.to_vec1()?;
        Ok(Self {
            cin,
            cout,
            device: device.clone(),
            weight,
            weight_grad,
            bias: bias.to_dtype(DType::F32)?.to_device(device)?,
            taps_fwd: Arc::new(Taps::new(taps_fwd, cout, cin)),
            taps_bwd: Arc::new(Taps::new(taps_bwd, cin, cout)),
            bias_cpu: Arc::new(bias_cpu),
            precision: Precision::F32,
        })
    }

    /// Runs the CPU products in `precision` (where the CPU supports it, else f32).
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision.effective();
    }

    /// Pre-activation output, [N, out, H, W] for an input [N, in, H, W]. With `wrap` the
    /// padding is circular (the image is a torus: seamless tiles), else zeros.
    pub fn forward(&self, x: &Tensor, wrap: bool) -> Result<Tensor> {
        if self.device.is_cpu() {
            x.apply_op1_no_bwd(&self.cpu_forward_op(wrap))
        } else {
            let y = generic_conv(x, &self.weight, wrap)?;
            y.broadcast_add(&self.bias.reshape((1, self.cout, 1, 1))?)
        }
    }

    /// `relu(forward(x))` in one pass on the CPU.
    pub fn forward_relu(&self, x: &Tensor, wrap: bool) -> Result<Tensor> {
        if self.device.is_cpu() {
            x.apply_op1_no_bwd(&CpuConv {
                relu: true,
                ..self.cpu_forward_op(wrap)
            })
        } else {
            self.forward(x, wrap)?.relu()
        }
    }

    fn cpu_forward_op(&self, wrap: bool) -> CpuConv {
        CpuConv {
            taps: self.taps_fwd.clone(),
            bias: Some(self.bias_cpu.clone()),
            cin: self.cin,
            cout: self.cout,
            relu: false,
            wrap,
            precision: self.precision,
        }
    }

    fn cpu_backward_op(&self, wrap: bool) -> CpuConv {
        CpuConv {
            taps: self.taps_bwd.clone(),
            bias: None,
            cin: self.cout,
            cout: self.cin,
            relu: false,
            wrap,
            precision: self.precision,
        }
    }

    /// Gradient with respect to the input, given the gradient of the pre-activation output.
    /// (A circular convolution's transpose is circular too, so `wrap` carries over.)
    pub fn backward_input(&self, grad_out: &Tensor, wrap: bool) -> Result<Tensor> {
        if self.device.is_cpu() {
            grad_out.apply_op1_no_bwd(&self.cpu_backward_op(wrap))
        } else {
            generic_conv(grad_out, &self.weight_grad, wrap)
        }
    }

    /// Input gradient through a following ReLU whose output was `relu_out`: the ReLU mask is
    /// applied while the kernel copies the gradient into its padded buffer, not as a pass of its own.
    pub fn backward_input_through_relu(
        &self,
        grad_out: &Tensor,
        relu_out: &Tensor,
        wrap: bool,
    ) -> Result<Tensor> {
        if self.device.is_cpu() {
            grad_out.apply_op2_no_bwd(relu_out, &self.cpu_backward_op(wrap))
        } else {
            let mask = relu_out.gt(0f32)?.to_dtype(DType::F32)?;
            self.backward_input(&grad_out.mul(&mask)?, wrap)
        }
    }
}

/// Largest im2col buffer candle's GPU convolution may build at once, in floats (2 GiB):
/// bigger inputs are convolved in horizontal bands.
const GENERIC_IM2COL_FLOATS: usize = 1 << 29;

/// candle's convolution (non-CPU devices), with circular padding done by hand.
fn generic_conv(x: &Tensor, w: &Tensor, wrap: bool) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    // Pad explicitly (zeros or the torus' own rows and columns), then a valid convolution.
    let x = if wrap {
        let x = Tensor::cat(&[x.narrow(2, h - 1, 1)?, x.clone(), x.narrow(2, 0, 1)?], 2)?;
        Tensor::cat(&[x.narrow(3, wd - 1, 1)?, x.clone(), x.narrow(3, 0, 1)?], 3)?
    } else {
        x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?
    };
    let (n, c, _, _) = x.dims4()?;
    // candle's GPU path unrolls the whole input (im2col): 9 * C floats per output pixel.
    let rows_per_band = (GENERIC_IM2COL_FLOATS / (n * c * 9 * wd).max(1)).max(1);
    if rows_per_band >= h {
        return x.conv2d(w, 0, 1, 1, 1);
    }
    let mut bands = Vec::with_capacity(h.div_ceil(rows_per_band));
    let mut y = 0;
    while y < h {
        let rows = rows_per_band.min(h - y);
        // Output rows y..y+rows need padded input rows y..y+rows+2.
        bands.push(x.narrow(2, y, rows + 2)?.conv2d(w, 0, 1, 1, 1)?);
        y += rows;
    }
    Tensor::cat(&bands, 2)
}

/// The CPU kernel as a candle op: input [N, cin, H, W] -> output [N, cout, H, W]; as a binary
/// op the second input is a ReLU output whose mask gates the first.
struct CpuConv {
    taps: Arc<Taps>,
    bias: Option<Arc<Vec<f32>>>,
    cin: usize,
    cout: usize,
    /// Apply ReLU to the output.
    relu: bool,
    /// Circular padding instead of zeros.
    wrap: bool,
    precision: Precision,
}

impl CpuConv {
    fn run(&self, x: &[f32], mask: Option<&[f32]>, shape: &Shape) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = shape.dims4()?;
        if c != self.cin {
            candle_core::bail!("conv3x3: input has {c} channels, expected {}", self.cin);
        }
        let per = c * h * w;
        let mut out = Vec::new();
        for b in 0..n {
            let y = conv3x3_cpu(
                ConvAlgorithm::for_layer(c, self.cout),
                self.precision,
                &x[b * per..(b + 1) * per],
                mask.map(|m| &m[b * per..(b + 1) * per]),
                c,
                h,
                w,
                &self.taps,
                self.cout,
                self.bias.as_deref().map(|v| v.as_slice()),
                self.relu,
                self.wrap,
            );
            // One image (the usual case) hands its buffer over without a copy.
            if n == 1 {
                out = y;
            } else {
                out.extend(y);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((n, self.cout, h, w))))
    }
}

impl CustomOp1 for CpuConv {
    fn name(&self) -> &'static str {
        "mrfsynth-conv3x3"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(
            contiguous_f32(storage, layout, "conv3x3")?,
            None,
            layout.shape(),
        )
    }
}

impl CustomOp2 for CpuConv {
    fn name(&self) -> &'static str {
        "mrfsynth-conv3x3-masked"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "conv3x3: mask shape {:?} differs from input {:?}",
                l2.shape(),
                l1.shape()
            );
        }
        self.run(
            contiguous_f32(s1, l1, "conv3x3")?,
            Some(contiguous_f32(s2, l2, "conv3x3")?),
            l1.shape(),
        )
    }
}

/// Input channel counts up to which a layer counts as thin ([`ConvAlgorithm::Im2col`]).
pub const THIN: usize = 8;

/// Number format of the convolution's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 throughout.
    #[default]
    F32,
    /// Winograd F(4x4, 3x3) products with bf16 operands and f32 sums, where the CPU has
    /// AVX-512 BF16 (twice the multiply-adds per cycle); f32 elsewhere.
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// What runs on this CPU: bf16 needs AVX-512 BF16.
    pub fn effective(self) -> Precision {
        match self {
            Precision::Bf16 if bf16_gemm::available() => Precision::Bf16,
            _ => Precision::F32,
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision {other:?} (f32 or bf16)")),
        }
    }
}

/// How the CPU computes a 3x3 convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvAlgorithm {
    /// Nine shifted GEMMs over the padded input.
    Direct,
    /// One GEMM over stacked shifted copies of the input (few input channels).
    Im2col,
    /// Winograd's minimal filtering with the given block size.
    Winograd(Tile),
}

impl ConvAlgorithm {
    /// The algorithm for a layer of this shape: Winograd F(4x4, 3x3) from
    /// [`super::winograd::MIN_CHANNELS`] channels in and out (measured faster than F(2x2, 3x3)
    /// at every VGG19 layer: `cargo run --release --example bench_conv`); below that, im2col
    /// for at most [`THIN`] inputs, else direct.
    /// `MRFSYNTH_CONV=direct|f2|f4` forces one (for A/B benchmarks).
    pub fn for_layer(cin: usize, cout: usize) -> Self {
        static FORCED: std::sync::OnceLock<Option<ConvAlgorithm>> = std::sync::OnceLock::new();
        let forced = *FORCED.get_or_init(|| match std::env::var("MRFSYNTH_CONV").as_deref() {
            Ok("direct") => Some(ConvAlgorithm::Direct),
            Ok("f2") => Some(ConvAlgorithm::Winograd(Tile::F2)),
            Ok("f4") => Some(ConvAlgorithm::Winograd(Tile::F4)),
            _ => None,
        });
        if forced == Some(ConvAlgorithm::Direct) {
            return ConvAlgorithm::Direct;
        }
        if cin.min(cout) < super::winograd::MIN_CHANNELS {
            return if cin <= THIN {
                ConvAlgorithm::Im2col
            } else {
                ConvAlgorithm::Direct
            };
        }
        forced.unwrap_or(ConvAlgorithm::Winograd(Tile::F4))
    }
}

/// 3x3 convolution of one image `x` [cin, h, w] with tap-major weights [9][cout][cin], by
/// `algo` (usually [`ConvAlgorithm::for_layer`]; any algorithm works at any size).
///
/// Direct: with the input zero-padded to rows of `w + 2`, the output at wide position
/// `n = y*(w+2) + x` is `sum_k W_k · P[:, n + off_k]`: nine GEMMs over shifted views of the same
/// buffer. The two extra columns per row are junk and dropped when compacting.
#[allow(clippy::too_many_arguments)]
pub fn conv3x3_cpu(
    algo: ConvAlgorithm,
    precision: Precision,
    x: &[f32],
    mask: Option<&[f32]>,
    cin: usize,
    h: usize,
    w: usize,
    taps: &Taps,
    cout: usize,
    bias: Option<&[f32]>,
    relu: bool,
    wrap: bool,
) -> Vec<f32> {
    assert_eq!(
        (taps.cout, taps.cin),
        (cout, cin),
        "conv3x3: weights do not fit"
    );
    // Winograd reads whole blocks: round the padded size up to whole blocks (zeros beyond).
    let (hp, wp) = match algo {
        ConvAlgorithm::Winograd(tile) => tile.padded_dims(h, w),
        ConvAlgorithm::Direct | ConvAlgorithm::Im2col => (h + 2, w + 2),
    };
    let plane_in = hp * wp;
    // Written whole (zeros around the image and beyond it), so it is not zeroed first.
    let fill = |c: usize, dst: &mut [std::mem::MaybeUninit<f32>]| {
        let zero = std::mem::MaybeUninit::new(0f32);
        dst[..wp].fill(zero);
        for y in 0..h {
            let row = (c * h + y) * w..(c * h + y + 1) * w;
            let line = &mut dst[(y + 1) * wp..(y + 2) * wp];
            line[0] = zero;
            line[w + 1..].fill(zero);
            let inner = &mut line[1..w + 1];
            match mask {
                None => {
                    for (d, &v) in inner.iter_mut().zip(&x[row]) {
                        d.write(v);
                    }
                }
                Some(m) => {
                    for ((d, &v), &gate) in inner.iter_mut().zip(&x[row.clone()]).zip(&m[row]) {
                        d.write(if gate > 0.0 { v } else { 0.0 });
                    }
                }
            }
        }
        dst[(h + 1) * wp..].fill(zero);
        // SAFETY: every value of the plane was written above.
        let dst = unsafe { crate::cpu::ops::assume_init(dst) };
        if wrap {
            // Border rows from the opposite side, then border columns (corners included).
            dst.copy_within(h * wp..(h + 1) * wp, 0);
            dst.copy_within(wp..2 * wp, (h + 1) * wp);
            for r in 0..h + 2 {
                dst[r * wp] = dst[r * wp + w];
                dst[r * wp + w + 1] = dst[r * wp + 1];
            }
        }
    };
    // SAFETY: `fill` writes every value of its plane.
    let padded = unsafe { crate::cpu::ops::par_filled(cin * plane_in, plane_in, fill) };

    if algo == ConvAlgorithm::Im2col {
        return super::thin::conv_im2col(&padded, cin, h, w, &taps.data, cout, bias, relu);
    }
    if let ConvAlgorithm::Winograd(tile) = algo {
        return super::winograd::conv3x3_winograd(
            tile,
            &padded,
            hp,
            wp,
            cin,
            h,
            w,
            match (tile, precision) {
                (Tile::F4, Precision::Bf16) if bf16_gemm::available() => {
                    Weights::Bf16(taps.winograd_bf16())
                }
                _ => Weights::F32(taps.winograd(tile)),
            },
            cout,
            bias,
            relu,
        );
    }
    let plane_out = h * wp;
    // The last row's two junk columns would read past the padded buffer: stop before them.
    let n_total = plane_out - 2;
    let mut wide = vec![0f32; cout * plane_out];

    // Bands of whole rows: small enough that a band's output and input stay in cache, and
    // enough of them to keep every core busy.
    let target_cols = (262_144 / (cin + cout)).clamp(256, 8192);
    let threads = rayon::current_num_threads().max(1);
    let mut rows = (target_cols / wp).max(1);
    while rows > 1 && h.div_ceil(rows) < 2 * threads {
        rows /= 2;
    }
    let bands: Vec<(usize, usize)> = (0..h)
        .step_by(rows)
        .map(|y0| (y0 * wp, ((y0 + rows).min(h) * wp).min(n_total)))
        .collect();

    let dst_ptr = SendPtr(wide.as_mut_ptr());
    let padded = &padded;
    bands.par_iter().for_each(|&(c0, c1)| {
        let ncols = c1 - c0;
        // SAFETY: bands cover disjoint column ranges [c0, c1) of every output row, and `wide`
        // outlives the parallel loop.
        unsafe {
            let dst = dst_ptr.get().add(c0);
            for o in 0..cout {
                let v = bias.map_or(0.0, |b| b[o]);
                std::slice::from_raw_parts_mut(dst.add(o * plane_out), ncols).fill(v);
            }
            for k in 0..9 {
                let off = (k / 3) * wp + (k % 3);
                let lhs = taps.data.as_ptr().add(k * cout * cin);
                let rhs = padded.as_ptr().add(c0 + off);
                gemm::gemm(
                    cout,
                    ncols,
                    cin,
                    dst,
                    1,
                    plane_out as isize,
                    true,
                    lhs,
                    1,
                    cin as isize,
                    rhs,
                    1,
                    plane_in as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    });

    let mut out = vec![0f32; cout * h * w];
    out.par_chunks_mut(h * w).enumerate().for_each(|(o, dst)| {
        for y in 0..h {
            let src = &wide[o * plane_out + y * wp..o * plane_out + y * wp + w];
            let dst = &mut dst[y * w..(y + 1) * w];
            if relu {
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = v.max(0.0);
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        x: &[f32],
        cin: usize,
        h: usize,
        w: usize,
        wt: &[f32],
        b: &[f32],
        cout: usize,
    ) -> Vec<f32> {
        let mut y = vec![0f32; cout * h * w];
        for o in 0..cout {
            for yy in 0..h {
                for xx in 0..w {
                    let mut s = b[o] as f64;
                    for c in 0..cin {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = yy as isize + ky as isize - 1;
                                let ix = xx as isize + kx as isize - 1;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                s += (wt[((o * cin + c) * 3 + ky) * 3 + kx]
                                    * x[(c * h + iy as usize) * w + ix as usize])
                                    as f64;
                            }
                        }
                    }
                    y[(o * h + yy) * w + xx] = s as f32;
                }
            }
        }
        y
    }

    /// With circular padding the input gradient is still the exact adjoint.
    #[test]
    fn wrapped_convolution_and_its_gradient_are_adjoint() -> Result<()> {
        for (cin, cout, h, w) in [(3, 4, 6, 7), (64, 64, 5, 8), (64, 66, 7, 3)] {
            check_wrapped(cin, cout, h, w)?;
        }
        Ok(())
    }

    fn check_wrapped(cin: usize, cout: usize, h: usize, w: usize) -> Result<()> {
        let conv = Conv3x3::new(
            &Tensor::from_vec(pseudo(cout * cin * 9, 8), (cout, cin, 3, 3), &Device::Cpu)?,
            &Tensor::zeros(cout, DType::F32, &Device::Cpu)?,
            &Device::Cpu,
        )?;
        let x = Tensor::from_vec(pseudo(cin * h * w, 9), (1, cin, h, w), &Device::Cpu)?;
        let g = Tensor::from_vec(pseudo(cout * h * w, 10), (1, cout, h, w), &Device::Cpu)?;
        let lhs = (conv.forward(&x, true)? * &g)?
            .sum_all()?
            .to_scalar::<f32>()?;
        let rhs = (conv.backward_input(&g, true)? * &x)?
            .sum_all()?
            .to_scalar::<f32>()?;
        assert!(
            (lhs - rhs).abs() < 1e-4 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        // A circular shift of the input shifts the output the same way.
        let shifted = Tensor::cat(&[x.narrow(3, 1, w - 1)?, x.narrow(3, 0, 1)?], 3)?;
        let y = conv.forward(&x, true)?;
        let ys = conv.forward(&shifted, true)?;
        let y_shift = Tensor::cat(&[y.narrow(3, 1, w - 1)?, y.narrow(3, 0, 1)?], 3)?;
        let d = (ys - y_shift)?.abs()?.max_all()?.to_scalar::<f32>()?;
        // Winograd groups pixels in blocks (4x4 with coefficients up to 8), so a shift changes
        // the rounding a little.
        let scale = y.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
        assert!(
            d < 2e-5 * scale,
            "not shift-equivariant: {d} (outputs up to {scale})"
        );
        Ok(())
    }

    use crate::vgg::test_values as pseudo;

    #[test]
    fn forward_and_input_gradient_match_naive() -> Result<()> {
        // Few input channels (direct), then enough for Winograd, with odd and even sides.
        for (cin, cout, h, w) in [
            (5, 7, 9, 13),
            (40, 33, 7, 9),
            (64, 48, 8, 6),
            (48, 64, 1, 5),
        ] {
            check_against_naive(cin, cout, h, w)?;
        }
        Ok(())
    }

    /// Every algorithm, forced, on sides that are not whole blocks, plain and through a mask.
    #[test]
    fn every_algorithm_matches_naive() {
        for (cin, cout, h, w) in [(3, 5, 9, 13), (8, 6, 7, 5), (5, 4, 1, 6), (7, 9, 13, 11)] {
            let x = pseudo(cin * h * w, 11);
            let wt = pseudo(cout * cin * 9, 12);
            let b = pseudo(cout, 13);
            let mut taps = vec![0f32; 9 * cout * cin];
            for o in 0..cout {
                for c in 0..cin {
                    for k in 0..9 {
                        taps[(k * cout + o) * cin + c] = wt[(o * cin + c) * 9 + k];
                    }
                }
            }
            let taps = Taps::new(taps, cout, cin);
            let expect = naive(&x, cin, h, w, &wt, &b, cout);
            for algo in [
                ConvAlgorithm::Direct,
                ConvAlgorithm::Im2col,
                ConvAlgorithm::Winograd(Tile::F2),
                ConvAlgorithm::Winograd(Tile::F4),
            ] {
                let y = conv3x3_cpu(
                    algo,
                    Precision::F32,
                    &x,
                    None,
                    cin,
                    h,
                    w,
                    &taps,
                    cout,
                    Some(&b),
                    false,
                    false,
                );
                for (i, (a, e)) in y.iter().zip(&expect).enumerate() {
                    assert!(
                        (a - e).abs() < 1e-5 * e.abs().max(1.0),
                        "{algo:?} {cin}->{cout} {h}x{w} at {i}: {a} vs {e}"
                    );
                }
            }
        }
    }

    fn check_against_naive(cin: usize, cout: usize, h: usize, w: usize) -> Result<()> {
        let x = pseudo(cin * h * w, 1);
        let wt = pseudo(cout * cin * 9, 2);
        let b = pseudo(cout, 3);
        let conv = Conv3x3::new(
            &Tensor::from_vec(wt.clone(), (cout, cin, 3, 3), &Device::Cpu)?,
            &Tensor::from_vec(b.clone(), cout, &Device::Cpu)?,
            &Device::Cpu,
        )?;
        let xt = Tensor::from_vec(x.clone(), (1, cin, h, w), &Device::Cpu)?;
        let y: Vec<f32> = conv.forward(&xt, false)?.flatten_all()?.to_vec1()?;
        let expect = naive(&x, cin, h, w, &wt, &b, cout);
        for (a, e) in y.iter().zip(&expect) {
            assert!(
                (a - e).abs() < 1e-4 * e.abs().max(1.0),
                "{cin}->{cout} {h}x{w}: {a} vs {e}"
            );
        }
        // <conv(x), g> = <x, conv^T(g)> for the linear part.
        let g = pseudo(cout * h * w, 4);
        let gt = Tensor::from_vec(g.clone(), (1, cout, h, w), &Device::Cpu)?;
        let gx: Vec<f32> = conv.backward_input(&gt, false)?.flatten_all()?.to_vec1()?;
        let lin = naive(&x, cin, h, w, &wt, &vec![0.0; cout], cout);
        let lhs: f64 = lin
            .iter()
            .zip(&g)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&gx)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert!(
            (lhs - rhs).abs() < 1e-3 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );

        // Fused variants equal the unfused composition.
        let fused: Vec<f32> = conv.forward_relu(&xt, false)?.flatten_all()?.to_vec1()?;
        let plain: Vec<f32> = conv.forward(&xt, false)?.relu()?.flatten_all()?.to_vec1()?;
        assert_eq!(fused, plain);
        let y = conv.forward(&xt, false)?.relu()?;
        let gy = Tensor::from_vec(pseudo(cout * h * w, 5), (1, cout, h, w), &Device::Cpu)?;
        let masked: Vec<f32> = conv
            .backward_input_through_relu(&gy, &y, false)?
            .flatten_all()?
            .to_vec1()?;
        let mask = y.gt(0f32)?.to_dtype(DType::F32)?;
        let unfused: Vec<f32> = conv
            .backward_input(&(gy * mask)?, false)?
            .flatten_all()?
            .to_vec1()?;
        assert_eq!(masked, unfused);
        Ok(())
    }
}
