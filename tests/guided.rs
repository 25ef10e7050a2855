//! Guide maps: regions of the output draw their patches from the same-coloured regions of the
//! sample.

mod common;

use candle_core::Device;
use mrfsynth::image_io::{load_rgb, resize, LoadLimits, RgbImageF32};
use mrfsynth::synth::{self, Guides, Init, Params, Silent, Task};
use mrfsynth::vgg::{Pooling, Vgg19};

/// Left half of `a`, right half of `b`, side by side.
fn side_by_side(a: &RgbImageF32, b: &RgbImageF32) -> RgbImageF32 {
    let (w, h) = (a.width + b.width, a.height);
    let mut data = vec![0f32; 3 * (w * h) as usize];
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let v = if x < a.width {
                    a.get(x, y, c)
                } else {
                    b.get(x - a.width, y, c)
                };
                data[(c as u32 * w * h + y * w + x) as usize] = v;
            }
        }
    }
    RgbImageF32::new(w, h, data)
}

/// A two-colour map: `first` where `pred(x, y)`, else `second`.
fn map(
    w: u32,
    h: u32,
    pred: impl Fn(u32, u32) -> bool,
    first: [f32; 3],
    second: [f32; 3],
) -> RgbImageF32 {
    let mut img = RgbImageF32::filled(w, h, second);
    let n = (w * h) as usize;
    for y in 0..h {
        for x in 0..w {
            if pred(x, y) {
                for (c, &v) in first.iter().enumerate() {
                    img.data[c * n + (y * w + x) as usize] = v;
                }
            }
        }
    }
    img
}

/// Mean of green minus blue over rows [y0, y1): high for grass, near zero for grey stones.
fn green_excess(img: &RgbImageF32, y0: u32, y1: u32) -> f32 {
    let (mut s, mut n) = (0f32, 0f32);
    for y in y0..y1 {
        for x in 0..img.width {
            s += img.get(x, y, 1) - img.get(x, y, 2);
            n += 1.0;
        }
    }
    s / n
}

#[test]
fn regions_follow_the_target_map() {
    let (Some(g), Some(r)) = (
        common::shared_image("grass.png"),
        common::shared_image("riverstones.png"),
    ) else {
        return;
    };
    let grass = resize(&load_rgb(&g, &LoadLimits::default()).unwrap(), 96, 96);
    let stones = resize(&load_rgb(&r, &LoadLimits::default()).unwrap(), 96, 96);
    let style = side_by_side(&grass, &stones);
    let (red, blue) = ([255.0, 0.0, 0.0], [0.0, 0.0, 255.0]);
    // Style: grass red, stones blue. Target: stones (blue) on top, grass (red) below.
    let style_map = map(192, 96, |x, _| x < 96, red, blue);
    let target_map = map(64, 64, |_, y| y < 32, blue, red);
    let vgg = Vgg19::new(common::weights(), Pooling::Max, &Device::Cpu).unwrap();
    let params = Params {
        width: 64,
        height: 64,
        levels: 1,
        iterations: 40,
        guides: Some(Guides {
            style_maps: vec![style_map],
            target_map,
            weight: 2.0,
        }),
        // What is tested is where the matches come from; a noise start around the sample's
        // colours shows it within this small budget (from the default flat grey, 40 iterations
        // at 64 px leave the colours muted: 8.2 against 21.6).
        init: Init::Noise,
        ..Params::default()
    };
    let out = synth::run(&vgg, &[style], &[1.0], Task::Texture, &params, &mut Silent)
        .unwrap()
        .image;
    let (top, bottom) = (green_excess(&out, 4, 28), green_excess(&out, 36, 60));
    eprintln!("green excess: top (stones) {top:.1}, bottom (grass) {bottom:.1}");
    assert!(
        bottom > top + 15.0,
        "grass should fill the bottom: top {top:.1}, bottom {bottom:.1}"
    );
}
