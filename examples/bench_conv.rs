//! Per-layer times of the CPU 3x3 convolution: direct, Winograd F(2x2, 3x3) and F(4x4, 3x3),
//! forward and input gradient, for every VGG19 layer up to conv4_2 at one image size. This is
//! the measurement behind `ConvAlgorithm::for_layer`.
//!
//! `cargo run --release --example bench_conv [-- SIZE [REPEATS]]` (default 384 px, 3 repeats;
//! random weights and inputs: the cost does not depend on the values).

use std::time::Instant;

use mrfsynth::vgg::conv::{conv3x3_cpu_using, ConvAlgorithm, Taps};
use mrfsynth::vgg::winograd::Tile;
use mrfsynth::weights::CONV_CHANNELS;

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(384);
    let repeats: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let algos = [
        ("direct", ConvAlgorithm::Direct),
        ("F2", ConvAlgorithm::Winograd(Tile::F2)),
        ("F4", ConvAlgorithm::Winograd(Tile::F4)),
    ];
    println!(
        "# 3x3 convolution per VGG19 layer at {size} px, ms (median of {repeats}), {} threads\n",
        rayon::current_num_threads()
    );
    println!("| layer | in->out | side | pass | direct | F2 | F4 | F4 vs direct |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut totals = [0f64; 3];
    let mut side = size;
    for (i, &(cin, cout)) in CONV_CHANNELS.iter().enumerate().take(10) {
        if [2, 4, 8].contains(&i) {
            side /= 2;
        }
        for (pass, (ci, co)) in [("fwd", (cin, cout)), ("grad", (cout, cin))] {
            let taps = Taps::new(noise(9 * ci * co, i as u64 + 1), co, ci);
            let x = noise(ci * side * side, 99);
            let bias = vec![0.1f32; co];
            let mut ms = [0f64; 3];
            for (k, &(_, algo)) in algos.iter().enumerate() {
                let run = || {
                    let t = Instant::now();
                    let y = conv3x3_cpu_using(
                        algo,
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
                totals[k] += ms[k];
            }
            println!(
                "| conv{} | {ci}->{co} | {side} | {pass} | {:.1} | {:.1} | {:.1} | {:.2}x |",
                i,
                ms[0],
                ms[1],
                ms[2],
                ms[0] / ms[2]
            );
        }
    }
    println!(
        "| all | | | | {:.0} | {:.0} | {:.0} | {:.2}x |",
        totals[0],
        totals[1],
        totals[2],
        totals[0] / totals[2]
    );
}
