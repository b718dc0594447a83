//! A `metrics` recorder over `metrics-util`'s registry, installed once per test binary: it keeps
//! every counter, gauge and histogram value, and reading them changes nothing.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Records into a registry of atomics.
struct TestRecorder(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(Arc::clone(c)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(Arc::clone(g)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(Arc::clone(h)))
    }
}

/// The registry, the recorder installed on first use.
pub fn registry() -> &'static Arc<Registry<Key, AtomicStorage>> {
    static REGISTRY: OnceLock<Arc<Registry<Key, AtomicStorage>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let registry = Arc::new(Registry::atomic());
        metrics::set_global_recorder(TestRecorder(Arc::clone(&registry)))
            .expect("no other recorder in this binary");
        registry
    })
}

/// A metric's name and its labels, sorted.
pub type MetricId = (String, Vec<(String, String)>);

fn metric_id(key: &Key) -> MetricId {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    labels.sort();
    (key.name().to_string(), labels)
}

/// The id of metric `name` with `labels`.
pub fn id(name: &str, labels: &[(&str, &str)]) -> MetricId {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    (name.to_string(), labels)
}

/// Every series recorded so far, with its value.
#[derive(Default)]
pub struct Seen {
    pub counters: HashMap<MetricId, u64>,
    pub gauges: HashMap<MetricId, f64>,
    pub histograms: HashMap<MetricId, Vec<f64>>,
}

/// What the recorder holds now.
pub fn observe() -> Seen {
    let registry = registry();
    Seen {
        counters: registry
            .get_counter_handles()
            .into_iter()
            .map(|(k, v)| (metric_id(&k), v.load(Ordering::SeqCst)))
            .collect(),
        gauges: registry
            .get_gauge_handles()
            .into_iter()
            .map(|(k, v)| (metric_id(&k), f64::from_bits(v.load(Ordering::SeqCst))))
            .collect(),
        histograms: registry
            .get_histogram_handles()
            .into_iter()
            .map(|(k, v)| (metric_id(&k), v.data()))
            .collect(),
    }
}

impl Seen {
    /// A counter's value, if it was recorded.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.counters.get(&id(name, labels)).copied()
    }

    /// A gauge's value, if it was recorded.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.gauges.get(&id(name, labels)).copied()
    }

    /// A histogram's samples (none if it was not recorded).
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.histograms
            .get(&id(name, labels))
            .cloned()
            .unwrap_or_default()
    }
}
