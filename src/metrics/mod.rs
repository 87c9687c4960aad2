//! Prometheus metrics: what `GET /metrics` answers, in the OpenMetrics text format
//! (docs/metrics.md lists every metric).
//!
//! * Most figures are read at scrape time from counters the daemon keeps anyway (the frame
//!   slot's, the MQTT thread's, the fleet's, the gallery index): each module implements
//!   [`Source`] for its own state, and `faced run` adds those sources to one [`Metrics`]. A
//!   scrape runs on a blocking thread of the console's runtime and never on the frame path.
//! * What only the frame path can see (stage latencies, faces per frame) is observed there into
//!   prometheus-client [`Histogram`]s, created with this module's bucket sets; observing one is
//!   an uncontended lock and a scan of a dozen bounds (cost: docs/metrics.md, "Cost").
//! * [`system`] reads the process (CPU, memory, open files) and the board (SoC temperature,
//!   the Raspberry Pi firmware's throttling flags); a figure the machine does not have is left
//!   out, never reported as 0.
//!
//! Invariants: metric names are fixed strings (`faced_…`, `process_…`); label values come from
//! the configuration (camera names) or small fixed sets, never from what a camera sees (no
//! person names: a scrape must not leak who was recognised).

pub mod system;

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
pub use prometheus_client::metrics::histogram::Histogram;

/// The `Content-Type` of a scrape's answer.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bounds for latencies on the frame path and over the network, seconds: 1 ms to 10 s in a
/// 1-2.5-5 series, wide enough for a desktop's 5 ms detection and a loaded Pi's 2 s frame.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Bounds for the time from a face's first detection to its `recognized` event, seconds.
pub const RECOGNITION_BUCKETS: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Bounds for the number of faces a detection pass finds.
pub const FACES_BUCKETS: [f64; 8] = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0];

/// A latency histogram ([`LATENCY_BUCKETS`]).
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Something that reports figures at scrape time. `collect` must be quick and must not fail: a
/// figure that cannot be read now is left out of this scrape.
pub trait Source: Send + Sync {
    /// Adds this source's figures to `out`.
    fn collect(&self, out: &mut Scrape);
}

impl<T: Source + ?Sized> Source for Arc<T> {
    fn collect(&self, out: &mut Scrape) {
        (**self).collect(out)
    }
}

/// A metric's labels: `(name, value)` pairs.
pub type Labels<'a> = &'a [(&'static str, &'a str)];

#[derive(Debug)]
enum Value {
    Number(f64),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

/// The figures of one scrape, grouped by metric (samples of one metric may come from several
/// sources and are written together, as OpenMetrics requires).
#[derive(Debug, Default)]
pub struct Scrape {
    families: Vec<Family>,
}

impl Scrape {
    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: Labels,
        v: Value,
    ) {
        let labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        match self.families.iter_mut().find(|f| f.name == name) {
            Some(f) => {
                debug_assert_eq!(f.kind.as_str(), kind.as_str(), "{name} has two types");
                f.samples.push((labels, v));
            }
            None => self.families.push(Family {
                name,
                help,
                kind,
                samples: vec![(labels, v)],
            }),
        }
    }

    /// A counter (monotonic since the process started). `name` without `_total`: the encoder
    /// adds it.
    pub fn counter(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.push(name, help, MetricType::Counter, labels, Value::Number(v));
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, labels: Labels, v: f64) {
        self.push(name, help, MetricType::Gauge, labels, Value::Number(v));
    }

    /// A histogram, read as it stands now.
    pub fn histogram(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: Labels,
        h: &Histogram,
    ) {
        self.push(
            name,
            help,
            MetricType::Histogram,
            labels,
            Value::Histogram(h.clone()),
        );
    }

    /// The metric names gathered so far (tests, docs).
    pub fn names(&self) -> Vec<&'static str> {
        self.families.iter().map(|f| f.name).collect()
    }

    /// These figures in the OpenMetrics text format, ending with `# EOF`.
    pub fn render(self) -> String {
        let mut reg = prometheus_client::registry::Registry::default();
        reg.register_collector(Box::new(self));
        let mut text = String::new();
        // Writing to a String fails only if an encoder does, and ours do not.
        if prometheus_client::encoding::text::encode(&mut text, &reg).is_err() {
            tracing::error!("cannot encode the metrics (bug)");
        }
        text
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        for f in &self.families {
            let mut family = encoder.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.samples {
                let mut m = family.encode_family(labels)?;
                match v {
                    Value::Number(n) if matches!(f.kind, MetricType::Counter) => {
                        m.encode_counter::<NoLabelSet, _, f64>(n, None)?
                    }
                    Value::Number(n) => m.encode_gauge(n)?,
                    Value::Histogram(h) => h.encode(m)?,
                }
            }
        }
        Ok(())
    }
}

/// The daemon's metrics: the sources a scrape reads. Cheap to share (`Arc`).
pub struct Metrics {
    sources: Mutex<Vec<Arc<dyn Source>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Metrics with the process and board figures ([`system::System`]) and nothing else yet.
    pub fn new() -> Arc<Metrics> {
        let m = Metrics {
            sources: Mutex::new(Vec::new()),
        };
        m.add(Arc::new(system::System::new()));
        Arc::new(m)
    }

    /// Adds a source, read at every scrape from now on.
    pub fn add(&self, source: Arc<dyn Source>) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    /// Every source's figures.
    pub fn gather(&self) -> Scrape {
        // Not under the lock: a source may take its own locks (the gallery's).
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Scrape::default();
        for s in &sources {
            s.collect(&mut out);
        }
        out
    }

    /// A scrape's answer: every source's figures in the OpenMetrics text format, ending with
    /// `# EOF`.
    pub fn render(&self) -> String {
        self.gather().render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Source for Fixed {
        fn collect(&self, out: &mut Scrape) {
            out.counter("faced_things", "Things.", &[("camera", "door")], 3.0);
            out.gauge("faced_level", "A level.", &[], 0.5);
            out.counter("faced_things", "Things.", &[("camera", "yard")], 4.0);
        }
    }

    #[test]
    fn samples_of_one_metric_are_written_together_in_openmetrics() {
        let m = Metrics {
            sources: Mutex::new(Vec::new()),
        };
        m.add(Arc::new(Fixed));
        let h = latency_histogram();
        h.observe(0.003);
        h.observe(0.2);
        struct Hist(Histogram);
        impl Source for Hist {
            fn collect(&self, out: &mut Scrape) {
                out.histogram(
                    "faced_frame_seconds",
                    "Frame.",
                    &[("camera", "door")],
                    &self.0,
                );
            }
        }
        m.add(Arc::new(Hist(h)));
        let text = m.render();
        let want = "# HELP faced_things Things.\n# TYPE faced_things counter\n\
                    faced_things_total{camera=\"door\"} 3.0\n\
                    faced_things_total{camera=\"yard\"} 4.0\n\
                    # HELP faced_level A level.\n# TYPE faced_level gauge\nfaced_level 0.5\n";
        assert!(text.starts_with(want), "{text}");
        assert!(
            text.contains("faced_frame_seconds_bucket{le=\"0.005\",camera=\"door\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("faced_frame_seconds_count{camera=\"door\"} 2\n"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
