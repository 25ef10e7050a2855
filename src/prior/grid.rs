//! Where patches start on a feature map: the strided grids that unfolding, folding and the CUDA
//! kernels share (a leaf module, so that `prior::patches` and `cuda::patches` need not import
//! each other).

/// Number of patch positions along a side of length `n`.
pub fn positions(n: usize, k: usize, stride: usize) -> usize {
    if n < k {
        0
    } else {
        (n - k) / stride + 1
    }
}

/// Where patches start on a map: rows `ys` and columns `xs` (row-major over both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grid {
    pub ys: Vec<usize>,
    pub xs: Vec<usize>,
}

impl Grid {
    /// Every `stride`-th start from 0; with `full`, also the last start (n - k) where the stride
    /// steps over it (CNNMRF's `computegrid(.., flag_all = 1)`), so that the last rows and
    /// columns of the map are covered too.
    pub fn new(h: usize, w: usize, k: usize, stride: usize, full: bool) -> Grid {
        Grid {
            ys: Self::axis(h, k, stride, full),
            xs: Self::axis(w, k, stride, full),
        }
    }

    fn axis(n: usize, k: usize, stride: usize, full: bool) -> Vec<usize> {
        let mut v: Vec<usize> = (0..positions(n, k, stride)).map(|i| i * stride).collect();
        if full && n >= k && v.last() != Some(&(n - k)) {
            v.push(n - k);
        }
        v
    }

    /// Number of patches.
    pub fn len(&self) -> usize {
        self.ys.len() * self.xs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every patch lies inside an `h` x `w` map.
    pub(crate) fn fits(&self, h: usize, w: usize, k: usize) -> bool {
        self.ys.iter().all(|&y| y + k <= h) && self.xs.iter().all(|&x| x + k <= w)
    }

    /// Top-left corner of patch `n`.
    pub(crate) fn corner(&self, n: usize) -> (usize, usize) {
        let pw = self.xs.len();
        (self.ys[n / pw], self.xs[n % pw])
    }

    /// Whether this is the plain strided grid (the one `unfold` and `fold` use).
    pub(crate) fn is_strided(&self, h: usize, w: usize, k: usize, stride: usize) -> bool {
        *self == Grid::new(h, w, k, stride, false)
    }
}
