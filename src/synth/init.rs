//! The image a run starts from.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::Task;
use crate::image_io::{resize, RgbImageF32};

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Gaussian noise around the style's mean colour, seeded.
    Noise,
    /// The content image (transfer only).
    Content,
    /// An image from disk, resized to the first level.
    Image(#[serde(skip)] RgbImageF32),
}

/// Standard deviation of the initial noise, in 0..255 units.
const NOISE_SIGMA: f32 = 32.0;

pub fn initial_image(
    init: &Init,
    task: &Task<'_>,
    style: &RgbImageF32,
    width: u32,
    height: u32,
    seed: u64,
) -> anyhow::Result<RgbImageF32> {
    Ok(match init {
        Init::Noise => noise(style, width, height, seed),
        Init::Content => match task {
            Task::Transfer { content } => resize(content, width, height),
            Task::Texture => anyhow::bail!("--init content needs a content image (use `transfer`)"),
        },
        Init::Image(img) => resize(img, width, height),
    })
}

fn noise(style: &RgbImageF32, width: u32, height: u32, seed: u64) -> RgbImageF32 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = (width * height) as usize;
    let mut data = Vec::with_capacity(3 * n);
    for c in 0..3 {
        let plane = style.plane(c);
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / plane.len() as f64;
        for _ in 0..n {
            // Box-Muller: a normal sample from two uniforms, so the stream is fixed by the seed.
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random::<f32>();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
            data.push((mean as f32 + NOISE_SIGMA * z).clamp(0.0, 255.0));
        }
    }
    RgbImageF32::new(width, height, data)
}
