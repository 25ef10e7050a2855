//! MRF evaluation cost at 256 and 384 px: seconds per evaluation split into VGG forward,
//! priors (patch matching and loss) and VGG backward, plus peak memory.
//!
//! `cargo run --release --example bench_mrf [-- SAMPLE.png [EVALS]]` (default sample:
//! ../shared/images/grass.png).

// The allocator the CLI runs with (it keeps large buffers between evaluations).
#[global_allocator]
static ALLOC: mrfsynth::cpu::block_cache::BlockCache = mrfsynth::cpu::block_cache::BlockCache;

use std::time::Instant;

use candle_core::Device;
use mrfsynth::image_io::{load_rgb, LoadLimits};
use mrfsynth::matcher::ExactMatcher;
use mrfsynth::prior::mrf::{MrfLayer, MrfPrior};
use mrfsynth::prior::FeatureLoss;
use mrfsynth::synth::{init, style, Objective, Params, Task};
use mrfsynth::vgg::{Pooling, Vgg19};

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sample = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "../shared/images/grass.png".into());
    let evals: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let style_img = load_rgb(sample.as_ref(), &LoadLimits::default())?;
    let weights = mrfsynth::assets::weights::load(None, true)?;
    let vgg = Vgg19::new(&weights, Pooling::Max, &Device::Cpu)?;
    let params = Params::default();
    println!(
        "sample {sample} ({}x{}), {evals} evaluations per size, {} threads",
        style_img.width,
        style_img.height,
        rayon::current_num_threads()
    );
    println!(
        "| size | s/eval | forward | priors (matching) | backward | bank sizes | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|");
    for size in [256u32, 384] {
        let banks = style::mrf_banks(
            &vgg,
            std::slice::from_ref(&style_img),
            &params.mrf_layers,
            3,
            2,
        )?;
        let sizes: Vec<usize> = banks.iter().map(|b| b.dims()[0]).collect();
        let layers = params
            .mrf_layers
            .iter()
            .zip(banks)
            .map(|(l, b)| {
                Ok(MrfLayer::new(
                    *l,
                    b.clone(),
                    Box::new(ExactMatcher::new(&b, params.match_budget)?),
                    1e-4,
                    3,
                    2,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let priors: Vec<Box<dyn FeatureLoss>> = vec![Box::new(MrfPrior { layers })];
        let mut obj = Objective::new(&vgg, priors, params.tv_weight, size as usize, size as usize);
        let x = init::initial_image(
            &params.init,
            &Task::Texture,
            &style_img,
            vgg.input_mean_rgb(),
            size,
            size,
            0,
        )?;
        let mut g = vec![0f32; x.data.len()];
        obj.evaluate(&x.data, &mut g)?; // warm-up
        obj.timing = Default::default();
        let t = Instant::now();
        for _ in 0..evals {
            obj.evaluate(&x.data, &mut g)?;
        }
        let per = t.elapsed().as_secs_f64() / evals as f64;
        let tm = obj.timing;
        let n = evals as f64;
        println!(
            "| {size} | {per:.3} | {:.3} | {:.3} | {:.3} | {sizes:?} | {:.0} |",
            tm.forward_s / n,
            tm.priors_s / n,
            tm.backward_s / n,
            peak_rss_mb()
        );
    }
    Ok(())
}
