//! Prometheus text exposition of the filter's metrics.

use crate::abi::MetricKind;
use crate::shared::{HISTOGRAM_BUCKETS, MetricValue};
use std::fmt::Write;

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Renders metrics in the Prometheus text format (version 0.0.4).
pub fn render(metrics: &[MetricValue]) -> String {
    let mut out = String::new();
    for m in metrics {
        let name = sanitize(&m.name);
        let _ = match m.kind {
            MetricKind::Counter => writeln!(out, "# TYPE {name} counter\n{name} {}", m.value),
            MetricKind::Gauge => writeln!(out, "# TYPE {name} gauge\n{name} {}", m.value),
            MetricKind::Histogram => {
                let _ = writeln!(out, "# TYPE {name} histogram");
                let buckets = m.buckets.clone().unwrap_or_default();
                for (bound, count) in HISTOGRAM_BUCKETS.iter().zip(&buckets) {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
                }
                writeln!(
                    out,
                    "{name}_bucket{{le=\"+Inf\"}} {}\n{name}_sum {}\n{name}_count {}",
                    m.value,
                    m.sum.unwrap_or(0),
                    m.value
                )
            }
        };
    }
    out
}
