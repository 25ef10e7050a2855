//! `batch`: a manifest of jobs (JSON lines), run whole or as one shard of N, resumable.
//!
//! - Each manifest object becomes the argv of its command (`--key value`, `true` as a bare flag,
//!   arrays joined with commas) and is parsed by the CLI's own parser; a `"grid"` object expands
//!   one line into the Cartesian product of its lists, and `{key}` in a string value is replaced
//!   by that key's value (a path by its file stem).
//! - A job's hash is the SHA-256 of its normalised form (keys sorted, `_` as `-`, values as
//!   their argv strings, paths as written, lexically cleaned, relative to the manifest's folder),
//!   so every shard computes the same hash wherever the folder is mounted. Shard = hash mod N.
//! - A job is done when its output and sidecar exist and the sidecar's `batch` key records the
//!   same job hash and weights checksum (compare: `OUTPUT/batch.json`; metrics:
//!   `DIR/metrics/HASH.json`); done jobs are skipped.
//! - Each output is locked while it runs (`OUTPUT.lock`, created exclusively, refreshed by its
//!   holder); see [`Lock`] for when a lock counts as stale.
//! - Every job ends with one line in `DIR/results-IofN.jsonl`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use mrfsynth::assets::weights::{self, VggWeights, WeightsSource};
use mrfsynth::metrics::{self, MetricsOptions};
use mrfsynth::report::{self, html};
use mrfsynth::vgg::{Pooling, Precision, Vgg19};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::args::{
    BatchAction, BatchArgs, Cli, Command, MetricsArgs, SynthArgs, TextureArgs, TransferArgs,
};
use super::progress::Progress;
use super::{device, exit, failure, load_image, pooling, sidecar_path, CliError};

/// Commands a manifest may name.
const COMMANDS: [&str; 4] = ["texture", "transfer", "compare", "metrics"];
/// Keys whose values are file paths (relative ones are taken from the manifest's folder).
const PATH_KEYS: [&str; 7] = [
    "style",
    "content",
    "output",
    "style-map",
    "target-map",
    "style-dir",
    "image",
];
/// How often a lock holder refreshes its locks (at most; a third of --stale-lock if shorter).
const HEARTBEAT: Duration = Duration::from_secs(30);

pub fn batch(
    a: BatchArgs,
    weights_path: Option<&Path>,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
) -> Result<(), CliError> {
    match a.action {
        Some(BatchAction::Expand { manifest, shards }) => expand_cmd(&manifest, shards),
        Some(BatchAction::Summarize { dir, over }) => summarize(&dir, &over),
        None => {
            let manifest = a
                .manifest
                .clone()
                .ok_or_else(|| CliError::usage("batch needs a MANIFEST.jsonl"))?;
            run_batch(&a, &manifest, weights_path, quiet, interrupted)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest

/// One job of the manifest, after grid expansion.
#[derive(Debug, Clone)]
struct Job {
    /// 1-based line of the manifest it came from.
    line: usize,
    command: String,
    /// Normalised content: sorted keys (dash form) -> argv string, or `true` for a bare flag.
    norm: BTreeMap<String, Value>,
    hash: String,
    /// Where it writes (resolved), if it writes one thing.
    output: Option<PathBuf>,
    /// The argv, paths resolved, for the CLI parser (without the program name).
    argv: Vec<String>,
}

impl Job {
    fn shard_of(&self, n: u64) -> u64 {
        u64::from_str_radix(&self.hash[..16], 16).unwrap_or(0) % n
    }
}

fn manifest_dir(manifest: &Path) -> PathBuf {
    match manifest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads and expands a manifest. Blank lines and lines starting with `#` or `//` are skipped.
fn read_manifest(manifest: &Path) -> Result<Vec<Job>, CliError> {
    let text = std::fs::read_to_string(manifest)
        .map_err(|e| CliError::input(format!("manifest {}: {e}", manifest.display())))?;
    let base = manifest_dir(manifest);
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("//") {
            continue;
        }
        let bad = |m: String| CliError::input(format!("manifest line {}: {m}", i + 1));
        let obj: Map<String, Value> = match serde_json::from_str(t) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(bad("not a JSON object".into())),
            Err(e) => return Err(bad(e.to_string())),
        };
        for o in expand_grid(obj).map_err(bad)? {
            jobs.push(make_job(i + 1, o, &base).map_err(bad)?);
        }
    }
    let mut seen: HashMap<PathBuf, usize> = HashMap::new();
    for j in &jobs {
        if let Some(o) = &j.output {
            if let Some(prev) = seen.insert(o.clone(), j.line) {
                return Err(CliError::input(format!(
                    "manifest lines {prev} and {}: two jobs write {} (vary the output, e.g. \"output\": \"out/{{style}}_{{seed}}.png\")",
                    j.line,
                    o.display()
                )));
            }
        }
    }
    Ok(jobs)
}

/// `"grid": {"k": [v1, v2], "m": [..]}`: one object per combination (keys in sorted order, the
/// last varying fastest); each combination's values override the line's.
fn expand_grid(mut obj: Map<String, Value>) -> Result<Vec<Map<String, Value>>, String> {
    let Some(grid) = obj.remove("grid") else {
        return Ok(vec![obj]);
    };
    let Value::Object(grid) = grid else {
        return Err("\"grid\" must be an object of lists".into());
    };
    let mut out = vec![obj];
    for (k, v) in grid {
        let Value::Array(values) = v else {
            return Err(format!("grid key {k:?}: expected a list"));
        };
        if values.is_empty() {
            return Err(format!("grid key {k:?}: empty list"));
        }
        let mut next = Vec::with_capacity(out.len() * values.len());
        for o in &out {
            for v in &values {
                let mut o = o.clone();
                o.insert(k.clone(), v.clone());
                next.push(o);
            }
        }
        out = next;
    }
    Ok(out)
}

/// The argv string of a scalar, or None for null/false.
fn scalar(v: &Value) -> Result<Option<Value>, String> {
    Ok(match v {
        Value::Null | Value::Bool(false) => None,
        Value::Bool(true) => Some(Value::Bool(true)),
        Value::String(s) => Some(Value::String(s.clone())),
        Value::Number(n) => Some(Value::String(n.to_string())),
        Value::Array(items) => {
            let parts = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err("lists may hold strings and numbers only".to_string()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(Value::String(parts.join(",")))
        }
        Value::Object(_) => return Err("nested objects are not flags".into()),
    })
}

/// A path as written, cleaned lexically (no `.` parts, no doubled slashes).
fn clean_path(p: &str) -> String {
    let path = Path::new(p);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        ".".into()
    } else {
        out.to_string_lossy().into_owned()
    }
}

fn is_path_value(key: &str, v: &str) -> bool {
    PATH_KEYS.contains(&key) || (key == "init" && !matches!(v, "noise" | "mean" | "content"))
}

/// What `{key}` stands for in another value: a path's file stem, else the value itself.
fn placeholder(v: &Value) -> String {
    let one = |s: &str| {
        let p = Path::new(s);
        let looks_path = s.contains('/')
            || p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                super::IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()) || e == "gif"
            });
        if looks_path {
            p.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            s.to_string()
        }
    };
    match v {
        Value::String(s) => one(s),
        Value::Array(a) => a.iter().map(placeholder).collect::<Vec<_>>().join("+"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn substitute(s: &str, obj: &Map<String, Value>) -> String {
    let mut out = s.to_string();
    for (k, v) in obj {
        for key in [k.clone(), k.replace('_', "-"), k.replace('-', "_")] {
            let pat = format!("{{{key}}}");
            if out.contains(&pat) {
                out = out.replace(&pat, &placeholder(v));
            }
        }
    }
    out
}

fn make_job(line: usize, obj: Map<String, Value>, base: &Path) -> Result<Job, String> {
    let command = match obj.get("command") {
        Some(Value::String(c)) if COMMANDS.contains(&c.as_str()) => c.clone(),
        Some(c) => {
            return Err(format!(
                "\"command\": {c} is not one of {}",
                COMMANDS.join(", ")
            ))
        }
        None => return Err("no \"command\"".into()),
    };
    let mut norm = BTreeMap::new();
    norm.insert("command".to_string(), Value::String(command.clone()));
    for (k, v) in &obj {
        if k == "command" {
            continue;
        }
        let key = k.replace('_', "-");
        if matches!(key.as_str(), "weights" | "quiet" | "help" | "version") {
            return Err(format!(
                "{key:?} is a flag of the batch itself, not of a job"
            ));
        }
        let v = match v {
            Value::String(s) => Value::String(substitute(s, &obj)),
            other => other.clone(),
        };
        let Some(v) = scalar(&v).map_err(|e| format!("{key:?}: {e}"))? else {
            continue;
        };
        let v = match v {
            Value::String(s) if is_path_value(&key, &s) => {
                Value::String(s.split(',').map(clean_path).collect::<Vec<_>>().join(","))
            }
            other => other,
        };
        norm.insert(key, v);
    }
    let canonical = serde_json::to_string(&norm).map_err(|e| e.to_string())?;
    let hash = format!("{:x}", Sha256::digest(canonical.as_bytes()));
    // The argv, with relative paths taken from the manifest's folder.
    let resolve = |s: &str| -> String {
        s.split(',')
            .map(|p| {
                let path = Path::new(p);
                if path.is_absolute() {
                    p.to_string()
                } else {
                    base.join(path).to_string_lossy().into_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut argv = vec![command.clone()];
    let mut output = None;
    for (k, v) in &norm {
        if k == "command" {
            continue;
        }
        match v {
            Value::Bool(true) => argv.push(format!("--{k}")),
            Value::String(s) => {
                let s = if is_path_value(k, s) {
                    resolve(s)
                } else {
                    s.clone()
                };
                if k == "output" {
                    output = Some(PathBuf::from(&s));
                }
                if command == "metrics" && k == "image" {
                    argv.push(s);
                } else {
                    argv.push(format!("--{k}"));
                    argv.push(s);
                }
            }
            _ => {}
        }
    }
    Ok(Job {
        line,
        command,
        norm,
        hash,
        output,
        argv,
    })
}

fn expand_cmd(manifest: &Path, shards: Option<u64>) -> Result<(), CliError> {
    let jobs = read_manifest(manifest)?;
    let mut stdout = std::io::stdout().lock();
    for j in &jobs {
        let mut o: Map<String, Value> = j.norm.clone().into_iter().collect();
        o.insert("_hash".into(), Value::String(j.hash[..16].to_string()));
        if let Some(n) = shards.filter(|n| *n > 0) {
            o.insert("_shard".into(), json!(j.shard_of(n)));
        }
        writeln!(stdout, "{}", Value::Object(o)).map_err(failure)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shards

/// `I/N`, or `auto`: SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN) of SLURM_ARRAY_TASK_COUNT,
/// else JOB_COMPLETION_INDEX (Kubernetes Indexed Job) of MRFSYNTH_SHARDS.
fn parse_shard(s: &str) -> Result<(u64, u64), CliError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let num = |k: &str, v: String| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| CliError::usage(format!("--shard auto: {k}={v} is not a number")))
    };
    let (i, n) = if s == "auto" {
        if let (Some(id), Some(count)) = (env("SLURM_ARRAY_TASK_ID"), env("SLURM_ARRAY_TASK_COUNT"))
        {
            let min = match env("SLURM_ARRAY_TASK_MIN") {
                Some(m) => num("SLURM_ARRAY_TASK_MIN", m)?,
                None => 0,
            };
            let id = num("SLURM_ARRAY_TASK_ID", id)?;
            (
                id.saturating_sub(min),
                num("SLURM_ARRAY_TASK_COUNT", count)?,
            )
        } else if let Some(idx) = env("JOB_COMPLETION_INDEX") {
            let count = env("MRFSYNTH_SHARDS").ok_or_else(|| {
                CliError::usage(
                    "--shard auto: JOB_COMPLETION_INDEX is set but MRFSYNTH_SHARDS (the Job's completions) is not",
                )
            })?;
            (
                num("JOB_COMPLETION_INDEX", idx)?,
                num("MRFSYNTH_SHARDS", count)?,
            )
        } else {
            return Err(CliError::usage(
                "--shard auto: set SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (Slurm array), or JOB_COMPLETION_INDEX and MRFSYNTH_SHARDS (Kubernetes Indexed Job)",
            ));
        }
    } else {
        let bad = || CliError::usage(format!("--shard {s}: expected I/N (0 <= I < N) or auto"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        )
    };
    if n == 0 || i >= n {
        return Err(CliError::usage(format!(
            "--shard: index {i} is not below the count {n}"
        )));
    }
    Ok((i, n))
}

// ---------------------------------------------------------------------------------------------
// Locks

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A lock on one output: `OUTPUT.lock`, created with `create_new` and holding
/// `{"pid", "host", "started"}`. Its holder touches it at least every 30 s. Another process
/// takes it over as stale when the holder is on the same host and its pid no longer runs (a
/// killed shard: the rerun goes on at once), or when it has not been touched for
/// `--stale-lock` seconds (a holder on another machine that died). Otherwise the job is left to
/// the holder and recorded as `busy`. Takeover is best effort: two processes taking over the
/// same stale lock at the same instant may both run the job, which costs time, never a file
/// (outputs are written atomically).
struct Lock {
    path: PathBuf,
    held: Arc<Mutex<HashSet<PathBuf>>>,
}

impl Lock {
    fn path_for(output: &Path) -> PathBuf {
        let mut s = output.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    fn try_take(
        output: &Path,
        held: &Arc<Mutex<HashSet<PathBuf>>>,
        stale_after: Duration,
        host: &str,
    ) -> std::io::Result<Option<Lock>> {
        let path = Self::path_for(output);
        for attempt in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let body =
                        json!({ "pid": std::process::id(), "host": host, "started": now_secs() });
                    f.write_all(body.to_string().as_bytes())?;
                    held.lock().unwrap().insert(path.clone());
                    return Ok(Some(Lock {
                        path,
                        held: held.clone(),
                    }));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt == 0 => {
                    if !Self::is_stale(&path, held, stale_after, host) {
                        return Ok(None);
                    }
                    // Move it aside first, so that only one taker removes it.
                    let aside = path.with_extension(format!("lock.stale-{}", std::process::id()));
                    if std::fs::rename(&path, &aside).is_ok() {
                        let _ = std::fs::remove_file(&aside);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn is_stale(
        path: &Path,
        held: &Arc<Mutex<HashSet<PathBuf>>>,
        stale_after: Duration,
        host: &str,
    ) -> bool {
        if held.lock().unwrap().contains(path) {
            return false;
        }
        let info: Option<Value> = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(info) = info {
            let same_host = info["host"].as_str() == Some(host);
            if same_host && Path::new("/proc/self").exists() {
                if let Some(pid) = info["pid"].as_u64() {
                    // Our own pid from an earlier life (a restarted container), or a dead process.
                    if pid == std::process::id() as u64
                        || !Path::new(&format!("/proc/{pid}")).exists()
                    {
                        return true;
                    }
                }
            }
        }
        let age = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        age.is_some_and(|a| a > stale_after)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.held.lock().unwrap().remove(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// What the jobs of one process share: the weights (loaded once) and one network per device,
/// pooling and precision.
struct Ctx<'a> {
    weights_path: Option<&'a Path>,
    quiet: bool,
    job_quiet: bool,
    score: bool,
    interrupted: Arc<AtomicBool>,
    weights: Mutex<Option<Arc<VggWeights>>>,
    nets: Mutex<HashMap<String, Arc<Vgg19>>>,
    say_lock: Mutex<()>,
}

impl Ctx<'_> {
    fn say(&self, msg: &str) {
        if !self.quiet {
            let _g = self.say_lock.lock();
            eprintln!("{msg}");
        }
    }

    fn weights(&self) -> Result<Arc<VggWeights>, CliError> {
        let mut w = self.weights.lock().unwrap();
        if let Some(w) = &*w {
            return Ok(w.clone());
        }
        if let WeightsSource::Cache(p) = weights::resolve(self.weights_path) {
            if !p.exists() {
                self.say("fetching VGG19 weights into the cache (first run only)...");
            }
        }
        let loaded = Arc::new(weights::load(self.weights_path, true)?);
        *w = Some(loaded.clone());
        Ok(loaded)
    }

    /// The network for a device, pooling and precision, built once per process.
    fn network(
        &self,
        spec: mrfsynth::device::DeviceSpec,
        pool: Pooling,
        precision: Precision,
        progress: Option<&Progress>,
    ) -> Result<(Arc<VggWeights>, Arc<Vgg19>), CliError> {
        let w = self.weights()?;
        let key = format!("{spec:?}/{pool:?}/{}", precision.name());
        let mut nets = self.nets.lock().unwrap();
        if let Some(n) = nets.get(&key) {
            return Ok((w, n.clone()));
        }
        let dev = device(spec)?;
        let vgg = Arc::new(super::network_on(&w, pool, &dev, precision, progress)?);
        nets.insert(key, vgg.clone());
        Ok((w, vgg))
    }

    fn synth_network(
        &self,
        a: &SynthArgs,
        progress: &Progress,
    ) -> Result<(Arc<VggWeights>, Arc<Vgg19>), CliError> {
        let precision: Precision = a
            .precision
            .parse()
            .map_err(|e: String| CliError::usage(format!("--precision: {e}")))?;
        self.network(a.device, pooling(a.pool), precision, Some(progress))
    }

    fn metrics_network(&self) -> Result<Arc<Vgg19>, CliError> {
        Ok(self
            .network(
                mrfsynth::device::DeviceSpec::Cpu,
                Pooling::Max,
                Precision::F32,
                None,
            )?
            .1)
    }
}

/// How a job that ran ended well: numbers for its record.
type Numbers = BTreeMap<String, f64>;

fn run_batch(
    a: &BatchArgs,
    manifest: &Path,
    weights_path: Option<&Path>,
    quiet: bool,
    interrupted: Arc<AtomicBool>,
) -> Result<(), CliError> {
    let (shard, shards) = parse_shard(&a.shard)?;
    if a.jobs == 0 {
        return Err(CliError::usage("--jobs must be at least 1"));
    }
    let all = read_manifest(manifest)?;
    let total = all.len();
    let jobs: Vec<Job> = all
        .into_iter()
        .filter(|j| j.shard_of(shards) == shard)
        .collect();
    let out_dir = a.out_dir.clone().unwrap_or_else(|| manifest_dir(manifest));
    if a.dry_run {
        for j in &jobs {
            let state = if done_by_hash(j, &out_dir) {
                "done"
            } else {
                "todo"
            };
            println!("{}\t{state}\t{}", &j.hash[..16], j.argv.join(" "));
        }
        println!("# shard {shard}/{shards}: {} of {total} jobs", jobs.len());
        return Ok(());
    }
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| CliError::input(format!("--out-dir {}: {e}", out_dir.display())))?;
    let results_path = out_dir.join(format!("results-{shard}of{shards}.jsonl"));
    let results = Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&results_path)
            .map_err(|e| failure(format!("{}: {e}", results_path.display())))?,
    );
    let ctx = Ctx {
        weights_path,
        quiet,
        job_quiet: quiet || a.jobs > 1,
        score: a.metrics,
        interrupted: interrupted.clone(),
        weights: Mutex::new(None),
        nets: Mutex::new(HashMap::new()),
        say_lock: Mutex::new(()),
    };
    ctx.say(&format!(
        "batch: shard {shard}/{shards}: {} of {total} jobs, {} at a time; records in {}",
        jobs.len(),
        a.jobs.min(jobs.len().max(1)),
        results_path.display()
    ));
    let host = hostname();
    let held: Arc<Mutex<HashSet<PathBuf>>> = Arc::new(Mutex::new(HashSet::new()));
    let stale_after = Duration::from_secs(a.stale_lock.max(1));
    let beat = HEARTBEAT
        .min(stale_after / 3)
        .max(Duration::from_millis(200));
    let next = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let failed = AtomicUsize::new(0);
    let counts = Mutex::new(BTreeMap::<String, usize>::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        // Refresh held locks so that others see them alive.
        let held_beat = held.clone();
        let finished_ref = &finished;
        s.spawn(move || {
            let mut last = Instant::now();
            while !finished_ref.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(100));
                if last.elapsed() >= beat {
                    last = Instant::now();
                    let now = SystemTime::now();
                    for p in held_beat.lock().unwrap().iter() {
                        if let Ok(f) = std::fs::OpenOptions::new().append(true).open(p) {
                            let _ = f.set_modified(now);
                        }
                    }
                }
            }
        });
        let workers: Vec<_> = (0..a.jobs.min(jobs.len()).max(1))
            .map(|_| {
                s.spawn(|| loop {
                    if interrupted.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    let t0 = Instant::now();
                    let (status, code, error, numbers) =
                        match run_one(job, &ctx, &out_dir, &held, stale_after, &host) {
                            Ok((status, numbers)) => (status, 0, None, numbers),
                            Err(e) if e.code == exit::INTERRUPTED => {
                                ("interrupted", e.code, Some(e.message), Numbers::new())
                            }
                            Err(e) => ("failed", e.code, Some(e.message), Numbers::new()),
                        };
                    if status == "failed" {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    *counts
                        .lock()
                        .unwrap()
                        .entry(status.to_string())
                        .or_default() += 1;
                    let seconds = t0.elapsed().as_secs_f64();
                    let record = json!({
                        "hash": job.hash,
                        "line": job.line,
                        "command": job.command,
                        "job": job.norm,
                        "output": job.output,
                        "status": status,
                        "exit_code": code,
                        "seconds": (seconds * 1000.0).round() / 1000.0,
                        "error": error,
                        "metrics": numbers,
                        "shard": format!("{shard}/{shards}"),
                        "host": host,
                        "pid": std::process::id(),
                        "finished": now_secs(),
                    });
                    {
                        let mut f = results.lock().unwrap();
                        let _ = writeln!(f, "{record}").and_then(|_| f.flush());
                    }
                    ctx.say(&format!(
                        "[{}/{}] {status} {} {} ({seconds:.1}s){}",
                        i + 1,
                        jobs.len(),
                        job.command,
                        job.output
                            .as_ref()
                            .map(|o| o.display().to_string())
                            .unwrap_or_default(),
                        error.map(|e| format!(": {e}")).unwrap_or_default()
                    ));
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        finished.store(true, Ordering::SeqCst);
    });
    let counts = counts.into_inner().unwrap();
    let hours = started.elapsed().as_secs_f64() / 3600.0;
    let ran = counts.get("ok").copied().unwrap_or(0);
    ctx.say(&format!(
        "batch: {} in {:.1}s{}",
        counts
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64(),
        if ran > 0 {
            format!(" ({:.0} jobs/hour)", ran as f64 / hours)
        } else {
            String::new()
        }
    ));
    if interrupted.load(Ordering::SeqCst) {
        return Err(CliError::new(exit::INTERRUPTED, "interrupted"));
    }
    let failed = failed.load(Ordering::SeqCst);
    if failed > 0 {
        return Err(CliError::new(
            exit::FAILURE,
            format!(
                "{failed} of {} jobs failed (see {})",
                jobs.len(),
                results_path.display()
            ),
        ));
    }
    Ok(())
}

/// Where a job records that it is done: the sidecar (texture, transfer), `OUTPUT/batch.json`
/// (compare), `DIR/metrics/HASH.json` (metrics).
fn done_record(job: &Job, out_dir: &Path) -> Option<PathBuf> {
    match (job.command.as_str(), &job.output) {
        ("metrics", _) => Some(
            out_dir
                .join("metrics")
                .join(format!("{}.json", &job.hash[..16])),
        ),
        ("compare", Some(o)) => Some(o.join("batch.json")),
        (_, Some(o)) => Some(sidecar_path(o)),
        _ => None,
    }
}

fn read_json(path: &Path) -> Option<Value> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// The job's record says it is done with this job hash (weights not checked).
fn done_by_hash(job: &Job, out_dir: &Path) -> bool {
    let Some(rec) = done_record(job, out_dir) else {
        return false;
    };
    let output_there = job.command == "metrics" || job.output.as_ref().is_some_and(|o| o.exists());
    output_there && read_json(&rec).is_some_and(|v| v["batch"]["job_hash"] == job.hash.as_str())
}

fn is_done(job: &Job, out_dir: &Path, sha: &str) -> Option<Value> {
    if !done_by_hash(job, out_dir) {
        return None;
    }
    let v = read_json(&done_record(job, out_dir)?)?;
    let recorded = v["batch"]["weights_sha256"]
        .as_str()
        .or(v["weights"]["sha256"].as_str());
    (recorded == Some(sha)).then_some(v)
}

/// Records, in the done record, the job hash and weights checksum (atomically).
fn mark_done(job: &Job, out_dir: &Path, sha: &str, extra: Option<Value>) -> Result<(), CliError> {
    let Some(path) = done_record(job, out_dir) else {
        return Ok(());
    };
    let mut v = match job.command.as_str() {
        "texture" | "transfer" => read_json(&path).ok_or_else(|| {
            failure(format!(
                "{}: the sidecar is missing or unreadable",
                path.display()
            ))
        })?,
        _ => json!({}),
    };
    v["batch"] = json!({ "job_hash": job.hash, "weights_sha256": sha, "job": job.norm });
    if let Some(e) = extra {
        v["metrics"] = e;
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| failure(format!("{}: {e}", d.display())))?;
    }
    let text = serde_json::to_string_pretty(&v).map_err(failure)?;
    mrfsynth::atomic::write(&path, text.as_bytes())
        .map_err(|e| failure(format!("writing {}: {e}", path.display())))
}

/// Numbers a sidecar holds: the run's seconds and copy score.
fn sidecar_numbers(v: &Value) -> Numbers {
    let mut n = Numbers::new();
    if let Some(s) = v["seconds"].as_f64() {
        n.insert("synth_seconds".into(), s);
    }
    if let Some(c) = v["copy_score"].as_f64() {
        n.insert("copy_score".into(), c);
    }
    if let Some(m) = v["metrics"].as_object() {
        for (k, x) in m {
            if let Some(x) = x.as_f64() {
                n.insert(k.clone(), x);
            }
        }
    }
    n
}

fn run_one(
    job: &Job,
    ctx: &Ctx,
    out_dir: &Path,
    held: &Arc<Mutex<HashSet<PathBuf>>>,
    stale_after: Duration,
    host: &str,
) -> Result<(&'static str, Numbers), CliError> {
    let argv = std::iter::once("mrfsynth".to_string()).chain(job.argv.iter().cloned());
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        let line = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        CliError::usage(line.trim_start_matches("error: ").to_string())
    })?;
    let sha = ctx.weights()?.sha256.clone();
    if let Some(v) = is_done(job, out_dir, &sha) {
        return Ok(("skipped", sidecar_numbers(&v)));
    }
    let lock_target = match &job.output {
        Some(o) => o.clone(),
        None => done_record(job, out_dir).expect("metrics jobs have a record"),
    };
    // Output folders are made as needed (a grid writes into folders the manifest names).
    if let Some(d) = lock_target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).map_err(|e| CliError::input(format!("{}: {e}", d.display())))?;
    }
    let lock = match Lock::try_take(&lock_target, held, stale_after, host) {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(("busy", Numbers::new())),
        Err(e) => {
            return Err(CliError::input(format!(
                "locking {}: {e}",
                lock_target.display()
            )))
        }
    };
    // Someone may have finished it between our check and our lock.
    if let Some(v) = is_done(job, out_dir, &sha) {
        drop(lock);
        return Ok(("skipped", sidecar_numbers(&v)));
    }
    let numbers = match cli.command {
        Command::Texture(a) => {
            let style0 = a.style.first().cloned();
            let out = a.out.output.clone();
            run_texture(a, ctx)?;
            let extra = score(ctx, &out, style0.as_deref(), None)?;
            mark_done(job, out_dir, &sha, extra)?;
            read_json(&sidecar_path(&out))
                .map(|v| sidecar_numbers(&v))
                .unwrap_or_default()
        }
        Command::Transfer(a) => {
            let style0 = a.style.first().cloned();
            let content = a.content.clone();
            let out = a.out.output.clone();
            run_transfer(a, ctx)?;
            let extra = score(ctx, &out, style0.as_deref(), Some(&content))?;
            mark_done(job, out_dir, &sha, extra)?;
            read_json(&sidecar_path(&out))
                .map(|v| sidecar_numbers(&v))
                .unwrap_or_default()
        }
        Command::Compare(a) => {
            // Compare loads its own network (once per job).
            super::compare::compare(a, ctx.weights_path, ctx.job_quiet, ctx.interrupted.clone())?;
            mark_done(job, out_dir, &sha, None)?;
            Numbers::new()
        }
        Command::Metrics(a) => {
            let m = run_metrics(&a, ctx)?;
            mark_done(job, out_dir, &sha, Some(json!(m)))?;
            m
        }
        _ => return Err(CliError::usage("not a batch command")),
    };
    drop(lock);
    Ok(("ok", numbers))
}

/// With --metrics: the saved output scored against the first style (and the content).
fn score(
    ctx: &Ctx,
    output: &Path,
    style: Option<&Path>,
    content: Option<&Path>,
) -> Result<Option<Value>, CliError> {
    let (true, Some(style)) = (ctx.score, style) else {
        return Ok(None);
    };
    let image = load_image(output, "output")?;
    let style = load_image(style, "--style")?;
    let content = content.map(|c| load_image(c, "--content")).transpose()?;
    let vgg = ctx.metrics_network()?;
    let m = metrics::compute(
        &vgg,
        &image,
        &style,
        content.as_ref(),
        &MetricsOptions::default(),
    )?;
    let v = serde_json::to_value(&m).map_err(failure)?;
    Ok(Some(json!(report::flatten_metrics(&v))))
}

fn run_metrics(a: &MetricsArgs, ctx: &Ctx) -> Result<Numbers, CliError> {
    let vgg = ctx.metrics_network()?;
    let m = super::compare::metrics_of(a, &vgg)?;
    let v = serde_json::to_value(&m).map_err(failure)?;
    Ok(report::flatten_metrics(&v))
}

/// `texture` with the process's shared network.
fn run_texture(a: TextureArgs, ctx: &Ctx) -> Result<(), CliError> {
    super::texture_with(a, ctx.job_quiet, ctx.interrupted.clone(), &|s, p| {
        ctx.synth_network(s, p)
    })
}

/// `transfer` with the process's shared network.
fn run_transfer(a: TransferArgs, ctx: &Ctx) -> Result<(), CliError> {
    super::transfer_with(a, ctx.job_quiet, ctx.interrupted.clone(), &|s, p| {
        ctx.synth_network(s, p)
    })
}

// ---------------------------------------------------------------------------------------------
// Summaries

/// Merges `DIR/results-*.jsonl` (the last record of each job that ran or was found done) into
/// `DIR/summary.json` and `DIR/summary.html`: per group (the job's keys less `output` and the
/// `over` keys), the job counts and the mean and spread of every number recorded.
fn summarize(dir: &Path, over: &[String]) -> Result<(), CliError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| CliError::input(format!("{}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("results-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError::input(format!(
            "{}: no results-*.jsonl in it",
            dir.display()
        )));
    }
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CliError::input(format!("{}: {e}", f.display())))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(r) = serde_json::from_str::<Value>(line) else {
                continue; // a line cut short by a kill
            };
            let Some(h) = r["hash"].as_str() else {
                continue;
            };
            if r["status"] == "busy" {
                continue;
            }
            let newer = last
                .get(h)
                .is_none_or(|old| old["finished"].as_f64() <= r["finished"].as_f64());
            if newer {
                last.insert(h.to_string(), r);
            }
        }
    }
    let over: Vec<String> = over.iter().map(|k| k.replace('_', "-")).collect();
    let mut groups: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in last.values() {
        let key = r["job"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| *k != "output" && !over.contains(k))
                    .map(|(k, v)| {
                        format!(
                            "{k}={}",
                            v.as_str()
                                .map(String::from)
                                .unwrap_or_else(|| v.to_string())
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        groups.entry(key).or_default().push(r);
    }
    let mut names = std::collections::BTreeSet::new();
    for r in last.values() {
        if let Some(m) = r["metrics"].as_object() {
            names.extend(m.keys().cloned());
        }
    }
    let mut out_groups = Vec::new();
    let mut body = String::new();
    body.push_str(&format!(
        "<p class=\"note\">{} jobs from {} result files; groups vary over: {}</p>",
        last.len(),
        files.len(),
        html::escape(&over.join(", "))
    ));
    body.push_str("<table><tr><th>group</th><th>jobs</th><th>ok</th><th>failed</th>");
    for n in &names {
        body.push_str(&format!("<th>{}</th>", html::escape(n)));
    }
    body.push_str("</tr>");
    for (key, rs) in &groups {
        let count = |s: &str| rs.iter().filter(|r| r["status"] == s).count();
        let (ok, failed) = (count("ok") + count("skipped"), count("failed"));
        let mut stats = Map::new();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{ok}</td><td>{failed}</td>",
            html::escape(key),
            rs.len()
        ));
        for n in &names {
            let vals: Vec<f64> = rs
                .iter()
                .filter_map(|r| r["metrics"][n.as_str()].as_f64())
                .collect();
            if vals.is_empty() {
                body.push_str("<td>-</td>");
                continue;
            }
            let (mean, std) = report::mean_std(&vals);
            stats.insert(
                n.clone(),
                json!({ "mean": mean, "std": std, "n": vals.len() }),
            );
            body.push_str(&format!(
                "<td>{} &plusmn; {}</td>",
                html::fmt_num(mean),
                html::fmt_num(std)
            ));
        }
        body.push_str("</tr>");
        out_groups.push(
            json!({ "group": key, "jobs": rs.len(), "ok": ok, "failed": failed, "metrics": stats }),
        );
    }
    body.push_str("</table>");
    let failures: Vec<&Value> = last.values().filter(|r| r["status"] == "failed").collect();
    if !failures.is_empty() {
        body.push_str(
            "<h2>Failed jobs</h2><table><tr><th>line</th><th>output</th><th>error</th></tr>",
        );
        for r in &failures {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                r["line"],
                html::escape(r["output"].as_str().unwrap_or("")),
                html::escape(r["error"].as_str().unwrap_or(""))
            ));
        }
        body.push_str("</table>");
    }
    let summary = json!({
        "files": files,
        "over": over,
        "groups": out_groups,
        "jobs": last.values().collect::<Vec<_>>(),
    });
    let json_path = dir.join("summary.json");
    let html_path = dir.join("summary.html");
    let text = serde_json::to_string_pretty(&summary).map_err(failure)?;
    mrfsynth::atomic::write(&json_path, text.as_bytes())
        .map_err(|e| failure(format!("writing {}: {e}", json_path.display())))?;
    let page = html::page("mrfsynth: batch summary", &body);
    mrfsynth::atomic::write(&html_path, page.as_bytes())
        .map_err(|e| failure(format!("writing {}: {e}", html_path.display())))?;
    println!(
        "{} jobs in {} groups ({} failed): wrote {} and {}",
        last.len(),
        groups.len(),
        failures.len(),
        json_path.display(),
        html_path.display()
    );
    Ok(())
}
