//! Copy score: how much of an output reproduces its sample verbatim.
//!
//! A grid of square crops is cut from the output. For each crop, the normalised
//! cross-correlation (NCC) with every same-sized window of the sample is computed exhaustively,
//! and the best one kept. NCC is taken over RGB with each channel's mean removed (in the crop and
//! in the window): `sum (a - mean_a)(b - mean_b) / sqrt(sum (a - mean_a)^2 * sum (b - mean_b)^2)`,
//! the sums running over the crop's pixels and its three channels. It is 1 for an exact copy,
//! and for a copy changed by a per-channel gain and offset.
//!
//! The correlations of a crop with all windows are one FFT product (zero-padded, so no window
//! wraps around); the windows' means and energies come from integral images.

use rayon::prelude::*;
use serde::Serialize;

use super::fft::{fast_len, Complex, Plan2};
use crate::image_io::RgbImageF32;

/// Crops whose per-pixel, per-channel variance is below this (in 0..255 levels squared) carry no
/// structure and are skipped; sample windows below it score 0.
const FLAT_VARIANCE: f64 = 1e-2;

/// The best match of one output crop in the sample.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct CropMatch {
    /// Top-left corner of the crop in the output.
    pub x: u32,
    pub y: u32,
    /// Top-left corner of the best window in the sample.
    pub sample_x: u32,
    pub sample_y: u32,
    /// Its NCC, in -1..1.
    pub ncc: f64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct CopyScore {
    /// Mean of the crops' best NCC (0 when every crop is flat).
    pub score: f64,
    /// Side of the crops actually used (px), after shrinking to fit both images.
    pub crop_side: u32,
    /// One entry per non-flat crop, row-major over the grid.
    pub crops: Vec<CropMatch>,
}

/// The crop side used for a requested `crop` (0 = a quarter of the output's shorter side, at
/// least 8 px), shrunk to fit both images.
pub fn effective_crop(crop: u32, output: &RgbImageF32, sample: &RgbImageF32) -> u32 {
    let want = if crop == 0 {
        (output.width.min(output.height) / 4).max(8)
    } else {
        crop
    };
    want.min(output.width)
        .min(output.height)
        .min(sample.width)
        .min(sample.height)
        .max(1)
}

/// `grid` evenly spaced offsets for a crop of `c` in a side of `n` (both ends included).
fn grid_offsets(n: u32, c: u32, grid: usize) -> Vec<u32> {
    let span = (n - c) as f64;
    match grid {
        0 => Vec::new(),
        1 => vec![(n - c) / 2],
        g => {
            let mut v: Vec<u32> = (0..g)
                .map(|i| (span * i as f64 / (g - 1) as f64).round() as u32)
                .collect();
            v.dedup();
            v
        }
    }
}

/// The crop's channels with each channel's mean removed, and its total energy.
fn centred_crop(img: &RgbImageF32, x0: u32, y0: u32, c: u32) -> ([Vec<f64>; 3], f64) {
    let (w, c) = (img.width as usize, c as usize);
    let mut energy = 0.0;
    let chans = std::array::from_fn(|ch| {
        let plane = img.plane(ch);
        let mut v = Vec::with_capacity(c * c);
        for y in 0..c {
            let row = &plane[(y0 as usize + y) * w + x0 as usize..][..c];
            v.extend(row.iter().map(|&p| p as f64));
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        for p in v.iter_mut() {
            *p -= mean;
            energy += *p * *p;
        }
        v
    });
    (chans, energy)
}

/// Energy (sum over channels of the squared deviation from the channel's mean) of every
/// `c` x `c` window of `img`, row-major over the (H-c+1) x (W-c+1) top-left corners.
fn window_energies(img: &RgbImageF32, c: u32) -> Vec<f64> {
    let (w, h, c) = (img.width as usize, img.height as usize, c as usize);
    let (nx, ny) = (w - c + 1, h - c + 1);
    let n = (c * c) as f64;
    let mut out = vec![0.0; nx * ny];
    for ch in 0..3 {
        let plane = img.plane(ch);
        // Integral images of values and squares, (h+1) x (w+1).
        let iw = w + 1;
        let mut s1 = vec![0.0f64; (h + 1) * iw];
        let mut s2 = vec![0.0f64; (h + 1) * iw];
        for y in 0..h {
            let (mut r1, mut r2) = (0.0, 0.0);
            for x in 0..w {
                let p = plane[y * w + x] as f64;
                r1 += p;
                r2 += p * p;
                s1[(y + 1) * iw + x + 1] = s1[y * iw + x + 1] + r1;
                s2[(y + 1) * iw + x + 1] = s2[y * iw + x + 1] + r2;
            }
        }
        let rect = |s: &[f64], x: usize, y: usize| {
            s[(y + c) * iw + x + c] - s[y * iw + x + c] - s[(y + c) * iw + x] + s[y * iw + x]
        };
        out.par_chunks_mut(nx).enumerate().for_each(|(y, row)| {
            for (x, o) in row.iter_mut().enumerate() {
                let a = rect(&s1, x, y);
                let b = rect(&s2, x, y);
                *o += (b - a * a / n).max(0.0);
            }
        });
    }
    out
}

/// The sample's channels, zero-padded to `plan`'s grid and transformed.
fn sample_spectra(sample: &RgbImageF32, plan: &Plan2) -> [Vec<Complex>; 3] {
    let (w, h) = (sample.width as usize, sample.height as usize);
    std::array::from_fn(|ch| {
        let mut g = vec![Complex::default(); plan.h * plan.w];
        let plane = sample.plane(ch);
        for y in 0..h {
            for x in 0..w {
                g[y * plan.w + x].re = plane[y * w + x] as f64;
            }
        }
        plan.run(&mut g, false);
        g
    })
}

/// Copy score of `output` against `sample` with `grid` x `grid` crops of side `crop` px
/// (0 = a quarter of the output's shorter side).
pub fn copy_score(output: &RgbImageF32, sample: &RgbImageF32, crop: u32, grid: usize) -> CopyScore {
    let c = effective_crop(crop, output, sample);
    let cu = c as usize;
    let (sw, sh) = (sample.width as usize, sample.height as usize);
    let (nx, ny) = (sw - cu + 1, sh - cu + 1);
    // No window wraps around: a crop at shift u reaches u + c - 1 < the sample's side.
    let plan = Plan2::new(fast_len(sh), fast_len(sw));
    let spectra = sample_spectra(sample, &plan);
    let energies = window_energies(sample, c);
    let flat = FLAT_VARIANCE * (3 * cu * cu) as f64;
    let scale = 1.0 / (plan.h * plan.w) as f64;

    let mut crops = Vec::new();
    for &y0 in &grid_offsets(output.height, c, grid) {
        for &x0 in &grid_offsets(output.width, c, grid) {
            let (chans, ea) = centred_crop(output, x0, y0, c);
            if ea < flat {
                continue;
            }
            // Sum over channels of conj(FFT(crop)) * FFT(sample): the correlation at every shift.
            let mut acc = vec![Complex::default(); plan.h * plan.w];
            for (ch, v) in chans.iter().enumerate() {
                let mut g = vec![Complex::default(); plan.h * plan.w];
                for y in 0..cu {
                    for x in 0..cu {
                        g[y * plan.w + x].re = v[y * cu + x];
                    }
                }
                plan.run(&mut g, false);
                acc.par_iter_mut()
                    .zip(g.par_iter().zip(spectra[ch].par_iter()))
                    .for_each(|(a, (f, s))| {
                        *a += f.conj() * s;
                    });
            }
            plan.run(&mut acc, true);
            let mut best = (0.0f64, 0usize, 0usize);
            let mut first = true;
            for v in 0..ny {
                for u in 0..nx {
                    let es = energies[v * nx + u];
                    let ncc = if es < flat {
                        0.0
                    } else {
                        (acc[v * plan.w + u].re * scale / (ea * es).sqrt()).clamp(-1.0, 1.0)
                    };
                    if first || ncc > best.0 {
                        best = (ncc, u, v);
                        first = false;
                    }
                }
            }
            crops.push(CropMatch {
                x: x0,
                y: y0,
                sample_x: best.1 as u32,
                sample_y: best.2 as u32,
                ncc: best.0,
            });
        }
    }
    let score = if crops.is_empty() {
        0.0
    } else {
        crops.iter().map(|m| m.ncc).sum::<f64>() / crops.len() as f64
    };
    CopyScore {
        score,
        crop_side: c,
        crops,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_image(w: u32, h: u32, seed: u32) -> RgbImageF32 {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
        let data = (0..3 * w * h)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 256) as f32
            })
            .collect();
        RgbImageF32::new(w, h, data)
    }

    fn crop(img: &RgbImageF32, x0: u32, y0: u32, w: u32, h: u32) -> RgbImageF32 {
        let mut data = Vec::new();
        for c in 0..3 {
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    data.push(img.get(x, y, c));
                }
            }
        }
        RgbImageF32::new(w, h, data)
    }

    /// Best NCC of one crop over all windows, by direct sums.
    fn direct_best(out: &RgbImageF32, x0: u32, y0: u32, c: u32, sample: &RgbImageF32) -> f64 {
        let (a, ea) = centred_crop(out, x0, y0, c);
        let mut best = f64::MIN;
        for v in 0..=sample.height - c {
            for u in 0..=sample.width - c {
                let (b, eb) = centred_crop(sample, u, v, c);
                let dot: f64 = (0..3)
                    .map(|ch| a[ch].iter().zip(&b[ch]).map(|(p, q)| p * q).sum::<f64>())
                    .sum();
                best = best.max(dot / (ea * eb).sqrt());
            }
        }
        best
    }

    #[test]
    fn fft_correlation_matches_direct_sums() {
        let sample = noise_image(23, 19, 1);
        let out = noise_image(17, 14, 2);
        let r = copy_score(&out, &sample, 6, 2);
        assert_eq!(r.crop_side, 6);
        assert_eq!(r.crops.len(), 4);
        for m in &r.crops {
            let d = direct_best(&out, m.x, m.y, 6, &sample);
            assert!((d - m.ncc).abs() < 1e-9, "{d} vs {}", m.ncc);
        }
    }

    #[test]
    fn a_cropped_copy_scores_one_and_finds_its_place() {
        let sample = noise_image(40, 32, 3);
        let mut out = crop(&sample, 9, 5, 24, 20);
        // A gain and offset per channel does not hide a copy.
        for (i, v) in out.data.iter_mut().enumerate() {
            *v = *v * 0.5 + if i < 480 { 20.0 } else { 3.0 };
        }
        let r = copy_score(&out, &sample, 8, 3);
        assert!((r.score - 1.0).abs() < 1e-9, "{}", r.score);
        for m in &r.crops {
            assert_eq!((m.sample_x, m.sample_y), (m.x + 9, m.y + 5));
        }
        let other = noise_image(24, 20, 4);
        assert!(copy_score(&other, &sample, 8, 3).score < 0.6);
    }

    #[test]
    fn crops_shrink_to_fit_and_flat_crops_are_skipped() {
        let sample = noise_image(12, 30, 5);
        let out = RgbImageF32::filled(20, 20, [10.0, 20.0, 30.0]);
        let r = copy_score(&out, &sample, 64, 3);
        assert_eq!(r.crop_side, 12);
        assert!(r.crops.is_empty());
        assert_eq!(r.score, 0.0);
        assert_eq!(
            effective_crop(0, &noise_image(100, 60, 1), &noise_image(200, 200, 1)),
            15
        );
    }
}
