//! Encrypted backups of the whole database (gallery, events, outbox, console accounts) together
//! with its key file, and their restore.
//!
//! # The archive (`.fbk`)
//! ```text
//! "FACEDBK1"                       8 bytes, magic and format version
//! header length                    u32 little-endian
//! header                           JSON (Header): KDF, salt, iterations, schema version, sizes
//! chunks                           u32 LE length + AES-256-GCM(chunk), until the final chunk
//! ```
//! The plaintext is the 32-byte key file followed by the database (a consistent copy made with
//! `VACUUM INTO` while faced runs), cut into [`CHUNK`]-byte chunks. The AES key is derived from
//! a passphrase with PBKDF2-HMAC-SHA256 ([`ITERATIONS`], a random 16-byte salt per archive), so
//! a copy of the archive without the passphrase reveals nothing but its size and header.
//! Each chunk's nonce is its index, and its associated data is the SHA-256 of the header plus
//! the index and a "final" flag: a changed header, a reordered, removed or altered chunk, and a
//! cut after any chunk but the final one all fail authentication. The header also carries a
//! check value of the derived key, so a wrong passphrase is told apart from a damaged archive.
//!
//! # Restore, in two steps
//! 1. [`stage`] reads and verifies the *whole* archive into `<db>.restore` and
//!    `<db>.restore.key` (0600) beside the database, then checks the copy (integrity check,
//!    schema not newer than this faced, the key opens its key check). Any failure removes the
//!    staged files and leaves everything else as it was.
//! 2. [`apply_staged`] swaps them in while nothing has the database open: `faced run` calls it
//!    first thing at start, `faced restore` when no daemon holds the database's lock. The old
//!    files are kept as `<db>.before-restore` and `<key>.before-restore`.
//!
//! Crash windows: a crash during step 1 leaves at most a `.restore-tmp` file (removed by the
//! next [`stage`]); the staged database is renamed into its name last, after its key, so
//! `<db>.restore` existing means a complete, verified restore is pending. Each rename of step 2
//! checks whether it already happened, so an interrupted step 2 finishes at the next start.
//!
//! Temporary files: the `VACUUM INTO` copy is made in a fresh 0700 directory beside the output
//! into a file created 0600 beforehand, and every other file written here is created 0600, so no
//! moment exists when another local user could read a copy of the faces.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::digest::{SHA256, digest};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use super::crypto::{self, KEY_LEN};
use super::schema;
use crate::base::Clocks;
use crate::error::{Error, Kind, Result};

/// Magic and format version at the start of every archive.
pub const MAGIC: &[u8; 8] = b"FACEDBK1";
/// Plaintext bytes per chunk: bounds the memory a backup or restore needs, whatever the size of
/// the database.
pub const CHUNK: usize = 1 << 20;
/// PBKDF2 iterations for new archives (OWASP's 2023 figure for PBKDF2-HMAC-SHA256): about 0.3 s
/// on an x86 core, 1–2 s on a Pi. Archives record their own count.
pub const ITERATIONS: u32 = 600_000;
/// Shortest accepted passphrase, in characters.
pub const MIN_PASSPHRASE_CHARS: usize = 10;
/// The file name extension of archives.
pub const EXTENSION: &str = "fbk";
/// Largest header accepted; real ones are about 400 bytes.
const MAX_HEADER: usize = 16 * 1024;
/// Fewest iterations accepted when reading: a forged header must not make the KDF trivial.
const MIN_ITERATIONS: u32 = 10_000;
/// Most iterations accepted when reading: twice what archives are written with, so a future
/// increase still reads, while a forged header cannot make one restore attempt cost more than
/// about two normal ones (100 000 000 kept both cores of the 2-core VM busy for ~170 s a try).
const MAX_ITERATIONS: u32 = 2 * ITERATIONS;
const TAG_LEN: usize = 16;

/// A backup passphrase (never printed).
#[derive(Clone)]
pub struct Passphrase(String);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase(..)")
    }
}

impl Passphrase {
    /// Checks the length; `what` names where it came from in the error.
    pub fn new(s: impl Into<String>, what: &str) -> Result<Passphrase> {
        let s = s.into();
        let n = s.chars().count();
        if n < MIN_PASSPHRASE_CHARS {
            return Err(Error::invalid(format!(
                "{what}: the backup passphrase has {n} characters; use at least \
                 {MIN_PASSPHRASE_CHARS} (a few random words are easy to type and hard to guess)"
            )));
        }
        Ok(Passphrase(s))
    }

    /// Reads the first line of a file (`-` = standard input).
    pub fn from_file(path: &Path) -> Result<Passphrase> {
        let what = format!("passphrase file {}", path.display());
        let mut text = String::new();
        let r = if path == Path::new("-") {
            std::io::stdin().lock().take(4096).read_to_string(&mut text)
        } else {
            File::open(path).and_then(|f| f.take(4096).read_to_string(&mut text))
        };
        r.map_err(|e| Error::invalid(format!("cannot read {what}")).with_source(e))?;
        let line = text.lines().next().unwrap_or("");
        Passphrase::new(line, &what)
    }
}

/// The archive's header: what is needed to derive the key, and what a restore checks before
/// decrypting anything. Authenticated (as every chunk's associated data), not secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Header {
    /// Always `pbkdf2-hmac-sha256`.
    pub kdf: String,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// PBKDF2 salt, hex.
    pub salt: String,
    /// First 16 bytes of SHA-256("faced backup key check" ‖ key), hex: tells a wrong passphrase
    /// from a damaged archive without weakening the key (finding the passphrase still costs a
    /// PBKDF2 run per guess).
    pub key_check: String,
    /// The faced version that wrote the archive.
    pub faced_version: String,
    /// The database's schema version (see `schema.sql`).
    pub schema_version: i64,
    /// When the copy was made, RFC 3339 UTC.
    pub created_at: String,
    /// Bytes of the key file in the plaintext (32).
    pub key_bytes: u64,
    /// Bytes of the database copy in the plaintext.
    pub db_bytes: u64,
}

/// What [`write`] produced.
#[derive(Debug, Clone)]
pub struct Written {
    /// The archive's header.
    pub header: Header,
    /// Bytes of the archive.
    pub bytes: u64,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| {
        let kind = if e.raw_os_error() == Some(libc::ENOSPC) {
            Kind::ResourceExhausted
        } else {
            Kind::Unavailable
        };
        Error::new(kind, format!("{what}: {e}")).with_source(e)
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::unavailable("system random source failed"))?;
    Ok(b)
}

fn derive(pass: &Passphrase, salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut key = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        std::num::NonZeroU32::new(iterations.max(1)).expect("at least 1"),
        salt,
        pass.0.as_bytes(),
        &mut key,
    );
    key
}

fn key_check(key: &[u8; 32]) -> String {
    let mut m = b"faced backup key check".to_vec();
    m.extend_from_slice(key);
    crate::models::hex(&digest(&SHA256, &m).as_ref()[..16])
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    n[NONCE_LEN - 8..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn chunk_aad(header_hash: &[u8], index: u64, last: bool) -> Vec<u8> {
    let mut a = header_hash.to_vec();
    a.extend_from_slice(&index.to_be_bytes());
    a.push(u8::from(last));
    a
}

/// Creates `path` for writing, mode 0600, failing if it exists.
fn create_private(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("cannot create {}", path.display())))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }) {
        let _ = d.sync_all();
    }
}

fn parent(p: &Path) -> &Path {
    p.parent().unwrap_or(Path::new(""))
}

/// A fresh private (0700) directory beside `near`, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn beside(near: &Path) -> Result<PrivateDir> {
        let name = format!(".faced-backup-{}", crate::models::hex(&random::<8>()?));
        let d = parent(near).join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&d)
            .map_err(io(format!("cannot create {}", d.display())))?;
        Ok(PrivateDir(d))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a consistent copy of the database at `db` (which faced may be using) and its key file
/// as an encrypted archive to `out` (created 0600; must not exist). Written to a temporary name
/// and renamed, so `out` is either absent or complete. `Kind::ResourceExhausted` when the disk
/// is full (nothing is left behind).
pub fn write(
    db: &Path,
    key_path: &Path,
    out: &Path,
    pass: &Passphrase,
    clocks: &dyn Clocks,
) -> Result<Written> {
    if out.exists() {
        return Err(Error::new(
            Kind::Conflict,
            format!("{} exists; choose another name", out.display()),
        ));
    }
    let key = crypto::read_key(key_path)?.ok_or_else(|| {
        Error::precondition(format!(
            "key file {} does not exist: without it the backup would be useless",
            key_path.display()
        ))
    })?;
    let tmpdir = PrivateDir::beside(out)?;
    let copy = tmpdir.0.join("faced.db");
    drop(create_private(&copy)?);
    {
        let conn = super::open(db)?;
        let c = copy
            .to_str()
            .ok_or_else(|| Error::invalid("backup path is not UTF-8"))?;
        conn.execute("VACUUM INTO ?1", [c]).map_err(|e| {
            let full = matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull);
            Error::new(
                if full { Kind::ResourceExhausted } else { Kind::Unavailable },
                format!("cannot copy {} for the backup: {e}", super::describe(db)),
            )
        })?;
    }
    let schema_version = schema::version(&rusqlite::Connection::open(&copy)?)?;
    let db_bytes = std::fs::metadata(&copy)
        .map_err(io("cannot read the database copy"))?
        .len();
    let salt = random::<16>()?;
    let aes = derive(pass, &salt, ITERATIONS);
    let header = Header {
        kdf: "pbkdf2-hmac-sha256".into(),
        iterations: ITERATIONS,
        salt: crate::models::hex(&salt),
        key_check: key_check(&aes),
        faced_version: env!("CARGO_PKG_VERSION").into(),
        schema_version,
        created_at: crate::base::rfc3339_utc(clocks.unix_ms()),
        key_bytes: KEY_LEN as u64,
        db_bytes,
    };
    let tmp_out = tmpdir.0.join("archive");
    let mut w = BufWriter::new(create_private(&tmp_out)?);
    let src = key.as_slice().chain(BufReader::new(
        File::open(&copy).map_err(io("cannot read the database copy"))?,
    ));
    let bytes = seal_stream(&header, &aes, src, &mut w)?;
    let f = w
        .into_inner()
        .map_err(|e| io("cannot write the backup")(e.into_error()))?;
    f.sync_all().map_err(io("cannot write the backup"))?;
    drop(f);
    // A hard link never replaces a file that appeared meanwhile; the temporary name goes with
    // the private directory.
    std::fs::hard_link(&tmp_out, out).map_err(io(format!("cannot create {}", out.display())))?;
    sync_dir(parent(out));
    Ok(Written { header, bytes })
}

/// Encrypts `src` into `w` as an archive with `header`; returns the bytes written.
fn seal_stream(
    header: &Header,
    key: &[u8; 32],
    mut src: impl Read,
    w: &mut impl Write,
) -> Result<u64> {
    let hjson = serde_json::to_vec(header).map_err(|e| Error::internal(e.to_string()))?;
    let hhash = digest(&SHA256, &hjson);
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key).map_err(|_| Error::internal("bad AES key"))?,
    );
    let werr = io("cannot write the backup");
    let mut n = 0u64;
    let mut put = |w: &mut dyn Write, b: &[u8]| -> Result<()> {
        n += b.len() as u64;
        w.write_all(b).map_err(io("cannot write the backup"))
    };
    put(w, MAGIC)?;
    put(w, &(hjson.len() as u32).to_le_bytes())?;
    put(w, &hjson)?;
    // Read one chunk ahead, so the last chunk is known to be last when it is sealed.
    let mut cur = read_full(&mut src, CHUNK)?;
    let mut index = 0u64;
    loop {
        let next = if cur.len() == CHUNK {
            read_full(&mut src, CHUNK)?
        } else {
            Vec::new()
        };
        let last = next.is_empty();
        let tag = aead
            .seal_in_place_separate_tag(
                nonce(index),
                Aad::from(chunk_aad(hhash.as_ref(), index, last)),
                &mut cur,
            )
            .map_err(|_| Error::internal("AES-GCM encryption failed"))?;
        put(w, &((cur.len() + TAG_LEN) as u32).to_le_bytes())?;
        put(w, &cur)?;
        put(w, tag.as_ref())?;
        if last {
            break;
        }
        cur = next;
        index += 1;
    }
    w.flush().map_err(werr)?;
    Ok(n)
}

fn read_full(r: &mut impl Read, n: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(n);
    r.take(n as u64)
        .read_to_end(&mut buf)
        .map_err(io("cannot read the database copy"))?;
    Ok(buf)
}

/// Reads an archive's header (no passphrase needed): for listing, and the first check of a
/// restore.
pub fn read_header(r: &mut impl Read) -> Result<(Header, Vec<u8>)> {
    let mut magic = [0u8; 8];
    let bad = || Error::invalid("not a faced backup (it does not start with FACEDBK1)");
    r.read_exact(&mut magic).map_err(|_| bad())?;
    if &magic != MAGIC {
        if magic.starts_with(b"FACEDBK") {
            return Err(Error::precondition(format!(
                "backup format {} is newer than this faced reads (1); upgrade faced",
                magic[7] as char
            )));
        }
        if magic.starts_with(b"PK") {
            return Err(Error::invalid(
                "this is an old unencrypted backup zip: unzip it and copy faced.db and \
                 faced.db.key into place while faced is stopped",
            ));
        }
        return Err(bad());
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(|_| Error::invalid("backup is truncated (in its header)"))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_HEADER {
        return Err(Error::invalid(format!(
            "backup header claims {len} bytes: the archive is damaged"
        )));
    }
    let mut h = vec![0u8; len];
    r.read_exact(&mut h)
        .map_err(|_| Error::invalid("backup is truncated (in its header)"))?;
    let header: Header = serde_json::from_slice(&h)
        .map_err(|e| Error::invalid(format!("backup header is damaged: {e}")))?;
    if header.kdf != "pbkdf2-hmac-sha256"
        || !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&header.iterations)
        || header.key_bytes != KEY_LEN as u64
    {
        return Err(Error::invalid(
            "backup header is damaged (unknown key derivation or sizes)",
        ));
    }
    Ok((header, h))
}

/// Staged restore files for the database at `db`.
pub fn staged_paths(db: &Path) -> (PathBuf, PathBuf) {
    (with_suffix(db, ".restore"), with_suffix(db, ".restore.key"))
}

fn with_suffix(p: &Path, s: &str) -> PathBuf {
    let mut o = p.as_os_str().to_owned();
    o.push(s);
    PathBuf::from(o)
}

/// What [`stage`] verified.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The archive's header.
    pub header: Header,
    /// People in the restored gallery.
    pub people: i64,
    /// Face samples in the restored gallery.
    pub samples: i64,
    /// Events in the restored database.
    pub events: i64,
}

/// Verifies the archive read from `r` with `pass` and stages it for the database at `db` (see
/// the module docs). Errors: `InvalidInput` for a wrong passphrase, a damaged, truncated or
/// altered archive; `FailedPrecondition` for an archive from a newer faced. On any error no
/// staged file is left and nothing else changed.
pub fn stage(r: impl Read, pass: &Passphrase, db: &Path) -> Result<Staged> {
    let (staged_db, staged_key) = staged_paths(db);
    let tmp_db = with_suffix(db, ".restore-tmp");
    let tmp_key = with_suffix(db, ".restore-tmp.key");
    for p in [&tmp_db, &tmp_key, &staged_db, &staged_key] {
        let _ = std::fs::remove_file(p);
    }
    let result = stage_into(r, pass, &tmp_db, &tmp_key).and_then(|s| {
        std::fs::rename(&tmp_key, &staged_key).map_err(io("cannot stage the restore"))?;
        std::fs::rename(&tmp_db, &staged_db).map_err(io("cannot stage the restore"))?;
        sync_dir(parent(db));
        Ok(s)
    });
    let result = result.map_err(|e| {
        for p in [&tmp_db, &tmp_key, &staged_db, &staged_key] {
            let _ = std::fs::remove_file(p);
        }
        Error::new(e.kind(), format!("{}; nothing was changed", e.message()))
    });
    for s in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(&tmp_db, s));
    }
    result
}

fn stage_into(
    mut r: impl Read,
    pass: &Passphrase,
    tmp_db: &Path,
    tmp_key: &Path,
) -> Result<Staged> {
    let (header, hjson) = read_header(&mut r)?;
    if header.schema_version > schema::LATEST {
        return Err(Error::precondition(format!(
            "the backup was made by faced {} with database schema {}, newer than this faced knows \
             ({}); upgrade faced first",
            header.faced_version,
            header.schema_version,
            schema::LATEST
        )));
    }
    let salt = unhex(&header.salt)
        .filter(|s| s.len() >= 8)
        .ok_or_else(|| Error::invalid("backup header is damaged (salt)"))?;
    let key = derive(pass, &salt, header.iterations);
    if key_check(&key) != header.key_check {
        return Err(Error::invalid(
            "wrong passphrase for this backup (or its header was altered)",
        ));
    }
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &key).map_err(|_| Error::internal("bad AES key"))?,
    );
    let hhash = digest(&SHA256, &hjson);
    let total = header.key_bytes + header.db_bytes;
    let mut plain_key = Vec::with_capacity(KEY_LEN);
    let mut out = BufWriter::new(create_private(tmp_db)?);
    let mut got = 0u64;
    let mut index = 0u64;
    let truncated = || Error::invalid("backup is truncated: it ends before its last part");
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|_| truncated())?;
    loop {
        let n = u32::from_le_bytes(len) as usize;
        if !(TAG_LEN..=CHUNK + TAG_LEN).contains(&n) {
            return Err(Error::invalid(format!(
                "backup is damaged (part {index} has an impossible length)"
            )));
        }
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf).map_err(|_| truncated())?;
        // The final flag is not stored: a part is the last when the file ends after it, and it
        // must then have been sealed as the last. A file cut after any other part ends in a part
        // sealed as "not last", which fails its check here.
        let last = match r.read_exact(&mut len) {
            Ok(()) => false,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => true,
            Err(e) => return Err(io("cannot read the backup")(e)),
        };
        let plain = aead
            .open_in_place(
                nonce(index),
                Aad::from(chunk_aad(hhash.as_ref(), index, last)),
                &mut buf,
            )
            .map_err(|_| {
                Error::invalid(format!(
                    "backup is damaged or was altered (part {index} fails its check)"
                ))
            })?;
        got += plain.len() as u64;
        if got > total {
            return Err(Error::invalid(
                "backup is damaged (more data than its header says)",
            ));
        }
        let mut rest: &[u8] = plain;
        if plain_key.len() < KEY_LEN {
            let k = (KEY_LEN - plain_key.len()).min(rest.len());
            plain_key.extend_from_slice(&rest[..k]);
            rest = &rest[k..];
        }
        out.write_all(rest)
            .map_err(io(format!("cannot write {}", tmp_db.display())))?;
        index += 1;
        if last {
            break;
        }
    }
    if got != total {
        return Err(truncated());
    }
    let f = out
        .into_inner()
        .map_err(|e| io("cannot write the restore")(e.into_error()))?;
    f.sync_all().map_err(io("cannot write the restore"))?;
    drop(f);
    let key: [u8; KEY_LEN] = plain_key
        .as_slice()
        .try_into()
        .map_err(|_| Error::invalid("backup is damaged (key)"))?;
    let mut kf = create_private(tmp_key)?;
    kf.write_all(&key)
        .and_then(|()| kf.sync_all())
        .map_err(io("cannot write the restore"))?;

    // The copy itself: a sound SQLite file of a schema this faced can open, whose key check
    // the key opens.
    let conn =
        rusqlite::Connection::open_with_flags(tmp_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| Error::invalid(format!("the database in the backup is damaged: {e}")))?;
    if ok != "ok" {
        return Err(Error::invalid(format!(
            "the database in the backup is damaged: {ok}"
        )));
    }
    let v = schema::version(&conn)?;
    if v > schema::LATEST {
        return Err(Error::precondition(format!(
            "the database in the backup has schema {v}, newer than this faced knows ({})",
            schema::LATEST
        )));
    }
    let cipher = crypto::Cipher::new(&key)?;
    if crypto::key_check(&conn, &cipher)? == Some(false) {
        return Err(Error::invalid(
            "the key in the backup does not open its database; the archive was made wrongly",
        ));
    }
    let count = |sql: &str| -> Result<i64> { Ok(conn.query_row(sql, [], |r| r.get(0))?) };
    Ok(Staged {
        people: count("SELECT COUNT(*) FROM person")?,
        samples: count("SELECT COUNT(*) FROM face_sample")?,
        events: count("SELECT COUNT(*) FROM event")?,
        header,
    })
}

/// What [`apply_staged`] did.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Where the replaced database was kept, if there was one.
    pub previous: Option<PathBuf>,
}

/// Moves a staged restore (see [`stage`]) into place for the database at `db` with its key at
/// `key_path`; `Ok(None)` when none is staged. The caller guarantees that nothing has the
/// database open. Idempotent across crashes (module docs).
pub fn apply_staged(db: &Path, key_path: &Path) -> Result<Option<Applied>> {
    let (staged_db, staged_key) = staged_paths(db);
    if !staged_db.exists() {
        // A key staged without its database is the remains of a failed stage.
        let _ = std::fs::remove_file(&staged_key);
        return Ok(None);
    }
    let what = "cannot apply the staged restore";
    let before = with_suffix(db, ".before-restore");
    let mut previous = None;
    if db.exists() {
        // Fold the write-ahead log into the file, so the kept copy is complete by itself.
        {
            let c = super::open(db)?;
            c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        }
        std::fs::rename(db, &before).map_err(io(what))?;
        previous = Some(before.clone());
    }
    for s in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(with_suffix(db, s));
    }
    if staged_key.exists() {
        if key_path.exists() {
            std::fs::rename(key_path, with_suffix(key_path, ".before-restore"))
                .map_err(io(what))?;
        }
        std::fs::rename(&staged_key, key_path).map_err(io(what))?;
    }
    std::fs::rename(&staged_db, db).map_err(io(what))?;
    sync_dir(parent(db));
    Ok(Some(Applied { previous }))
}

/// An exclusive advisory lock on `<db>.lock`, held by `faced run` for its lifetime, so that
/// `faced restore` can tell whether a daemon has the database open (and two daemons cannot
/// share one database). Released when dropped or when the process ends, however it ends.
pub struct DbLock {
    _file: File,
}

impl DbLock {
    /// Takes the lock, or `Ok(None)` when another process holds it.
    pub fn try_acquire(db: &Path) -> Result<Option<DbLock>> {
        use std::os::fd::AsRawFd;
        let path = with_suffix(db, ".lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io(format!("cannot open {}", path.display())))?;
        // SAFETY: flock on a descriptor we own; no memory is shared with the kernel.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r == 0 {
            Ok(Some(DbLock { _file: file }))
        } else {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Ok(None)
            } else {
                Err(io(format!("cannot lock {}", path.display()))(e))
            }
        }
    }
}

/// Archives in `folder` named by [`scheduled_name`], oldest first.
pub fn list(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(io(format!("cannot list {}", folder.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("faced-backup-") && n.ends_with(&format!(".{EXTENSION}"))
            })
        })
        .collect();
    v.sort();
    Ok(v)
}

/// `faced-backup-<device>-<UTC time>.fbk`: sorts by time within a device.
pub fn scheduled_name(device: &str, unix_ms: i64) -> String {
    let t: String = crate::base::rfc3339_utc(unix_ms)
        .chars()
        .take(19)
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .collect();
    format!("faced-backup-{device}-{t}Z.{EXTENSION}")
}

/// Scheduled backups (`[backup]`): what [`Scheduler::start`] needs.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// The database to back up.
    pub db: PathBuf,
    /// Its key file.
    pub key_path: PathBuf,
    /// Where the archives go (created 0700 if missing).
    pub folder: PathBuf,
    /// Their passphrase.
    pub passphrase: Passphrase,
    /// Time between backups.
    pub every: std::time::Duration,
    /// Archives of this device kept in `folder`.
    pub keep: usize,
    /// Device id, in the archives' names.
    pub device: String,
}

/// The thread `faced-backup` that writes an archive every [`Schedule::every`] and deletes the
/// oldest beyond [`Schedule::keep`]. The first archive is due when the newest one in the folder
/// is older than `every` (by its modification time; one dated in the future, as after the
/// clock was set back, counts as new). A failed backup is logged and retried after at most an
/// hour; a full disk never stops recognition, which does not wait for this thread. Stopped
/// (and joined) on drop, also in the middle of a wait.
pub struct Scheduler {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Creates the folder if needed and starts the thread.
    pub fn start(s: Schedule, clocks: std::sync::Arc<dyn Clocks>) -> Result<Scheduler> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&s.folder)
            .map_err(|e| {
                Error::precondition(format!(
                    "backup.folder: cannot create {}: {e}",
                    s.folder.display()
                ))
            })?;
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("faced-backup".into())
            .spawn(move || scheduled(s, &*clocks, rx))
            .map_err(|e| Error::internal(format!("cannot start the backup thread: {e}")))?;
        Ok(Scheduler {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn scheduled(s: Schedule, clocks: &dyn Clocks, stop: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mine = format!("faced-backup-{}-", s.device);
    let ours = |folder: &Path| -> Vec<PathBuf> {
        list(folder)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&mine))
            })
            .collect()
    };
    let newest_age = ours(&s.folder).last().and_then(|p| {
        let m = std::fs::metadata(p).ok()?.modified().ok()?;
        // A modification time in the future (the clock was set back) gives an error: new.
        Some(
            std::time::SystemTime::now()
                .duration_since(m)
                .unwrap_or_default(),
        )
    });
    let mut wait = match newest_age {
        Some(age) => s.every.saturating_sub(age),
        None => std::time::Duration::ZERO,
    };
    loop {
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let out = s.folder.join(scheduled_name(&s.device, clocks.unix_ms()));
        let t = std::time::Instant::now();
        match write(&s.db, &s.key_path, &out, &s.passphrase, clocks) {
            Ok(w) => {
                tracing::info!(
                    archive = %out.display(),
                    bytes = w.bytes,
                    ms = t.elapsed().as_millis() as u64,
                    "scheduled backup written"
                );
                let all = ours(&s.folder);
                for old in all.iter().take(all.len().saturating_sub(s.keep)) {
                    if let Err(e) = std::fs::remove_file(old) {
                        tracing::warn!("cannot delete the old backup {}: {e}", old.display());
                    }
                }
                wait = s.every;
            }
            Err(e) => {
                tracing::error!(
                    folder = %s.folder.display(),
                    "scheduled backup failed (recognition goes on; retrying): {e}"
                );
                wait = s.every.min(std::time::Duration::from_secs(3600));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass() -> Passphrase {
        Passphrase::new("correct horse battery", "test").unwrap()
    }

    fn archive(plain: &[u8]) -> (Header, Vec<u8>, [u8; 32]) {
        let salt = [7u8; 16];
        let key = derive(&pass(), &salt, MIN_ITERATIONS);
        let h = Header {
            kdf: "pbkdf2-hmac-sha256".into(),
            iterations: MIN_ITERATIONS,
            salt: crate::models::hex(&salt),
            key_check: key_check(&key),
            faced_version: "0".into(),
            schema_version: 1,
            created_at: "x".into(),
            key_bytes: 32,
            db_bytes: plain.len() as u64 - 32,
        };
        let mut out = Vec::new();
        seal_stream(&h, &key, plain, &mut out).unwrap();
        (h, out, key)
    }

    #[test]
    fn short_passphrases_are_refused() {
        let e = Passphrase::new("short", "--passphrase-file p").unwrap_err();
        assert_eq!(e.kind(), Kind::InvalidInput);
        assert!(e.to_string().contains("at least 10"), "{e}");
    }

    #[test]
    fn every_cut_of_a_multi_chunk_archive_is_refused_as_truncated() {
        // Three chunks: 2 full and one partial. Cutting at each chunk boundary must not look
        // like a complete (shorter) archive.
        let plain: Vec<u8> = (0..(2 * CHUNK + 100)).map(|i| i as u8).collect();
        let (_, bytes, _) = archive(&plain);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let hlen = 12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let per = 4 + CHUNK + TAG_LEN;
        for cut in [hlen, hlen + per, hlen + 2 * per, bytes.len() - 1] {
            let e = stage(&bytes[..cut], &pass(), &db).unwrap_err();
            assert!(
                e.to_string().contains("truncated") || e.to_string().contains("damaged"),
                "cut at {cut}: {e}"
            );
            assert!(!staged_paths(&db).0.exists());
            assert!(!with_suffix(&db, ".restore-tmp").exists());
        }
    }

    #[test]
    fn swapped_chunks_fail() {
        let plain: Vec<u8> = (0..(2 * CHUNK + 100)).map(|i| (i * 7) as u8).collect();
        let (_, mut bytes, _) = archive(&plain);
        let hlen = 12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let per = 4 + CHUNK + TAG_LEN;
        let (a, b) = bytes[hlen..].split_at_mut(per);
        a.swap_with_slice(&mut b[..per]);
        let dir = tempfile::tempdir().unwrap();
        let e = stage(bytes.as_slice(), &pass(), &dir.path().join("x.db")).unwrap_err();
        assert!(e.to_string().contains("part 0 fails its check"), "{e}");
    }

    #[test]
    fn a_header_asking_for_more_key_stretching_than_the_bound_is_refused_at_once() {
        let (h, bytes, _) = archive(&[0u8; 64]);
        let hlen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        let forged = |iterations: u32| {
            let json = serde_json::to_vec(&Header {
                iterations,
                ..h.clone()
            })
            .unwrap();
            let mut b = bytes[..8].to_vec();
            b.extend_from_slice(&(json.len() as u32).to_le_bytes());
            b.extend_from_slice(&json);
            b.extend_from_slice(&bytes[12 + hlen..]);
            b
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        for n in [MAX_ITERATIONS + 1, 100_000_000, MIN_ITERATIONS - 1] {
            let archive = forged(n);
            let t = std::time::Instant::now();
            let e = stage(archive.as_slice(), &pass(), &db).unwrap_err();
            assert!(e.to_string().contains("key derivation"), "{n}: {e}");
            // Refused before any key stretching (over a million rounds take ~0.5 s natively,
            // far longer under the emulated aarch64 tests).
            assert!(t.elapsed() < std::time::Duration::from_millis(300), "{n}");
        }
        // The bound still reads what faced writes today.
        assert!((MIN_ITERATIONS..=MAX_ITERATIONS).contains(&ITERATIONS));
    }

    #[test]
    fn scheduled_names_sort_by_time() {
        let a = scheduled_name("door", 1_700_000_000_000);
        let b = scheduled_name("door", 1_700_000_060_000);
        assert_eq!(a, "faced-backup-door-20231114T221320Z.fbk");
        assert!(a < b);
    }
}
