//! Style patch banks: the style image's VGG patches at each MRF layer.

use candle_core::{Result, Tensor};

use super::augment::mirror_pad;
use crate::image_io::RgbImageF32;
use crate::prior::patches::{positions, unfold};
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

/// One bank [M, C*k*k] per layer from every style variant.
pub fn mrf_banks(
    vgg: &Vgg19,
    variants: &[RgbImageF32],
    layers: &[LayerId],
    patch: usize,
    stride: usize,
) -> Result<Vec<Tensor>> {
    let mut per_layer: Vec<Vec<Tensor>> = vec![Vec::new(); layers.len()];
    for img in variants {
        let padded = mirror_pad(img, STYLE_MARGIN);
        let input = vgg.preprocess(&padded.to_tensor(vgg.device())?)?;
        let fwd = vgg.forward(&input, layers, false)?;
        for (i, layer) in layers.iter().enumerate() {
            let d = layer.downsampling();
            let m = (STYLE_MARGIN >> d) as usize;
            let (fh, fw) = ((img.height >> d) as usize, (img.width >> d) as usize);
            if positions(fh, patch, stride) == 0 || positions(fw, patch, stride) == 0 {
                continue; // this variant is too small for this layer; others may not be
            }
            let f = &fwd.features[layer];
            let crop = f.narrow(2, m, fh)?.narrow(3, m, fw)?.squeeze(0)?;
            per_layer[i].push(unfold(&crop, patch, stride)?);
        }
    }
    per_layer
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
        .collect()
}
