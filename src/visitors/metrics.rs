//! The unknown visitors' figures for `/metrics` (docs/metrics.md), from the in-memory summary
//! the MQTT visitors sensor also shows: visitors kept (live, neither merged nor erased), and of
//! those, seen today and first seen today (the unit's local day).

use super::Visitors;
use crate::metrics::{Scrape, Source};

impl Source for Visitors {
    fn collect(&self, out: &mut Scrape) {
        let s = self.summary();
        for (name, help, v) in [
            (
                "faced_visitors",
                "Unknown visitors kept (live: neither merged nor erased).",
                s.total,
            ),
            (
                "faced_visitors_today",
                "Unknown visitors seen today (the unit's local day).",
                s.today,
            ),
            (
                "faced_visitors_new_today",
                "Unknown visitors first seen today.",
                s.new_today,
            ),
        ] {
            out.gauge(name, help, &[], f64::from(v));
        }
    }
}
