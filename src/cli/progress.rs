//! What a user sees while a run goes on: a bar on a terminal, log lines otherwise, nothing
//! with --quiet. Also where Ctrl-C and --save-every reach the run.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use mrfsynth::image_io::{save_rgb, RgbImageF32};
use mrfsynth::synth::{Control, StepInfo};
use mrfsynth::synth::{Level, LevelReport, Observer};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Quiet,
    Bar,
    Lines,
}

pub struct Progress {
    mode: Mode,
    bar: Option<ProgressBar>,
    started: Instant,
    level: (usize, usize),
    iterations: usize,
    interrupted: Arc<AtomicBool>,
    save_every: Option<usize>,
    output: PathBuf,
}

impl Progress {
    pub fn new(
        quiet: bool,
        interrupted: Arc<AtomicBool>,
        save_every: Option<usize>,
        output: PathBuf,
    ) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Self {
            mode,
            bar: None,
            started: Instant::now(),
            level: (0, 0),
            iterations: 0,
            interrupted,
            save_every,
            output,
        }
    }

    pub fn say(&self, msg: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn intermediate_path(&self, iteration: usize) -> PathBuf {
        let stem = self
            .output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = self
            .output
            .extension()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "png".into());
        self.output.with_file_name(format!(
            "{stem}.level{}.iter{iteration:04}.{ext}",
            self.level.0 + 1
        ))
    }
}

impl Observer for Progress {
    fn note(&mut self, msg: &str) {
        self.say(&format!("note: {msg}"));
    }

    fn level_start(&mut self, index: usize, count: usize, level: &Level, iterations: usize) {
        self.level = (index, count);
        self.iterations = iterations;
        self.started = Instant::now();
        let title = format!(
            "level {}/{count} {}x{}",
            index + 1,
            level.width,
            level.height
        );
        match self.mode {
            Mode::Bar => {
                let bar = ProgressBar::new(iterations as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} {msg} ({per_sec}, {eta} left)",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(title);
                self.bar = Some(bar);
            }
            Mode::Lines => eprintln!("{title}: {iterations} iterations"),
            Mode::Quiet => {}
        }
    }

    fn step(
        &mut self,
        _level: usize,
        info: &StepInfo,
        image: &[f32],
        width: u32,
        height: u32,
    ) -> Control {
        let rate = info.iteration as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_position(info.iteration as u64);
                bar.set_message(format!("loss {:.4e}", info.loss));
            }
            (None, Mode::Lines)
                if info.iteration.is_multiple_of(10) || info.iteration == self.iterations =>
            {
                let left = (self.iterations.saturating_sub(info.iteration)) as f64 / rate.max(1e-9);
                eprintln!(
                    "  level {}/{} iter {}/{} loss {:.4e} {:.2} it/s ~{:.0}s left",
                    self.level.0 + 1,
                    self.level.1,
                    info.iteration,
                    self.iterations,
                    info.loss,
                    rate,
                    left
                );
            }
            _ => {}
        }
        if self
            .save_every
            .is_some_and(|n| n > 0 && info.iteration.is_multiple_of(n))
        {
            let img = RgbImageF32::new(width, height, image.to_vec());
            let path = self.intermediate_path(info.iteration);
            if let Err(e) = save_rgb(&img, &path) {
                self.say(&format!("warning: could not save {}: {e}", path.display()));
            }
        }
        if self.interrupted.load(Ordering::SeqCst) {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn level_end(&mut self, index: usize, report: &LevelReport) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.mode != Mode::Quiet {
            eprintln!(
                "level {}/{} {}x{}: {} iterations, loss {:.4e}, {:.1}s",
                index + 1,
                self.level.1,
                report.width,
                report.height,
                report.iterations,
                report.final_loss,
                report.seconds
            );
        }
    }
}

/// Training: one bar over the steps, a line every 10 steps without a terminal.
impl mrfsynth::feedforward::TrainObserver for Progress {
    fn note(&mut self, msg: &str) {
        self.say(&format!("note: {msg}"));
    }

    fn step(&mut self, info: &mrfsynth::feedforward::TrainStep) -> Control {
        if self.mode == Mode::Bar && self.bar.is_none() {
            let bar = ProgressBar::new(info.steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "training [{bar:30}] {pos}/{len} {msg} ({per_sec}, {eta} left)",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            self.bar = Some(bar);
        }
        match (&self.bar, self.mode) {
            (Some(bar), _) => {
                bar.set_position(info.step as u64);
                bar.set_message(format!("loss {:.4e}", info.loss));
                if info.step == info.steps {
                    bar.finish_and_clear();
                }
            }
            (None, Mode::Lines) if info.step.is_multiple_of(10) || info.step == info.steps => {
                eprintln!(
                    "  step {}/{} loss {:.4e} {:.0}s",
                    info.step, info.steps, info.loss, info.seconds
                );
            }
            _ => {}
        }
        if self.interrupted.load(Ordering::SeqCst) {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn checkpoint(&mut self, step: usize, path: &std::path::Path) {
        if self.mode == Mode::Lines {
            eprintln!("  checkpoint at step {step}: {}", path.display());
        }
    }
}
