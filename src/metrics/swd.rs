//! Sliced Wasserstein distance between two sets of feature vectors (Heitz et al. 2021,
//! "A Sliced Wasserstein Loss for Neural Texture Synthesis").
//!
//! Each spatial position of a [C, H, W] feature map is one C-dimensional sample. Both sets are
//! projected onto the same K random unit directions; each projection is sorted; the sorted lists
//! are compared quantile by quantile (when the counts differ, both are resampled to the larger
//! count by linear interpolation between order statistics). The distance is the mean squared
//! difference over directions and quantiles, i.e. the mean over directions of the squared 1-D
//! Wasserstein-2 distance between the projected distributions.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// `k` unit vectors of dimension `c`, uniform on the sphere, from `seed` (stream `stream`).
pub fn random_directions(c: usize, k: usize, seed: u64, stream: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    let mut gauss = move || {
        // Box-Muller; 1 - u keeps the logarithm finite.
        let u: f64 = 1.0 - rng.random::<f64>();
        let v: f64 = rng.random::<f64>();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    (0..k)
        .map(|_| loop {
            let d: Vec<f64> = (0..c).map(|_| gauss()).collect();
            let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-12 {
                break d.into_iter().map(|x| x / norm).collect();
            }
        })
        .collect()
}

/// Projection of the `n` samples of channel-major `f` ([C, n]) onto `d`.
fn project(f: &[f32], n: usize, d: &[f64]) -> Vec<f64> {
    let mut p = vec![0.0f64; n];
    for (ch, &w) in d.iter().enumerate() {
        for (o, &x) in p.iter_mut().zip(&f[ch * n..(ch + 1) * n]) {
            *o += w * x as f64;
        }
    }
    p
}

/// A sorted list resampled to `len` quantiles, linearly interpolated between order statistics
/// (the first and last are kept).
pub fn resample_sorted(v: &[f64], len: usize) -> Vec<f64> {
    let n = v.len();
    if n == len {
        return v.to_vec();
    }
    if n == 1 || len == 1 {
        return vec![v[0]; len];
    }
    let step = (n - 1) as f64 / (len - 1) as f64;
    (0..len)
        .map(|i| {
            let t = i as f64 * step;
            let j = (t.floor() as usize).min(n - 2);
            let f = t - j as f64;
            v[j] * (1.0 - f) + v[j + 1] * f
        })
        .collect()
}

/// SWD between `a` ([C, na], channel-major) and `b` ([C, nb]) along `directions` (each of
/// length C): mean over directions and quantiles of the squared difference of sorted projections.
pub fn sliced_wasserstein(
    a: &[f32],
    na: usize,
    b: &[f32],
    nb: usize,
    directions: &[Vec<f64>],
) -> f64 {
    assert!(na > 0 && nb > 0, "sliced_wasserstein: empty sample set");
    if directions.is_empty() {
        return 0.0;
    }
    let len = na.max(nb);
    let per_dir: Vec<f64> = directions
        .par_iter()
        .map(|d| {
            let mut pa = project(a, na, d);
            let mut pb = project(b, nb, d);
            pa.sort_unstable_by(f64::total_cmp);
            pb.sort_unstable_by(f64::total_cmp);
            let qa = resample_sorted(&pa, len);
            let qb = resample_sorted(&pb, len);
            qa.iter()
                .zip(&qb)
                .map(|(x, y)| (x - y) * (x - y))
                .sum::<f64>()
                / len as f64
        })
        .collect();
    // Summed in order: the same number every run whatever the thread schedule.
    per_dir.iter().sum::<f64>() / per_dir.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_are_unit_and_reproducible() {
        let a = random_directions(5, 4, 7, 3);
        assert_eq!(a, random_directions(5, 4, 7, 3));
        assert_ne!(a, random_directions(5, 4, 7, 4));
        assert_ne!(a, random_directions(5, 4, 8, 3));
        for d in &a {
            assert!((d.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn resampling_interpolates_quantiles() {
        assert_eq!(
            resample_sorted(&[0.0, 2.0, 4.0], 5),
            vec![0.0, 1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(resample_sorted(&[1.0, 2.0], 2), vec![1.0, 2.0]);
        assert_eq!(resample_sorted(&[3.0], 3), vec![3.0; 3]);
    }

    #[test]
    fn zero_for_permutations_and_exact_for_a_shift() {
        // Two channels, 4 samples; b is a permutation of a's samples.
        let a = [1.0f32, 2., 3., 4., 10., 20., 30., 40.];
        let b = [3.0f32, 1., 4., 2., 30., 10., 40., 20.];
        let dirs = random_directions(2, 8, 0, 0);
        assert!(sliced_wasserstein(&a, 4, &b, 4, &dirs) < 1e-20);
        // Shifting every sample by s moves each projection by <s, d>: SWD = mean <s, d>^2.
        let s = [1.5f32, -0.5];
        let c: Vec<f32> = a.iter().enumerate().map(|(i, x)| x + s[i / 4]).collect();
        let want = dirs
            .iter()
            .map(|d| (d[0] * 1.5 - d[1] * 0.5).powi(2))
            .sum::<f64>()
            / dirs.len() as f64;
        let got = sliced_wasserstein(&a, 4, &c, 4, &dirs);
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
}
