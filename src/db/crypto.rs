//! Encryption at rest for face data: AES-256-GCM (`ring`) with a key file beside the database.
//! The one implementation for every sealed column: `face_sample.embedding`, `face_sample.crop`,
//! `event.snapshot` and `key_check.sealed`.
//!
//! Sealed value layout: `nonce (12 random bytes) || ciphertext || tag (16 bytes)`, so a sealed
//! value is [`OVERHEAD`] bytes longer than its plaintext. The associated data names the table,
//! the column and the row's random 16-byte `uid`, so a ciphertext copied into another row or
//! column fails to decrypt instead of showing someone else's face.
//!
//! The key is 32 random bytes in a file that must be mode 0600 (owner-only); it is created on
//! first use with a write to a temporary file, fsync, and a hard link to the final name (atomic
//! and never overwrites an existing key). A lost key means the face samples are lost: back it up
//! with the database, separately from it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// Key length in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// Bytes a sealed value adds to its plaintext: nonce plus tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;

/// An AES-256-GCM key plus the random source for nonces.
pub(crate) struct Cipher {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)") // never print key material
    }
}

/// Associated data binding a sealed value to `table.column` of the row with `uid`.
pub(crate) fn aad(table_column: &str, uid: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(table_column.len() + 1 + uid.len());
    v.extend_from_slice(table_column.as_bytes());
    v.push(0);
    v.extend_from_slice(uid);
    v
}

impl Cipher {
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> Result<Cipher> {
        let k = UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::internal("bad AES key"))?;
        Ok(Cipher {
            key: LessSafeKey::new(k),
            rng: SystemRandom::new(),
        })
    }

    /// `n` random bytes (row uids).
    pub(crate) fn random<const N: usize>(&self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .map_err(|_| Error::unavailable("system random source failed"))?;
        Ok(b)
    }

    /// Encrypts `plain` bound to `aad`; see the module docs for the layout.
    pub(crate) fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = self.random()?;
        let mut out = Vec::with_capacity(plain.len() + OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| Error::internal("AES-GCM encryption failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Decrypts a value made by [`Cipher::seal`] with the same `aad`. `what` names the value in
    /// the error (e.g. "face_sample 12 embedding").
    pub(crate) fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        if sealed.len() < OVERHEAD {
            return Err(Error::precondition(format!(
                "{what} is corrupt: {} bytes is too short",
                sealed.len()
            )));
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN])
            .map_err(|_| Error::internal("bad nonce length"))?;
        let mut buf = sealed[NONCE_LEN..].to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(aad), &mut buf).map_err(|_| {
            Error::precondition(format!(
                "cannot decrypt {what}: wrong key file, or the data was altered or moved between \
                 rows; use the key file this database was created with"
            ))
        })?;
        let n = plain.len();
        buf.truncate(n);
        Ok(buf)
    }
}

/// The known plaintext sealed in the one `key_check` row: a key that opens it is the key the
/// database was created with, checked before any face is decrypted (and before a backup is
/// restored), so a wrong key file is named as such instead of showing up as corrupt rows.
const KEY_CHECK_PLAIN: &[u8] = b"faced key check v1";
const KEY_CHECK_AAD: &str = "key_check.sealed";

/// Whether `cipher` opens the database's key check: `None` when the database has none yet.
pub(crate) fn key_check(conn: &rusqlite::Connection, cipher: &Cipher) -> Result<Option<bool>> {
    use rusqlite::OptionalExtension;
    let sealed: Option<Vec<u8>> = conn
        .query_row("SELECT sealed FROM key_check WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    let aad = aad(KEY_CHECK_AAD, &[]);
    Ok(sealed.map(|s| {
        cipher
            .open(&aad, &s, "key check")
            .is_ok_and(|p| p == KEY_CHECK_PLAIN)
    }))
}

/// The sealed value for the `key_check` row.
pub(crate) fn seal_key_check(cipher: &Cipher) -> Result<Vec<u8>> {
    cipher.seal(&aad(KEY_CHECK_AAD, &[]), KEY_CHECK_PLAIN)
}

/// Reads the key at `path`: `Ok(None)` if it does not exist; an error if it is not a regular
/// file, is readable or writable by group or others, or is not exactly [`KEY_LEN`] bytes.
pub(crate) fn read_key(path: &Path) -> Result<Option<[u8; KEY_LEN]>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(
                Error::precondition(format!("cannot read key file {}", path.display()))
                    .with_source(e),
            );
        }
    };
    if !meta.file_type().is_file() {
        return Err(Error::precondition(format!(
            "key file {} is not a regular file; point gallery key_path at the 32-byte key file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::precondition(format!(
            "key file {} is accessible by group or others (mode {mode:03o}); run `chmod 600 {}` \
                 and check nobody else copied it",
            path.display(),
            path.display()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        Error::precondition(format!("cannot read key file {}", path.display())).with_source(e)
    })?;
    let key: [u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| {
        Error::precondition(format!(
            "key file {} has {} bytes, expected {KEY_LEN}; it is truncated or not a faced key — \
             restore it from backup",
            path.display(),
            bytes.len()
        ))
    })?;
    Ok(Some(key))
}

/// The cipher for the key file at `path`, which must exist (the gallery creates it when it
/// creates the database): for connections that read or write sealed columns after the gallery.
pub(crate) fn load_cipher(path: &Path) -> Result<Cipher> {
    let key = read_key(path)?.ok_or_else(|| {
        Error::precondition(format!(
            "key file {} does not exist; open the database with the gallery first (it creates \
             the key), or point gallery.key_path at it",
            path.display()
        ))
    })?;
    Cipher::new(&key)
}

/// Creates a new random key at `path` (mode 0600), atomically and without ever replacing an
/// existing file; if another process created one first, that key is returned instead.
pub(crate) fn create_key(path: &Path) -> Result<[u8; KEY_LEN]> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| Error::unavailable("system random source failed"))?;
    match create_secret_file(path, &key) {
        Ok(true) => Ok(key),
        Ok(false) => read_key(path)?
            .ok_or_else(|| Error::precondition("key file vanished while creating it")),
        Err(e) => Err(
            Error::precondition(format!("cannot create key file {}", path.display()))
                .with_source(e),
        ),
    }
}

/// Writes `contents` to a new file at `path`, mode 0600: to a temporary file first, fsynced, then
/// hard-linked to its name, so a power cut leaves either no file or the whole one, and an
/// existing file is never replaced (a lost key means lost data). Returns `Ok(false)` when `path`
/// already existed (another process won the race; its file stays), `Ok(true)` when this call
/// created it. Used for every secret faced generates (the gallery key, the MQTT command key).
pub(crate) fn create_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<bool> {
    let mut suffix = [0u8; 8];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| std::io::Error::other("system random source failed"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", crate::models::hex(&suffix)));
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()
    };
    let linked = write().and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the new directory entry durable too.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(true)
}
