//! Photos in (admin): `POST /api/uploads` analyses photos and zips into candidates that wait
//! (30 minutes, in memory) to be saved by `POST /api/people` or `POST /api/people/{id}/samples`;
//! `GET /api/uploads/{id}/crop` shows one; `POST /api/identify` matches one photo's faces
//! against the gallery. Also the candidate store itself, which `POST /api/live/enroll` and the
//! event pages fill too.
//!
//! Every photo is bounded before it is decoded: bytes (`web.max_photo_bytes`), count
//! (`web.max_upload_photos`), zip size (`web.max_zip_uncompressed_bytes`), pixels from the header
//! (`web.max_upload_pixels`) and a share of the console's decode memory (`web.decode_memory_mb`).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use image::RgbImage;

use super::{blocking, gallery, jpeg_response};
use crate::error::{Error, Kind, Result};
use crate::gallery::{Match, NewSample, SampleKind};
use crate::json;
use crate::vision::image::{DecodePermit, ImageLimits, Probe};
use crate::vision::quality::Quality;
use crate::web::error::{ApiError, ApiResult, PathParam};
use crate::web::{AppState, WebConfig, auth};

/// A face analysed from an upload or a live track, waiting for the user to save it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub(super) embedding: Vec<f32>,
    pub(super) crop_jpeg: Vec<u8>,
    pub(super) quality_json: String,
    pub(super) source: String,
    pub(super) ok: bool,
    pub(super) created: Instant,
}

impl Candidate {
    /// The candidate as a gallery sample of `kind`.
    pub(super) fn sample(&self, kind: SampleKind) -> NewSample<'_> {
        NewSample {
            kind,
            embedding: &self.embedding,
            crop_jpeg: &self.crop_jpeg,
            quality_json: &self.quality_json,
            source: &self.source,
        }
    }
}

/// Analysed faces waiting to be saved, by random id; kept 30 minutes, at most 2000.
#[derive(Debug, Default)]
pub struct Candidates(Mutex<HashMap<String, Candidate>>);

const CANDIDATE_TTL: Duration = Duration::from_secs(30 * 60);
const MAX_CANDIDATES: usize = 2000;

impl Candidates {
    /// Drops expired candidates.
    pub fn purge(&self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| c.created.elapsed() < CANDIDATE_TTL);
    }

    fn insert(&self, c: Candidate) -> String {
        let id = auth::new_secret().unwrap_or_default();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_CANDIDATES {
            m.retain(|_, c| c.created.elapsed() < CANDIDATE_TTL);
            if m.len() >= MAX_CANDIDATES
                && let Some(oldest) = m
                    .iter()
                    .min_by_key(|(_, c)| c.created)
                    .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(id.clone(), c);
        id
    }

    pub(super) fn get(&self, id: &str) -> Option<Candidate> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// One upload item: verdict, message, quality and (if a face was found) a candidate id.
    pub(super) fn add_item(
        &self,
        s: &AppState,
        file: String,
        faces: usize,
        face: Option<(Quality, Vec<f32>, Vec<u8>)>,
    ) -> json::Candidate<Quality> {
        let Some((q, embedding, crop_jpeg)) = face else {
            return rejected(file, "no_face", "no face found in this photo".into());
        };
        let (verdict, message) = match s.deps.quality.check(&q) {
            None => ("ok".to_string(), "good sample".to_string()),
            Some((r, msg)) => (
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                msg,
            ),
        };
        let message = if faces > 1 {
            format!("{message} ({faces} faces found; using the largest)")
        } else {
            message
        };
        let ok = verdict == "ok";
        let id = self.insert(Candidate {
            embedding,
            crop_jpeg,
            quality_json: serde_json::to_string(&q).unwrap_or_else(|_| "{}".into()),
            source: file
                .chars()
                .take(crate::gallery::MAX_SOURCE_CHARS)
                .collect(),
            ok,
            created: Instant::now(),
        });
        json::Candidate {
            id: Some(id),
            file,
            faces,
            ok,
            verdict,
            message,
            quality: Some(q),
        }
    }
}

/// An upload item without a face to save (`no_face`, `unreadable`).
fn rejected(file: String, verdict: &str, message: String) -> json::Candidate<Quality> {
    json::Candidate {
        id: None,
        file,
        faces: 0,
        ok: false,
        verdict: verdict.into(),
        message,
        quality: None,
    }
}

pub(super) fn jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(img)
        .map_err(|e| Error::internal("cannot encode face crop").with_source(e))?;
    Ok(out)
}

pub(super) fn largest(faces: Vec<crate::vision::Face>) -> Option<crate::vision::Face> {
    faces.into_iter().max_by(|a, b| {
        let area = |f: &crate::vision::Face| f.detection.width() * f.detection.height();
        area(a).total_cmp(&area(b))
    })
}

fn is_image_name(n: &str) -> bool {
    let n = n.to_ascii_lowercase();
    [
        ".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff",
    ]
    .iter()
    .any(|e| n.ends_with(e))
}

/// Splits an upload into photos: plain files as they are, zips unpacked with limits
/// (`web.max_photo_bytes` per photo, `web.max_upload_photos`, `web.max_zip_uncompressed_bytes`).
/// Public for the fuzz tests, which feed it hostile zips.
pub fn photos_of(
    cfg: &WebConfig,
    name: &str,
    data: Bytes,
    out: &mut Vec<(String, Bytes)>,
) -> Result<()> {
    let limit_err = || {
        Error::exhausted(format!(
            "too many photos in one upload (limit {}, web.max_upload_photos)",
            cfg.max_upload_photos
        ))
    };
    if !data.starts_with(b"PK\x03\x04") {
        if data.len() > cfg.max_photo_bytes {
            return Err(Error::exhausted(format!(
                "{name} is {} bytes, over the {}-byte photo limit (web.max_photo_bytes)",
                data.len(),
                cfg.max_photo_bytes
            )));
        }
        if out.len() >= cfg.max_upload_photos {
            return Err(limit_err());
        }
        out.push((name.to_string(), data));
        return Ok(());
    }
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data))
        .map_err(|e| Error::invalid(format!("{name} is not a readable zip file: {e}")))?;
    let mut total: u64 = 0;
    for i in 0..zip.len() {
        let mut entry = zip
            .by_index(i)
            .map_err(|e| Error::invalid(format!("{name}: bad zip entry {i}: {e}")))?;
        let entry_name = entry.name().to_string();
        let base = entry_name.rsplit('/').next().unwrap_or("").to_string();
        if entry.is_dir()
            || !is_image_name(&base)
            || base.starts_with('.')
            || entry_name.starts_with("__MACOSX")
        {
            continue;
        }
        if out.len() >= cfg.max_upload_photos {
            return Err(limit_err());
        }
        // Read at most one byte over each limit: a zip's declared sizes may lie.
        let cap = (cfg.max_photo_bytes as u64)
            .min(cfg.max_zip_uncompressed_bytes - total.min(cfg.max_zip_uncompressed_bytes));
        let mut buf = Vec::new();
        (&mut entry)
            .take(cap + 1)
            .read_to_end(&mut buf)
            .map_err(|e| Error::invalid(format!("{name}: cannot unpack {entry_name}: {e}")))?;
        if buf.len() as u64 > cap {
            return Err(Error::exhausted(format!(
                "{name}: {entry_name} unpacks beyond the limits (web.max_photo_bytes {} per photo, \
                 web.max_zip_uncompressed_bytes {} per zip)",
                cfg.max_photo_bytes, cfg.max_zip_uncompressed_bytes
            )));
        }
        total += buf.len() as u64;
        out.push((format!("{name}/{base}"), Bytes::from(buf)));
    }
    Ok(())
}

/// Reads every file field of a multipart body.
async fn read_files(mut mp: Multipart) -> ApiResult<Vec<(String, Bytes)>> {
    let mut files = Vec::new();
    while let Some(field) = mp.next_field().await? {
        let name = field
            .file_name()
            .map(str::to_string)
            .unwrap_or_else(|| field.name().unwrap_or("upload").to_string());
        let data = field.bytes().await?;
        files.push((name, data));
    }
    if files.is_empty() {
        return Err(Error::invalid(
            "the upload holds no files (send multipart/form-data with one or more file fields)",
        )
        .into());
    }
    Ok(files)
}

/// The limits an uploaded photo is decoded with (public for the fuzz tests, which decode hostile
/// images with the same limits).
pub fn limits(cfg: &WebConfig) -> ImageLimits {
    ImageLimits {
        max_file_bytes: cfg.max_photo_bytes as u64,
        max_pixels: cfg.max_upload_pixels,
        ..ImageLimits::default()
    }
}

/// How long an upload waits for its share of the decode budget before it is refused (503).
const DECODE_QUEUE_WAIT: Duration = Duration::from_secs(20);

/// Reads an uploaded photo's header: its dimensions against `web.max_upload_pixels` and its
/// decode cost against the whole `web.decode_memory_mb`, before anything is decoded. Over either
/// limit is `ResourceExhausted` (413) naming the key; other errors (not an image) are the
/// decoder's.
fn probe_upload(cfg: &WebConfig, budget_bytes: u64, name: &str, data: &[u8]) -> Result<Probe> {
    let p = crate::vision::image::probe(data, &limits(cfg)).map_err(|e| {
        if e.kind() == Kind::ResourceExhausted {
            Error::exhausted(format!(
                "{name}: {} (web.max_upload_pixels = {}, web.max_photo_bytes = {})",
                e.message(),
                cfg.max_upload_pixels,
                cfg.max_photo_bytes
            ))
        } else {
            e
        }
    })?;
    if p.decode_bytes > budget_bytes {
        return Err(Error::exhausted(format!(
            "{name} is {}: decoding it needs about {} MiB, more than the console's whole decode \
             budget (web.decode_memory_mb = {}); downscale it or save it as 8-bit",
            p.describe(),
            p.decode_bytes.div_ceil(1 << 20),
            cfg.decode_memory_mb
        )));
    }
    Ok(p)
}

/// Takes `probe`'s share of the console's decode budget (shared by every upload in flight),
/// waiting up to [`DECODE_QUEUE_WAIT`]. Keep the permit while the decoded image is in use.
async fn decode_share(s: &AppState, probe: &Probe) -> ApiResult<DecodePermit> {
    s.decode_budget
        .acquire(probe.decode_bytes, DECODE_QUEUE_WAIT)
        .await
        .map_err(|_| {
            ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                Kind::Unavailable,
                format!(
                    "the console is busy decoding other uploads (web.decode_memory_mb = {} in \
                     use); try again in a few seconds",
                    s.config.decode_memory_mb
                ),
            )
        })
}

/// `POST /api/uploads` (multipart: photos and/or zips): analyses every photo and returns one
/// item per photo with the largest face's quality verdict and a candidate id to save.
///
/// Every photo's header is read first: one over the pixel or decode budget refuses the whole
/// upload (413, like a photo over `web.max_photo_bytes`) before any photo is decoded. Photos are
/// then decoded one at a time, each within the shared decode budget.
pub async fn upload(
    State(s): State<AppState>,
    mp: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<axum::Json<json::Candidates<Quality>>> {
    let files = read_files(mp?).await?;
    let cfg = s.config.clone();
    let budget = s.decode_budget.total_bytes();
    let photos = blocking(move || {
        let mut photos = Vec::new();
        for (name, data) in files {
            photos_of(&cfg, &name, data, &mut photos)?;
        }
        let mut probed = Vec::with_capacity(photos.len());
        for (name, data) in photos {
            match probe_upload(&cfg, budget, &name, &data) {
                Err(e) if e.kind() == Kind::ResourceExhausted => return Err(e),
                p => probed.push((name, data, p)),
            }
        }
        Ok(probed)
    })
    .await?;
    if photos.is_empty() {
        return Err(Error::invalid(
            "no photos found in the upload (JPEG, PNG, WebP, BMP, GIF or TIFF)",
        )
        .into());
    }
    let mut items = Vec::new();
    for (name, data, probe) in photos {
        let decoded = match probe {
            Ok(probe) => {
                let permit = decode_share(&s, &probe).await?;
                let lim = limits(&s.config);
                blocking(move || crate::vision::image::decode(&data, &lim))
                    .await
                    .map(|img| (img, permit))
            }
            Err(e) => Err(e.into()),
        };
        let (img, permit) = match decoded {
            Ok(d) => d,
            Err(e) => {
                items.push(rejected(name, "unreadable", e.error.message().to_string()));
                continue;
            }
        };
        let faces = s.deps.analyzer.analyze(img).await?;
        drop(permit);
        let n = faces.len();
        let face = match largest(faces) {
            Some(f) => Some((
                f.quality,
                f.embedding,
                blocking(move || jpeg(&f.aligned)).await?,
            )),
            None => None,
        };
        items.push(s.candidates.add_item(&s, name, n, face));
    }
    Ok(axum::Json(json::Candidates { samples: items }))
}

/// `GET /api/uploads/{id}/crop`: a candidate's aligned face crop (JPEG).
pub async fn candidate_crop(
    State(s): State<AppState>,
    PathParam(id): PathParam<String>,
) -> ApiResult<Response> {
    let c = s
        .candidates
        .get(&id)
        .ok_or_else(|| Error::not_found("no such upload sample (expired after 30 minutes?)"))?;
    Ok(jpeg_response(c.crop_jpeg))
}

/// `POST /api/identify` (multipart, one photo): every face with its best matches.
pub async fn identify(
    State(s): State<AppState>,
    mp: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<axum::Json<json::Identified<Quality, Match>>> {
    let mut files = read_files(mp?).await?;
    if files.len() != 1 {
        return Err(Error::invalid("send exactly one photo to identify").into());
    }
    let (name, data) = files.remove(0);
    let cfg = s.config.clone();
    let budget = s.decode_budget.total_bytes();
    let (data, probe) = blocking(move || {
        let p = probe_upload(&cfg, budget, &name, &data)?;
        Ok((data, p))
    })
    .await?;
    let permit = decode_share(&s, &probe).await?;
    let lim = limits(&s.config);
    let img = blocking(move || crate::vision::image::decode(&data, &lim)).await?;
    let faces = s.deps.analyzer.analyze(img).await?;
    drop(permit);
    let threshold = s.deps.threshold;
    let g = gallery(&s);
    let mut out = Vec::new();
    for f in faces {
        let matches = g.search(&f.embedding, 3)?;
        let best = matches
            .first()
            .filter(|m| m.similarity >= threshold)
            .cloned();
        out.push(json::IdentifiedFace {
            bbox: f.detection.bbox,
            quality: f.quality,
            best,
            matches,
        });
    }
    Ok(axum::Json(json::Identified {
        threshold,
        faces: out,
    }))
}
