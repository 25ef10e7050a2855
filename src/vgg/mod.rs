//! VGG19 features and their input gradient.
//!
//! The network's weights are constants: the only gradient ever needed is the one with respect
//! to the input image, so the network carries its own backward pass (transposed convolutions,
//! ReLU masks, one-argmax pooling) instead of candle's generic autograd.

pub mod layers;
internal_mod!(conv, pool, thin, winograd);

use std::collections::BTreeMap;

use candle_core::{DType, Device, Result, Tensor};

pub use conv::{Conv3x3, Precision};
pub use layers::{LayerId, LayerKind, LAYERS};
pub use pool::Pooling;

use crate::assets::weights::{Preprocess, VggWeights};

pub struct Vgg19 {
    convs: Vec<Conv3x3>,
    pooling: Pooling,
    preprocess: Preprocess,
    device: Device,
    precision: Precision,
}

/// The result of a forward pass: the requested layers, and what the backward pass needs.
pub struct Forward {
    pub features: BTreeMap<LayerId, Tensor>,
    /// Output of every ReLU up to the deepest layer asked for (empty without a tape).
    tape: Vec<Option<Tensor>>,
    deepest: usize,
    /// Circular padding (seamless tiles); the backward pass follows it.
    wrap: bool,
}

impl Vgg19 {
    pub fn new(weights: &VggWeights, pooling: Pooling, device: &Device) -> Result<Self> {
        let convs = weights
            .convs
            .iter()
            .map(|c| Conv3x3::new(&c.weight, &c.bias, device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            convs,
            pooling,
            preprocess: weights.preprocess,
            device: device.clone(),
            precision: Precision::F32,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the CPU convolutions' products in `precision` (bf16 needs AVX-512 BF16; f32 runs
    /// where it is missing, and on other devices).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        let precision = if self.device.is_cpu() {
            precision.effective()
        } else {
            Precision::F32
        };
        self.convs
            .iter_mut()
            .for_each(|c| c.set_precision(precision));
        self.precision = precision;
        self
    }

    /// The precision the convolutions run in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// RGB `[1,3,H,W]` in 0..255 to the network's input, as the weights expect it.
    pub fn preprocess(&self, rgb: &Tensor) -> Result<Tensor> {
        let chans = self
            .preprocess
            .channel_map()
            .iter()
            .map(|&(src, scale, offset)| rgb.narrow(1, src, 1)?.affine(scale as f64, offset as f64))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&chans, 1)
    }

    /// The RGB colour (0..255) the network sees as zero input: the training set's mean.
    pub fn input_mean_rgb(&self) -> [f32; 3] {
        let mut rgb = [0f32; 3];
        for (src, scale, offset) in self.preprocess.channel_map() {
            rgb[src] = -offset / scale;
        }
        rgb
    }

    /// Gradient at the RGB image given the gradient at the network input.
    pub fn preprocess_backward(&self, grad: &Tensor) -> Result<Tensor> {
        let map = self.preprocess.channel_map();
        let chans = (0..3)
            .map(|rgb_c| {
                let (i, &(_, scale, _)) = map
                    .iter()
                    .enumerate()
                    .find(|(_, m)| m.0 == rgb_c)
                    .expect("every RGB channel feeds one input channel");
                grad.narrow(1, i, 1)?.affine(scale as f64, 0.0)
            })
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&chans, 1)
    }

    /// Runs the network on a preprocessed input up to the deepest of `taps`. With `keep_tape`
    /// the activations the backward pass needs are kept.
    pub fn forward(&self, input: &Tensor, taps: &[LayerId], keep_tape: bool) -> Result<Forward> {
        self.forward_with(input, taps, keep_tape, false)
    }

    /// [`Self::forward`] with a choice of padding: `wrap` treats the image as a torus.
    pub fn forward_with(
        &self,
        input: &Tensor,
        taps: &[LayerId],
        keep_tape: bool,
        wrap: bool,
    ) -> Result<Forward> {
        let deepest = taps.iter().map(|l| l.index()).max().unwrap_or(0);
        let tapped = |i: usize| taps.iter().any(|t| t.index() == i);
        let mut features = BTreeMap::new();
        let mut tape = Vec::new();
        let mut x = input.clone();
        let mut i = 0;
        while i <= deepest {
            // A convolution whose own output nobody asked for runs fused with its ReLU.
            let fuse = matches!(LAYERS[i].kind, LayerKind::Conv(_))
                && i < deepest
                && LAYERS[i + 1].kind == LayerKind::Relu
                && !tapped(i);
            x = match LAYERS[i].kind {
                LayerKind::Conv(k) if fuse => {
                    if keep_tape {
                        tape.push(None);
                    }
                    i += 1;
                    self.convs[k].forward_relu(&x, wrap)?
                }
                LayerKind::Conv(k) => self.convs[k].forward(&x, wrap)?,
                LayerKind::Relu => x.relu()?,
                LayerKind::Pool => self.pooling.forward(&x)?,
            };
            if keep_tape {
                tape.push(matches!(LAYERS[i].kind, LayerKind::Relu).then(|| x.clone()));
            }
            if tapped(i) {
                features.insert(LayerId::from_index(i), x.clone());
            }
            i += 1;
        }
        Ok(Forward {
            features,
            tape,
            deepest,
            wrap,
        })
    }

    /// Gradient at the network input for gradients given at named layers of a taped forward.
    pub fn backward(&self, fwd: &Forward, grads: &BTreeMap<LayerId, Tensor>) -> Result<Tensor> {
        if fwd.tape.is_empty() {
            candle_core::bail!("backward needs a forward pass run with keep_tape");
        }
        let start = grads.keys().map(|l| l.index()).max().unwrap_or(0);
        if start > fwd.deepest {
            candle_core::bail!("gradient given below the deepest layer of the forward pass");
        }
        let mut g: Option<Tensor> = None;
        let mut i = start as isize;
        while i >= 0 {
            let at = i as usize;
            if let Some(extra) = grads.get(&LayerId::from_index(at)) {
                g = Some(match g {
                    Some(g) => (g + extra)?,
                    None => extra.clone(),
                });
            }
            let Some(cur) = g.take() else {
                i -= 1;
                continue;
            };
            g = Some(match LAYERS[at].kind {
                LayerKind::Relu => {
                    let y = fwd.tape[at].as_ref().expect("ReLU outputs are taped");
                    // Fuse the mask into the convolution below unless a gradient enters between.
                    match LAYERS.get(at.wrapping_sub(1)).map(|l| l.kind) {
                        Some(LayerKind::Conv(k))
                            if !grads.contains_key(&LayerId::from_index(at - 1)) =>
                        {
                            i -= 1;
                            self.convs[k].backward_input_through_relu(&cur, y, fwd.wrap)?
                        }
                        _ => cur.mul(&y.gt(0f32)?.to_dtype(DType::F32)?)?,
                    }
                }
                LayerKind::Conv(k) => self.convs[k].backward_input(&cur, fwd.wrap)?,
                LayerKind::Pool => {
                    let x = fwd.tape[at - 1]
                        .as_ref()
                        .expect("pools follow a taped ReLU");
                    self.pooling.backward(x, &cur)?
                }
            });
            i -= 1;
        }
        match g {
            Some(g) => Ok(g),
            None => candle_core::bail!("no gradient given"),
        }
    }
}

/// Values in [-0.5, 0.5) for the convolution tests, from the crate's one test noise source.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u32) -> Vec<f32> {
    let mut v = crate::prior::pseudo_random(n, seed as u64);
    v.iter_mut().for_each(|x| *x -= 0.5);
    v
}
