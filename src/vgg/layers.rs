//! The layer table of VGG19 and the names users give layers.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// Index into the sixteen convolutions.
    Conv(usize),
    Relu,
    Pool,
}

#[derive(Debug, Clone, Copy)]
pub struct LayerDef {
    pub name: &'static str,
    pub kind: LayerKind,
}

const fn conv(name: &'static str, k: usize) -> LayerDef {
    LayerDef {
        name,
        kind: LayerKind::Conv(k),
    }
}
const fn relu(name: &'static str) -> LayerDef {
    LayerDef {
        name,
        kind: LayerKind::Relu,
    }
}
const fn pool(name: &'static str) -> LayerDef {
    LayerDef {
        name,
        kind: LayerKind::Pool,
    }
}

pub const LAYERS: [LayerDef; 37] = [
    conv("conv1_1", 0),
    relu("relu1_1"),
    conv("conv1_2", 1),
    relu("relu1_2"),
    pool("pool1"),
    conv("conv2_1", 2),
    relu("relu2_1"),
    conv("conv2_2", 3),
    relu("relu2_2"),
    pool("pool2"),
    conv("conv3_1", 4),
    relu("relu3_1"),
    conv("conv3_2", 5),
    relu("relu3_2"),
    conv("conv3_3", 6),
    relu("relu3_3"),
    conv("conv3_4", 7),
    relu("relu3_4"),
    pool("pool3"),
    conv("conv4_1", 8),
    relu("relu4_1"),
    conv("conv4_2", 9),
    relu("relu4_2"),
    conv("conv4_3", 10),
    relu("relu4_3"),
    conv("conv4_4", 11),
    relu("relu4_4"),
    pool("pool4"),
    conv("conv5_1", 12),
    relu("relu5_1"),
    conv("conv5_2", 13),
    relu("relu5_2"),
    conv("conv5_3", 14),
    relu("relu5_3"),
    conv("conv5_4", 15),
    relu("relu5_4"),
    pool("pool5"),
];

/// A layer of VGG19, ordered by depth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerId(u8);

impl LayerId {
    pub fn from_index(i: usize) -> Self {
        assert!(i < LAYERS.len());
        LayerId(i as u8)
    }

    pub fn index(self) -> usize {
        self.0 as usize
    }

    pub fn name(self) -> &'static str {
        LAYERS[self.index()].name
    }

    /// How many 2x2 pools lie before this layer: its resolution is the input's / 2^k.
    pub fn downsampling(self) -> usize {
        LAYERS[..=self.index()]
            .iter()
            .filter(|l| l.kind == LayerKind::Pool)
            .count()
    }

    /// Parses a comma-separated list such as `relu3_1,relu4_1`.
    pub fn parse_list(s: &str) -> Result<Vec<LayerId>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::parse)
            .collect()
    }
}

impl std::str::FromStr for LayerId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        LAYERS
            .iter()
            .position(|l| l.name == s)
            .map(LayerId::from_index)
            .ok_or_else(|| {
                format!("unknown VGG19 layer '{s}' (expected e.g. relu3_1, conv4_2, pool2)")
            })
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_downsample() {
        let l: LayerId = "relu4_2".parse().unwrap();
        assert_eq!(l.name(), "relu4_2");
        assert_eq!(l.downsampling(), 3);
        assert_eq!("pool1".parse::<LayerId>().unwrap().downsampling(), 1);
        assert!("relu9_9".parse::<LayerId>().is_err());
        assert_eq!(LayerId::parse_list("relu3_1, relu4_1").unwrap().len(), 2);
    }
}
