//! The bad-input corpus: every case ends with one clear line on stderr, its documented exit
//! code, no panic, no output file, and the inputs untouched. Odd-but-valid images must work.
//!
//! Exit codes (README): 1 failure during the run, 2 bad usage, 3 bad input file, 4 weights.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Case {
    name: &'static str,
    args: Vec<String>,
    code: i32,
    /// A word the error line must contain (the flag or the problem).
    says: &'static str,
}

fn write_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 13 % 256) as u8,
            ((x + y) * 5 % 256) as u8,
        ])
    });
    img.save(path).unwrap();
}

/// Files the corpus needs, generated in a scratch folder (large ones are never stored).
fn make_inputs(dir: &Path) {
    write_png(&dir.join("ok.png"), 64, 64);
    write_png(&dir.join("tiny.png"), 1, 1);
    write_png(&dir.join("small.png"), 16, 16);
    fs::write(dir.join("empty.png"), b"").unwrap();
    let png = fs::read(dir.join("ok.png")).unwrap();
    fs::write(dir.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    let rgb = image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 3, y as u8 * 3, 90]));
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
        .encode_image(&rgb)
        .unwrap();
    fs::write(dir.join("ok.jpg"), &jpg).unwrap();
    fs::write(dir.join("truncated.jpg"), &jpg[..jpg.len() / 3]).unwrap();
    // Only the end-of-image marker missing: the decoder alone would fill in grey.
    fs::write(dir.join("no_end.jpg"), &jpg[..jpg.len() - 2]).unwrap();
    fs::write(dir.join("notanimage.png"), b"this is text, not a picture\n").unwrap();
    // A PNG header that claims 100000 x 100000 pixels (decompression-bomb guard).
    fs::write(dir.join("huge.png"), huge_png_header(100_000, 100_000)).unwrap();
    fs::create_dir_all(dir.join("folder.png")).unwrap();
    fs::write(dir.join("weights.safetensors"), b"not safetensors at all").unwrap();
}

fn huge_png_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&ihdr);
    out.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    out
}

fn corpus(dir: &Path, out: &Path) -> Vec<Case> {
    let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let o = out.to_string_lossy().into_owned();
    let tex = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "texture".into(),
            "--style".into(),
            d("ok.png"),
            "-o".into(),
            o.clone(),
            "--iterations".into(),
            "2".into(),
            "--levels".into(),
            "1".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let with_style = |style: &str| -> Vec<String> {
        vec![
            "texture".into(),
            "--style".into(),
            d(style),
            "-o".into(),
            o.clone(),
        ]
    };
    let case = |name, args, code, says| Case {
        name,
        args,
        code,
        says,
    };
    vec![
        case(
            "missing file",
            vec![
                "texture".into(),
                "--style".into(),
                d("nope.png"),
                "-o".into(),
                o.clone(),
            ],
            3,
            "nope.png",
        ),
        case("folder as image", with_style("folder.png"), 3, "folder.png"),
        case("empty file", with_style("empty.png"), 3, "empty.png"),
        case(
            "truncated png",
            with_style("truncated.png"),
            3,
            "truncated.png",
        ),
        case(
            "truncated jpeg",
            with_style("truncated.jpg"),
            3,
            "truncated.jpg",
        ),
        case(
            "jpeg without its end marker",
            with_style("no_end.jpg"),
            3,
            "no_end.jpg",
        ),
        case(
            "text named .png",
            with_style("notanimage.png"),
            3,
            "notanimage.png",
        ),
        case("1x1 image", with_style("tiny.png"), 3, "too small"),
        case(
            "sample smaller than a patch",
            with_style("small.png"),
            3,
            "px",
        ),
        case(
            "100000x100000 header",
            with_style("huge.png"),
            3,
            "huge.png",
        ),
        case(
            "missing output folder",
            vec![
                "texture".into(),
                "--style".into(),
                d("ok.png"),
                "-o".into(),
                d("no/such/dir/out.png"),
            ],
            3,
            "does not exist",
        ),
        case(
            "unknown output extension",
            vec![
                "texture".into(),
                "--style".into(),
                d("ok.png"),
                "-o".into(),
                d("out.xyz"),
            ],
            2,
            "extension",
        ),
        case(
            "no output extension",
            vec![
                "texture".into(),
                "--style".into(),
                d("ok.png"),
                "-o".into(),
                d("out"),
            ],
            2,
            "extension",
        ),
        case("size zero", tex(&["--size", "0"]), 2, "--size"),
        case("size negative", tex(&["--size", "-5"]), 2, "-5"),
        case("size nan", tex(&["--size", "NaN"]), 2, "--size"),
        case(
            "size absurd",
            tex(&["--size", "100000x100000"]),
            2,
            "--size",
        ),
        case(
            "iterations zero",
            tex(&["--iterations", "0"]),
            2,
            "--iterations",
        ),
        case(
            "iterations absurd",
            tex(&["--iterations", "999999999"]),
            2,
            "--iterations",
        ),
        case("levels zero", tex(&["--levels", "0"]), 2, "--levels"),
        case("levels absurd", tex(&["--levels", "99"]), 2, "--levels"),
        case(
            "level ratio nan",
            tex(&["--level-ratio", "NaN"]),
            2,
            "--level-ratio",
        ),
        case(
            "level ratio > 1",
            tex(&["--level-ratio", "1.5"]),
            2,
            "--level-ratio",
        ),
        case(
            "mrf weight negative",
            tex(&["--mrf-weight=-1"]),
            2,
            "--mrf-weight",
        ),
        case(
            "mrf weight nan",
            tex(&["--mrf-weight", "NaN"]),
            2,
            "--mrf-weight",
        ),
        case(
            "tv weight inf",
            tex(&["--tv-weight", "inf"]),
            2,
            "--tv-weight",
        ),
        case(
            "patch size zero",
            tex(&["--patch-size", "0"]),
            2,
            "--patch-size",
        ),
        case("stride above patch", tex(&["--stride", "5"]), 2, "--stride"),
        case("unknown device", tex(&["--device", "tpu"]), 2, "tpu"),
        case("tile not aligned", tex(&["--tile", "100"]), 2, "--tile"),
        case(
            "bank precision unknown",
            tex(&["--bank-precision", "f8"]),
            2,
            "--bank-precision",
        ),
        case(
            "precision unknown",
            tex(&["--precision", "f64"]),
            2,
            "--precision",
        ),
        case(
            "style scale zero",
            tex(&["--style-scale", "0"]),
            2,
            "--style-scale",
        ),
        case(
            "style scale absurd",
            tex(&["--style-scale", "1e9"]),
            2,
            "--style-scale",
        ),
        case("seed negative", tex(&["--seed=-1"]), 2, "-1"),
        case("history zero", tex(&["--history", "0"]), 2, "--history"),
        case(
            "save every zero",
            tex(&["--save-every", "0"]),
            2,
            "--save-every",
        ),
        case("unknown prior", tex(&["--prior", "bogus"]), 2, "--prior"),
        case("unknown flag", tex(&["--frobnicate"]), 2, "frobnicate"),
        case(
            "unknown matcher",
            tex(&["--matcher", "fuzzy"]),
            2,
            "--matcher",
        ),
        case(
            "max memory garbage",
            tex(&["--max-memory", "lots"]),
            2,
            "--max-memory",
        ),
        case(
            "max memory too small",
            tex(&["--max-memory", "1M"]),
            3,
            "memory",
        ),
        case(
            "init content without content",
            tex(&["--init", "content"]),
            2,
            "content",
        ),
        case(
            "blend count mismatch",
            tex(&["--style-blend", "1,2"]),
            2,
            "--style-blend",
        ),
        case(
            "unknown layer",
            tex(&["--mrf-layers", "relu9_9"]),
            2,
            "relu9_9",
        ),
        case(
            "corrupt weights file",
            tex(&["--weights", &d("weights.safetensors")]),
            4,
            "weights.safetensors",
        ),
        case(
            "transfer long side zero",
            vec![
                "transfer".into(),
                "--content".into(),
                d("ok.png"),
                "--style".into(),
                d("ok.png"),
                "-o".into(),
                o.clone(),
                "--long-side".into(),
                "0".into(),
            ],
            2,
            "--long-side",
        ),
        case(
            "transfer missing content",
            vec![
                "transfer".into(),
                "--content".into(),
                d("nope.jpg"),
                "--style".into(),
                d("ok.png"),
                "-o".into(),
                o.clone(),
            ],
            3,
            "nope.jpg",
        ),
    ]
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_bad_input_fails_cleanly() {
    let weights = common::weights().path.clone();
    let dir = tempfile::tempdir().unwrap();
    make_inputs(dir.path());
    let out = dir.path().join("out.png");
    let before = snapshot(dir.path());
    let cases = corpus(dir.path(), &out);
    assert!(cases.len() >= 30);
    for c in &cases {
        let mut cmd = Command::new(common::bin());
        cmd.args(&c.args).arg("--quiet").env("RUST_BACKTRACE", "1");
        if !c.args.iter().any(|a| a == "--weights") {
            cmd.arg("--weights").arg(&weights);
        }
        let res = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(
            res.status.code(),
            Some(c.code),
            "{}: exit code; stderr: {err}",
            c.name
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{}: panic: {err}",
            c.name
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{}: one line expected: {err}",
            c.name
        );
        assert!(
            err.contains(c.says),
            "{}: the line should mention {:?}: {err}",
            c.name,
            c.says
        );
        assert!(
            !out.exists() && !dir.path().join("out.json").exists(),
            "{}: output written",
            c.name
        );
        assert_eq!(
            snapshot(dir.path()),
            before,
            "{}: inputs changed or files left behind",
            c.name
        );
    }
}

/// Inputs that look odd but are valid images must work.
#[test]
fn odd_but_valid_images_work() {
    let weights = common::weights().path.clone();
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f);
    // 16-bit RGB
    let img16 = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(64, 64, |x, y| {
        image::Rgb([x as u16 * 1000, y as u16 * 1000, 30000])
    });
    img16.save(p("rgb16.png")).unwrap();
    // grey + alpha
    let la = image::GrayAlphaImage::from_fn(64, 64, |x, y| {
        image::LumaA([(x * 4) as u8, (128 + y) as u8])
    });
    la.save(p("grey_alpha.png")).unwrap();
    // palette PNG
    {
        let f = fs::File::create(p("palette.png")).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), 64, 64);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(
            (0..=255u8)
                .flat_map(|i| [i, 255 - i, i / 2])
                .collect::<Vec<u8>>(),
        );
        let mut w = enc.write_header().unwrap();
        let data: Vec<u8> = (0..64 * 64).map(|i| (i * 7 % 256) as u8).collect();
        w.write_image_data(&data).unwrap();
    }
    // animated GIF (the first frame is used)
    {
        let f = fs::File::create(p("anim.gif")).unwrap();
        let mut enc = image::codecs::gif::GifEncoder::new(f);
        for k in 0..3u8 {
            let frame = image::RgbaImage::from_fn(64, 64, |x, y| {
                image::Rgba([x as u8 * 4, y as u8 * 4, k * 80, 255])
            });
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    // a PNG named .jpg (format from content, not extension)
    write_png(&p("really_png.jpg"), 64, 64);
    for f in [
        "rgb16.png",
        "grey_alpha.png",
        "palette.png",
        "anim.gif",
        "really_png.jpg",
    ] {
        let out = p(&format!("{f}.out.png"));
        let res = Command::new(common::bin())
            .args([
                "texture",
                "--quiet",
                "--levels",
                "1",
                "--iterations",
                "2",
                "--size",
                "48",
                "--style",
            ])
            .arg(p(f))
            .arg("-o")
            .arg(&out)
            .arg("--weights")
            .arg(&weights)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert!(out.exists(), "{f}: no output");
    }
}

/// A 64 x 48 gradient with noise: it compresses like a photograph, not like a flat fill.
fn sample_image() -> image::RgbImage {
    let mut state = 0x1234_5678u32;
    image::RgbImage::from_fn(64, 48, |x, y| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let n = state >> 27;
        image::Rgb([
            (x * 3 + n).min(255) as u8,
            (y * 4 + n).min(255) as u8,
            ((x + y) * 2 + 2 * n).min(255) as u8,
        ])
    })
}

/// A DXT1 DDS file (no encoder exists for DDS): the 128-byte header and 16 x 12 blocks.
fn dds_dxt1(w: u32, h: u32) -> Vec<u8> {
    let le = |v: u32| v.to_le_bytes();
    let blocks = w.div_ceil(4) * h.div_ceil(4);
    let mut out = b"DDS ".to_vec();
    out.extend(le(124)); // header size
    out.extend(le(0x1 | 0x2 | 0x4 | 0x1000 | 0x8_0000)); // caps, height, width, format, linear size
    out.extend(le(h));
    out.extend(le(w));
    out.extend(le(blocks * 8)); // linear size
    out.extend(le(0)); // depth
    out.extend(le(0)); // mipmaps
    out.extend([0u8; 44]); // reserved
    out.extend(le(32)); // pixel format size
    out.extend(le(0x4)); // DDPF_FOURCC
    out.extend(b"DXT1");
    out.extend([0u8; 20]); // bit count and masks
    out.extend(le(0x1000)); // DDSCAPS_TEXTURE
    out.extend([0u8; 16]); // caps2..4, reserved
    assert_eq!(out.len(), 128);
    for i in 0..blocks {
        let c0 = (i * 2731 % 65536) as u16;
        let c1 = (i * 977 % 65536) as u16;
        out.extend(c0.to_le_bytes());
        out.extend(c1.to_le_bytes());
        out.extend((i.wrapping_mul(0x9E37_79B9)).to_le_bytes());
    }
    out
}

/// The sample image in every format `load_rgb` reads (the format is recognised from the
/// content): name (its extension), bytes, and whether the format carries checksums that make
/// any changed byte detectable.
fn encoded_samples() -> Vec<(&'static str, Vec<u8>, bool)> {
    use image::ImageFormat as F;
    let img = image::DynamicImage::ImageRgb8(sample_image());
    let mut out = Vec::new();
    for (name, format, checksummed) in [
        ("png", F::Png, true),
        ("jpg", F::Jpeg, false),
        ("gif", F::Gif, false),
        ("bmp", F::Bmp, false),
        ("tif", F::Tiff, false),
        ("webp", F::WebP, false),
        ("ico", F::Ico, true), // PNG inside
        ("ppm", F::Pnm, false),
        ("qoi", F::Qoi, false),
        ("hdr", F::Hdr, false),
        ("exr", F::OpenExr, false),
        ("ff", F::Farbfeld, false),
    ] {
        let img = match format {
            F::Hdr | F::OpenExr => image::DynamicImage::ImageRgb32F(img.to_rgb32f()),
            F::Farbfeld => image::DynamicImage::ImageRgba16(img.to_rgba16()),
            // The ICO decoder wants RGBA inside.
            F::Ico => image::DynamicImage::ImageRgba8(img.to_rgba8()),
            _ => img.clone(),
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, format)
            .unwrap_or_else(|e| panic!("encode {name}: {e}"));
        out.push((name, buf.into_inner(), checksummed));
    }
    // ASCII PNM (P3).
    let mut p3 = Vec::new();
    img.write_with_encoder(image::codecs::pnm::PnmEncoder::new(&mut p3).with_subtype(
        image::codecs::pnm::PnmSubtype::Pixmap(image::codecs::pnm::SampleEncoding::Ascii),
    ))
    .unwrap();
    out.push(("p3.ppm", p3, false));
    // An animated GIF: damage in a later frame must not pass because the first one is whole.
    let mut anim = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(&mut anim);
        for k in 0..3u8 {
            let frame = image::RgbaImage::from_fn(64, 48, |x, y| {
                image::Rgba([(x * 4) as u8, (y * 5) as u8, k * 80 + (x ^ y) as u8, 255])
            });
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    out.push(("anim.gif", anim, false));
    out.push(("dds", dds_dxt1(64, 48), false));
    out
}

/// Where a file is cut: early, half-way, late, and only its last few bytes.
fn cut_points(len: usize) -> Vec<usize> {
    let mut v = vec![
        len / 10,
        len / 2,
        len * 9 / 10,
        len - 8,
        len - 4,
        len - 2,
        len - 1,
    ];
    v.dedup();
    v
}

/// Truncated files in every input format are refused with one line naming the file; none is
/// decoded partially (grey or black filler where the data ran out) and synthesised from.
///
/// Bytes changed in the middle of a file are refused where the format can tell (PNG and the
/// PNG inside ICO carry CRCs); elsewhere no decoder can know that valid-looking pixel data was
/// altered (raw BMP/PNM/farbfeld/DDS samples, JPEG or WebP entropy-coded data that still
/// decodes), so an image of the right size is acceptable there, and so is an error.
///
/// Not covered because undetectable: ASCII PNM (P3) cut inside its last sample or trailing
/// whitespace (the rest is still a valid file), which is why its cut points skip the last
/// bytes. TGA and AVIF are not input formats (TGA has no signature to recognise it by, AVIF
/// has no decoder in this build); they are refused as unrecognised.
#[test]
fn damaged_images_are_refused_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let limits = mrfsynth::image_io::LoadLimits::default();
    let load = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        let r = mrfsynth::image_io::load_rgb(&p, &limits);
        fs::remove_file(&p).unwrap();
        r
    };
    // Every problem is collected, so one run lists them all.
    let mut problems = Vec::new();
    let check_err = |e: &mrfsynth::image_io::ImageError, name: &str| {
        let msg = e.to_string();
        (msg.contains('\n') || !msg.contains(name))
            .then(|| format!("the error should be one line naming {name}: {msg:?}"))
    };
    for (ext, bytes, checksummed) in encoded_samples() {
        let intact = load(&format!("intact.{ext}"), &bytes)
            .unwrap_or_else(|e| panic!("{ext}: the intact file must load: {e}"));
        assert_eq!((intact.width, intact.height), (64, 48), "{ext}");

        let len = bytes.len();
        for cut in cut_points(len) {
            if ext == "p3.ppm" && cut + 8 >= len {
                continue;
            }
            let name = format!("cut_{cut}_of_{len}.{ext}");
            match load(&name, &bytes[..cut]) {
                Ok(img) => problems.push(format!(
                    "{name}: decoded as {}x{} from a truncated file",
                    img.width, img.height
                )),
                Err(e) => problems.extend(check_err(&e, &name)),
            }
        }

        let mut flipped = bytes.clone();
        for b in &mut flipped[len / 2..len / 2 + 4] {
            *b ^= 0x5A;
        }
        let name = format!("flipped.{ext}");
        match load(&name, &flipped) {
            Err(e) => problems.extend(check_err(&e, &name)),
            Ok(img) if checksummed => problems.push(format!(
                "{name}: decoded as {}x{} although its checksums fail",
                img.width, img.height
            )),
            Ok(img) if (img.width, img.height) != (64, 48) => problems.push(format!(
                "{name}: decoded as {}x{}, not 64x48",
                img.width, img.height
            )),
            Ok(_) => {}
        }
    }

    // Not input formats: refused as unrecognised, naming the file.
    let mut tga = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(sample_image())
        .write_to(&mut tga, image::ImageFormat::Tga)
        .unwrap();
    match load("x.tga", tga.get_ref()) {
        Ok(_) => problems.push("x.tga: TGA is not an input format, yet it loaded".into()),
        Err(e) => problems.extend(check_err(&e, "x.tga")),
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
