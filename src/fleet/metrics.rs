//! The fleet's figures for `/metrics` (docs/metrics.md), read at scrape time from
//! [`FleetStats`]: the connection, whether this unit is in sync with the site, the records
//! exchanged, and per other unit whether it is online, how many people it holds against this
//! unit (the record lag) and how long ago it was last heard from.

use std::sync::atomic::Ordering;

use super::FleetStats;
use crate::metrics::{Scrape, Source};

impl Source for FleetStats {
    fn collect(&self, out: &mut Scrape) {
        let s = self.summary();
        let flag = |b: bool| f64::from(u8::from(b));
        out.gauge(
            "faced_fleet_connected",
            "1 while the fleet's broker connection is up, else 0.",
            &[],
            flag(self.connected.load(Ordering::Relaxed)),
        );
        out.gauge(
            "faced_fleet_in_sync",
            "1 when connected, caught up and every online unit holds the same gallery, else 0.",
            &[],
            flag(s.state == "in_sync"),
        );
        out.gauge(
            "faced_fleet_people",
            "People in this unit's gallery at the last fleet status.",
            &[],
            s.people as f64,
        );
        for (name, help, v) in [
            (
                "faced_fleet_records_applied",
                "Records from other units merged into this gallery with a change.",
                s.applied,
            ),
            (
                "faced_fleet_records_published",
                "Records this unit published.",
                s.published,
            ),
            (
                "faced_fleet_messages_refused",
                "Fleet messages refused (not sealed with the site key, malformed).",
                s.refused,
            ),
        ] {
            out.counter(name, help, &[], v as f64);
        }
        let now_ms = crate::base::unix_ms(std::time::SystemTime::now());
        for u in &s.units {
            let unit: &[(&'static str, &str)] = &[("unit", &u.device)];
            out.gauge(
                "faced_fleet_unit_online",
                "1 while another unit of the site is connected, else 0.",
                unit,
                flag(u.online),
            );
            out.gauge(
                "faced_fleet_unit_same_gallery",
                "1 when another unit's gallery digest equals this unit's, else 0.",
                unit,
                flag(u.same_gallery),
            );
            out.gauge(
                "faced_fleet_unit_people_lag",
                "People this unit holds minus those another unit holds (the record lag).",
                unit,
                s.people as f64 - u.people as f64,
            );
            out.gauge(
                "faced_fleet_unit_last_seen_seconds",
                "Seconds since another unit's last status.",
                unit,
                (now_ms.saturating_sub(u.last_seen_ms)).max(0) as f64 / 1000.0,
            );
        }
    }
}
