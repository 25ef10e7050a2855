//! Planning the coarse-to-fine levels.

use super::style::patch_count;
use crate::vgg::LayerId;

/// One level of the pyramid: the size of the image being made and the style's scale there.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Level {
    pub width: u32,
    pub height: u32,
    /// Factor applied to the (already style-scaled) style image at this level.
    pub style_factor: f32,
}

/// Fewest style patches an MRF layer should offer; fewer lay the output out as a visible
/// lattice (a 48 px sample gives 9 relu4_1 patches). The default of `--min-style-patches`.
pub const MIN_STYLE_PATCHES: usize = 36;

fn scale_dim(v: u32, f: f32) -> u32 {
    ((v as f32 * f).round() as u32).max(1)
}

/// Levels from coarsest to finest. Coarse levels are dropped (with a note) when the output
/// would be too small for the deepest layer, or the style gives fewer than `min_patches`
/// patches at an MRF layer.
#[allow(clippy::too_many_arguments)] // a flat list of the sizes and knobs the plan reads
pub fn plan(
    out: (u32, u32),
    style: (u32, u32),
    levels: usize,
    ratio: f32,
    mrf_layers: &[LayerId],
    deepest: LayerId,
    patch: usize,
    stride: usize,
    min_patches: usize,
    notes: &mut Vec<String>,
) -> Vec<Level> {
    let mut plan = Vec::new();
    for i in (0..levels).rev() {
        let f = ratio.powi(i as i32);
        let (w, h) = (scale_dim(out.0, f), scale_dim(out.1, f));
        let (sw, sh) = (scale_dim(style.0, f), scale_dim(style.1, f));
        let finest = i == 0;
        let out_patches = patch_count(w, h, deepest, patch, 1);
        let style_patches = mrf_layers
            .iter()
            .map(|&l| patch_count(sw, sh, l, patch, stride))
            .min()
            .unwrap_or(usize::MAX);
        if !finest && (out_patches == 0 || style_patches < min_patches.max(1)) {
            notes.push(format!(
                "skipped pyramid level {w}x{h}: the style at {sw}x{sh} gives {style_patches} patches at its deepest MRF layer (need {min_patches})"
            ));
            continue;
        }
        plan.push(Level {
            width: w,
            height: h,
            style_factor: f,
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_samples_drop_coarse_levels() {
        let layers: Vec<LayerId> = LayerId::parse_list("relu3_1,relu4_1").unwrap();
        let deepest = layers[1];
        let mut notes = Vec::new();
        let big = plan(
            (384, 384),
            (1024, 1024),
            3,
            0.5,
            &layers,
            deepest,
            3,
            2,
            MIN_STYLE_PATCHES,
            &mut notes,
        );
        assert_eq!(
            big.iter().map(|l| l.width).collect::<Vec<_>>(),
            vec![96, 192, 384]
        );
        assert!(notes.is_empty());
        let small = plan(
            (384, 384),
            (128, 128),
            3,
            0.5,
            &layers,
            deepest,
            3,
            2,
            MIN_STYLE_PATCHES,
            &mut notes,
        );
        assert_eq!(small.len(), 1, "{small:?}");
        assert_eq!(notes.len(), 2);
    }
}
