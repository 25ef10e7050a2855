//! The model file: a generator's weights in safetensors, with metadata that says what it is
//! (architecture, prior, the sample's checksum, the training settings, the engine's version).
//! Everything is checked on load; a truncated, foreign or mismatched file is an
//! [`Error::Model`](crate::Error::Model) (exit code 3 on the command line).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use super::generator::{Architecture, Generator, GeneratorKind};
use crate::image_io::RgbImageF32;
use crate::{Error, Result};

/// The `format` metadata value of every model file.
pub const FORMAT: &str = "mrfsynth-generator";
/// Bumped when the layout of the tensors or the metadata changes.
pub const FORMAT_VERSION: u32 = 1;
/// Tensor-name prefixes of a checkpoint's optimiser state (first and second moments).
pub(crate) const ADAM_M: &str = "adam.m.";
pub(crate) const ADAM_V: &str = "adam.v.";

/// Adam's first and second moments per parameter name.
pub(crate) type Moments = BTreeMap<String, (Tensor, Tensor)>;

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub architecture: Architecture,
    /// The prior it was trained with (`gram`, `mrf`, `gc`, ...).
    pub prior: String,
    /// SHA-256 of the sample's pixels (8-bit RGB, row-major) and its size.
    pub sample_sha256: String,
    pub sample_width: u32,
    pub sample_height: u32,
    /// Training steps taken so far.
    pub steps: usize,
    /// The training settings, as [`super::TrainOptions`] serialises them.
    pub training: serde_json::Value,
    /// The engine that wrote it.
    pub engine_version: String,
}

/// A loaded (or freshly trained) generator with its description.
pub struct Model {
    pub info: ModelInfo,
    pub generator: Generator,
    pub(crate) varmap: VarMap,
    /// A checkpoint's optimiser state: (first, second) moments per parameter name, and step.
    pub(crate) adam_state: Option<(Moments, usize)>,
}

fn model_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Model(format!("{}: {msg}", path.display()))
}

/// SHA-256 of an image's 8-bit pixels: identifies the sample a model was trained on.
pub fn sample_checksum(img: &RgbImageF32) -> String {
    crate::assets::weights::sha256_hex(img.to_rgb8().as_raw())
}

impl Model {
    /// Writes the model (and, with `adam`, the optimiser state of a checkpoint) atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, None)
    }

    pub(crate) fn save_with(&self, path: &Path, adam: Option<(&Moments, usize)>) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> = {
            let data = self.varmap.data().lock().expect("var map lock");
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect()
        };
        if let Some((moments, _)) = adam {
            for (k, (m, v)) in moments {
                tensors.push((format!("{ADAM_M}{k}"), m.clone()));
                tensors.push((format!("{ADAM_V}{k}"), v.clone()));
            }
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let cpu: Vec<(String, Tensor)> = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
            .collect::<Result<_>>()?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("format_version".to_string(), FORMAT_VERSION.to_string());
        meta.insert("info".to_string(), serde_json::to_string(&self.info)?);
        if let Some((_, step)) = adam {
            meta.insert("adam_step".to_string(), step.to_string());
        }
        let views: Vec<(&str, &Tensor)> = cpu.iter().map(|(k, t)| (k.as_str(), t)).collect();
        let bytes =
            safetensors::tensor::serialize(views, Some(meta)).map_err(|e| model_err(path, e))?;
        crate::atomic::write(path, &bytes)
            .map_err(|e| Error::Io(e).context(format!("writing {}", path.display())))
    }

    /// Reads and checks a model file; the generator is built on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Model> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::Io(e).context(format!("reading {}", path.display())))?;
        Self::from_bytes(&bytes, device).map_err(|e| match e {
            Error::Model(m) => model_err(path, m),
            e => e,
        })
    }

    /// [`Model::load`] from the file's bytes.
    pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<Model> {
        let bad = |m: String| Error::Model(m);
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a model file (truncated or foreign: {e})")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            return Err(bad(
                "not a model file: a safetensors file, but not one mrfsynth train wrote".into(),
            ));
        }
        let version = meta.get("format_version").map(String::as_str);
        if version != Some(&FORMAT_VERSION.to_string()) {
            return Err(bad(format!(
                "model format version {} is not the {FORMAT_VERSION} this build reads",
                version.unwrap_or("(none)")
            )));
        }
        let info: ModelInfo = meta
            .get("info")
            .ok_or_else(|| bad("the model file has no description".into()))
            .and_then(|s| {
                serde_json::from_str(s).map_err(|e| bad(format!("unreadable description: {e}")))
            })?;
        info.architecture.validate().map_err(bad)?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| bad(format!("not a model file (truncated or foreign: {e})")))?;

        // Build the generator with fresh variables, then replace each by the file's tensor,
        // checking that names and shapes are exactly those of the architecture.
        let mut varmap = VarMap::new();
        let generator = Generator::new(
            &info.architecture,
            VarBuilder::from_varmap(&varmap, DType::F32, device),
        )?;
        let expected: BTreeMap<String, Vec<usize>> = {
            let data = varmap.data().lock().expect("var map lock");
            data.iter()
                .map(|(k, v)| (k.clone(), v.dims().to_vec()))
                .collect()
        };
        let mut moments: BTreeMap<String, (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
        let mut seen = 0;
        for (name, view) in st.tensors() {
            let (param, slot) = if let Some(p) = name.strip_prefix(ADAM_M) {
                (p, 1)
            } else if let Some(p) = name.strip_prefix(ADAM_V) {
                (p, 2)
            } else {
                (name.as_str(), 0)
            };
            let Some(shape) = expected.get(param) else {
                return Err(bad(format!(
                    "unexpected tensor '{name}' for this architecture"
                )));
            };
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != shape.as_slice() {
                return Err(bad(format!(
                    "tensor '{name}' is {:?} {:?}, expected F32 {shape:?}",
                    view.dtype(),
                    view.shape()
                )));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("tensor '{name}' holds non-finite values")));
            }
            let t = Tensor::from_vec(values, shape.as_slice(), device)?;
            match slot {
                0 => {
                    varmap.set_one(param, &t)?;
                    seen += 1;
                }
                1 => moments.entry(param.to_string()).or_default().0 = Some(t),
                _ => moments.entry(param.to_string()).or_default().1 = Some(t),
            }
        }
        if seen != expected.len() {
            return Err(bad(format!(
                "the file has {seen} of the architecture's {} weight tensors",
                expected.len()
            )));
        }
        let adam_state = match meta.get("adam_step") {
            Some(step) => {
                let step: usize = step
                    .parse()
                    .map_err(|_| bad("unreadable optimiser step".into()))?;
                let mut state = BTreeMap::new();
                for (k, (m, v)) in moments {
                    match (m, v) {
                        (Some(m), Some(v)) => {
                            state.insert(k, (m, v));
                        }
                        _ => return Err(bad(format!("optimiser state of '{k}' is incomplete"))),
                    }
                }
                if state.len() != expected.len() {
                    return Err(bad("the checkpoint's optimiser state is incomplete".into()));
                }
                Some((state, step))
            }
            None if !moments.is_empty() => {
                return Err(bad("optimiser tensors without an optimiser step".into()))
            }
            None => None,
        };
        Ok(Model {
            info,
            generator,
            varmap,
            adam_state,
        })
    }

    /// The device the generator's weights live on.
    pub fn device(&self) -> Device {
        self.varmap
            .all_vars()
            .first()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// A texture of `width` x `height` from `seed`; `tileable` wraps the borders around.
    pub fn generate(
        &self,
        width: u32,
        height: u32,
        seed: u64,
        tileable: bool,
    ) -> Result<RgbImageF32> {
        self.generate_within(width, height, seed, tileable, None)
    }

    /// [`Self::generate`], refused up front on the CPU when its estimated peak memory exceeds
    /// `max_memory` (default: the memory available).
    pub fn generate_within(
        &self,
        width: u32,
        height: u32,
        seed: u64,
        tileable: bool,
        max_memory: Option<u64>,
    ) -> Result<RgbImageF32> {
        if self.info.architecture.kind != GeneratorKind::Texture {
            return Err(Error::Model(
                "this model transfers a style onto photos (use stylize); it makes no textures"
                    .into(),
            ));
        }
        crate::session::check_output_size(width, height)?;
        let dev = self.device();
        if dev.is_cpu() {
            self.check_memory(width, height, max_memory)?;
        }
        let t = self
            .generator
            .generate(width as usize, height as usize, seed, tileable, &dev)?;
        Ok(RgbImageF32::from_tensor(&t)?)
    }

    /// Refuses a CPU generation of `width` x `height` whose estimated peak memory
    /// ([`generation_bytes`](super::generation_bytes)) exceeds `limit` (default: the memory
    /// available), naming the largest square that fits.
    fn check_memory(&self, width: u32, height: u32, limit: Option<u64>) -> Result<()> {
        let Some(limit) = limit.or_else(crate::synth::available_bytes) else {
            return Ok(());
        };
        let arch = &self.info.architecture;
        let need = super::generation_bytes(arch, width, height);
        if need <= limit {
            return Ok(());
        }
        let mut side = 0u32;
        while side < crate::session::MAX_SIDE
            && super::generation_bytes(arch, side + 256, side + 256) <= limit
        {
            side += 256;
        }
        let size = |b: u64| match b as f64 / (1u64 << 30) as f64 {
            g if g >= 1.0 => format!("{g:.1} GiB"),
            g => format!("{:.0} MiB", g * 1024.0),
        };
        let fits = if side > 0 {
            format!("the largest square that fits is about {side} px")
        } else {
            "not even 256 px fits".to_string()
        };
        Err(Error::NotEnoughMemory(format!(
            "generating {width}x{height} needs about {}, more than the {} available; {fits}",
            size(need),
            size(limit)
        )))
    }

    /// The model's style on `content` (any size).
    pub fn stylize(&self, content: &RgbImageF32) -> Result<RgbImageF32> {
        if self.info.architecture.kind != GeneratorKind::Stylize {
            return Err(Error::Model(
                "this model makes textures (use generate); it does not stylise photos".into(),
            ));
        }
        crate::session::check_output_size(content.width, content.height)?;
        let t = self
            .generator
            .stylize(&content.to_tensor(&self.device())?)?;
        Ok(RgbImageF32::from_tensor(&t)?)
    }
}
