//! The function the optimiser minimises: pixels -> VGG -> priors -> gradient at the pixels.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};

use crate::prior::tv::tv_loss_and_grad;
use crate::prior::FeatureLoss;
use crate::vgg::{LayerId, Vgg19};

/// Where an evaluation's time goes.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timing {
    pub evaluations: usize,
    pub forward_s: f64,
    pub priors_s: f64,
    pub backward_s: f64,
}

pub struct Objective<'a> {
    pub vgg: &'a Vgg19,
    pub priors: Vec<Box<dyn FeatureLoss + 'a>>,
    pub tv_weight: f64,
    pub wrap: bool,
    pub width: usize,
    pub height: usize,
    pub timing: Timing,
    /// Loss of each named term at the last evaluation.
    pub last_terms: BTreeMap<String, f64>,
}

impl<'a> Objective<'a> {
    pub fn new(
        vgg: &'a Vgg19,
        priors: Vec<Box<dyn FeatureLoss + 'a>>,
        tv_weight: f64,
        width: usize,
        height: usize,
    ) -> Self {
        Self {
            vgg,
            priors,
            tv_weight,
            wrap: false,
            width,
            height,
            timing: Timing::default(),
            last_terms: BTreeMap::new(),
        }
    }

    fn device(&self) -> &Device {
        self.vgg.device()
    }

    /// Loss and gradient (written into `grad`) at the RGB image `x` (planar, 0..255).
    pub fn evaluate(&mut self, x: &[f32], grad: &mut [f32]) -> candle_core::Result<f64> {
        let t0 = Instant::now();
        let img = Tensor::from_slice(x, (1, 3, self.height, self.width), self.device())?;
        let taps: Vec<LayerId> = self.priors.iter().flat_map(|p| p.layers()).collect();
        let input = self.vgg.preprocess(&img)?;
        let fwd = self.vgg.forward_with(&input, &taps, true, self.wrap)?;
        let t1 = Instant::now();

        let mut loss = 0.0;
        self.last_terms.clear();
        let mut grads: BTreeMap<LayerId, Tensor> = BTreeMap::new();
        for prior in &mut self.priors {
            for term in prior.eval(&fwd.features)? {
                loss += term.loss;
                *self
                    .last_terms
                    .entry(format!("{}:{}", term.name, term.layer))
                    .or_default() += term.loss;
                let g = match grads.remove(&term.layer) {
                    Some(g) => (g + term.grad)?,
                    None => term.grad,
                };
                grads.insert(term.layer, g);
            }
        }
        let t2 = Instant::now();

        let mut g_img = self
            .vgg
            .preprocess_backward(&self.vgg.backward(&fwd, &grads)?)?;
        if self.tv_weight > 0.0 {
            let (tv, tv_grad) = tv_loss_and_grad(&img, self.tv_weight, self.wrap)?;
            loss += tv;
            self.last_terms.insert("tv".into(), tv);
            g_img = (g_img + tv_grad)?;
        }
        let g: Vec<f32> = g_img.flatten_all()?.to_vec1()?;
        grad.copy_from_slice(&g);
        let t3 = Instant::now();

        self.timing.evaluations += 1;
        self.timing.forward_s += secs(t1 - t0);
        self.timing.priors_s += secs(t2 - t1);
        self.timing.backward_s += secs(t3 - t2);
        Ok(loss)
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl crate::optim::Objective for Objective<'_> {
    fn eval(&mut self, x: &[f32], grad: &mut [f32]) -> crate::Result<f32> {
        Ok(self.evaluate(x, grad)? as f32)
    }
}
