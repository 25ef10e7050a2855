//! Levels too large to optimise in one piece: overlapping tiles that share the level's style
//! banks. Tiles are done in raster order, each starting from the current image (so it carries
//! on from the tiles before it), and are blended back with linear ramps over the overlap on
//! their top and left sides, where finished neighbours lie; their bottom and right borders are
//! in turn ramped over by the next tiles. No seam is left at a tile's own (padded) edges.

use crate::image_io::RgbImageF32;

/// Tile origins and sizes are multiples of this: four 2x2 pools, so every feature map's grid
/// (and a stride-2 patch grid at relu4_x) lines up with the whole image's.
pub const TILE_ALIGN: u32 = 16;

/// A rectangle of the level's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// Overlap between neighbouring tiles of side `tile`: an eighth of the tile, at least 64 px
/// (a few relu4_1 patches), aligned.
pub fn overlap_for(tile: u32) -> u32 {
    (tile / 8).max(64).div_ceil(TILE_ALIGN) * TILE_ALIGN
}

/// Starts along one side of length `len` for tiles of `tile` overlapping by `overlap`: the last
/// tile ends at the edge.
fn starts(len: u32, tile: u32, overlap: u32) -> Vec<u32> {
    if len <= tile {
        return vec![0];
    }
    let step = tile - overlap;
    let count = (len - overlap).div_ceil(step);
    let last = len - tile;
    (0..count).map(|i| (i * step).min(last)).collect()
}

/// Tiles covering a `width` x `height` image, in raster order. `tile` and `overlap` are
/// multiples of [`TILE_ALIGN`], so every tile but the last of a row or column starts aligned.
pub fn grid(width: u32, height: u32, tile: u32, overlap: u32) -> Vec<Rect> {
    let (tw, th) = (tile.min(width), tile.min(height));
    let xs = starts(width, tw, overlap);
    let ys = starts(height, th, overlap);
    ys.iter()
        .flat_map(|&y| {
            xs.iter().map(move |&x| Rect {
                x,
                y,
                width: tw,
                height: th,
            })
        })
        .collect()
}

/// The pixels of `r`.
pub fn crop(img: &RgbImageF32, r: Rect) -> RgbImageF32 {
    let mut data = Vec::with_capacity(3 * (r.width * r.height) as usize);
    for c in 0..3 {
        for y in r.y..r.y + r.height {
            let row = ((c * img.height + y) * img.width + r.x) as usize;
            data.extend_from_slice(&img.data[row..row + r.width as usize]);
        }
    }
    RgbImageF32::new(r.width, r.height, data)
}

/// Writes `tile` over `r` of `img`, ramping in over `overlap` px from its top and left edges
/// where those edges are inside the image (finished tiles lie there).
pub fn blend_into(img: &mut RgbImageF32, tile: &RgbImageF32, r: Rect, overlap: u32) {
    let ramp = |d: u32, inside: bool| -> f32 {
        if !inside || overlap == 0 {
            1.0
        } else {
            ((d as f32 + 0.5) / overlap as f32).min(1.0)
        }
    };
    for c in 0..3 {
        for ty in 0..r.height {
            let wy = ramp(ty, r.y > 0);
            for tx in 0..r.width {
                let w = wy * ramp(tx, r.x > 0);
                let dst = ((c * img.height + r.y + ty) * img.width + r.x + tx) as usize;
                let src = ((c * r.height + ty) * r.width + tx) as usize;
                img.data[dst] = w * tile.data[src] + (1.0 - w) * img.data[dst];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_the_image_with_aligned_overlapping_steps() {
        for (w, h, t) in [
            (1024, 768, 256),
            (4096, 4096, 1024),
            (640, 320, 512),
            (200, 200, 512),
        ] {
            let o = overlap_for(t);
            let tiles = grid(w, h, t, o);
            let mut covered = vec![false; (w * h) as usize];
            for r in &tiles {
                assert!(r.x + r.width <= w && r.y + r.height <= h, "{r:?}");
                if r.x + r.width < w {
                    assert_eq!(r.x % TILE_ALIGN, 0, "{r:?}");
                }
                for y in r.y..r.y + r.height {
                    for x in r.x..r.x + r.width {
                        covered[(y * w + x) as usize] = true;
                    }
                }
            }
            assert!(covered.iter().all(|&c| c), "{w}x{h} tile {t}: not covered");
            // Neighbours overlap by at least the ramp width.
            for pair in tiles.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                if a.y == b.y {
                    assert!(a.x + a.width >= b.x + o, "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn blending_ramps_from_the_old_pixels_to_the_tile() {
        let mut img = RgbImageF32::new(8, 4, vec![0.0; 3 * 32]);
        let tile = RgbImageF32::new(4, 4, vec![100.0; 3 * 16]);
        let r = Rect {
            x: 4,
            y: 0,
            width: 4,
            height: 4,
        };
        blend_into(&mut img, &tile, r, 4);
        let row: Vec<f32> = (0..8).map(|x| img.get(x, 2, 0)).collect();
        assert_eq!(&row[..4], &[0.0; 4]);
        assert!(
            row[4] > 0.0 && row[4] < row[5] && row[6] < row[7],
            "{row:?}"
        );
        assert!((row[7] - 100.0).abs() < 1e-4 || row[7] <= 100.0);
        // A tile at the image's top-left corner is written as it is.
        let mut img2 = RgbImageF32::new(8, 4, vec![0.0; 3 * 32]);
        blend_into(&mut img2, &tile, Rect { x: 0, ..r }, 4);
        assert_eq!(img2.get(0, 0, 1), 100.0);
        assert_eq!(crop(&img, r).get(3, 1, 2), img.get(7, 1, 2));
    }
}
