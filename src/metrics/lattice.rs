//! Periodicity: how strongly an image repeats itself at some shift, from the autocorrelation of
//! its luminance. A synthesis laid out as a lattice (too few patches, stride-periodic gradients)
//! has a strong secondary peak that its sample lacks; comparing the two is the measure.

use super::fft::{fast_len, Complex, Plan2};
use crate::image_io::RgbImageF32;

/// Shifts closer to the origin than this (px, in both directions) belong to the central peak.
const MIN_SHIFT: usize = 8;

/// Largest normalised autocorrelation of the luminance over shifts (dx, dy) with
/// max(|dx|, |dy|) >= 8 px and both at most a quarter of the image's side: 1 for an image that
/// repeats exactly within that range, near 0 for noise. Each shift is normalised by the number
/// of pixel pairs it overlaps, so large shifts are not penalised.
pub fn periodicity(img: &RgbImageF32) -> f64 {
    let (w, h) = (img.width as usize, img.height as usize);
    let (max_dx, max_dy) = (w / 4, h / 4);
    if max_dx.max(max_dy) < MIN_SHIFT {
        return 0.0;
    }
    let luma = luminance(img);
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    // Zero-padded by at least the largest shift, so the circular correlation is the linear one
    // at every shift read below.
    let (ph, pw) = (fast_len(h + max_dy), fast_len(w + max_dx));
    let mut grid = vec![Complex::default(); ph * pw];
    for y in 0..h {
        for x in 0..w {
            grid[y * pw + x] = Complex::new(luma[y * w + x] - mean, 0.0);
        }
    }
    let plan = Plan2::new(ph, pw);
    plan.run(&mut grid, false);
    for v in grid.iter_mut() {
        *v = Complex::new(v.re * v.re + v.im * v.im, 0.0);
    }
    plan.run(&mut grid, true);
    let at = |dy: isize, dx: isize| {
        let (y, x) = (dy.rem_euclid(ph as isize), dx.rem_euclid(pw as isize));
        let pairs = (h - dy.unsigned_abs()) * (w - dx.unsigned_abs());
        grid[y as usize * pw + x as usize].re / pairs as f64
    };
    let zero = at(0, 0);
    if zero <= 0.0 {
        return 0.0;
    }
    let mut best = 0f64;
    for dy in -(max_dy as isize)..=max_dy as isize {
        for dx in 0..=max_dx as isize {
            if dy.unsigned_abs().max(dx.unsigned_abs()) >= MIN_SHIFT {
                best = best.max(at(dy, dx) / zero);
            }
        }
    }
    best
}

/// Rec. 601 luminance of each pixel, row-major.
pub fn luminance(img: &RgbImageF32) -> Vec<f64> {
    let n = img.pixel_count();
    (0..n)
        .map(|i| {
            0.299 * img.data[i] as f64
                + 0.587 * img.data[n + i] as f64
                + 0.114 * img.data[2 * n + i] as f64
        })
        .collect()
}

/// Largest normalised luminance autocorrelation over the given shifts (dx, dy >= 0), each
/// over the pixel pairs it overlaps; for an image too large for [`periodicity`]'s transform
/// (a 4096 px generator output), at the few shifts where a repetition is suspected.
pub fn autocorrelation_at(img: &RgbImageF32, shifts: &[(usize, usize)]) -> f64 {
    let (w, h) = (img.width as usize, img.height as usize);
    let luma = luminance(img);
    let mean = luma.iter().sum::<f64>() / luma.len() as f64;
    let var = luma.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / luma.len() as f64;
    if var <= 0.0 {
        return 0.0;
    }
    shifts
        .iter()
        .filter(|&&(dx, dy)| dx < w && dy < h)
        .map(|&(dx, dy)| {
            let s: f64 = (0..h - dy)
                .map(|y| {
                    let (a, b) = (&luma[y * w..y * w + w - dx], &luma[(y + dy) * w + dx..]);
                    a.iter().zip(b).map(|(p, q)| (p - mean) * (q - mean)).sum::<f64>()
                })
                .sum();
            s / ((h - dy) * (w - dx)) as f64 / var
        })
        .fold(f64::MIN, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32, f: impl Fn(u32, u32) -> f32) -> RgbImageF32 {
        let plane: Vec<f32> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| f(x, y))
            .collect();
        RgbImageF32::new(w, h, [plane.clone(), plane.clone(), plane].concat())
    }

    #[test]
    fn a_lattice_scores_high_and_noise_low() {
        let lattice = image(128, 128, |x, y| {
            if x % 16 < 8 && y % 16 < 8 {
                200.0
            } else {
                50.0
            }
        });
        assert!(periodicity(&lattice) > 0.9, "{}", periodicity(&lattice));
        // A hash of the position: white noise, the same on every run.
        let noise = image(128, 128, |x, y| {
            let mut s = (y as u64 * 131 + x as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            s ^= s >> 29;
            s = s.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            s ^= s >> 32;
            (s % 256) as f32
        });
        assert!(periodicity(&noise) < 0.1, "{}", periodicity(&noise));
        assert!(autocorrelation_at(&lattice, &[(16, 0), (0, 32)]) > 0.99);
        assert!(autocorrelation_at(&noise, &[(16, 0), (0, 32)]) < 0.1);
    }
}
