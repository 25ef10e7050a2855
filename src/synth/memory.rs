//! Peak memory of a run, estimated before it starts, so that a job too big for the machine is
//! refused with a size that fits instead of dying half-way.

use crate::vgg::{LayerId, LayerKind, LAYERS};

use super::style::patch_count;
use super::Params;

/// L-BFGS keeps 2 * history vectors of the image's size; past this budget the history shrinks.
pub const LBFGS_BUDGET_BYTES: u64 = 1 << 30;
/// Fixed costs: the weights (f32 and the conv kernels' two layouts), the Winograd band buffers
/// kept per thread (64 MB at most on 2 cores) and the process itself. (The freed blocks the
/// CLI's allocator keeps come out of the headroom under the limit: `block_cache::set_budget`.)
const BASE_BYTES: u64 = 3 * 80_000_000 + 64_000_000 + 60_000_000;

/// The Winograd F(4x4, 3x3) transforms of the layers up to `deepest`, both directions: 36/9 of
/// each layer's weights, made once per layer used.
fn winograd_weight_bytes(deepest: LayerId) -> u64 {
    LAYERS
        .iter()
        .take(deepest.index() + 1)
        .filter_map(|l| match l.kind {
            LayerKind::Conv(k) => {
                let (cin, cout) = crate::assets::weights::CONV_CHANNELS[k];
                Some(2 * 36 * (cin * cout) as u64 * 4)
            }
            _ => None,
        })
        .sum()
}

/// Output channels of the layer at `index`.
fn channels(index: usize) -> u64 {
    LAYERS[..=index]
        .iter()
        .rev()
        .find_map(|l| match l.kind {
            LayerKind::Conv(k) => Some(crate::assets::weights::CONV_CHANNELS[k].1 as u64),
            _ => None,
        })
        .unwrap_or(3)
}

/// L-BFGS history length used for an image of `pixels` pixels.
pub fn lbfgs_history(requested: usize, pixels: u64) -> usize {
    let per_pair = 2 * 3 * pixels * 4;
    requested.min((LBFGS_BUDGET_BYTES / per_pair.max(1)).max(5) as usize)
}

/// Bytes held at the peak of one evaluation at `w` x `h` up to `deepest`, with MRF banks from
/// a `sw` x `sh` style (times `variants` augmented copies).
pub fn level_peak_bytes(
    params: &Params,
    w: u32,
    h: u32,
    sw: u32,
    sh: u32,
    variants: u64,
    deepest: LayerId,
) -> u64 {
    let pixels = w as u64 * h as u64;
    // Taped ReLU outputs up to the deepest layer, plus the largest layer three more times
    // (padded input, wide output and a gradient in flight).
    let mut tape = 0u64;
    let mut largest = 0u64;
    for (i, l) in LAYERS.iter().enumerate().take(deepest.index() + 1) {
        let d = LAYERS[..=i]
            .iter()
            .filter(|x| x.kind == LayerKind::Pool)
            .count();
        let size = channels(i) * (pixels >> (2 * d)) * 4;
        if l.kind == LayerKind::Relu {
            tape += size;
        }
        largest = largest.max(size);
    }
    let transient = 3 * largest;
    let history = lbfgs_history(params.history, pixels) as u64;
    let optimiser = (2 * history + 8) * 3 * pixels * 4;
    let mut banks = 0u64;
    if params.prior.uses_patches() {
        for &l in &params.mrf_layers {
            let dim = channels(l.index()) * (params.patch_size * params.patch_size) as u64;
            let m =
                patch_count(sw, sh, l, params.patch_size, params.style_stride) as u64 * variants;
            let n = patch_count(w, h, l, params.patch_size, params.stride) as u64;
            // raw + normalised bank, queries + targets + difference, one score block.
            banks += (2 * m + 3 * n) * dim * 4 + (params.match_budget as u64).min(n * m) * 4;
        }
    }
    BASE_BYTES + winograd_weight_bytes(deepest) + tape + transient + optimiser + banks
}

/// Parses sizes such as `16G`, `512M`, `2GiB`, `1000000` (bytes).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (num, mult) = match t.chars().last()? {
        'K' => (&t[..t.len() - 1], 1u64 << 10),
        'M' => (&t[..t.len() - 1], 1 << 20),
        'G' => (&t[..t.len() - 1], 1 << 30),
        'T' => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some((v * mult as f64) as u64)
}

/// Memory this process may use: MemAvailable from /proc/meminfo where readable.
/// Memory free on the device a run uses: the GPU's own for CUDA (our estimate is of the
/// host-side engine, and the GPU engine holds about the same tensors), else the host's.
pub fn available_bytes_on(device: &candle_core::Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(d) = device {
        return d
            .cuda_stream()
            .context()
            .mem_get_info()
            .ok()
            .map(|(free, _)| free as u64);
    }
    let _ = device;
    available_bytes()
}

pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_grow_with_size_and_history_is_capped() {
        let p = Params::default();
        let deepest: LayerId = "relu4_1".parse().unwrap();
        let small = level_peak_bytes(&p, 256, 256, 256, 256, 1, deepest);
        let big = level_peak_bytes(&p, 1024, 1024, 256, 256, 1, deepest);
        assert!(big > 8 * (small - BASE_BYTES) / 2, "{small} {big}");
        assert_eq!(lbfgs_history(100, 384 * 384), 100);
        assert!(lbfgs_history(100, 2048 * 2048) < 20);
        assert_eq!(parse_bytes("16G"), Some(16 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("-1"), None);
        assert_eq!(parse_bytes("abc"), None);
    }
}
