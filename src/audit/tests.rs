//! The chain against the edits someone with the SQLite file could make: each one is found and
//! named, while retention and an erase (the two changes faced itself makes) keep it whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;

use super::*;
use crate::base::SimulatedClocks;
use crate::db;

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    clocks: Arc<SimulatedClocks>,
    log: Arc<Log>,
}

const KEY: [u8; 32] = [7u8; 32];

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let clocks = Arc::new(SimulatedClocks::new());
    drop(db::open_migrated(&db, &*clocks).unwrap());
    let log = Log::with_key(&db, &KEY, clocks.clone()).unwrap();
    Fixture {
        _dir: dir,
        db,
        clocks,
        log,
    }
}

/// Rows 1..=n: a person enrolled, renamed, ... by a console user.
fn fill(f: &Fixture, n: i64) {
    let by = By::user("ann", "10.0.0.7".parse().unwrap());
    for i in 1..=n {
        f.log
            .record(
                &by,
                Action::Rename,
                Subject::person(i % 3, Some(&format!("Person {i}"))),
                format!("step {i}"),
            )
            .unwrap();
        f.clocks.advance(Duration::from_secs(1));
    }
}

/// An editor of the file: the triggers go first (they stop only honest mistakes).
fn tamper(db: &Path, sql: &str) {
    let c = Connection::open(db).unwrap();
    c.execute_batch(
        "DROP TRIGGER IF EXISTS audit_append_only; DROP TRIGGER IF EXISTS audit_delete_behind_anchor;
         DROP TRIGGER IF EXISTS audit_seal_kept;",
    )
    .unwrap();
    c.execute_batch(sql).unwrap();
}

fn bad_row(f: &Fixture) -> Tampered {
    f.log
        .verify()
        .unwrap()
        .expect_err("tampering must be found")
}

#[test]
fn appended_rows_verify_and_read_back() {
    let f = fixture();
    assert_eq!(f.log.verify().unwrap().unwrap().rows, 0, "an empty trail");
    fill(&f, 5);
    let v = f.log.verify().unwrap().unwrap();
    assert_eq!((v.rows, v.anchor, v.head), (5, 0, 5));
    let rows = f.log.list(&Filter::default()).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.id).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1]
    );
    assert_eq!(rows[0].actor, "ann");
    assert_eq!(rows[0].origin, "10.0.0.7");
    assert_eq!(rows[0].action, "rename");
    assert_eq!(rows[0].subject_name.as_deref(), Some("Person 5"));
    let only = Filter {
        actor: Some("AN".into()),
        subject_kind: Some("person".into()),
        subject_id: Some("1".into()),
        ..Default::default()
    };
    let ids: Vec<i64> = f.log.list(&only).unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, [4, 1]);
    let nobody = Filter {
        actor: Some("%".into()),
        ..Default::default()
    };
    assert!(f.log.list(&nobody).unwrap().is_empty(), "% is a character");
}

#[test]
fn an_edited_column_names_its_row() {
    for (col, value) in [
        ("action", "'erase'"),
        ("subject_id", "'99'"),
        ("at", "at + 1"),
        ("actor", "'bob'"),
        ("detail", "''"),
        ("subject_name", "'Mallory'"),
    ] {
        let f = fixture();
        fill(&f, 5);
        tamper(
            &f.db,
            &format!("UPDATE audit SET {col} = {value} WHERE id = 3"),
        );
        let t = bad_row(&f);
        assert_eq!(t.row, 3, "{col}: {t}");
        assert!(t.to_string().starts_with("audit row 3: "), "{t}");
    }
}

#[test]
fn a_deleted_middle_row_is_found() {
    let f = fixture();
    fill(&f, 5);
    tamper(&f.db, "DELETE FROM audit WHERE id = 3");
    let t = bad_row(&f);
    assert_eq!(t.row, 3, "{t}");
    assert!(t.reason.contains("missing"), "{t}");
}

#[test]
fn reordered_rows_are_found() {
    let f = fixture();
    fill(&f, 5);
    // Swap rows 2 and 4 (every column but the id, so the table still counts 1..=5).
    tamper(
        &f.db,
        "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE id IN (2, 4);
         UPDATE audit SET (at, actor_kind, actor, origin, action, subject_kind, subject_id,
                           subject_name, subject_salt, subject_tag, detail, mac) =
           (SELECT at, actor_kind, actor, origin, action, subject_kind, subject_id, subject_name,
                   subject_salt, subject_tag, detail, mac FROM t WHERE t.id = 6 - audit.id)
         WHERE id IN (2, 4);",
    );
    assert_eq!(bad_row(&f).row, 2);
}

#[test]
fn a_cut_end_and_a_missing_seal_are_found() {
    let f = fixture();
    fill(&f, 5);
    tamper(&f.db, "DELETE FROM audit WHERE id >= 4");
    let t = bad_row(&f);
    assert_eq!(t.row, 4, "{t}");
    // The next append records the damage instead of sealing over it.
    fill(&f, 1);
    let v = f.log.verify().unwrap().unwrap();
    assert_eq!(v.damaged, [4], "{v:?}");
    let damage = &f.log.list(&Filter::default()).unwrap()[1];
    assert_eq!(damage.action, "audit_damaged");
    assert!(damage.detail.contains("row 5"), "{}", damage.detail);

    let f = fixture();
    fill(&f, 2);
    tamper(&f.db, "DELETE FROM audit_seal");
    assert_eq!(bad_row(&f).row, 1);
}

#[test]
fn the_triggers_refuse_edits_and_deletes() {
    let f = fixture();
    fill(&f, 3);
    let c = Connection::open(&f.db).unwrap();
    for sql in [
        "UPDATE audit SET action = 'erase' WHERE id = 2",
        "UPDATE audit SET subject_name = 'X' WHERE id = 2",
        "DELETE FROM audit WHERE id = 1",
        "DELETE FROM audit_seal",
    ] {
        let e = c.execute(sql, []).unwrap_err().to_string();
        assert!(e.contains("audit"), "{sql}: {e}");
    }
    assert_eq!(f.log.verify().unwrap().unwrap().rows, 3);
}

#[test]
fn retention_keeps_a_verifiable_chain() {
    let f = fixture();
    fill(&f, 6);
    f.clocks.advance(Duration::from_secs(10 * 86_400));
    fill(&f, 3);
    let cfg = AuditConfig {
        retention_days: 5,
        ..Default::default()
    };
    assert_eq!(f.log.retain(&cfg).unwrap(), 6);
    let v = f.log.verify().unwrap().unwrap();
    assert_eq!((v.rows, v.anchor, v.head), (3, 6, 9));
    assert_eq!(f.log.retain(&cfg).unwrap(), 0, "nothing more is old");
    // By count; then everything, and appending goes on from the anchor.
    let cfg = AuditConfig {
        retention_days: 3650,
        max_rows: 1,
    };
    assert_eq!(f.log.retain(&cfg).unwrap(), 2);
    f.clocks.advance(Duration::from_secs(20 * 86_400));
    let all = AuditConfig {
        retention_days: 1,
        ..Default::default()
    };
    assert_eq!(f.log.retain(&all).unwrap(), 1);
    assert_eq!(f.log.verify().unwrap().unwrap().rows, 0);
    fill(&f, 2);
    let v = f.log.verify().unwrap().unwrap();
    assert_eq!((v.rows, v.anchor, v.head), (2, 9, 11));
    // A row re-inserted behind the anchor is found.
    let c = Connection::open(&f.db).unwrap();
    c.execute_batch(
        "INSERT INTO audit SELECT 3, at, actor_kind, actor, origin, action, subject_kind,
           subject_id, subject_name, subject_salt, subject_tag, detail, mac FROM audit WHERE id = 10",
    )
    .unwrap();
    assert_eq!(bad_row(&f).row, 3);
}

#[test]
fn forgetting_a_subject_removes_the_name_and_keeps_the_chain() {
    let f = fixture();
    let by = By::cli();
    assert!(by.actor.contains("(uid "), "{}", by.actor);
    for name in ["Eve Erasable", "Eve Erasable", "Someone Else"] {
        let id = if name.starts_with("Eve") { 7 } else { 8 };
        f.log
            .record(
                &by,
                Action::Enroll,
                Subject::person(id, Some(name)),
                "1 samples",
            )
            .unwrap();
    }
    {
        let c = db::open(&f.db).unwrap();
        assert_eq!(forget_subject(&c, SubjectKind::Person, "7").unwrap(), 2);
    }
    let v = f.log.verify().unwrap().unwrap();
    assert_eq!((v.rows, v.forgotten), (3, 2));
    let rows = f.log.list(&Filter::default()).unwrap();
    assert_eq!(rows[0].subject_name.as_deref(), Some("Someone Else"));
    assert_eq!(rows[1].subject_name, None);
    assert_eq!(rows[1].subject_id.as_deref(), Some("7"));
    // Not in the file, the WAL or its freed pages.
    {
        let c = Connection::open(&f.db).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
            .unwrap();
    }
    drop(f.log);
    for suffix in ["", "-wal"] {
        let mut p = f.db.as_os_str().to_owned();
        p.push(suffix);
        let bytes = std::fs::read(&p).unwrap_or_default();
        assert!(
            !bytes.windows(12).any(|w| w == b"Eve Erasable"),
            "the name is still in {p:?}"
        );
    }
}

#[test]
fn a_wrong_key_does_not_verify() {
    let f = fixture();
    fill(&f, 2);
    let other = Log::with_key(&f.db, &[8u8; 32], f.clocks.clone()).unwrap();
    let t = other.verify().unwrap().unwrap_err();
    assert!(t.reason.contains("key file"), "{t}");
}

#[test]
fn csv_cells_are_quoted_and_never_formulas() {
    assert_eq!(csv::cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    for s in ["+1", "-1", "@a", "\tb"] {
        assert!(csv::cell(s).starts_with('\''), "{s}");
    }
    assert_eq!(csv::cell("a,b"), "\"a,b\"");
    assert_eq!(csv::cell("plain"), "plain");
    let f = fixture();
    let by = By::user("=evil", "::ffff:10.0.0.8".parse().unwrap());
    assert_eq!(by.origin, "10.0.0.8", "IPv4-mapped addresses read as IPv4");
    f.log
        .record(&by, Action::SignInFailed, Subject::user(None, "-x"), "")
        .unwrap();
    let text = csv::to_csv(&f.log.export(&Filter::default()).unwrap());
    let line = text.lines().nth(1).unwrap();
    assert!(
        line.contains(",'=evil,10.0.0.8,sign_in_failed,user,,'-x,"),
        "{line}"
    );
}

#[test]
fn config_errors_name_the_key() {
    assert!(AuditConfig::default().validate().is_ok());
    let e = AuditConfig {
        retention_days: 0,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("audit.retention_days"), "{e}");
    let e = AuditConfig {
        max_rows: 10,
        ..Default::default()
    }
    .validate()
    .unwrap_err();
    assert!(e.to_string().contains("audit.max_rows"), "{e}");
}
