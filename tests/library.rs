//! The library's front door: the builders, their typed errors, and a real texture, comparison
//! and metrics made through them alone.

mod common;

use std::sync::Arc;

use mrfsynth::session::{Network, Synth};
use mrfsynth::synth::{Control, StepInfo};
use mrfsynth::{Error, ErrorKind, Observer, PriorKind, Silent};

fn sample() -> image::RgbImage {
    image::open(common::fetched_image("ihc"))
        .expect("the fetched sample decodes")
        .to_rgb8()
}

fn network() -> Arc<Network> {
    Network::builder()
        .device(mrfsynth::device::DeviceSpec::Cpu)
        .load()
        .expect("weights load")
}

#[test]
fn settings_and_sizes_are_refused_with_their_kind_before_anything_loads() {
    let s = sample();
    let e = Synth::texture(&s)
        .size(0, 64)
        .build()
        .err()
        .expect("refused");
    assert_eq!(e.kind(), ErrorKind::Settings, "{e}");
    let e = Synth::texture(&s).levels(0).build().err().expect("refused");
    assert_eq!(e.kind(), ErrorKind::Settings, "{e}");
    assert!(e.to_string().contains("levels"), "{e}");
    let e = Synth::texture(&s)
        .size(16, 16)
        .build()
        .err()
        .expect("refused");
    assert!(matches!(e, Error::TooSmall(_)), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let e = Synth::transfer(&s, &s)
        .size(64, 64)
        .build()
        .err()
        .expect("refused");
    assert_eq!(e.kind(), ErrorKind::Settings, "{e}");
    let e = Synth::texture(&s)
        .size(1024, 1024)
        .max_memory(1 << 20)
        .build()
        .err()
        .expect("refused");
    assert!(matches!(e, Error::NotEnoughMemory(_)), "{e:?}");
    assert!(!e.one_line().contains('\n'));
}

/// Stops after a few iterations: the run hands back what it has.
struct StopAfter(usize);

impl Observer for StopAfter {
    fn step(&mut self, _: usize, info: &StepInfo, _: &[f32], _: u32, _: u32) -> Control {
        if info.iteration + 1 >= self.0 {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

#[test]
fn a_texture_a_comparison_and_metrics_through_the_builders() {
    let net = network();
    let s = image::imageops::crop_imm(&sample(), 0, 0, 128, 128).to_image();
    let job = |seed: u64| {
        Synth::texture(&s)
            .size(96, 64)
            .levels(1)
            .iterations(15)
            .seed(seed)
            .network(net.clone())
            .params(|p| p.init = mrfsynth::synth::Init::Noise)
            .build()
            .expect("planned")
    };
    let a = job(1).run(&mut Silent).expect("ran");
    assert_eq!(a.image().dimensions(), (96, 64));
    assert!(!a.report().interrupted);
    let again = job(1).run(&mut Silent).expect("ran");
    assert_eq!(a.image(), again.image(), "same seed, same pixels");
    let b = job(2).run(&mut Silent).expect("ran");
    assert_ne!(a.image(), b.image(), "another seed, another texture");

    let stopped = job(1).run(&mut StopAfter(3)).expect("ran");
    assert!(stopped.report().interrupted);
    assert_eq!(stopped.image().dimensions(), (96, 64));

    let m = Synth::metrics(a.image(), &s)
        .network(net.clone())
        .compute()
        .expect("scored");
    assert!(m.swd.is_finite() && m.swd > 0.0, "{}", m.swd);
    assert!((0.0..=1.0).contains(&m.copy_score), "{}", m.copy_score);

    let runs = Synth::compare(&s)
        .with(|j| j.size(64, 64).levels(1).iterations(5).network(net.clone()))
        .build()
        .expect("planned")
        .run(&mut Silent)
        .expect("ran");
    let priors: Vec<PriorKind> = runs.iter().map(|r| r.prior).collect();
    assert_eq!(priors, [PriorKind::Mrf, PriorKind::Gram]);
    for r in &runs {
        assert_eq!(r.synthesis.image().dimensions(), (64, 64));
        assert!(r.metrics.swd.is_finite());
    }
}
