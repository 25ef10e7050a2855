//! Style patch banks: the style image's VGG patches at each MRF layer.

use candle_core::{Result, Tensor};

use super::augment::mirror_pad;
use crate::image_io::{resize, RgbImageF32};
use crate::prior::patches::{positions, unfold_grid, Grid};
use crate::vgg::{LayerId, Vgg19};

/// Mirror padding (px) around a style image before the network sees it, cropped off again in
/// feature space. Border features then carry no zero-padding signature, which would otherwise
/// anchor the output's borders and corners to the sample's and grow a verbatim copy from them.
/// A multiple of 16 so the crop is exact down to relu5_x.
pub const STYLE_MARGIN: u32 = 32;

/// Number of `patch` x `patch` positions at `stride` that an image of `w` x `h` px gives at `layer`.
pub fn patch_count(w: u32, h: u32, layer: LayerId, patch: usize, stride: usize) -> usize {
    let d = layer.downsampling();
    positions((h >> d) as usize, patch, stride) * positions((w >> d) as usize, patch, stride)
}

/// How style patches are cut from the sample's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BankCut {
    pub patch: usize,
    pub stride: usize,
    /// Also the last row and column of starts (see [`Grid::new`]).
    pub full_grid: bool,
    /// Features computed on a mirror-padded sample ([`STYLE_MARGIN`]) and cropped back, or on
    /// the sample as it is (zero padding at its borders, as CNNMRF).
    pub mirror: bool,
}

impl BankCut {
    /// Strided grid, mirror-padded features.
    pub fn strided(patch: usize, stride: usize) -> Self {
        BankCut {
            patch,
            stride,
            full_grid: false,
            mirror: true,
        }
    }
}

/// One bank [M, C*k*k] per layer from every style variant (strided grid, mirror-padded).
pub fn mrf_banks(
    vgg: &Vgg19,
    variants: &[RgbImageF32],
    layers: &[LayerId],
    patch: usize,
    stride: usize,
) -> Result<Vec<Tensor>> {
    Ok(guided_mrf_banks(
        vgg,
        variants,
        None,
        0.0,
        layers,
        BankCut::strided(patch, stride),
    )?
    .0)
}

/// A guide map at a layer's resolution as extra channels [3, h, w] in 0..`scale`.
pub fn map_channels(
    map: &RgbImageF32,
    w: usize,
    h: usize,
    scale: f32,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let small = resize(map, w as u32, h as u32);
    Tensor::from_slice(&small.data, (3, h, w), device)?.affine(scale as f64 / 255.0, 0.0)
}

/// Banks as [`mrf_banks`]; with guide `maps` (one per variant), each patch also carries the
/// map's colour at its place, scaled so that at `map_weight` 1 the map weighs as much as the features, so that
/// matching prefers patches from regions of the same colour (after neural-doodle). Returns the
/// banks and that scale per layer, which the target map must use too.
pub fn guided_mrf_banks(
    vgg: &Vgg19,
    variants: &[RgbImageF32],
    maps: Option<&[RgbImageF32]>,
    map_weight: f32,
    layers: &[LayerId],
    cut: BankCut,
) -> Result<(Vec<Tensor>, Vec<f32>)> {
    let BankCut { patch, stride, .. } = cut;
    let margin = if cut.mirror { STYLE_MARGIN } else { 0 };
    let mut per_layer: Vec<Vec<Tensor>> = vec![Vec::new(); layers.len()];
    let mut scales: Vec<Option<f32>> = vec![None; layers.len()];
    for (v, img) in variants.iter().enumerate() {
        let input = if margin > 0 {
            vgg.preprocess(&mirror_pad(img, margin).to_tensor(vgg.device())?)?
        } else {
            vgg.preprocess(&img.to_tensor(vgg.device())?)?
        };
        let fwd = vgg.forward(&input, layers, false)?;
        for (i, layer) in layers.iter().enumerate() {
            let d = layer.downsampling();
            let m = (margin >> d) as usize;
            let (fh, fw) = ((img.height >> d) as usize, (img.width >> d) as usize);
            if positions(fh, patch, stride) == 0 || positions(fw, patch, stride) == 0 {
                continue; // this variant is too small for this layer; others may not be
            }
            let f = &fwd.features[layer];
            let mut crop = f.narrow(2, m, fh)?.narrow(3, m, fw)?.squeeze(0)?;
            if let Some(maps) = maps {
                let scale = match scales[i] {
                    Some(s) => s,
                    None => {
                        // Weight 1: the map's 3 channels carry as much energy as the C feature
                        // channels together, so a patch of the wrong colour is clearly worse.
                        let rms = crop.sqr()?.mean_all()?.sqrt()?.to_scalar::<f32>()?;
                        let channels = crop.dim(0)? as f32;
                        *scales[i].insert(map_weight * rms * (channels / 3.0).sqrt())
                    }
                };
                let extra = map_channels(&maps[v], fw, fh, scale, crop.device())?;
                crop = Tensor::cat(&[crop, extra], 0)?;
            }
            let grid = Grid::new(fh, fw, patch, stride, cut.full_grid);
            per_layer[i].push(unfold_grid(&crop, patch, stride, &grid)?);
        }
    }
    let banks = per_layer
        .into_iter()
        .zip(layers)
        .map(|(banks, layer)| {
            if banks.is_empty() {
                candle_core::bail!(
                    "the style image is too small for a {patch}x{patch} patch at {layer}"
                );
            }
            Tensor::cat(&banks, 0)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((
        banks,
        scales.into_iter().map(|s| s.unwrap_or(0.0)).collect(),
    ))
}
