//! One-time join codes: the site key handed to a new unit over the broker, never shown.
//!
//! `faced fleet invite` on a unit of the site prints a short code (60 random bits, such as
//! `faced-join-7KQ2-M9XD-4HTR`) and waits; `faced fleet join CODE` on the new unit asks for the
//! key on a topic derived from the code; the inviting unit answers once and exits. A code is
//! worth nothing after its one use or after its time (10 minutes by default), and the
//! long-lived site key never appears on a screen, in a shell history or on a note.
//!
//! # Protocol (QoS 1, not retained)
//!
//! Both sides stretch the code: `secret = PBKDF2-HMAC-SHA256(code, "faced fleet invite v1",
//! 100 000 rounds)`, and `<id>` is 16 hex digits of SHA-256 over a label and `secret`.
//!
//! 1. The new unit makes an ephemeral X25519 key pair and publishes on
//!    `faced/fleet/invite/<id>/request`: its public key ‖ HMAC(secret, "request" ‖ public key).
//! 2. The inviting unit checks the HMAC, makes its own ephemeral pair and publishes on
//!    `faced/fleet/invite/<id>/answer`: its public key ‖ the site key sealed with AES-256-GCM
//!    (the topic as associated data) ‖ HMAC(secret, "answer" ‖ both public keys ‖ sealed key).
//!    The sealing key is SHA-256 over a label, `secret`, the X25519 shared secret and both
//!    public keys.
//!
//! Why this is safe on a shared broker: without the code nobody can make either HMAC, so
//! neither side can be impersonated (guessing the code offline from a recorded request costs
//! 2^60 PBKDF2 runs, and online guesses land on other topics, where nobody listens); the key is
//! sealed under an X25519 agreement, so even a code learned afterwards (a photo of the note)
//! does not open a recorded answer. Messages on these topics that fail the checks are refused,
//! counted and reported, and change nothing.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{agreement, hmac, pbkdf2};

use super::derive;
use crate::db::crypto::{self, Cipher, KEY_LEN, OVERHEAD};
use crate::error::{Error, Result};
use crate::mqtt::MqttConfig;

/// Prefix of a one-time code (a site key code starts with `faced-site-`).
pub const INVITE_PREFIX: &str = "faced-join-";
/// Crockford's base32: no I, L, O or U, so a code read aloud or from a screen is not misread.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters of a code: 12 × 5 = 60 random bits.
const CODE_LEN: usize = 12;
/// PBKDF2 rounds stretching the code (about 0.1 s on a Pi 4, once per side).
const ROUNDS: u32 = 100_000;
const PUB_LEN: usize = 32;
const TAG_LEN: usize = 32;
const REQUEST_LEN: usize = PUB_LEN + TAG_LEN;
const ANSWER_LEN: usize = PUB_LEN + KEY_LEN + OVERHEAD + TAG_LEN;
/// Largest message the invite clients accept from the broker.
const MAX_MESSAGE: usize = 4096;

/// A one-time code, normalized to its 12 characters.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteCode(String);

impl std::fmt::Debug for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InviteCode(..)") // a secret while it is valid
    }
}

impl std::fmt::Display for InviteCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.0;
        write!(f, "{INVITE_PREFIX}{}-{}-{}", &c[..4], &c[4..8], &c[8..])
    }
}

impl InviteCode {
    /// A new random code.
    pub fn generate() -> Result<InviteCode> {
        let mut b = [0u8; CODE_LEN];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| Error::internal("the system's random generator failed"))?;
        // 256 is a multiple of 32: every character is equally likely.
        Ok(InviteCode(
            b.iter()
                .map(|x| ALPHABET[(x & 31) as usize] as char)
                .collect(),
        ))
    }

    /// Reads a code as printed, forgiving case, dashes and spaces, and O/I/L typed for 0/1.
    pub fn parse(s: &str) -> Result<InviteCode> {
        let bad = || {
            Error::invalid(format!(
                "not a one-time code: it is `{INVITE_PREFIX}` and 12 letters or digits, as \
                 printed by `faced fleet invite` on a unit of the site"
            ))
        };
        let rest = s.trim().strip_prefix(INVITE_PREFIX).ok_or_else(bad)?;
        let mut out = String::with_capacity(CODE_LEN);
        for c in rest.chars() {
            let c = match c.to_ascii_uppercase() {
                '-' | ' ' => continue,
                'O' => '0',
                'I' | 'L' => '1',
                c => c,
            };
            if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
                return Err(bad());
            }
            out.push(c);
        }
        if out.len() != CODE_LEN {
            return Err(bad());
        }
        Ok(InviteCode(out))
    }

    /// Whether `s` looks like a one-time code rather than a site key code.
    pub fn is_invite(s: &str) -> bool {
        s.trim().starts_with(INVITE_PREFIX)
    }
}

/// What both sides derive from a code.
struct Keys {
    secret: [u8; 32],
    mac: hmac::Key,
    request: String,
    answer: String,
}

impl Keys {
    fn of(code: &InviteCode) -> Keys {
        let mut secret = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            NonZeroU32::new(ROUNDS).expect("non-zero"),
            b"faced fleet invite v1",
            code.0.as_bytes(),
            &mut secret,
        );
        let id = crate::models::hex(&derive("faced fleet invite id v1", &secret).as_ref()[..8]);
        Keys {
            mac: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            secret,
            request: format!("faced/fleet/invite/{id}/request"),
            answer: format!("faced/fleet/invite/{id}/answer"),
        }
    }

    fn tag(&self, parts: &[&[u8]]) -> hmac::Tag {
        let mut c = hmac::Context::with_key(&self.mac);
        for p in parts {
            c.update(p);
        }
        c.sign()
    }

    fn verify(&self, parts: &[&[u8]], tag: &[u8]) -> bool {
        let data: Vec<u8> = parts.concat();
        hmac::verify(&self.mac, &data, tag).is_ok()
    }

    /// The key sealing the site key in the answer.
    fn wrap(&self, shared: &[u8], joiner: &[u8], inviter: &[u8]) -> Result<Cipher> {
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        for p in [
            &b"faced fleet invite wrap v1\0"[..],
            &self.secret,
            shared,
            joiner,
            inviter,
        ] {
            c.update(p);
        }
        let k: [u8; KEY_LEN] = c.finish().as_ref().try_into().expect("32 bytes");
        Cipher::new(&k)
    }
}

fn ephemeral() -> Result<(agreement::EphemeralPrivateKey, [u8; PUB_LEN])> {
    let rng = SystemRandom::new();
    let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
        .map_err(|_| Error::internal("cannot make an X25519 key pair"))?;
    let public = private
        .compute_public_key()
        .map_err(|_| Error::internal("cannot make an X25519 key pair"))?;
    let public: [u8; PUB_LEN] = public
        .as_ref()
        .try_into()
        .expect("X25519 keys are 32 bytes");
    Ok((private, public))
}

/// A broker connection for one exchange (blocking; the CLI's).
struct Link {
    client: rumqttc::Client,
    conn: rumqttc::Connection,
    broker: String,
    /// Messages that arrived while waiting for something else (an acknowledgement).
    early: Vec<(String, Vec<u8>)>,
}

impl Link {
    /// Connects, subscribes to `topic` and returns once the broker confirmed the subscription.
    fn open(mqtt: &MqttConfig, client_id: String, topic: &str) -> Result<Link> {
        let mut options = crate::mqtt::connection_options(mqtt, client_id)?;
        options.set_max_packet_size(MAX_MESSAGE, MAX_MESSAGE);
        let (client, conn) = rumqttc::Client::new(options, 8);
        let mut link = Link {
            client,
            conn,
            broker: format!("{}:{}", mqtt.host, mqtt.effective_port()),
            early: Vec::new(),
        };
        link.client
            .subscribe(topic, rumqttc::QoS::AtLeastOnce)
            .map_err(|e| Error::internal(format!("cannot subscribe: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match link.event(deadline)? {
                Some(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) => return Ok(link),
                Some(_) => {}
                None => {
                    return Err(Error::unavailable(format!(
                        "the MQTT broker at {} did not answer within 15 s",
                        link.broker
                    )));
                }
            }
        }
    }

    /// The next event before `deadline` (`None` at the deadline); a lost connection is an error
    /// that names the broker ([mqtt] in faced.toml).
    fn event(&mut self, deadline: Instant) -> Result<Option<rumqttc::Event>> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match self.conn.recv_timeout(left) {
            Err(_) => Ok(None),
            Ok(Ok(e)) => Ok(Some(e)),
            Ok(Err(e)) => Err(Error::unavailable(format!(
                "cannot reach the MQTT broker at {} ([mqtt] host and port in faced.toml): {e}",
                self.broker
            ))),
        }
    }

    /// The next message on `topic` before `deadline`.
    fn message(&mut self, topic: &str, deadline: Instant) -> Result<Option<Vec<u8>>> {
        if let Some(i) = self.early.iter().position(|(t, _)| t == topic) {
            return Ok(Some(self.early.remove(i).1));
        }
        while let Some(e) = self.event(deadline)? {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) = e
                && p.topic == topic
            {
                return Ok(Some(p.payload.to_vec()));
            }
        }
        Ok(None)
    }

    /// Publishes at QoS 1 and waits for the broker's acknowledgement.
    fn publish(&mut self, topic: &str, payload: Vec<u8>) -> Result<()> {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .map_err(|e| Error::internal(format!("cannot publish: {e}")))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Some(e) = self.event(deadline)? {
            match e {
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => return Ok(()),
                // An answer can overtake the acknowledgement of its request.
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) if self.early.len() < 16 => {
                    self.early.push((p.topic.clone(), p.payload.to_vec()));
                }
                _ => {}
            }
        }
        Err(Error::unavailable(format!(
            "the MQTT broker at {} did not acknowledge within 15 s",
            self.broker
        )))
    }

    fn close(mut self) {
        let _ = self.client.disconnect();
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(_)) = self.event(deadline) {}
    }
}

/// How an invite ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invited {
    /// Requests refused (not made with this code) before the valid one.
    pub refused: u32,
}

/// The inviting side: waits up to `valid` for one request made with `code` and answers it with
/// the site key. `ready` is called once the broker listens for the request (print the code then,
/// not before: a request sent earlier would be lost). Used once: returns after one answer.
pub fn invite(
    site: &super::SiteKey,
    code: &InviteCode,
    mqtt: &MqttConfig,
    client_id: String,
    valid: Duration,
    ready: impl FnOnce(),
) -> Result<Invited> {
    let keys = Keys::of(code);
    let mut link = Link::open(mqtt, client_id, &keys.request)?;
    ready();
    let deadline = Instant::now() + valid;
    let mut refused = 0;
    while let Some(req) = link.message(&keys.request, deadline)? {
        let ok = req.len() == REQUEST_LEN
            && keys.verify(&[b"request", &req[..PUB_LEN]], &req[PUB_LEN..]);
        if !ok {
            refused += 1;
            tracing::warn!("fleet invite: refused a request that was not made with this code");
            continue;
        }
        let joiner = &req[..PUB_LEN];
        let (private, inviter) = ephemeral()?;
        let wrap = agreement::agree_ephemeral(
            private,
            &agreement::UnparsedPublicKey::new(&agreement::X25519, joiner),
            |shared| keys.wrap(shared, joiner, &inviter),
        )
        .map_err(|_| Error::invalid("the joining unit's public key is not an X25519 key"))??;
        let sealed = wrap.seal(&aad(&keys.answer), &site.key)?;
        let tag = keys.tag(&[b"answer", joiner, &inviter, &sealed]);
        let answer = [&inviter[..], &sealed, tag.as_ref()].concat();
        link.publish(&keys.answer, answer)?;
        link.close();
        return Ok(Invited { refused });
    }
    link.close();
    Err(Error::unavailable(format!(
        "the code expired unused after {} s: no unit asked for the site key with it{}",
        valid.as_secs(),
        refused_note(refused, "request")
    )))
}

/// The joining side: asks for the site key with `code` and waits up to `wait` for the answer.
pub fn fetch(
    code: &InviteCode,
    mqtt: &MqttConfig,
    client_id: String,
    wait: Duration,
) -> Result<[u8; KEY_LEN]> {
    let keys = Keys::of(code);
    let mut link = Link::open(mqtt, client_id, &keys.answer)?;
    let (private, joiner) = ephemeral()?;
    let tag = keys.tag(&[b"request", &joiner]);
    link.publish(&keys.request, [&joiner[..], tag.as_ref()].concat())?;
    let deadline = Instant::now() + wait;
    let mut refused = 0;
    while let Some(ans) = link.message(&keys.answer, deadline)? {
        let ok = ans.len() == ANSWER_LEN && {
            let (inviter, rest) = ans.split_at(PUB_LEN);
            let (sealed, tag) = rest.split_at(rest.len() - TAG_LEN);
            keys.verify(&[b"answer", &joiner, inviter, sealed], tag)
        };
        if !ok {
            refused += 1;
            tracing::warn!("fleet join: refused an answer that was not made with this code");
            continue;
        }
        let (inviter, rest) = ans.split_at(PUB_LEN);
        let sealed = &rest[..rest.len() - TAG_LEN];
        let wrap = agreement::agree_ephemeral(
            private,
            &agreement::UnparsedPublicKey::new(&agreement::X25519, inviter),
            |shared| keys.wrap(shared, &joiner, inviter),
        )
        .map_err(|_| Error::invalid("the inviting unit's public key is not an X25519 key"))??;
        let key = wrap.open(
            &aad(&keys.answer),
            sealed,
            "the site key from the inviting unit",
        )?;
        link.close();
        return key
            .try_into()
            .map_err(|_| Error::invalid("the inviting unit sent a key of the wrong length"));
    }
    link.close();
    Err(Error::unavailable(format!(
        "no unit answered within {} s: run `faced fleet invite` on a unit of the site and use \
         its code before it expires (each code works once){}",
        wait.as_secs(),
        refused_note(refused, "answer")
    )))
}

fn aad(topic: &str) -> Vec<u8> {
    crypto::aad("faced fleet invite v1", topic.as_bytes())
}

fn refused_note(n: u32, what: &str) -> String {
    match n {
        0 => String::new(),
        1 => format!("; 1 {what} was refused: not made with this code"),
        n => format!("; {n} {what}s were refused: not made with this code"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_random_readable_and_parsed_forgivingly() {
        let a = InviteCode::generate().unwrap();
        let b = InviteCode::generate().unwrap();
        assert_ne!(a, b);
        let shown = a.to_string();
        assert!(shown.starts_with(INVITE_PREFIX) && shown.len() == INVITE_PREFIX.len() + 14);
        assert_eq!(InviteCode::parse(&shown).unwrap(), a);
        // Lower case, spaces, and O/I/L for 0/1, as people type what they read.
        let typed = InviteCode::parse("faced-join-o1il 23ab-cd89").unwrap();
        assert_eq!(
            typed,
            InviteCode::parse("faced-join-0111-23AB-CD89").unwrap()
        );
        for bad in [
            "faced-join-0000-0000-000",
            "faced-join-0000-0000-00000",
            "faced-join-0000-0000-000U",
            "faced-site-0000-0000-0000",
        ] {
            assert!(InviteCode::parse(bad).is_err(), "{bad}");
        }
        assert!(
            !format!("{a:?}").contains(&a.0),
            "Debug never shows the code"
        );
    }

    #[test]
    fn messages_bind_the_code_the_keys_and_the_topic() {
        let code = InviteCode::parse("faced-join-7KQ2-M9XD-4HTR").unwrap();
        let k = Keys::of(&code);
        let other = Keys::of(&InviteCode::parse("faced-join-7KQ2-M9XD-4HTS").unwrap());
        assert_ne!(k.request, other.request, "another code, another topic");
        let t = k.tag(&[b"request", &[1; 32]]);
        assert!(k.verify(&[b"request", &[1; 32]], t.as_ref()));
        assert!(!other.verify(&[b"request", &[1; 32]], t.as_ref()));
        assert!(!k.verify(&[b"request", &[2; 32]], t.as_ref()));
        assert!(!k.verify(&[b"answer", &[1; 32]], t.as_ref()));
        // Both sides derive the same sealing key from the agreement; a third party's differs.
        let (pa, a) = ephemeral().unwrap();
        let (pb, b) = ephemeral().unwrap();
        let wa = agreement::agree_ephemeral(
            pa,
            &agreement::UnparsedPublicKey::new(&agreement::X25519, &b),
            |s| k.wrap(s, &a, &b),
        )
        .unwrap()
        .unwrap();
        let wb = agreement::agree_ephemeral(
            pb,
            &agreement::UnparsedPublicKey::new(&agreement::X25519, &a),
            |s| k.wrap(s, &a, &b),
        )
        .unwrap()
        .unwrap();
        let sealed = wa.seal(&aad(&k.answer), &[7; KEY_LEN]).unwrap();
        assert_eq!(sealed.len(), KEY_LEN + OVERHEAD);
        assert_eq!(
            wb.open(&aad(&k.answer), &sealed, "t").unwrap(),
            vec![7; KEY_LEN]
        );
        assert!(wb.open(&aad(&k.request), &sealed, "t").is_err());
    }
}
