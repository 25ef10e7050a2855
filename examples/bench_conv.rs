//! Per-layer times of the CPU 3x3 convolution: direct, Winograd F(2x2, 3x3) and F(4x4, 3x3)
//! (f32, and with bf16 products where the CPU has AVX-512 BF16), and for the thin first layer
//! im2col,
//! forward and input gradient, for every VGG19 layer up to conv4_2 at one image size. This is
//! the measurement behind `ConvAlgorithm::for_layer`.
//!
//! `cargo run --release --example bench_conv [-- SIZE [REPEATS]]` (default 384 px, 3 repeats;
//! random weights and inputs: the cost does not depend on the values).

use std::time::Instant;

use rand::{Rng, SeedableRng};

use mrfsynth::assets::weights::CONV_CHANNELS;
use mrfsynth::vgg::conv::{conv3x3_cpu, ConvAlgorithm, Precision, Taps};
use mrfsynth::vgg::winograd::Tile;

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>() - 0.5).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(384);
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let f4 = ConvAlgorithm::Winograd(Tile::F4);
    let algos = [
        (ConvAlgorithm::Direct, Precision::F32),
        (ConvAlgorithm::Im2col, Precision::F32),
        (ConvAlgorithm::Winograd(Tile::F2), Precision::F32),
        (f4, Precision::F32),
        (f4, Precision::Bf16),
    ];
    if !mrfsynth::cpu::bf16_gemm::available() {
        println!("(no AVX-512 BF16 on this CPU: the bf16 column repeats f32)\n");
    }
    println!(
        "# 3x3 convolution per VGG19 layer at {size} px, ms (median of {repeats}), {} threads\n",
        rayon::current_num_threads()
    );
    println!(
        "| layer | in->out | side | pass | direct | im2col | F2 | F4 | F4 bf16 | chosen | chosen vs direct | F4 bf16 vs F4 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut totals = [0f64; 5];
    let mut chosen_total = 0f64;
    let mut side = size;
    for (i, &(cin, cout)) in CONV_CHANNELS.iter().enumerate().take(10) {
        if [2, 4, 8].contains(&i) {
            side /= 2;
        }
        for (pass, (ci, co)) in [("fwd", (cin, cout)), ("grad", (cout, cin))] {
            let taps = Taps::new(noise(9 * ci * co, i as u64 + 1), co, ci);
            let x = noise(ci * side * side, 99);
            let bias = vec![0.1f32; co];
            let mut ms = [0f64; 5];
            for (k, &(algo, precision)) in algos.iter().enumerate() {
                let thin = algo == ConvAlgorithm::Im2col;
                if thin && ci.min(co) >= 64 {
                    ms[k] = f64::NAN; // meant for thin layers only
                    continue;
                }
                let run = || {
                    let t = Instant::now();
                    let y = conv3x3_cpu(
                        algo,
                        precision,
                        &x,
                        None,
                        ci,
                        side,
                        side,
                        &taps,
                        co,
                        Some(&bias),
                        true,
                        false,
                    );
                    std::hint::black_box(y);
                    t.elapsed().as_secs_f64() * 1e3
                };
                run(); // weight transform and scratch buffers
                let mut v: Vec<f64> = (0..repeats).map(|_| run()).collect();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                ms[k] = v[v.len() / 2];
                if !thin {
                    totals[k] += ms[k];
                }
            }
            let pick = ConvAlgorithm::for_layer(ci, co);
            let at = algos
                .iter()
                .position(|&(a, p)| a == pick && p == Precision::F32)
                .expect("listed");
            chosen_total += ms[at];
            println!(
                "| conv{i} | {ci}->{co} | {side} | {pass} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {pick:?} | {:.2}x | {:.2}x |",
                ms[0],
                ms[1],
                ms[2],
                ms[3],
                ms[4],
                ms[0] / ms[at],
                ms[3] / ms[4]
            );
        }
    }
    println!(
        "| all | | | | {:.0} | | {:.0} | {:.0} | {:.0} | {chosen_total:.0} | {:.2}x | {:.2}x |",
        totals[0],
        totals[2],
        totals[3],
        totals[4],
        totals[0] / chosen_total,
        totals[3] / totals[4]
    );
}
