//! The system page (viewer): `GET /api/system` — version, load, temperature, disk, database
//! size, gallery counts, cameras and MQTT state.

use axum::extract::State;

use super::{blocking, gallery};
use crate::json;
use crate::web::AppState;
use crate::web::error::ApiResult;
use crate::web::live::{CameraStats, MqttStatus};

/// Disk space of the file system holding `path`: `(total, available)` bytes.
fn disk_space(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let f = st.f_frsize as u64;
    Some((st.f_blocks as u64 * f, st.f_bavail as u64 * f))
}

/// CPU temperature in °C from the first thermal zone (Raspberry Pi: the SoC).
fn temperature_c() -> Option<f32> {
    let t = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp").ok()?;
    Some(t.trim().parse::<f32>().ok()? / 1000.0)
}

/// The 1, 5 and 15 minute load averages.
fn load_avg() -> Option<[f32; 3]> {
    let t = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = t.split_whitespace().map(|x| x.parse::<f32>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// `GET /api/fleet`: this unit's view of its fleet (docs/fleet.md); 404 when `fleet.enabled`
/// is off.
pub async fn fleet(State(s): State<AppState>) -> ApiResult<axum::Json<crate::fleet::FleetSummary>> {
    let f = s.deps.fleet.clone().ok_or_else(|| {
        crate::error::Error::not_found(
            "this unit is not part of a fleet (fleet.enabled = false); see docs/fleet.md",
        )
    })?;
    Ok(axum::Json(f.summary()))
}

/// `GET /api/system`.
pub async fn system(
    State(s): State<AppState>,
) -> ApiResult<axum::Json<json::SystemInfo<CameraStats, MqttStatus>>> {
    let st = s.clone();
    let (db, people, samples) = blocking(move || {
        let g = gallery(&st);
        let people = g.people()?;
        let samples = people
            .iter()
            .map(|p| (p.positive_samples + p.negative_samples) as usize)
            .sum();
        Ok((g.db_path().to_owned(), people.len(), samples))
    })
    .await?;
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let disk = disk_space(dir);
    Ok(axum::Json(json::SystemInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        load: load_avg(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        temperature_c: temperature_c(),
        disk_total_bytes: disk.map(|d| d.0),
        disk_free_bytes: disk.map(|d| d.1),
        db_bytes: size(&db) + size(std::path::Path::new(&wal)),
        people,
        samples,
        cameras: s.deps.live.stats(),
        mqtt: s.deps.live.mqtt(),
        storage_full_since: s
            .deps
            .storage
            .as_ref()
            .and_then(|h| h.full_since())
            .map(crate::base::rfc3339_utc),
        precision: s.deps.precision.precision.as_str().to_string(),
        precision_reason: s.deps.precision.reason.clone(),
    }))
}
