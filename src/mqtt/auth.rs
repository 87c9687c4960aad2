//! Signed MQTT commands: the per-device command key, the signature check and the replay cache.
//!
//! Anyone who can publish on the broker can publish on `faced/<device>/cmd/...`, so the broker's
//! word is not enough to let a message enroll a face or lower the threshold. Every command
//! carries an HMAC-SHA256 made with a key only this device (and whoever its owner gave the key
//! to) knows. The wire format (documented in `docs/mqtt.md`, "Signed commands"):
//!
//! ```text
//! payload   = {"ts": <Unix seconds>, "nonce": "<16..=64 of A-Z a-z 0-9 _ ->", "sig": "<64 hex>",
//!              "body": <the command's JSON object>}
//! signed    = topic "\n" ts "\n" nonce "\n" body
//! sig       = hex(HMAC-SHA256(key, signed))
//! ```
//!
//! `body` in `signed` is the exact bytes of the `body` member as they appear in the payload (no
//! re-serialisation, so a shell can sign the text it sends), `ts` is the decimal integer as
//! written, `topic` the full topic name (so a signature for one verb or one device is worthless
//! on another). The key is the 32 bytes whose hex (64 characters) is the key file's content.
//!
//! A message is accepted when, in this order: it parses; the signature matches (compared in
//! constant time by `ring::hmac::verify`); `ts` is within ±`window` seconds of faced's clock and
//! not before this process started; its nonce was not seen before. Only messages with a valid
//! signature reach the nonce cache, so strangers cannot fill it.
//!
//! # Invariants and crash windows
//!
//! * The replay cache is in memory. A message is remembered until its `ts + window` has
//!   passed, when the time check refuses it anyway. A restart forgets the cache, so messages
//!   signed before the process started are refused (`ts` earlier than the start): a message
//!   captured before a restart cannot be replayed after it. The cost: a sender whose clock runs
//!   `d` seconds behind is refused for the first `d` seconds after a start.
//! * The cache holds at most [`REPLAY_CACHE_MAX`] nonces; when it is full of unexpired ones,
//!   further commands are refused (never evicted: eviction would reopen a replay).
//! * The key file is created (mode 0600, atomically: a temporary file hard-linked into place)
//!   when missing; an existing one readable by group or others is refused, as is one that is
//!   not 64 hex characters.
//!
//! Runs on the `mqtt` thread; [`Verifier`] is not shared.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Kind, Result};

/// Bytes of the command key (its file holds twice as many hex characters).
pub const KEY_LEN: usize = 32;

/// Most nonces remembered at once (about 100 bytes each).
pub const REPLAY_CACHE_MAX: usize = 1024;

/// Shortest and longest nonce, characters.
pub const NONCE_CHARS: std::ops::RangeInclusive<usize> = 16..=64;

/// File name of the command key when `mqtt.command_key` is not set: beside the gallery key.
pub const DEFAULT_KEY_FILE: &str = "mqtt-command.key";

/// The default command key path for a gallery key at `gallery_key`.
pub fn default_key_path(gallery_key: &Path) -> PathBuf {
    gallery_key.with_file_name(DEFAULT_KEY_FILE)
}

/// The per-device command key.
pub struct CommandKey {
    key: hmac::Key,
    id: String,
}

impl std::fmt::Debug for CommandKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommandKey(<redacted>)")
    }
}

impl CommandKey {
    /// A key from its hex text (64 hex characters; surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<CommandKey> {
        let bytes = decode_hex(text.trim())
            .filter(|b| b.len() == KEY_LEN)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "a command key is {} hex characters (e.g. `openssl rand -hex {KEY_LEN}`)",
                    KEY_LEN * 2
                ))
            })?;
        // Names the key in the audit trail without revealing it: a hash of the key, not a MAC
        // anyone could compute from a captured command.
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        Ok(CommandKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            id: crate::models::hex(&digest.as_ref()[..4]),
        })
    }

    /// A short id of this key (8 hex digits of its SHA-256): which key signed a command.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads the key file at `path`, creating it (mode 0600, a new random key) when it does not
    /// exist. Returns the key and whether it was created. Errors name `mqtt.command_key`.
    pub fn load_or_create(path: &Path) -> Result<(CommandKey, bool)> {
        if let Some(k) = read_key(path)? {
            return Ok((k, false));
        }
        create_key(path)?;
        // Read back what is on disk: another process may have created it first.
        let k = read_key(path)?.ok_or_else(|| {
            Error::precondition(format!(
                "mqtt.command_key: {} vanished right after it was created",
                path.display()
            ))
        })?;
        Ok((k, true))
    }

    /// The hex signature of a command: HMAC-SHA256 over [`signed_text`].
    pub fn sign(&self, topic: &str, ts: i64, nonce: &str, body: &str) -> String {
        let tag = hmac::sign(&self.key, &signed_text(topic, ts, nonce, body));
        crate::models::hex(tag.as_ref())
    }

    /// A complete signed payload for `topic` with `body` (a JSON object's text), for tests
    /// and tools: `{"ts":..,"nonce":..,"sig":..,"body":<body>}`.
    pub fn signed_payload(&self, topic: &str, ts: i64, nonce: &str, body: &str) -> String {
        let sig = self.sign(topic, ts, nonce, body);
        format!(r#"{{"ts":{ts},"nonce":"{nonce}","sig":"{sig}","body":{body}}}"#)
    }
}

/// The bytes that are signed: `topic \n ts \n nonce \n body`.
pub fn signed_text(topic: &str, ts: i64, nonce: &str, body: &str) -> Vec<u8> {
    format!("{topic}\n{ts}\n{nonce}\n{body}").into_bytes()
}

fn key_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::precondition(format!("mqtt.command_key: {}: {why}", path.display()))
}

fn read_key(path: &Path) -> Result<Option<CommandKey>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(key_error(path, "cannot read it").with_source(e)),
    };
    if !meta.file_type().is_file() {
        return Err(key_error(path, "not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(key_error(
            path,
            format!(
                "readable or writable by group or others (mode {mode:03o}); run `chmod 600 {}` \
                 and replace the key if someone else may have read it",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| key_error(path, "cannot read it").with_source(e))?;
    CommandKey::from_hex(&text)
        .map(Some)
        .map_err(|e| key_error(path, e))
}

fn create_key(path: &Path) -> Result<()> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::unavailable("system random source failed"))?;
    let text = format!("{}\n", crate::models::hex(&key));
    match crate::db::crypto::create_secret_file(path, text.as_bytes()) {
        Ok(true) => {
            tracing::info!(file = %path.display(), "created the MQTT command key (mode 0600)");
            Ok(())
        }
        // Someone else created it between our check and the link: theirs wins.
        Ok(false) => Ok(()),
        Err(e) => Err(key_error(
            path,
            "cannot create it (does its folder exist and is it writable?)",
        )
        .with_source(e)),
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    ts: i64,
    nonce: String,
    sig: String,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// Nonces seen within the replay window, bounded by [`REPLAY_CACHE_MAX`].
#[derive(Debug, Default)]
pub struct ReplayCache {
    /// nonce → Unix second after which the time check alone refuses it.
    seen: HashMap<String, i64>,
    max: usize,
}

impl ReplayCache {
    /// An empty cache of at most `max` nonces.
    pub fn new(max: usize) -> ReplayCache {
        ReplayCache {
            seen: HashMap::new(),
            max,
        }
    }

    /// Remembers `nonce` until `expires` (Unix seconds). Errors if it is already remembered
    /// ([`Kind::Unauthenticated`]) or the cache is full of unexpired nonces
    /// ([`Kind::ResourceExhausted`]).
    pub fn insert(&mut self, nonce: &str, expires: i64, now: i64) -> Result<()> {
        if let Some(&until) = self.seen.get(nonce)
            && until >= now
        {
            return Err(Error::new(
                Kind::Unauthenticated,
                "replayed nonce: this signed command was already received; sign each command \
                 with a fresh nonce",
            ));
        }
        if self.seen.len() >= self.max {
            self.seen.retain(|_, until| *until >= now);
        }
        if self.seen.len() >= self.max {
            return Err(Error::exhausted(format!(
                "more than {} signed commands within the replay window; retry later",
                self.max
            )));
        }
        self.seen.insert(nonce.to_owned(), expires);
        Ok(())
    }

    /// Nonces remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Checks signed commands for one device: signature, time window, replay.
#[derive(Debug)]
pub struct Verifier {
    key: CommandKey,
    window_secs: i64,
    not_before: i64,
    cache: ReplayCache,
}

impl Verifier {
    /// The id of the key commands must be signed with ([`CommandKey::id`]).
    pub fn key_id(&self) -> &str {
        self.key.id()
    }

    /// A verifier with `key` accepting `ts` within ±`window_secs` of the clock and not before
    /// `not_before` (Unix seconds: the process start).
    pub fn new(key: CommandKey, window_secs: u64, not_before: i64) -> Verifier {
        Verifier {
            key,
            window_secs: window_secs as i64,
            not_before,
            cache: ReplayCache::new(REPLAY_CACHE_MAX),
        }
    }

    /// Verifies the signed `payload` received on `topic` at `now` (Unix seconds) and returns
    /// the command's body (the JSON text that was signed). Refusals are
    /// [`Kind::Unauthenticated`] with the reason (not signed, bad signature, stale timestamp,
    /// replayed nonce), or [`Kind::ResourceExhausted`] when the replay cache is full.
    pub fn verify<'a>(&mut self, topic: &str, payload: &'a [u8], now: i64) -> Result<&'a str> {
        let unauth = |why: String| Error::new(Kind::Unauthenticated, why);
        let env: Envelope<'a> = serde_json::from_slice(payload).map_err(|e| {
            unauth(format!(
                "not a signed command ({e}); commands must be signed with the device's command key: \
                 {{\"ts\":<Unix seconds>,\"nonce\":\"<random>\",\"sig\":\"<HMAC-SHA256 hex>\",\"body\":{{...}}}}, \
                 see docs/mqtt.md"
            ))
        })?;
        let nonce_ok = NONCE_CHARS.contains(&env.nonce.len())
            && env
                .nonce
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !nonce_ok {
            return Err(unauth(format!(
                "bad nonce: \"nonce\" must be {} to {} characters of A-Z a-z 0-9 _ - (e.g. `openssl rand -hex 16`)",
                NONCE_CHARS.start(),
                NONCE_CHARS.end()
            )));
        }
        let body = env.body.get();
        let tag = decode_hex(&env.sig).unwrap_or_default();
        hmac::verify(
            &self.key.key,
            &signed_text(topic, env.ts, &env.nonce, body),
            &tag,
        )
        .map_err(|_| {
            unauth(
                "bad signature: not signed with this device's command key, or the topic, ts, \
                 nonce or body differ from what was signed"
                    .into(),
            )
        })?;
        let skew = env.ts.saturating_sub(now);
        if skew.saturating_abs() > self.window_secs {
            return Err(unauth(format!(
                "stale timestamp: ts {} is {skew:+} s from faced's clock, outside ±{} s \
                 (mqtt.command_window_secs); check both clocks (NTP) and sign just before sending",
                env.ts, self.window_secs
            )));
        }
        if env.ts < self.not_before {
            return Err(unauth(format!(
                "stale timestamp: ts {} is before faced started ({}); a command signed before a \
                 restart is not accepted after it (sign a new one)",
                env.ts, self.not_before
            )));
        }
        self.cache
            .insert(&env.nonce, env.ts.saturating_add(self.window_secs), now)?;
        Ok(body)
    }

    /// Nonces currently remembered.
    pub fn cached_nonces(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const TOPIC: &str = "faced/door/cmd/set_threshold";
    const NOW: i64 = 1_800_000_000;
    const NONCE: &str = "0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::new(CommandKey::from_hex(KEY).unwrap(), 60, NOW - 1000)
    }

    fn payload(ts: i64, nonce: &str, body: &str) -> String {
        CommandKey::from_hex(KEY)
            .unwrap()
            .signed_payload(TOPIC, ts, nonce, body)
    }

    fn refusal(v: &mut Verifier, topic: &str, p: &str, now: i64) -> (Kind, String) {
        let e = v.verify(topic, p.as_bytes(), now).unwrap_err();
        (e.kind(), e.to_string())
    }

    #[test]
    fn signature_matches_openssl_and_python() {
        // printf 'faced/door/cmd/set_threshold\n1800000000\n0123456789abcdef\n{"threshold":0.5}' |
        //   openssl dgst -sha256 -mac HMAC -macopt hexkey:<KEY> -r
        let k = CommandKey::from_hex(KEY).unwrap();
        assert_eq!(
            k.sign(TOPIC, NOW, NONCE, r#"{"threshold":0.5}"#),
            "b13ae986a4d83b9783847559246cbf86f380672bb07bd5a31fe6e5622f942591"
        );
    }

    #[test]
    fn a_correctly_signed_command_returns_its_exact_body() {
        let mut v = verifier();
        let body = r#"{ "threshold" : 0.5 }"#;
        let p = payload(NOW, NONCE, body);
        assert_eq!(v.verify(TOPIC, p.as_bytes(), NOW + 3).unwrap(), body);
        // Whitespace around members is fine; the body's bytes are what was signed.
        let sig = CommandKey::from_hex(KEY)
            .unwrap()
            .sign(TOPIC, NOW, "fedcba9876543210", body);
        let spaced = format!(
            "{{ \"body\": {body} ,\n \"sig\":\"{sig}\", \"nonce\":\"fedcba9876543210\",\"ts\":{NOW} }}"
        );
        assert_eq!(v.verify(TOPIC, spaced.as_bytes(), NOW).unwrap(), body);
    }

    #[test]
    fn unsigned_and_wrongly_signed_commands_are_refused() {
        let mut v = verifier();
        let (k, m) = refusal(&mut v, TOPIC, r#"{"threshold":0.1}"#, NOW);
        assert_eq!(k, Kind::Unauthenticated);
        assert!(m.contains("not a signed command"), "{m}");

        let other = CommandKey::from_hex(&KEY.replace('0', "f")).unwrap();
        let p = other.signed_payload(TOPIC, NOW, NONCE, "{}");
        let (k, m) = refusal(&mut v, TOPIC, &p, NOW);
        assert_eq!(k, Kind::Unauthenticated);
        assert!(m.contains("bad signature"), "{m}");

        // Signed for another verb, or with the body changed after signing.
        let p = payload(NOW, NONCE, r#"{"threshold":0.5}"#);
        let (_, m) = refusal(&mut v, "faced/door/cmd/enroll_last_unknown", &p, NOW);
        assert!(m.contains("bad signature"), "{m}");
        let tampered = p.replace("0.5", "0.1");
        let (_, m) = refusal(&mut v, TOPIC, &tampered, NOW);
        assert!(m.contains("bad signature"), "{m}");
        // Truncated or non-hex signatures are just wrong, not a panic.
        for sig in ["", "zz", "91ca"] {
            let p = format!(r#"{{"ts":{NOW},"nonce":"{NONCE}","sig":"{sig}","body":{{}}}}"#);
            let (_, m) = refusal(&mut v, TOPIC, &p, NOW);
            assert!(m.contains("bad signature"), "{m}");
        }
        // Refusals before the signature check never touch the cache.
        assert!(v.cache.is_empty());
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let mut v = verifier();
        for (ts, want) in [
            (NOW - 61, "-61 s"),
            (NOW + 61, "+61 s"),
            (i64::MIN, "stale timestamp"),
        ] {
            let p = payload(ts, NONCE, "{}");
            let (k, m) = refusal(&mut v, TOPIC, &p, NOW);
            assert_eq!(k, Kind::Unauthenticated);
            assert!(m.contains("stale timestamp") && m.contains(want), "{m}");
        }
        // Inside the window on both sides.
        v.verify(TOPIC, payload(NOW - 60, NONCE, "{}").as_bytes(), NOW)
            .unwrap();
        v.verify(
            TOPIC,
            payload(NOW + 60, "1123456789abcdef", "{}").as_bytes(),
            NOW,
        )
        .unwrap();
        // Signed before the process started, though within the window.
        let mut v = Verifier::new(CommandKey::from_hex(KEY).unwrap(), 60, NOW);
        let (_, m) = refusal(&mut v, TOPIC, &payload(NOW - 5, NONCE, "{}"), NOW);
        assert!(m.contains("before faced started"), "{m}");
    }

    #[test]
    fn a_replay_inside_the_window_is_refused() {
        let mut v = verifier();
        let p = payload(NOW, NONCE, "{}");
        v.verify(TOPIC, p.as_bytes(), NOW).unwrap();
        let (k, m) = refusal(&mut v, TOPIC, &p, NOW + 30);
        assert_eq!(k, Kind::Unauthenticated);
        assert!(m.contains("replayed nonce"), "{m}");
        // After the window the time check refuses it.
        let (_, m) = refusal(&mut v, TOPIC, &p, NOW + 61);
        assert!(m.contains("stale timestamp"), "{m}");
        // Bad nonces are refused with the rule.
        for n in ["short", "has space in it 1234", &"x".repeat(65)] {
            let (_, m) = refusal(&mut v, TOPIC, &payload(NOW, n, "{}"), NOW);
            assert!(m.contains("bad nonce"), "{m}");
        }
    }

    #[test]
    fn replay_cache_is_bounded_and_forgets_expired_nonces() {
        let mut c = ReplayCache::new(3);
        for n in ["a", "b", "c"] {
            c.insert(n, 100, 50).unwrap();
        }
        assert_eq!(
            c.insert("d", 100, 50).unwrap_err().kind(),
            Kind::ResourceExhausted
        );
        assert_eq!(
            c.insert("a", 100, 60).unwrap_err().kind(),
            Kind::Unauthenticated
        );
        // Once they expire, room is made and the old nonces are gone.
        c.insert("d", 200, 101).unwrap();
        assert_eq!(c.len(), 1);
        c.insert("a", 200, 101).unwrap();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn key_file_is_created_private_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmd.key");
        let (k1, created) = CommandKey::load_or_create(&path).unwrap();
        assert!(created);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64, "{text:?}");
        let (k2, created) = CommandKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(
            k1.sign(TOPIC, 1, NONCE, "{}"),
            k2.sign(TOPIC, 1, NONCE, "{}")
        );
        assert_eq!(
            CommandKey::from_hex(&text)
                .unwrap()
                .sign(TOPIC, 1, NONCE, "{}"),
            k1.sign(TOPIC, 1, NONCE, "{}")
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = CommandKey::load_or_create(&path).unwrap_err();
        assert!(
            e.to_string().contains("mqtt.command_key") && e.to_string().contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not hex\n").unwrap();
        let e = CommandKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("64 hex characters"), "{e}");
        assert_eq!(e.kind(), Kind::FailedPrecondition);
        let e = CommandKey::load_or_create(&dir.path().join("no/such/dir/k")).unwrap_err();
        assert!(e.to_string().contains("cannot create"), "{e}");
    }
}
