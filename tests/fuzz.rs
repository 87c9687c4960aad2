//! Fuzzing on the stable toolchain: hostile inputs fed to the same public functions the daemon
//! runs on them, each under `catch_unwind`, counting panics (failures), refusals (`Err`, a 4xx:
//! fine, bad input gets a clear error) and accepted inputs.
//!
//! | target | input | function |
//! |---|---|---|
//! | `image` | an uploaded photo | `vision::image::probe` + `decode` with `web::api::uploads::limits` |
//! | `mqtt` | a message on `faced/<device>/cmd/<verb>` | `mqtt::command::receive` (signature, then `parse`), `sniff_request_id`, `Topics::cmd_verb` |
//! | `config` | `faced.toml` text, `#env` lines | `config::Config::from_toml` (TOML, `FACED_*` environment overrides, serde, every section's validation) |
//! | `zip` | an uploaded zip | `web::api::uploads::photos_of` with the default `[web]` limits |
//! | `json` | a console API request body or query | the console's axum router (`web::router`) with an admin session |
//!
//! Inputs come from the committed corpus (`tests/fuzz/corpus/<target>/`) mutated by a seeded
//! mutator (bit flips, inserts, deletes, truncation, splicing, interesting integers, format
//! tokens), from `arbitrary`-built structured inputs (encoded images, TOML documents from the
//! example config's keys, zips with hostile entry names and sizes, JSON bodies with the API's
//! field names), and from plain random bytes. Every corpus file and every committed crash
//! reproducer (`tests/fuzz/crashes/<target>/`) is replayed first, in every run.
//!
//! `FACED_FUZZ_ITERS` sets the inputs per target (default: a short CI run), `FACED_FUZZ_SEED`
//! the seed (a run is reproducible by its seed). A panicking input is written to
//! `tests/fuzz/crashes/<target>/<hash>` and fails the test; the slowest input of the run is kept
//! in `target/fuzz/slowest/<target>`. Each target prints one table row and one `FUZZ {json}`
//! line, which `scripts/fuzz` collects.

use std::io::{Cursor, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use faced::Kind;

// ---------------------------------------------------------------------------------------------
// The harness

/// Splitmix64: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        crate::util::splitmix64(&mut self.0)
    }
    /// `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// True with probability `1/n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// FNV-1a, for crash file names and per-target seeds.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values at the edges of integer types and of faced's limits (image sides, pixel counts).
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x3fff,
    16_384,
    16_385,
    0x7fff,
    0x8000,
    60_000,
    0xffff,
    0x1_0000,
    24_000_001,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// Applies 1 to 8 random mutations to `data`: bit flips, random bytes, inserts, deletes, copies
/// within, truncation, splicing with another input of `pool`, interesting integers (1, 2, 4 or
/// 8 bytes, either byte order), and tokens of the input's format from `dict`.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]], max_len: usize) {
    let k = rng.below(8);
    let n = 1 + rng.below(1 + k);
    for _ in 0..n {
        let len = data.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1);
                let k = 1 + rng.below(16);
                let add = rng.bytes(k);
                data.splice(at..at, add);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                data.drain(at..end);
            }
            4 if len > 1 => {
                let from = rng.below(len);
                let end = (from + 1 + rng.below(64)).min(len);
                let chunk = data[from..end].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            5 if len > 0 => data.truncate(rng.below(len)),
            6 if !pool.is_empty() => {
                let other = &pool[rng.below(pool.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 | 8 if len > 0 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let v = if rng.one_in(4) { v.wrapping_neg() } else { v };
                let width = [1, 2, 4, 8][rng.below(4)];
                let b = if rng.one_in(2) {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                let b: Vec<u8> = if b[0] == 0 && width < 8 {
                    v.to_be_bytes()[8 - width..].to_vec()
                } else {
                    b[..width].to_vec()
                };
                let at = rng.below(len);
                let end = (at + b.len()).min(len);
                data.splice(at..end, b);
            }
            9 | 10 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())];
                let at = rng.below(len + 1);
                if rng.one_in(2) {
                    data.splice(at..at, tok.iter().copied());
                } else {
                    let end = (at + tok.len()).min(len);
                    data.splice(at..end, tok.iter().copied());
                }
            }
            _ => data.push(rng.next() as u8),
        }
    }
    data.truncate(max_len);
}

/// What an input did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The function returned `Ok` (a 2xx).
    Accepted,
    /// The function returned an error (a 4xx): bad input gets a clear error.
    Refused,
}

fn verdict<T>(r: &faced::Result<T>) -> Verdict {
    if r.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// A refusal must be the input's fault (or a limit), never an internal error.
fn assert_input_error(e: &faced::Error) {
    assert!(
        matches!(
            e.kind(),
            Kind::InvalidInput | Kind::ResourceExhausted | Kind::NotFound | Kind::Unauthenticated
        ),
        "a hostile input must be refused as the input's fault, got {:?}: {e}",
        e.kind()
    );
}

/// How a target is run.
struct Target {
    name: &'static str,
    /// Inputs when `FACED_FUZZ_ITERS` is not set: a short run for CI.
    ci_iters: u64,
    /// Longest input fed.
    max_len: usize,
    /// Tokens of the input's format, for the mutator.
    dict: &'static [&'static [u8]],
}

/// One target's figures.
#[derive(Debug)]
struct Report {
    replayed: usize,
    inputs: u64,
    accepted: u64,
    refused: u64,
    panics: Vec<PathBuf>,
}

fn dir(kind: &str, target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(kind)
        .join(target)
}

fn files(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir(kind, target)) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    out
}

/// Peak resident set size of this process, KiB.
fn max_rss_kib() -> i64 {
    // SAFETY: getrusage writes one plain struct that we own.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u.ru_maxrss
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// Replays the corpus and the crash reproducers of `t`, then runs the campaign: inputs from
/// the mutated corpus, from `generate` (structured, `arbitrary`-driven) and random bytes, each
/// through `exec` under `catch_unwind`. Panics if any input panicked, naming the files saved.
fn campaign(
    t: &Target,
    mut generate: impl FnMut(&mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>>,
    mut exec: impl FnMut(&[u8]) -> Verdict,
) -> Report {
    let iters = env_u64("FACED_FUZZ_ITERS").unwrap_or(t.ci_iters);
    let seed = env_u64("FACED_FUZZ_SEED").unwrap_or(1) ^ fnv(t.name.as_bytes());
    let mut rng = Rng::new(seed);
    let rss_before = max_rss_kib();
    let t0 = Instant::now();
    let mut rep = Report {
        replayed: 0,
        inputs: 0,
        accepted: 0,
        refused: 0,
        panics: Vec::new(),
    };

    // Every committed input, every run: the corpus must not panic, and a fixed crash stays fixed.
    let corpus = files("corpus", t.name);
    assert!(
        !corpus.is_empty(),
        "tests/fuzz/corpus/{} has no seed inputs",
        t.name
    );
    for (path, data) in corpus.iter().chain(files("crashes", t.name).iter()) {
        rep.replayed += 1;
        if catch_unwind(AssertUnwindSafe(|| exec(data))).is_err() {
            rep.panics.push(path.clone());
        }
    }

    let mut pool: Vec<Vec<u8>> = corpus.into_iter().map(|(_, d)| d).collect();
    let fixed = pool.len();
    let mut slowest = (Duration::ZERO, 0u64, Vec::new());
    for i in 0..iters {
        let input = match rng.below(20) {
            0..=8 => {
                let mut d = pool[rng.below(pool.len())].clone();
                mutate(&mut rng, &mut d, &pool, t.dict, t.max_len);
                d
            }
            9..=18 => {
                let k = 16 + rng.below(1024);
                let raw = rng.bytes(k);
                let mut d = generate(&mut Unstructured::new(&raw)).unwrap_or_default();
                if rng.one_in(3) {
                    mutate(&mut rng, &mut d, &pool, t.dict, t.max_len);
                }
                d
            }
            _ => {
                let k = rng.below(t.max_len.min(4096) + 1);
                rng.bytes(k)
            }
        };
        let started = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| exec(&input)));
        let took = started.elapsed();
        if took > slowest.0 {
            slowest = (took, i, input.clone());
        }
        rep.inputs += 1;
        match r {
            Ok(Verdict::Accepted) => {
                rep.accepted += 1;
                // Accepted inputs reach deeper code; keep some as seeds (bounded).
                if rng.one_in(8) {
                    if pool.len() < fixed + 256 {
                        pool.push(input);
                    } else {
                        let at = fixed + rng.below(256);
                        pool[at] = input;
                    }
                }
            }
            Ok(Verdict::Refused) => rep.refused += 1,
            Err(_) => {
                let d = dir("crashes", t.name);
                std::fs::create_dir_all(&d).unwrap();
                let path = d.join(format!("{:016x}", fnv(&input)));
                std::fs::write(&path, &input).unwrap();
                eprintln!(
                    "fuzz {}: input {i} (seed {seed}) panicked; saved as {}",
                    t.name,
                    path.display()
                );
                rep.panics.push(path);
            }
        }
    }

    // The slowest input, to look at when its time grows (target/ is not committed).
    let slow_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz/slowest");
    if std::fs::create_dir_all(&slow_dir).is_ok() {
        let _ = std::fs::write(slow_dir.join(t.name), &slowest.2);
    }
    let secs = t0.elapsed().as_secs_f64();
    let rss_after = max_rss_kib();
    let rate = rep.inputs as f64 / secs.max(1e-9);
    println!(
        "fuzz {:<7} {:>9} inputs {:>5} replayed {:>3} panics {:>9} refused {:>9} accepted \
         {:>8.1} s {:>8.0}/s  slowest {:>6.1} ms  max RSS {} -> {} MiB",
        t.name,
        rep.inputs,
        rep.replayed,
        rep.panics.len(),
        rep.refused,
        rep.accepted,
        secs,
        rate,
        slowest.0.as_secs_f64() * 1e3,
        rss_before / 1024,
        rss_after / 1024
    );
    println!(
        "FUZZ {}",
        serde_json::json!({
            "target": t.name,
            "seed": seed,
            "inputs": rep.inputs,
            "replayed": rep.replayed,
            "panics": rep.panics.len(),
            "refused": rep.refused,
            "accepted": rep.accepted,
            "secs": (secs * 10.0).round() / 10.0,
            "per_sec": rate.round(),
            "slowest_ms": (slowest.0.as_secs_f64() * 1e4).round() / 10.0,
            "max_rss_kib_before": rss_before,
            "max_rss_kib_after": rss_after,
        })
    );
    assert!(
        rep.panics.is_empty(),
        "fuzz {}: {} input(s) panicked: {:?} (replay: cargo test --test tests fuzz::{})",
        t.name,
        rep.panics.len(),
        rep.panics,
        t.name
    );
    rep
}

/// An arbitrary string, biased towards the ones validation looks at: empty, long, control and
/// invisible characters, bidi controls, path tricks.
fn text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    const SPECIAL: &[&str] = &[
        "",
        " ",
        "alice",
        "Alice Smith",
        "front",
        "../../etc/passwd",
        "a\u{0}b",
        "\u{202e}evil",
        "\u{200b}",
        "x\ny",
        "\u{1F600}",
        "é",
        "NaN",
        "-0",
        "1e999",
        "dir:/tmp",
        "http://127.0.0.1:1/x",
        "pattern",
        "v4l2:/dev/video0",
        "0.0.0.0:8080",
        "[::1]:0",
        "#",
        "'",
        "\"",
        "\\",
    ];
    Ok(match u.int_in_range(0..=3)? {
        0 => String::arbitrary(u)?,
        1 => "ab".repeat(u.int_in_range(0..=300)?),
        _ => (*u.choose(SPECIAL)?).to_string(),
    })
}

/// An arbitrary JSON value whose object keys are mostly `keys` (the fields the parser knows).
fn json_value(
    u: &mut Unstructured<'_>,
    keys: &[&str],
    depth: u32,
) -> arbitrary::Result<serde_json::Value> {
    use serde_json::Value as V;
    let top = if depth >= 4 { 5 } else { 8 };
    Ok(match u.int_in_range(0..=top)? {
        0 => V::Null,
        1 => V::Bool(bool::arbitrary(u)?),
        2 => V::from(*u.choose(INTERESTING)? as i64),
        3 => V::from(i64::arbitrary(u)?),
        4 => serde_json::Number::from_f64(f64::arbitrary(u)?)
            .map(V::Number)
            .unwrap_or(V::from(0.45)),
        5 => V::String(text(u)?),
        6 => V::Array(
            (0..u.int_in_range(0..=4)?)
                .map(|_| json_value(u, keys, depth + 1))
                .collect::<arbitrary::Result<_>>()?,
        ),
        _ => json_object(u, keys, depth + 1)?,
    })
}

fn json_object(
    u: &mut Unstructured<'_>,
    keys: &[&str],
    depth: u32,
) -> arbitrary::Result<serde_json::Value> {
    let mut m = serde_json::Map::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let k = if keys.is_empty() || u.ratio(1, 6)? {
            text(u)?
        } else {
            (*u.choose(keys)?).to_string()
        };
        m.insert(k, json_value(u, keys, depth)?);
    }
    Ok(serde_json::Value::Object(m))
}

// ---------------------------------------------------------------------------------------------
// image: uploaded photos

const IMAGE_DICT: &[&[u8]] = &[
    b"\xff\xd8",
    b"\xff\xd9",
    b"\xff\xda",
    b"\xff\xc0",
    b"\xff\xc2",
    b"\xff\xc4",
    b"\xff\xdb",
    b"\xff\xe1",
    b"Exif\0\0",
    b"IHDR",
    b"IDAT",
    b"IEND",
    b"PLTE",
    b"tRNS",
    b"RIFF",
    b"WEBP",
    b"VP8 ",
    b"VP8L",
    b"VP8X",
    b"ALPH",
    b"GIF89a",
    b"\x21\xf9\x04",
    b"\x2c",
    b"II*\0",
    b"MM\0*",
    b"BM",
];

/// A small random image in one of the formats faced reads, encoded by the `image` crate.
#[derive(Arbitrary, Debug)]
struct ImageSpec {
    width: u8,
    height: u8,
    format: u8,
    colour: u8,
    pixels: Vec<u8>,
}

fn encode_image(s: ImageSpec) -> Vec<u8> {
    use image::{DynamicImage, ImageFormat};
    let (w, h) = (u32::from(s.width % 24) + 1, u32::from(s.height % 24) + 1);
    let px = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|i| {
                s.pixels
                    .get(i % s.pixels.len().max(1))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    };
    let n = (w * h) as usize;
    let img = match s.colour % 6 {
        0 => DynamicImage::ImageLuma8(image::GrayImage::from_raw(w, h, px(n)).unwrap()),
        1 => DynamicImage::ImageLumaA8(image::GrayAlphaImage::from_raw(w, h, px(2 * n)).unwrap()),
        2 => DynamicImage::ImageRgba8(image::RgbaImage::from_raw(w, h, px(4 * n)).unwrap()),
        3 => DynamicImage::ImageRgb16(
            image::ImageBuffer::from_raw(
                w,
                h,
                px(6 * n)
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            )
            .unwrap(),
        ),
        _ => DynamicImage::ImageRgb8(image::RgbImage::from_raw(w, h, px(3 * n)).unwrap()),
    };
    let format = [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Gif,
        ImageFormat::Tiff,
        ImageFormat::Bmp,
    ][usize::from(s.format) % 6];
    let mut out = Vec::new();
    // Not every format takes every colour type; fall back to 8-bit RGB, then RGBA.
    if img.write_to(&mut Cursor::new(&mut out), format).is_err() {
        out.clear();
        let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
        if rgb.write_to(&mut Cursor::new(&mut out), format).is_err() {
            out.clear();
            let _ = DynamicImage::ImageRgba8(img.to_rgba8())
                .write_to(&mut Cursor::new(&mut out), format);
        }
    }
    out
}

/// Decodes like `POST /api/uploads`: header first (dimensions, decode cost), then the decode
/// with the same limits. A decoded image has the pixels its header promised.
fn exec_image(data: &[u8]) -> Verdict {
    let cfg = faced::web::WebConfig::default();
    let limits = faced::web::api::uploads::limits(&cfg);
    let probe = match faced::vision::image::probe(data, &limits) {
        Ok(p) => p,
        Err(e) => {
            assert_input_error(&e);
            return Verdict::Refused;
        }
    };
    assert!(u64::from(probe.width) * u64::from(probe.height) <= cfg.max_upload_pixels);
    let r = faced::vision::image::decode(data, &limits);
    match &r {
        Ok(img) => {
            assert_eq!(
                u64::from(img.width()) * u64::from(img.height()),
                u64::from(probe.width) * u64::from(probe.height),
                "decoded size differs from the header's {}",
                probe.describe()
            );
            // What the folder camera does with a photo: fit it into the frame, whatever its shape.
            let frame = faced::capture::convert::letterbox(img, 640, 480);
            assert_eq!(frame.dimensions(), (640, 480));
        }
        Err(e) => assert_input_error(e),
    }
    // The HTTP MJPEG camera's decoder (standard Huffman tables added when a frame has none).
    if data.starts_with(b"\xff\xd8")
        && let Err(e) = faced::capture::convert::decode_mjpeg(data)
    {
        assert_input_error(&e);
    }
    verdict(&r)
}

#[test]
fn image() {
    let _turn = crate::util::beside_others();
    campaign(
        &Target {
            name: "image",
            ci_iters: 30_000,
            max_len: 64 << 10,
            dict: IMAGE_DICT,
        },
        |u| Ok(encode_image(ImageSpec::arbitrary(u)?)),
        exec_image,
    );
}

/// CRC-32 (PNG's chunk checksum), so a forged header is not refused for its checksum alone.
fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |mut c, &b| {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        c
    })
}

/// Headers that claim 60000×60000 pixels (14 GB as RGB) in every format: refused from the
/// header as over the limits, before a pixel buffer is allocated.
#[test]
fn image_headers_claiming_huge_sizes_are_refused_before_allocating() {
    let _turn = crate::util::beside_others();
    let side: u32 = 60_000;
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&side.to_be_bytes());
    png.extend_from_slice(&side.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0]);
    let crc = crc32(&png[12..]);
    png.extend_from_slice(&crc.to_be_bytes());
    // The decoder reads up to the first IDAT before it reports the size.
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    png.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    png.extend_from_slice(b"\0\0\0\0IEND\xaeB`\x82");

    let mut bmp = b"BM".to_vec();
    bmp.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie, as in hostile files)
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&(side as i32).to_le_bytes());
    bmp.extend_from_slice(&(side as i32).to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);

    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&(side as u16).to_le_bytes());
    gif.extend_from_slice(&(side as u16).to_le_bytes());
    gif.extend_from_slice(&[0, 0, 0, 0x2c, 0, 0, 0, 0]);
    gif.extend_from_slice(&(side as u16).to_le_bytes());
    gif.extend_from_slice(&(side as u16).to_le_bytes());
    gif.extend_from_slice(&[0x80, 0, 0, 0, 0xff, 0xff, 0xff, 2, 2, 0x44, 1, 0, 0x3b]);

    let mut jpeg = b"\xff\xd8\xff\xc0\0\x11\x08".to_vec();
    jpeg.extend_from_slice(&(side as u16).to_be_bytes());
    jpeg.extend_from_slice(&(side as u16).to_be_bytes());
    jpeg.extend_from_slice(&[3, 1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0]);
    jpeg.extend_from_slice(b"\xff\xda\0\x0c\x03\x01\0\x02\0\x03\0\0\x3f\0\0\xff\xd9");

    let mut tiff = b"II*\0\x08\0\0\0".to_vec();
    let entries: &[(u16, u16, u32)] = &[
        (256, 4, side),
        (257, 4, side),
        (258, 3, 8),
        (259, 3, 1),
        (262, 3, 1),
        (273, 4, 8),
        (277, 3, 1),
        (278, 4, side),
        (279, 4, side * side),
    ];
    tiff.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for &(tag, ty, v) in entries {
        tiff.extend_from_slice(&tag.to_le_bytes());
        tiff.extend_from_slice(&ty.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        if ty == 3 {
            tiff.extend_from_slice(&(v as u16).to_le_bytes());
            tiff.extend_from_slice(&[0, 0]);
        } else {
            tiff.extend_from_slice(&v.to_le_bytes());
        }
    }
    tiff.extend_from_slice(&[0; 4]);

    // VP8X: canvas sides are 24-bit "minus one"; 16383+1 is WebP's own maximum, so claim that.
    let mut webp = b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0".to_vec();
    webp.extend_from_slice(&[0xff, 0x3f, 0x00, 0xff, 0x3f, 0x00]);
    webp.extend_from_slice(b"VP8L\x05\0\0\0\x2f\xff\xff\xff\x0f\0");
    let riff_len = (webp.len() - 8) as u32;
    webp[4..8].copy_from_slice(&riff_len.to_le_bytes());

    let limits = faced::web::api::uploads::limits(&faced::web::WebConfig::default());
    for (name, data) in [
        ("png", &png),
        ("bmp", &bmp),
        ("gif", &gif),
        ("jpeg", &jpeg),
        ("tiff", &tiff),
        ("webp", &webp),
    ] {
        let started = Instant::now();
        let e = faced::vision::image::decode(data, &limits).expect_err(&format!(
            "{name}: a header claiming a huge image is refused"
        ));
        assert_eq!(e.kind(), Kind::ResourceExhausted, "{name}: {e}");
        assert!(e.message().contains("pixels"), "{name}: {e}");
        // Allocating and filling gigabytes would take seconds; a header check takes microseconds.
        assert!(started.elapsed() < Duration::from_secs(2), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// mqtt: command messages

const MQTT_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-0",
    b"\\u0000",
    b"\\ud800",
    b"\"id\":",
    b"\"name\":",
    b"\"camera\":",
    b"\"threshold\":",
    b"\"add_to_existing\":",
    b"\"body\":",
    b"\"ts\":",
    b"\"nonce\":",
    b"\"sig\":",
    b" signed",
    b" retain",
    b" othertopic",
    b" stale",
];

const MQTT_KEYS: &[&str] = &[
    "id",
    "name",
    "camera",
    "add_to_existing",
    "threshold",
    "body",
    "ts",
    "nonce",
    "sig",
];

/// The command key of the fuzzed device.
const MQTT_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const MQTT_NOW: i64 = 1_800_000_000;

/// An input is `<verb> [signed] [retain] [othertopic] [stale]\n<payload>`: the verb of the
/// topic the message arrives on, and with `signed` the payload is the body of an envelope
/// correctly signed with the device's key (for the topic, or with `othertopic` for another
/// verb's; with `stale` at a timestamp outside the window). Without `signed` the payload is sent
/// as it is.
fn exec_mqtt(data: &[u8]) -> Verdict {
    use faced::mqtt::auth::{CommandKey, Verifier};
    use faced::mqtt::command::{self, Command, CommandResult};
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut words = head.split(' ');
    let verb = words.next().unwrap_or_default();
    let flags: Vec<&str> = words.collect();
    let topics = faced::mqtt::topics::Topics::new("faced", "door", "homeassistant").unwrap();
    let topic = topics.cmd(verb);
    // What the MQTT thread does first: find the verb in the topic it subscribed to.
    let Some(topic_verb) = topics.cmd_verb(&topic) else {
        return Verdict::Refused;
    };
    assert_eq!(topic_verb, verb, "cmd_verb inverts cmd");
    let _ = topics.cmd_verb(&String::from_utf8_lossy(body));

    let key = CommandKey::from_hex(MQTT_KEY).unwrap();
    let payload: Vec<u8> = if flags.contains(&"signed") {
        let signed_for = if flags.contains(&"othertopic") {
            topics.cmd("reload_gallery_")
        } else {
            topic.clone()
        };
        let ts = if flags.contains(&"stale") {
            MQTT_NOW - 3600
        } else {
            MQTT_NOW - 1
        };
        let body = String::from_utf8_lossy(body);
        let body = if body.trim().is_empty() { "{}" } else { &body };
        key.signed_payload(&signed_for, ts, "0123456789abcdef", body)
            .into_bytes()
    } else {
        body.to_vec()
    };
    let mut verifier = Verifier::new(key, 30, MQTT_NOW - 600);
    let r = command::receive(
        &mut verifier,
        verb,
        &topic,
        &payload,
        flags.contains(&"retain"),
        MQTT_NOW,
    );
    let id = command::sniff_request_id(&payload);
    let result = match &r {
        Ok(cmd) => {
            assert_eq!(cmd.verb(), verb);
            assert!(flags.contains(&"signed") && !flags.contains(&"retain"));
            assert!(!flags.contains(&"stale") && !flags.contains(&"othertopic"));
            if let Command::SetThreshold { threshold, .. } = cmd {
                assert!(
                    (command::MIN_THRESHOLD as f32..=command::MAX_THRESHOLD as f32)
                        .contains(threshold)
                );
            }
            CommandResult::ok(verb, cmd.request_id().map(String::from), "accepted", None)
        }
        Err(e) => {
            assert_input_error(e);
            CommandResult::error(verb, id, "rejected", e)
        }
    };
    let text = serde_json::to_string(&result).unwrap();
    let back: CommandResult = serde_json::from_str(&text).unwrap();
    assert_eq!(back, result);
    verdict(&r)
}

#[test]
fn mqtt() {
    let _turn = crate::util::beside_others();
    let verbs = [
        "reload_gallery",
        "enroll_last_unknown",
        "set_threshold",
        "shutdown",
        "",
    ];
    let flag_words = ["signed", "retain", "othertopic", "stale"];
    campaign(
        &Target {
            name: "mqtt",
            ci_iters: 100_000,
            max_len: 5000,
            dict: MQTT_DICT,
        },
        |u| {
            let mut head = (*u.choose(&verbs)?).to_string();
            // Mostly correctly signed: those reach the body's parser.
            if u.ratio(4, 5)? {
                head.push_str(" signed");
            }
            for w in flag_words.iter().skip(1) {
                if u.ratio(1, 10)? {
                    head.push(' ');
                    head.push_str(w);
                }
            }
            let body = if u.ratio(1, 8)? {
                text(u)?
            } else {
                json_object(u, MQTT_KEYS, 0)?.to_string()
            };
            Ok(format!("{head}\n{body}").into_bytes())
        },
        exec_mqtt,
    );
}

// ---------------------------------------------------------------------------------------------
// config: faced.toml

const CONFIG_DICT: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[cameras]]\n",
    b"[device]\n",
    b"[mqtt]\n",
    b"[web]\n",
    b"[gpio]\n",
    b"\n",
    b" = ",
    b"\"",
    b"'''",
    b"\"\"\"",
    b"{",
    b"}",
    b"nan",
    b"inf",
    b"-inf",
    b"1e308",
    b"-0",
    b"0x7fffffffffffffff",
    b"true",
    b"1979-05-27T07:32:00Z",
    b"\\u0000",
    b".",
];

fn example_config() -> &'static str {
    include_str!("../faced.toml")
}

/// An arbitrary TOML value, biased towards what the config's keys take.
fn toml_value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<toml::Value> {
    use toml::Value as V;
    let top = if depth >= 2 { 6 } else { 8 };
    Ok(match u.int_in_range(0..=top)? {
        0 => V::Boolean(bool::arbitrary(u)?),
        1 => V::Integer(*u.choose(INTERESTING)? as i64),
        2 => V::Integer(i64::from(i16::arbitrary(u)?)),
        3 => V::Float(f64::arbitrary(u)?),
        4 => V::Float(*u.choose(&[0.0, -0.0, 0.5, 1.0, 1e308, f64::NAN, f64::INFINITY])?),
        5 | 6 => V::String(text(u)?),
        7 => V::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| toml_value(u, depth + 1))
                .collect::<arbitrary::Result<_>>()?,
        ),
        _ => {
            let mut t = toml::Table::new();
            for _ in 0..u.int_in_range(0..=3)? {
                t.insert(text(u)?, toml_value(u, depth + 1)?);
            }
            V::Table(t)
        }
    })
}

/// A TOML document: the example configuration with some keys changed, removed or added, or one
/// built from scratch out of the example's sections and keys.
fn config_doc(
    u: &mut Unstructured<'_>,
    keys: &std::collections::BTreeMap<String, Vec<String>>,
) -> arbitrary::Result<Vec<u8>> {
    let sections: Vec<&String> = keys.keys().collect();
    let mut doc: toml::Table = if u.ratio(1, 2)? {
        example_config().parse().unwrap()
    } else {
        toml::Table::new()
    };
    for _ in 0..u.int_in_range(1..=6)? {
        let section = (*u.choose(&sections)?).clone();
        let key = if u.ratio(1, 8)? {
            text(u)?
        } else {
            u.choose(&keys[&section])?.clone()
        };
        let value = toml_value(u, 0)?;
        let remove = u.ratio(1, 6)?;
        let slot = doc
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let table = match slot {
            toml::Value::Array(a) => {
                if a.is_empty() || u.ratio(1, 4)? {
                    a.push(toml::Value::Table(toml::Table::new()));
                }
                let i = u.choose_index(a.len())?;
                &mut a[i]
            }
            other => other,
        };
        if let toml::Value::Table(t) = table {
            if remove {
                t.remove(&key);
            } else {
                t.insert(key, value);
            }
        }
    }
    let mut text = toml::to_string(&doc).unwrap_or_default();
    // Environment overrides, as `faced run` reads them under systemd.
    for _ in 0..u.int_in_range(0..=3)? {
        let section = (*u.choose(&sections)?).clone();
        let mut name = format!("FACED_{}__", section.to_uppercase());
        if section == "cameras" || u.ratio(1, 8)? {
            let i = *u.choose(&[0u64, 1, 2, 7, 1 << 40, u64::MAX])?;
            name.push_str(&format!("{i}__"));
        }
        if u.ratio(1, 8)? {
            name.push_str(&text_line(u)?);
        } else {
            name.push_str(&u.choose(&keys[&section])?.to_uppercase());
        }
        let value = match u.int_in_range(0..=2)? {
            0 => text_line(u)?,
            _ => toml_value(u, 1)?.to_string(),
        };
        text.push_str(&format!("#env {name}={}\n", value.replace('\n', " ")));
    }
    Ok(text.into_bytes())
}

/// [`text`] on one line.
fn text_line(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(text(u)?.replace(['\n', '\r'], " "))
}

/// Parses like `faced check-config` and the start of `faced run`: TOML, the environment's
/// overrides, then every section's validation. An accepted configuration prints as TOML and gives
/// the settings `faced run` derives from it.
fn exec_config(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else {
        // `Config::load` reads the file as UTF-8 and refuses it otherwise.
        return Verdict::Refused;
    };
    // Lines `#env NAME=VALUE` (TOML comments) are the process environment: the
    // `FACED_<SECTION>__<KEY>` overrides are applied to the file's table before validation.
    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#env "))
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let r = faced::config::Config::from_toml(text, None, env);
    match &r {
        Ok(c) => {
            assert!(!c.to_toml_redacted().is_empty());
            // What `faced run` derives from an accepted configuration before it starts anything.
            let _ = faced::pipeline::Settings::from(c);
            let _ = faced::events::store::StoreOptions::from(&c.raw.events);
            c.raw
                .web
                .listen_addr()
                .map_err(|e| assert_input_error(&e))
                .ok();
        }
        Err(e) => assert_input_error(e),
    }
    verdict(&r)
}

#[test]
fn config() {
    let _turn = crate::util::beside_others();
    let keys = faced::config::example_keys(example_config()).unwrap();
    campaign(
        &Target {
            name: "config",
            ci_iters: 40_000,
            max_len: 16 << 10,
            dict: CONFIG_DICT,
        },
        |u| config_doc(u, &keys),
        exec_config,
    );
}

// ---------------------------------------------------------------------------------------------
// zip: uploaded zips

const ZIP_DICT: &[&[u8]] = &[
    b"PK\x03\x04",
    b"PK\x01\x02",
    b"PK\x05\x06",
    b"PK\x06\x06",
    b"PK\x06\x07",
    b"PK\x07\x08",
    b".jpg",
    b".png",
    b"__MACOSX/",
    b"../",
    b"/",
    b"\xff\xff\xff\xff",
];

#[derive(Arbitrary, Debug)]
enum ZipContent {
    Bytes(Vec<u8>),
    /// Zeros that deflate to almost nothing: a bomb's building block.
    Zeros(u32),
    /// One of the image corpus files.
    Corpus(u8),
}

#[derive(Arbitrary, Debug)]
struct ZipEntry {
    name: u8,
    custom_name: String,
    content: ZipContent,
    deflate: bool,
    directory: bool,
}

fn build_zip(entries: Vec<ZipEntry>, images: &[Vec<u8>]) -> Vec<u8> {
    const NAMES: &[&str] = &[
        "a.jpg",
        "b.PNG",
        "dir/c.webp",
        "../../d.gif",
        "/abs.tiff",
        "__MACOSX/._e.jpg",
        ".hidden.jpg",
        "f.bmp",
        "g.txt",
        "",
        "x/",
        "h.jpeg",
    ];
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for e in entries.into_iter().take(120) {
        let name = match usize::from(e.name) % (NAMES.len() + 1) {
            i if i < NAMES.len() => NAMES[i].to_string(),
            _ => format!("{}.jpg", e.custom_name),
        };
        let method = if e.deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .large_file(false);
        if e.directory {
            let _ = zip.add_directory(&name, opts);
            continue;
        }
        if zip.start_file(&name, opts).is_err() {
            continue;
        }
        let _ = match e.content {
            ZipContent::Bytes(b) => zip.write_all(&b),
            // Up to 12 MiB, past the 10 MiB photo limit.
            ZipContent::Zeros(n) if e.deflate => zip.write_all(&vec![0; (n % (12 << 20)) as usize]),
            ZipContent::Zeros(n) => zip.write_all(&vec![0; (n % 4096) as usize]),
            ZipContent::Corpus(i) => zip.write_all(&images[usize::from(i) % images.len()]),
        };
    }
    zip.finish().map(|c| c.into_inner()).unwrap_or_default()
}

/// Unpacks like `POST /api/uploads` with the default `[web]` limits: what comes out stays
/// within them.
fn exec_zip(data: &[u8]) -> Verdict {
    let cfg = faced::web::WebConfig::default();
    let mut out = Vec::new();
    let r = faced::web::api::uploads::photos_of(
        &cfg,
        "upload.zip",
        bytes::Bytes::copy_from_slice(data),
        &mut out,
    );
    assert!(out.len() <= cfg.max_upload_photos);
    let total: usize = out.iter().map(|(_, d)| d.len()).sum();
    assert!(total as u64 <= cfg.max_zip_uncompressed_bytes);
    assert!(out.iter().all(|(_, d)| d.len() <= cfg.max_photo_bytes));
    if let Err(e) = &r {
        assert_input_error(e);
    }
    verdict(&r)
}

#[test]
fn zip() {
    let _turn = crate::util::beside_others();
    let images: Vec<Vec<u8>> = files("corpus", "image")
        .into_iter()
        .map(|(_, d)| d)
        .collect();
    campaign(
        &Target {
            name: "zip",
            ci_iters: 10_000,
            max_len: 64 << 10,
            dict: ZIP_DICT,
        },
        |u| Ok(build_zip(Vec::<ZipEntry>::arbitrary(u)?, &images)),
        exec_zip,
    );
}

/// A zip bomb (entries of zeros that deflate to almost nothing) stops at the limits, having
/// held at most the zip's uncompressed limit in memory.
#[test]
fn zip_bombs_stop_at_the_limits() {
    let _turn = crate::util::beside_others();
    let cfg = faced::web::WebConfig::default();
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .compression_level(Some(1));
    let bomb = |entries: usize, bytes: usize| {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let zeros = vec![0u8; bytes];
        for i in 0..entries {
            zip.start_file(format!("p{i}.jpg"), deflated).unwrap();
            zip.write_all(&zeros).unwrap();
        }
        zip.finish().unwrap().into_inner()
    };
    let cases = [
        // One photo over web.max_photo_bytes.
        (bomb(1, cfg.max_photo_bytes + 1), "web.max_photo_bytes"),
        // Photos under it that add up to more than web.max_zip_uncompressed_bytes.
        (
            bomb(
                (cfg.max_zip_uncompressed_bytes as usize).div_ceil(cfg.max_photo_bytes - 1) + 1,
                cfg.max_photo_bytes - 1,
            ),
            "web.max_zip_uncompressed_bytes",
        ),
        // More photos than web.max_upload_photos.
        (bomb(cfg.max_upload_photos + 1, 10), "web.max_upload_photos"),
    ];
    for (zip, key) in cases {
        assert!(
            zip.len() < 1 << 20,
            "the bomb is small: {} bytes",
            zip.len()
        );
        let mut out = Vec::new();
        let e = faced::web::api::uploads::photos_of(&cfg, "bomb.zip", zip.into(), &mut out)
            .expect_err(key);
        assert_eq!(e.kind(), Kind::ResourceExhausted, "{e}");
        assert!(e.message().contains(key), "{e}");
        let total: usize = out.iter().map(|(_, d)| d.len()).sum();
        assert!(total as u64 <= cfg.max_zip_uncompressed_bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// json: console API bodies and queries

const JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"1e999",
    b"-1",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"&",
    b"=",
    b"%",
    b"%00",
    b"since_ms=",
    b"until_ms=",
    b"tz_offset_min=",
    b"limit=",
    b"\"name\":",
    b"\"samples\":",
    b"\"threshold\":",
    b"\"person_id\":",
    b"\"track_id\":",
];

const JSON_KEYS: &[&str] = &[
    "name",
    "password",
    "token",
    "role",
    "label",
    "samples",
    "allow_rejected",
    "person_id",
    "threshold",
    "camera",
    "track_id",
    "seconds",
    "max_samples",
];

const QUERY_KEYS: &[&str] = &[
    "since_ms",
    "until_ms",
    "tz_offset_min",
    "table",
    "camera",
    "person",
    "kind",
    "limit",
    "before",
    "after",
    "q",
];

/// The console routes fed, by their method and path with `{}` for the one path parameter
/// (taken from the input). Left out: streams (`/api/live/*` GETs never end), uploads (their
/// bodies are the `image` and `zip` targets), `POST /api/users` (every valid body costs a
/// password hash), and what would end the fuzzer's own session (logout, deleting users).
const JSON_ROUTES: &[&str] = &[
    "POST /api/login",
    "POST /api/setup",
    "PUT /api/cameras/{}/threshold",
    "POST /api/live/enroll",
    "POST /api/events/{}/enroll",
    "POST /api/events/{}/not",
    "POST /api/people",
    "PATCH /api/people/{}",
    "POST /api/people/{}/samples",
    "POST /api/tokens",
    "GET /api/events?",
    "GET /api/events.csv?",
    "GET /api/reports?",
    "GET /api/reports.csv?",
    "GET /api/people/{}",
    "GET /api/samples/{}/crop",
];

/// Percent-encodes everything but unreserved characters and `keep`.
fn percent(data: &[u8], keep: &[u8]) -> String {
    let mut s = String::new();
    for &b in data {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The console in this process: a real `AppState` over a SQLite file with an admin session,
/// called through its axum router without a socket.
struct Console {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    cookie: String,
    csrf: String,
    _server: crate::util::web::TestServer,
}

impl Console {
    fn start() -> Console {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(crate::util::web::TestServer::start(
            true,
            faced::web::WebConfig::default(),
        ));
        let router = faced::web::router(server.state.clone());
        let mut c = Console {
            rt,
            router,
            cookie: String::new(),
            csrf: String::new(),
            _server: server,
        };
        let login = serde_json::json!({"name": "admin", "password": crate::util::web::PASSWORD});
        let (status, headers, body) =
            c.call("POST", "/api/login", login.to_string().into_bytes(), true);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let set = headers
            .get_all(axum::http::header::SET_COOKIE)
            .iter()
            .find_map(|v| {
                let v = v.to_str().ok()?;
                v.starts_with("faced_session=")
                    .then(|| v.split(';').next().unwrap().to_string())
            })
            .expect("session cookie");
        let session: serde_json::Value = serde_json::from_slice(&body).unwrap();
        c.cookie = set;
        c.csrf = session["csrf"].as_str().unwrap().to_string();
        c
    }

    fn call(
        &mut self,
        method: &str,
        uri: &str,
        body: Vec<u8>,
        json: bool,
    ) -> (u16, axum::http::HeaderMap, bytes::Bytes) {
        use tower_service::Service;
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("cookie", &self.cookie)
            .header("x-csrf-token", &self.csrf);
        if json {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(axum::body::Body::from(body)).unwrap();
        let router = &mut self.router;
        self.rt.block_on(async move {
            std::future::poll_fn(|cx| {
                <axum::Router as Service<axum::http::Request<axum::body::Body>>>::poll_ready(
                    router, cx,
                )
            })
            .await
            .unwrap();
            let res = router.call(req).await.unwrap();
            let status = res.status().as_u16();
            let headers = res.headers().clone();
            let body = axum::body::to_bytes(res.into_body(), 64 << 20)
                .await
                .unwrap();
            (status, headers, body)
        })
    }
}

/// An input is `<route>\n<body>` with `<route>` one of [`JSON_ROUTES`] after its path parameter
/// is filled in (an unknown route line picks one by its hash). For a GET the body is the query
/// string. Every answer is a 2xx or a 4xx with a JSON error naming the problem, never a 5xx.
fn exec_json(console: &mut Console, data: &[u8]) -> Verdict {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let (method, path) = head.split_once(' ').unwrap_or(("GET", &head));
    let route = JSON_ROUTES
        .iter()
        .find(|r| {
            let (m, p) = r.split_once(' ').unwrap();
            let (pre, post) = p.split_once("{}").unwrap_or((p, ""));
            m == method
                && path.starts_with(pre)
                && path.ends_with(post)
                && path.len() >= pre.len() + post.len()
                && (!p.contains("{}") || !path[pre.len()..path.len() - post.len()].contains('/'))
        })
        .unwrap_or(&JSON_ROUTES[(fnv(head.as_bytes()) % JSON_ROUTES.len() as u64) as usize]);
    let (m, p) = route.split_once(' ').unwrap();
    let uri = match p.split_once("{}") {
        Some((pre, post)) => {
            let param = path
                .strip_prefix(pre)
                .and_then(|s| s.strip_suffix(post))
                .unwrap_or("1");
            let param = if param.is_empty() { "1" } else { param };
            format!("{pre}{}{post}", percent(param.as_bytes(), b"%"))
        }
        None => p.to_string(),
    };
    let (uri, body) = if m == "GET" {
        (format!("{uri}{}", percent(body, b"=&%+")), Vec::new())
    } else {
        (uri, body.to_vec())
    };
    let (status, headers, answer) = console.call(m, &uri, body, m != "GET");
    assert!(
        status < 500,
        "{m} {uri}: {status} {}",
        String::from_utf8_lossy(&answer)
    );
    let is_json = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        if status >= 400 {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{m} {uri}: an error says why: {v}"
            );
        }
    }
    if status < 300 {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

#[test]
fn json() {
    let _turn = crate::util::beside_others();
    let mut console = Console::start();
    campaign(
        &Target {
            name: "json",
            ci_iters: 20_000,
            max_len: 8 << 10,
            dict: JSON_DICT,
        },
        |u| {
            let route = *u.choose(JSON_ROUTES)?;
            let param = match u.int_in_range(0..=4)? {
                0 => text(u)?,
                1 => "front".to_string(),
                _ => i64::arbitrary(u)?.to_string(),
            };
            let route = route.replace("{}", &param);
            let body = if route.starts_with("GET") {
                let mut q = Vec::new();
                for _ in 0..u.int_in_range(0..=4)? {
                    let k = *u.choose(QUERY_KEYS)?;
                    let v = match u.int_in_range(0..=2)? {
                        0 => text(u)?,
                        1 => (*u.choose(INTERESTING)? as i64).to_string(),
                        _ => i32::arbitrary(u)?.to_string(),
                    };
                    q.push(format!("{k}={v}"));
                }
                q.join("&")
            } else if u.ratio(1, 10)? {
                json_value(u, JSON_KEYS, 0)?.to_string()
            } else {
                json_object(u, JSON_KEYS, 0)?.to_string()
            };
            Ok(format!("{route}\n{body}").into_bytes())
        },
        |data| exec_json(&mut console, data),
    );
}
