//! Colour handling after synthesis.

use crate::image_io::RgbImageF32;

fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// neural-style's `--original_colors`: the luminance of `stylised` with the chrominance of
/// `content` (same size). In YUV the luminance adds equally to R, G and B, so replacing it is
/// adding the luminance difference to every channel of the content.
pub fn keep_luminance(stylised: &RgbImageF32, content: &RgbImageF32) -> RgbImageF32 {
    assert_eq!(
        (stylised.width, stylised.height),
        (content.width, content.height)
    );
    let n = stylised.pixel_count();
    let (s, c) = (&stylised.data, &content.data);
    let mut out = vec![0f32; 3 * n];
    for i in 0..n {
        let dy = luma(s[i], s[n + i], s[2 * n + i]) - luma(c[i], c[n + i], c[2 * n + i]);
        for ch in 0..3 {
            out[ch * n + i] = (c[ch * n + i] + dy).clamp(0.0, 255.0);
        }
    }
    RgbImageF32::new(stylised.width, stylised.height, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_luminance_from_one_and_colour_from_the_other() {
        let grey = RgbImageF32::filled(2, 2, [100.0, 100.0, 100.0]);
        let red = RgbImageF32::filled(2, 2, [200.0, 50.0, 50.0]);
        let out = keep_luminance(&grey, &red);
        let px = [out.get(0, 0, 0), out.get(0, 0, 1), out.get(0, 0, 2)];
        assert!((luma(px[0], px[1], px[2]) - 100.0).abs() < 1e-3);
        assert!(px[0] > px[1] + 100.0, "still red: {px:?}");
    }
}
