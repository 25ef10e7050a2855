//! Texture generation in bands of rows, so that a large texture fits in memory.
//!
//! The whole-image pass ([`Generator::infer`]) holds several full-size copies of each
//! full-size layer at once (upsampled features joined with noise, their padded copy, the
//! convolution's output and every step of the instance normalisation): about 9.8 GB for a
//! 4096 px texture. Here the decoder's stages and the RGB layer run over bands of rows, each
//! band reading one row of halo above and below (taken by the padding rule at the image's
//! edges), and only each stage's output is held whole: instance normalisation needs its
//! statistics over the whole image, so a stage is convolved band by band into one buffer, then
//! normalised in place. The coarse scale (encoder and residual blocks) runs whole: it is 1/16
//! of the pixels.

use candle_core::{Device, Result, Tensor};

use super::generator::{pad1_dim, Architecture, Conv3, ConvBlock, Generator, Padding};
use crate::vgg::conv::Conv3x3;

/// Rows per band when the caller does not choose: bands of a few tens of MB at 4096 px.
pub const BAND_ROWS: usize = 64;

/// One channel-major image [C, H, W] held as plain floats.
struct Planes {
    channels: usize,
    height: usize,
    width: usize,
    data: Vec<f32>,
}

impl Generator {
    /// [`Generator::infer`] for textures on the CPU, `band` rows at a time: the same output up
    /// to float rounding (instance norm statistics are summed in another order).
    pub(super) fn infer_banded(
        &self,
        inputs: &[Tensor],
        padding: Padding,
        band: usize,
    ) -> Result<Tensor> {
        let band = band.max(1);
        let mut x = self.coarse_features(inputs, padding, true)?;
        for (i, block) in self.decoder.iter().enumerate() {
            let (_, _, h, w) = x.dims4()?;
            let noise = inputs.get(i + 1);
            let gather = |rows: &[u32]| upsampled_rows(&x, noise, rows, w);
            let mut out = convolve_in_bands(&block.conv, gather, 2 * h, 2 * w, padding, band)?;
            normalise_relu(&mut out, block)?;
            x = Tensor::from_vec(
                out.data,
                (1, out.channels, out.height, out.width),
                &Device::Cpu,
            )?;
        }
        let (_, _, h, w) = x.dims4()?;
        let gather = |rows: &[u32]| x.index_select(&row_index(rows)?, 2);
        let mut rgb = convolve_in_bands(&self.to_rgb, gather, h, w, padding, band)?;
        // As the whole-image pass: tanh to 0..255.
        for v in &mut rgb.data {
            *v = (v.tanh() + 1.0) * 127.5;
        }
        Tensor::from_vec(rgb.data, (1, 3, h, w), &Device::Cpu)
    }
}

/// Rows `rows` of the upsampled features (nearest neighbour: row r is row r / 2 of `x`,
/// widened to `2 * w`) joined with the same rows of the stage's noise.
fn upsampled_rows(x: &Tensor, noise: Option<&Tensor>, rows: &[u32], w: usize) -> Result<Tensor> {
    let half: Vec<u32> = rows.iter().map(|r| r / 2).collect();
    let up = x
        .index_select(&row_index(&half)?, 2)?
        .upsample_nearest2d(rows.len(), 2 * w)?;
    match noise {
        Some(n) => Tensor::cat(&[&up, &n.index_select(&row_index(rows)?, 2)?], 1),
        None => Ok(up),
    }
}

fn row_index(rows: &[u32]) -> Result<Tensor> {
    Tensor::from_slice(rows, rows.len(), &Device::Cpu)
}

/// The row of an `n`-row image that padded row `v` (-1 ..= n) shows, as [`pad1_dim`] pads.
fn padded_row(v: isize, n: usize, padding: Padding) -> u32 {
    let n = n as isize;
    let r = match padding {
        Padding::Circular => v.rem_euclid(n),
        Padding::Reflect if n == 1 => 0,
        Padding::Reflect if v < 0 => -v,
        Padding::Reflect if v >= n => 2 * n - 2 - v,
        Padding::Reflect => v,
    };
    r as u32
}

/// `conv` (3x3, padded by `padding`) over an `height` x `width` input whose rows
/// `gather(rows)` returns as [1, C, rows, width], one band of output rows at a time.
fn convolve_in_bands(
    conv: &Conv3,
    gather: impl Fn(&[u32]) -> Result<Tensor>,
    height: usize,
    width: usize,
    padding: Padding,
    band: usize,
) -> Result<Planes> {
    let bias = conv
        .conv
        .bias()
        .expect("generator convolutions have a bias");
    let kernel = Conv3x3::new(conv.conv.weight(), bias, &Device::Cpu)?;
    let channels = kernel.cout;
    let mut data = vec![0f32; channels * height * width];
    for r0 in (0..height).step_by(band) {
        let r1 = (r0 + band).min(height);
        // The band's rows and one of halo on each side.
        let rows: Vec<u32> = (r0 as isize - 1..=r1 as isize)
            .map(|v| padded_row(v, height, padding))
            .collect();
        let input = pad1_dim(&gather(&rows)?, 3, padding)?;
        // The kernel zero-pads; the halo rows and padded columns make every kept output exact.
        let y = kernel
            .forward(&input, false)?
            .narrow(2, 1, r1 - r0)?
            .narrow(3, 1, width)?
            .squeeze(0)?
            .contiguous()?;
        let y: Vec<f32> = y.flatten_all()?.to_vec1()?;
        let plane = (r1 - r0) * width;
        for c in 0..channels {
            data[c * height * width + r0 * width..][..plane]
                .copy_from_slice(&y[c * plane..][..plane]);
        }
    }
    Ok(Planes {
        channels,
        height,
        width,
        data,
    })
}

/// The block's instance normalisation (statistics over the whole image) and ReLU, in place.
fn normalise_relu(out: &mut Planes, block: &ConvBlock) -> Result<()> {
    let scale: Vec<f32> = block.norm.scale.to_vec1()?;
    let shift: Vec<f32> = block.norm.shift.to_vec1()?;
    let n = out.height * out.width;
    for (c, plane) in out.data.chunks_mut(n).enumerate() {
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = plane
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let gain = scale[c] as f64 / (var + 1e-5).sqrt();
        let (gain, offset) = (gain as f32, (shift[c] as f64 - mean * gain) as f32);
        for v in plane.iter_mut() {
            *v = (*v * gain + offset).max(0.0);
        }
    }
    Ok(())
}

/// Estimated peak memory of [`Generator::generate`] on the CPU for `width` x `height`: the
/// noise of every scale, the two largest decoder outputs held at once, the coarse scale's
/// working copies, the RGB result and its copies on the way to the file, with 25% and 0.8 GiB
/// of margin for the bands and the allocator. Measured peaks of the texture architecture (1/4
/// scale, 32 channels): 0.39, 1.27 and 3.64 GiB at 1024, 2048 and 4096 px, against estimates
/// of 1.03, 1.74 and 4.55 GiB; of the earlier one (1/8 scale, 64 channels): 0.30, 1.02, 2.27
/// and 7.39 GiB at 1024 to 8192 px, against 0.97, 1.49, 3.57 and 11.9 GiB now.
pub fn generation_bytes(arch: &Architecture, width: u32, height: u32) -> u64 {
    let g = arch.granule() as u64;
    let pixels = (width as u64).div_ceil(g) * g * (height as u64).div_ceil(g) * g;
    let u = arch.upsamplings as u32;
    // Floats per output pixel of a map with c channels at 1/2^s of the output size.
    let at = |c: usize, s: u32| c as f64 / 4f64.powi(s as i32);
    let mut noise = at(arch.coarse_inputs(), u);
    for s in 0..u {
        noise += at(arch.scale_noise_channels, s);
    }
    // Decoder stage i writes channels_at(i + 1) at 1/2^(u - 1 - i); its input is still held.
    let stages: Vec<f64> = (0..arch.upsamplings)
        .map(|i| at(arch.channels_at(i + 1), u - 1 - i as u32))
        .collect();
    let held = (0..stages.len())
        .map(|i| stages[i] + if i > 0 { stages[i - 1] } else { 0.0 })
        .fold(0.0, f64::max);
    // The coarse scale runs whole: its instance norms and residual sums hold about a dozen
    // copies of its features at once (fitted to the peaks below; at 1/4 scale with 32 channels
    // it is the largest term).
    let coarse = 12.0 * at(arch.channels_at(0), u);
    let rgb = 3.0 * 2.0;
    let floats = (noise + held + coarse + rgb) * pixels as f64;
    (floats * 4.0 * 1.25) as u64 + (8 << 30) / 10
}
