//! Component counters and the Prometheus text rendering behind `GET /metrics`.
//!
//! Names follow one scheme for every component (after Vector's instrumentation spec):
//! `sessiontrail_component_received_events_total`, `..._sent_events_total`,
//! `..._dead_lettered_events_total`, `..._discarded_events_total`, `..._errors_total{kind}`.
//! Components add their own series through [`MetricsRegistry::counter`] and
//! [`MetricsRegistry::gauge`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default, Debug)]
pub struct ComponentMetrics {
    pub received_events: AtomicU64,
    pub received_bytes: AtomicU64,
    pub sent_events: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub dead_lettered_events: AtomicU64,
    pub discarded_events: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl ComponentMetrics {
    pub fn add_received(&self, events: u64, bytes: u64) {
        self.received_events.fetch_add(events, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Counts a batch of events in (their number and their size as read).
    pub fn add_received_batch(&self, events: &[crate::event::Event]) {
        let bytes: usize = events.iter().map(|e| e.meta.byte_size).sum();
        self.add_received(events.len() as u64, bytes as u64);
    }
    pub fn add_sent(&self, events: u64, bytes: u64) {
        self.sent_events.fetch_add(events, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn add_dead_lettered(&self, events: u64) {
        self.dead_lettered_events
            .fetch_add(events, Ordering::Relaxed);
    }
    pub fn add_discarded(&self, events: u64) {
        self.discarded_events.fetch_add(events, Ordering::Relaxed);
    }
    /// Counts one error of `kind` (a short stable identifier such as `invalid_json`).
    pub fn add_error(&self, kind: &str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind.to_string()).or_default() += 1;
        }
    }
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

type Labels = Vec<(String, String)>;
type GaugeFn = Box<dyn Fn() -> f64 + Send + Sync>;
/// Series of one metric name: label set and its value.
type Series<T> = Vec<(Labels, Arc<T>)>;
/// How a standard component counter is named, described and read.
type StandardCounter = (&'static str, &'static str, fn(&ComponentMetrics) -> u64);

/// All metrics of one running pipeline.
#[derive(Default)]
pub struct MetricsRegistry {
    components: Mutex<Vec<(String, String, Arc<ComponentMetrics>)>>,
    counters: Mutex<BTreeMap<String, Series<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Series<AtomicI64>>>,
    gauge_fns: Mutex<Vec<(String, Labels, GaugeFn)>>,
    help: Mutex<BTreeMap<String, String>>,
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl MetricsRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The standard counters of one component (created once per component name).
    pub fn component(&self, name: &str, kind: &str) -> Arc<ComponentMetrics> {
        let mut comps = self.components.lock().expect("metrics lock");
        if let Some((_, _, m)) = comps.iter().find(|(n, _, _)| n == name) {
            return Arc::clone(m);
        }
        let m = Arc::new(ComponentMetrics::default());
        comps.push((name.to_string(), kind.to_string(), Arc::clone(&m)));
        m
    }

    /// A component-specific counter, e.g. `("sessiontrail_redactions_total", [("detector","jwt")])`.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<AtomicU64> {
        self.set_help(name, help);
        let labels = owned(labels);
        let mut counters = self.counters.lock().expect("metrics lock");
        let series = counters.entry(name.to_string()).or_default();
        if let Some((_, c)) = series.iter().find(|(l, _)| *l == labels) {
            return Arc::clone(c);
        }
        let c = Arc::new(AtomicU64::new(0));
        series.push((labels, Arc::clone(&c)));
        c
    }

    /// A component-specific gauge that the component sets.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<AtomicI64> {
        self.set_help(name, help);
        let labels = owned(labels);
        let mut gauges = self.gauges.lock().expect("metrics lock");
        let series = gauges.entry(name.to_string()).or_default();
        if let Some((_, g)) = series.iter().find(|(l, _)| *l == labels) {
            return Arc::clone(g);
        }
        let g = Arc::new(AtomicI64::new(0));
        series.push((labels, Arc::clone(&g)));
        g
    }

    /// A gauge computed when `/metrics` is scraped (channel fill, open sessions...).
    pub fn gauge_fn(&self, name: &str, help: &str, labels: &[(&str, &str)], f: GaugeFn) {
        self.set_help(name, help);
        self.gauge_fns
            .lock()
            .expect("metrics lock")
            .push((name.to_string(), owned(labels), f));
    }

    fn set_help(&self, name: &str, help: &str) {
        if let Ok(mut h) = self.help.lock() {
            h.entry(name.to_string())
                .or_insert_with(|| help.to_string());
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let comps = self.components.lock().expect("metrics lock").clone();
        let standard: [StandardCounter; 6] = [
            (
                "sessiontrail_component_received_events_total",
                "Events received by the component.",
                |m| m.received_events.load(Ordering::Relaxed),
            ),
            (
                "sessiontrail_component_received_bytes_total",
                "Bytes received by the component (as read).",
                |m| m.received_bytes.load(Ordering::Relaxed),
            ),
            (
                "sessiontrail_component_sent_events_total",
                "Events sent downstream or delivered by the component.",
                |m| m.sent_events.load(Ordering::Relaxed),
            ),
            (
                "sessiontrail_component_sent_bytes_total",
                "Bytes sent or delivered by the component.",
                |m| m.sent_bytes.load(Ordering::Relaxed),
            ),
            (
                "sessiontrail_component_dead_lettered_events_total",
                "Events sent to the component's .dropped output.",
                |m| m.dead_lettered_events.load(Ordering::Relaxed),
            ),
            (
                "sessiontrail_component_discarded_events_total",
                "Events dropped on purpose (filtered, duplicates).",
                |m| m.discarded_events.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in standard {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (cname, kind, m) in &comps {
                let _ = writeln!(
                    out,
                    "{name}{{component=\"{}\",component_type=\"{}\"}} {}",
                    escape(cname),
                    escape(kind),
                    get(m)
                );
            }
        }
        let name = "sessiontrail_component_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Errors by component and kind.\n# TYPE {name} counter"
        );
        for (cname, kind, m) in &comps {
            for (err, n) in m.errors() {
                let _ = writeln!(
                    out,
                    "{name}{{component=\"{}\",component_type=\"{}\",error_kind=\"{}\"}} {n}",
                    escape(cname),
                    escape(kind),
                    escape(&err)
                );
            }
        }
        let help = self.help.lock().map(|h| h.clone()).unwrap_or_default();
        for (name, series) in self.counters.lock().expect("metrics lock").iter() {
            header(&mut out, name, help.get(name), "counter");
            for (labels, c) in series {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    fmt_labels(labels),
                    c.load(Ordering::Relaxed)
                );
            }
        }
        for (name, series) in self.gauges.lock().expect("metrics lock").iter() {
            header(&mut out, name, help.get(name), "gauge");
            for (labels, g) in series {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    fmt_labels(labels),
                    g.load(Ordering::Relaxed)
                );
            }
        }
        let mut last = String::new();
        for (name, labels, f) in self.gauge_fns.lock().expect("metrics lock").iter() {
            if *name != last {
                header(&mut out, name, help.get(name), "gauge");
                last = name.clone();
            }
            let _ = writeln!(out, "{name}{} {}", fmt_labels(labels), f());
        }
        out
    }
}

fn header(out: &mut String, name: &str, help: Option<&String>, kind: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}\n# TYPE {name} {kind}",
        help.map(String::as_str).unwrap_or("")
    );
}

fn fmt_labels(labels: &Labels) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_component_and_custom_series() {
        let reg = MetricsRegistry::new();
        let m = reg.component("in", "stdin");
        m.add_received(3, 30);
        m.add_error("invalid_json");
        reg.counter(
            "sessiontrail_redactions_total",
            "Redactions.",
            &[("detector", "jwt")],
        )
        .fetch_add(2, Ordering::Relaxed);
        let text = reg.render();
        assert!(text.contains(
            "sessiontrail_component_received_events_total{component=\"in\",component_type=\"stdin\"} 3"
        ));
        assert!(text.contains("error_kind=\"invalid_json\"} 1"));
        assert!(text.contains("sessiontrail_redactions_total{detector=\"jwt\"} 2"));
    }
}
