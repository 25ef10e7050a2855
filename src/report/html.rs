//! index.html pages that show a report offline: images, metrics tables, plots, parameters.

use std::fmt::Write;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
.figs {{ display: flex; gap: 1em; flex-wrap: wrap; align-items: flex-start; }}
.figs figure {{ margin: 0; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; }}
.note {{ color: #666; font-size: 90%; }}
</style></head>
<body><h1>{t}</h1>
{body}
</body></html>
"#,
        t = escape(title)
    )
}

/// A table: one row per metric, one column per run. Numbers in compact scientific form.
pub fn metrics_table(
    columns: &[&str],
    rows: &[(String, Vec<Option<f64>>)],
    help: &[(&str, &str)],
) -> String {
    let mut s = String::from("<table><tr><th>metric</th>");
    for c in columns {
        let _ = write!(s, "<th>{}</th>", escape(c));
    }
    s.push_str("<th>meaning</th></tr>");
    for (name, values) in rows {
        let _ = write!(s, "<tr><td>{}</td>", escape(name));
        for v in values {
            let _ = write!(
                s,
                "<td>{}</td>",
                v.map(fmt_num).unwrap_or_else(|| "-".into())
            );
        }
        let base = name.split('/').next().unwrap_or(name);
        let meaning = help
            .iter()
            .find(|(n, _)| *n == base)
            .map(|(_, m)| *m)
            .unwrap_or("");
        let _ = write!(
            s,
            r#"<td class="note" style="text-align:left">{}</td></tr>"#,
            escape(meaning)
        );
    }
    s.push_str("</table>");
    s
}

pub fn fmt_num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e5) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}
