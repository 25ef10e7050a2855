//! Guide maps on a real sample (after neural-doodle): grass with a river of pebbles drawn by hand.
//!
//! The sample is grass and pebbles side by side; its map paints the grass red and the pebbles
//! blue. The target map, drawn here, is red with a winding blue band: the output grows pebbles
//! along the band and grass around it.
//! `cargo run --release --example guided [-- OUT.png]` (needs ../shared/images).

use candle_core::Device;
use mrfsynth::image_io::{load_rgb, resize, save_rgb, LoadLimits, RgbImageF32};
use mrfsynth::synth::{self, Guides, Params, Silent, Task};
use mrfsynth::vgg::{Pooling, Vgg19};

fn paint(w: u32, h: u32, blue: impl Fn(f32, f32) -> bool) -> RgbImageF32 {
    let n = (w * h) as usize;
    let mut data = vec![0f32; 3 * n];
    for y in 0..h {
        for x in 0..w {
            let i = (y * w + x) as usize;
            if blue(x as f32, y as f32) {
                data[2 * n + i] = 255.0;
            } else {
                data[i] = 255.0;
            }
        }
    }
    RgbImageF32::new(w, h, data)
}

fn main() -> anyhow::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "guided.png".into());
    let dir = std::path::Path::new("../shared/images");
    if !dir.is_dir() {
        println!("skipping: ../shared/images is absent");
        return Ok(());
    }
    let grass = resize(
        &load_rgb(&dir.join("grass.png"), &LoadLimits::default())?,
        192,
        192,
    );
    let stones = resize(
        &load_rgb(&dir.join("riverstones.png"), &LoadLimits::default())?,
        192,
        192,
    );
    let mut data = Vec::new();
    for c in 0..3 {
        for y in 0..192 {
            data.extend_from_slice(&grass.plane(c)[y * 192..(y + 1) * 192]);
            data.extend_from_slice(&stones.plane(c)[y * 192..(y + 1) * 192]);
        }
    }
    let style = RgbImageF32::new(384, 192, data);
    let style_map = paint(384, 192, |x, _| x >= 192.0);
    // A hand-drawn river: a sine band across the output.
    let (w, h) = (256u32, 256u32);
    let target_map = paint(w, h, |x, y| {
        (y - (128.0 + 50.0 * (x / 40.0).sin())).abs() < 36.0
    });
    let weights = mrfsynth::assets::weights::load(None, true)?;
    let vgg = Vgg19::new(&weights, Pooling::Max, &Device::Cpu)?;
    let params = {
        let mut p = Params::default();
        p.width = w;
        p.height = h;
        p.levels = 2;
        p.iterations = 60;
        p.guides = Some(Guides {
            style_maps: vec![style_map],
            target_map: target_map.clone(),
            weight: 2.0,
        });
        p
    };
    let result = synth::run(&vgg, &[style], &[1.0], Task::Texture, &params, &mut Silent)?;
    save_rgb(&result.image, out.as_ref())?;
    let map_path = std::path::Path::new(&out).with_extension("map.png");
    save_rgb(&target_map, &map_path)?;
    println!("wrote {out} and its target map {}", map_path.display());
    Ok(())
}
