//! Frigate's HTTP API as faced uses it (docs.frigate.video, "Integrations → HTTP API"), on the
//! configured `frigate.url` only: confirm an event (`GET /api/events/<id>`), fetch an image of
//! it (`GET /api/events/<id>/snapshot.jpg`, `GET /api/<camera>/latest.jpg`) and write its sub
//! label (`POST /api/events/<id>/sub_label`). Called on the `faced-frigate` thread; every
//! request times out after `frigate.timeout_secs`, and every answer is read up to a bound.
//!
//! Every id and camera name is checked again here before it goes into a URL, whatever the
//! caller checked: this file is the one door to Frigate.

use std::time::Duration;

use image::RgbImage;
use serde::Deserialize;

use super::gate::is_event_id;
use super::{FrigateConfig, FrigateStats, valid_name};
use crate::error::{Error, Result};
use crate::vision::image::ImageLimits;

/// Largest image accepted from Frigate.
pub const MAX_IMAGE_BYTES: u64 = 8 << 20;
/// Largest event description accepted: Frigate's answer carries the event's thumbnail (a small
/// JPEG, base64) besides a few hundred bytes of fields.
const MAX_EVENT_BYTES: u64 = 1 << 20;

/// Frigate's answer about one of its events, the fields faced reads. `GET /api/events/<id>`
/// returns the event's database row (`model_to_dict(Event.get(Event.id == id))` in
/// frigate/api/event.py, fields as in frigate/models.py: `id`, `label`, `sub_label`, `camera`,
/// `start_time`, `end_time`, `has_clip`, `has_snapshot`, `data` with `box`, …), or 404 when
/// Frigate has no such event.
#[derive(Debug, Clone, Deserialize)]
pub struct FrigateEvent {
    /// The event's id, as asked.
    pub id: String,
    /// Frigate's camera name.
    pub camera: String,
    /// The object class, `person` for faced.
    pub label: String,
    /// A name someone (a person, another tool, faced) already gave it: a string (older
    /// versions: `[name, score]`), or `null`.
    #[serde(default)]
    pub sub_label: serde_json::Value,
    /// Whether Frigate saved a snapshot of it.
    #[serde(default)]
    pub has_snapshot: bool,
    /// When it ended (plus Frigate's `post_capture`), Unix seconds; `null` while in progress.
    #[serde(default)]
    pub end_time: Option<f64>,
}

/// What Frigate said about an id.
#[derive(Debug)]
pub enum Confirmation {
    /// Frigate has this event.
    Known(FrigateEvent),
    /// Frigate answered 404: it has no event with this id (yet: see the module docs of
    /// `frigate`).
    Unknown,
}

/// The HTTP client to Frigate.
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client for `cfg.url` with `cfg.timeout_secs` per request.
    pub fn new(cfg: &FrigateConfig) -> Api {
        Api {
            base: cfg.url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs_f32(cfg.timeout_secs)))
                    .http_status_as_error(false)
                    .build(),
            ),
        }
    }

    /// Asks Frigate about event `id`.
    pub fn event(&self, id: &str) -> Result<Confirmation> {
        check_id(id)?;
        let url = format!("{}/api/events/{id}", self.base);
        let mut resp = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| Error::unavailable(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if status == 404 {
            return Ok(Confirmation::Unknown);
        }
        if !status.is_success() {
            return Err(Error::unavailable(format!("GET {url}: HTTP {status}")));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_EVENT_BYTES)
            .read_to_vec()
            .map_err(|e| Error::unavailable(format!("GET {url}: {e}")))?;
        let ev: FrigateEvent = serde_json::from_slice(&bytes).map_err(|e| {
            Error::unavailable(format!("GET {url}: not Frigate's event description: {e}"))
        })?;
        Ok(Confirmation::Known(ev))
    }

    /// The event's snapshot, cropped by Frigate to the object.
    pub fn snapshot(&self, id: &str) -> Result<RgbImage> {
        check_id(id)?;
        self.get_image(&format!(
            "{}/api/events/{id}/snapshot.jpg?crop=1&bbox=0&timestamp=0&quality=95",
            self.base
        ))
    }

    /// The camera's newest frame, cropped to `bbox` (see [`crop`]) when given.
    pub fn latest(&self, camera: &str, bbox: Option<[f64; 4]>) -> Result<RgbImage> {
        if !valid_name(camera) {
            return Err(Error::invalid(format!(
                "{camera:?} is not a Frigate camera name"
            )));
        }
        let img = self.get_image(&format!(
            "{}/api/{camera}/latest.jpg?bbox=0&timestamp=0",
            self.base
        ))?;
        Ok(match bbox {
            Some(b) => crop(&img, b),
            None => img,
        })
    }

    fn get_image(&self, url: &str) -> Result<RgbImage> {
        let mut resp = self
            .agent
            .get(url)
            .call()
            .map_err(|e| Error::unavailable(format!("GET {url}: {e}")))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::unavailable(format!("GET {url}: HTTP {status}")));
        }
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_IMAGE_BYTES)
            .read_to_vec()
            .map_err(|e| Error::unavailable(format!("GET {url}: {e}")))?;
        crate::vision::image::decode(&bytes, &ImageLimits::default())
            .map_err(|e| Error::invalid(format!("GET {url}: {}", e.message())))
    }

    /// Writes `name` into Frigate as event `id`'s sub label; retried twice (0.5 s, 1 s) when
    /// Frigate does not answer. Failures are counted and logged, not returned: the faced event
    /// stands without it.
    pub fn post_sub_label(&self, id: &str, name: &str, similarity: f32, stats: &FrigateStats) {
        use std::sync::atomic::Ordering;
        if check_id(id).is_err() {
            return;
        }
        let url = format!("{}/api/events/{id}/sub_label", self.base);
        // Frigate takes up to 100 characters and a score in (0, 1].
        let label: String = name.chars().take(100).collect();
        let body = serde_json::json!({
            "subLabel": label,
            "subLabelScore": (similarity.clamp(0.01, 1.0) * 1000.0).round() / 1000.0,
        })
        .to_string();
        let mut delay = Duration::from_millis(500);
        for attempt in 1..=3 {
            let r = self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.as_bytes());
            match r {
                Ok(resp) if resp.status().is_success() => {
                    stats.labelled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(resp) => {
                    // Frigate refused it (an event it no longer has): retrying will not help.
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(frigate_event = %id, "frigate: POST {url}: HTTP {}", resp.status());
                    return;
                }
                Err(e) if attempt == 3 => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(frigate_event = %id, "frigate: POST {url}: {e}; sub label not written");
                }
                Err(_) => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
            }
        }
    }
}

fn check_id(id: &str) -> Result<()> {
    if is_event_id(id) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{id:?} is not a Frigate event id (<unix time>-<6 of a-z 0-9>)"
        )))
    }
}

/// `img` cut to `b` (`[x1, y1, x2, y2]`, clamped), widened by a quarter each side so a face at
/// the box's edge keeps its surroundings for the detector.
pub fn crop(img: &RgbImage, b: [f64; 4]) -> RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (bw, bh) = ((b[2] - b[0]).max(1.0), (b[3] - b[1]).max(1.0));
    let x1 = (b[0] - bw / 4.0).clamp(0.0, w - 1.0);
    let y1 = (b[1] - bh / 4.0).clamp(0.0, h - 1.0);
    let x2 = (b[2] + bw / 4.0).clamp(x1 + 1.0, w);
    let y2 = (b[3] + bh / 4.0).clamp(y1 + 1.0, h);
    image::imageops::crop_imm(
        img,
        x1 as u32,
        y1 as u32,
        (x2 - x1) as u32,
        (y2 - y1) as u32,
    )
    .to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_stay_inside_the_frame() {
        let img = RgbImage::new(100, 80);
        assert_eq!(crop(&img, [40.0, 20.0, 60.0, 60.0]).dimensions(), (30, 60));
        assert_eq!(
            crop(&img, [-50.0, -50.0, 500.0, 500.0]).dimensions(),
            (100, 80)
        );
        let c = crop(&img, [99.0, 79.0, 99.0, 79.0]);
        assert!(c.width() >= 1 && c.height() >= 1);
    }

    #[test]
    fn nothing_but_frigates_ids_goes_into_a_url() {
        let api = Api::new(&FrigateConfig {
            // Nothing listens there: a request would fail as unavailable, not invalid.
            url: "http://127.0.0.1:9".into(),
            timeout_secs: 0.5,
            ..Default::default()
        });
        for bad in [".", "..", "../../api/config", "1.1-abcdef/../x"] {
            let e = api.event(bad).unwrap_err();
            assert_eq!(e.kind(), crate::Kind::InvalidInput, "{bad:?}: {e}");
            assert!(api.snapshot(bad).is_err());
        }
        assert_eq!(
            api.latest("..", None).unwrap_err().kind(),
            crate::Kind::InvalidInput
        );
    }

    #[test]
    fn frigates_event_description_is_read() {
        // Frigate 0.14's answer for a person event (fields of frigate/models.py `Event`).
        let body = r#"{"id": "1607123955.475377-mxklsc", "label": "person", "sub_label": null,
            "camera": "front_door", "start_time": 1607123954.475377, "end_time": null,
            "top_score": 0.82, "score": 0.82, "false_positive": false, "zones": [],
            "thumbnail": "/9j/4AAQ", "has_clip": true, "has_snapshot": true, "region": null,
            "box": null, "area": null, "retain_indefinitely": false, "ratio": 1.0,
            "plus_id": null, "model_hash": "abc", "detector_type": "cpu", "model_type": "ssd",
            "data": {"box": [0.1, 0.2, 0.3, 0.4], "region": [0, 0, 0.5, 0.5], "score": 0.82,
                     "top_score": 0.82, "attributes": [], "type": "object"}}"#;
        let ev: FrigateEvent = serde_json::from_str(body).unwrap();
        assert_eq!(ev.id, "1607123955.475377-mxklsc");
        assert_eq!(
            (ev.camera.as_str(), ev.label.as_str()),
            ("front_door", "person")
        );
        assert!(ev.sub_label.is_null() && ev.has_snapshot && ev.end_time.is_none());
    }
}
