//! The GenAI client metrics, aggregated in process and exported as cumulative OTLP
//! histograms: `gen_ai.client.token.usage` and `gen_ai.client.operation.duration`, with
//! the bucket boundaries the semantic conventions recommend.

use super::AttributeValue;
use opentelemetry_proto::tonic::metrics::v1 as pm;
use std::collections::BTreeMap;

/// `gen_ai.client.token.usage` buckets (semantic conventions, GenAI metrics).
pub const TOKEN_USAGE_BOUNDS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// `gen_ai.client.operation.duration` buckets, in seconds.
pub const DURATION_BOUNDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

/// Distinct attribute sets kept per instrument; past it, measurements go to one series
/// marked `otel.metric.overflow` (as the OTel SDKs do), so a client sending a new model
/// name per request cannot grow memory without bound.
pub const MAX_SERIES: usize = 1000;

/// Attributes of one series, sorted by key.
pub type SeriesKey = Vec<(&'static str, AttributeValue)>;

#[derive(Debug, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
    min: f64,
    max: f64,
}

impl Histogram {
    fn new(buckets: usize) -> Histogram {
        Histogram {
            counts: vec![0; buckets + 1],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    fn record(&mut self, bounds: &[f64], value: f64) {
        // OTLP buckets are upper-inclusive: bucket i holds (bounds[i-1], bounds[i]].
        let i = bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }
}

/// One histogram instrument and its series.
#[derive(Debug)]
pub struct Instrument {
    name: &'static str,
    description: &'static str,
    unit: &'static str,
    bounds: &'static [f64],
    series: BTreeMap<SeriesKey, Histogram>,
}

impl Instrument {
    fn new(
        name: &'static str,
        description: &'static str,
        unit: &'static str,
        bounds: &'static [f64],
    ) -> Instrument {
        Instrument {
            name,
            description,
            unit,
            bounds,
            series: BTreeMap::new(),
        }
    }

    /// Records one measurement under `key` (sorted here).
    pub fn record(&mut self, mut key: SeriesKey, value: f64) {
        key.sort_by(|a, b| a.0.cmp(b.0));
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            key = vec![("otel.metric.overflow", AttributeValue::Bool(true))];
        }
        let bounds = self.bounds;
        self.series
            .entry(key)
            .or_insert_with(|| Histogram::new(bounds.len()))
            .record(bounds, value);
    }

    /// Distinct attribute sets recorded so far.
    #[cfg(test)]
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    fn to_proto(&self, start: u64, now: u64) -> Option<pm::Metric> {
        if self.series.is_empty() {
            return None;
        }
        let data_points = self
            .series
            .iter()
            .map(|(key, h)| pm::HistogramDataPoint {
                attributes: key
                    .iter()
                    .map(|(k, v)| super::key_value(k, v.clone()))
                    .collect(),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: h.count,
                sum: Some(h.sum),
                bucket_counts: h.counts.clone(),
                explicit_bounds: self.bounds.to_vec(),
                min: Some(h.min),
                max: Some(h.max),
                ..Default::default()
            })
            .collect();
        Some(pm::Metric {
            name: self.name.to_string(),
            description: self.description.to_string(),
            unit: self.unit.to_string(),
            data: Some(pm::metric::Data::Histogram(pm::Histogram {
                data_points,
                aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        })
    }
}

/// Every instrument the gateway records.
#[derive(Debug)]
pub struct Metrics {
    /// `gen_ai.client.token.usage`, `{token}`.
    pub token_usage: Instrument,
    /// `gen_ai.client.operation.duration`, `s`.
    pub duration: Instrument,
    /// Whether anything was recorded since the last export.
    pub dirty: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            token_usage: Instrument::new(
                "gen_ai.client.token.usage",
                "Number of input and output tokens used.",
                "{token}",
                &TOKEN_USAGE_BOUNDS,
            ),
            duration: Instrument::new(
                "gen_ai.client.operation.duration",
                "GenAI operation duration.",
                "s",
                &DURATION_BOUNDS,
            ),
            dirty: false,
        }
    }
}

impl Metrics {
    /// The instruments as OTLP metrics, plus the count of spans dropped so far.
    pub fn to_proto(&self, start: u64, now: u64, dropped_spans: u64) -> Vec<pm::Metric> {
        let mut out: Vec<pm::Metric> = [
            self.token_usage.to_proto(start, now),
            self.duration.to_proto(start, now),
        ]
        .into_iter()
        .flatten()
        .collect();
        out.push(pm::Metric {
            name: super::DROPPED_SPANS_METRIC.to_string(),
            description: "Spans dropped because the export queue was full.".to_string(),
            unit: "{span}".to_string(),
            data: Some(pm::metric::Data::Sum(pm::Sum {
                data_points: vec![pm::NumberDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(pm::number_data_point::Value::AsInt(
                        i64::try_from(dropped_spans).unwrap_or(i64::MAX),
                    )),
                    ..Default::default()
                }],
                aggregation_temporality: pm::AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive() {
        let mut m = Metrics::default();
        for v in [1.0, 1.5, 4.0, 100_000_000.0] {
            m.token_usage.record(vec![], v);
        }
        let h = m.token_usage.series.values().next().unwrap();
        assert_eq!(h.counts.len(), TOKEN_USAGE_BOUNDS.len() + 1);
        assert_eq!(h.counts[0], 1); // 1.0
        assert_eq!(h.counts[1], 2); // 1.5, 4.0
        assert_eq!(h.counts[14], 1); // past the last bound
        assert_eq!(h.count, 4);
    }

    #[test]
    fn series_past_the_limit_overflow_into_one() {
        let mut m = Metrics::default();
        for i in 0..(MAX_SERIES + 50) {
            m.duration.record(
                vec![("gen_ai.request.model", AttributeValue::Str(format!("m{i}")))],
                0.5,
            );
        }
        assert_eq!(m.duration.series.len(), MAX_SERIES + 1);
        let overflow = vec![("otel.metric.overflow", AttributeValue::Bool(true))];
        assert_eq!(m.duration.series[&overflow].count, 50);
    }
}
