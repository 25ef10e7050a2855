//! Content loss: mean squared difference to the content image's features (CNNMRF, neural-style).

use std::collections::BTreeMap;

use candle_core::{Result, Tensor};

use super::{feature, FeatureLoss, Term};
use crate::vgg::LayerId;

pub struct ContentLoss {
    pub layer: LayerId,
    target: Tensor,
    pub weight: f64,
}

impl ContentLoss {
    pub fn new(layer: LayerId, target: Tensor, weight: f64) -> Self {
        Self {
            layer,
            target,
            weight,
        }
    }
}

impl FeatureLoss for ContentLoss {
    fn layers(&self) -> Vec<LayerId> {
        vec![self.layer]
    }

    fn eval(&mut self, features: &BTreeMap<LayerId, Tensor>) -> Result<Vec<Term>> {
        let f = feature(features, self.layer)?;
        if f.dims() != self.target.dims() {
            candle_core::bail!(
                "content features {:?} vs target {:?}",
                f.dims(),
                self.target.dims()
            );
        }
        let n = f.elem_count() as f64;
        let diff = (f - &self.target)?;
        let loss = self.weight * super::sum_sq_f64(&diff)? / n;
        let grad = diff.affine(2.0 * self.weight / n, 0.0)?;
        Ok(vec![Term {
            name: "content",
            layer: self.layer,
            loss,
            grad,
        }])
    }
}
