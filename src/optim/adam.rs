//! Adam (Kingma & Ba) with bias correction.
//!
//! One objective evaluation per iteration. Iteration `k` evaluates the
//! current point, reports it to the callback, and then (unless it was the
//! last iteration) takes the step
//! `x -= lr * m̂ / (sqrt(v̂) + eps)` with the bias-corrected moment estimates
//! `m̂ = m / (1 - beta1^k)`, `v̂ = v / (1 - beta2^k)`. Because the final point
//! is always evaluated, no step is wasted and the best point is known exactly.

use rayon::prelude::*;

use super::{norm2, Control, Objective, OptimResult, Optimizer, StepInfo, StopReason, Tracker};

/// Adam settings. Build with `Default` (or [`Adam::new`]) and adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    /// Step size in parameter units. Adam's steps are roughly `lr` per
    /// coordinate early on, whatever the loss scale, so for pixel values in
    /// `0..=255` the default 1.0 moves each pixel by about one intensity level
    /// per iteration (neural-style's Adam default is 10 for the same scale).
    pub lr: f32,
    /// Decay of the first-moment estimate (default 0.9).
    pub beta1: f32,
    /// Decay of the second-moment estimate (default 0.999).
    pub beta2: f32,
    /// Added to the denominator for stability (default 1e-8).
    pub eps: f32,
    /// Number of iterations (= evaluations; default 1000).
    pub max_iter: usize,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            lr: 1.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_iter: 1000,
        }
    }
}

impl Adam {
    /// Default settings with the given step size and iteration count.
    pub fn new(lr: f32, max_iter: usize) -> Self {
        Adam {
            lr,
            max_iter,
            ..Adam::default()
        }
    }
}

const CHUNK: usize = 1 << 15;

/// One Adam update of `x` in place (moments `m`, `v` updated too).
#[allow(clippy::too_many_arguments)]
fn adam_update(
    x: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    beta1: f32,
    beta2: f32,
    step: f32,
    inv_bc2: f32,
    eps: f32,
) {
    let kernel = |x: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]| {
        for (((xi, mi), vi), &gi) in x.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *mi = beta1 * *mi + (1.0 - beta1) * gi;
            *vi = beta2 * *vi + (1.0 - beta2) * gi * gi;
            *xi -= step * *mi / ((*vi * inv_bc2).sqrt() + eps);
        }
    };
    if x.len() <= CHUNK {
        kernel(x, m, v, g);
    } else {
        x.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((x, m), v), g)| kernel(x, m, v, g));
    }
}

impl Optimizer for Adam {
    fn minimize(
        &mut self,
        x0: Vec<f32>,
        f: &mut dyn Objective,
        on_step: &mut dyn FnMut(&StepInfo, &[f32]) -> Control,
    ) -> crate::Result<OptimResult> {
        let n = x0.len();
        let mut tr = Tracker::new(f);
        let mut x = x0;
        if self.max_iter == 0 {
            return Ok(tr.finish(x, StopReason::MaxIterations));
        }
        let mut g = vec![0.0f32; n];
        let mut m = vec![0.0f32; n];
        let mut v = vec![0.0f32; n];
        let reason = loop {
            let Some(loss) = tr.eval(&x, &mut g)? else {
                break StopReason::NonFinite;
            };
            tr.losses.push(loss);
            let k = tr.losses.len();
            let info = StepInfo {
                iteration: k,
                evaluations: tr.evaluations,
                loss,
                grad_norm: norm2(&g) as f32,
            };
            if on_step(&info, &x) == Control::Stop {
                break StopReason::Callback;
            }
            if k >= self.max_iter {
                break StopReason::MaxIterations;
            }
            let bc1 = 1.0 - (self.beta1 as f64).powi(k as i32);
            let bc2 = 1.0 - (self.beta2 as f64).powi(k as i32);
            adam_update(
                &mut x,
                &mut m,
                &mut v,
                &g,
                self.beta1,
                self.beta2,
                (self.lr as f64 / bc1) as f32,
                (1.0 / bc2) as f32,
                self.eps,
            );
        };
        Ok(tr.finish(x, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_functions::{quadratic, quadratic_centre};
    use super::*;

    #[test]
    fn decreases_quadratic_by_orders_of_magnitude() {
        let mut opt = Adam::new(0.1, 2000);
        let mut f = quadratic(100.0);
        let x0 = vec![20.0; 50];
        let r = opt
            .minimize(x0, &mut f, &mut |_: &StepInfo, _: &[f32]| Control::Continue)
            .unwrap();
        assert_eq!(r.iterations, 2000);
        assert_eq!(r.evaluations, 2000);
        assert_eq!(r.reason, StopReason::MaxIterations);
        let first = r.losses[0];
        assert!(r.loss < first * 1e-4, "{} -> {}", first, r.loss);
        for (i, v) in r.x.iter().enumerate() {
            assert!((v - quadratic_centre(i)).abs() < 0.1, "x[{i}] = {v}");
        }
    }

    #[test]
    fn first_step_moves_each_coordinate_by_lr() {
        let mut opt = Adam::new(0.5, 2);
        let mut f = |x: &[f32], g: &mut [f32]| -> crate::Result<f32> {
            // Very different gradient scales per coordinate.
            g[0] = 1000.0;
            g[1] = -0.001;
            Ok(x[0] * 1000.0 - x[1] * 0.001)
        };
        let mut xs = Vec::new();
        let mut cb = |_: &StepInfo, x: &[f32]| {
            xs.push(x.to_vec());
            Control::Continue
        };
        opt.minimize(vec![0.0, 0.0], &mut f, &mut cb).unwrap();
        assert!((xs[1][0] + 0.5).abs() < 1e-4, "{:?}", xs[1]);
        assert!((xs[1][1] - 0.5).abs() < 1e-3, "{:?}", xs[1]);
    }

    #[test]
    fn callback_stop_and_best_point() {
        let mut opt = Adam::new(5.0, 100);
        let mut f = quadratic(1.0);
        let mut calls = 0;
        let r = opt
            .minimize(vec![50.0; 10], &mut f, &mut |_: &StepInfo, _: &[f32]| {
                calls += 1;
                if calls == 4 {
                    Control::Stop
                } else {
                    Control::Continue
                }
            })
            .unwrap();
        assert_eq!(r.iterations, 4);
        assert!(r.stopped_early);
        assert_eq!(r.reason, StopReason::Callback);
        let best = r.losses.iter().cloned().fold(f32::INFINITY, f32::min);
        assert_eq!(r.loss, best);
        let mut g = vec![0.0; 10];
        assert_eq!(quadratic(1.0)(&r.x, &mut g).unwrap(), r.loss);
    }

    #[test]
    fn returns_best_not_last_when_overshooting() {
        // A large step size oscillates around the minimum of |x|-like bowl.
        let mut opt = Adam::new(3.0, 30);
        let mut f = |x: &[f32], g: &mut [f32]| -> crate::Result<f32> {
            g[0] = 2.0 * x[0];
            Ok(x[0] * x[0])
        };
        let r = opt
            .minimize(vec![1.0], &mut f, &mut |_: &StepInfo, _: &[f32]| {
                Control::Continue
            })
            .unwrap();
        let best = r.losses.iter().cloned().fold(f32::INFINITY, f32::min);
        assert_eq!(r.loss, best);
        assert_eq!(r.x[0] * r.x[0], best);
    }

    #[test]
    fn nan_stops_cleanly() {
        let mut opt = Adam::new(0.1, 100);
        let mut count = 0;
        let mut f = |x: &[f32], g: &mut [f32]| -> crate::Result<f32> {
            count += 1;
            g[0] = 2.0 * x[0];
            Ok(if count >= 5 { f32::NAN } else { x[0] * x[0] })
        };
        let r = opt
            .minimize(vec![1.0], &mut f, &mut |_: &StepInfo, _: &[f32]| {
                Control::Continue
            })
            .unwrap();
        assert_eq!(r.reason, StopReason::NonFinite);
        assert_eq!(r.iterations, 4);
        assert_eq!(r.evaluations, 5);
        assert!(r.loss.is_finite());
        assert!(!r.stopped_early);

        let mut f = |_: &[f32], g: &mut [f32]| -> crate::Result<f32> {
            g[0] = f32::INFINITY;
            Ok(1.0)
        };
        let r = opt
            .minimize(vec![7.0], &mut f, &mut |_: &StepInfo, _: &[f32]| {
                Control::Continue
            })
            .unwrap();
        assert_eq!(r.reason, StopReason::NonFinite);
        assert_eq!(r.x, vec![7.0]);
        assert!(r.loss.is_nan());
    }
}
