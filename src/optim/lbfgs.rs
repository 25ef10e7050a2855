//! Limited-memory BFGS.
//!
//! Directions come from the two-loop recursion over the last `history`
//! pairs `s = x_{k+1} - x_k`, `y = g_{k+1} - g_k`, with the initial inverse
//! Hessian scaled by `s·y / y·y` of the newest pair. Pairs with too little
//! positive curvature (`s·y`) are not stored, which keeps the approximation
//! positive definite. Dot products are accumulated in `f64`; vectors are
//! stored as `f32`.
//!
//! Memory: `2 * history` vectors of `n` floats for the pairs, plus about 7
//! work vectors (5 with [`LineSearch::None`]). Nothing is `n x n`.
//!
//! Step length: [`LineSearch::StrongWolfe`] (the default) brackets a step
//! satisfying the strong Wolfe conditions and refines it by safeguarded cubic
//! interpolation (Nocedal & Wright, Algorithms 3.5 and 3.6).
//! [`LineSearch::None`] takes fixed steps: `min(1, 1/|g|₁) * lr` on the first
//! iteration, `lr` after that, and returns the last iterate (the line search returns the
//! best point seen).

use std::collections::VecDeque;

use super::{
    axpy, dot, norm1, norm2, norm_inf, scale, zip2_apply, zip_apply, Control, Objective,
    OptimResult, Optimizer, StepInfo, StopReason, Tracker,
};

/// How [`Lbfgs`] chooses the step length along each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineSearch {
    /// Bracketing and zoom with cubic interpolation until the strong Wolfe
    /// conditions hold (sufficient decrease `c1 = 1e-4`, curvature `c2 = 0.9`),
    /// at most 25 evaluations per iteration.
    #[default]
    StrongWolfe,
    /// Fixed step: `min(1, 1/|g|₁) * lr` on the first iteration, then `lr`;
    /// one evaluation per iteration. A non-finite result stops the run.
    None,
}

/// Limited-memory BFGS settings. Build with [`Lbfgs::new`] or `Default` and
/// adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Lbfgs {
    /// Number of correction pairs kept (default 100). Costs `2 * history * n` floats.
    pub history: usize,
    /// Maximum iterations (default 1000).
    pub max_iter: usize,
    /// Maximum objective evaluations, the initial one included
    /// (default `max_iter * 5 / 4`).
    pub max_evals: usize,
    /// Stop when the gradient's largest absolute component is at most this
    /// (default 1e-7).
    pub tolerance_grad: f32,
    /// Stop when the step (largest absolute component) or the loss change is
    /// below this, or the directional derivative is above `-tolerance_change`
    /// (default 1e-9).
    pub tolerance_change: f32,
    /// Step-length strategy (default [`LineSearch::StrongWolfe`]).
    pub line_search: LineSearch,
    /// Step scale: the initial trial step of the line search, or the fixed
    /// step with [`LineSearch::None`] (default 1).
    pub lr: f32,
    /// Largest change of any component on a first step (no curvature known yet); `None` uses
    /// Torch's `min(1, 1/|g|_1)`. In pixel units this keeps the first step visible on large
    /// images, where `1/|g|_1` is so small that noise in the objective (re-matched patches)
    /// drowns its decrease.
    pub first_step: Option<f32>,
}

impl Default for Lbfgs {
    fn default() -> Self {
        Lbfgs::new(1000)
    }
}

/// Sufficient-decrease constant of the Wolfe conditions.
const C1: f64 = 1e-4;
/// Curvature constant of the strong Wolfe conditions.
const C2: f64 = 0.9;
/// Evaluations allowed per line search.
const MAX_LS_EVALS: usize = 25;

impl Lbfgs {
    /// Default settings with `max_iter` iterations and
    /// `max_evals = max(max_iter * 5 / 4, max_iter + 1)`.
    pub fn new(max_iter: usize) -> Self {
        Lbfgs {
            history: 100,
            max_iter,
            max_evals: (max_iter.saturating_mul(5) / 4).max(max_iter.saturating_add(1)),
            tolerance_grad: 1e-7,
            tolerance_change: 1e-9,
            line_search: LineSearch::StrongWolfe,
            lr: 1.0,
            first_step: None,
        }
    }
}

/// The stored correction pairs, oldest first.
struct Memory {
    capacity: usize,
    /// Keep every pair with `s·y > 1e-10`, as Torch's lbfgs (fixed steps); else also require
    /// `s·y` to be clearly positive relative to the vectors' sizes.
    torch_rule: bool,
    s: VecDeque<Vec<f32>>,
    y: VecDeque<Vec<f32>>,
    rho: VecDeque<f64>,
    /// Scale of the initial inverse Hessian, `s·y / y·y` of the newest pair.
    gamma: f64,
    /// Buffers for the next pair (reused from rejected or evicted pairs).
    spare: Option<(Vec<f32>, Vec<f32>)>,
    alpha: Vec<f64>,
}

impl Memory {
    fn new(capacity: usize, torch_rule: bool) -> Self {
        Memory {
            capacity,
            torch_rule,
            s: VecDeque::new(),
            y: VecDeque::new(),
            rho: VecDeque::new(),
            gamma: 1.0,
            spare: None,
            alpha: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.s.is_empty()
    }

    fn clear(&mut self) {
        self.s.clear();
        self.y.clear();
        self.rho.clear();
        self.gamma = 1.0;
    }

    /// Offers the pair `s = step * d`, `y = g_new - g_old`; returns whether it was kept.
    fn push(&mut self, step: f32, d: &[f32], g_new: &[f32], g_old: &[f32]) -> bool {
        let n = d.len();
        let (mut s, mut y) = self
            .spare
            .take()
            .unwrap_or_else(|| (vec![0.0; n], vec![0.0; n]));
        zip_apply(&mut s, d, move |o, v| *o = step * v);
        zip2_apply(&mut y, g_new, g_old, |o, a, b| *o = a - b);
        let ys = dot(&y, &s);
        let yy = dot(&y, &y);
        let ss = dot(&s, &s);
        // Require clearly positive curvature, relative to the vectors' sizes.
        let keep =
            ys.is_finite() && ys > 1e-10 && (self.torch_rule || ys > 1e-8 * (ss * yy).sqrt());
        if !keep || self.capacity == 0 {
            self.spare = Some((s, y));
            return false;
        }
        self.gamma = ys / yy;
        self.s.push_back(s);
        self.y.push_back(y);
        self.rho.push_back(1.0 / ys);
        if self.s.len() > self.capacity {
            let s_old = self.s.pop_front().expect("non-empty");
            let y_old = self.y.pop_front().expect("non-empty");
            self.rho.pop_front();
            self.spare = Some((s_old, y_old));
        }
        true
    }

    /// Writes `d = -H g` (two-loop recursion); `d = -g` when empty.
    fn direction(&mut self, g: &[f32], d: &mut [f32]) {
        zip_apply(d, g, |o, v| *o = -v);
        let k = self.s.len();
        if k == 0 {
            return;
        }
        self.alpha.resize(k, 0.0);
        for i in (0..k).rev() {
            let a = self.rho[i] * dot(&self.s[i], d);
            self.alpha[i] = a;
            axpy(-a as f32, &self.y[i], d);
        }
        scale(self.gamma as f32, d);
        for i in 0..k {
            let b = self.rho[i] * dot(&self.y[i], d);
            axpy((self.alpha[i] - b) as f32, &self.s[i], d);
        }
    }
}

/// A point on the line `x + t d`: step, loss and directional derivative.
#[derive(Debug, Clone, Copy)]
struct LinePoint {
    t: f64,
    f: f64,
    gtd: f64,
}

enum LineOutcome {
    /// A step with lower loss was found; its loss is given, its gradient is in `g_out`.
    Step { t: f64, f: f32 },
    /// No step decreased the loss.
    NoProgress { saw_nonfinite: bool },
}

/// Minimiser of the cubic interpolating two points (values and slopes),
/// clamped to `[lo, hi]`; the middle of `[lo, hi]` when the cubic has no minimiser.
fn cubic_minimizer(p1: LinePoint, p2: LinePoint, lo: f64, hi: f64) -> f64 {
    // Order so that `a.t < b.t`.
    let (a, b) = if p1.t <= p2.t { (p1, p2) } else { (p2, p1) };
    let d1 = a.gtd + b.gtd - 3.0 * (a.f - b.f) / (a.t - b.t);
    let disc = d1 * d1 - a.gtd * b.gtd;
    if disc.is_finite() && disc >= 0.0 {
        let d2 = disc.sqrt();
        let t = b.t - (b.t - a.t) * ((b.gtd + d2 - d1) / (b.gtd - a.gtd + 2.0 * d2));
        if t.is_finite() {
            return t.clamp(lo, hi);
        }
    }
    0.5 * (lo + hi)
}

/// Work buffers and fixed inputs of one line search.
struct LineSearchState<'b> {
    x: &'b [f32],
    d: &'b [f32],
    x_trial: &'b mut Vec<f32>,
    g_trial: &'b mut Vec<f32>,
    g_lo: &'b mut Vec<f32>,
    evals: usize,
    max_evals: usize,
    saw_nonfinite: bool,
}

impl LineSearchState<'_> {
    /// Evaluates at `x + t d` into `g_trial`; `None` when non-finite.
    fn eval(&mut self, tr: &mut Tracker<'_>, t: f64) -> crate::Result<Option<LinePoint>> {
        let tf = t as f32;
        zip2_apply(self.x_trial, self.x, self.d, move |o, a, b| *o = a + tf * b);
        self.evals += 1;
        match tr.eval(self.x_trial, self.g_trial)? {
            Some(f) => Ok(Some(LinePoint {
                t,
                f: f as f64,
                gtd: dot(self.g_trial, self.d),
            })),
            None => {
                self.saw_nonfinite = true;
                Ok(None)
            }
        }
    }

    /// `g_trial` holds the gradient of the new `lo`: keep it.
    fn keep_trial_as_lo(&mut self) {
        std::mem::swap(self.g_trial, self.g_lo);
    }

    /// Ends the search at `lo` (the best sufficient-decrease point found).
    fn finish_at(self, lo: LinePoint) -> LineOutcome {
        if lo.t > 0.0 {
            std::mem::swap(self.g_trial, self.g_lo);
            LineOutcome::Step {
                t: lo.t,
                f: lo.f as f32,
            }
        } else {
            LineOutcome::NoProgress {
                saw_nonfinite: self.saw_nonfinite,
            }
        }
    }
}

/// Strong-Wolfe line search along `d` from `x` (loss `f0`, slope `gtd0 < 0`),
/// starting with step `t_init`. On success the gradient at the accepted
/// point is left in `st.g_trial`.
fn strong_wolfe(
    tr: &mut Tracker<'_>,
    mut st: LineSearchState<'_>,
    f0: f32,
    gtd0: f64,
    t_init: f64,
    tolerance_change: f64,
) -> crate::Result<LineOutcome> {
    let origin = LinePoint {
        t: 0.0,
        f: f0 as f64,
        gtd: gtd0,
    };
    let sufficient = |p: &LinePoint| p.f <= origin.f + C1 * p.t * gtd0;
    let curvature_ok = |p: &LinePoint| p.gtd.abs() <= -C2 * gtd0;
    let d_max = norm_inf(st.d) as f64;

    // Bracketing phase. `prev` is the previous trial (its gradient in g_lo).
    let mut prev = origin;
    let mut t = t_init;
    let (mut lo, mut hi) = loop {
        if st.evals >= st.max_evals {
            return Ok(st.finish_at(prev));
        }
        let Some(p) = st.eval(tr, t)? else {
            // Treat a non-finite value as "far too big".
            let hi = LinePoint {
                t,
                f: f64::INFINITY,
                gtd: f64::NAN,
            };
            break (prev, hi);
        };
        if !sufficient(&p) || (prev.t > 0.0 && p.f >= prev.f) {
            break (prev, p);
        }
        if curvature_ok(&p) {
            return Ok(LineOutcome::Step {
                t: p.t,
                f: p.f as f32,
            });
        }
        if p.gtd >= 0.0 {
            st.keep_trial_as_lo();
            break (p, prev);
        }
        // Still descending: extrapolate.
        let min_step = t + 0.01 * (t - prev.t);
        let max_step = t * 10.0;
        let next = cubic_minimizer(prev, p, min_step, max_step);
        st.keep_trial_as_lo();
        prev = p;
        t = next;
    };

    // Zoom phase: `lo` satisfies sufficient decrease and has the lowest loss
    // so far; the minimiser lies between `lo.t` and `hi.t`.
    loop {
        if st.evals >= st.max_evals || (hi.t - lo.t).abs() * d_max < tolerance_change {
            return Ok(st.finish_at(lo));
        }
        let (a, b) = (lo.t.min(hi.t), lo.t.max(hi.t));
        let width = b - a;
        let t = if hi.f.is_finite() && hi.gtd.is_finite() {
            let t = cubic_minimizer(lo, hi, a, b);
            // Keep away from the ends so the interval shrinks.
            if t < a + 0.1 * width || t > b - 0.1 * width {
                0.5 * (a + b)
            } else {
                t
            }
        } else {
            // Non-finite at `hi`: back off well towards `lo`.
            lo.t + 0.2 * (hi.t - lo.t)
        };
        match st.eval(tr, t)? {
            None => {
                hi = LinePoint {
                    t,
                    f: f64::INFINITY,
                    gtd: f64::NAN,
                };
            }
            Some(p) => {
                if !sufficient(&p) || p.f >= lo.f {
                    hi = p;
                } else {
                    if curvature_ok(&p) {
                        return Ok(LineOutcome::Step {
                            t: p.t,
                            f: p.f as f32,
                        });
                    }
                    if p.gtd * (hi.t - lo.t) >= 0.0 {
                        hi = lo;
                    }
                    st.keep_trial_as_lo();
                    lo = p;
                }
            }
        }
    }
}

impl Optimizer for Lbfgs {
    fn minimize(
        &mut self,
        x0: Vec<f32>,
        f: &mut dyn Objective,
        on_step: &mut dyn FnMut(&StepInfo, &[f32]) -> Control,
    ) -> crate::Result<OptimResult> {
        let n = x0.len();
        let mut tr = Tracker::new(f);
        let mut x = x0;
        let mut g = vec![0.0f32; n];
        let Some(mut loss) = tr.eval(&x, &mut g)? else {
            return Ok(tr.finish(x, StopReason::NonFinite));
        };
        if norm_inf(&g) <= self.tolerance_grad {
            return Ok(tr.finish(x, StopReason::GradientTolerance));
        }
        if self.max_iter == 0 {
            return Ok(tr.finish(x, StopReason::MaxIterations));
        }
        if tr.evaluations >= self.max_evals {
            return Ok(tr.finish(x, StopReason::MaxEvaluations));
        }

        let wolfe = self.line_search == LineSearch::StrongWolfe;
        let tol_change = self.tolerance_change as f64;
        let mut d = vec![0.0f32; n];
        let mut g_new = vec![0.0f32; n];
        let (mut x_trial, mut g_lo) = if wolfe {
            (vec![0.0f32; n], vec![0.0f32; n])
        } else {
            (Vec::new(), Vec::new())
        };
        let mut memory = Memory::new(self.history, !wolfe);
        // True while the memory holds no curvature information from this run
        // segment: use the cautious first step.
        let mut fresh = true;

        let reason = loop {
            memory.direction(&g, &mut d);
            let mut gtd = dot(&g, &d);
            if (gtd.is_nan() || gtd >= 0.0) && !memory.is_empty() {
                // Not a descent direction (rounding): restart from steepest descent.
                memory.clear();
                fresh = true;
                memory.direction(&g, &mut d);
                gtd = dot(&g, &d);
            }
            if gtd.is_nan() || gtd > -tol_change {
                break StopReason::ChangeTolerance;
            }
            let lr = self.lr as f64;
            let t0 = if fresh {
                match self.first_step {
                    Some(c) => (c as f64 / norm_inf(&g) as f64).min(1.0) * lr,
                    None => (1.0 / norm1(&g)).min(1.0) * lr,
                }
            } else {
                lr
            };

            let loss_old = loss;
            let step: f32;
            if wolfe {
                let budget = (self.max_evals - tr.evaluations).min(MAX_LS_EVALS);
                let st = LineSearchState {
                    x: &x,
                    d: &d,
                    x_trial: &mut x_trial,
                    g_trial: &mut g_new,
                    g_lo: &mut g_lo,
                    evals: 0,
                    max_evals: budget,
                    saw_nonfinite: false,
                };
                match strong_wolfe(&mut tr, st, loss, gtd, t0, tol_change)? {
                    LineOutcome::Step { t, f } => {
                        step = t as f32;
                        loss = f;
                    }
                    LineOutcome::NoProgress { saw_nonfinite } => {
                        if tr.evaluations >= self.max_evals {
                            break StopReason::MaxEvaluations;
                        }
                        if !fresh {
                            // The quasi-Newton direction failed; retry along steepest descent.
                            memory.clear();
                            fresh = true;
                            continue;
                        }
                        break if saw_nonfinite {
                            StopReason::NonFinite
                        } else {
                            StopReason::LineSearchFailed
                        };
                    }
                }
                // x_trial holds x + step * d only for the last trial; recompute x exactly.
                axpy(step, &d, &mut x);
            } else {
                step = t0 as f32;
                axpy(step, &d, &mut x);
                match tr.eval(&x, &mut g_new)? {
                    Some(f) => loss = f,
                    None => break StopReason::NonFinite,
                }
            }

            // With fixed steps only the very first step is the cautious one (as Torch's lbfgs);
            // the line search keeps it until curvature is known.
            if memory.push(step, &d, &g_new, &g) || !wolfe {
                fresh = false;
            }
            std::mem::swap(&mut g, &mut g_new);
            tr.losses.push(loss);

            let info = StepInfo {
                iteration: tr.losses.len(),
                evaluations: tr.evaluations,
                loss,
                grad_norm: norm2(&g) as f32,
            };
            if on_step(&info, &x) == Control::Stop {
                break StopReason::Callback;
            }
            if info.iteration >= self.max_iter {
                break StopReason::MaxIterations;
            }
            if tr.evaluations >= self.max_evals {
                break StopReason::MaxEvaluations;
            }
            if norm_inf(&g) <= self.tolerance_grad {
                break StopReason::GradientTolerance;
            }
            if (step.abs() as f64) * (norm_inf(&d) as f64) <= tol_change
                || ((loss - loss_old).abs() as f64) < tol_change
            {
                break StopReason::ChangeTolerance;
            }
        };
        if wolfe || reason == StopReason::NonFinite {
            Ok(tr.finish(x, reason))
        } else {
            // Fixed steps may raise the loss on the way (the patches are re-matched at every
            // step): keep where the run ended, as CNNMRF's mylbfgs does.
            Ok(tr.finish_last(x, loss, reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_functions::{quadratic, quadratic_centre, rosenbrock, rosenbrock_start};
    use super::*;

    fn no_callback() -> impl FnMut(&StepInfo, &[f32]) -> Control {
        |_: &StepInfo, _: &[f32]| Control::Continue
    }

    fn assert_all_near(x: &[f32], target: impl Fn(usize) -> f32, tol: f32) {
        for (i, v) in x.iter().enumerate() {
            assert!(
                (v - target(i)).abs() <= tol,
                "x[{i}] = {v}, expected {} (tol {tol})",
                target(i)
            );
        }
    }

    #[test]
    fn rosenbrock_2d_strong_wolfe() {
        let mut opt = Lbfgs::new(200);
        let mut f = rosenbrock;
        let r = opt
            .minimize(rosenbrock_start(2), &mut f, &mut no_callback())
            .unwrap();
        assert_all_near(&r.x, |_| 1.0, 1e-3);
        assert!(r.loss < 1e-6, "loss {}", r.loss);
        assert!(r.reason.is_normal() || r.reason == StopReason::LineSearchFailed);
        assert_eq!(r.losses.len(), r.iterations);
        assert!(r.evaluations <= opt.max_evals);
    }

    #[test]
    fn rosenbrock_10d_strong_wolfe() {
        let mut opt = Lbfgs::new(500);
        opt.history = 10;
        let mut f = rosenbrock;
        let r = opt
            .minimize(rosenbrock_start(10), &mut f, &mut no_callback())
            .unwrap();
        assert_all_near(&r.x, |_| 1.0, 1e-3);
        assert!(r.loss < 1e-6, "loss {}", r.loss);
        assert!(r.evaluations <= opt.max_evals);
    }

    #[test]
    fn quadratic_without_line_search() {
        let mut opt = Lbfgs::new(200);
        opt.line_search = LineSearch::None;
        opt.history = 20;
        let mut f = quadratic(10.0);
        let r = opt
            .minimize(vec![0.0; 20], &mut f, &mut no_callback())
            .unwrap();
        assert_all_near(&r.x, quadratic_centre, 1e-3);
        // One evaluation per iteration plus the initial one.
        assert_eq!(r.evaluations, r.iterations + 1);
    }

    #[test]
    fn ill_conditioned_quadratic() {
        let mut opt = Lbfgs::new(500);
        opt.history = 10;
        let mut f = quadratic(1000.0);
        let n = 100;
        let x0 = vec![10.0; n];
        let mut f0g = vec![0.0; n];
        let f0 = f(&x0, &mut f0g).unwrap();
        let r = opt.minimize(x0, &mut f, &mut no_callback()).unwrap();
        assert_all_near(&r.x, quadratic_centre, 1e-2);
        assert!(r.loss < f0 * 1e-8, "loss {} from {f0}", r.loss);
        // Loss curve never increases (every accepted step satisfies sufficient decrease).
        assert!(r.losses.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn callback_stop_returns_best_point_at_once() {
        let mut opt = Lbfgs::new(100);
        let mut f = quadratic(50.0);
        let mut calls = 0;
        let mut seen_x = Vec::new();
        let mut cb = |info: &StepInfo, x: &[f32]| {
            calls += 1;
            assert_eq!(info.iteration, calls);
            seen_x = x.to_vec();
            if info.iteration == 3 {
                Control::Stop
            } else {
                Control::Continue
            }
        };
        let r = opt.minimize(vec![5.0; 30], &mut f, &mut cb).unwrap();
        assert_eq!(calls, 3);
        assert_eq!(r.iterations, 3);
        assert_eq!(r.losses.len(), 3);
        assert!(r.stopped_early);
        assert_eq!(r.reason, StopReason::Callback);
        // The result is the best point evaluated, and its loss is reported.
        let mut g = vec![0.0; 30];
        let fx = f(&r.x, &mut g).unwrap();
        assert_eq!(fx, r.loss);
        assert!(r.loss <= *r.losses.iter().min_by(|a, b| a.total_cmp(b)).unwrap());
        let f_seen = f(&seen_x, &mut g).unwrap();
        assert!(r.loss <= f_seen);
    }

    #[test]
    fn nan_at_start_stops_cleanly() {
        for ls in [LineSearch::StrongWolfe, LineSearch::None] {
            let mut opt = Lbfgs::new(10);
            opt.line_search = ls;
            let mut f = |_: &[f32], g: &mut [f32]| -> crate::Result<f32> {
                g.fill(0.0);
                Ok(f32::NAN)
            };
            let r = opt
                .minimize(vec![1.0, 2.0], &mut f, &mut no_callback())
                .unwrap();
            assert_eq!(r.reason, StopReason::NonFinite);
            assert_eq!(r.x, vec![1.0, 2.0]);
            assert!(r.loss.is_nan());
            assert_eq!(r.iterations, 0);
        }
    }

    #[test]
    fn nan_later_keeps_best_point() {
        // Finite for a few evaluations, then NaN everywhere.
        for ls in [LineSearch::StrongWolfe, LineSearch::None] {
            let mut opt = Lbfgs::new(50);
            opt.line_search = ls;
            let mut inner = quadratic(4.0);
            let mut count = 0;
            let mut f = |x: &[f32], g: &mut [f32]| -> crate::Result<f32> {
                count += 1;
                let v = inner(x, g)?;
                Ok(if count > 4 { f32::NAN } else { v })
            };
            let r = opt
                .minimize(vec![3.0; 8], &mut f, &mut no_callback())
                .unwrap();
            assert_eq!(r.reason, StopReason::NonFinite, "{ls:?}");
            assert!(r.loss.is_finite());
            let mut g = vec![0.0; 8];
            assert_eq!(quadratic(4.0)(&r.x, &mut g).unwrap(), r.loss);
        }
    }

    #[test]
    fn nonfinite_gradient_is_avoided_by_line_search() {
        // Loss is finite everywhere but the gradient is infinite beyond |x| > 50:
        // the first trial step overshoots there and must be pulled back.
        let mut opt = Lbfgs::new(100);
        opt.lr = 1000.0;
        let mut f = |x: &[f32], g: &mut [f32]| -> crate::Result<f32> {
            let mut s = 0.0f64;
            for (gi, &xi) in g.iter_mut().zip(x) {
                let r = xi as f64 - 2.0;
                s += r * r;
                *gi = if xi.abs() > 50.0 {
                    f32::INFINITY
                } else {
                    (2.0 * r) as f32
                };
            }
            Ok(s as f32)
        };
        let r = opt
            .minimize(vec![-3.0; 4], &mut f, &mut no_callback())
            .unwrap();
        assert_all_near(&r.x, |_| 2.0, 1e-3);
    }

    #[test]
    fn objective_error_is_returned() {
        let mut opt = Lbfgs::new(10);
        let mut f = |_: &[f32], _: &mut [f32]| -> crate::Result<f32> {
            Err(candle_core::Error::Msg("device lost".into()).into())
        };
        let e = opt
            .minimize(vec![0.0; 3], &mut f, &mut no_callback())
            .unwrap_err();
        assert!(e.to_string().contains("device lost"));
    }

    #[test]
    fn budgets_are_respected() {
        let mut opt = Lbfgs::new(5);
        let mut f = rosenbrock;
        let r = opt
            .minimize(rosenbrock_start(4), &mut f, &mut no_callback())
            .unwrap();
        assert!(r.iterations <= 5);
        assert!(r.evaluations <= opt.max_evals);
        assert!(matches!(
            r.reason,
            StopReason::MaxIterations | StopReason::MaxEvaluations
        ));

        let mut opt = Lbfgs::new(0);
        let r = opt
            .minimize(rosenbrock_start(4), &mut f, &mut no_callback())
            .unwrap();
        assert_eq!((r.iterations, r.evaluations), (0, 1));
        assert_eq!(r.reason, StopReason::MaxIterations);
    }

    #[test]
    fn already_optimal_start() {
        let mut opt = Lbfgs::new(10);
        let mut f = rosenbrock;
        let r = opt
            .minimize(vec![1.0; 6], &mut f, &mut no_callback())
            .unwrap();
        assert_eq!(r.reason, StopReason::GradientTolerance);
        assert_eq!(r.iterations, 0);
        assert_eq!(r.loss, 0.0);
    }

    #[test]
    fn cubic_minimizer_finds_quadratic_minimum() {
        // phi(t) = (t - 2)^2: exact data at t = 0 and t = 5.
        let p = |t: f64| LinePoint {
            t,
            f: (t - 2.0) * (t - 2.0),
            gtd: 2.0 * (t - 2.0),
        };
        let t = cubic_minimizer(p(0.0), p(5.0), 0.0, 5.0);
        assert!((t - 2.0).abs() < 1e-12, "{t}");
        let t = cubic_minimizer(p(5.0), p(0.0), 0.0, 5.0);
        assert!((t - 2.0).abs() < 1e-12, "{t}");
        // Clamped to the bounds.
        assert_eq!(cubic_minimizer(p(0.0), p(5.0), 3.0, 4.0), 3.0);
    }
}
