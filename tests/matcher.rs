//! The approximate matcher against the exact one: synthetic banks (no weights needed) and real
//! VGG19 patch banks from two test images the project fetches (ihc, a colour texture, and
//! gravel, a greyscale one).
//!
//! `cargo test --release --test matcher -- --nocapture` prints the recall of every case.

mod common;

use std::sync::OnceLock;

use candle_core::{Device, Result, Tensor};
use mrfsynth::image_io::{resize, RgbImageF32};
use mrfsynth::matcher::approx::MAX_DIMS;
use mrfsynth::matcher::{
    ApproxMatcher, ApproxOptions, ExactMatcher, Matches, PatchMatcher, Spread,
};
use mrfsynth::prior::patches::unfold;
use mrfsynth::synth::{init, style, Init, Task};
use mrfsynth::vgg::{LayerId, Pooling, Vgg19};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn exact(bank: &Tensor, q: &Tensor) -> Matches {
    ExactMatcher::new(bank, 1 << 24).unwrap().best(q).unwrap()
}

fn indices(m: &Matches) -> Vec<u32> {
    m.index.to_vec1::<u32>().unwrap()
}

/// Share of queries whose approximate match is the exact one.
fn recall(want: &Matches, got: &Matches) -> f64 {
    let (a, b) = (indices(want), indices(got));
    a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

/// Scores are exact cosines of the chosen rows: never above the best, equal where the index is.
fn check_scores(want: &Matches, got: &Matches, tol: f32) {
    let (a, b) = (indices(want), indices(got));
    for i in 0..a.len() {
        let (s, t) = (want.score[i], got.score[i]);
        assert!(
            t <= s + tol,
            "query {i}: approx score {t} above the exact best {s}"
        );
        if a[i] == b[i] {
            assert!(
                (s - t).abs() <= tol,
                "query {i}: same row, scores {s} vs {t}"
            );
        }
    }
}

/// Non-negative rows (like ReLU features) with a low-rank structure plus noise.
fn synthetic_bank(m: usize, d: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let rank = 12;
    let atoms: Vec<f32> = (0..rank * d).map(|_| rng.random::<f32>()).collect();
    let mut x = vec![0f32; m * d];
    for r in 0..m {
        let w: Vec<f32> = (0..rank).map(|_| rng.random::<f32>().powi(3)).collect();
        for c in 0..d {
            let v: f32 = (0..rank).map(|k| w[k] * atoms[k * d + c]).sum();
            x[r * d + c] = (v + 0.3 * rng.random::<f32>() - 0.1).max(0.0);
        }
    }
    Tensor::from_vec(x, (m, d), &Device::Cpu).unwrap()
}

#[test]
fn exact_copies_find_themselves() -> Result<()> {
    let bank = synthetic_bank(1500, 288, 3);
    // Queries are the bank rows at other scales: the match must not depend on the norm.
    let scales: Vec<f32> = (0..1500).map(|i| 0.5 + (i % 7) as f32).collect();
    let q = bank.broadcast_mul(&Tensor::from_vec(scales, (1500, 1), &Device::Cpu)?)?;
    for f16_bank in [false, true] {
        let opts = ApproxOptions {
            f16_bank,
            ..Default::default()
        };
        let m = ApproxMatcher::new(&bank, opts)?;
        assert!(m.is_approximate());
        assert_eq!(m.name(), "approx");
        assert_eq!(m.len(), 1500);
        let none = m.best(&q.narrow(0, 0, 0)?)?;
        assert!(none.score.is_empty() && indices(&none).is_empty());
        let r = m.best(&q)?;
        let idx = indices(&r);
        let tol = if f16_bank { 2e-3 } else { 1e-5 };
        for (i, (&j, &s)) in idx.iter().zip(&r.score).enumerate() {
            assert_eq!(j as usize, i, "f16 {f16_bank}: row {i} matched {j}");
            assert!((s - 1.0).abs() < tol, "f16 {f16_bank}: score {s}");
        }
    }
    Ok(())
}

#[test]
fn synthetic_recall() -> Result<()> {
    let bank = synthetic_bank(2000, 288, 5);
    // Queries: other draws of the same distribution, so many are near-ties.
    let q = synthetic_bank(800, 288, 6);
    let want = exact(&bank, &q);
    let scan = ApproxMatcher::new(&bank, ApproxOptions::default())?.best(&q)?;
    let r = recall(&want, &scan);
    println!("synthetic 2000 x 288, defaults: recall@1 {r:.4}");
    assert!(r >= 0.95, "recall {r}");
    check_scores(&want, &scan, 1e-5);
    Ok(())
}

/// The occurrence penalty: the approximate matcher re-ranks each query's candidates by cosine
/// minus the penalty of its first pass; it must choose as the exact penalised search does.
#[test]
fn spread_search_matches_the_exact_one() -> Result<()> {
    let bank = synthetic_bank(2000, 288, 5);
    let q = synthetic_bank(1600, 288, 6);
    let exact = ExactMatcher::new(&bank, 1 << 24)?;
    let approx = ApproxMatcher::new(&bank, ApproxOptions::default())?;
    let max_uses = |m: &Matches| {
        let mut uses = vec![0u32; 2000];
        for j in indices(m) {
            uses[j as usize] += 1;
        }
        *uses.iter().max().unwrap()
    };
    let free = Spread {
        per_use: 0.0,
        share: 0.8,
    };
    assert_eq!(
        indices(&approx.best_spread(&q, free)?),
        indices(&approx.best(&q)?),
        "no penalty: the plain search"
    );
    let spread = Spread {
        per_use: 0.01,
        share: 0.8,
    };
    let (want, got) = (
        exact.best_spread(&q, spread)?,
        approx.best_spread(&q, spread)?,
    );
    let r = recall(&want, &got);
    let plain = max_uses(&exact.best(&q)?);
    println!(
        "spread: agreement {r:.4}; most uses of one row {plain} plain, {} exact, {} approx",
        max_uses(&want),
        max_uses(&got)
    );
    assert!(r >= 0.93, "agreement with the exact penalised search {r}");
    assert!(max_uses(&got) < plain, "the penalty spreads the matches");
    Ok(())
}

#[test]
fn small_banks_are_searched_exactly() -> Result<()> {
    let bank = synthetic_bank(300, 64, 7);
    let q = synthetic_bank(200, 64, 8);
    let m = ApproxMatcher::new(&bank, ApproxOptions::default())?;
    assert!(!m.is_approximate());
    let (want, got) = (exact(&bank, &q), m.best(&q)?);
    assert_eq!(indices(&want), indices(&got));
    assert_eq!(want.score, got.score);
    Ok(())
}

#[test]
fn bad_options_are_refused() {
    let bank = synthetic_bank(600, 64, 9);
    let with = |dims, candidates| ApproxOptions {
        dims,
        candidates,
        ..Default::default()
    };
    assert!(ApproxMatcher::new(&bank, with(0, 16)).is_err());
    assert!(ApproxMatcher::new(&bank, with(16, 0)).is_err());
    assert!(ApproxMatcher::new(&bank, with(MAX_DIMS + 1, 16)).is_err());
    // Any dims in 1..=MAX_DIMS is taken.
    assert!(ApproxMatcher::new(&bank, with(20, 16)).is_ok());
}

/// A real bank and the query sets matched against it.
struct Case {
    name: &'static str,
    layer: LayerId,
    bank: Tensor,
    queries: Vec<(&'static str, Tensor)>,
}

/// Real banks and query sets, computed once for all the tests below.
struct Real {
    cases: Vec<Case>,
}

/// The sample repeated with mirrored tiles to `size` x `size`.
fn tile(img: &RgbImageF32, size: u32) -> RgbImageF32 {
    let (w, h) = (img.width, img.height);
    let mut data = Vec::with_capacity((3 * size * size) as usize);
    for c in 0..3 {
        for y in 0..size {
            let sy = if (y / h) % 2 == 0 {
                y % h
            } else {
                h - 1 - y % h
            };
            for x in 0..size {
                let sx = if (x / w) % 2 == 0 {
                    x % w
                } else {
                    w - 1 - x % w
                };
                data.push(img.get(sx, sy, c));
            }
        }
    }
    RgbImageF32::new(size, size, data)
}

/// What the MRF prior sees early in a run: the sample blended 50/50 with the initial noise.
fn blend_with_noise(img: &RgbImageF32, size: u32) -> RgbImageF32 {
    let tiled = tile(img, size);
    let noise =
        init::initial_image(&Init::Noise, &Task::Texture, img, [0.0; 3], size, size, 11).unwrap();
    let data = tiled
        .data
        .iter()
        .zip(&noise.data)
        .map(|(a, b)| 0.5 * a + 0.5 * b)
        .collect();
    RgbImageF32::new(size, size, data)
}

fn patches(vgg: &Vgg19, img: &RgbImageF32, layers: &[LayerId]) -> Vec<Tensor> {
    let input = vgg
        .preprocess(&img.to_tensor(vgg.device()).unwrap())
        .unwrap();
    let fwd = vgg.forward(&input, layers, false).unwrap();
    layers
        .iter()
        .map(|l| unfold(&fwd.features[l].squeeze(0).unwrap(), 3, 2).unwrap())
        .collect()
}

fn real() -> &'static Real {
    static R: OnceLock<Real> = OnceLock::new();
    R.get_or_init(|| {
        // Two distinct textures: the colour ihc at 256 px, the grey gravel at 384 px.
        let ihc = common::fetched_rgb("ihc", Some(256));
        let gravel = common::fetched_rgb("gravel", Some(384));
        let vgg = Vgg19::new(common::weights(), Pooling::Max, &Device::Cpu).unwrap();
        let l3: LayerId = "relu3_1".parse().unwrap();
        let l4: LayerId = "relu4_1".parse().unwrap();
        let both = [l3, l4];
        let ib = style::mrf_banks(&vgg, std::slice::from_ref(&ihc), &[l3], 3, 2).unwrap();
        let gb = style::mrf_banks(&vgg, std::slice::from_ref(&gravel), &both, 3, 2).unwrap();
        let i_blend = patches(&vgg, &blend_with_noise(&ihc, 256), &both);
        let i_scaled = patches(&vgg, &resize(&ihc, 200, 200), &both);
        let g_blend = patches(&vgg, &blend_with_noise(&gravel, 320), &both);
        Real {
            cases: vec![
                Case {
                    name: "ihc 256",
                    layer: l3,
                    bank: ib[0].clone(),
                    queries: vec![
                        ("ihc+noise 256", i_blend[0].clone()),
                        ("ihc at 200 px", i_scaled[0].clone()),
                    ],
                },
                Case {
                    name: "gravel 384",
                    layer: l3,
                    bank: gb[0].clone(),
                    queries: vec![("gravel+noise 320", g_blend[0].clone())],
                },
                Case {
                    name: "gravel 384",
                    layer: l4,
                    bank: gb[1].clone(),
                    queries: vec![
                        ("gravel+noise 320", g_blend[1].clone()),
                        ("ihc+noise 256 (other texture)", i_blend[1].clone()),
                    ],
                },
            ],
        }
    })
}

fn check_layer(layer: &str) -> Result<()> {
    let real = real();
    let mut checked = 0;
    for Case {
        name,
        layer: l,
        bank,
        queries: sets,
    } in &real.cases
    {
        if l.name() != layer {
            continue;
        }
        let f32m = ApproxMatcher::new(bank, ApproxOptions::default())?;
        let f16m = ApproxMatcher::new(
            bank,
            ApproxOptions {
                f16_bank: true,
                ..Default::default()
            },
        )?;
        assert!(
            f32m.is_approximate(),
            "{name} {layer}: bank of {} fell back",
            bank.dim(0)?
        );
        for (qname, q) in sets {
            let want = exact(bank, q);
            let (a, h) = (f32m.best(q)?, f16m.best(q)?);
            let (ra, rh) = (recall(&want, &a), recall(&want, &h));
            println!(
                "{layer}: bank {name} ({} x {}), queries {qname} ({}): recall@1 f32 {ra:.4}, f16 {rh:.4}",
                bank.dim(0)?,
                bank.dim(1)?,
                q.dim(0)?
            );
            assert!(ra >= 0.95, "{layer} {name} / {qname}: recall {ra}");
            assert!(
                (ra - rh).abs() <= 0.01,
                "{layer} {name} / {qname}: f16 {rh} vs f32 {ra}"
            );
            check_scores(&want, &a, 1e-4);
            check_scores(&want, &h, 3e-3);
            checked += 1;
        }
    }
    assert!(checked > 0);
    Ok(())
}

#[test]
fn recall_on_vgg_relu3_1() -> Result<()> {
    check_layer("relu3_1")
}

#[test]
fn recall_on_vgg_relu4_1() -> Result<()> {
    check_layer("relu4_1")
}

#[test]
fn vgg_bank_rows_find_themselves() -> Result<()> {
    let real = real();
    let bank = &real.cases[0].bank; // ihc, relu3_1
    let m = ApproxMatcher::new(bank, ApproxOptions::default())?;
    let r = m.best(bank)?;
    let idx = indices(&r);
    let want = exact(bank, bank);
    // A row may have an exact duplicate elsewhere in the bank: then it must score as well.
    for (i, &j) in idx.iter().enumerate() {
        assert!(r.score[i] > 0.9999, "row {i}: score {}", r.score[i]);
        assert!(
            j as usize == i || r.score[i] >= want.score[i] - 1e-5,
            "row {i} -> {j}"
        );
    }
    let same = idx
        .iter()
        .enumerate()
        .filter(|(i, &j)| *i == j as usize)
        .count();
    println!(
        "ihc relu3_1 rows matched to themselves: {same} / {}",
        idx.len()
    );
    assert!(same as f64 >= 0.999 * idx.len() as f64);
    Ok(())
}
