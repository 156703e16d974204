//! A strict parser of the Prometheus text exposition format (0.0.4), enough to compare
//! what Envoy's `/stats/prometheus` and `writ serve`'s `/metrics` print: `# HELP` and
//! `# TYPE` lines, and samples `name{label="value",…} value [timestamp]` with the
//! format's escapes. Any other line is an error, so a host printing something a real
//! Prometheus would reject fails the test that reads it.

use std::collections::BTreeMap;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The series in writ's label convention with labels sorted: `family;a=1;b=2`.
    pub fn key(&self) -> String {
        let mut out = self.name.clone();
        for (k, v) in &self.labels {
            out.push_str(&format!(";{k}={v}"));
        }
        out
    }
}

/// A whole page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// family → `# TYPE` word.
    pub types: BTreeMap<String, String>,
    /// family → `# HELP` text.
    pub helps: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the series `spec` (`family;label=value;…`, any label order, exactly
    /// those labels), if printed.
    pub fn value(&self, spec: &str) -> Option<f64> {
        let want = series_key(spec);
        self.samples
            .iter()
            .find(|s| s.key() == want)
            .map(|s| s.value)
    }
}

impl Exposition {
    /// The sum over the series of `spec`'s family that carry at least `spec`'s labels
    /// (`None` when there is none).
    pub fn sum_matching(&self, spec: &str) -> Option<f64> {
        let mut parts = spec.split(';');
        let family = parts.next().unwrap_or_default();
        let want: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.name == family)
            .filter(|s| {
                want.iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }
}

/// `spec` with its labels sorted, comparable with [`Sample::key`].
pub fn series_key(spec: &str) -> String {
    let mut parts = spec.split(';');
    let family = parts.next().unwrap_or_default().to_string();
    let labels: BTreeMap<&str, &str> = parts.filter_map(|p| p.split_once('=')).collect();
    let mut out = family;
    for (k, v) in labels {
        out.push_str(&format!(";{k}={v}"));
    }
    out
}

fn is_name_char(c: char, first: bool, colon: bool) -> bool {
    c == '_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit()) || (colon && c == ':')
}

/// Reads a name at the start of `s`; returns it and the rest.
fn name(s: &str, colon: bool) -> Result<(&str, &str), String> {
    let end = s
        .char_indices()
        .find(|(i, c)| !is_name_char(*c, *i == 0, colon))
        .map_or(s.len(), |(i, _)| i);
    if end == 0 {
        return Err(format!("expected a name at `{s}`"));
    }
    Ok((&s[..end], &s[end..]))
}

/// Reads `{k="v",…}` (the brace already consumed); returns the labels and the rest.
fn labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((out, rest));
        }
        let (k, rest) = name(s, false)?;
        let rest = rest
            .strip_prefix("=\"")
            .ok_or_else(|| format!("expected =\" after label `{k}`"))?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label `{k}`")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in label `{k}`")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if out.insert(k.to_string(), value).is_some() {
            return Err(format!("label `{k}` twice"));
        }
        s = rest[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected , or }} at `{s}`"));
        }
    }
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("`{s}` is not a number")),
    }
}

/// Parses a page; the error names the line.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", n + 1);
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let rest = rest.trim_start();
            if let Some(rest) = rest.strip_prefix("TYPE ") {
                let (family, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE".into()))?;
                let kind = kind.trim();
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(at(format!("unknown type `{kind}`")));
                }
                if out.types.insert(family.into(), kind.into()).is_some() {
                    return Err(at(format!("second TYPE of `{family}`")));
                }
            } else if let Some(rest) = rest.strip_prefix("HELP ") {
                let (family, help) = rest.split_once(' ').unwrap_or((rest, ""));
                out.helps.insert(family.into(), help.into());
            }
            continue; // other comments are allowed
        }
        let (metric, rest) = name(line, true).map_err(at)?;
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(rest) => labels(rest).map_err(at)?,
            None => (BTreeMap::new(), rest),
        };
        let mut fields = rest.split_whitespace();
        let value = number(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp `{ts}`")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        out.samples.push(Sample {
            name: metric.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}

#[test]
fn parses_labels_escapes_and_refuses_garbage() {
    let page = parse(
        "# HELP a_total Things.\n# TYPE a_total counter\n\
         a_total{clause=\"AIP-1.2\",note=\"q\\\"\\\\\\n\"} 3\nb 1.5e3 1700000000\n",
    )
    .unwrap();
    assert_eq!(page.types["a_total"], "counter");
    assert_eq!(page.helps["a_total"], "Things.");
    assert_eq!(page.samples[0].labels["note"], "q\"\\\n");
    assert_eq!(page.value("a_total;note=q\"\\\n;clause=AIP-1.2"), Some(3.0));
    assert_eq!(page.value("b"), Some(1500.0));
    assert_eq!(page.value("a_total"), None);
    for bad in ["a{x=\"1} 2", "a{x=1} 2", "a 1 2 3", "{x=\"1\"} 2", "a x"] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}
