//! The gallery's figures for `/metrics` (docs/metrics.md): people and samples in the in-memory
//! index, read at scrape time under the gallery's mutex (held for two counts; the vision thread
//! takes the same mutex per frame only to search).

use std::sync::Mutex;

use super::Gallery;
use crate::metrics::{Scrape, Source};

impl Source for Mutex<Gallery> {
    fn collect(&self, out: &mut Scrape) {
        let (people, samples) = {
            let g = self.lock().unwrap_or_else(|p| p.into_inner());
            (g.index().people_len(), g.index().len())
        };
        out.gauge(
            "faced_gallery_people",
            "People in the gallery.",
            &[],
            people as f64,
        );
        out.gauge(
            "faced_gallery_samples",
            "Face samples in the gallery (positive and negative).",
            &[],
            samples as f64,
        );
    }
}
