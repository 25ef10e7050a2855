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

/// Bytes of an RGB f32 image per pixel (the level's image, a tile, the output).
pub const IMAGE_BYTES_PER_PIXEL: u64 = 12;
/// Bytes per pixel that writing the output adds to its image: the 8-bit copy and the encoded
/// file (at most about as large again).
pub const SAVE_BYTES_PER_PIXEL: u64 = 6;

/// Bytes of an RGB f32 image of `w` x `h`.
pub fn image_bytes(w: u32, h: u32) -> u64 {
    IMAGE_BYTES_PER_PIXEL * w as u64 * h as u64
}

/// What the run holds throughout: the network's weights and their transforms up to `deepest`,
/// the thread buffers and the process itself.
pub fn fixed_bytes(deepest: LayerId) -> u64 {
    BASE_BYTES + winograd_weight_bytes(deepest)
}

/// The taped ReLU outputs of a forward pass over `pixels` up to `deepest`, and its largest
/// single feature map.
fn activations(pixels: u64, deepest: LayerId) -> (u64, u64) {
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
    (tape, largest)
}

/// Bytes one evaluation at `w` x `h` (the whole level, or one tile) holds besides the fixed
/// costs and the style banks: the network's tape and transients, the optimiser's vectors (the
/// image itself among them) and the synthesis side of the patch priors (against banks from a
/// `sw` x `sh` sample times `variants`).
pub fn evaluation_bytes(
    params: &Params,
    (w, h): (u32, u32),
    (sw, sh): (u32, u32),
    variants: u64,
    deepest: LayerId,
) -> u64 {
    let pixels = w as u64 * h as u64;
    // Taped ReLU outputs up to the deepest layer, plus the largest layer three more times
    // (padded input, wide output and a gradient in flight).
    let (tape, largest) = activations(pixels, deepest);
    let transient = 3 * largest;
    let history = lbfgs_history(params.history, pixels) as u64;
    let optimiser = (2 * history + 8) * 3 * pixels * 4;
    let mut patches = 0u64;
    if params.prior.uses_patches() {
        for &l in &params.mrf_layers {
            let dim = channels(l.index()) * (params.patch_size * params.patch_size) as u64;
            let n = patch_count(w, h, l, params.patch_size, params.stride) as u64;
            let m =
                patch_count(sw, sh, l, params.patch_size, params.style_stride) as u64 * variants;
            // Queries + targets + difference, one score block.
            patches += 3 * n * dim * 4 + (params.match_budget as u64).min(n * m) * 4;
        }
    }
    tape + transient + optimiser + patches
}

/// The style patch banks of a `sw` x `sh` sample (times `variants` augmented copies), raw and
/// normalised, as the level's evaluations hold them.
pub fn bank_bytes(params: &Params, sw: u32, sh: u32, variants: u64) -> u64 {
    if !params.prior.uses_patches() {
        return 0;
    }
    params
        .mrf_layers
        .iter()
        .map(|&l| {
            let dim = channels(l.index()) * (params.patch_size * params.patch_size) as u64;
            let m = patch_count(sw, sh, l, params.patch_size, params.style_stride) as u64;
            2 * m * variants * dim * 4
        })
        .sum()
}

/// Peak while a level's priors are built from a `sw` x `sh` sample: the sample's variants,
/// then the larger of one forward pass over a (mirror-padded) variant without a tape (three of
/// its largest maps, beside the banks of the variants before it) and the banks while they are
/// cut, joined and normalised (three raw copies at once).
pub fn bank_build_bytes(params: &Params, sw: u32, sh: u32, variants: u64, deepest: LayerId) -> u64 {
    let pad = 2 * super::style::STYLE_MARGIN;
    let pixels = (sw + pad) as u64 * (sh + pad) as u64;
    let (_, largest) = activations(pixels, deepest);
    let raw = bank_bytes(params, sw, sh, variants) / 2;
    variants * image_bytes(sw, sh) + (3 * largest + raw).max(3 * raw)
}

/// Bytes one evaluation at `w` x `h` up to `deepest` holds at its peak, fixed costs and the MRF
/// banks of a `sw` x `sh` style (times `variants` augmented copies) included.
pub fn level_peak_bytes(
    params: &Params,
    w: u32,
    h: u32,
    sw: u32,
    sh: u32,
    variants: u64,
    deepest: LayerId,
) -> u64 {
    fixed_bytes(deepest)
        + evaluation_bytes(params, (w, h), (sw, sh), variants, deepest)
        + bank_bytes(params, sw, sh, variants)
}

/// Peak of [`crate::image_io::resize_planar`] from `from` to `to`: both images and one plane of
/// its vertical pass.
pub fn resize_bytes(from: (u32, u32), to: (u32, u32)) -> u64 {
    image_bytes(from.0, from.1) + image_bytes(to.0, to.1) + 4 * from.0 as u64 * to.1 as u64
}

/// Peak of the copy score against a `sw` x `sh` sample: three spectra of its padded size plus
/// the accumulator and one crop's transform (16 bytes a value each), the window energies and
/// one channel's two integral images (8 bytes a value).
pub fn copy_score_bytes(sw: u32, sh: u32) -> u64 {
    let padded = crate::metrics::fft::fast_len(sw as usize) as u64
        * crate::metrics::fft::fast_len(sh as usize) as u64;
    5 * 16 * padded + 3 * 8 * sw as u64 * sh as u64
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

/// Memory this process may use: MemAvailable from /proc/meminfo, lowered to what the memory
/// cgroup (a Docker or Kubernetes limit, v1 or v2) leaves free, whichever is smaller. `None`
/// when neither can be read.
pub fn available_bytes() -> Option<u64> {
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_available(&t));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| cgroup_available(std::path::Path::new("/sys/fs/cgroup"), &t));
    match (host, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// MemAvailable from the text of /proc/meminfo, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory left under the tightest cgroup limit on this process's path, given the cgroup
/// mount `root` (normally /sys/fs/cgroup) and the text of /proc/self/cgroup. Each cgroup from
/// the process's own up to the mount root counts (a limit on a parent binds its children; in
/// a container the path may name folders the mount does not show, which are skipped). Usage
/// excludes inactive file cache, which the kernel reclaims before it OOM-kills. `None` when no
/// limit is set.
fn cgroup_available(root: &std::path::Path, self_cgroup: &str) -> Option<u64> {
    // v2: `memory.max` ("max" = none) minus `memory.current`.
    // v1: `memory.limit_in_bytes` (about i64::MAX = none) minus `memory.usage_in_bytes`.
    const V2: [&str; 3] = ["memory.max", "memory.current", "inactive_file"];
    const V1: [&str; 3] = [
        "memory.limit_in_bytes",
        "memory.usage_in_bytes",
        "total_inactive_file",
    ];
    let mut best: Option<u64> = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (mount, files) = if id == "0" && controllers.is_empty() {
            (root.to_path_buf(), V2)
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), V1)
        } else {
            continue;
        };
        let mut dir = mount.join(path.trim_start_matches('/'));
        loop {
            if let Some(free) = cgroup_free(&dir, files) {
                best = Some(best.map_or(free, |b| b.min(free)));
            }
            if dir == mount || !dir.pop() || !dir.starts_with(&mount) {
                break;
            }
        }
    }
    best
}

/// `limit - (usage - inactive file cache)` for one cgroup folder; `None` without a limit.
fn cgroup_free(dir: &std::path::Path, [limit, usage, inactive]: [&str; 3]) -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    // "max" (v2) does not parse; v1 writes "no limit" as a page-rounded i64::MAX.
    let limit: u64 = read(limit)?.trim().parse().ok()?;
    if limit >= 1 << 60 {
        return None;
    }
    let usage: u64 = read(usage).and_then(|u| u.trim().parse().ok()).unwrap_or(0);
    let cache = read("memory.stat")
        .and_then(|stat| {
            stat.lines().find_map(|l| {
                let (key, value) = l.split_once(' ')?;
                (key == inactive).then(|| value.trim().parse::<u64>().ok())?
            })
        })
        .unwrap_or(0);
    Some(limit.saturating_sub(usage.saturating_sub(cache)))
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

#[cfg(test)]
mod cgroup_tests {
    use super::*;
    use std::path::Path;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn meminfo_is_parsed() {
        let text = "MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(meminfo_available(text), Some(2000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn cgroup_v2_limit_nested_paths_and_max() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let me = "0::/kubepods/pod1/ctr\n";
        // No files at all: no limit.
        assert_eq!(cgroup_available(root, me), None);
        // "max" everywhere: no limit.
        put(root, "kubepods/pod1/ctr/memory.max", "max\n");
        put(root, "kubepods/pod1/ctr/memory.current", "1000\n");
        assert_eq!(cgroup_available(root, me), None);
        // A limit on the container itself, with reclaimable cache not counted as used.
        put(root, "kubepods/pod1/ctr/memory.max", "8000\n");
        put(
            root,
            "kubepods/pod1/ctr/memory.stat",
            "anon 700\nactive_file 50\ninactive_file 300\n",
        );
        assert_eq!(cgroup_available(root, me), Some(8000 - 700));
        // A tighter limit on a parent (the pod) wins.
        put(root, "kubepods/pod1/memory.max", "5000\n");
        put(root, "kubepods/pod1/memory.current", "4500\n");
        assert_eq!(cgroup_available(root, me), Some(500));
        // Usage above the limit leaves nothing rather than wrapping.
        put(root, "kubepods/pod1/memory.current", "9000\n");
        assert_eq!(cgroup_available(root, me), Some(0));
        // A limit at the mount root itself (a container with its own cgroup namespace: "0::/").
        put(root, "memory.max", "3000\n");
        put(root, "memory.current", "1000\n");
        assert_eq!(cgroup_available(root, "0::/\n"), Some(2000));
        // A path the mount does not show falls back to the existing ancestors.
        assert_eq!(cgroup_available(root, "0::/not/here\n"), Some(2000));
    }

    #[test]
    fn cgroup_v1_limit_and_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let me = "12:pids:/docker/abc\n4:memory:/docker/abc\n0::/\n";
        put(
            root,
            "memory/docker/abc/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        put(root, "memory/docker/abc/memory.usage_in_bytes", "100\n");
        assert_eq!(cgroup_available(root, me), None);
        put(root, "memory/docker/abc/memory.limit_in_bytes", "1048576\n");
        put(
            root,
            "memory/docker/abc/memory.stat",
            "cache 50\ninactive_file 40\ntotal_inactive_file 60\n",
        );
        assert_eq!(cgroup_available(root, me), Some(1048576 - 40));
        // Controllers listed together ("memory,foo") and an unparsable line are handled.
        let joined = "garbage\n7:foo,memory:/docker/abc\n";
        assert_eq!(cgroup_available(root, joined), Some(1048576 - 40));
        // A v1 limit with no usage file counts as unused.
        put(root, "memory/memory.limit_in_bytes", "500\n");
        assert_eq!(cgroup_available(root, me), Some(500));
        // v2 and v1 both present (hybrid): the smaller.
        put(root, "memory.max", "300\n");
        assert_eq!(cgroup_available(root, me), Some(300));
    }

    #[test]
    fn available_bytes_reads_this_machine() {
        if std::path::Path::new("/proc/meminfo").exists() {
            let host = meminfo_available(&std::fs::read_to_string("/proc/meminfo").unwrap());
            let got = available_bytes();
            assert!(got.is_some() && got <= host, "{got:?} {host:?}");
        }
    }
}
