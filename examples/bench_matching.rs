//! Exact vs approximate patch matching on real VGG19 features: build and query times, recall@1
//! of the approximate matcher against the exact one, and the memory each keeps for the bank.
//!
//! `cargo run --release --example bench_matching [-- SAMPLE.png [SIZE]]`
//!
//! The bank comes from SAMPLE (default ../shared/images/grass.png) and, when SAMPLE is the
//! default, also from ../shared/images/clouds.png at 512 px (a four times larger bank). The
//! queries are the patches of an image of SIZE x SIZE px (default: 256 and 512) as the MRF prior
//! sees it mid-synthesis: the sample tiled to that size, blended 50/50 with the noise a run
//! starts from. `BENCH_SWEEP=1` adds recall and query time for other `dims` / `candidates`.

use std::time::Instant;

use candle_core::{Device, Tensor};
use mrfsynth::image_io::{load_rgb, LoadLimits, RgbImageF32};
use mrfsynth::matcher::{ApproxMatcher, ApproxOptions, ExactMatcher, PatchMatcher};
use mrfsynth::prior::patches::unfold;
use mrfsynth::synth::{init, style, Init, Task};
use mrfsynth::vgg::{LayerId, Pooling, Vgg19};

/// The sample repeated (mirrored at every other tile, so there are no seams) to `size` x `size`.
fn tile(img: &RgbImageF32, size: u32) -> RgbImageF32 {
    let (w, h) = (img.width, img.height);
    let mut data = Vec::with_capacity((3 * size * size) as usize);
    for c in 0..3 {
        for y in 0..size {
            let (ty, oy) = (y / h, y % h);
            let sy = if ty % 2 == 0 { oy } else { h - 1 - oy };
            for x in 0..size {
                let (tx, ox) = (x / w, x % w);
                let sx = if tx % 2 == 0 { ox } else { w - 1 - ox };
                data.push(img.get(sx, sy, c));
            }
        }
    }
    RgbImageF32::new(size, size, data)
}

/// 50/50 blend of the tiled sample and the seeded initial noise.
fn query_image(style_img: &RgbImageF32, size: u32) -> anyhow::Result<RgbImageF32> {
    let tiled = tile(style_img, size);
    let noise = init::initial_image(
        &Init::Noise,
        &Task::Texture,
        style_img,
        [0.0; 3],
        size,
        size,
        1,
    )?;
    let data = tiled
        .data
        .iter()
        .zip(&noise.data)
        .map(|(a, b)| 0.5 * a + 0.5 * b)
        .collect();
    Ok(RgbImageF32::new(size, size, data))
}

fn queries(vgg: &Vgg19, img: &RgbImageF32, layers: &[LayerId]) -> anyhow::Result<Vec<Tensor>> {
    let input = vgg.preprocess(&img.to_tensor(vgg.device())?)?;
    let fwd = vgg.forward(&input, layers, false)?;
    Ok(layers
        .iter()
        .map(|l| unfold(&fwd.features[l].squeeze(0)?, 3, 2))
        .collect::<candle_core::Result<_>>()?)
}

/// Fastest of `reps` runs (the machine may be busy), and the last result.
fn time<T>(reps: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..reps {
        let t = Instant::now();
        let r = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        out = Some(r);
    }
    Ok((best, out.expect("reps >= 1")))
}

fn recall(a: &Tensor, b: &Tensor) -> anyhow::Result<f64> {
    let a = a.to_vec1::<u32>()?;
    let b = b.to_vec1::<u32>()?;
    Ok(a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64)
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

struct Row {
    exact_query: f64,
    approx_query: f64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let default_sample = "../shared/images/grass.png";
    let sample = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| default_sample.into());
    let sizes: Vec<u32> = match args.get(2).and_then(|s| s.parse().ok()) {
        Some(s) => vec![s],
        None => vec![256, 512],
    };
    let sweep = std::env::var("BENCH_SWEEP").is_ok_and(|v| v == "1");
    let weights = mrfsynth::assets::weights::load(None, true)?;
    let vgg = Vgg19::new(&weights, Pooling::Max, &Device::Cpu)?;
    let layers = LayerId::parse_list("relu3_1,relu4_1").map_err(anyhow::Error::msg)?;
    let limits = LoadLimits::default();

    let mut banks = vec![(sample.clone(), load_rgb(sample.as_ref(), &limits)?)];
    let clouds = "../shared/images/clouds.png";
    if sample == default_sample && std::path::Path::new(clouds).is_file() {
        let img = load_rgb(clouds.as_ref(), &limits)?;
        banks.push((
            clouds.into(),
            mrfsynth::image_io::scale_to_long_side(&img, 512),
        ));
    }
    let opts = ApproxOptions::default();
    println!(
        "approx options: dims {}, candidates {}, seed {}; {} threads; times: fastest of 3 runs",
        opts.dims,
        opts.candidates,
        opts.seed,
        rayon::current_num_threads()
    );
    println!();
    println!("| bank | size | layer | bank M x D | queries | exact build s | exact query s | approx build s | approx query s (f32 / f16) | query speed-up | recall@1 f32 / f16 | bank MB exact / approx f32 / f16 |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut sweeps = Vec::new();
    for (name, img) in &banks {
        let short = std::path::Path::new(name)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| name.clone());
        let bank = style::mrf_banks(&vgg, std::slice::from_ref(img), &layers, 3, 2)?;
        for &size in &sizes {
            let qimg = query_image(img, size)?;
            let qs = queries(&vgg, &qimg, &layers)?;
            let mut totals = Vec::new();
            for ((layer, b), q) in layers.iter().zip(&bank).zip(&qs) {
                let (m, d) = b.dims2()?;
                let n = q.dims()[0];
                let (eb, exact) = time(1, || Ok(ExactMatcher::new(b, 1 << 24)?))?;
                let (eq, em) = time(3, || Ok(exact.best(q)?))?;
                let (ab, approx) = time(1, || Ok(ApproxMatcher::new(b, opts)?))?;
                let (aq, am) = time(3, || Ok(approx.best(q)?))?;
                let o16 = ApproxOptions {
                    f16_bank: true,
                    ..opts
                };
                let approx16 = ApproxMatcher::new(b, o16)?;
                let (aq16, am16) = time(3, || Ok(approx16.best(q)?))?;
                let r = recall(&em.index, &am.index)?;
                let r16 = recall(&em.index, &am16.index)?;
                let kind = if approx.is_approximate() {
                    ""
                } else {
                    " (exact fallback)"
                };
                println!(
                    "| {short} | {size} | {layer}{kind} | {m} x {d} | {n} | {eb:.3} | {eq:.3} | {ab:.3} | {aq:.3} / {aq16:.3} | {:.1}x | {r:.4} / {r16:.4} | {:.1} / {:.1} / {:.1} |",
                    eq / aq,
                    mb(m * d * 4),
                    mb(approx.memory_bytes()),
                    mb(approx16.memory_bytes()),
                );
                totals.push(Row {
                    exact_query: eq,
                    approx_query: aq,
                });
                if sweep && approx.is_approximate() {
                    for dims in [16, 32, 48, 64, 96, 128] {
                        for candidates in [8, 16, 32, 64] {
                            let o = ApproxOptions {
                                dims,
                                candidates,
                                ..opts
                            };
                            let (sb, mt) = time(1, || Ok(ApproxMatcher::new(b, o)?))?;
                            let (sq, sm) = time(2, || Ok(mt.best(q)?))?;
                            sweeps.push(format!(
                                "| {short} | {size} | {layer} | {dims} | {candidates} | {sb:.3} | {sq:.3} | {:.4} |",
                                recall(&em.index, &sm.index)?
                            ));
                        }
                    }
                }
            }
            let e: f64 = totals.iter().map(|r| r.exact_query).sum();
            let a: f64 = totals.iter().map(|r| r.approx_query).sum();
            println!(
                "| {short} | {size} | **both layers** | | | | {e:.3} | | {a:.3} | **{:.1}x** | | |",
                e / a
            );
        }
    }
    if sweep {
        println!();
        println!("| bank | size | layer | dims | candidates | build s | query s | recall@1 |");
        println!("|---|---|---|---|---|---|---|---|");
        for s in sweeps {
            println!("{s}");
        }
    }
    Ok(())
}
