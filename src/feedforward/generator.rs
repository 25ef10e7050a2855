//! The generator: a small fully convolutional network, noise (textures) or a photo (stylize) in,
//! RGB 0..255 out. Residual blocks with instance normalisation work at 1/2^u of the output size,
//! where convolutions are cheap; nearest-neighbour upsamplings followed by 3x3 convolutions (no
//! transposed convolutions: no checkerboard) bring it to full size with ever fewer channels.
//!
//! Layers are candle-nn modules, so candle's autograd gives the weight gradients; there is no
//! max-pooling anywhere (candle's max_pool2d backward is wrong).

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::waves::{self, Wave};

/// What goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorKind {
    /// Seeded noise at the coarsest scale: a texture generator.
    Texture,
    /// A photo: a real-time style transfer network (Johnson et al. 2016).
    Stylize,
}

/// The shape of a generator; stored in the model file and checked on load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    pub kind: GeneratorKind,
    /// Noise channels at the coarsest scale (textures).
    pub noise_channels: usize,
    /// Fresh noise channels joined to the features at each finer scale (textures): fine detail
    /// gets randomness of its own (Ulyanov et al.'s multi-scale noise).
    pub scale_noise_channels: usize,
    /// Channels at the coarsest scale; each finer scale has half as many (at least 8).
    pub channels: usize,
    pub residual_blocks: usize,
    /// Factor-2 scales between the coarsest features and the output.
    pub upsamplings: usize,
    /// Dilation of each residual block's convolutions, block by block (empty: all 1; powers
    /// of two up to 16). Dilated blocks reach further at the same cost: the residual stage's
    /// receptive field grows with the sum of the dilations, not the number of blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dilations: Vec<usize>,
    /// Smooth noise channels joined to the coarsest noise (textures): normal values on a grid
    /// `layout_scale` coarse pixels apart, interpolated bilinearly. Regions larger than the
    /// network's reach can then follow the noise instead of being built from i.i.d. cells.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub layout_noise: usize,
    /// Spacing of the layout noise's grid, in coarse pixels (a power of two, 2 to 64).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub layout_scale: usize,
    /// Plane waves at the sample's periods (textures; [`super::waves`]): sin and cos of each,
    /// at a phase drawn from the seed, joined to the coarsest noise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Wave>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Architecture {
    /// The texture generator measured in the README: noise at 1/4 scale, 32 channels there.
    /// With three upsamplings (1/8 scale, 64 channels, about the same cost) the generator laid
    /// its elements out on the 8 px grid of its coarsest scale, one per cell: a lattice along
    /// the diagonals (gravel SWD 1,502 and 1,912 over two training seeds, against 1,142 and
    /// 1,575 with this one).
    pub fn texture() -> Self {
        Architecture {
            kind: GeneratorKind::Texture,
            noise_channels: 16,
            scale_noise_channels: 4,
            channels: 32,
            residual_blocks: 3,
            upsamplings: 2,
            dilations: Vec::new(),
            layout_noise: 0,
            layout_scale: 0,
            waves: Vec::new(),
        }
    }

    /// The style transfer network: two stride-2 downsamplings, residual blocks at 1/4.
    pub fn stylize() -> Self {
        Architecture {
            kind: GeneratorKind::Stylize,
            noise_channels: 0,
            scale_noise_channels: 0,
            channels: 64,
            residual_blocks: 4,
            upsamplings: 2,
            dilations: Vec::new(),
            layout_noise: 0,
            layout_scale: 0,
            waves: Vec::new(),
        }
    }

    /// Output sizes must be multiples of this (the generator crops a larger output otherwise):
    /// one coarse cell, times the largest dilation (a dilated convolution runs on the coarse
    /// map split into dilation x dilation interleaved grids, which must be whole).
    pub fn granule(&self) -> usize {
        (1 << self.upsamplings) * self.max_dilation().max(self.layout_grid())
    }

    /// The layout noise's grid spacing in coarse pixels (1 without layout noise): the coarse
    /// map must hold whole cells of it, so that the grid wraps round for tileable textures.
    fn layout_grid(&self) -> usize {
        if self.layout_noise > 0 {
            self.layout_scale
        } else {
            1
        }
    }

    /// Channels of the coarsest input: noise, layout noise, then sin and cos of each wave.
    pub fn coarse_inputs(&self) -> usize {
        self.noise_channels + self.layout_noise + 2 * self.waves.len()
    }

    /// The shortest wave period this generator takes, in output px: its coarse grid must
    /// sample a wave at least twice a period (and [`waves::MIN_PERIOD`] is the shortest read).
    pub fn min_wave_period(&self) -> f64 {
        let cell = (1usize << self.upsamplings.min(5)) as f64;
        (2.0 * cell).max(waves::MIN_PERIOD)
    }

    fn max_dilation(&self) -> usize {
        self.dilations.iter().copied().max().unwrap_or(1)
    }

    /// The dilation of residual block `i`.
    fn dilation(&self, i: usize) -> usize {
        self.dilations.get(i).copied().unwrap_or(1)
    }

    /// Channels at scale `s` (0 = coarsest).
    pub(super) fn channels_at(&self, s: usize) -> usize {
        (self.channels >> s).max(8)
    }

    /// Checks the numbers before building anything from them (they may come from a file).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let ok = (1..=512).contains(&self.channels)
            && self.residual_blocks <= 32
            && (1..=5).contains(&self.upsamplings)
            && match self.kind {
                GeneratorKind::Texture => {
                    (1..=256).contains(&self.noise_channels)
                        && self.scale_noise_channels <= 64
                        && self.layout_noise <= 64
                }
                GeneratorKind::Stylize => {
                    self.noise_channels == 0
                        && self.scale_noise_channels == 0
                        && self.layout_noise == 0
                        && self.waves.is_empty()
                }
            };
        let dilations_ok = (self.dilations.is_empty()
            || self.dilations.len() == self.residual_blocks)
            && self
                .dilations
                .iter()
                .all(|d| d.is_power_of_two() && *d <= 16);
        let layout_ok = self.layout_noise == 0
            || (self.layout_scale.is_power_of_two() && (2..=64).contains(&self.layout_scale));
        let waves_ok = self.waves.len() <= waves::MAX_WAVES
            && self.waves.iter().all(|w| {
                let p = w.period();
                w.x.is_finite() && w.y.is_finite() && p >= self.min_wave_period() && p <= 65_536.0
            });
        if !waves_ok {
            Err(format!(
                "at most {} waves, each with a period of {} to 65536 px and at least two coarse pixels, got {:?}",
                waves::MAX_WAVES,
                waves::MIN_PERIOD,
                self.waves
            ))
        } else if !layout_ok {
            Err(format!(
                "the layout noise's grid must be 2, 4, ... or 64 coarse pixels apart, got {}",
                self.layout_scale
            ))
        } else if !dilations_ok {
            Err(format!(
                "dilations must be one per residual block ({}), each 1, 2, 4, 8 or 16, got {:?}",
                self.residual_blocks, self.dilations
            ))
        } else if ok {
            Ok(())
        } else {
            Err(format!("unsupported generator architecture {self:?}"))
        }
    }
}

/// How convolutions see past the border.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Mirror the image (no zero-padding signature at the borders).
    Reflect,
    /// Wrap around: the output tiles seamlessly.
    Circular,
}

/// Pads `x` [N, C, H, W] by one pixel on each side.
fn pad1(x: &Tensor, padding: Padding) -> Result<Tensor> {
    let x = pad1_dim(x, 2, padding)?;
    pad1_dim(&x, 3, padding)
}

pub(super) fn pad1_dim(x: &Tensor, dim: usize, padding: Padding) -> Result<Tensor> {
    let n = x.dim(dim)?;
    let (first, last) = match padding {
        // Reflection needs two pixels; a 1-pixel dimension repeats itself.
        Padding::Reflect if n > 1 => (x.narrow(dim, 1, 1)?, x.narrow(dim, n - 2, 1)?),
        Padding::Reflect => (x.clone(), x.clone()),
        Padding::Circular => (x.narrow(dim, n - 1, 1)?, x.narrow(dim, 0, 1)?),
    };
    Tensor::cat(&[&first, x, &last], dim)
}

/// A 3x3 convolution on a padded input, optionally of stride 2.
pub(super) struct Conv3 {
    pub(super) conv: Conv2d,
    stride: usize,
    /// Taps `dilation` pixels apart (stride 1 only).
    dilation: usize,
    /// An instance normalisation follows, which cancels the bias: training leaves it out
    /// (it would get a zero gradient at the cost of a pass over the output and its sum).
    normalised: bool,
}

impl Conv3 {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            stride,
            ..Default::default()
        };
        Ok(Conv3 {
            conv: candle_nn::conv2d(cin, cout, 3, cfg, vb)?,
            stride,
            dilation: 1,
            normalised: false,
        })
    }

    fn dilated(self, dilation: usize) -> Self {
        Conv3 { dilation, ..self }
    }

    fn normalised(self) -> Self {
        Conv3 {
            normalised: true,
            ..self
        }
    }

    /// A convolution whose outputs start near zero: the last layer, so that the tanh after it
    /// starts unsaturated (mid-grey output) and its gradients flow from the first step.
    fn new_quiet(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        let init = candle_nn::Init::Randn {
            mean: 0.0,
            stdev: 1e-3,
        };
        let weight = vb.get_with_hints((cout, cin, 3, 3), "weight", init)?;
        let bias = vb.get_with_hints(cout, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Conv3 {
            conv: Conv2d::new(weight, Some(bias), Conv2dConfig::default()),
            stride: 1,
            dilation: 1,
            normalised: false,
        })
    }

    /// With `fast` (no gradients wanted), stride-1 convolutions run on the engine's own 3x3
    /// kernel, several times faster on the CPU than candle's im2col convolution.
    fn forward(&self, x: &Tensor, padding: Padding, fast: bool) -> Result<Tensor> {
        if self.dilation > 1 {
            // A dilated 3x3 convolution is a plain one on each of the d x d interleaved grids
            // (pixels d apart), so the same kernels run it, forwards and backwards. Circular
            // padding stays exact; mirrored borders mirror within each grid.
            let d = self.dilation;
            let n = x.dim(0)?;
            let y = self.forward_plain(&split_grids(x, d)?, padding, fast)?;
            return merge_grids(&y, n, d);
        }
        self.forward_plain(x, padding, fast)
    }

    fn forward_plain(&self, x: &Tensor, padding: Padding, fast: bool) -> Result<Tensor> {
        let bias = self
            .conv
            .bias()
            .expect("generator convolutions have a bias");
        let ours = self.stride == 1 && x.device().is_cpu() && x.dtype() == DType::F32;
        if !ours {
            return self.conv.forward(&pad1(x, padding)?);
        }
        if !fast {
            // Training: our kernels in both directions (candle's CPU backward is a slow loop).
            let y = pad1(x, padding)?.apply_op2(self.conv.weight(), super::conv::ValidConv3x3)?;
            if self.normalised {
                return Ok(y);
            }
            let cout = bias.dim(0)?;
            return y.broadcast_add(&bias.reshape((1, cout, 1, 1))?);
        }
        let conv = crate::vgg::conv::Conv3x3::new(self.conv.weight(), bias, x.device())?;
        match padding {
            Padding::Circular => conv.forward(x, true),
            Padding::Reflect => {
                // The kernel pads with zeros: convolve the mirrored image, keep the interior.
                let (_, _, h, w) = x.dims4()?;
                conv.forward(&pad1(x, padding)?, false)?
                    .narrow(2, 1, h)?
                    .narrow(3, 1, w)
            }
        }
    }
}

/// [N, C, H, W] -> [N * d * d, C, H / d, W / d]: the grid of pixels (i * d + a, j * d + b)
/// for each offset (a, b), as a batch. H and W must be multiples of d.
fn split_grids(x: &Tensor, d: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if h % d != 0 || w % d != 0 {
        candle_core::bail!("a {h}x{w} map does not split into grids {d} apart");
    }
    x.reshape((n, c, h / d, d, w / d, d))?
        .permute((0, 3, 5, 1, 2, 4))?
        .contiguous()?
        .reshape((n * d * d, c, h / d, w / d))
}

/// The inverse of [`split_grids`] for a batch of `n`.
fn merge_grids(y: &Tensor, n: usize, d: usize) -> Result<Tensor> {
    let (_, c, h, w) = y.dims4()?;
    y.reshape((n, d, d, c, h, w))?
        .permute((0, 3, 4, 1, 5, 2))?
        .contiguous()?
        .reshape((n, c, h * d, w * d))
}

/// Instance normalisation with a learnt scale and shift per channel (Ulyanov et al. 2016).
pub(super) struct InstanceNorm {
    pub(super) scale: Tensor,
    pub(super) shift: Tensor,
}

impl InstanceNorm {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(InstanceNorm {
            scale: vb.get_with_hints(c, "weight", candle_nn::Init::Const(1.0))?,
            shift: vb.get_with_hints(c, "bias", candle_nn::Init::Const(0.0))?,
        })
    }

    /// The normalisation, then a ReLU when `relu`: one op of our own on the CPU, candle's ops
    /// elsewhere.
    fn forward_act(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            return x.contiguous()?.apply_op3(
                &self.scale,
                &self.shift,
                super::norm::InstanceNormOp { relu },
            );
        }
        let y = self.forward(x)?;
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }
}

impl Module for InstanceNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let flat = x.reshape((n, c, h * w))?;
        let mean = flat.mean_keepdim(D::Minus1)?;
        let centred = flat.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + super::norm::EPS)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.scale.reshape((1, c, 1))?)?
            .broadcast_add(&self.shift.reshape((1, c, 1))?)?
            .reshape((n, c, h, w))
    }
}

/// Convolution, instance norm, ReLU.
pub(super) struct ConvBlock {
    pub(super) conv: Conv3,
    pub(super) norm: InstanceNorm,
}

impl ConvBlock {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        Ok(ConvBlock {
            conv: Conv3::new(cin, cout, stride, vb.pp("conv"))?.normalised(),
            norm: InstanceNorm::new(cout, vb.pp("norm"))?,
        })
    }

    fn forward(&self, x: &Tensor, padding: Padding, fast: bool) -> Result<Tensor> {
        self.norm
            .forward_act(&self.conv.forward(x, padding, fast)?, true)
    }
}

/// x + IN(conv(ReLU(IN(conv(x))))).
struct ResidualBlock {
    first: ConvBlock,
    conv: Conv3,
    norm: InstanceNorm,
}

impl ResidualBlock {
    fn new(c: usize, dilation: usize, vb: VarBuilder) -> Result<Self> {
        let mut first = ConvBlock::new(c, c, 1, vb.pp("a"))?;
        first.conv = first.conv.dilated(dilation);
        Ok(ResidualBlock {
            first,
            conv: Conv3::new(c, c, 1, vb.pp("b.conv"))?
                .dilated(dilation)
                .normalised(),
            norm: InstanceNorm::new(c, vb.pp("b.norm"))?,
        })
    }

    fn forward(&self, x: &Tensor, padding: Padding, fast: bool) -> Result<Tensor> {
        let y = self.first.forward(x, padding, fast)?;
        x + self
            .norm
            .forward_act(&self.conv.forward(&y, padding, fast)?, false)?
    }
}

/// The network. Build it over a `VarBuilder` (fresh variables for training, or a model file's).
pub struct Generator {
    pub arch: Architecture,
    /// Stylize: full-size convolution, then stride-2 blocks down to the coarsest scale.
    encoder: Vec<ConvBlock>,
    residual: Vec<ResidualBlock>,
    /// One per upsampling, coarse to fine.
    pub(super) decoder: Vec<ConvBlock>,
    pub(super) to_rgb: Conv3,
}

impl Generator {
    pub fn new(arch: &Architecture, vb: VarBuilder) -> Result<Self> {
        arch.validate().map_err(candle_core::Error::Msg)?;
        let u = arch.upsamplings;
        let coarse = arch.channels_at(0);
        let mut encoder = Vec::new();
        match arch.kind {
            GeneratorKind::Texture => encoder.push(ConvBlock::new(
                arch.coarse_inputs(),
                coarse,
                1,
                vb.pp("enc0"),
            )?),
            GeneratorKind::Stylize => {
                encoder.push(ConvBlock::new(3, arch.channels_at(u), 1, vb.pp("enc0"))?);
                for i in 0..u {
                    let (cin, cout) = (arch.channels_at(u - i), arch.channels_at(u - i - 1));
                    encoder.push(ConvBlock::new(
                        cin,
                        cout,
                        2,
                        vb.pp(format!("enc{}", i + 1)),
                    )?);
                }
            }
        }
        let residual = (0..arch.residual_blocks)
            .map(|i| ResidualBlock::new(coarse, arch.dilation(i), vb.pp(format!("res{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let decoder = (0..u)
            .map(|i| {
                let (cin, cout) = (
                    arch.channels_at(i) + arch.scale_noise_channels,
                    arch.channels_at(i + 1),
                );
                ConvBlock::new(cin, cout, 1, vb.pp(format!("dec{i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let to_rgb = Conv3::new_quiet(arch.channels_at(u), 3, vb.pp("rgb"))?;
        Ok(Generator {
            arch: arch.clone(),
            encoder,
            residual,
            decoder,
            to_rgb,
        })
    }

    /// Runs the network. Textures: `inputs` are the noise of [`Self::noise`]: [N,
    /// noise_channels, h, w] and then, per finer scale i = 1..=u, [N, scale_noise_channels,
    /// h * 2^i, w * 2^i]; the output is [N, 3, h * 2^u, w * 2^u]. Stylize: `inputs` is one RGB
    /// 0..255 [N, 3, H, W] with H and W multiples of 2^u, the output has its size. Output
    /// values are in 0..255.
    pub fn forward(&self, inputs: &[Tensor], padding: Padding) -> Result<Tensor> {
        self.run(inputs, padding, false)
    }

    /// [`Self::forward`] for inference only: no autograd graph, the engine's own kernels.
    pub fn infer(&self, inputs: &[Tensor], padding: Padding) -> Result<Tensor> {
        let inputs: Vec<Tensor> = inputs.iter().map(|t| t.detach()).collect();
        self.run(&inputs, padding, true)
    }

    fn run(&self, inputs: &[Tensor], padding: Padding, fast: bool) -> Result<Tensor> {
        let mut x = self.coarse_features(inputs, padding, fast)?;
        for (i, block) in self.decoder.iter().enumerate() {
            let (_, _, h, w) = x.dims4()?;
            let up = x.upsample_nearest2d(2 * h, 2 * w)?;
            let up = match inputs.get(i + 1) {
                Some(noise) => Tensor::cat(&[&up, noise], 1)?,
                None => up,
            };
            x = block.forward(&up, padding, fast)?;
        }
        let rgb = self.to_rgb.forward(&x, padding, fast)?;
        // tanh keeps values in range with a gradient everywhere (no clamp plateaus).
        (rgb.tanh()? + 1.0)?.affine(127.5, 0.0)
    }

    /// The encoder and the residual blocks: the features at the coarsest scale, before the
    /// first upsampling (after checking the inputs).
    pub(super) fn coarse_features(
        &self,
        inputs: &[Tensor],
        padding: Padding,
        fast: bool,
    ) -> Result<Tensor> {
        let want = match self.arch.kind {
            GeneratorKind::Texture if self.arch.scale_noise_channels > 0 => {
                1 + self.arch.upsamplings
            }
            _ => 1,
        };
        if inputs.len() != want {
            candle_core::bail!("the generator takes {want} inputs, got {}", inputs.len());
        }
        let mut x = match self.arch.kind {
            GeneratorKind::Texture => inputs[0].clone(),
            GeneratorKind::Stylize => inputs[0].affine(1.0 / 127.5, -1.0)?,
        };
        for block in &self.encoder {
            x = block.forward(&x, padding, fast)?;
        }
        for block in &self.residual {
            x = block.forward(&x, padding, fast)?;
        }
        Ok(x)
    }

    /// The noise of `seed` for an output of (at least) `width` x `height`: standard normal
    /// values from ChaCha8, at the coarsest scale and (with scale noise) at each finer one.
    /// With `tileable`, the waves are rounded to whole cycles over the output.
    pub fn noise(
        &self,
        width: usize,
        height: usize,
        seed: u64,
        tileable: bool,
        device: &Device,
    ) -> Result<Vec<Tensor>> {
        let g = self.arch.granule();
        let u = self.arch.upsamplings;
        let (w, h) = ((width.div_ceil(g) * g) >> u, (height.div_ceil(g) * g) >> u);
        let c = self.arch.noise_channels;
        let mut coarse = normal_noise(c * h * w, seed);
        if self.arch.layout_noise > 0 {
            coarse.extend(layout_noise(
                self.arch.layout_noise,
                h,
                w,
                self.arch.layout_scale,
                seed ^ 0x6C61_796F_7574_6E73,
            ));
        }
        coarse.extend(waves::wave_planes(
            &self.arch.waves,
            h,
            w,
            1 << u,
            seed ^ 0x7761_7665_7370_6861,
            tileable,
        ));
        let c = self.arch.coarse_inputs();
        let mut out = vec![Tensor::from_vec(coarse, (1, c, h, w), device)?];
        let k = self.arch.scale_noise_channels;
        if k > 0 {
            for i in 1..=self.arch.upsamplings {
                let (sh, sw) = (h << i, w << i);
                // Each scale's stream is its own: seed and scale hashed together.
                let s = seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
                out.push(Tensor::from_vec(
                    normal_noise(k * sh * sw, s),
                    (1, k, sh, sw),
                    device,
                )?);
            }
        }
        Ok(out)
    }

    /// A texture of exactly `width` x `height` from `seed` (the top-left of the generator's
    /// output when the size is not a multiple of its granule).
    pub fn generate(
        &self,
        width: usize,
        height: usize,
        seed: u64,
        tileable: bool,
        device: &Device,
    ) -> Result<Tensor> {
        if self.arch.kind != GeneratorKind::Texture {
            candle_core::bail!("this model transfers a style onto photos; it makes no textures");
        }
        let padding = if tileable {
            Padding::Circular
        } else {
            Padding::Reflect
        };
        let noise = self.noise(width, height, seed, tileable, device)?;
        // On the CPU in bands of rows: a 4096 px texture in 2.4 GB instead of 9.8 GB (measured).
        let out = if device.is_cpu() {
            self.infer_banded(&noise, padding, super::banded::BAND_ROWS)?
        } else {
            self.infer(&noise, padding)?
        };
        out.narrow(2, 0, height)?.narrow(3, 0, width)
    }

    /// Stylises RGB 0..255 [1, 3, H, W] of any size (mirror-padded to the granule, then cropped).
    pub fn stylize(&self, content: &Tensor) -> Result<Tensor> {
        if self.arch.kind != GeneratorKind::Stylize {
            candle_core::bail!("this model makes textures; it does not stylise photos");
        }
        let (_, _, h, w) = content.dims4()?;
        let g = self.arch.granule();
        let (ph, pw) = (h.div_ceil(g) * g - h, w.div_ceil(g) * g - w);
        let padded = reflect_pad_end(content, 2, ph)?;
        let padded = reflect_pad_end(&padded, 3, pw)?;
        let out = self.infer(&[padded], Padding::Reflect)?;
        out.narrow(2, 0, h)?.narrow(3, 0, w)
    }
}

/// Appends `extra` mirrored rows (dim 2) or columns (dim 3) at the end.
fn reflect_pad_end(x: &Tensor, dim: usize, extra: usize) -> Result<Tensor> {
    if extra == 0 {
        return Ok(x.clone());
    }
    let n = x.dim(dim)?;
    let mut parts = vec![x.clone()];
    for i in 0..extra {
        // Mirror without repeating the edge; a dimension shorter than the pad repeats its edge.
        let src = n.saturating_sub(2 + i % n.max(1)).min(n - 1);
        parts.push(x.narrow(dim, src, 1)?);
    }
    Tensor::cat(&parts, dim)
}

/// `channels` planes of `h` x `w` smooth noise: standard normal values on a grid `cell` pixels
/// apart (h and w multiples of it), interpolated bilinearly between grid points at cell
/// centres, wrapping round at the edges (so a tileable texture's layout wraps too).
fn layout_noise(channels: usize, h: usize, w: usize, cell: usize, seed: u64) -> Vec<f32> {
    let (gh, gw) = (h / cell, w / cell);
    let grid = normal_noise(channels * gh * gw, seed);
    // Grid point j sits at pixel (j + 0.5) * cell - 0.5; pixel i interpolates its two neighbours.
    let taps = |i: usize, cells: usize| {
        let t = (i as f32 + 0.5) / cell as f32 - 0.5;
        let j = t.floor();
        let f = t - j;
        let j0 = (j as isize).rem_euclid(cells as isize) as usize;
        ((j0, (j0 + 1) % cells), f)
    };
    let rows: Vec<_> = (0..h).map(|y| taps(y, gh)).collect();
    let cols: Vec<_> = (0..w).map(|x| taps(x, gw)).collect();
    let mut out = Vec::with_capacity(channels * h * w);
    for plane in grid.chunks_exact(gh * gw) {
        for &((r0, r1), fy) in &rows {
            for &((c0, c1), fx) in &cols {
                let top = plane[r0 * gw + c0] * (1.0 - fx) + plane[r0 * gw + c1] * fx;
                let bottom = plane[r1 * gw + c0] * (1.0 - fx) + plane[r1 * gw + c1] * fx;
                out.push(top * (1.0 - fy) + bottom * fy);
            }
        }
    }
    out
}

/// `n` standard normal values (Box-Muller over ChaCha8 uniforms).
pub fn normal_noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        out.push((r * t.cos()) as f32);
        out.push((r * t.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// A freshly initialised generator (for training) on `device`, its weights drawn from `seed`
/// (candle's own initialisers draw from an unseeded generator): convolutions He-normal with
/// zero bias (instance norm follows each), the last one near zero, norms the identity.
pub fn fresh(
    arch: &Architecture,
    device: &Device,
    seed: u64,
) -> Result<(Generator, candle_nn::VarMap)> {
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let g = Generator::new(arch, vb)?;
    let mut vars: Vec<(String, candle_core::Var)> = {
        let data = varmap.data().lock().expect("var map lock");
        data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (i, (name, var)) in vars.iter().enumerate() {
        if name.contains("norm.") {
            continue; // ones and zeros already
        }
        let value = if var.rank() == 4 {
            let (_, cin, kh, kw) = var.dims4()?;
            let std = if name.starts_with("rgb.") {
                1e-3
            } else {
                (2.0 / (cin * kh * kw) as f32).sqrt()
            };
            let v = normal_noise(
                var.elem_count(),
                seed ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
            );
            Tensor::from_vec(
                v.into_iter().map(|x| x * std).collect::<Vec<_>>(),
                var.shape(),
                device,
            )?
        } else {
            var.zeros_like()?
        };
        var.set(&value)?;
    }
    Ok((g, varmap))
}

#[cfg(test)]
pub(super) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("tensors of one shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_the_granule() {
        let dev = Device::Cpu;
        let arch = Architecture {
            channels: 16,
            residual_blocks: 1,
            ..Architecture::texture()
        };
        let (g, _) = fresh(&arch, &dev, 1).unwrap();
        let t = g.generate(50, 37, 1, false, &dev).unwrap();
        assert_eq!(t.dims(), &[1, 3, 37, 50]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert!(v.iter().all(|x| (0.0..=255.0).contains(x)));
        let s = Architecture {
            channels: 16,
            residual_blocks: 1,
            ..Architecture::stylize()
        };
        let (g, _) = fresh(&s, &dev, 1).unwrap();
        let photo = Tensor::full(100f32, (1, 3, 30, 41), &dev).unwrap();
        assert_eq!(g.stylize(&photo).unwrap().dims(), &[1, 3, 30, 41]);
    }

    #[test]
    fn the_fast_inference_path_matches_the_trained_one() {
        let dev = Device::Cpu;
        for (arch, input) in [
            (
                Architecture {
                    channels: 16,
                    residual_blocks: 1,
                    ..Architecture::texture()
                },
                None,
            ),
            (
                Architecture {
                    channels: 16,
                    residual_blocks: 1,
                    ..Architecture::stylize()
                },
                Some(()),
            ),
        ] {
            let (g, _) = fresh(&arch, &dev, 1).unwrap();
            let x = match input {
                None => g.noise(64, 48, 7, false, &dev).unwrap(),
                Some(()) => vec![Tensor::from_vec(
                    normal_noise(3 * 32 * 40, 2)
                        .iter()
                        .map(|v| 128.0 + 40.0 * v)
                        .collect::<Vec<_>>(),
                    (1, 3, 32, 40),
                    &dev,
                )
                .unwrap()],
            };
            for padding in [Padding::Reflect, Padding::Circular] {
                let a = g.forward(&x, padding).unwrap();
                let b = g.infer(&x, padding).unwrap();
                let d = max_abs_diff(&a, &b);
                assert!(d < 0.05, "{:?} {padding:?}: {d}", arch.kind);
            }
        }
    }

    #[test]
    fn a_dilated_convolution_matches_candles() {
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let d = 2;
        let conv = Conv3::new(4, 5, 1, vb).unwrap().dilated(d);
        let x = Tensor::from_vec(normal_noise(2 * 4 * 12 * 16, 5), (2, 4, 12, 16), &dev).unwrap();
        // Circular padding by d on each side, then candle's dilated convolution.
        let wrap = |t: &Tensor, dim: usize| {
            let n = t.dim(dim).unwrap();
            Tensor::cat(
                &[
                    &t.narrow(dim, n - d, d).unwrap(),
                    t,
                    &t.narrow(dim, 0, d).unwrap(),
                ],
                dim,
            )
            .unwrap()
        };
        let padded = wrap(&wrap(&x, 2), 3);
        let bias = conv.conv.bias().unwrap().reshape((1, 5, 1, 1)).unwrap();
        let want = padded
            .conv2d(conv.conv.weight(), 0, 1, d, 1)
            .unwrap()
            .broadcast_add(&bias)
            .unwrap();
        for fast in [false, true] {
            let got = conv.forward(&x, Padding::Circular, fast).unwrap();
            assert_eq!(got.dims(), want.dims());
            let diff = max_abs_diff(&got, &want);
            assert!(diff < 1e-3, "fast {fast}: {diff}");
        }
        // Sizes the grids do not divide are refused, not misread.
        let odd = Tensor::zeros((1, 4, 7, 8), DType::F32, &dev).unwrap();
        assert!(conv.forward(&odd, Padding::Reflect, true).is_err());
    }

    #[test]
    fn a_dilated_generator_makes_any_size_and_its_passes_agree() {
        let dev = Device::Cpu;
        let arch = Architecture {
            channels: 16,
            residual_blocks: 2,
            dilations: vec![2, 4],
            ..Architecture::texture()
        };
        assert_eq!(arch.granule(), 16);
        let (g, _) = fresh(&arch, &dev, 2).unwrap();
        let t = g.generate(50, 37, 1, false, &dev).unwrap();
        assert_eq!(t.dims(), &[1, 3, 37, 50]);
        let noise = g.noise(48, 32, 3, false, &dev).unwrap();
        for padding in [Padding::Reflect, Padding::Circular] {
            let whole = g.infer(&noise, padding).unwrap();
            let trained = g.forward(&noise, padding).unwrap();
            assert!(max_abs_diff(&whole, &trained) < 0.05);
            let banded = g.infer_banded(&noise, padding, 5).unwrap();
            assert!(max_abs_diff(&whole, &banded) < 1e-2);
        }
        for bad in [vec![3, 1], vec![2], vec![32, 1]] {
            let a = Architecture {
                dilations: bad,
                ..arch.clone()
            };
            assert!(a.validate().is_err(), "{:?}", a.dilations);
        }
    }

    #[test]
    fn banded_generation_matches_the_whole_image_pass() {
        let dev = Device::Cpu;
        let arch = Architecture {
            channels: 16,
            residual_blocks: 1,
            ..Architecture::texture()
        };
        let (g, _) = fresh(&arch, &dev, 3).unwrap();
        // Sizes with one coarse row (a 2-row first stage) and bands that do not divide them.
        for (w, h) in [(72, 56), (40, 8)] {
            let noise = g.noise(w, h, 9, false, &dev).unwrap();
            for padding in [Padding::Reflect, Padding::Circular] {
                let whole = g.infer(&noise, padding).unwrap();
                for band in [1, 5, 64] {
                    let banded = g.infer_banded(&noise, padding, band).unwrap();
                    assert_eq!(banded.dims(), whole.dims());
                    let d = max_abs_diff(&whole, &banded);
                    assert!(d < 1e-2, "{w}x{h} {padding:?} band {band}: {d}");
                }
            }
        }
    }

    #[test]
    fn layout_noise_is_smooth_wraps_round_and_feeds_the_generator() {
        let (h, w, cell) = (16, 24, 8);
        let v = layout_noise(2, h, w, cell, 7);
        assert_eq!(v, layout_noise(2, h, w, cell, 7));
        assert_ne!(v, layout_noise(2, h, w, cell, 8));
        let at = |c: usize, y: usize, x: usize| v[(c * h + y) * w + x % w];
        // Steps between neighbours, the wrap from the last column to the first included, are
        // a fraction of the grid values' spread (i.i.d. noise: about 1.4).
        let mut largest = 0f32;
        for c in 0..2 {
            for y in 0..h {
                for x in 0..w {
                    largest = largest.max((at(c, y, x + 1) - at(c, y, x)).abs());
                }
            }
        }
        assert!(largest < 0.6, "{largest}");
        // Grid values sit between pixel centres 3 and 4 of each cell: the planes vary.
        let spread = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(spread > 0.5, "{spread}");

        let dev = Device::Cpu;
        let arch = Architecture {
            channels: 16,
            residual_blocks: 1,
            layout_noise: 2,
            layout_scale: 4,
            ..Architecture::texture()
        };
        assert_eq!(arch.granule(), 16);
        let (g, _) = fresh(&arch, &dev, 2).unwrap();
        let noise = g.noise(40, 20, 1, false, &dev).unwrap();
        assert_eq!(noise[0].dims(), &[1, 18, 8, 12]);
        let t = g.generate(40, 20, 1, true, &dev).unwrap();
        assert_eq!(t.dims(), &[1, 3, 20, 40]);
        for scale in [0, 1, 3, 128] {
            let a = Architecture {
                layout_scale: scale,
                ..arch.clone()
            };
            assert!(a.validate().is_err(), "{scale}");
        }
    }

    #[test]
    fn noise_is_deterministic_per_seed() {
        assert_eq!(normal_noise(100, 3), normal_noise(100, 3));
        assert_ne!(normal_noise(100, 3), normal_noise(100, 4));
        let v = normal_noise(20000, 1);
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }

    #[test]
    fn circular_padding_makes_a_seamless_tile() {
        let dev = Device::Cpu;
        let arch = Architecture {
            channels: 16,
            residual_blocks: 1,
            upsamplings: 2,
            ..Architecture::texture()
        };
        let (g, _) = fresh(&arch, &dev, 1).unwrap();
        // A circularly padded network is translation-equivariant on the torus: rolling the
        // noise by one coarse cell rolls the output by the granule.
        let noise = g.noise(32, 32, 5, false, &dev).unwrap();
        // Roll each scale's noise by its share of 4 output px (one coarse cell).
        let rolled: Vec<Tensor> = noise
            .iter()
            .map(|t| {
                let w = t.dim(3).unwrap();
                let k = w / 8;
                Tensor::cat(
                    &[t.narrow(3, k, w - k).unwrap(), t.narrow(3, 0, k).unwrap()],
                    3,
                )
                .unwrap()
            })
            .collect();
        let a = g.forward(&noise, Padding::Circular).unwrap();
        let b = g.forward(&rolled, Padding::Circular).unwrap();
        let a_rolled = Tensor::cat(
            &[a.narrow(3, 4, 28).unwrap(), a.narrow(3, 0, 4).unwrap()],
            3,
        )
        .unwrap();
        let d = max_abs_diff(&a_rolled, &b);
        assert!(d < 1e-3, "{d}");
    }
}
