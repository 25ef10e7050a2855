//! The priors of one pyramid level: the MRF, guided correspondence or Gram losses over the
//! sample's features at that level's scale, plus the content loss of a transfer.

use candle_core::Tensor;

use super::{augment, style, Level, MatcherKind, Params, PriorKind, Task};
use crate::image_io::{resize, RgbImageF32};
use crate::matcher::{self, ApproxMatcher, ApproxOptions, ExactMatcher, PatchMatcher};
use crate::prior::correspondence::{Assignment, CorrespondenceLayer, CorrespondencePrior};
use crate::prior::gram::GramPrior;
use crate::prior::mrf::{MrfLayer, MrfPrior};
use crate::prior::{ContentLoss, FeatureLoss};
use crate::vgg::Vgg19;

/// A level's priors, and the style patch count of each MRF layer.
type LevelPriors<'a> = (Vec<Box<dyn FeatureLoss + 'a>>, Vec<usize>);

/// Per bank row, its style's blend weight relative to the largest, or None when all styles
/// weigh the same: several exemplars' `blend` weights bias the MRF matching toward the heavier.
fn match_bias(
    blend: &[f64],
    ends: &[usize],
    device: &candle_core::Device,
) -> candle_core::Result<Option<Tensor>> {
    let top = blend.iter().cloned().fold(0.0, f64::max);
    if blend.len() < 2 || blend.iter().all(|&b| b == top) {
        return Ok(None);
    }
    let mut w = Vec::with_capacity(ends.last().copied().unwrap_or(0));
    let mut start = 0;
    for (&end, &b) in ends.iter().zip(blend) {
        w.extend(std::iter::repeat_n((b / top) as f32, end - start));
        start = end;
    }
    Tensor::from_vec(w, ends.last().copied().unwrap_or(0), device).map(Some)
}

/// How the patch priors cut the sample's patches.
fn bank_cut(params: &Params) -> style::BankCut {
    style::BankCut {
        patch: params.patch_size,
        stride: params.style_stride,
        full_grid: params.full_grid,
        mirror: params.mirror_style,
    }
}

/// The priors of one level, built at that level's scale.
pub(crate) fn level_priors<'a>(
    vgg: &Vgg19,
    styles: &[RgbImageF32],
    blend: &[f64],
    task: &Task<'_>,
    level: &Level,
    params: &Params,
) -> crate::Result<LevelPriors<'a>> {
    let level_styles: Vec<RgbImageF32> = styles
        .iter()
        .map(|s| augment::scaled_with(s, level.style_factor, params.resample))
        .collect();
    let mut priors: Vec<Box<dyn FeatureLoss>> = Vec::new();
    let mut style_patches = Vec::new();
    if params.prior.uses_mrf() {
        // One bank per layer from every style (and its variants), remembering where each
        // style's patches end so the run can report which sample it drew from.
        let mut per_style = Vec::new();
        let mut map_scales = Vec::new();
        for (k, s) in level_styles.iter().enumerate() {
            let variants = augment::variants(s, params.rotations, params.scales, params.resample);
            let maps = params.guides.as_ref().map(|g| {
                let m = resize(&g.style_maps[k], s.width, s.height);
                augment::variants(&m, params.rotations, params.scales, params.resample)
            });
            let weight = params.guides.as_ref().map_or(0.0, |g| g.weight);
            let (banks, scales) = style::guided_mrf_banks(
                vgg,
                &variants,
                maps.as_deref(),
                weight,
                &params.mrf_layers,
                bank_cut(params),
            )?;
            per_style.push(banks);
            map_scales.push(scales);
        }
        let mut layers = Vec::new();
        for (i, layer) in params.mrf_layers.iter().enumerate() {
            let parts: Vec<&Tensor> = per_style.iter().map(|b| &b[i]).collect();
            let mut ends = Vec::new();
            let mut total = 0;
            for p in &parts {
                total += p.dim(0)?;
                ends.push(total);
            }
            let bank = Tensor::cat(&parts, 0)?;
            style_patches.push(total);
            let row_weights = match_bias(blend, &ends, bank.device())?;
            let kind = match params.matcher {
                MatcherKind::Auto => auto_matcher(&bank, row_weights.is_some()),
                kind => kind,
            };
            let matcher: Box<dyn PatchMatcher> = match kind {
                // The occurrence penalty needs a matcher with a penalised search: the tensor
                // matcher (any device) or the approximate one.
                MatcherKind::Exact if params.occurrence > 0.0 => {
                    let m = ExactMatcher::new(&bank, params.match_budget)?;
                    Box::new(match &row_weights {
                        Some(w) => m.with_row_weights(w)?,
                        None => m,
                    })
                }
                MatcherKind::Exact => matcher::exact_for(
                    &bank,
                    params.match_budget,
                    params.bank_precision.dtype(),
                    row_weights.as_ref(),
                )?,
                MatcherKind::Approx | MatcherKind::Auto => Box::new(ApproxMatcher::new(
                    &bank,
                    ApproxOptions {
                        f16_bank: true,
                        seed: params.seed,
                        ..ApproxOptions::default()
                    },
                )?),
            };
            let mut l = MrfLayer::new(
                *layer,
                bank,
                matcher,
                params.mrf_weight,
                params.patch_size,
                params.stride,
            );
            l.style_ends = ends;
            l.full_grid = params.full_grid;
            l.gradient = params.mrf_gradient;
            l.occurrence = params.occurrence;
            if let Some(g) = &params.guides {
                let d = layer.downsampling();
                let (fw, fh) = ((level.width >> d) as usize, (level.height >> d) as usize);
                l.guide = Some(style::map_channels(
                    &g.target_map,
                    fw,
                    fh,
                    map_scales[0][i],
                    vgg.device(),
                )?);
            }
            layers.push(l);
        }
        priors.push(Box::new(MrfPrior { layers }));
    }
    if params.prior == PriorKind::Correspondence {
        let variants: Vec<RgbImageF32> = level_styles
            .iter()
            .flat_map(|s| augment::variants(s, params.rotations, params.scales, params.resample))
            .collect();
        let (banks, _) = style::guided_mrf_banks(
            vgg,
            &variants,
            None,
            0.0,
            &params.mrf_layers,
            bank_cut(params),
        )?;
        let assignment = Assignment {
            bandwidth: params.gc_bandwidth,
            occurrence: params.occurrence,
            top_k: params.gc_top_k,
        };
        let mut layers = Vec::new();
        for (layer, bank) in params.mrf_layers.iter().zip(&banks) {
            style_patches.push(bank.dim(0)?);
            let mut l = CorrespondenceLayer::new(
                *layer,
                bank,
                params.mrf_weight,
                params.patch_size,
                params.stride,
                assignment,
                params.seed,
            )?;
            l.max_queries = params.gc_max_queries;
            l.full_grid = params.full_grid;
            layers.push(l);
        }
        priors.push(Box::new(CorrespondencePrior { layers }));
    }
    if params.prior.uses_gram() {
        let feats = level_styles
            .iter()
            .map(|s| {
                let input = vgg.preprocess(&s.to_tensor(vgg.device())?)?;
                Ok(vgg.forward(&input, &params.gram_layers, false)?.features)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        priors.push(Box::new(GramPrior::from_styles(
            &params.gram_layers,
            &feats,
            blend,
            params.gram_weight,
        )?));
    }
    if let Task::Transfer { content } = task {
        if params.content_weight > 0.0 {
            let c = resize(content, level.width, level.height);
            let input = vgg.preprocess(&c.to_tensor(vgg.device())?)?;
            let target = vgg
                .forward(&input, &[params.content_layer], false)?
                .features[&params.content_layer]
                .clone();
            priors.push(Box::new(ContentLoss::new(
                params.content_layer,
                target,
                params.content_weight,
            )));
        }
    }
    Ok((priors, style_patches))
}

/// Banks of at least this many patches are searched approximately under `--matcher auto`: the
/// main job's finest relu3_1 bank (512 px sample, 4096 patches) searched in a quarter of the
/// time at the same picture; smaller banks gain little (see the README's Quality section).
pub const AUTO_APPROX_MIN_PATCHES: usize = 4096;

/// What `--matcher auto` uses for `bank`: the approximate search for large banks on the CPU,
/// the exact one elsewhere (a GPU's exact kernel is fast; blend weights need the exact search).
fn auto_matcher(bank: &Tensor, row_weighted: bool) -> MatcherKind {
    let large = bank.dim(0).is_ok_and(|m| m >= AUTO_APPROX_MIN_PATCHES);
    if large && bank.device().is_cpu() && !row_weighted {
        MatcherKind::Approx
    } else {
        MatcherKind::Exact
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_matcher_is_approximate_only_for_large_unweighted_cpu_banks() {
        let bank = |m| Tensor::zeros((m, 8), candle_core::DType::F32, &candle_core::Device::Cpu);
        let large = bank(AUTO_APPROX_MIN_PATCHES).unwrap();
        let small = bank(AUTO_APPROX_MIN_PATCHES - 1).unwrap();
        assert_eq!(auto_matcher(&large, false), MatcherKind::Approx);
        assert_eq!(auto_matcher(&small, false), MatcherKind::Exact);
        assert_eq!(
            auto_matcher(&large, true),
            MatcherKind::Exact,
            "blend weights"
        );
    }
}
