//! A texture made through the library alone: the builder, an observer that prints progress,
//! and the typed error.
//!
//! `cargo run --release --example library -- [SAMPLE] [OUT.png] [SIZE]` (default: the built-in
//! sample, `library.png`, 256 px).

use mrfsynth::synth::{Level, LevelReport};
use mrfsynth::{ErrorKind, Observer, Synth};

/// Prints one line per pyramid level.
struct Print;

impl Observer for Print {
    fn note(&mut self, msg: &str) {
        println!("note: {msg}");
    }
    fn level_start(&mut self, index: usize, count: usize, level: &Level, iterations: usize) {
        println!(
            "level {}/{count}: {}x{}, {iterations} iterations",
            index + 1,
            level.width,
            level.height
        );
    }
    fn level_end(&mut self, _index: usize, report: &LevelReport) {
        println!(
            "  loss {:.4e} in {:.1} s",
            report.final_loss, report.seconds
        );
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let sample = match args.next() {
        Some(p) => std::path::PathBuf::from(p),
        None => mrfsynth::assets::samples::default_sample().unwrap_or_else(|e| {
            eprintln!("library: {e}");
            std::process::exit(1)
        }),
    };
    let out = args.next().unwrap_or_else(|| "library.png".into());
    let size: u32 = args
        .next()
        .map_or(256, |s| s.parse().expect("SIZE is a number"));

    let run = || -> mrfsynth::Result<()> {
        let sample = image::open(&sample)
            .map_err(|e| mrfsynth::Error::Input(format!("{}: {e}", sample.display())))?;
        let texture = Synth::texture(&sample)
            .long_side(size)
            .seed(1)
            .build()?
            .run(&mut Print)?;
        texture.save(&out)?;
        println!(
            "wrote {out}: {}x{}, copy score {:.2}, {:.1} s",
            texture.image().width(),
            texture.image().height(),
            texture.report().copy_score.unwrap_or(f64::NAN),
            texture.report().seconds
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("library: {}", e.one_line());
        std::process::exit(match e.kind() {
            ErrorKind::Settings => 2,
            ErrorKind::BadInput => 3,
            _ => 1,
        });
    }
}
