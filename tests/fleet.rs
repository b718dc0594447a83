//! The fleet's YAML files in `docs/` (see `docs/fleet.md`): they parse, every metric they name
//! is one poolwarden exports, and their scale-down behavior mirrors `gradual-lru` in
//! `config/default.toml` (one pod per `step`, a stabilization window of `idle`).

use std::collections::BTreeSet;
use std::path::Path;

use poolwarden::config::{Config, PolicyRegistry};
use poolwarden::metrics::{MetricKind, METRICS};
use poolwarden::policies::GradualLruConfig;
use serde_yaml_ng::Value;

const FILES: [&str; 2] = ["docs/keda-scaledobject.yaml", "docs/hpa-behavior.yaml"];

fn load(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every string in `value`, keys included.
fn strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Sequence(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Mapping(map) => {
            for (k, v) in map {
                strings(k, out);
                strings(v, out);
            }
        }
        Value::Tagged(tagged) => strings(&tagged.value, out),
        _ => {}
    }
}

/// The `poolwarden_*` names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("poolwarden_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// Whether `name` is an exported metric, or a series of an exported histogram
/// (`_bucket`, `_sum`, `_count`).
fn exported(name: &str) -> bool {
    METRICS.iter().any(|m| {
        m.name == name
            || (m.kind == MetricKind::Histogram
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(m.name)))
    })
}

#[test]
fn every_metric_the_yaml_names_is_exported() {
    let mut named = BTreeSet::new();
    for file in FILES {
        let value = load(file);
        let mut texts = Vec::new();
        strings(&value, &mut texts);
        let names: Vec<String> = texts.iter().flat_map(|t| metric_names(t)).collect();
        assert!(!names.is_empty(), "{file} names no metric");
        for name in names {
            assert!(
                exported(&name),
                "{file} names `{name}`, which poolwarden does not export"
            );
            named.insert(name);
        }
    }
    // The scale-up signals of the issue are used.
    assert!(named.contains("poolwarden_waiting"), "{named:?}");
    assert!(
        named.contains("poolwarden_acquire_wait_seconds_bucket"),
        "{named:?}"
    );
    // The scale-to-zero signal is the request rate.
    assert!(named.contains("poolwarden_requests_total"), "{named:?}");
}

#[test]
fn a_name_that_is_not_exported_is_caught() {
    assert!(exported("poolwarden_waiting"));
    assert!(exported("poolwarden_spawn_seconds_bucket"));
    assert!(
        !exported("poolwarden_waiting_bucket"),
        "a gauge has no buckets"
    );
    assert!(!exported("poolwarden_queue_length"));
    assert_eq!(
        metric_names("sum(rate(poolwarden_x_count[5m])) / poolwarden_y"),
        ["poolwarden_x_count", "poolwarden_y"]
    );
}

/// The scale-down block of a file: the HPA's own, or KEDA's under `advanced`.
fn scale_down(file: &str) -> Value {
    let value = load(file);
    let spec = &value["spec"];
    let behavior = if spec["behavior"].is_mapping() {
        &spec["behavior"]
    } else {
        &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    };
    behavior["scaleDown"].clone()
}

#[test]
fn the_scale_down_mirrors_gradual_lru_of_the_default_config() {
    let registry = PolicyRegistry::new();
    let config = Config::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"),
        &registry,
    )
    .unwrap();
    assert_eq!(config.policy.kind, "gradual-lru");
    let lru: GradualLruConfig = toml::Value::Table(config.policy.params.clone())
        .try_into()
        .unwrap();
    for file in FILES {
        let down = scale_down(file);
        assert_eq!(
            down["stabilizationWindowSeconds"].as_u64(),
            Some(lru.idle.as_secs()),
            "{file}: the window is gradual-lru's idle"
        );
        let policies = down["policies"].as_sequence().expect("scale-down policies");
        assert_eq!(policies.len(), 1, "{file}");
        assert_eq!(policies[0]["type"].as_str(), Some("Pods"), "{file}");
        assert_eq!(
            policies[0]["value"].as_u64(),
            Some(1),
            "{file}: one pod per step"
        );
        assert_eq!(
            policies[0]["periodSeconds"].as_u64(),
            Some(lru.step.as_secs()),
            "{file}: the period is gradual-lru's step"
        );
    }
    let keda = load(FILES[0]);
    assert_eq!(keda["kind"].as_str(), Some("ScaledObject"));
    assert_eq!(
        keda["spec"]["minReplicaCount"].as_u64(),
        Some(0),
        "scales to zero"
    );
    let triggers = keda["spec"]["triggers"].as_sequence().unwrap();
    assert!(triggers
        .iter()
        .all(|t| t["type"].as_str() == Some("prometheus")));
    let hpa = load(FILES[1]);
    assert_eq!(hpa["kind"].as_str(), Some("HorizontalPodAutoscaler"));
}
