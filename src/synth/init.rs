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
    /// The network's mean colour (flat grey) plus noise of 1e-3 grey levels, seeded: CNNMRF's
    /// `randn * 1e-3` in Caffe space.
    Mean,
    /// The content image (transfer only).
    Content,
    /// An image from disk, resized to the first level.
    Image(#[serde(skip)] RgbImageF32),
}

/// Standard deviation of the initial noise, in 0..255 units.
const NOISE_SIGMA: f32 = 32.0;

/// Standard deviation of the noise on the flat mean start (CNNMRF's `randn * 1e-3`).
const MEAN_SIGMA: f32 = 1e-3;

pub fn initial_image(
    init: &Init,
    task: &Task<'_>,
    style: &RgbImageF32,
    network_mean: [f32; 3],
    width: u32,
    height: u32,
    seed: u64,
) -> crate::Result<RgbImageF32> {
    Ok(match init {
        Init::Noise => {
            let mean = [0, 1, 2].map(|c| {
                let plane = style.plane(c);
                (plane.iter().map(|&v| v as f64).sum::<f64>() / plane.len() as f64) as f32
            });
            noise(mean, NOISE_SIGMA, width, height, seed)
        }
        Init::Mean => noise(network_mean, MEAN_SIGMA, width, height, seed),
        Init::Content => match task {
            Task::Transfer { content } => resize(content, width, height),
            Task::Texture => crate::error::fail!(
                Settings,
                "--init content needs a content image (use `transfer`)"
            ),
        },
        Init::Image(img) => resize(img, width, height),
    })
}

/// Seeded Gaussian noise of `sigma` around the colour `mean`.
fn noise(mean: [f32; 3], sigma: f32, width: u32, height: u32, seed: u64) -> RgbImageF32 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = (width * height) as usize;
    let mut data = Vec::with_capacity(3 * n);
    for &mean in &mean {
        for _ in 0..n {
            // Box-Muller: a normal sample from two uniforms, so the stream is fixed by the seed.
            let u1: f32 = rng.random::<f32>().max(f32::MIN_POSITIVE);
            let u2: f32 = rng.random::<f32>();
            let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos();
            data.push((mean + sigma * z).clamp(0.0, 255.0));
        }
    }
    RgbImageF32::new(width, height, data)
}
