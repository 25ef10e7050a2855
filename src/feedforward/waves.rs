//! Periodic inputs for periodic samples (after Bergmann et al. 2017, *Learning Texture
//! Manifolds with the Periodic Spatial GAN*).
//!
//! A generator fed i.i.d. noise can only line elements up as far as its receptive field
//! reaches; a brick wall's joints run straight across the whole texture at one spacing. Given
//! sin and cos of plane waves at the sample's own period, with a phase of each seed's choosing,
//! the generator reads the position within the period from its input: straight, evenly spaced
//! structure at any size. The waves come from the sample's spectrum; samples without a sharp
//! peak in it (stones, grass, tissue) get none.

use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::image_io::RgbImageF32;
use crate::metrics::fft::{Complex, Plan2};
use crate::metrics::lattice::luminance;

/// A plane wave: cycles per output pixel along x and y.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub x: f64,
    pub y: f64,
}

impl Wave {
    /// The wave's period in pixels.
    pub fn period(&self) -> f64 {
        1.0 / self.x.hypot(self.y)
    }
}

/// At most this many waves are detected (two lattice directions).
pub const MAX_WAVES: usize = 2;
/// The side of the sample's centre crop whose spectrum is read.
const ANALYSIS_SIDE: usize = 512;
/// Periods read: at least this many px (a generator with 1/4-scale noise samples a wave every
/// 4 px, so shorter ones would alias)...
pub const MIN_PERIOD: f64 = 12.0;
/// ...and at most this fraction of the analysed side (a peak needs repeats to be a period).
const MAX_PERIOD_FRACTION: f64 = 0.25;
/// A peak counts when it holds at least this share of the luminance's power (both halves of
/// the spectrum)...
const MIN_SHARE: f64 = 0.02;
/// ...and stands this many times above the median of the frequencies at its radius. Measured
/// on the scikit-image and ../shared samples: brick 524, burlap 109 and 85, brickwall 39;
/// every non-periodic sample 17 or less (gravel 16, chelsea 16, riverstones 14).
const MIN_PROMINENCE: f64 = 30.0;
/// A second wave must point at least this far (degrees) from the first (not a harmonic).
const MIN_ANGLE_DEG: f64 = 20.0;

/// The sample's dominant periods as plane waves (none for a sample without a sharp spectral
/// peak). Reads the luminance of the centre crop (at most 512 px square), Hann-windowed.
pub fn dominant_waves(sample: &RgbImageF32) -> Vec<Wave> {
    let (w, h) = (sample.width as usize, sample.height as usize);
    let c = w.min(h).min(ANALYSIS_SIDE);
    if (c as f64) * MAX_PERIOD_FRACTION < MIN_PERIOD {
        return Vec::new();
    }
    let (x0, y0) = ((w - c) / 2, (h - c) / 2);
    let full = luminance(sample);
    let luma = |x: usize, y: usize| full[(y0 + y) * w + x0 + x];
    let mean = (0..c)
        .flat_map(|y| (0..c).map(move |x| (x, y)))
        .map(|(x, y)| luma(x, y))
        .sum::<f64>()
        / (c * c) as f64;
    let hann = |i: usize| 0.5 - 0.5 * (std::f64::consts::TAU * i as f64 / (c - 1) as f64).cos();
    let mut grid = vec![Complex::default(); c * c];
    for y in 0..c {
        for x in 0..c {
            grid[y * c + x] = Complex::new((luma(x, y) - mean) * hann(x) * hann(y), 0.0);
        }
    }
    Plan2::new(c, c).run(&mut grid, false);
    let power: Vec<f64> = grid.iter().map(|v| v.norm_sqr()).collect();
    let total: f64 = power.iter().sum::<f64>() - power[0];
    if total <= 0.0 {
        return Vec::new();
    }
    // Signed frequency (cycles per c px) of bin i.
    let freq = |i: usize| {
        if i <= c / 2 {
            i as f64
        } else {
            i as f64 - c as f64
        }
    };
    // Each bin's distance from the origin, in cycles per c px (read for every bin per wave).
    let radius: Vec<f64> = (0..c * c).map(|i| freq(i / c).hypot(freq(i % c))).collect();
    let (r_min, r_max) = (1.0 / MAX_PERIOD_FRACTION, c as f64 / MIN_PERIOD);
    let in_band = |i: usize| (r_min..=r_max).contains(&radius[i]);
    let mut waves: Vec<Wave> = Vec::new();
    let mut candidates: Vec<usize> = (1..c * c).filter(|&i| in_band(i)).collect();
    while waves.len() < MAX_WAVES {
        let Some(&best) = candidates
            .iter()
            .max_by(|&&a, &&b| power[a].total_cmp(&power[b]))
        else {
            break;
        };
        let r = radius[best];
        let mut ring: Vec<f64> = (1..c * c)
            .filter(|&i| in_band(i) && (radius[i] - r).abs() < 0.75)
            .map(|i| power[i])
            .collect();
        ring.sort_by(f64::total_cmp);
        let median = ring[ring.len() / 2];
        let share = 2.0 * power[best] / total;
        if share < MIN_SHARE || power[best] < MIN_PROMINENCE * median {
            break;
        }
        let (ky, kx) = (
            refine(&power, c, best, true, freq(best / c)),
            refine(&power, c, best, false, freq(best % c)),
        );
        // A wave and its negative carry the same information (the sine negated, the cosine
        // the same): store one form, x >= 0.
        let sign = if kx < 0.0 || (kx == 0.0 && ky < 0.0) {
            -1.0
        } else {
            1.0
        };
        waves.push(Wave {
            x: sign * kx / c as f64,
            y: sign * ky / c as f64,
        });
        // Drop every frequency within MIN_ANGLE_DEG of this direction (its harmonics too).
        let angle = ky.atan2(kx);
        candidates.retain(|&i| {
            let a = freq(i / c).atan2(freq(i % c));
            // Directions modulo pi: a wave and its negative are the same.
            let d = (a - angle).rem_euclid(std::f64::consts::PI);
            d.min(std::f64::consts::PI - d).to_degrees() >= MIN_ANGLE_DEG
        });
    }
    waves
}

/// The peak's frequency along one axis, between bins: the vertex of the parabola through the
/// log power at the peak and its two neighbours.
fn refine(power: &[f64], c: usize, peak: usize, along_y: bool, k: f64) -> f64 {
    let (y, x) = (peak / c, peak % c);
    let at = |d: isize| {
        let (yy, xx) = if along_y {
            ((y as isize + d).rem_euclid(c as isize) as usize, x)
        } else {
            (y, (x as isize + d).rem_euclid(c as isize) as usize)
        };
        power[yy * c + xx].max(f64::MIN_POSITIVE).ln()
    };
    let (l, m, r) = (at(-1), at(0), at(1));
    let denom = l - 2.0 * m + r;
    if denom >= 0.0 {
        return k;
    }
    k + (0.5 * (l - r) / denom).clamp(-0.5, 0.5)
}

/// Inputs of one seed at the generator's coarsest scale: for each wave, sin then cos planes of
/// `h` x `w` coarse pixels, each `cell` output px wide, at a phase drawn from `seed`. With
/// `tileable`, each wave is rounded to whole cycles over the output (`w * cell` by `h * cell`
/// px) so that it wraps round.
pub fn wave_planes(
    waves: &[Wave],
    h: usize,
    w: usize,
    cell: usize,
    seed: u64,
    tileable: bool,
) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (width, height) = ((w * cell) as f64, (h * cell) as f64);
    let mut out = Vec::with_capacity(2 * waves.len() * h * w);
    for wave in waves {
        let phase = std::f64::consts::TAU * rng.random::<f64>();
        let (kx, ky) = if tileable {
            (
                (wave.x * width).round() / width,
                (wave.y * height).round() / height,
            )
        } else {
            (wave.x, wave.y)
        };
        // Each coarse pixel takes the wave at the centre of the output pixels it stands for.
        let centre = |i: usize| i as f64 * cell as f64 + 0.5 * (cell as f64 - 1.0);
        let angle =
            |y: usize, x: usize| std::f64::consts::TAU * (kx * centre(x) + ky * centre(y)) + phase;
        for trig in [f64::sin, f64::cos] {
            for y in 0..h {
                for x in 0..w {
                    out.push(trig(angle(y, x)) as f32);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32, f: impl Fn(f64, f64) -> f64) -> RgbImageF32 {
        let n = (w * h) as usize;
        let mut data = vec![0f32; 3 * n];
        for y in 0..h as usize {
            for x in 0..w as usize {
                let v = f(x as f64, y as f64) as f32;
                for c in 0..3 {
                    data[c * n + y * w as usize + x] = v;
                }
            }
        }
        RgbImageF32::new(w, h, data)
    }

    #[test]
    fn stripes_give_their_period_and_direction() {
        // Vertical joints every 36 px, as the brick sample's columns.
        let img = image(300, 256, |x, _| if x % 36.0 < 4.0 { 230.0 } else { 90.0 });
        let waves = dominant_waves(&img);
        assert_eq!(waves.len(), 1, "{waves:?}");
        assert!((waves[0].period() - 36.0).abs() < 0.5, "{waves:?}");
        assert!(waves[0].y.abs() < 1e-3, "{waves:?}");
    }

    #[test]
    fn a_grid_gives_two_waves_and_noise_none() {
        let grid = image(256, 256, |x, y| {
            128.0
                + 60.0 * (x * std::f64::consts::TAU / 20.0).sin()
                + 40.0 * (y * std::f64::consts::TAU / 28.0).cos()
        });
        let mut periods: Vec<f64> = dominant_waves(&grid).iter().map(Wave::period).collect();
        periods.sort_by(f64::total_cmp);
        assert_eq!(periods.len(), 2, "{periods:?}");
        assert!((periods[0] - 20.0).abs() < 0.5 && (periods[1] - 28.0).abs() < 0.5);

        let noise = crate::feedforward::generator::normal_noise(256 * 256, 3);
        let noisy = image(256, 256, |x, y| {
            128.0 + 40.0 * noise[y as usize * 256 + x as usize] as f64
        });
        assert!(dominant_waves(&noisy).is_empty());
        // Too small to hold four periods of the shortest wave read.
        assert!(dominant_waves(&image(40, 40, |x, _| x)).is_empty());
    }

    #[test]
    fn planes_follow_the_wave_and_the_seed_and_wrap_when_tileable() {
        let waves = [Wave {
            x: 1.0 / 36.0,
            y: 0.0,
        }];
        let (h, w, cell) = (4, 10, 4);
        let a = wave_planes(&waves, h, w, cell, 1, false);
        assert_eq!(a.len(), 2 * h * w);
        assert_eq!(a, wave_planes(&waves, h, w, cell, 1, false));
        assert_ne!(a, wave_planes(&waves, h, w, cell, 2, false));
        // sin^2 + cos^2 = 1, constant down each column (a wave along x).
        for i in 0..h * w {
            let (s, c) = (a[i], a[h * w + i]);
            assert!((s * s + c * c - 1.0).abs() < 1e-5);
            assert!((s - a[i % w]).abs() < 1e-6);
        }
        // Tileable: 40 px wide, so 1/36 rounds to one cycle over 40 px and the ten coarse
        // pixels of a row sample one whole cycle (their sum is zero); untiled, they do not.
        let row_sum = |v: &[f32]| (0..w).map(|x| v[x] as f64).sum::<f64>();
        let t = wave_planes(&waves, h, w, cell, 1, true);
        assert!(row_sum(&t).abs() < 1e-4, "{}", row_sum(&t));
        assert!(row_sum(&a).abs() > 0.1, "{}", row_sum(&a));
    }
}
