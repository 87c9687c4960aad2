//! `faced run` under systemd logs to journald natively, with its spans' fields.
//!
//! journald cannot run here, so the test plays its part with the real protocol: it binds the
//! datagram socket that journald's native protocol is sent to (systemd's "Native Journal
//! Protocol": `NAME=value\n` fields, or `NAME\n` + 64-bit little-endian length + value + `\n`
//! for values with newlines), and faced, started by `unshare` in a private mount namespace,
//! finds that socket at journald's fixed path `/run/systemd/journal/socket`. `JOURNAL_STREAM`
//! names faced's stderr as systemd sets it for a service whose output goes to the journal.
//! Needs root (or the right to create mount namespaces); says so and skips otherwise.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One journal record: field name → value (the last one if a name repeats).
type Record = BTreeMap<String, String>;

/// Parses a native-protocol datagram.
fn parse(mut b: &[u8]) -> Record {
    let mut r = Record::new();
    while !b.is_empty() {
        let nl = b.iter().position(|&c| c == b'\n').unwrap_or(b.len());
        let line = &b[..nl];
        if let Some(eq) = line.iter().position(|&c| c == b'=') {
            r.insert(
                String::from_utf8_lossy(&line[..eq]).into(),
                String::from_utf8_lossy(&line[eq + 1..]).into(),
            );
            b = &b[(nl + 1).min(b.len())..];
        } else {
            // Binary form: the name, a newline, the length, the value, a newline.
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &b[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            r.insert(name, String::from_utf8_lossy(&rest[8..8 + len]).into());
            b = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    r
}

fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn journal_records_carry_event_and_span_fields() {
    if !can_unshare() {
        eprintln!("SKIPPED: cannot create a mount namespace here (needs root); nothing checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("journal.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // A file that is not an image: the directory source logs an error for it on the camera's
    // thread, where the only place the camera's name appears is the enclosing span.
    let play = dir.path().join("play");
    std::fs::create_dir(&play).unwrap();
    std::fs::write(play.join("broken.jpg"), b"not a jpeg").unwrap();
    let cfg = dir.path().join("faced.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nid = \"test\"\n[gallery]\ndb = \"{}\"\n[[cameras]]\nname = \"door\"\n\
             source = \"dir:{}\"\nfps = 10.0\nrepeat = false\n",
            dir.path().join("faced.db").display(),
            play.display()
        ),
    )
    .unwrap();
    let stderr_path = dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let md = stderr.metadata().unwrap();
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            "mkdir -p /run/systemd/journal && mount -t tmpfs tmpfs /run/systemd/journal && \
             touch /run/systemd/journal/socket && mount --bind \"$1\" /run/systemd/journal/socket \
             && shift && exec \"$@\"",
        )
        .arg("sh")
        .arg(&sock_path)
        .arg(env!("CARGO_BIN_EXE_faced"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
        .env("FACED_WEB__ENABLED", "false")
        .env_remove("FACED_LOG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();

    let mut records = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let t = Instant::now();
    let found = loop {
        if let Ok(n) = sock.recv(&mut buf) {
            let r = parse(&buf[..n]);
            let hit = r
                .get("MESSAGE")
                .is_some_and(|m| m.contains("skipping unreadable image"));
            records.push(r.clone());
            if hit {
                break Some(r);
            }
        }
        if t.elapsed() > Duration::from_secs(60) {
            break None;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let stderr_text = std::fs::read_to_string(&stderr_path).unwrap();
    let r = found.unwrap_or_else(|| {
        panic!("no journal record of the unreadable image in 60 s; records: {records:#?}\nstderr:\n{stderr_text}")
    });
    // The span's field, the event's own field, the level and the identifier all arrive as
    // journal fields, which is what `journalctl -o verbose` and `journalctl F_CAMERA=door` read.
    assert_eq!(
        r.get("F_CAMERA").map(String::as_str),
        Some("door"),
        "{r:#?}"
    );
    assert!(
        r.get("F_FILE").is_some_and(|f| f.ends_with("broken.jpg")),
        "{r:#?}"
    );
    assert_eq!(r.get("PRIORITY").map(String::as_str), Some("3"), "{r:#?}");
    assert_eq!(
        r.get("SYSLOG_IDENTIFIER").map(String::as_str),
        Some("faced"),
        "{r:#?}"
    );
    // Earlier records: the camera's own "camera opened" line, with its fields.
    assert!(
        records
            .iter()
            .any(|r| r.get("MESSAGE").is_some_and(|m| m == "camera opened")
                && r.get("F_CAMERA").map(String::as_str) == Some("door")),
        "{records:#?}"
    );
    // Nothing of faced's own log went to stderr as formatted text as well.
    assert!(
        !stderr_text.contains("skipping unreadable image"),
        "{stderr_text}"
    );
}
