//! Planning a run before any optimisation: the scaled samples, the pyramid's levels, sizes
//! that cannot work, and memory admission (which levels are made in tiles, or a refusal).

use anyhow::bail;

use super::{augment, memory, pyramid, style, tiles, Level, MatcherKind, Params, Task};
use crate::image_io::RgbImageF32;
use crate::vgg::LayerId;

/// Style images at the scale the run uses: a texture's sample keeps its own scale (times
/// --style-scale); a transfer's style is sized to the output's long side.
fn scaled_styles(styles: &[RgbImageF32], task: &Task<'_>, params: &Params) -> Vec<RgbImageF32> {
    styles
        .iter()
        .map(|s| match task {
            Task::Texture => augment::scaled(s, params.style_scale),
            Task::Transfer { .. } => {
                let long =
                    (params.width.max(params.height) as f32 * params.style_scale).round() as u32;
                crate::image_io::scale_to_long_side(s, long.max(1))
            }
        })
        .collect()
}

/// Refuses sizes that cannot work, with the size that would; notes sizes that work badly.
fn check_sizes(
    styles: &[RgbImageF32],
    params: &Params,
    deepest: LayerId,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let min_out = min_side(
        deepest,
        if params.prior.uses_patches() {
            params.patch_size
        } else {
            1
        },
    );
    if params.width.min(params.height) < min_out {
        bail!(
            "the output {}x{} is too small: {} needs at least {} px on each side",
            params.width,
            params.height,
            deepest,
            min_out
        );
    }
    if !params.prior.uses_patches() {
        return Ok(());
    }
    let mrf_deepest = *params.mrf_layers.iter().max().expect("validated non-empty");
    for s in styles {
        let patches = params
            .mrf_layers
            .iter()
            .map(|&l| {
                style::patch_count(s.width, s.height, l, params.patch_size, params.style_stride)
            })
            .min()
            .unwrap_or(0);
        let need = min_side(mrf_deepest, params.patch_size);
        if patches == 0 {
            bail!(
                "the style image ({}x{} px after scaling) is too small: {} needs at least {need} px on each side",
                s.width,
                s.height,
                mrf_deepest
            );
        }
        if patches < pyramid::MIN_STYLE_PATCHES {
            notes.push(format!(
                "the style image gives only {patches} patches at {mrf_deepest}; expect a repetitive layout (a sample of at least {} px per side works better)",
                need * 3
            ));
        }
    }
    Ok(())
}

/// What a run will do, decided before any optimisation: the scaled styles, the levels, the
/// deepest layer, notes for the user and the memory estimate it was admitted with.
pub struct Plan {
    pub styles: Vec<RgbImageF32>,
    pub levels: Vec<Level>,
    /// Per level: optimised in tiles of this many px, or in one piece.
    pub tile_sizes: Vec<Option<u32>>,
    pub deepest: LayerId,
    pub notes: Vec<String>,
    pub estimated_peak_bytes: u64,
}

/// Checks the inputs and plans the run; refuses sizes and memory that cannot work.
pub fn plan(
    styles: &[RgbImageF32],
    blend: &[f64],
    task: &Task<'_>,
    params: &Params,
) -> anyhow::Result<Plan> {
    params.validate()?;
    if styles.is_empty()
        || blend.len() != styles.len()
        || blend.iter().any(|b| !b.is_finite() || *b < 0.0)
        || blend.iter().sum::<f64>() <= 0.0
    {
        bail!("one blend weight >= 0 per style image is needed, not all zero");
    }
    let mut notes = Vec::new();
    let uneven = blend.iter().any(|&b| b != blend[0]);
    if uneven && params.prior.uses_mrf() && params.matcher == MatcherKind::Approx {
        notes.push(
            "blend weights bias exact MRF matching only; --matcher approx matches without them"
                .to_string(),
        );
    }
    let styles = scaled_styles(styles, task, params);
    let mut deepest = params.deepest_style_layer();
    if matches!(task, Task::Transfer { .. }) && params.content_weight > 0.0 {
        deepest = deepest.max(params.content_layer);
    }
    check_sizes(&styles, params, deepest, &mut notes)?;
    let smallest = styles
        .iter()
        .map(|s| (s.width, s.height))
        .min_by_key(|(w, h)| w * h)
        .expect("non-empty");
    let mrf_layers: &[LayerId] = if params.prior.uses_patches() {
        &params.mrf_layers
    } else {
        &[]
    };
    let levels = pyramid::plan(
        (params.width, params.height),
        smallest,
        params.levels,
        params.level_ratio,
        mrf_layers,
        deepest,
        if params.prior.uses_patches() {
            params.patch_size
        } else {
            1
        },
        params.style_stride,
        params.min_style_patches,
        &mut notes,
    );
    let levels = if params.tileable {
        tile_friendly(levels, &mut notes)
    } else {
        levels
    };
    let can_tile = matches!(task, Task::Texture) && !params.tileable && params.guides.is_none();
    if params.tile.is_some() && !can_tile {
        bail!("--tile works for textures made without --tileable or guide maps");
    }
    let (estimated_peak_bytes, tile_sizes) =
        check_memory(params, &levels, &styles, deepest, can_tile, &mut notes)?;
    Ok(Plan {
        styles,
        levels,
        tile_sizes,
        deepest,
        notes,
        estimated_peak_bytes,
    })
}

/// Smallest tile the memory check picks: below it the overlaps dominate.
const MIN_TILE: u32 = 256;

/// Multiple of which every level's sides are, in tileable mode: four 2x2 pools.
const TILE_MULTIPLE: u32 = 16;

/// Rounds level sizes to multiples of [`TILE_MULTIPLE`] (noting a change of the output size).
fn tile_friendly(levels: Vec<Level>, notes: &mut Vec<String>) -> Vec<Level> {
    let round = |v: u32| ((v + TILE_MULTIPLE / 2) / TILE_MULTIPLE).max(1) * TILE_MULTIPLE;
    let last = *levels.last().expect("at least one level");
    let (w, h) = (round(last.width), round(last.height));
    if (w, h) != (last.width, last.height) {
        notes.push(format!(
            "tileable: output {}x{} rounded to {w}x{h} (sides must be multiples of {TILE_MULTIPLE})",
            last.width, last.height
        ));
    }
    levels
        .into_iter()
        .map(|l| Level {
            width: round(l.width),
            height: round(l.height),
            ..l
        })
        .collect()
}

/// Estimated peak of the whole run (its largest level), and the tile size of each level (None:
/// in one piece). Levels that do not fit the limit are tiled where `can_tile`; a run that does
/// not fit even so is refused with the output size that would.
fn check_memory(
    params: &Params,
    levels: &[Level],
    styles: &[RgbImageF32],
    deepest: LayerId,
    can_tile: bool,
    notes: &mut Vec<String>,
) -> anyhow::Result<(u64, Vec<Option<u32>>)> {
    // Banks of several styles add up: count them as copies of the largest.
    let variants =
        ((2 * params.rotations + 1) * (2 * params.scales + 1)) as u64 * styles.len() as u64;
    let (sw, sh) = styles
        .iter()
        .map(|s| (s.width, s.height))
        .max_by_key(|(w, h)| w * h)
        .unwrap_or((1, 1));
    let estimate = |scale: f64| -> u64 {
        levels
            .iter()
            .map(|l| {
                let (w, h) = (
                    (l.width as f64 * scale) as u32,
                    (l.height as f64 * scale) as u32,
                );
                let f = l.style_factor;
                let (lw, lh) = ((sw as f32 * f) as u32, (sh as f32 * f) as u32);
                memory::level_peak_bytes(params, w.max(1), h.max(1), lw, lh, variants, deepest)
            })
            .max()
            .unwrap_or(0)
    };
    let limit = params.max_memory.or_else(memory::available_bytes);
    // A level in tiles of `t` px: one tile's evaluation plus the level's whole image (the
    // image, its blend target and the resampling buffers).
    let tiled_need = |l: &Level, t: u32| -> u64 {
        let f = l.style_factor;
        let (lw, lh) = ((sw as f32 * f) as u32, (sh as f32 * f) as u32);
        let (tw, th) = (t.min(l.width), t.min(l.height));
        memory::level_peak_bytes(params, tw, th, lw, lh, variants, deepest)
            + 4 * 3 * 4 * l.width as u64 * l.height as u64
    };
    let mut tiles = Vec::with_capacity(levels.len());
    let mut need = 0u64;
    for l in levels {
        let whole = tiled_need(l, l.width.max(l.height));
        let forced = params.tile.filter(|&t| l.width > t || l.height > t);
        let tile = match (forced, limit) {
            (Some(t), _) => Some(t),
            (None, Some(limit)) if whole > limit && can_tile => {
                // The largest aligned tile that fits, no smaller than MIN_TILE.
                let mut t = (l.width.max(l.height) / tiles::TILE_ALIGN) * tiles::TILE_ALIGN;
                while t > MIN_TILE && tiled_need(l, t) > limit {
                    t = (t * 3 / 4) / tiles::TILE_ALIGN * tiles::TILE_ALIGN;
                }
                let t = t.max(MIN_TILE);
                (tiled_need(l, t) <= limit).then_some(t)
            }
            _ => None,
        };
        if let Some(t) = tile {
            let count = tiles::grid(l.width, l.height, t, tiles::overlap_for(t)).len();
            notes.push(format!(
                "level {}x{} is optimised in {count} overlapping tiles of {t} px (overlap {} px), sharing one patch bank",
                l.width,
                l.height,
                tiles::overlap_for(t)
            ));
        }
        need = need.max(tile.map_or(whole, |t| tiled_need(l, t)));
        tiles.push(tile);
    }
    let Some(limit) = limit else {
        return Ok((need, tiles));
    };
    if need <= limit {
        return Ok((need, tiles));
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..30 {
        let mid = 0.5 * (lo + hi);
        if estimate(mid) <= limit {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    bail!(
        "not enough memory: the run needs about {:.1} GiB, the limit is {:.1} GiB (--max-memory or the memory available); the largest output that fits is about {}x{}",
        gib(need),
        gib(limit),
        (params.width as f64 * lo) as u32,
        (params.height as f64 * lo) as u32
    )
}

/// Smallest image side giving one patch of `patch` at `layer`.
pub fn min_side(layer: LayerId, patch: usize) -> u32 {
    (patch as u32) << layer.downsampling()
}
