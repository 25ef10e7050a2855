//! A labelled side-by-side panel of images (style, content, MRF, Gram, ...).

use crate::image_io::{resize, RgbImageF32};

use super::font::{draw_text, text_width};

const LABEL_SCALE: u32 = 2;
const LABEL_HEIGHT: u32 = 7 * LABEL_SCALE + 8;
const GAP: u32 = 8;

/// Each image scaled to `height` px tall (aspect kept), side by side on white, each with its
/// label above it.
pub fn panel(items: &[(&str, &RgbImageF32)], height: u32) -> image::RgbImage {
    let scaled: Vec<(String, image::RgbImage)> = items
        .iter()
        .map(|(label, img)| {
            let w = ((img.width as f64 * height as f64 / img.height as f64).round() as u32).max(1);
            (label.to_string(), resize(img, w, height).to_rgb8())
        })
        .collect();
    let width = scaled
        .iter()
        .map(|(l, im)| im.width().max(text_width(l, LABEL_SCALE)))
        .sum::<u32>()
        + GAP * (scaled.len() as u32 + 1);
    let mut out = image::RgbImage::from_pixel(
        width,
        height + LABEL_HEIGHT + GAP,
        image::Rgb([255, 255, 255]),
    );
    let mut x = GAP;
    for (label, im) in &scaled {
        draw_text(&mut out, label, x, 4, LABEL_SCALE, [20, 20, 20]);
        image::imageops::replace(&mut out, im, x as i64, LABEL_HEIGHT as i64);
        x += im.width().max(text_width(label, LABEL_SCALE)) + GAP;
    }
    out
}
