//! First-order optimisers over a flat `f32` parameter vector.
//!
//! The engine computes loss and gradient itself, so an optimiser only sees an
//! [`Objective`]: a function that, given `x`, writes the gradient into a
//! caller-provided buffer and returns the loss. Any closure
//! `FnMut(&[f32], &mut [f32]) -> crate::Result<f32>` is an objective.
//!
//! After each iteration the optimiser calls `on_step` with a [`StepInfo`] and
//! the current iterate; returning [`Control::Stop`] ends the run at once (used
//! for Ctrl-C and for saving intermediate images). The result always carries
//! the best point seen (lowest finite loss over all evaluations), not
//! necessarily the last iterate.
//!
//! * [`Lbfgs`]: limited-memory BFGS with a strong-Wolfe line search or fixed steps.
//! * [`Adam`]: Adam with bias correction.

mod adam;
mod lbfgs;

pub use adam::Adam;
pub use lbfgs::{Lbfgs, LineSearch};

use rayon::prelude::*;

/// A differentiable function to minimise.
pub trait Objective {
    /// Returns `f(x)` and writes `∇f(x)` into `grad` (same length as `x`; its
    /// previous contents are unspecified and must be overwritten).
    ///
    /// A non-finite loss or gradient is not an error: the optimiser handles it
    /// (backs off in a line search, or stops with [`StopReason::NonFinite`]).
    /// An `Err` aborts the optimisation and is returned to the caller.
    fn eval(&mut self, x: &[f32], grad: &mut [f32]) -> crate::Result<f32>;
}

impl<F> Objective for F
where
    F: FnMut(&[f32], &mut [f32]) -> crate::Result<f32>,
{
    fn eval(&mut self, x: &[f32], grad: &mut [f32]) -> crate::Result<f32> {
        self(x, grad)
    }
}

/// Progress passed to the per-iteration callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// 1-based number of the iteration just completed.
    pub iteration: usize,
    /// Objective evaluations so far (line-search trials included).
    pub evaluations: usize,
    /// Loss at the current iterate.
    pub loss: f32,
    /// Euclidean norm of the gradient at the current iterate.
    pub grad_norm: f32,
}

/// What the callback wants the optimiser to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

/// Why an optimisation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_iter` iterations were done.
    MaxIterations,
    /// The evaluation budget (`max_evals`) was used up.
    MaxEvaluations,
    /// The gradient's largest component fell to `tolerance_grad` or below.
    GradientTolerance,
    /// The step, the loss change or the directional derivative fell below
    /// `tolerance_change`: no further progress is possible.
    ChangeTolerance,
    /// The callback returned [`Control::Stop`].
    Callback,
    /// The objective returned a NaN or infinite loss or gradient that could not
    /// be avoided (at the start point, or everywhere a line search tried).
    NonFinite,
    /// The line search found no acceptable step, even along steepest descent.
    LineSearchFailed,
}

impl StopReason {
    /// True for the normal ends: budget used up or a convergence tolerance reached.
    pub fn is_normal(self) -> bool {
        matches!(
            self,
            StopReason::MaxIterations
                | StopReason::MaxEvaluations
                | StopReason::GradientTolerance
                | StopReason::ChangeTolerance
        )
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::MaxIterations => "reached the iteration limit",
            StopReason::MaxEvaluations => "reached the evaluation limit",
            StopReason::GradientTolerance => "gradient below tolerance",
            StopReason::ChangeTolerance => "no further progress (change below tolerance)",
            StopReason::Callback => "stopped by request",
            StopReason::NonFinite => "objective returned NaN or infinity",
            StopReason::LineSearchFailed => "line search found no acceptable step",
        })
    }
}

/// The outcome of [`Optimizer::minimize`].
#[derive(Debug, Clone)]
pub struct OptimResult {
    /// The best point evaluated (lowest finite loss); the start point if no
    /// evaluation gave a finite loss.
    pub x: Vec<f32>,
    /// The loss at `x` (NaN if no evaluation was finite).
    pub loss: f32,
    /// Iterations completed.
    pub iterations: usize,
    /// Objective evaluations made.
    pub evaluations: usize,
    /// Loss at the iterate after each completed iteration (`losses.len() == iterations`).
    pub losses: Vec<f32>,
    /// True when the callback asked to stop (`reason == StopReason::Callback`).
    pub stopped_early: bool,
    pub reason: StopReason,
}

/// An optimiser minimising an [`Objective`] from a start point.
pub trait Optimizer {
    /// Minimises `f` starting from `x0`, calling `on_step` after every
    /// iteration with the progress and the current iterate.
    ///
    /// Errors returned by the objective are passed through.
    fn minimize(
        &mut self,
        x0: Vec<f32>,
        f: &mut dyn Objective,
        on_step: &mut dyn FnMut(&StepInfo, &[f32]) -> Control,
    ) -> crate::Result<OptimResult>;
}

/// Wraps an objective: counts evaluations, flags non-finite results and keeps
/// a copy of the best point seen.
pub(crate) struct Tracker<'a> {
    f: &'a mut dyn Objective,
    pub evaluations: usize,
    pub best_loss: f32,
    best_x: Vec<f32>,
    pub losses: Vec<f32>,
}

impl<'a> Tracker<'a> {
    pub fn new(f: &'a mut dyn Objective) -> Self {
        Tracker {
            f,
            evaluations: 0,
            best_loss: f32::NAN,
            best_x: Vec::new(),
            losses: Vec::new(),
        }
    }

    /// Evaluates `f(x)`, writing the gradient into `grad`. Returns `Some(loss)`
    /// when the loss and the whole gradient are finite, `None` otherwise.
    pub fn eval(&mut self, x: &[f32], grad: &mut [f32]) -> crate::Result<Option<f32>> {
        self.evaluations += 1;
        let loss = self.f.eval(x, grad)?;
        if !loss.is_finite() || !all_finite(grad) {
            return Ok(None);
        }
        if self.best_x.is_empty() || loss < self.best_loss {
            self.best_loss = loss;
            if self.best_x.is_empty() {
                self.best_x = x.to_vec();
            } else {
                copy(&mut self.best_x, x);
            }
        }
        Ok(Some(loss))
    }

    /// Builds the result; `current` is returned when nothing finite was seen.
    pub fn finish(mut self, current: Vec<f32>, reason: StopReason) -> OptimResult {
        let (x, loss) = if self.best_x.is_empty() {
            (current, f32::NAN)
        } else {
            (std::mem::take(&mut self.best_x), self.best_loss)
        };
        self.result(x, loss, reason)
    }

    /// Builds the result around the last iterate `x` (loss `loss`), not the best one seen: for
    /// fixed-step methods, whose objective (re-matched patches) is not one function over the
    /// run, as Torch's optimisers do.
    pub fn finish_last(self, x: Vec<f32>, loss: f32, reason: StopReason) -> OptimResult {
        self.result(x, loss, reason)
    }

    fn result(self, x: Vec<f32>, loss: f32, reason: StopReason) -> OptimResult {
        OptimResult {
            x,
            loss,
            iterations: self.losses.len(),
            evaluations: self.evaluations,
            losses: self.losses,
            stopped_early: reason == StopReason::Callback,
            reason,
        }
    }
}

// ---------------------------------------------------------------------------
// Vector kernels. Large vectors are processed in fixed-size chunks in
// parallel; reductions combine the per-chunk partial sums in order, so
// results do not depend on thread scheduling.

const CHUNK: usize = 1 << 15;

fn dot_seq(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, ra) = a.as_chunks::<4>();
    let (cb, rb) = b.as_chunks::<4>();
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..4 {
            acc[k] += x[k] as f64 * y[k] as f64;
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (x, y) in ra.iter().zip(rb) {
        s += *x as f64 * *y as f64;
    }
    s
}

/// `a · b`, accumulated in `f64`.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    if a.len() <= CHUNK {
        return dot_seq(a, b);
    }
    let parts: Vec<f64> = a
        .par_chunks(CHUNK)
        .zip(b.par_chunks(CHUNK))
        .map(|(x, y)| dot_seq(x, y))
        .collect();
    parts.iter().sum()
}

/// Euclidean norm, accumulated in `f64`.
pub(crate) fn norm2(a: &[f32]) -> f64 {
    dot(a, a).sqrt()
}

/// Sum of absolute values, accumulated in `f64`.
pub(crate) fn norm1(a: &[f32]) -> f64 {
    let seq = |x: &[f32]| x.iter().map(|v| v.abs() as f64).sum::<f64>();
    if a.len() <= CHUNK {
        return seq(a);
    }
    let parts: Vec<f64> = a.par_chunks(CHUNK).map(seq).collect();
    parts.iter().sum()
}

/// Largest absolute value (0 for an empty slice).
pub(crate) fn norm_inf(a: &[f32]) -> f32 {
    let seq = |x: &[f32]| x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if a.len() <= CHUNK {
        return seq(a);
    }
    a.par_chunks(CHUNK).map(seq).reduce(|| 0.0, f32::max)
}

pub(crate) fn all_finite(a: &[f32]) -> bool {
    if a.len() <= CHUNK {
        return a.iter().all(|v| v.is_finite());
    }
    a.par_chunks(CHUNK).all(|c| c.iter().all(|v| v.is_finite()))
}

/// Applies `op(out_i, a_i)` to every element.
pub(crate) fn zip_apply(out: &mut [f32], a: &[f32], op: impl Fn(&mut f32, f32) + Sync + Send) {
    assert_eq!(out.len(), a.len());
    if out.len() <= CHUNK {
        out.iter_mut().zip(a).for_each(|(o, &v)| op(o, v));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(oc, ac)| oc.iter_mut().zip(ac).for_each(|(o, &v)| op(o, v)));
    }
}

/// Applies `op(out_i, a_i, b_i)` to every element.
pub(crate) fn zip2_apply(
    out: &mut [f32],
    a: &[f32],
    b: &[f32],
    op: impl Fn(&mut f32, f32, f32) + Sync + Send,
) {
    assert_eq!(out.len(), a.len());
    assert_eq!(out.len(), b.len());
    if out.len() <= CHUNK {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            op(o, x, y);
        }
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(|((oc, ac), bc)| {
                for ((o, &x), &y) in oc.iter_mut().zip(ac).zip(bc) {
                    op(o, x, y);
                }
            });
    }
}

/// `out = a`.
pub(crate) fn copy(out: &mut [f32], a: &[f32]) {
    if out.len() <= CHUNK {
        out.copy_from_slice(a);
    } else {
        zip_apply(out, a, |o, v| *o = v);
    }
}

/// `y += alpha * x`.
pub(crate) fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    zip_apply(y, x, move |o, v| *o += alpha * v);
}

/// `x *= alpha`.
pub(crate) fn scale(alpha: f32, x: &mut [f32]) {
    if x.len() <= CHUNK {
        x.iter_mut().for_each(|v| *v *= alpha);
    } else {
        x.par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|v| *v *= alpha));
    }
}

#[cfg(test)]
pub(crate) mod test_functions {
    //! Objectives shared by the optimiser tests (computed in f64, returned as f32).

    /// Extended Rosenbrock: independent 2-D Rosenbrock valleys on pairs
    /// `(x[2i], x[2i+1])`; minimum 0 at all ones.
    pub fn rosenbrock(x: &[f32], g: &mut [f32]) -> crate::Result<f32> {
        assert!(x.len().is_multiple_of(2));
        let mut f = 0.0f64;
        for i in (0..x.len()).step_by(2) {
            let (a, b) = (x[i] as f64, x[i + 1] as f64);
            let t = b - a * a;
            let u = 1.0 - a;
            f += 100.0 * t * t + u * u;
            g[i] = (-400.0 * a * t - 2.0 * u) as f32;
            g[i + 1] = (200.0 * t) as f32;
        }
        Ok(f as f32)
    }

    pub fn rosenbrock_start(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| if i % 2 == 0 { -1.2 } else { 1.0 })
            .collect()
    }

    /// `0.5 * sum d_i (x_i - c_i)^2` with `d_i` spaced evenly in `[1, cond]`
    /// and `c_i = (i % 7) - 3`.
    pub fn quadratic(cond: f64) -> impl FnMut(&[f32], &mut [f32]) -> crate::Result<f32> {
        move |x: &[f32], g: &mut [f32]| {
            let n = x.len();
            let mut f = 0.0f64;
            for i in 0..n {
                let d = if n > 1 {
                    1.0 + (cond - 1.0) * i as f64 / (n - 1) as f64
                } else {
                    1.0
                };
                let r = x[i] as f64 - quadratic_centre(i) as f64;
                f += 0.5 * d * r * r;
                g[i] = (d * r) as f32;
            }
            Ok(f as f32)
        }
    }

    pub fn quadratic_centre(i: usize) -> f32 {
        (i % 7) as f32 - 3.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_naive_on_large_vectors() {
        let n = 3 * CHUNK + 17;
        let a: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.5).collect();
        let b: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 2.0) * 0.25).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-6 * naive.abs().max(1.0));
        assert_eq!(dot(&a, &b), dot(&a, &b), "deterministic");
        let n1: f64 = a.iter().map(|v| v.abs() as f64).sum();
        assert!((norm1(&a) - n1).abs() < 1e-6 * n1);
        assert_eq!(norm_inf(&a), 3.0);
        let mut y = b.clone();
        axpy(2.0, &a, &mut y);
        assert!(y
            .iter()
            .zip(&a)
            .zip(&b)
            .all(|((y, a), b)| *y == b + 2.0 * a));
        scale(0.5, &mut y);
        assert!(y
            .iter()
            .zip(&a)
            .zip(&b)
            .all(|((y, a), b)| *y == (b + 2.0 * a) * 0.5));
        let mut out = vec![0.0; n];
        zip2_apply(&mut out, &a, &b, |o, x, y| *o = x - y);
        assert!(out.iter().zip(&a).zip(&b).all(|((o, a), b)| *o == a - b));
        assert!(all_finite(&out));
        out[n - 1] = f32::NAN;
        assert!(!all_finite(&out));
        assert!((norm2(&[3.0, 4.0]) - 5.0).abs() < 1e-12);
    }
}
