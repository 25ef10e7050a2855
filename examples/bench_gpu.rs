//! GPU matching benchmark: our fused NCC kernel (f32 bank on the CUDA cores, f16/bf16 banks on
//! the tensor cores) against candle's own path
//! on the same GPU (normalise, one matrix product into the full N x M score matrix, argmax).
//!
//! `cargo run --release --features cuda --example bench_gpu [-- SAMPLE.png]`
//!
//! Queries and bank are both the stride-1 relu3_1 patches of SAMPLE resized to S x S px, for
//! S = 256, 512, 1024 (the sizes at which the score matrix takes 59 MB, 1 GB and 17 GB).
//! Default sample: ../shared/images/riverstones.png, else the built-in sample.

use std::time::Instant;

use candle_core::{DType, D};
use mrfsynth::image_io::{load_rgb, resize, LoadLimits};
use mrfsynth::matcher::{normalize_rows, CudaMatcher, PatchMatcher};
use mrfsynth::prior::patches::unfold;
use mrfsynth::vgg::{LayerId, Pooling, Vgg19};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median wall time of `f` over `reps` runs after one warm-up; `f` must end with a host copy
/// (which waits for the GPU).
fn time<T>(reps: usize, mut f: impl FnMut() -> anyhow::Result<T>) -> anyhow::Result<(f64, T)> {
    let mut out = f()?;
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        out = f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok((median(times), out))
}

fn main() -> anyhow::Result<()> {
    let gpu = mrfsynth::device::DeviceSpec::Cuda(0).open()?;
    let sample = std::env::args().nth(1).map(Into::into).unwrap_or_else(|| {
        let shared = std::path::PathBuf::from("../shared/images/riverstones.png");
        if shared.is_file() {
            shared
        } else {
            mrfsynth::assets::samples::default_sample().expect("no sample image")
        }
    });
    let img = load_rgb(&sample, &LoadLimits::default())?;
    let weights = mrfsynth::assets::weights::load(None, false)?;
    let vgg = Vgg19::new(&weights, Pooling::Max, &gpu)?;
    println!("sample {} ({}x{})", sample.display(), img.width, img.height);
    println!(
        "| size | N = M | D | score matrix | candle matmul+argmax | ours f32 | ours f16 | ours bf16 | speed-up f32 / f16 | f32 = candle | f16 = f32 | bf16 = f32 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let relu3_1: LayerId = "relu3_1".parse().map_err(anyhow::Error::msg)?;
    for size in [256u32, 512, 1024] {
        let x = vgg.preprocess(&resize(&img, size, size).to_tensor(&gpu)?)?;
        let f = vgg.forward(&x, &[relu3_1], false)?.features[&relu3_1].squeeze(0)?;
        let patches = unfold(&f, 3, 1)?;
        let (n, d) = patches.dims2()?;
        let reps = if size >= 1024 { 2 } else { 5 };

        // candle's way: normalised bank as a [D, M] matrix, full scores, argmax per row.
        let bank_t = normalize_rows(&patches)?.t()?.contiguous()?;
        let candle_path = || -> anyhow::Result<Vec<u32>> {
            let scores = patches.matmul(&bank_t)?;
            Ok(scores.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?)
        };
        let (t_candle, idx_candle) = time(reps, candle_path)?;
        drop(bank_t);

        let ours = |dtype: DType| -> anyhow::Result<(f64, Vec<u32>)> {
            let m = CudaMatcher::new(&patches, dtype)?;
            time(reps, || Ok(m.best(&patches)?.index.to_vec1::<u32>()?))
        };
        let (t32, idx32) = ours(DType::F32)?;
        let (t16, idx16) = ours(DType::F16)?;
        let (tb16, idxb16) = ours(DType::BF16)?;
        let agree = |a: &[u32], b: &[u32]| {
            a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
        };
        println!(
            "| {size} px | {n} | {d} | {:.2} GB | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}x / {:.2}x | {:.4} | {:.4} | {:.4} |",
            (n * n * 4) as f64 / 1e9,
            t_candle * 1e3,
            t32 * 1e3,
            t16 * 1e3,
            tb16 * 1e3,
            t_candle / t32,
            t_candle / t16,
            agree(&idx32, &idx_candle),
            agree(&idx16, &idx32),
            agree(&idxb16, &idx32),
        );
    }
    Ok(())
}
