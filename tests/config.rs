//! No configuration key is silently ignored: every key documented in docs/config.md exists in the
//! code, every key the code reads is documented, and for every key the real `faced check-config`
//! accepts a valid value (and prints it back in the effective configuration, so the value reached
//! the setting) and rejects wrong values — a wrong type, and out-of-range values where the key has
//! a range — with exit status 2 and a message naming the key.
//!
//! The keys the code reads are found through the parser itself, not a hand-kept list: a probe key
//! `zz_probe` in each section makes serde list the section's fields ("unknown field `zz_probe`,
//! expected one of …"), and a probe inside each field tells sections from values. A key added to
//! a struct therefore shows up here by itself, and the test fails until it is documented and has
//! a row in [`ROWS`].
//!
//! Behaviour of the keys that used to be ignored (`gpio.*`, `web.listen`) is tested through
//! `faced run` in tests/daemon.rs.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

/// One documented key: a value `check-config` must accept, values it must reject, and context
/// keys (other settings the valid and invalid values are tried with).
struct Row {
    key: &'static str,
    valid: &'static str,
    invalid: &'static [&'static str],
    context: &'static [(&'static str, &'static str)],
}

const fn row(key: &'static str, valid: &'static str, invalid: &'static [&'static str]) -> Row {
    Row {
        key,
        valid,
        invalid,
        context: &[],
    }
}

const fn row_in(
    key: &'static str,
    valid: &'static str,
    invalid: &'static [&'static str],
    context: &'static [(&'static str, &'static str)],
) -> Row {
    Row {
        key,
        valid,
        invalid,
        context,
    }
}

/// Values are TOML literals. Add a row for every new key: a valid value different from the
/// default, a wrong type, and the values just outside its range.
const ROWS: &[Row] = &[
    row("device.id", r#""door-1""#, &["5", r#""Door 1""#, r#""""#]),
    row(
        "cameras[].name",
        r#""gate""#,
        &["5", r#""Front Door""#, r#""""#],
    ),
    row(
        "cameras[].source",
        r#""pattern""#,
        &["5", r#""rtsps://cam""#, r#""https://cam/x""#],
    ),
    row_in(
        "cameras[].credentials_file",
        r#""/etc/passwd""#,
        &["5", r#""/nonexistent/camera.cred""#],
        &[("cameras[].source", r#""rtsp://cam/stream""#)],
    ),
    row("cameras[].exec_format", r#""yuv420""#, &[r#""h264""#, "1"]),
    row("cameras[].v4l2_format", r#""nv12""#, &[r#""h264""#, "1"]),
    row("cameras[].width", "320", &[r#""wide""#, "8", "10000"]),
    row("cameras[].height", "240", &[r#""tall""#, "8", "5000"]),
    row("cameras[].fps", "7.5", &[r#""fast""#, "0", "500"]),
    row("cameras[].frames_per_image", "3", &[r#""x""#, "0", "-1"]),
    row("cameras[].repeat", "false", &[r#""no""#]),
    row("cameras[].lossless", "true", &[r#""yes""#]),
    row("cameras[].detect_every", "2", &[r#""x""#, "0", "1001"]),
    row("cameras[].threshold", "0.6", &[r#""high""#, "1.5", "-0.1"]),
    row("cameras[].embed_every", "5", &[r#""x""#, "0"]),
    row("cameras[].votes", "3", &[r#""x""#, "0", "51"]),
    row("cameras[].min_face_px", "32.0", &[r#""x""#, "-1.0", "nan"]),
    row("cameras[].track_iou", "0.4", &[r#""x""#, "1.5"]),
    row("cameras[].track_max_missed", "3", &[r#""x""#, "0"]),
    row("cameras[].liveness", "true", &[r#""x""#]),
    row("cameras[].liveness_threshold", "0.3", &[r#""x""#, "2.0"]),
    row("cameras[].detector.kind", r#""full""#, &["5", r#""huge""#]),
    row("cameras[].detector.min_score", "0.6", &[r#""x""#, "1.5"]),
    row("cameras[].detector.nms_iou", "0.4", &[r#""x""#, "1.0"]),
    row(
        "cameras[].detector.tiling",
        r#""auto""#,
        &["5", r#""sometimes""#],
    ),
    row("inference.litert_lib", r#""/opt/x/libLiteRt.so""#, &["5"]),
    row("inference.models_dir", r#""/opt/x/models""#, &["5"]),
    row("inference.threads", "4", &[r#""x""#, "0", "65"]),
    row("inference.precision", r#""int8""#, &["5", r#""fp16""#]),
    row("gallery.db", r#""/tmp/x/f.db""#, &["5", r#""""#]),
    row("gallery.key_path", r#""/tmp/x/f.key""#, &["5"]),
    row(
        "events.cooldown_secs",
        "30.0",
        &[r#""x""#, "-1.0", "inf", "604801.0", "1e300"],
    ),
    row(
        "events.unknown_cooldown_secs",
        "0.0",
        &[r#""x""#, "-1.0", "nan", "1e300"],
    ),
    row("events.snapshots", "false", &[r#""x""#]),
    row(
        "events.retention_days",
        "7",
        &[r#""x""#, "-1", "5000000000"],
    ),
    row("events.retention_count", "500", &[r#""x""#, "-1"]),
    row("mqtt.enabled", "true", &[r#""x""#]),
    row("mqtt.host", r#""broker.lan""#, &["5", r#""""#, r#""a b""#]),
    row("mqtt.port", "8883", &[r#""x""#, "0", "70000"]),
    row("mqtt.client_id", r#""door""#, &["5", r#""""#]),
    row("mqtt.username", r#""u""#, &["5", r#""""#]),
    row_in(
        "mqtt.password",
        r#""p""#,
        &["5"],
        &[("mqtt.username", r#""u""#)],
    ),
    row_in(
        "mqtt.password_file",
        r#""/etc/x/pw""#,
        &["5"],
        &[("mqtt.username", r#""u""#)],
    ),
    row("mqtt.tls.ca_file", r#""/etc/x/ca.pem""#, &["5"]),
    row_in(
        "mqtt.tls.cert_file",
        r#""/etc/x/c.pem""#,
        &["5"],
        &[("mqtt.tls.key_file", r#""/etc/x/c.key""#)],
    ),
    row_in(
        "mqtt.tls.key_file",
        r#""/etc/x/c.key""#,
        &["5"],
        &[("mqtt.tls.cert_file", r#""/etc/x/c.pem""#)],
    ),
    row(
        "mqtt.base_topic",
        r#""home/faced""#,
        &["5", r#""a/+/b""#, r#""""#],
    ),
    row("mqtt.discovery", "false", &[r#""x""#]),
    row("mqtt.discovery_prefix", r#""ha""#, &["5", r##""#""##]),
    row("mqtt.keepalive_secs", "60", &[r#""x""#, "1", "70000"]),
    row("mqtt.commands", "true", &[r#""x""#]),
    row("mqtt.command_key", r#""/tmp/faced-cmd.key""#, &["5"]),
    row("mqtt.command_window_secs", "120", &[r#""x""#, "4", "601"]),
    row("mqtt.outbox_max_messages", "100", &[r#""x""#, "0"]),
    row("mqtt.reconnect_min_ms", "1000", &[r#""x""#, "1"]),
    row("mqtt.reconnect_max_secs", "60", &[r#""x""#, "0", "4000"]),
    row("mqtt.away_secs", "300", &[r#""x""#, "0", "86401"]),
    row("web.enabled", "false", &[r#""x""#]),
    row(
        "web.listen",
        r#""127.0.0.1:9000""#,
        &["5", r#""localhost""#, r#""0.0.0.0:99999""#, r#""""#],
    ),
    row(
        "web.public_url",
        r#""http://door.local:8080""#,
        &["5", r#""door.local""#],
    ),
    row("web.max_upload_bytes", "1048576", &[r#""x""#, "10"]),
    row("web.max_photo_bytes", "1048576", &[r#""x""#, "10"]),
    row("web.max_upload_photos", "10", &[r#""x""#, "0"]),
    row(
        "web.max_zip_uncompressed_bytes",
        "1048576",
        &[r#""x""#, "10"],
    ),
    row("web.max_json_bytes", "4096", &[r#""x""#, "10"]),
    row("web.max_restore_bytes", "1048576", &[r#""x""#, "10"]),
    row("web.session_idle_minutes", "60", &[r#""x""#, "0"]),
    row("web.session_max_hours", "24", &[r#""x""#, "0", "8785"]),
    row("web.login_attempts_per_minute", "5", &[r#""x""#, "0"]),
    row(
        "web.login_attempts_per_minute_per_network",
        "20",
        &[r#""x""#, "0"],
    ),
    row(
        "web.login_attempts_per_minute_total",
        "100",
        &[r#""x""#, "0"],
    ),
    row("web.password_hash_concurrency", "2", &[r#""x""#, "0", "65"]),
    row("web.max_connections", "64", &[r#""x""#, "7", "65537"]),
    row("web.header_timeout_s", "5", &[r#""x""#, "0", "301"]),
    row("web.idle_timeout_s", "30", &[r#""x""#, "0", "3601"]),
    row("web.max_upload_pixels", "1000000", &[r#""x""#, "9999"]),
    row("web.decode_memory_mb", "64", &[r#""x""#, "7", "65537"]),
    row("web.secure_cookie", "true", &[r#""x""#]),
    row_in(
        "gpio.enabled",
        "true",
        &[r#""x""#],
        &[("gpio.backend", r#""fake""#)],
    ),
    row("gpio.backend", r#""fake""#, &["5", r#""wiringpi""#]),
    row("gpio.relay_pin", "17", &[r#""17""#, "28", "300"]),
    row("gpio.relay_active_low", "true", &[r#""x""#]),
    row("gpio.pulse_ms", "300", &[r#""x""#, "5", "70000"]),
    row("gpio.cooldown_ms", "0", &[r#""x""#, "4000000"]),
    row_in(
        "gpio.allow",
        r#"["alice"]"#,
        &[r#""alice""#, r#"[""]"#, r#"[" "]"#],
        &[("gpio.relay_pin", "17")],
    ),
    row_in(
        "gpio.led_pin",
        "27",
        &[r#""x""#, "99", "17"],
        &[("gpio.relay_pin", "17")],
    ),
    row("gpio.blink_ms", "250", &[r#""x""#, "10", "20000"]),
    row("gpio.pir_pin", "22", &[r#""x""#, "50"]),
    row("gpio.pir_hold_s", "0", &[r#""x""#, "3601"]),
    row_in(
        "backup.folder",
        r#""/var/backups/faced""#,
        &["5"],
        &[("backup.passphrase_file", r#""/etc/faced/backup.pass""#)],
    ),
    row(
        "backup.passphrase_file",
        r#""/etc/faced/backup.pass""#,
        &["5"],
    ),
    row(
        "backup.every_hours",
        "0.5",
        &[r#""x""#, "0", "-1.0", "8761"],
    ),
    row("backup.keep", "30", &[r#""x""#, "0", "1001"]),
    row_in(
        "frigate.enabled",
        "true",
        &[r#""yes""#],
        &[("mqtt.enabled", "true")],
    ),
    row(
        "frigate.url",
        r#""http://10.0.0.5:5000""#,
        &["5", r#""https://frigate:8971""#, r#""http://""#],
    ),
    row(
        "frigate.topic_prefix",
        r#""nvr""#,
        &["5", r#""""#, r#""frigate/#""#],
    ),
    row(
        "frigate.cameras",
        r#"["front_door", "garage"]"#,
        &[r#""front""#, r#"["front door"]"#, r#"["..", "front"]"#],
    ),
    row("frigate.attempts", "10", &[r#""x""#, "0", "51"]),
    row("frigate.min_area", "10000", &[r#""x""#, "-1", "100000001"]),
    row("frigate.threshold", "0.6", &[r#""x""#, "0", "1.5"]),
    row("frigate.sub_label", "false", &[r#""no""#]),
    row("frigate.timeout_secs", "2.0", &[r#""x""#, "0.1", "61"]),
    row("frigate.events_per_minute", "60", &[r#""x""#, "0", "601"]),
    row("visitors.enabled", "false", &[r#""no""#]),
    row("visitors.retention_days", "3", &[r#""x""#, "0", "366"]),
    row(
        "visitors.visit_gap_minutes",
        "30.0",
        &[r#""x""#, "-1.0", "1441"],
    ),
    row_in(
        "fleet.enabled",
        "true",
        &[r#""yes""#],
        &[("mqtt.enabled", "true")],
    ),
    row(
        "fleet.key_path",
        r#""/var/lib/faced/site.key""#,
        &["5", r#""""#],
    ),
    row("audit.retention_days", "30", &[r#""x""#, "0", "3651", "-1"]),
    row(
        "audit.max_rows",
        "2000",
        &[r#""x""#, "999", "100000001", "-1"],
    ),
    row_in(
        "gpio.fake_pir_file",
        r#""/tmp/x/pir""#,
        &["5"],
        &[("gpio.backend", r#""fake""#), ("gpio.pir_pin", "22")],
    ),
];

/// Parses a TOML literal.
fn lit(s: &str) -> toml::Value {
    let mut t: toml::Table = format!("v = {s}")
        .parse()
        .unwrap_or_else(|e| panic!("{s}: {e}"));
    t.remove("v").unwrap()
}

/// Sets `key` (`a.b`, `cameras[].x`: `[]` is the first entry of a list) in `doc` to `v`.
fn set(doc: &mut toml::Table, key: &str, v: toml::Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = doc;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Some(name) = p.strip_suffix("[]") {
            let arr = cur.entry(name).or_insert_with(|| {
                toml::Value::Array(vec![toml::Value::Table(Default::default())])
            });
            let t = arr.as_array_mut().unwrap()[0].as_table_mut().unwrap();
            assert!(!last, "{key}: a list is not a value here");
            cur = t;
        } else if last {
            cur.insert(p.to_string(), v);
            return;
        } else {
            cur = cur
                .entry(*p)
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut()
                .unwrap();
        }
    }
}

/// Looks `key` up in the effective configuration `check-config` printed.
fn get<'a>(doc: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = doc;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let v = cur.get(p.trim_end_matches("[]"))?;
        let v = if p.ends_with("[]") {
            v.as_array()?.first()?
        } else {
            v
        };
        if last {
            return Some(v);
        }
        cur = v.as_table()?;
    }
    None
}

/// The key as messages name it: `cameras[0].threshold`.
fn shown(key: &str) -> String {
    key.replace("[]", "[0]")
}

fn check_config(dir: &Path, doc: &toml::Table) -> Output {
    let path = dir.join("faced.toml");
    std::fs::write(&path, toml::to_string(doc).unwrap()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_faced"));
    cmd.args(["check-config", "--config"]).arg(&path);
    for (k, _) in std::env::vars() {
        if k.starts_with("FACED_") || k == "STATE_DIRECTORY" {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

/// The keys of the table at `section` (`""` = the top level), through the parser's "unknown
/// field" message; `None` if `section` is a value, not a table.
fn fields(section: &str) -> Option<Vec<String>> {
    let mut doc = toml::Table::new();
    let probe = if section.is_empty() {
        "zz_probe".to_string()
    } else {
        format!("{section}.zz_probe")
    };
    set(&mut doc, &probe, toml::Value::Integer(0));
    let text = toml::to_string(&doc).unwrap();
    let e = match faced::config::Config::from_toml(&text, None, Vec::new()) {
        Ok(_) => panic!("probe {probe} was accepted"),
        Err(e) => e.to_string(),
    };
    if !e.contains("unknown field `zz_probe`") {
        return None;
    }
    // "… unknown field `zz_probe`, expected one of `a`, `b`; in `section`"
    let expected = e.split_once("expected").map(|(_, r)| r).unwrap_or("");
    let expected = expected.split(';').next().unwrap_or("");
    Some(
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect(),
    )
}

/// Every key of RawConfig, in docs notation (`cameras[].detector.kind`).
fn code_keys() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut todo = vec![String::new()];
    while let Some(section) = todo.pop() {
        let fs = fields(&section).unwrap_or_else(|| panic!("{section} is not a table"));
        assert!(!fs.is_empty(), "no fields listed for {section:?}");
        for f in fs {
            let key = if section.is_empty() {
                f.clone()
            } else {
                format!("{section}.{f}")
            };
            // A list of tables (`[[cameras]]`) is probed through its first entry.
            let as_list = format!("{key}[]");
            if fields(&key).is_some() {
                todo.push(key);
            } else if fields(&as_list).is_some() {
                todo.push(as_list);
            } else {
                out.insert(key);
            }
        }
    }
    out
}

/// Keys in the "Sections and keys" table of docs/config.md: rows whose first cell is one
/// backticked key.
fn documented_keys() -> Vec<String> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/config.md"))
            .unwrap();
    let table = text
        .split_once("## Sections and keys")
        .expect("docs/config.md has a \"Sections and keys\" table")
        .1;
    let mut keys = Vec::new();
    for line in table.lines().skip_while(|l| !l.starts_with('|')) {
        if !line.starts_with('|') {
            break;
        }
        let cell = line.split('|').nth(1).unwrap_or("").trim();
        if cell == "key" || cell.starts_with("---") {
            continue;
        }
        let key = cell
            .strip_prefix('`')
            .and_then(|c| c.strip_suffix('`'))
            .filter(|k| !k.contains('`') && !k.contains(' '))
            .unwrap_or_else(|| panic!("docs/config.md: row {line:?} must name one `key`"));
        keys.push(key.to_string());
    }
    keys
}

#[test]
fn documented_keys_and_code_keys_are_the_same() {
    let doc: Vec<String> = documented_keys();
    let doc_set: BTreeSet<String> = doc.iter().cloned().collect();
    assert_eq!(
        doc.len(),
        doc_set.len(),
        "a key is listed twice in docs/config.md"
    );
    let code = code_keys();
    let undocumented: Vec<&String> = code.difference(&doc_set).collect();
    let unknown: Vec<&String> = doc_set.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "the code reads keys docs/config.md does not document: {undocumented:?}; add a row to \
         its \"Sections and keys\" table (and the key to faced.toml)"
    );
    assert!(
        unknown.is_empty(),
        "docs/config.md documents keys the code does not have: {unknown:?}"
    );
    // Sanity: the walk found the nested sections.
    for k in [
        "cameras[].detector.kind",
        "mqtt.tls.ca_file",
        "gpio.relay_pin",
        "web.listen",
    ] {
        assert!(code.contains(k), "{k} not found by the walk: {code:?}");
    }
}

#[test]
fn every_documented_key_has_a_row_and_is_checked_by_check_config() {
    let rows: Vec<&str> = ROWS.iter().map(|r| r.key).collect();
    let doc = documented_keys();
    let missing: Vec<&String> = doc.iter().filter(|k| !rows.contains(&k.as_str())).collect();
    assert!(
        missing.is_empty(),
        "docs/config.md documents {missing:?} but tests/config.rs has no row for it: add \
         `row(\"key\", valid, &[wrong type, out of range…])` to ROWS"
    );
    let stale: Vec<&&str> = rows
        .iter()
        .filter(|k| !doc.iter().any(|d| d == *k))
        .collect();
    assert!(
        stale.is_empty(),
        "ROWS has keys docs/config.md does not document: {stale:?}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for r in ROWS {
        let base = || {
            let mut d = toml::Table::new();
            for (k, v) in r.context {
                set(&mut d, k, lit(v));
            }
            d
        };
        // Accepted, and the value is in force in the effective configuration.
        let mut d = base();
        let want = lit(r.valid);
        set(&mut d, r.key, want.clone());
        let out = check_config(tmp.path(), &d);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            failures.push(format!("{} = {}: rejected: {stderr}", r.key, r.valid));
        } else {
            let eff: toml::Table = stdout.parse().unwrap();
            let got = get(&eff, r.key);
            let same = match (got, &want) {
                (Some(toml::Value::String(s)), _) if s == "<redacted>" => true,
                (Some(g), w) => match (
                    g.as_float().or(g.as_integer().map(|i| i as f64)),
                    w.as_float().or(w.as_integer().map(|i| i as f64)),
                ) {
                    (Some(a), Some(b)) => (a - b).abs() < 1e-6,
                    _ => g == w,
                },
                (None, _) => false,
            };
            if !same {
                failures.push(format!(
                    "{} = {}: accepted but the effective configuration has {got:?}",
                    r.key, r.valid
                ));
            }
        }
        // Rejected, naming the key.
        for bad in r.invalid {
            let mut d = base();
            set(&mut d, r.key, lit(bad));
            let out = check_config(tmp.path(), &d);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.code() != Some(2) || !stderr.contains(&shown(r.key)) {
                failures.push(format!(
                    "{} = {bad}: exit {:?}, wanted 2 and a message naming {}: {}",
                    r.key,
                    out.status.code(),
                    shown(r.key),
                    stderr.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The three sections `check-config` used to skip: a bad console address, broker port and GPIO
/// pin each stop it with status 2 and a message naming the key, and `faced run` with the same
/// file does not start.
#[test]
fn check_config_rejects_bad_web_listen_mqtt_port_and_gpio_pin() {
    let tmp = tempfile::tempdir().unwrap();
    for (key, bad, why) in [
        (
            "web.listen",
            r#""not-an-address""#,
            "is not an address:port",
        ),
        ("mqtt.port", "0", "must be 1..=65535"),
        (
            "gpio.relay_pin",
            "40",
            "is not a GPIO on the Raspberry Pi header",
        ),
    ] {
        let mut d = toml::Table::new();
        set(&mut d, key, lit(bad));
        let out = check_config(tmp.path(), &d);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key} = {bad}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(why),
            "{key} = {bad}: {stderr}"
        );
    }
}
