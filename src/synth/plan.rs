//! Planning a run before any optimisation: the scaled samples, the pyramid's levels, sizes
//! that cannot work, and memory admission (which levels are made in tiles, or a refusal).

use crate::error::fail;

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
) -> crate::Result<()> {
    let min_out = min_side(
        deepest,
        if params.prior.uses_patches() {
            params.patch_size
        } else {
            1
        },
    );
    if params.width.min(params.height) < min_out {
        fail!(
            TooSmall,
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
            fail!(
                TooSmall,
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
) -> crate::Result<Plan> {
    params.validate()?;
    if styles.is_empty()
        || blend.len() != styles.len()
        || blend.iter().any(|b| !b.is_finite() || *b < 0.0)
        || blend.iter().sum::<f64>() <= 0.0
    {
        fail!(
            Settings,
            "one blend weight >= 0 per style image is needed, not all zero"
        );
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
        fail!(
            Settings,
            "--tile works for textures made without --tileable or guide maps"
        );
    }
    let (estimated_peak_bytes, tile_sizes) = check_memory(
        params, &levels, &styles, deepest, task, can_tile, &mut notes,
    )?;
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

/// One level as the memory estimate sees it (possibly scaled, in the search for a size that
/// fits): its size, the previous level's (resized from) and the sample's size there.
#[derive(Debug, Clone, Copy)]
struct Shape {
    prev: Option<(u32, u32)>,
    size: (u32, u32),
    sample: (u32, u32),
}

/// What a level holds at its peak, in parts (bytes). The peak is the fixed part plus the
/// largest of three phases: resizing the previous level's image, building the style banks, and
/// optimising (one tile at a time, or the whole level).
#[derive(Debug, Clone, Copy)]
struct LevelNeed {
    /// The network, the process and the samples: held throughout.
    fixed: u64,
    /// The previous level's image and this one's while it is resized (the first level: the
    /// start image).
    resize: u64,
    /// The level's whole image, beside the optimiser's copy (tiled levels only: a whole level's
    /// image is the optimiser's own vector).
    image: u64,
    /// The level's image while its priors are built (whole or tiled).
    image_at_build: u64,
    /// The style banks while they are cut (with the sample's forward pass), and as they are held.
    bank_build: u64,
    bank: u64,
    /// One evaluation of the whole level or of one tile.
    eval: u64,
}

impl LevelNeed {
    fn total(&self) -> u64 {
        self.fixed
            + self
                .resize
                .max(self.image_at_build + self.bank_build)
                .max(self.image + self.bank + self.eval)
    }

    /// The peak without the level's whole-image buffers.
    fn without_image(&self) -> u64 {
        self.fixed + self.bank_build.max(self.bank + self.eval)
    }
}

/// The memory model of a planned run.
struct Costs<'a> {
    params: &'a Params,
    deepest: LayerId,
    /// Augmented copies of the sample in the banks (all styles counted as the largest).
    variants: u64,
    /// The largest scaled sample.
    sample: (u32, u32),
    /// The samples' own images (as loaded and as scaled), held throughout.
    sample_images: u64,
    /// Bytes of the copy score at the end (0: none).
    copy_score: u64,
    /// Transfers with --original-colors: the content resized and the output recoloured.
    recolour: bool,
    can_tile: bool,
}

impl Costs<'_> {
    /// The levels at `out` times their size, with the sample at `style` times its own.
    fn shapes(&self, levels: &[Level], out: f64, style: f64) -> Vec<Shape> {
        let scale = |v: u32, f: f64| ((v as f64 * f) as u32).max(1);
        let mut prev = None;
        levels
            .iter()
            .map(|l| {
                let f = l.style_factor as f64 * style;
                let size = (scale(l.width, out), scale(l.height, out));
                let shape = Shape {
                    prev,
                    size,
                    sample: (scale(self.sample.0, f), scale(self.sample.1, f)),
                };
                prev = Some(size);
                shape
            })
            .collect()
    }

    /// A level's need, whole (`tile` None) or in tiles of `tile` px.
    fn level(&self, s: &Shape, tile: Option<u32>) -> LevelNeed {
        let p = self.params;
        let (w, h) = s.size;
        let image = memory::image_bytes(w, h);
        let eval_size = tile.map_or(s.size, |t| (t.min(w), t.min(h)));
        LevelNeed {
            fixed: memory::fixed_bytes(self.deepest) + self.sample_images,
            resize: s
                .prev
                .map_or(image, |from| memory::resize_bytes(from, s.size)),
            image: if tile.is_some() { image } else { 0 },
            image_at_build: image,
            bank_build: memory::bank_build_bytes(
                p,
                s.sample.0,
                s.sample.1,
                self.variants,
                self.deepest,
            ),
            bank: memory::bank_bytes(p, s.sample.0, s.sample.1, self.variants),
            eval: memory::evaluation_bytes(p, eval_size, s.sample, self.variants, self.deepest),
        }
    }

    /// After the last level: the output, and the copy score or writing the file.
    fn finish(&self, last: &Shape) -> u64 {
        let (w, h) = last.size;
        let image = memory::image_bytes(w, h);
        let save = memory::SAVE_BYTES_PER_PIXEL * w as u64 * h as u64;
        let recolour = if self.recolour { 2 * image } else { 0 };
        memory::fixed_bytes(self.deepest)
            + self.sample_images
            + image
            + self.copy_score.max(save).max(recolour)
    }

    /// Whether a level can be tiled at all: tiling allowed and a tile smaller than the level.
    fn tileable(&self, s: &Shape) -> bool {
        self.can_tile && s.size.0.max(s.size.1) > MIN_TILE
    }

    /// The level's least need: whole, or in the smallest tiles.
    fn cheapest(&self, s: &Shape) -> u64 {
        let whole = self.level(s, None).total();
        if self.tileable(s) {
            whole.min(self.level(s, Some(MIN_TILE)).total())
        } else {
            whole
        }
    }

    /// The run's least need at these scales.
    fn least(&self, levels: &[Level], out: f64, style: f64) -> u64 {
        let shapes = self.shapes(levels, out, style);
        let last = shapes.last().map_or(0, |s| self.finish(s));
        shapes
            .iter()
            .map(|s| self.cheapest(s))
            .max()
            .unwrap_or(0)
            .max(last)
    }

    /// The largest aligned tile of at least MIN_TILE (and smaller than the level) whose need
    /// fits `limit`.
    fn largest_tile(&self, s: &Shape, limit: u64) -> Option<u32> {
        if !self.tileable(s) {
            return None;
        }
        let fits = |t: u32| self.level(s, Some(t)).total() <= limit;
        let (mut lo, mut hi) = (MIN_TILE / tiles::TILE_ALIGN, {
            (s.size.0.max(s.size.1) - 1) / tiles::TILE_ALIGN
        });
        if !fits(lo * tiles::TILE_ALIGN) {
            return None;
        }
        // The need grows with the tile: the largest that fits, by bisection.
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid * tiles::TILE_ALIGN) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Some(lo * tiles::TILE_ALIGN)
    }
}

/// The largest factor in (0, 1] for which `fits` holds (0 when none does), by bisection.
fn largest_factor(fits: impl Fn(f64) -> bool) -> f64 {
    if fits(1.0) {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..30 {
        let mid = 0.5 * (lo + hi);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Estimated peak of the whole run (its largest level, or the end), and the tile size of each
/// level (None: in one piece). Levels that do not fit the limit whole are tiled where
/// `can_tile`, in the largest tiles that fit; a run that does not fit even in tiles of
/// [`MIN_TILE`] is refused, saying what does not fit and the largest size that would.
fn check_memory(
    params: &Params,
    levels: &[Level],
    styles: &[RgbImageF32],
    deepest: LayerId,
    task: &Task<'_>,
    can_tile: bool,
    notes: &mut Vec<String>,
) -> crate::Result<(u64, Vec<Option<u32>>)> {
    // Banks of several styles add up: count them as copies of the largest.
    let variants =
        ((2 * params.rotations + 1) * (2 * params.scales + 1)) as u64 * styles.len() as u64;
    let sample = styles
        .iter()
        .map(|s| (s.width, s.height))
        .max_by_key(|(w, h)| w * h)
        .unwrap_or((1, 1));
    let texture = matches!(task, Task::Texture);
    let costs = Costs {
        params,
        deepest,
        variants,
        sample,
        // As loaded, and as scaled (a transfer's content is counted with the samples).
        sample_images: 2 * styles
            .iter()
            .map(|s| memory::image_bytes(s.width, s.height))
            .sum::<u64>()
            + match task {
                Task::Transfer { content } => memory::image_bytes(content.width, content.height),
                Task::Texture => 0,
            },
        copy_score: match styles.first() {
            Some(s) if texture && s.pixel_count() <= super::run::COPY_MAX_SAMPLE_PIXELS => {
                memory::copy_score_bytes(s.width, s.height)
            }
            _ => 0,
        },
        recolour: params.original_colors && !texture,
        can_tile,
    };
    let limit = params.max_memory.or_else(memory::available_bytes);
    let shapes = costs.shapes(levels, 1.0, 1.0);
    let mut tiles = Vec::with_capacity(levels.len());
    let mut need = shapes.last().map_or(0, |s| costs.finish(s));
    // The first level that does not fit even in the smallest tiles.
    let mut failed: Option<(Shape, Option<u32>, LevelNeed)> = None;
    for s in &shapes {
        let (w, h) = s.size;
        let whole = costs.level(s, None);
        let forced = params.tile.filter(|&t| w > t || h > t);
        let tile = match (forced, limit) {
            (Some(t), _) => Some(t),
            (None, Some(limit)) if whole.total() > limit => {
                let tile = costs.largest_tile(s, limit);
                if tile.is_none() && failed.is_none() {
                    let at = costs.tileable(s).then_some(MIN_TILE);
                    failed = Some((*s, at, costs.level(s, at)));
                }
                tile
            }
            _ => None,
        };
        if let Some(t) = tile {
            let overlap = tiles::overlap_for(t);
            let count = tiles::grid(w, h, t, overlap).len();
            notes.push(format!(
                "level {w}x{h} is optimised in {count} overlapping tiles of {t} px (overlap {overlap} px), sharing one patch bank"
            ));
        }
        need = need.max(costs.level(s, tile).total());
        tiles.push(tile);
    }
    let Some(limit) = limit else {
        return Ok((need, tiles));
    };
    if need <= limit {
        return Ok((need, tiles));
    }
    let min_out = min_side(
        deepest,
        if params.prior.uses_patches() {
            params.patch_size
        } else {
            1
        },
    );
    // A transfer's style is sized to the output: it shrinks with it.
    let out = largest_factor(|f| costs.least(levels, f, if texture { 1.0 } else { f }) <= limit);
    let (ow, oh) = (
        (params.width as f64 * out) as u32 / 8 * 8,
        (params.height as f64 * out) as u32 / 8 * 8,
    );
    let output_fits = if ow.min(oh) >= min_out {
        format!("the largest output that fits is about {ow}x{oh}")
    } else {
        format!(
            "no output size fits (the network and the samples alone take {:.2} GiB)",
            gib(memory::fixed_bytes(deepest) + costs.sample_images)
        )
    };
    let limit_text = format!(
        "the limit is {:.2} GiB (--max-memory or the memory available)",
        gib(limit)
    );
    let Some((s, tile, parts)) = failed.filter(|_| can_tile) else {
        // Whole levels only (or forced tiles): what the run needs against the limit.
        let why = if params.tile.is_some() {
            format!(" with --tile {}", params.tile.unwrap_or(0))
        } else if !can_tile {
            " (transfers, seamless tiles and guided runs are made whole, not in tiles)".to_string()
        } else {
            String::new()
        };
        fail!(
            NotEnoughMemory,
            "not enough memory: the run needs about {:.2} GiB{why}, {limit_text}; {output_fits}",
            gib(need)
        );
    };
    let (w, h) = s.size;
    let tile_text = match tile {
        Some(t) => format!("one tile of {t} px"),
        None => "the level (too small to tile)".to_string(),
    };
    let together = gib(parts.total());
    if tile.is_some() && parts.without_image() <= limit {
        // One tile fits beside the network and the banks, the level's whole image does not.
        fail!(
            NotEnoughMemory,
            "not enough memory for level {w}x{h} even in tiles: its whole-level image buffers (the image, and the previous level's while it is resized) take {:.2} GiB; {tile_text} with the patch banks and the network takes {:.2} GiB, {together:.2} GiB together; {limit_text}; {output_fits}",
            gib(parts.resize.max(parts.image)),
            gib(parts.without_image()),
        );
    }
    if parts.fixed + parts.eval <= limit && parts.bank > 0 {
        // The sample's banks are what does not fit: they do not shrink with the output.
        let style = largest_factor(|f| costs.least(levels, 1.0, f) <= limit);
        // Rounded down to the two decimals the message shows.
        let scale = (params.style_scale as f64 * style * 100.0).floor() / 100.0;
        let style = scale / params.style_scale as f64;
        let (sw, sh) = (
            (sample.0 as f64 * style) as u32,
            (sample.1 as f64 * style) as u32,
        );
        let sample_fits = if sw.min(sh) >= min_out {
            format!("the largest sample that fits is about {sw}x{sh} px (--style-scale {scale:.2})")
        } else {
            output_fits.clone()
        };
        fail!(
            NotEnoughMemory,
            "not enough memory for level {w}x{h}: the sample's patch banks ({}x{} px at this level, {variants} cop{}) take {:.2} GiB while they are built and {:.2} GiB as they are held; {tile_text} with the network takes {:.2} GiB, {together:.2} GiB with the banks and the level's image; {limit_text}; {sample_fits}",
            s.sample.0,
            s.sample.1,
            if variants == 1 { "y" } else { "ies" },
            gib(parts.bank_build),
            gib(parts.bank),
            gib(parts.fixed + parts.eval),
        );
    }
    fail!(
        NotEnoughMemory,
        "not enough memory for level {w}x{h}: even {tile_text}, with the network and the patch banks, needs {:.2} GiB; {limit_text}; {output_fits}",
        gib(parts.total())
    )
}

/// Smallest image side giving one patch of `patch` at `layer`.
pub fn min_side(layer: LayerId, patch: usize) -> u32 {
    (patch as u32) << layer.downsampling()
}
