//! Geometric variants of a style image: rotations, scales and mirror padding.

use crate::image_io::{resize_with, Resample, RgbImageF32};

/// Bilinear sample of channel `c` at real coordinates (clamped to the image).
fn sample(img: &RgbImageF32, c: usize, x: f32, y: f32) -> f32 {
    let (w, h) = (img.width as usize, img.height as usize);
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let p = img.plane(c);
    let top = p[y0 * w + x0] * (1.0 - fx) + p[y0 * w + x1] * fx;
    let bottom = p[y1 * w + x0] * (1.0 - fx) + p[y1 * w + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Size of the largest axis-aligned rectangle inside a `w` x `h` image rotated by `angle`.
pub fn valid_rotated_size(w: f32, h: f32, angle: f32) -> (f32, f32) {
    let (s, c) = (angle.sin().abs(), angle.cos().abs());
    if s < 1e-6 {
        return (w, h);
    }
    let (long, short) = if w >= h { (w, h) } else { (h, w) };
    if short <= 2.0 * s * c * long || (s - c).abs() < 1e-6 {
        // The crop touches the long sides at two points: a half-constrained solution.
        let x = 0.5 * short;
        if w >= h {
            (x / s, x / c)
        } else {
            (x / c, x / s)
        }
    } else {
        let cos2 = c * c - s * s;
        ((w * c - h * s) / cos2, (h * c - w * s) / cos2)
    }
}

/// The image rotated by `angle` radians about its centre, cropped to its valid region.
pub fn rotate_cropped(img: &RgbImageF32, angle: f32) -> RgbImageF32 {
    if angle.abs() < 1e-6 {
        return img.clone();
    }
    let (vw, vh) = valid_rotated_size(img.width as f32, img.height as f32, angle);
    let (ow, oh) = ((vw.floor() as u32).max(1), (vh.floor() as u32).max(1));
    let (cx, cy) = (
        (img.width as f32 - 1.0) / 2.0,
        (img.height as f32 - 1.0) / 2.0,
    );
    let (ocx, ocy) = ((ow as f32 - 1.0) / 2.0, (oh as f32 - 1.0) / 2.0);
    let (s, c) = angle.sin_cos();
    let n = (ow * oh) as usize;
    let mut data = vec![0f32; 3 * n];
    for y in 0..oh {
        for x in 0..ow {
            let (dx, dy) = (x as f32 - ocx, y as f32 - ocy);
            // Inverse rotation: where this output pixel comes from in the source.
            let sx = cx + c * dx + s * dy;
            let sy = cy - s * dx + c * dy;
            for ch in 0..3 {
                data[ch * n + (y * ow + x) as usize] = sample(img, ch, sx, sy);
            }
        }
    }
    RgbImageF32::new(ow, oh, data)
}

/// The image scaled by `factor` (each side at least 1 px), Lanczos3.
pub fn scaled(img: &RgbImageF32, factor: f32) -> RgbImageF32 {
    scaled_with(img, factor, Resample::Lanczos3)
}

/// [`scaled`] with a choice of filter.
pub fn scaled_with(img: &RgbImageF32, factor: f32, filter: Resample) -> RgbImageF32 {
    if (factor - 1.0).abs() < 1e-6 {
        return img.clone();
    }
    let w = ((img.width as f32 * factor).round() as u32).max(1);
    let h = ((img.height as f32 * factor).round() as u32).max(1);
    resize_with(img, w, h, filter)
}

/// CNNMRF's style augmentation: rotations k*pi/24 (|k| <= rotations) times scales 1.05^s
/// (|s| <= scales), scaled with `filter`.
pub fn variants(
    img: &RgbImageF32,
    rotations: u32,
    scales: u32,
    filter: Resample,
) -> Vec<RgbImageF32> {
    let mut out = Vec::new();
    for s in -(scales as i32)..=scales as i32 {
        let base = scaled_with(img, 1.05f32.powi(s), filter);
        for k in -(rotations as i32)..=rotations as i32 {
            out.push(rotate_cropped(
                &base,
                k as f32 * std::f32::consts::PI / 24.0,
            ));
        }
    }
    out
}

/// Mirror-pads by `m` pixels on every side (reflection without repeating the edge).
pub fn mirror_pad(img: &RgbImageF32, m: u32) -> RgbImageF32 {
    let (w, h) = (img.width as i64, img.height as i64);
    let (ow, oh) = (img.width + 2 * m, img.height + 2 * m);
    let reflect = |v: i64, n: i64| -> usize {
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let r = v.rem_euclid(period);
        (if r < n { r } else { period - r }) as usize
    };
    let n = (ow * oh) as usize;
    let mut data = vec![0f32; 3 * n];
    for ch in 0..3 {
        let p = img.plane(ch);
        for y in 0..oh as i64 {
            let sy = reflect(y - m as i64, h);
            for x in 0..ow as i64 {
                let sx = reflect(x - m as i64, w);
                data[ch * n + (y * ow as i64 + x) as usize] = p[sy * w as usize + sx];
            }
        }
    }
    RgbImageF32::new(ow, oh, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_crop_stays_inside_and_shrinks() {
        let img = RgbImageF32::filled(100, 60, [10.0, 20.0, 30.0]);
        let r = rotate_cropped(&img, 0.2);
        assert!(r.width < 100 && r.height < 60 && r.width > 50 && r.height > 20);
        // No sample fell outside the source: a constant image stays constant.
        assert!(r.plane(2).iter().all(|&v| (v - 30.0).abs() < 1e-4));
        assert_eq!(variants(&img, 1, 1, Resample::Lanczos3).len(), 9);
    }

    #[test]
    fn mirror_pad_reflects() {
        let img = RgbImageF32::new(3, 1, vec![1., 2., 3., 0., 0., 0., 0., 0., 0.]);
        let p = mirror_pad(&img, 2);
        assert_eq!((p.width, p.height), (7, 5));
        assert_eq!(&p.plane(0)[2 * 7..3 * 7], &[3., 2., 1., 2., 3., 2., 1.]);
    }
}
