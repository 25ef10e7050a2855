//! Loss curves as a small self-contained SVG (log-scale loss against evaluation).

use std::fmt::Write;

/// One curve per (label, losses per iteration of each level, concatenated), on a log scale.
pub fn loss_svg(series: &[(&str, Vec<Vec<f32>>)], width: u32, height: u32) -> String {
    let colors = ["#d1495b", "#00798c", "#edae49", "#30638e", "#66a182"];
    let (ml, mr, mt, mb) = (60.0, 20.0, 20.0, 40.0);
    let (pw, ph) = (width as f64 - ml - mr, height as f64 - mt - mb);
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, levels)| levels.iter().flatten())
        .map(|&v| v as f64)
        .filter(|v| v.is_finite() && *v > 0.0)
        .collect();
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min).max(1e-30);
    let hi = all.iter().cloned().fold(0.0, f64::max).max(lo * 10.0);
    let (llo, lhi) = (lo.log10().floor(), hi.log10().ceil());
    let n_max = series
        .iter()
        .map(|(_, l)| l.iter().map(Vec::len).sum::<usize>())
        .max()
        .unwrap_or(1)
        .max(2);
    let xp = |i: usize| ml + pw * i as f64 / (n_max - 1) as f64;
    let yp = |v: f64| mt + ph * (1.0 - (v.max(lo).log10() - llo) / (lhi - llo).max(1e-9));

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for e in (llo as i32)..=(lhi as i32) {
        let y = yp(10f64.powi(e));
        let _ = write!(
            s,
            r##"<line x1="{ml}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">1e{e}</text>"##,
            ml + pw,
            ml - 4.0,
            y + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">iteration (levels concatenated)</text><text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle">loss</text>"#,
        ml + pw / 2.0,
        height as f64 - 8.0,
        mt + ph / 2.0,
        mt + ph / 2.0
    );
    for (k, (label, levels)) in series.iter().enumerate() {
        let color = colors[k % colors.len()];
        let mut i = 0;
        for level in levels {
            let pts: Vec<String> = level
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v > 0.0)
                .map(|(j, &v)| format!("{:.1},{:.1}", xp(i + j), yp(v as f64)))
                .collect();
            let _ = write!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                pts.join(" ")
            );
            i += level.len();
            if i < n_max {
                let x = xp(i);
                let _ = write!(
                    s,
                    r##"<line x1="{x:.1}" x2="{x:.1}" y1="{mt}" y2="{}" stroke="#eee"/>"##,
                    mt + ph
                );
            }
        }
        let _ = write!(
            s,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            ml + pw - 90.0,
            mt + 6.0 + 16.0 * k as f64,
            ml + pw - 75.0,
            mt + 15.0 + 16.0 * k as f64,
            super::html::escape(label)
        );
    }
    s.push_str("</svg>");
    s
}
