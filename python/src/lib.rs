//! `mrfsynth._native`: the engine from Python, numpy arrays in and out (re-exported by the
//! `mrfsynth` package, see `pysrc/mrfsynth/__init__.py`).
//!
//! - Images are (H, W, 3) `uint8` (0..255) or floating point in 0..1 (float32 or float64), or a
//!   path to an image file. Results come back in the dtype of the main input (the style of a
//!   texture, the content of a transfer): `uint8` for `uint8`, else float32 in 0..1.
//! - Every run releases the GIL; progress goes to tqdm when it is installed; `callback(level,
//!   iteration, loss, image)` may stop a run by returning `False` (the best image so far is
//!   returned). Ctrl-C (SIGINT on the main thread) stops the run after the current iteration and
//!   raises `KeyboardInterrupt`.
//! - Errors carry the engine's one-line message: `ValueError` for bad settings or inputs,
//!   `FileNotFoundError` for a missing file, `OSError` for the weights, `RuntimeError` otherwise;
//!   unknown options raise `TypeError`.
//! - The VGG19 network is loaded once per process (per pooling / precision / device) and cached.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use mrfsynth::device::DeviceSpec;
use mrfsynth::image_io::{self, ImageError, LoadLimits, RgbImageF32};
use mrfsynth::metrics::Metrics;
use mrfsynth::session::Network;
use mrfsynth::synth::{
    self, Control, Init, Level, LevelReport, MatcherKind, MrfGradient, Observer, OptimizerKind,
    Params, Preset, PriorKind, StepInfo,
};
use mrfsynth::vgg::{LayerId, Pooling, Precision};
use mrfsynth::{Error, ErrorKind, Synth};
use numpy::ndarray::Array3;
use numpy::{
    IntoPyArray, PyArray3, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

// ---------------------------------------------------------------------------------------------
// Errors

fn root(e: &Error) -> &Error {
    match e {
        Error::Context { source, .. } => root(source),
        other => other,
    }
}

/// The engine's error as a Python exception with its one-line message.
fn py_err(e: Error) -> PyErr {
    let msg = e.one_line();
    if let Error::Image(ImageError::NotFound { .. }) = root(&e) {
        return PyFileNotFoundError::new_err(msg);
    }
    match e.kind() {
        ErrorKind::Settings | ErrorKind::BadInput => PyValueError::new_err(msg),
        ErrorKind::Weights => PyOSError::new_err(msg),
        ErrorKind::Interrupted => PyKeyboardInterrupt::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

fn value_err(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

// ---------------------------------------------------------------------------------------------
// The network, loaded once per process

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct NetKey {
    pool: Pooling,
    precision: Precision,
    device: DeviceKey,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum DeviceKey {
    Auto,
    Cpu,
    Cuda(usize),
}

impl Default for NetKey {
    fn default() -> Self {
        NetKey {
            pool: Pooling::Max,
            precision: Precision::F32,
            device: DeviceKey::Auto,
        }
    }
}

/// The default network (auto device, max pooling, f32): what almost every call uses.
static DEFAULT_NETWORK: OnceLock<Arc<Network>> = OnceLock::new();
/// Other combinations of pooling, precision and device, each loaded once.
/// One layer's features: its name, shape and values.
type NamedFeature = (String, Vec<usize>, Vec<f32>);

/// Networks loaded for other settings than the default, by key.
type NetworkList = Vec<(NetKey, Arc<Network>)>;
static OTHER_NETWORKS: OnceLock<Mutex<NetworkList>> = OnceLock::new();

fn load_network(key: NetKey) -> mrfsynth::Result<Arc<Network>> {
    let device = match key.device {
        DeviceKey::Auto => DeviceSpec::Auto,
        DeviceKey::Cpu => DeviceSpec::Cpu,
        DeviceKey::Cuda(i) => DeviceSpec::Cuda(i),
    };
    Network::builder()
        .pooling(key.pool)
        .precision(key.precision)
        .device(device)
        .load()
}

/// The cached network for `key`, loaded (without the GIL) on first use.
fn network(py: Python<'_>, key: NetKey) -> PyResult<Arc<Network>> {
    if key == NetKey::default() {
        if let Some(n) = DEFAULT_NETWORK.get() {
            return Ok(n.clone());
        }
        let n = py
            .allow_threads(move || load_network(key))
            .map_err(py_err)?;
        let _ = DEFAULT_NETWORK.set(n);
        return Ok(DEFAULT_NETWORK.get().expect("just set").clone());
    }
    let map = OTHER_NETWORKS.get_or_init(|| Mutex::new(Vec::new()));
    let find = |list: &Vec<(NetKey, Arc<Network>)>| {
        list.iter().find(|(k, _)| *k == key).map(|(_, n)| n.clone())
    };
    if let Some(n) = find(&map.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(n);
    }
    let n = py
        .allow_threads(move || load_network(key))
        .map_err(py_err)?;
    let mut list = map.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = find(&list) {
        return Ok(n);
    }
    list.push((key, n.clone()));
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Images: numpy <-> the engine's planar 0..255 f32

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum OutType {
    U8,
    F32,
}

/// An image argument: an (H, W, 3) array (uint8, or float in 0..1) or a path to an image file.
fn image_arg(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<(RgbImageF32, OutType)> {
    let is_path = obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")?;
    if is_path {
        let path: PathBuf = obj.extract()?;
        let img = py
            .allow_threads(|| image_io::load_rgb(&path, &LoadLimits::default()))
            .map_err(|e| py_err(Error::from(e).context(what)))?;
        return Ok((img, OutType::U8));
    }
    let np = py.import("numpy")?;
    let arr = if obj.is_instance_of::<PyUntypedArray>() {
        obj.clone()
    } else {
        np.call_method1("asarray", (obj,))
            .map_err(|_| value_err(format!("{what}: expected an (H, W, 3) numpy array")))?
    };
    let arr = arr.downcast::<PyUntypedArray>()?;
    let shape = arr.shape().to_vec();
    if shape.len() != 3 || shape[2] != 3 {
        return Err(value_err(format!(
            "{what}: expected an array of shape (H, W, 3), got shape {shape:?}"
        )));
    }
    let (h, w) = (shape[0], shape[1]);
    if h == 0 || w == 0 {
        return Err(value_err(format!(
            "{what}: the image is empty ({h}x{w} px)"
        )));
    }
    if h > 16384 || w > 16384 {
        return Err(value_err(format!(
            "{what}: {w}x{h} px is larger than 16384 px a side"
        )));
    }
    let n = h * w;
    let mut data = vec![0.0f32; 3 * n];
    let dtype = arr.dtype();
    let (out, ok) = if let Ok(a) = arr.downcast::<PyArray3<u8>>() {
        let ro = a.readonly();
        for ((y, x, c), v) in ro.as_array().indexed_iter() {
            data[c * n + y * w + x] = *v as f32;
        }
        (OutType::U8, true)
    } else if let Ok(a) = arr.downcast::<PyArray3<f32>>() {
        let ro = a.readonly();
        let ok = fill_float(
            &mut data,
            ro.as_array().indexed_iter().map(|(i, v)| (i, *v as f64)),
            n,
            w,
        );
        (OutType::F32, ok)
    } else if let Ok(a) = arr.downcast::<PyArray3<f64>>() {
        let ro = a.readonly();
        let ok = fill_float(
            &mut data,
            ro.as_array().indexed_iter().map(|(i, v)| (i, *v)),
            n,
            w,
        );
        (OutType::F32, ok)
    } else {
        return Err(value_err(format!(
            "{what}: dtype {dtype} is not supported: use uint8 (0..255) or float32/float64 (0..1)"
        )));
    };
    if !ok {
        return Err(value_err(format!(
            "{what}: float images must be finite and in 0..1 (found NaN, infinity or a value outside)"
        )));
    }
    Ok((RgbImageF32::new(w as u32, h as u32, data), out))
}

/// Scales 0..1 floats to the engine's 0..255; false on NaN, infinity or values outside 0..1.
fn fill_float(
    data: &mut [f32],
    it: impl Iterator<Item = ((usize, usize, usize), f64)>,
    n: usize,
    w: usize,
) -> bool {
    for ((y, x, c), v) in it {
        if !(0.0..=1.0).contains(&v) {
            return false;
        }
        data[c * n + y * w + x] = (v * 255.0) as f32;
    }
    true
}

/// Planar 0..255 f32 -> (H, W, 3) numpy (uint8 rounded as the engine writes files, or float32
/// 0..1 unrounded).
fn to_numpy<'py>(
    py: Python<'py>,
    planar: &[f32],
    width: u32,
    height: u32,
    out: OutType,
) -> Bound<'py, PyAny> {
    let (w, h) = (width as usize, height as usize);
    let n = w * h;
    match out {
        OutType::U8 => {
            let img = RgbImageF32::new(width, height, planar[..3 * n].to_vec()).to_rgb8();
            Array3::from_shape_vec((h, w, 3), img.into_raw())
                .expect("shape matches")
                .into_pyarray(py)
                .into_any()
        }
        OutType::F32 => {
            let mut v = Vec::with_capacity(3 * n);
            for i in 0..n {
                for c in 0..3 {
                    v.push((planar[c * n + i] / 255.0).clamp(0.0, 1.0));
                }
            }
            Array3::from_shape_vec((h, w, 3), v)
                .expect("shape matches")
                .into_pyarray(py)
                .into_any()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Options: the CLI's flag names with underscores

type Edit = Box<dyn FnOnce(&mut Params) + Send>;

/// Options that change the job, split by where they apply.
#[derive(Default)]
struct Options {
    edits: Vec<Edit>,
    preset: Option<Preset>,
    net: NetKey,
    /// `style_blend`: one weight per style image.
    blend: Option<Vec<f64>>,
    /// `style_map` (one per style image), `target_map` and `map_weight`: guide maps.
    style_maps: Vec<RgbImageF32>,
    target_map: Option<RgbImageF32>,
    map_weight: Option<f32>,
}

fn parse<T: std::str::FromStr>(flag: &str, v: &str) -> PyResult<T>
where
    T::Err: std::fmt::Display,
{
    v.parse::<T>()
        .map_err(|e| value_err(format!("{flag}: {e}")))
}

fn choice(flag: &str, v: &str, names: [&str; 2]) -> PyResult<bool> {
    if v == names[0] {
        Ok(true)
    } else if v == names[1] {
        Ok(false)
    } else {
        Err(value_err(format!(
            "{flag} {v}: expected {} or {}",
            names[0], names[1]
        )))
    }
}

fn layer_list(flag: &str, v: &Bound<'_, PyAny>) -> PyResult<Vec<LayerId>> {
    let s: String = if let Ok(s) = v.extract::<String>() {
        s
    } else {
        v.extract::<Vec<String>>()?.join(",")
    };
    let l = LayerId::parse_list(&s).map_err(|e| value_err(format!("{flag}: {e}")))?;
    if l.is_empty() {
        return Err(value_err(format!("{flag}: no layer given")));
    }
    Ok(l)
}

const KNOWN_OPTIONS: &str = "level_ratio, finest_iterations, preset, style_weight, gram_layers, \
mrf_layers, mrf_weight, patch_size, occurrence, gc_bandwidth, gc_top_k, gc_max_queries, stride, \
style_stride, tv_weight, rotations, scales, style_scale, optimizer, learning_rate, history, \
line_search, first_step, mrf_gradient, patch_grid, style_padding, resample, min_style_patches, \
pool, matcher, tile, precision, bank_precision, tileable, max_memory, device, init, content_weight, \
original_colors, content_layer, style_blend, style_map, target_map, map_weight";

/// Reads `**options` (CLI flag names with `-` as `_`). Unknown names raise TypeError, as an
/// unknown keyword argument does.
fn parse_options(
    py: Python<'_>,
    kwargs: Option<&Bound<'_, PyDict>>,
    transfer: bool,
) -> PyResult<Options> {
    let mut o = Options::default();
    let Some(kwargs) = kwargs else {
        return Ok(o);
    };
    let has_style_stride = kwargs.contains("style_stride")?;
    for (k, v) in kwargs.iter() {
        let key: String = k.extract()?;
        let flag = format!("--{}", key.replace('_', "-"));
        macro_rules! set {
            ($t:ty, |$p:ident, $x:ident| $body:expr) => {{
                let $x: $t = v.extract()?;
                o.edits.push(Box::new(move |$p: &mut Params| $body));
            }};
        }
        match key.as_str() {
            "level_ratio" => set!(f32, |p, x| p.level_ratio = x),
            "finest_iterations" => set!(Option<usize>, |p, x| p.finest_iterations = x),
            "style_weight" => set!(f64, |p, x| p.gram_weight = x),
            "gram_layers" => {
                let l = layer_list(&flag, &v)?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.gram_layers = l));
            }
            "mrf_layers" => {
                let l = layer_list(&flag, &v)?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.mrf_layers = l));
            }
            "mrf_weight" => set!(f64, |p, x| p.mrf_weight = x),
            "patch_size" => set!(usize, |p, x| p.patch_size = x),
            "occurrence" => set!(f32, |p, x| {
                p.occurrence = x;
                p.auto_occurrence = false;
            }),
            "gc_bandwidth" => set!(f32, |p, x| p.gc_bandwidth = x),
            "gc_top_k" => set!(usize, |p, x| p.gc_top_k = x),
            "gc_max_queries" => set!(usize, |p, x| p.gc_max_queries = x),
            // As on the command line, --stride also sets the style stride unless it is given.
            "stride" if has_style_stride => set!(usize, |p, x| p.stride = x),
            "stride" => set!(usize, |p, x| {
                p.stride = x;
                p.style_stride = x
            }),
            "style_stride" => set!(usize, |p, x| p.style_stride = x),
            "tv_weight" => set!(f64, |p, x| p.tv_weight = x),
            "rotations" => set!(u32, |p, x| p.rotations = x),
            "scales" => set!(u32, |p, x| p.scales = x),
            "style_scale" => set!(f32, |p, x| p.style_scale = x),
            "optimizer" => {
                let s: String = v.extract()?;
                let k = match s.as_str() {
                    "lbfgs" => OptimizerKind::Lbfgs,
                    "adam" => OptimizerKind::Adam,
                    _ => return Err(value_err(format!("{flag} {s}: expected lbfgs or adam"))),
                };
                o.edits
                    .push(Box::new(move |p: &mut Params| p.optimizer = k));
            }
            "learning_rate" => set!(f32, |p, x| p.learning_rate = x),
            "history" => set!(usize, |p, x| p.history = x),
            "line_search" => {
                let s: String = v.extract()?;
                let b = choice(&flag, &s, ["wolfe", "none"])?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.line_search = b));
            }
            "first_step" => {
                let step = match v.extract::<String>() {
                    Ok(s) if s == "torch" => None,
                    Ok(s) => Some(parse::<f32>(&flag, &s)?),
                    Err(_) => Some(v.extract::<f32>()?),
                };
                if let Some(px) = step {
                    if !(px.is_finite() && px > 0.0) {
                        return Err(value_err(format!(
                            "{flag} {px}: expected a number of grey levels > 0, or torch"
                        )));
                    }
                }
                o.edits
                    .push(Box::new(move |p: &mut Params| p.first_step_px = step));
            }
            "mrf_gradient" => {
                let g: MrfGradient = parse(&flag, &v.extract::<String>()?)?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.mrf_gradient = g));
            }
            "patch_grid" => {
                let b = choice(&flag, &v.extract::<String>()?, ["full", "stride"])?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.full_grid = b));
            }
            "style_padding" => {
                let b = choice(&flag, &v.extract::<String>()?, ["mirror", "zero"])?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.mirror_style = b));
            }
            "resample" => {
                let r: image_io::Resample = parse(&flag, &v.extract::<String>()?)?;
                o.edits.push(Box::new(move |p: &mut Params| p.resample = r));
            }
            "min_style_patches" => set!(usize, |p, x| p.min_style_patches = x),
            "matcher" => {
                let m: MatcherKind = parse(&flag, &v.extract::<String>()?)?;
                o.edits.push(Box::new(move |p: &mut Params| p.matcher = m));
            }
            "tile" => set!(Option<u32>, |p, x| p.tile = x),
            "bank_precision" => {
                let b: synth::BankPrecision = parse(&flag, &v.extract::<String>()?)?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.bank_precision = b));
            }
            "tileable" => set!(bool, |p, x| p.tileable = x),
            "max_memory" => {
                let bytes = if let Ok(n) = v.extract::<u64>() {
                    n
                } else {
                    let s: String = v.extract()?;
                    synth::parse_bytes(&s).ok_or_else(|| {
                        value_err(format!("{flag} {s}: expected a size like 8G or 512M"))
                    })?
                };
                o.edits
                    .push(Box::new(move |p: &mut Params| p.max_memory = Some(bytes)));
            }
            "preset" => o.preset = Some(parse(&flag, &v.extract::<String>()?)?),
            "pool" => o.net.pool = parse(&flag, &v.extract::<String>()?)?,
            "precision" => o.net.precision = parse(&flag, &v.extract::<String>()?)?,
            "device" => {
                let d: DeviceSpec = parse(&flag, &v.extract::<String>()?)?;
                o.net.device = match d {
                    DeviceSpec::Cpu => DeviceKey::Cpu,
                    DeviceSpec::Cuda(i) => DeviceKey::Cuda(i),
                    _ => DeviceKey::Auto,
                };
            }
            "init" => {
                let init = match v.extract::<String>() {
                    Ok(s) if s == "noise" => Init::Noise,
                    Ok(s) if s == "mean" => Init::Mean,
                    Ok(s) if s == "content" && transfer => Init::Content,
                    Ok(s) if s == "content" => {
                        return Err(value_err(
                            "--init content needs a content image (use transfer)",
                        ))
                    }
                    _ => Init::Image(image_arg(py, &v, "init")?.0),
                };
                o.edits.push(Box::new(move |p: &mut Params| p.init = init));
            }
            "style_blend" => {
                let w: Vec<f64> = match v.extract::<String>() {
                    Ok(text) => text
                        .split(',')
                        .map(|t| parse::<f64>(&flag, t.trim()))
                        .collect::<PyResult<_>>()?,
                    Err(_) => v.extract()?,
                };
                o.blend = Some(w);
            }
            "style_map" => {
                let maps: Vec<Bound<'_, PyAny>> = if v.is_instance_of::<PyList>() {
                    v.try_iter()?.collect::<PyResult<_>>()?
                } else {
                    vec![v.clone()]
                };
                for m in maps {
                    o.style_maps.push(image_arg(py, &m, "style_map")?.0);
                }
            }
            "target_map" => o.target_map = Some(image_arg(py, &v, "target_map")?.0),
            "map_weight" => o.map_weight = Some(v.extract()?),
            "content_weight" if transfer => set!(f64, |p, x| p.content_weight = x),
            "original_colors" if transfer => set!(bool, |p, x| p.original_colors = x),
            "content_layer" if transfer => {
                let l: LayerId = parse(&flag, &v.extract::<String>()?)?;
                o.edits
                    .push(Box::new(move |p: &mut Params| p.content_layer = l));
            }
            _ => {
                return Err(PyTypeError::new_err(format!(
                    "unexpected option '{key}' (known: {KNOWN_OPTIONS}; content_weight, \
                     original_colors and content_layer are for transfers)"
                )))
            }
        }
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------------
// The observer: progress bars, the callback, Ctrl-C

struct PyObserver {
    /// `tqdm.tqdm`, when progress is wanted and tqdm is installed.
    tqdm: Option<PyObject>,
    bar: Option<PyObject>,
    callback: Option<PyObject>,
    out: OutType,
    /// An exception raised in the callback or by Ctrl-C: the run stopped and this is raised.
    error: Option<PyErr>,
    /// The callback returned False.
    stopped: bool,
}

impl PyObserver {
    fn new(py: Python<'_>, progress: bool, callback: Option<PyObject>, out: OutType) -> Self {
        let tqdm = if progress {
            py.import("tqdm")
                .and_then(|m| m.getattr("tqdm"))
                .ok()
                .map(|t| t.unbind())
        } else {
            None
        };
        PyObserver {
            tqdm,
            bar: None,
            callback,
            out,
            error: None,
            stopped: false,
        }
    }

    fn close_bar(&mut self, py: Python<'_>) {
        if let Some(bar) = self.bar.take() {
            let _ = bar.call_method0(py, "close");
        }
    }

    /// After the run: closes the bar and raises what stopped it, if anything did.
    fn finish(&mut self, py: Python<'_>) -> PyResult<()> {
        self.close_bar(py);
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Observer for PyObserver {
    fn level_start(&mut self, index: usize, count: usize, level: &Level, iterations: usize) {
        Python::with_gil(|py| {
            self.close_bar(py);
            if let Some(t) = &self.tqdm {
                let kw = PyDict::new(py);
                let desc = format!(
                    "level {}/{} {}x{}",
                    index + 1,
                    count,
                    level.width,
                    level.height
                );
                let _ = kw.set_item("total", iterations);
                let _ = kw.set_item("desc", desc);
                let _ = kw.set_item("leave", false);
                self.bar = t.call(py, (), Some(&kw)).ok();
            }
        });
    }

    fn step(
        &mut self,
        level: usize,
        info: &StepInfo,
        image: &[f32],
        width: u32,
        height: u32,
    ) -> Control {
        Python::with_gil(|py| {
            if let Err(e) = py.check_signals() {
                self.error = Some(e);
                return Control::Stop;
            }
            if let Some(bar) = &self.bar {
                let _ = bar.call_method1(py, "update", (1,));
                let kw = PyDict::new(py);
                let _ = kw.set_item("loss", format!("{:.4e}", info.loss));
                let _ = kw.set_item("refresh", false);
                let _ = bar.call_method(py, "set_postfix", (), Some(&kw));
            }
            let Some(cb) = &self.callback else {
                return Control::Continue;
            };
            let img = to_numpy(py, image, width, height, self.out);
            match cb.call1(py, (level, info.iteration, info.loss, img)) {
                Ok(r) => {
                    if r.bind(py).is_instance_of::<pyo3::types::PyBool>()
                        && !r.extract::<bool>(py).unwrap_or(true)
                    {
                        self.stopped = true;
                        Control::Stop
                    } else {
                        Control::Continue
                    }
                }
                Err(e) => {
                    self.error = Some(e);
                    Control::Stop
                }
            }
        })
    }

    fn level_end(&mut self, _index: usize, _report: &LevelReport) {
        Python::with_gil(|py| self.close_bar(py));
    }
}

// ---------------------------------------------------------------------------------------------
// The jobs

fn size_arg(size: Option<&Bound<'_, PyAny>>) -> PyResult<Option<(u32, u32)>> {
    let Some(s) = size else { return Ok(None) };
    if s.is_none() {
        return Ok(None);
    }
    if let Ok(n) = s.extract::<u32>() {
        return Ok(Some((n, n)));
    }
    let (h, w): (u32, u32) = s
        .extract()
        .map_err(|_| PyTypeError::new_err("size: expected (height, width) or one int"))?;
    Ok(Some((h, w)))
}

/// `None`: the engine's default for the job (`mrf+gram` for a texture, `mrf` for a transfer).
fn prior_arg(prior: Option<&str>) -> PyResult<Option<PriorKind>> {
    prior.map(|p| parse("prior", p)).transpose()
}

struct Job {
    styles: Vec<RgbImageF32>,
    content: Option<RgbImageF32>,
    out: OutType,
}

fn styles_arg(py: Python<'_>, style: &Bound<'_, PyAny>) -> PyResult<(Vec<RgbImageF32>, OutType)> {
    // A list or tuple of images (not one array, not a path): several samples.
    if (style.is_instance_of::<pyo3::types::PyList>()
        || style.is_instance_of::<pyo3::types::PyTuple>())
        && style.len()? > 0
        && !style.get_item(0)?.is_instance_of::<pyo3::types::PyFloat>()
        && !style.get_item(0)?.is_instance_of::<pyo3::types::PyInt>()
        && (style.get_item(0)?.is_instance_of::<PyUntypedArray>()
            || style.get_item(0)?.is_instance_of::<PyString>()
            || style.get_item(0)?.hasattr("__fspath__")?)
    {
        let mut out = Vec::new();
        let mut kind = OutType::U8;
        for (i, s) in style.try_iter()?.enumerate() {
            let (img, k) = image_arg(py, &s?, "style")?;
            if i == 0 {
                kind = k;
            }
            out.push(img);
        }
        return Ok((out, kind));
    }
    let (img, k) = image_arg(py, style, "style")?;
    Ok((vec![img], k))
}

/// Runs one texture or transfer with the GIL released; the image in the job's dtype.
#[allow(clippy::too_many_arguments)]
fn run_synth<'py>(
    py: Python<'py>,
    job: Job,
    prior: Option<PriorKind>,
    size: Option<(u32, u32)>,
    long_side: Option<u32>,
    seed: u64,
    levels: Option<usize>,
    iterations: Option<usize>,
    opts: Options,
    callback: Option<PyObject>,
    progress: bool,
) -> PyResult<(Bound<'py, PyAny>, bool)> {
    let net = network(py, opts.net)?;
    let mut styles = job.styles.into_iter();
    let first = styles
        .next()
        .ok_or_else(|| value_err("no style image given"))?;
    let mut b = match job.content {
        Some(c) => Synth::transfer(c, first),
        None => Synth::texture(first),
    };
    let count = 1 + styles.len();
    let blend = match &opts.blend {
        Some(w) if w.len() != count => {
            return Err(value_err(format!(
                "--style-blend has {} weights for {count} style images",
                w.len()
            )))
        }
        Some(w) => w.clone(),
        None => vec![1.0; count],
    };
    if blend.iter().any(|w| !w.is_finite() || *w < 0.0) || blend.iter().sum::<f64>() <= 0.0 {
        return Err(value_err(
            "--style-blend: weights must be finite, >= 0 and not all zero",
        ));
    }
    if blend[0] != 1.0 {
        let first_weight = blend[0];
        b = b.style_weight(first_weight);
    }
    for (s, w) in styles.zip(&blend[1..]) {
        b = b.add_style(s, *w);
    }
    match (opts.style_maps.is_empty(), opts.target_map) {
        (true, None) => {}
        (false, Some(target)) if opts.style_maps.len() == count => {
            let guides = synth::Guides {
                style_maps: opts.style_maps,
                target_map: target,
                weight: opts.map_weight.unwrap_or(synth::params::DEFAULT_MAP_WEIGHT),
            };
            b = b.guides(guides);
        }
        (false, Some(_)) => {
            return Err(value_err(format!(
                "--style-map has {} maps for {count} style images",
                opts.style_maps.len()
            )))
        }
        _ => return Err(value_err("--style-map and --target-map go together")),
    }
    if let Some(prior) = prior {
        b = b.prior(prior);
    }
    b = b.seed(seed).network(net);
    if let Some(p) = opts.preset {
        b = b.preset(p);
    }
    if let Some((h, w)) = size {
        b = b.size(w, h);
    }
    if let Some(l) = long_side {
        b = b.long_side(l);
    }
    if let Some(l) = levels {
        b = b.levels(l);
    }
    if let Some(i) = iterations {
        b = b.iterations(i);
    }
    for e in opts.edits {
        b = b.params(e);
    }
    let session = b.build().map_err(py_err)?;
    let mut obs = PyObserver::new(py, progress, callback, job.out);
    let result = py.allow_threads(|| session.run(&mut obs));
    obs.finish(py)?;
    let synthesis = match result {
        Err(e) if obs.stopped && e.kind() == ErrorKind::Interrupted => {
            return Err(PyRuntimeError::new_err(
                "the callback stopped the run before it made an image",
            ))
        }
        r => r.map_err(py_err)?,
    };
    let r = synthesis.report();
    Ok((
        to_numpy(py, &r.image.data, r.image.width, r.image.height, obs.out),
        r.interrupted,
    ))
}

/// texture(style, size=None, prior=None, seed=0, levels=None, iterations=None, *, callback=None,
/// progress=True, **options)
///
/// A texture like `style` (an (H, W, 3) uint8 or float 0..1 array, a path, or a list of them),
/// `size=(height, width)` (default: 384 px on the long side, the sample's aspect). Returns an
/// (H, W, 3) array in the style's dtype (uint8, or float32 in 0..1).
#[pyfunction]
#[pyo3(signature = (style, size=None, prior=None, seed=0, levels=None, iterations=None, *, callback=None, progress=true, **options))]
#[allow(clippy::too_many_arguments)]
fn texture<'py>(
    py: Python<'py>,
    style: &Bound<'py, PyAny>,
    size: Option<&Bound<'py, PyAny>>,
    prior: Option<&str>,
    seed: u64,
    levels: Option<usize>,
    iterations: Option<usize>,
    callback: Option<PyObject>,
    progress: bool,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = parse_options(py, options, false)?;
    let (styles, out) = styles_arg(py, style)?;
    let size = size_arg(size)?;
    let job = Job {
        styles,
        content: None,
        out,
    };
    let (img, _) = run_synth(
        py,
        job,
        prior_arg(prior)?,
        size,
        None,
        seed,
        levels,
        iterations,
        opts,
        callback,
        progress,
    )?;
    Ok(img)
}

/// transfer(content, style, long_side=None, prior=None, seed=0, levels=None, iterations=None, *,
/// callback=None, progress=True, **options)
///
/// `content` painted in the style of `style`; the output keeps the content's aspect, `long_side`
/// px on its long side (default 384). Returns an array in the content's dtype.
#[pyfunction]
#[pyo3(signature = (content, style, long_side=None, prior=None, seed=0, levels=None, iterations=None, *, callback=None, progress=true, **options))]
#[allow(clippy::too_many_arguments)]
fn transfer<'py>(
    py: Python<'py>,
    content: &Bound<'py, PyAny>,
    style: &Bound<'py, PyAny>,
    long_side: Option<u32>,
    prior: Option<&str>,
    seed: u64,
    levels: Option<usize>,
    iterations: Option<usize>,
    callback: Option<PyObject>,
    progress: bool,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = parse_options(py, options, true)?;
    let (c, out) = image_arg(py, content, "content")?;
    let (styles, _) = styles_arg(py, style)?;
    let job = Job {
        styles,
        content: Some(c),
        out,
    };
    let (img, _) = run_synth(
        py,
        job,
        prior_arg(prior)?,
        None,
        long_side,
        seed,
        levels,
        iterations,
        opts,
        callback,
        progress,
    )?;
    Ok(img)
}

fn metrics_dict<'py>(py: Python<'py>, m: &Metrics) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(m).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

fn compute_metrics(
    py: Python<'_>,
    net: Arc<Network>,
    image: RgbImageF32,
    style: RgbImageF32,
    content: Option<RgbImageF32>,
    seed: u64,
) -> PyResult<Metrics> {
    py.allow_threads(move || {
        let mut b = Synth::metrics(image, style).seed(seed).network(net);
        if let Some(c) = content {
            b = b.content(c);
        }
        b.compute()
    })
    .map_err(py_err)
}

/// compare(style, content=None, size=None, seed=0, levels=None, iterations=None, *,
/// callback=None, progress=True, **options)
///
/// Runs the MRF and the Gram prior under one pyramid, seed and budget (textures, or transfers
/// of `content`) and scores each output against the style. Returns
/// `{"images": {"mrf": array, "gram": array}, "metrics": {"mrf": {...}, "gram": {...}}}`.
#[pyfunction]
#[pyo3(signature = (style, content=None, size=None, seed=0, levels=None, iterations=None, *, callback=None, progress=true, **options))]
#[allow(clippy::too_many_arguments)]
fn compare<'py>(
    py: Python<'py>,
    style: &Bound<'py, PyAny>,
    content: Option<&Bound<'py, PyAny>>,
    size: Option<&Bound<'py, PyAny>>,
    seed: u64,
    levels: Option<usize>,
    iterations: Option<usize>,
    callback: Option<PyObject>,
    progress: bool,
    options: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let transfer = content.is_some_and(|c| !c.is_none());
    let (styles, sout) = styles_arg(py, style)?;
    let (content, out) = match content.filter(|c| !c.is_none()) {
        Some(c) => {
            let (img, k) = image_arg(py, c, "content")?;
            (Some(img), k)
        }
        None => (None, sout),
    };
    let (size, long_side) = match size_arg(size)? {
        Some((h, w)) if transfer => (None, Some(h.max(w))),
        s => (s, None),
    };
    let images = PyDict::new(py);
    let metrics = PyDict::new(py);
    let result = PyDict::new(py);
    result.set_item("images", &images)?;
    result.set_item("metrics", &metrics)?;
    for prior in [PriorKind::Mrf, PriorKind::Gram] {
        let opts = parse_options(py, options, transfer)?;
        let net_key = opts.net;
        let job = Job {
            styles: styles.clone(),
            content: content.clone(),
            out,
        };
        let (img, interrupted) = run_synth(
            py,
            job,
            Some(prior),
            size,
            long_side,
            seed,
            levels,
            iterations,
            opts,
            callback.as_ref().map(|c| c.clone_ref(py)),
            progress,
        )?;
        // Scored as written: the 8-bit image, as `mrfsynth compare` does.
        let (scored, _) = image_arg(py, &img, "output")?;
        let scored = if out == OutType::F32 {
            RgbImageF32::new(
                scored.width,
                scored.height,
                scored.data.iter().map(|v| v.round()).collect(),
            )
        } else {
            scored
        };
        let net = network(py, net_key)?;
        let m = compute_metrics(py, net, scored, styles[0].clone(), content.clone(), seed)?;
        images.set_item(prior.name(), img)?;
        metrics.set_item(prior.name(), metrics_dict(py, &m)?)?;
        if interrupted {
            break;
        }
    }
    Ok(result)
}

/// metrics(image, style, content=None, seed=0)
///
/// Every metric of `mrfsynth metrics --json` for `image` against `style` (and `content`): a dict
/// with `swd`, `gram_distance`, `copy_score`, `mrf_mean_cosine`, ...
#[pyfunction]
#[pyo3(signature = (image, style, content=None, seed=0))]
fn metrics<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    style: &Bound<'py, PyAny>,
    content: Option<&Bound<'py, PyAny>>,
    seed: u64,
) -> PyResult<Bound<'py, PyAny>> {
    let (img, _) = image_arg(py, image, "image")?;
    let (sty, _) = image_arg(py, style, "style")?;
    let con = match content.filter(|c| !c.is_none()) {
        Some(c) => Some(image_arg(py, c, "content")?.0),
        None => None,
    };
    let net = network(py, NetKey::default())?;
    let m = compute_metrics(py, net, img, sty, con, seed)?;
    metrics_dict(py, &m)
}

/// features(image, layers="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1", pool="max")
///
/// VGG19 activations of `image` (0..255 Caffe preprocessing as in every job): a dict from layer
/// name to a float32 array of shape (C, H, W).
#[pyfunction]
#[pyo3(signature = (image, layers=None, pool="max"))]
fn features<'py>(
    py: Python<'py>,
    image: &Bound<'py, PyAny>,
    layers: Option<&Bound<'py, PyAny>>,
    pool: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let layer_ids = match layers {
        Some(l) if !l.is_none() => layer_list("layers", l)?,
        _ => LayerId::parse_list("relu1_1,relu2_1,relu3_1,relu4_1,relu5_1").map_err(value_err)?,
    };
    let (img, _) = image_arg(py, image, "image")?;
    let key = NetKey {
        pool: parse("pool", pool)?,
        ..NetKey::default()
    };
    let net = network(py, key)?;
    let feats = py
        .allow_threads(move || {
            let r = (|| -> mrfsynth::Result<Vec<NamedFeature>> {
                let mut out = Vec::new();
                for (l, t) in synth::features(net.vgg(), &img, &layer_ids)? {
                    let mut dims = t.dims().to_vec();
                    if dims.len() == 4 && dims[0] == 1 {
                        dims.remove(0);
                    }
                    let v = t.flatten_all()?.to_vec1::<f32>()?;
                    out.push((l.name().to_string(), dims, v));
                }
                Ok(out)
            })();
            r
        })
        .map_err(py_err)?;
    let d = PyDict::new(py);
    for (name, dims, v) in feats {
        let a = numpy::ndarray::ArrayD::from_shape_vec(dims, v)
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let a: Bound<'py, PyArrayDyn<f32>> = a.into_pyarray(py);
        d.set_item(name, a)?;
    }
    Ok(d)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(texture, m)?)?;
    m.add_function(wrap_pyfunction!(transfer, m)?)?;
    m.add_function(wrap_pyfunction!(compare, m)?)?;
    m.add_function(wrap_pyfunction!(metrics, m)?)?;
    m.add_function(wrap_pyfunction!(features, m)?)?;
    Ok(())
}
