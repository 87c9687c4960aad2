//! `faced run`'s `/metrics` (docs/metrics.md): which parts of the daemon report to the scrape.
//! Each source is read only when Prometheus scrapes; none adds work to the frame path.

use std::sync::{Arc, Mutex};

use faced::metrics::Metrics;

/// The running daemon's parts, as `/metrics` reads them.
pub struct Parts<'a> {
    pub pipeline: &'a faced::pipeline::Handle,
    pub writer: &'a faced::events::store::EventWriter,
    pub gallery: &'a Arc<Mutex<faced::gallery::Gallery>>,
    pub mqtt: &'a faced::mqtt::MqttHandle,
    pub db: &'a std::path::Path,
    pub visitors: Option<&'a Arc<faced::visitors::Visitors>>,
    pub fleet: Option<&'a Arc<faced::fleet::FleetStats>>,
}

/// The daemon's metrics: the process and board, then every part that runs.
pub fn sources(p: Parts<'_>) -> Arc<Metrics> {
    let m = Metrics::new();
    m.add(Arc::new(p.pipeline.clone()));
    m.add(p.writer.counts());
    m.add(p.writer.health());
    m.add(p.gallery.clone());
    if p.mqtt.is_enabled() {
        m.add(Arc::new(faced::mqtt::MqttMetrics::new(
            p.mqtt.clone(),
            p.db,
        )));
    }
    if let Some(v) = p.visitors {
        m.add(v.clone());
    }
    if let Some(f) = p.fleet {
        m.add(f.clone());
    }
    m
}
