//! Commands received on `faced/<device>/cmd/<verb>`: parsing and validation of the command body
//! (pure functions, run on the `mqtt` thread for each incoming message after its signature was
//! checked by [`super::auth`]). A command that passes goes to the daemon as a [`Command`]; one
//! that fails is answered on `faced/<device>/cmd/result` with the reason, and never reaches the
//! daemon.
//!
//! Every body is checked: at most [`MAX_COMMAND_BYTES`], UTF-8 JSON object (or empty for verbs
//! without arguments), no unknown fields, each field's type and range.

use serde::{Deserialize, Serialize};

use super::auth::Verifier;
use crate::error::{Error, Result};

/// Largest command payload accepted (the signed envelope included).
pub const MAX_COMMAND_BYTES: usize = 4096;

/// Lowest threshold `set_threshold` accepts: below it different people start to match each
/// other (with the threshold at 0 a stranger was recognized as an enrolled person at 0.24).
pub const MIN_THRESHOLD: f64 = 0.30;

/// Highest threshold `set_threshold` accepts: above it even enrolled people are rarely
/// recognized.
pub const MAX_THRESHOLD: f64 = 0.95;

/// Longest request id (`"id"` field) accepted; it is echoed in the result.
pub const MAX_REQUEST_ID_CHARS: usize = 64;

/// The verbs faced understands, for error messages and docs.
pub const VERBS: &[&str] = &["reload_gallery", "enroll_last_unknown", "set_threshold"];

/// A validated command for the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Re-read the gallery from the database (after edits by another process).
    ReloadGallery {
        /// Caller's id for this request, echoed in the result.
        request_id: Option<String>,
    },
    /// Enroll the most recent unknown track as person `name`: a new person, or, only with
    /// `add_to_existing`, an existing one.
    EnrollLastUnknown {
        /// Caller's id for this request, echoed in the result.
        request_id: Option<String>,
        /// Person name, checked by the gallery's rule (trimmed, 1..=100 characters, no control or
        /// invisible formatting characters).
        name: String,
        /// Only consider unknown tracks from this camera (`None`: any camera).
        camera: Option<String>,
        /// `false` (default): create `name`, refused if that person exists. `true`: add the face
        /// to the existing person `name`, refused if there is none. A name alone must never
        /// give a stranger's face someone else's identity.
        add_to_existing: bool,
    },
    /// Change the recognition similarity threshold (until restart).
    SetThreshold {
        /// Caller's id for this request, echoed in the result.
        request_id: Option<String>,
        /// New threshold, cosine similarity in [`MIN_THRESHOLD`]`..=`[`MAX_THRESHOLD`].
        threshold: f32,
        /// Only this camera (`None`: all cameras).
        camera: Option<String>,
    },
}

impl Command {
    /// The verb as it appears in the topic.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::ReloadGallery { .. } => "reload_gallery",
            Command::EnrollLastUnknown { .. } => "enroll_last_unknown",
            Command::SetThreshold { .. } => "set_threshold",
        }
    }

    /// The caller's request id, if it gave one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Command::ReloadGallery { request_id }
            | Command::EnrollLastUnknown { request_id, .. }
            | Command::SetThreshold { request_id, .. } => request_id.as_deref(),
        }
    }
}

/// The JSON published on `faced/<device>/cmd/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The verb from the topic (possibly one faced does not know).
    pub verb: String,
    /// The request id, if the payload had a valid one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// `rejected` (invalid, never reached the daemon), `accepted` (handed to the daemon),
    /// `done` or `failed` (reported by the daemon).
    pub status: String,
    /// Whether the command was accepted or done.
    pub ok: bool,
    /// Why it was rejected or failed ([`Kind::as_str`]).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    /// Human-readable error or outcome.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
}

impl CommandResult {
    /// A rejection or failure with `err`.
    pub fn error(verb: &str, id: Option<String>, status: &str, err: &Error) -> Self {
        CommandResult {
            verb: verb.to_owned(),
            id,
            status: status.to_owned(),
            ok: false,
            kind: Some(err.kind().as_str().to_owned()),
            message: Some(err.to_string()),
        }
    }

    /// A success with an optional message.
    pub fn ok(verb: &str, id: Option<String>, status: &str, message: Option<String>) -> Self {
        CommandResult {
            verb: verb.to_owned(),
            id,
            status: status.to_owned(),
            ok: true,
            kind: None,
            message,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadArgs {
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollArgs {
    id: Option<String>,
    name: String,
    camera: Option<String>,
    #[serde(default)]
    add_to_existing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdArgs {
    id: Option<String>,
    threshold: f64,
    camera: Option<String>,
}

/// Best-effort request id of a payload that may be invalid, for echoing in a rejection: the
/// `id` of the signed envelope's `body` (or of a bare, unsigned body).
pub fn sniff_request_id(payload: &[u8]) -> Option<String> {
    if payload.len() > MAX_COMMAND_BYTES {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    let id = v.get("body").unwrap_or(&v).get("id")?.as_str()?;
    check_request_id(id).ok()?;
    Some(id.to_owned())
}

/// Everything faced does with a message that arrived on `faced/<device>/cmd/<verb>` before the
/// daemon sees it: refuses retained and oversized messages, checks the signature, timestamp and
/// nonce with `verifier` at `now` (Unix seconds), then [`parse`]s the signed body. The MQTT
/// thread calls this for each command message (an empty one, which only clears a retained
/// message, never gets here); the fuzz tests call it with hostile payloads.
pub fn receive(
    verifier: &mut Verifier,
    verb: &str,
    topic: &str,
    payload: &[u8],
    retain: bool,
    now: i64,
) -> Result<Command> {
    if retain {
        return Err(Error::invalid(format!(
            "command {verb}: retained commands are ignored (they would run on every reconnect); publish \
             without the retain flag, and clear the retained one with an empty retained message"
        )));
    }
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Error::exhausted(format!(
            "command {verb}: payload is {} bytes, more than the limit of {MAX_COMMAND_BYTES}",
            payload.len()
        )));
    }
    let body = verifier.verify(topic, payload, now)?;
    parse(verb, body.as_bytes())
}

/// Parses and validates the body of a command on `faced/<device>/cmd/<verb>` (the `body` of
/// the signed envelope).
///
/// Errors are [`Kind::InvalidInput`] (or [`Kind::ResourceExhausted`] for an oversized payload,
/// [`Kind::NotFound`] for an unknown verb) with a message naming the field and the rule.
pub fn parse(verb: &str, payload: &[u8]) -> Result<Command> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Error::exhausted(format!(
            "command {verb}: payload is {} bytes, more than the limit of {MAX_COMMAND_BYTES}",
            payload.len()
        )));
    }
    if !VERBS.contains(&verb) {
        return Err(Error::not_found(format!(
            "unknown command {verb:?}; known commands: {}",
            VERBS.join(", ")
        )));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| Error::invalid(format!("command {verb}: payload is not UTF-8 JSON")))?;
    // Verbs without required fields accept an empty payload as `{}`.
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid(format!("command {verb}: payload is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid(format!(
            "command {verb}: payload must be a JSON object, e.g. {}",
            example(verb)
        )));
    }
    let bad = |e: serde_json::Error| {
        Error::invalid(format!(
            "command {verb}: {e}; expected e.g. {}",
            example(verb)
        ))
    };
    let cmd = match verb {
        "reload_gallery" => {
            let a: ReloadArgs = serde_json::from_value(value).map_err(bad)?;
            Command::ReloadGallery {
                request_id: opt_request_id(a.id)?,
            }
        }
        "enroll_last_unknown" => {
            let a: EnrollArgs = serde_json::from_value(value).map_err(bad)?;
            Command::EnrollLastUnknown {
                request_id: opt_request_id(a.id)?,
                name: check_name(&a.name)?,
                camera: opt_camera(a.camera)?,
                add_to_existing: a.add_to_existing,
            }
        }
        "set_threshold" => {
            let a: ThresholdArgs = serde_json::from_value(value).map_err(bad)?;
            if !a.threshold.is_finite() || !(MIN_THRESHOLD..=MAX_THRESHOLD).contains(&a.threshold) {
                return Err(Error::invalid(format!(
                    "command set_threshold: \"threshold\" must be a number from {MIN_THRESHOLD:.2} \
                     to {MAX_THRESHOLD:.2} (cosine similarity; lower lets strangers match), got {}",
                    a.threshold
                )));
            }
            Command::SetThreshold {
                request_id: opt_request_id(a.id)?,
                threshold: a.threshold as f32,
                camera: opt_camera(a.camera)?,
            }
        }
        _ => unreachable!("checked against VERBS above"),
    };
    Ok(cmd)
}

fn example(verb: &str) -> &'static str {
    match verb {
        "enroll_last_unknown" => r#"{"name":"Alice"}"#,
        "set_threshold" => r#"{"threshold":0.45}"#,
        _ => "{}",
    }
}

fn check_request_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.chars().count() > MAX_REQUEST_ID_CHARS
        || id.chars().any(char::is_control)
    {
        return Err(Error::invalid(format!(
            "\"id\" must be 1 to {MAX_REQUEST_ID_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

fn opt_request_id(id: Option<String>) -> Result<Option<String>> {
    if let Some(id) = &id {
        check_request_id(id)?;
    }
    Ok(id)
}

fn opt_camera(camera: Option<String>) -> Result<Option<String>> {
    if let Some(c) = &camera
        && (c.is_empty() || c.len() > 64 || c.chars().any(char::is_control))
    {
        return Err(Error::invalid(
            "\"camera\" must be a camera name of 1 to 64 bytes",
        ));
    }
    Ok(camera)
}

/// The gallery's rule for person names ([`crate::gallery::validate_person_name`]), checked here
/// too so a bad name is refused on `cmd/result` before the command reaches the daemon.
fn check_name(name: &str) -> Result<String> {
    crate::gallery::validate_person_name(name)
        .map(str::to_owned)
        .map_err(|e| Error::invalid(format!("command enroll_last_unknown: \"name\": {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Kind;

    #[test]
    fn valid_commands_parse() {
        assert_eq!(
            parse("reload_gallery", b"").unwrap(),
            Command::ReloadGallery { request_id: None }
        );
        assert_eq!(
            parse("enroll_last_unknown", br#"{"name":"  Alice ","id":"r1"}"#).unwrap(),
            Command::EnrollLastUnknown {
                request_id: Some("r1".into()),
                name: "Alice".into(),
                camera: None,
                add_to_existing: false,
            }
        );
        assert_eq!(
            parse(
                "enroll_last_unknown",
                br#"{"name":"Alice","add_to_existing":true}"#
            )
            .unwrap(),
            Command::EnrollLastUnknown {
                request_id: None,
                name: "Alice".into(),
                camera: None,
                add_to_existing: true,
            }
        );
        let c = parse("set_threshold", br#"{"threshold":0.5,"camera":"front"}"#).unwrap();
        assert_eq!(
            c,
            Command::SetThreshold {
                request_id: None,
                threshold: 0.5,
                camera: Some("front".into())
            }
        );
        assert_eq!(c.verb(), "set_threshold");
    }

    #[test]
    fn invalid_commands_are_rejected_with_reasons() {
        let cases: &[(&str, &[u8], Kind, &str)] = &[
            (
                "explode",
                b"{}",
                Kind::NotFound,
                "unknown command \"explode\"",
            ),
            (
                "set_threshold",
                br#"{"threshold":1.5}"#,
                Kind::InvalidInput,
                "from 0.30 to 0.95",
            ),
            (
                "set_threshold",
                br#"{"threshold":0.0}"#,
                Kind::InvalidInput,
                "from 0.30 to 0.95",
            ),
            (
                "set_threshold",
                br#"{"threshold":0.29}"#,
                Kind::InvalidInput,
                "got 0.29",
            ),
            (
                "set_threshold",
                br#"{"threshold":0.96}"#,
                Kind::InvalidInput,
                "got 0.96",
            ),
            (
                "enroll_last_unknown",
                br#"{"name":"A","add_to_existing":"yes"}"#,
                Kind::InvalidInput,
                "invalid type",
            ),
            (
                "set_threshold",
                br#"{"threshold":"high"}"#,
                Kind::InvalidInput,
                "invalid type",
            ),
            (
                "set_threshold",
                b"",
                Kind::InvalidInput,
                "missing field `threshold`",
            ),
            (
                "enroll_last_unknown",
                br#"{"name":"   "}"#,
                Kind::InvalidInput,
                "\"name\": person name must be 1 to 100",
            ),
            (
                "enroll_last_unknown",
                br#"{"name":"A","admin":true}"#,
                Kind::InvalidInput,
                "unknown field `admin`",
            ),
            (
                "enroll_last_unknown",
                br#"["Alice"]"#,
                Kind::InvalidInput,
                "must be a JSON object",
            ),
            (
                "reload_gallery",
                b"{not json",
                Kind::InvalidInput,
                "not valid JSON",
            ),
            (
                "reload_gallery",
                b"\xff\xfe",
                Kind::InvalidInput,
                "not UTF-8",
            ),
            (
                "reload_gallery",
                br#"{"id":""}"#,
                Kind::InvalidInput,
                "\"id\" must be",
            ),
        ];
        for (verb, payload, kind, want) in cases {
            let e = parse(verb, payload).unwrap_err();
            assert_eq!(e.kind(), *kind, "{verb} {e}");
            assert!(
                e.to_string().contains(want),
                "{verb}: {e} should contain {want}"
            );
        }
        let big = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert_eq!(
            parse("reload_gallery", &big).unwrap_err().kind(),
            Kind::ResourceExhausted
        );
    }

    #[test]
    fn request_id_is_sniffed_from_invalid_payloads() {
        assert_eq!(
            sniff_request_id(br#"{"id":"x1","threshold":7}"#).as_deref(),
            Some("x1")
        );
        assert_eq!(
            sniff_request_id(br#"{"ts":1,"body":{"id":"x2"}}"#).as_deref(),
            Some("x2")
        );
        assert_eq!(sniff_request_id(b"nope"), None);
    }
}
