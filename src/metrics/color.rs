//! Colour histogram distance.
//!
//! Per channel (R, G, B), a 32-bin histogram of the 0..255 values (bins 8 levels wide; values
//! outside are clamped), normalised to sum 1. Two histograms are compared by the earth mover's
//! distance with bin centres spaced evenly over [0, 1], i.e. `sum_b |CDF_a(b) - CDF_b(b)| / 31`.
//! It is in units of the full intensity range: 0 for equal histograms, 1 for all black against all
//! white, 1/31 for a shift by one bin. The reported distance is the mean over the three channels.

use crate::image_io::RgbImageF32;

pub const BINS: usize = 32;

/// Normalised histogram of a plane of 0..255 values.
pub fn histogram(plane: &[f32]) -> [f64; BINS] {
    let mut h = [0.0f64; BINS];
    for &v in plane {
        let b = (v.clamp(0.0, 255.0) * (BINS as f32 / 256.0)) as usize; // NaN lands in bin 0
        h[b.min(BINS - 1)] += 1.0;
    }
    let n = plane.len().max(1) as f64;
    h.iter_mut().for_each(|x| *x /= n);
    h
}

/// Earth mover's distance between two normalised histograms, bin centres spaced over [0, 1].
pub fn emd(a: &[f64; BINS], b: &[f64; BINS]) -> f64 {
    let (mut ca, mut cb, mut d) = (0.0, 0.0, 0.0);
    for i in 0..BINS - 1 {
        ca += a[i];
        cb += b[i];
        d += (ca - cb).abs();
    }
    d / (BINS - 1) as f64
}

/// Mean over R, G, B of the EMD between the two images' 32-bin histograms (0..1).
pub fn color_histogram_distance(a: &RgbImageF32, b: &RgbImageF32) -> f64 {
    (0..3)
        .map(|c| emd(&histogram(a.plane(c)), &histogram(b.plane(c))))
        .sum::<f64>()
        / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_distances() {
        let black = RgbImageF32::filled(4, 4, [0.0; 3]);
        let white = RgbImageF32::filled(5, 3, [255.0; 3]);
        assert_eq!(color_histogram_distance(&black, &black), 0.0);
        assert!((color_histogram_distance(&black, &white) - 1.0).abs() < 1e-12);
        let one_bin = RgbImageF32::filled(2, 2, [8.0, 0.0, 0.0]);
        let d = color_histogram_distance(&black, &one_bin);
        assert!((d - 1.0 / 31.0 / 3.0).abs() < 1e-12, "{d}");
        // Half the pixels moved across the whole range: 0.5.
        let mut half = RgbImageF32::filled(2, 1, [0.0; 3]);
        for c in 0..3 {
            half.data[c * 2 + 1] = 300.0; // clamped to 255
        }
        assert!((color_histogram_distance(&black, &half) - 0.5).abs() < 1e-12);
    }
}
