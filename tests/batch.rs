//! `mrfsynth batch`: shards that agree without talking, reruns that redo nothing, a killed shard
//! that resumes, one bad job that fails alone, and the summary.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A manifest of 8 small textures (one grid line over 8 seeds) in `dir`, writing into `dir/out`.
fn manifest(dir: &Path, iterations: usize, size: u32) -> PathBuf {
    let style = common::fetched_image_at("ihc", 96, dir);
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let line = serde_json::json!({
        "command": "texture",
        "style": style.file_name().unwrap().to_str().unwrap(),
        "size": size,
        "levels": 1,
        "iterations": iterations,
        "output": "out/{style}_s{seed}.png",
        "grid": { "seed": [0, 1, 2, 3, 4, 5, 6, 7] },
    });
    let path = dir.join("jobs.jsonl");
    std::fs::write(&path, format!("# eight seeds\n{line}\n")).unwrap();
    path
}

fn batch(manifest: &Path, extra: &[&str]) -> Command {
    let mut c = common::mrfsynth();
    c.arg("batch").arg(manifest).args(extra).arg("--quiet");
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Every record of every results file in `dir`.
fn records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("results-") && name.ends_with(".jsonl") {
            for l in std::fs::read_to_string(&p).unwrap().lines() {
                out.push(serde_json::from_str(l).expect("a whole JSON line"));
            }
        }
    }
    out
}

fn count(recs: &[Value], status: &str) -> usize {
    recs.iter().filter(|r| r["status"] == status).count()
}

fn files_with(dir: &Path, ext: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn shards_in_parallel_then_rerun_skips_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let m = manifest(tmp.path(), 3, 64);
    let t0 = Instant::now();
    // Shards 0, 1, 2 of 3 at once, plus shard 0 a second time by mistake: the locks keep the
    // two copies of shard 0 off each other's outputs.
    let children: Vec<_> = ["0/3", "1/3", "2/3", "0/3"]
        .iter()
        .map(|s| batch(&m, &["--shard", s]).spawn().unwrap())
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a shard failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!(
        "3 shards (+1 duplicate): {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let out = tmp.path().join("out");
    let pngs = files_with(&out, ".png");
    assert_eq!(pngs.len(), 8, "{pngs:?}");
    assert_eq!(files_with(&out, ".json").len(), 8);
    assert!(files_with(&out, ".lock").is_empty(), "locks left behind");
    let recs = records(tmp.path());
    assert_eq!(count(&recs, "failed"), 0, "{recs:?}");
    // Every job ran exactly once, whatever the duplicate shard did.
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    for r in recs.iter().filter(|r| r["status"] == "ok") {
        *ran.entry(r["hash"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(ran.len(), 8, "{recs:?}");
    assert!(ran.values().all(|&n| n == 1), "a job ran twice: {ran:?}");
    // Each shard held its share only: the union of the three shards' records is the manifest.
    for s in ["0of3", "1of3", "2of3"] {
        assert!(tmp.path().join(format!("results-{s}.jsonl")).exists());
    }
    let sidecar: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ihc_96_s0.json")).unwrap())
            .unwrap();
    assert_eq!(sidecar["batch"]["job_hash"].as_str().unwrap().len(), 64);
    assert!(sidecar["batch"]["weights_sha256"].is_string());

    // A rerun of every shard redoes nothing.
    let mtimes: Vec<_> = pngs
        .iter()
        .map(|p| std::fs::metadata(out.join(p)).unwrap().modified().unwrap())
        .collect();
    let before = recs.len();
    let t1 = Instant::now();
    for s in ["0/3", "1/3", "2/3"] {
        let o = batch(&m, &["--shard", s]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    eprintln!("rerun of 3 shards: {:.1}s", t1.elapsed().as_secs_f64());
    let after_recs = records(tmp.path());
    assert_eq!(after_recs.len(), before + 8);
    assert_eq!(
        count(&after_recs, "skipped") - count(&recs, "skipped"),
        8,
        "{after_recs:?}"
    );
    assert_eq!(count(&after_recs, "ok"), count(&recs, "ok"));
    let after: Vec<_> = pngs
        .iter()
        .map(|p| std::fs::metadata(out.join(p)).unwrap().modified().unwrap())
        .collect();
    assert_eq!(mtimes, after, "a skipped output was rewritten");

    // The summary: one group (the seeds vary within it) of 8 jobs.
    let o = common::mrfsynth()
        .args(["batch", "summarize"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("summary.json")).unwrap())
            .unwrap();
    let groups = summary["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{summary}");
    assert_eq!(groups[0]["jobs"], 8);
    assert_eq!(groups[0]["ok"], 8);
    assert_eq!(groups[0]["metrics"]["synth_seconds"]["n"], 8);
    let html = std::fs::read_to_string(tmp.path().join("summary.html")).unwrap();
    assert!(html.contains("synth_seconds") && html.contains("&plusmn;"));
}

#[test]
fn a_killed_shard_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    // Slower jobs, so that the kill lands mid-way.
    let m = manifest(tmp.path(), 12, 96);
    let results = tmp.path().join("results-0of1.jsonl");
    let mut child = batch(&m, &[]).spawn().unwrap();
    let t0 = Instant::now();
    loop {
        let done = std::fs::read_to_string(&results)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        if done >= 1 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before its first record"
        );
        assert!(t0.elapsed() < Duration::from_secs(90), "no job finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no cleanup, the running job's lock stays behind
    child.wait().unwrap();
    let first = records(tmp.path());
    let ok_before = count(&first, "ok");
    assert!(
        (1..8).contains(&ok_before),
        "expected a kill mid-way, {ok_before} jobs had finished"
    );
    let t1 = Instant::now();
    let o = batch(&m, &[]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "killed after {ok_before} jobs; the rerun finished the rest in {:.1}s",
        t1.elapsed().as_secs_f64()
    );
    let recs = records(tmp.path());
    let new = &recs[first.len()..];
    assert_eq!(
        count(new, "busy"),
        0,
        "a dead process's lock was not taken over"
    );
    assert_eq!(count(new, "skipped"), ok_before, "{new:?}");
    assert_eq!(count(new, "ok"), 8 - ok_before, "{new:?}");
    let out = tmp.path().join("out");
    assert_eq!(files_with(&out, ".png").len(), 8);
    assert!(files_with(&out, ".lock").is_empty());
}

#[test]
fn one_bad_job_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let style = common::fetched_image_at("ihc", 96, tmp.path());
    let style = style.file_name().unwrap().to_str().unwrap().to_string();
    let lines = [
        serde_json::json!({"command": "texture", "style": style, "size": 48, "levels": 1, "iterations": 2, "seed": 1, "output": "a.png"}),
        serde_json::json!({"command": "texture", "style": "no-such-style.png", "size": 48, "levels": 1, "iterations": 2, "output": "bad.png"}),
        serde_json::json!({"command": "texture", "style": style, "size": 48, "levels": 1, "iterations": 2, "seed": 2, "output": "b.png", "tileable": true}),
    ];
    let m = tmp.path().join("jobs.jsonl");
    std::fs::write(
        &m,
        lines
            .iter()
            .map(|l| l.to_string() + "\n")
            .collect::<String>(),
    )
    .unwrap();
    let out_dir = tmp.path().join("records");
    let o = batch(&m, &["--out-dir", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let recs = records(&out_dir);
    assert_eq!(recs.len(), 3);
    assert_eq!(count(&recs, "ok"), 2, "{recs:?}");
    let bad: Vec<_> = recs.iter().filter(|r| r["status"] == "failed").collect();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0]["line"], 2);
    assert_eq!(bad[0]["exit_code"], 3);
    assert!(bad[0]["error"].as_str().unwrap().contains("no-such-style"));
    assert!(tmp.path().join("a.png").exists() && tmp.path().join("b.png").exists());
    assert!(!tmp.path().join("bad.png").exists());
    assert!(!tmp.path().join("bad.png.lock").exists());
}

#[test]
fn manifests_expand_and_shard_stably() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m.jsonl");
    std::fs::write(
        &m,
        concat!(
            r#"{"command":"texture","style":"./s/a.png","output":"o/{style}_{seed}_{prior}.png","grid":{"seed":[0,1,2],"prior":["mrf","gram"]}}"#,
            "\n",
            r#"{"command":"texture","style":"s/a.png","output":"o/x.png","seed":"0","tileable":true,"quiet_not_a_flag":null}"#,
            "\n"
        ),
    )
    .unwrap();
    let expand = |shards: &str| {
        let o = Command::new(common::bin())
            .args(["batch", "expand"])
            .arg(&m)
            .args(["--shards", shards])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let jobs = expand("3");
    assert_eq!(jobs.len(), 7);
    // Grid keys in sorted order, the last varying fastest.
    assert_eq!(jobs[0]["output"], "o/a_0_mrf.png");
    assert_eq!(jobs[1]["output"], "o/a_1_mrf.png");
    assert_eq!(jobs[3]["output"], "o/a_0_gram.png");
    assert_eq!(
        jobs[0]["style"], "s/a.png",
        "paths are cleaned before hashing"
    );
    assert_eq!(jobs[6]["tileable"], true);
    // The same manifest gives the same hashes and shards, every time.
    assert_eq!(jobs, expand("3"));
    // Two jobs writing one file are refused.
    std::fs::write(
        &m,
        r#"{"command":"texture","output":"same.png","grid":{"seed":[0,1]}}"#,
    )
    .unwrap();
    let o = Command::new(common::bin())
        .args(["batch", "expand"])
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("two jobs write"));
}

/// What can be checked here of the deployment files (no Docker daemon, cluster or Slurm): the
/// shapes they must keep for `--shard auto` to work.
#[test]
fn deployment_files_agree_with_the_command() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let read = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
    for f in ["Dockerfile", "Dockerfile.cuda"] {
        let d = read(f);
        assert!(
            d.contains(" AS build") && d.contains("COPY --from=build"),
            "{f}: multi-stage"
        );
        assert!(d.contains("ENTRYPOINT [\"mrfsynth\"]"), "{f}");
        assert!(d.contains("weights fetch"), "{f}: weights at build time");
    }
    assert!(read("Dockerfile.cuda").contains("FROM nvidia/cuda:"));
    assert!(read("Dockerfile.cuda").contains("--features cuda"));
    let s = read("slurm/batch.sbatch");
    assert!(s.starts_with("#!/bin/bash") && s.contains("#SBATCH --array="));
    assert!(s.contains("batch \"$MANIFEST\" --shard auto"));
    let ok = Command::new("bash")
        .arg("-n")
        .arg(root.join("slurm/batch.sbatch"))
        .status()
        .map(|s| s.success())
        .unwrap_or(true); // no bash: nothing to check
    assert!(ok, "batch.sbatch: bash -n failed");
    // The Indexed Job: completions = parallelism = MRFSYNTH_SHARDS, the shard read from the index.
    let k = read("k8s/batch-job.yaml");
    let field = |name: &str| -> String {
        k.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("batch-job.yaml: no {name}"))
            .trim()
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(field("completionMode"), "Indexed");
    assert_eq!(field("kind"), "PersistentVolumeClaim"); // the first document
    assert!(k.contains("kind: Job"));
    let n = field("completions");
    assert_eq!(field("parallelism"), n);
    let shards = k
        .split("name: MRFSYNTH_SHARDS")
        .nth(1)
        .and_then(|t| t.lines().nth(1))
        .and_then(|l| l.trim().strip_prefix("value:"))
        .map(|v| v.trim().trim_matches('"').to_string());
    assert_eq!(
        shards.as_deref(),
        Some(n.as_str()),
        "MRFSYNTH_SHARDS != completions"
    );
    assert!(k.contains("- auto") && k.contains("ReadWriteMany"));
    assert!(!k.contains('\t'), "tabs in YAML");
}
