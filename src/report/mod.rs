//! Reports: side-by-side panels, loss plots, metrics tables and an offline index.html.

pub mod font;
pub mod html;
pub mod panel;
pub mod plot;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::Context;

use crate::image_io::{save_rgb, RgbImageF32};

/// One synthesis run as the report shows it.
pub struct RunSummary {
    pub label: String,
    pub image: RgbImageF32,
    /// Metrics as JSON (numbers and maps of numbers are tabulated).
    pub metrics: serde_json::Value,
    pub losses: Vec<Vec<f32>>,
    pub seconds: f64,
    /// The run's sidecar.
    pub sidecar: serde_json::Value,
}

/// One run of a batch: its label and flattened metrics.
pub type RunMetrics = (String, BTreeMap<String, f64>);
/// One style image of a batch: its name and its runs.
pub type BatchRow = (String, Vec<RunMetrics>);

/// Flattens a metrics JSON object into rows `name` or `name/key` with a number each.
pub fn flatten_metrics(v: &serde_json::Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            match val {
                serde_json::Value::Number(n) => {
                    out.insert(k.clone(), n.as_f64().unwrap_or(f64::NAN));
                }
                serde_json::Value::Object(m) => {
                    for (k2, v2) in m {
                        if let Some(x) = v2.as_f64() {
                            out.insert(format!("{k}/{k2}"), x);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

fn write_file(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    crate::atomic::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Writes one comparison into `dir`: each run's image and sidecar, the panel, the loss plot,
/// metrics.json and index.html.
pub fn write_comparison(
    dir: &Path,
    title: &str,
    inputs: &[(&str, &RgbImageF32)],
    runs: &[RunSummary],
    help: &[(&str, &str)],
    params: &serde_json::Value,
) -> crate::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut figs = String::new();
    for run in runs {
        let file = format!("{}.png", run.label.to_lowercase());
        save_rgb(&run.image, &dir.join(&file)).with_context(|| format!("writing {file}"))?;
        let side = serde_json::to_string_pretty(&run.sidecar)?;
        write_file(
            &dir.join(format!("{}.json", run.label.to_lowercase())),
            side.as_bytes(),
        )?;
        figs.push_str(&format!(
            r#"<figure><img src="{file}"><figcaption>{} ({:.1} s)</figcaption></figure>"#,
            html::escape(&run.label),
            run.seconds
        ));
    }
    let mut items: Vec<(&str, &RgbImageF32)> = inputs.to_vec();
    items.extend(runs.iter().map(|r| (r.label.as_str(), &r.image)));
    panel::panel(&items, 256)
        .save(dir.join("panel.png"))
        .map_err(std::io::Error::other)
        .with_context(|| format!("writing {}", dir.join("panel.png").display()))?;
    let series: Vec<(&str, Vec<Vec<f32>>)> = runs
        .iter()
        .map(|r| (r.label.as_str(), r.losses.clone()))
        .collect();
    let svg = plot::loss_svg(&series, 640, 320);
    write_file(&dir.join("loss.svg"), svg.as_bytes())?;

    let flat: Vec<BTreeMap<String, f64>> =
        runs.iter().map(|r| flatten_metrics(&r.metrics)).collect();
    let names: std::collections::BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    let rows: Vec<(String, Vec<Option<f64>>)> = names
        .into_iter()
        .map(|n| (n.clone(), flat.iter().map(|m| m.get(n).copied()).collect()))
        .collect();
    let metrics_json: serde_json::Map<String, serde_json::Value> = runs
        .iter()
        .map(|r| (r.label.clone(), r.metrics.clone()))
        .collect();
    write_file(
        &dir.join("metrics.json"),
        serde_json::to_string_pretty(&metrics_json)?.as_bytes(),
    )?;

    let columns: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    let body = format!(
        r#"<p><img src="panel.png" alt="panel"></p>
<h2>Outputs</h2><div class="figs">{figs}</div>
<h2>Metrics</h2>{table}
<h2>Loss per level</h2>{svg}
<h2>Parameters</h2><pre>{params}</pre>"#,
        table = html::metrics_table(&columns, &rows, help),
        params = html::escape(&serde_json::to_string_pretty(params)?),
    );
    write_file(&dir.join("index.html"), html::page(title, &body).as_bytes())
}

/// Mean and standard deviation (population) of each metric over a batch.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// The batch page: one row per style image and run, then the mean and spread of each metric.
pub fn write_batch(
    dir: &Path,
    title: &str,
    rows: &[BatchRow],
    help: &[(&str, &str)],
) -> crate::Result<()> {
    let metric_names: std::collections::BTreeSet<String> = rows
        .iter()
        .flat_map(|(_, runs)| runs.iter().flat_map(|(_, m)| m.keys().cloned()))
        .collect();
    let labels: Vec<String> = rows
        .first()
        .map(|(_, runs)| runs.iter().map(|(l, _)| l.clone()).collect())
        .unwrap_or_default();
    let mut s = String::from("<h2>Per image</h2><table><tr><th>image</th><th>run</th>");
    for m in &metric_names {
        s.push_str(&format!("<th>{}</th>", html::escape(m)));
    }
    s.push_str("</tr>");
    for (name, runs) in rows {
        for (label, m) in runs {
            s.push_str(&format!(
                r#"<tr><td><a href="{n}/index.html">{n}</a></td><td>{l}</td>"#,
                n = html::escape(name),
                l = html::escape(label)
            ));
            for k in &metric_names {
                s.push_str(&format!(
                    "<td>{}</td>",
                    m.get(k).map(|v| html::fmt_num(*v)).unwrap_or_default()
                ));
            }
            s.push_str("</tr>");
        }
    }
    s.push_str("</table><h2>Mean &plusmn; standard deviation</h2>");
    let mut summary = serde_json::Map::new();
    let mut table_rows = Vec::new();
    for k in &metric_names {
        let mut cells = Vec::new();
        for label in &labels {
            let vals: Vec<f64> = rows
                .iter()
                .filter_map(|(_, runs)| {
                    runs.iter()
                        .find(|(l, _)| l == label)
                        .and_then(|(_, m)| m.get(k).copied())
                })
                .collect();
            let (mean, std) = mean_std(&vals);
            summary.insert(
                format!("{label}/{k}"),
                serde_json::json!({ "mean": mean, "std": std, "n": vals.len() }),
            );
            cells.push((mean, std));
        }
        table_rows.push((k.clone(), cells));
    }
    s.push_str("<table><tr><th>metric</th>");
    for l in &labels {
        s.push_str(&format!("<th>{}</th>", html::escape(l)));
    }
    s.push_str("<th>meaning</th></tr>");
    for (k, cells) in &table_rows {
        s.push_str(&format!("<tr><td>{}</td>", html::escape(k)));
        for (m, sd) in cells {
            s.push_str(&format!(
                "<td>{} &plusmn; {}</td>",
                html::fmt_num(*m),
                html::fmt_num(*sd)
            ));
        }
        let base = k.split('/').next().unwrap_or(k);
        let meaning = help
            .iter()
            .find(|(n, _)| *n == base)
            .map(|(_, m)| *m)
            .unwrap_or("");
        s.push_str(&format!(
            r#"<td class="note" style="text-align:left">{}</td></tr>"#,
            html::escape(meaning)
        ));
    }
    s.push_str("</table>");
    write_file(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    write_file(&dir.join("index.html"), html::page(title, &s).as_bytes())
}
