//! The audit trail as CSV (`GET /api/audit.csv`, `faced audit export --csv`): RFC 4180 quoting,
//! and no cell a spreadsheet would run as a formula.

use super::Row;

/// The header line's columns.
pub const COLUMNS: &str =
    "id,time_utc,ts_ms,actor_kind,actor,origin,action,subject_kind,subject_id,subject_name,detail";

/// One cell: quoted when it holds a comma, quote or line break; a cell starting with `=`, `+`,
/// `-`, `@` (or a tab or carriage return, which some spreadsheets skip before one of those) is
/// prefixed with `'`, so an actor or a name like `=HYPERLINK(…)` stays text.
pub fn cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// `rows` as a CSV document with a header line.
pub fn to_csv(rows: &[Row]) -> String {
    let mut out = String::with_capacity(64 + rows.len() * 160);
    out.push_str(COLUMNS);
    out.push('\n');
    for r in rows {
        let cells = [
            r.id.to_string(),
            cell(&r.at),
            r.at_ms.to_string(),
            cell(&r.actor_kind),
            cell(&r.actor),
            cell(&r.origin),
            cell(&r.action),
            cell(&r.subject_kind),
            cell(r.subject_id.as_deref().unwrap_or("")),
            cell(r.subject_name.as_deref().unwrap_or("")),
            cell(&r.detail),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}
