//! Texture-artist features on real samples, with the figures that say they work:
//! - a seamless tile (`--tileable`): the mean jump across the wrap-around seams against the
//!   interior's, for a plain and a tileable run;
//! - a big output in overlapping tiles (`--tile`): the jump across tile edges against the
//!   interior's;
//! - several exemplars with weights (`--style a,b --style-blend`): the share of matches drawn
//!   from each sample as the weights change.
//!
//! Guide maps have their own example (`guided`).
//!
//! `cargo run --release --example production [-- OUT_DIR]` (needs ../shared/images; a few
//! minutes on two cores). Writes the images to OUT_DIR (default `production-out`).

use std::path::Path;

use candle_core::Device;
use mrfsynth::image_io::{load_rgb, save_rgb, LoadLimits, RgbImageF32};
use mrfsynth::synth::{self, tiles, Params, Silent, SynthResult, Task};
use mrfsynth::vgg::{Pooling, Vgg19};

/// Mean |difference| across the given column and row boundaries (pairs x-1|x, y-1|y; index 0
/// means the wrap-around pair last|first), and over all other neighbours.
fn jumps(img: &RgbImageF32, cols: &[u32], rows: &[u32]) -> (f64, f64) {
    let (w, h) = (img.width, img.height);
    let (mut edge, mut ne, mut inner, mut ni) = (0f64, 0usize, 0f64, 0usize);
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let v = img.get(x, y, c) as f64;
                let left = img.get((x + w - 1) % w, y, c) as f64;
                let up = img.get(x, (y + h - 1) % h, c) as f64;
                for (d, on_edge) in [
                    ((v - left).abs(), cols.contains(&x)),
                    ((v - up).abs(), rows.contains(&y)),
                ] {
                    if on_edge {
                        edge += d;
                        ne += 1;
                    } else {
                        inner += d;
                        ni += 1;
                    }
                }
            }
        }
    }
    (edge / ne.max(1) as f64, inner / ni.max(1) as f64)
}

fn run(
    vgg: &Vgg19,
    styles: &[RgbImageF32],
    blend: &[f64],
    params: &Params,
) -> anyhow::Result<SynthResult> {
    Ok(synth::run(
        vgg,
        styles,
        blend,
        Task::Texture,
        params,
        &mut Silent,
    )?)
}

fn main() -> anyhow::Result<()> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "production-out".into()),
    );
    let dir = Path::new("../shared/images");
    if !dir.is_dir() {
        println!("skipping: ../shared/images is absent");
        return Ok(());
    }
    std::fs::create_dir_all(&out)?;
    let load = |n: &str| load_rgb(&dir.join(n), &LoadLimits::default());
    let (grass, stones) = (load("grass.png")?, load("riverstones.png")?);
    let weights = mrfsynth::assets::weights::load(None, true)?;
    let vgg = Vgg19::new(&weights, Pooling::Max, &Device::Cpu)?;
    let base = {
        let mut p = Params::default();
        p.width = 192;
        p.height = 192;
        p.levels = 2;
        p.iterations = 60;
        p.seed = 7;
        p
    };

    println!("| feature | run | figure |");
    println!("|---|---|---|");
    // Seamless tiles: the seam is the wrap-around pair (last, first) in both directions.
    for (name, sample) in [("grass", &grass), ("river stones", &stones)] {
        for tileable in [false, true] {
            let r = run(&vgg, std::slice::from_ref(sample), &[1.0], &{
                let mut p = base.clone();
                p.tileable = tileable;
                p
            })?;
            let (seam, inner) = jumps(&r.image, &[0], &[0]);
            let tag = if tileable { "tileable" } else { "plain" };
            save_rgb(
                &r.image,
                &out.join(format!("tile_{}_{tag}.png", name.replace(' ', "_"))),
            )?;
            println!(
                "| seamless tile | {name}, {tag} | seam / interior jump {:.2} |",
                seam / inner
            );
        }
    }

    // Tiles: a 384 px output from 192 px tiles (9 tiles, 64 px overlaps).
    let big = {
        let mut p = base.clone();
        p.width = 384;
        p.height = 384;
        p.tile = Some(192);
        p.iterations = 40;
        p
    };
    let r = run(&vgg, std::slice::from_ref(&grass), &[1.0], &big)?;
    let grid = tiles::grid(384, 384, 192, tiles::overlap_for(192));
    let mut lines: Vec<u32> = grid
        .iter()
        .flat_map(|t| [t.x, t.x + t.width])
        .filter(|&x| x > 0 && x < 384)
        .collect();
    lines.sort_unstable();
    lines.dedup();
    let (edge, inner) = jumps(&r.image, &lines, &lines);
    save_rgb(&r.image, &out.join("tiled_384.png"))?;
    println!(
        "| big output in tiles | grass, 384 px in {} tiles of 192 px | tile-edge / interior jump {:.2} ({:.0} s) |",
        r.levels.last().map_or(0, |l| l.tiles),
        edge / inner,
        r.seconds
    );

    // Several exemplars: the share of relu3_1 matches drawn from grass as its weight drops.
    let pair = [grass.clone(), stones.clone()];
    for blend in [[1.0, 1.0], [0.8, 1.0], [0.6, 1.0]] {
        let r = run(&vgg, &pair, &blend, &base)?;
        let share = r
            .levels
            .last()
            .and_then(|l| l.mrf.first())
            .and_then(|m| m.share_per_style.first().copied())
            .unwrap_or(f32::NAN);
        save_rgb(
            &r.image,
            &out.join(format!("mix_{}_{}.png", blend[0], blend[1])),
        )?;
        println!(
            "| several exemplars | grass + river stones, weights {},{} | grass share of relu3_1 matches {:.0}% |",
            blend[0],
            blend[1],
            100.0 * share
        );
    }
    println!("images in {}", out.display());
    Ok(())
}
