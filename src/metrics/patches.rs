//! MRF patch statistics: how well the image's feature patches are explained by the style's.
//!
//! The style bank is every `patch` x `patch` patch (stride `stride`) of the style's feature map
//! at a layer, cut by [`crate::prior::patches::unfold`]; the queries are the same for the image.
//! Each query is matched to the bank patch of highest cosine by [`ExactMatcher`], as the MRF
//! prior does.

use candle_core::{Result, Tensor};
use serde::Serialize;

use crate::matcher::{ExactMatcher, PatchMatcher};
use crate::prior::patches::{positions, unfold};

/// Largest score block the matcher holds at once (floats).
const MATCH_BUDGET: usize = 1 << 22;

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PatchStats {
    /// Mean over the image's patches of the cosine to the nearest style patch (-1..1; ReLU
    /// features make it 0..1). A patch of all zeros scores 0.
    pub mean_cosine: f64,
    /// Distinct bank patches chosen as a nearest neighbour, over the bank size (0..1).
    pub coverage: f64,
    pub bank_size: usize,
    pub queries: usize,
}

/// Patch statistics of `image` [1, C, H, W] against `style` [1, C, H', W'], or None when either
/// map is smaller than one patch.
pub fn patch_stats(
    image: &Tensor,
    style: &Tensor,
    patch: usize,
    stride: usize,
) -> Result<Option<PatchStats>> {
    let fits = |t: &Tensor| -> Result<bool> {
        let (_, _, h, w) = t.dims4()?;
        Ok(positions(h, patch, stride) > 0 && positions(w, patch, stride) > 0)
    };
    if !fits(image)? || !fits(style)? {
        return Ok(None);
    }
    let bank = unfold(&style.squeeze(0)?, patch, stride)?;
    let queries = unfold(&image.squeeze(0)?, patch, stride)?;
    let matcher = ExactMatcher::new(&bank, MATCH_BUDGET)?;
    let m = matcher.best(&queries)?;
    let index: Vec<u32> = m.index.to_vec1()?;
    let bank_size = matcher.len();
    let mut used = vec![false; bank_size];
    for &i in &index {
        used[i as usize] = true;
    }
    let distinct = used.iter().filter(|&&u| u).count();
    // Clamped: an exact match can round a hair above 1 in f32.
    let mean_cosine = m
        .score
        .iter()
        .map(|&s| (s as f64).clamp(-1.0, 1.0))
        .sum::<f64>()
        / m.score.len() as f64;
    Ok(Some(PatchStats {
        mean_cosine,
        coverage: distinct as f64 / bank_size as f64,
        bank_size,
        queries: index.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn identical_maps_match_themselves() -> Result<()> {
        let f = Tensor::rand(0f32, 1f32, (1, 4, 9, 7), &Device::Cpu)?;
        let s = patch_stats(&f, &f, 3, 2)?.unwrap();
        assert_eq!((s.bank_size, s.queries), (12, 12));
        assert!(
            (s.mean_cosine - 1.0).abs() < 1e-5 && s.mean_cosine <= 1.0,
            "{}",
            s.mean_cosine
        );
        assert_eq!(s.coverage, 1.0);
        // A constant image uses one style patch at most (whichever is most uniform).
        let flat = Tensor::ones((1, 4, 9, 7), candle_core::DType::F32, &Device::Cpu)?;
        let s = patch_stats(&flat, &f, 3, 2)?.unwrap();
        assert!((s.coverage - 1.0 / 12.0).abs() < 1e-12);
        assert!(patch_stats(&f.narrow(2, 0, 2)?, &f, 3, 2)?.is_none());
        Ok(())
    }
}
