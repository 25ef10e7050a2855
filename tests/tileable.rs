//! Seamless tiles: tiled 2x2, the output's seams are no more visible than its interior.

mod common;

use candle_core::Device;
use mrfsynth::image_io::{load_rgb, resize, LoadLimits, RgbImageF32};
use mrfsynth::synth::{self, Params, Silent, Task};
use mrfsynth::vgg::{Pooling, Vgg19};

/// (mean |difference| across the wrap-around seams, mean |difference| between interior
/// neighbours), over both directions and all channels. In a 2x2 tiling the seam lines pair
/// the last column with the first, and the last row with the first.
pub fn seam_and_interior(img: &RgbImageF32) -> (f64, f64) {
    let (w, h) = (img.width as usize, img.height as usize);
    let (mut seam, mut ns, mut inner, mut ni) = (0f64, 0usize, 0f64, 0usize);
    for c in 0..3 {
        let p = img.plane(c);
        for y in 0..h {
            for x in 0..w {
                let v = p[y * w + x] as f64;
                let right = p[y * w + (x + 1) % w] as f64;
                let down = p[((y + 1) % h) * w + x] as f64;
                if x + 1 == w {
                    seam += (right - v).abs();
                    ns += 1;
                } else {
                    inner += (right - v).abs();
                    ni += 1;
                }
                if y + 1 == h {
                    seam += (down - v).abs();
                    ns += 1;
                } else {
                    inner += (down - v).abs();
                    ni += 1;
                }
            }
        }
    }
    (seam / ns as f64, inner / ni as f64)
}

#[test]
fn tiled_output_has_invisible_seams() {
    let vgg = Vgg19::new(common::weights(), Pooling::Max, &Device::Cpu).unwrap();
    for name in ["grass.png", "riverstones.png"] {
        let Some(path) = common::shared_image(name) else {
            return;
        };
        let style = resize(&load_rgb(&path, &LoadLimits::default()).unwrap(), 128, 128);
        let run = |tileable: bool| {
            let params = Params {
                width: 64,
                height: 64,
                levels: 1,
                iterations: 40,
                seed: 3,
                tileable,
                ..Params::default()
            };
            synth::run(
                &vgg,
                std::slice::from_ref(&style),
                &[1.0],
                Task::Texture,
                &params,
                &mut Silent,
            )
            .unwrap()
            .image
        };
        let (seam, inner) = seam_and_interior(&run(true));
        let (seam_plain, inner_plain) = seam_and_interior(&run(false));
        eprintln!(
            "{name}: tileable seam/interior {:.2} ({seam:.1}/{inner:.1}); plain {:.2}",
            seam / inner,
            seam_plain / inner_plain
        );
        assert!(
            seam < 1.3 * inner,
            "{name}: seams {seam:.1} vs interior {inner:.1}"
        );
        assert!(
            seam / inner < seam_plain / inner_plain,
            "{name}: tiling made seams no better"
        );
    }
}
