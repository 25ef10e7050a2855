//! Feed-forward generators against the optimisation they replace: per texture, train a
//! generator within a time budget, then compare its textures with our optimisation-based
//! default `texture` on the same sample (SWD, copy scores, repetition at the crop period) and
//! time generation at 1024 x 1024 (loading the model included).
//!
//! `cargo run --release --example bench_feedforward -- [--textures brick,gravel] [--minutes 10]
//! [--steps 450] [--crop 256] [--prior gram]
//! [--upsamplings 2] [--channels 32] [--blocks 3] [--dilations 1,2,4] [--diversity 0.05]
//! [--loss-levels 1] [--waves auto|off] [--learning-rate 0.01] [--learning-rate-end 1]
//! [--layout-noise CHANNELS,SCALE] [--seed 0 (training)] [--out bench_feedforward]`
//!
//! Textures are the project's fetched test images (brick, grass, gravel, ihc) or image files
//! (such as `../shared/images/riverstones.png`), at their native scale. Writes `results.json`,
//! `contact_sheet.png` (sample | optimisation | two seeds of the generator, each the output's
//! centre at the sample's scale) and prints a markdown table whose ratios compare against the
//! optimisation run in the same script.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _};
use candle_core::Device;
use mrfsynth::feedforward::{self, Model, TrainData, TrainObserver, TrainOptions, TrainStep};
use mrfsynth::image_io::{load_rgb, resize, save_rgb, LoadLimits, RgbImageF32};
use mrfsynth::metrics::{self, MetricsOptions, StyleReference};
use mrfsynth::optim::Control;
use mrfsynth::report::font::{draw_text, text_width};
use mrfsynth::{Params, Preset, PriorKind, Silent, Synth};

struct Args {
    textures: Vec<String>,
    minutes: f64,
    steps: usize,
    crop: u32,
    prior: String,
    upsamplings: Option<usize>,
    channels: Option<usize>,
    diversity: Option<f64>,
    blocks: Option<usize>,
    dilations: Option<Vec<usize>>,
    loss_levels: Option<usize>,
    periodic: Option<bool>,
    learning_rate: Option<f64>,
    learning_rate_end: Option<f64>,
    layout_noise: Option<(usize, usize)>,
    seed: u64,
    out: PathBuf,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        textures: vec!["brick".into(), "gravel".into()],
        minutes: 10.0,
        steps: TrainOptions::texture().steps,
        crop: TrainOptions::texture().crop,
        prior: "gram".into(),
        upsamplings: None,
        channels: None,
        diversity: None,
        blocks: None,
        dilations: None,
        loss_levels: None,
        periodic: None,
        learning_rate: None,
        learning_rate_end: None,
        layout_noise: None,
        seed: 0,
        out: PathBuf::from("bench_feedforward"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--textures" => a.textures = value()?.split(',').map(str::to_string).collect(),
            "--minutes" => a.minutes = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--crop" => a.crop = value()?.parse()?,
            "--prior" => a.prior = value()?,
            "--upsamplings" => a.upsamplings = Some(value()?.parse()?),
            "--channels" => a.channels = Some(value()?.parse()?),
            "--diversity" => a.diversity = Some(value()?.parse()?),
            "--blocks" => a.blocks = Some(value()?.parse()?),
            "--dilations" => {
                a.dilations = Some(
                    value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?,
                )
            }
            "--loss-levels" => a.loss_levels = Some(value()?.parse()?),
            "--waves" => {
                a.periodic = Some(match value()?.as_str() {
                    "auto" => true,
                    "off" => false,
                    v => anyhow::bail!("--waves takes auto or off, got {v:?}"),
                })
            }
            "--learning-rate" => a.learning_rate = Some(value()?.parse()?),
            "--learning-rate-end" => a.learning_rate_end = Some(value()?.parse()?),
            "--layout-noise" => {
                // CHANNELS,SCALE
                let v = value()?;
                let (c, s) = v
                    .split_once(',')
                    .context("--layout-noise takes CHANNELS,SCALE")?;
                a.layout_noise = Some((c.parse()?, s.parse()?));
            }
            "--seed" => a.seed = value()?.parse()?,
            "--out" => a.out = value()?.into(),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// A fetched test image by name, or an image file (such as `../shared/images/riverstones.png`).
fn sample_path(name: &str) -> anyhow::Result<PathBuf> {
    if mrfsynth::assets::samples::test_image_names().any(|n| n == name) {
        return mrfsynth::assets::samples::test_image(name).map_err(anyhow::Error::msg);
    }
    let p = PathBuf::from(name);
    if p.is_file() {
        return Ok(p);
    }
    bail!("--textures: {name:?} is neither a test image nor a file")
}

/// The row and file label of a texture: its name, or a file's stem.
fn label_of(name: &str) -> String {
    std::path::Path::new(name)
        .file_stem()
        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned())
}

/// Stops training when the time budget is spent.
struct Budget {
    seconds: f64,
}

impl TrainObserver for Budget {
    fn step(&mut self, info: &TrainStep) -> Control {
        if info.step.is_multiple_of(100) {
            eprintln!(
                "  step {} loss {:.4e} {:.0}s",
                info.step, info.loss, info.seconds
            );
        }
        if info.seconds >= self.seconds {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

#[derive(serde::Serialize)]
struct Row {
    texture: String,
    sample: (u32, u32),
    train_steps: usize,
    train_seconds: f64,
    optimisation_seconds: f64,
    /// Load + generate 1024 x 1024, median of three.
    generate_1024_seconds: f64,
    swd_generator: f64,
    swd_optimisation: f64,
    copy_generator: f64,
    copy_optimisation: f64,
    copy_between_seeds: f64,
    /// Luminance autocorrelation of a 2048 px texture at shifts of the crop period.
    autocorrelation_at_crop: f64,
    /// Strongest luminance autocorrelation at 8 px or more (`metrics`' lattice score) of the
    /// generator's seed-1 texture, the optimisation's and the sample's.
    periodicity_generator: f64,
    periodicity_optimisation: f64,
    periodicity_sample: f64,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out)?;
    let net = mrfsynth::Network::load()?;
    let vgg = net.vgg();
    let mopts = MetricsOptions::default();
    let mut rows = Vec::new();
    let mut sheet_rows = Vec::new();
    for name in &args.textures {
        eprintln!("{name}:");
        let path = sample_path(name)?;
        let name = &label_of(name);
        let sample = load_rgb(&path, &LoadLimits::default())?;
        let reference = StyleReference::new(vgg, &sample)?;

        // The optimisation-based default at 384 px, seed 1.
        let t = Instant::now();
        let opt = Synth::texture(sample.to_rgb8())
            .long_side(384)
            .seed(1)
            .network(net.clone())
            .build()?
            .run(&mut Silent)?;
        let optimisation_seconds = t.elapsed().as_secs_f64();
        let opt_img = RgbImageF32::from(opt.image());
        save_rgb(&opt_img, &args.out.join(format!("{name}_optimised.png")))?;
        let m_opt = metrics::compute_with(vgg, &opt_img, &reference, None, &mopts)?;

        // Training.
        let mut o = TrainOptions::texture_for(&sample, 1.0);
        o.steps = args.steps;
        o.crop = args.crop;
        // The prior's own defaults, as `mrfsynth train --prior P` sets them (mrf+gram: Gram on
        // the MRF pass's layers at its weight).
        let prior: PriorKind = args.prior.parse().map_err(anyhow::Error::msg)?;
        o.params = Params::preset_for(Preset::Default, prior);
        if let Some(u) = args.upsamplings {
            o.architecture.upsamplings = u;
        }
        if let Some(c) = args.channels {
            o.architecture.channels = c;
        }
        if let Some(d) = args.diversity {
            o.diversity = d;
        }
        if let Some(b) = args.blocks {
            o.architecture.residual_blocks = b;
        }
        if let Some(d) = &args.dilations {
            o.architecture.dilations = d.clone();
        }
        if let Some(l) = args.loss_levels {
            o.loss_levels = l;
        }
        if args.periodic == Some(false) {
            o.architecture.waves.clear();
        }
        if let Some(r) = args.learning_rate {
            o.learning_rate = r;
        }
        if let Some(r) = args.learning_rate_end {
            o.learning_rate_end = r;
        }
        if let Some((c, s)) = args.layout_noise {
            o.architecture.layout_noise = c;
            o.architecture.layout_scale = s;
        }
        o.seed = args.seed;
        let t = Instant::now();
        let (model, report) = feedforward::train(
            vgg,
            &TrainData::Texture { sample: &sample },
            &o,
            None,
            &mut Budget {
                seconds: args.minutes * 60.0,
            },
        )?;
        let train_seconds = t.elapsed().as_secs_f64();
        let model_path = args.out.join(format!("{name}.safetensors"));
        model.save(&model_path)?;

        // Generation time, loading included.
        let mut times = Vec::new();
        for seed in 0..3 {
            let t = Instant::now();
            let m = Model::load(&model_path, &Device::Cpu)?;
            let img = m.generate(1024, 1024, seed, false)?;
            times.push(t.elapsed().as_secs_f64());
            if seed == 0 {
                save_rgb(&img, &args.out.join(format!("{name}_generated_1024.png")))?;
            }
        }
        times.sort_by(f64::total_cmp);

        let (w, h) = (opt_img.width, opt_img.height);
        let g1 = model.generate(w, h, 1, false)?;
        let g2 = model.generate(w, h, 2, false)?;
        save_rgb(&g1, &args.out.join(format!("{name}_generated_s1.png")))?;
        save_rgb(&g2, &args.out.join(format!("{name}_generated_s2.png")))?;
        let m_gen = metrics::compute_with(vgg, &g1, &reference, None, &mopts)?;
        let between = metrics::copy::copy_score(&g1, &g2, 64, 3).score;
        let big = model.generate(2048, 2048, 3, false)?;
        let autocorrelation = crop_period_autocorrelation(&big, args.crop as usize);
        rows.push(Row {
            texture: name.clone(),
            sample: (sample.width, sample.height),
            train_steps: report.steps,
            train_seconds,
            optimisation_seconds,
            generate_1024_seconds: times[1],
            swd_generator: m_gen.swd,
            swd_optimisation: m_opt.swd,
            copy_generator: m_gen.copy_score,
            copy_optimisation: m_opt.copy_score,
            copy_between_seeds: between,
            autocorrelation_at_crop: autocorrelation,
            periodicity_generator: m_gen.periodicity,
            periodicity_optimisation: m_opt.periodicity,
            periodicity_sample: m_gen.sample_periodicity,
        });
        sheet_rows.push((name.clone(), vec![sample, opt_img, g1, g2]));
    }

    println!("| texture | steps | train s | generate 1024 s | SWD gen / opt (ratio) | copy gen / opt | copy seed vs seed | autocorr at crop | lattice gen / opt / sample | opt s |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.0} / {:.0} ({:.2}x) | {:.2} / {:.2} | {:.2} | {:.3} | {:.2} / {:.2} / {:.2} | {:.0} |",
            r.texture,
            r.train_steps,
            r.train_seconds,
            r.generate_1024_seconds,
            r.swd_generator,
            r.swd_optimisation,
            r.swd_generator / r.swd_optimisation,
            r.copy_generator,
            r.copy_optimisation,
            r.copy_between_seeds,
            r.autocorrelation_at_crop,
            r.periodicity_generator,
            r.periodicity_optimisation,
            r.periodicity_sample,
            r.optimisation_seconds
        );
    }
    let json = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "threads": rayon::current_num_threads(),
        "rows": rows,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let sheet = contact_sheet(&sheet_rows);
    sheet.save(args.out.join("contact_sheet.png"))?;
    eprintln!(
        "results.json and contact_sheet.png in {}",
        args.out.display()
    );
    Ok(())
}

/// Largest normalised luminance autocorrelation at shifts of one and two crop periods.
fn crop_period_autocorrelation(img: &RgbImageF32, p: usize) -> f64 {
    metrics::lattice::autocorrelation_at(img, &[(p, 0), (0, p), (2 * p, 0), (0, 2 * p)])
}

const CELL: u32 = 256;
const GAP: u32 = 8;

/// One row per texture: sample, optimisation, generator seed 1, seed 2; each cell shows the
/// centre of the image at the sample's scale.
fn contact_sheet(rows: &[(String, Vec<RgbImageF32>)]) -> image::RgbImage {
    let labels = ["sample", "optimisation", "generator s1", "generator s2"];
    let label_h = 20;
    let width = GAP + 4 * (CELL + GAP);
    let height = GAP + rows.len() as u32 * (label_h + CELL + GAP);
    let mut sheet = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    for (r, (name, images)) in rows.iter().enumerate() {
        let y = GAP + r as u32 * (label_h + CELL + GAP);
        let sample = &images[0];
        let side = sample.width.min(sample.height);
        for (c, img) in images.iter().enumerate() {
            let x = GAP + c as u32 * (CELL + GAP);
            let label = if c == 0 { name.as_str() } else { labels[c] };
            debug_assert!(text_width(label, 2) <= CELL);
            draw_text(&mut sheet, label, x, y, 2, [20, 20, 20]);
            // The centre square of the sample's side (the sample's scale), shown at CELL px.
            let s = side.min(img.width).min(img.height);
            let crop = centre(img, s);
            let cell = resize(&crop, CELL, CELL).to_rgb8();
            image::imageops::replace(&mut sheet, &cell, x as i64, (y + label_h) as i64);
        }
    }
    sheet
}

fn centre(img: &RgbImageF32, side: u32) -> RgbImageF32 {
    let (x0, y0) = ((img.width - side) / 2, (img.height - side) / 2);
    let mut data = Vec::with_capacity(3 * (side * side) as usize);
    for c in 0..3 {
        let plane = img.plane(c);
        for y in y0..y0 + side {
            let row = (y * img.width + x0) as usize;
            data.extend_from_slice(&plane[row..row + side as usize]);
        }
    }
    RgbImageF32::new(side, side, data)
}
