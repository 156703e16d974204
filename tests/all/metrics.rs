//! Issue 13 §2: Prometheus metrics with labels, the same in both hosts.
//!
//! One policy runs in real Envoy (configured by `writ envoy`, whose `stats_tags` turn the
//! label convention into tags) and in `writ serve`. Each page is parsed as the Prometheus
//! text format and compared: before any request every series the policy can produce is
//! there at its start value (zero, or the assumed rate), exactly those series; then the
//! same requests move the same series by the same amounts in both hosts, and the `team`
//! label, capped at two values, sends the third team to `other`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use writ_plugin::metrics::{self, IdentityLabels};
use writ_plugin::store::MemoryStore;

use crate::support::cases::Gateway;
use crate::support::exposition::{Exposition, series_key};
use crate::support::hosts::{HostKind, Options, WritGateway, build_policy};
use crate::support::http::{Request, Response, send};
use crate::support::python;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::workspace_root;

const POLICY: &str = r#"# Metrics end-to-end test: one series of every family.
policy "metrics-test" version "0.1.0" {
  owner       "security@example.com"
  implements  "ai-policy.md"
  currency    EUR
}

workflow "support" {
  match header "x-workflow" == "support"
  oversight HOTL below 0.70
  assume verification_rate <= 10%
  identify team by header "x-team", user by header "x-user"
}

price "gpt-4o-mini" input 100 EUR output 100 EUR per 1M tokens

rule AIP-3.1 "Only approved models" {
  on request
  when model not in ["gpt-4o-mini"]
  then deny 403 "Model not approved."
}

rule AIP-2.4 "No credentials in prompts" {
  on request
  when prompt has secret
  then deny 400 "Remove credentials."
  enforcement monitor
}

rule AIP-4.1 "Cost centre" {
  on request
  when workflow == "support"
  then tag "cost-center" = "customer-support"
}

rule AIP-4.2 "Daily team budget" {
  on request
  when spend(team, day) > 1000 EUR
  then deny 429 "Daily AI budget reached."
  alert at 80%
}

rule AIP-5.1 "Low-confidence answers go to a human" {
  on response
  when confidence(header "x-model-confidence") < 0.70
  then escalate "support-review" reason "low confidence"
}

kill_switch AIP-6.1 {
  admin path "/writ/admin/kill-switch"
  token sha256 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
}
"#;

/// The operator token whose sha256 the policy holds.
const KILL_TOKEN: &str = "test";
/// The `team` label's cap in this test.
const TEAM_MAX: u32 = 2;
/// [`Reply::chat`]'s usage: 15 tokens at 100 EUR per million.
const COST_MICROS: f64 = 1500.0;
const T: Duration = Duration::from_secs(20);

fn build(dir: &Path) -> PathBuf {
    let source = dir.join("metrics-test.policy");
    std::fs::write(&source, POLICY).unwrap();
    std::fs::copy(
        workspace_root().join("policies/ai-policy.md"),
        dir.join("ai-policy.md"),
    )
    .unwrap();
    build_policy(&source, &dir.join("out"))
}

/// Every series the policy can produce with the team label on, and its start value,
/// from the engine's own list (keys with labels sorted, as [`Exposition`] gives them).
fn expected_at_start() -> BTreeMap<String, f64> {
    let compiled = writ_compiler::compile("metrics-test.policy", POLICY)
        .unwrap_or_else(|e| panic!("{}", e.render("metrics-test.policy", POLICY)));
    let identity = IdentityLabels {
        team: Some(TEAM_MAX),
        user: None,
    };
    metrics::startup_series(&compiled.policy, identity, &MemoryStore::new(), 0)
        .into_iter()
        .map(|s| (series_key(&s.name), s.set.unwrap_or(0) as f64))
        .collect()
}

fn chat(model: &str, team: &str) -> Request {
    let body = json!({"model": model, "max_tokens": 5,
        "messages": [{"role": "user", "content": "Summarise the ticket in one line."}]});
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support")
        .header("x-team", team)
}

fn call(gw: &WritGateway, req: &Request) -> Response {
    send(gw.addr(), req, T).unwrap_or_else(|e| panic!("[{}] request failed: {e}", gw.name()))
}

/// Reads the page until `ready` holds on it (Envoy's stats and both hosts' `on_log` trail
/// the client's answer), at most 10 s; returns the last page either way.
fn page_when(gw: &WritGateway, ready: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = gw.writ_exposition();
        if ready(&page) || Instant::now() > deadline {
            return page;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn series(page: &Exposition) -> BTreeMap<String, f64> {
    page.samples
        .iter()
        .map(|s| (s.key(), comparable(&s.name, s.value)))
        .collect()
}

/// A sample's value as two runs can agree on it: a unix time differs between them, so
/// only whether it is set is compared.
fn comparable(family: &str, value: f64) -> f64 {
    if family == metrics::REVIEW_OLDEST_PENDING.name {
        f64::from(u8::from(value > 0.0))
    } else {
        value
    }
}

/// What one host showed: the page at start and after the requests.
struct Seen {
    kind: HostKind,
    start: Exposition,
    after: Exposition,
    /// The raw page after the requests, for a second, independent parser.
    raw_after: String,
}

fn run(kind: HostKind, artifact: &Path) -> Seen {
    let upstream = Upstream::start(Reply::chat("fine"));
    let opts = Options {
        team_label_max: Some(TEAM_MAX),
        ..Options::default()
    };
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &opts)
        .unwrap_or_else(|e| panic!("[{kind:?}] cannot start: {e}"));
    let expected = expected_at_start();
    let start = page_when(&gw, |p| series(p).len() >= expected.len());

    // A deny by the model allowlist, team t1 (the first team admitted).
    let denied = call(&gw, &chat("gpt-3.5-turbo", "t1"));
    assert_eq!(denied.status, 403, "[{kind:?}] {}", denied.body_str());
    // Allowed requests of three teams: t1 and t2 keep their names, t3 is past the cap.
    for team in ["t1", "t2", "t3"] {
        let ok = call(&gw, &chat("gpt-4o-mini", team));
        assert_eq!(ok.status, 200, "[{kind:?}] {}", ok.body_str());
    }
    // The kill switch stops the workflow.
    let stop = json!({"workflow": "support", "action": "stop", "reason": "drill", "by": "oncall"});
    let admin = call(
        &gw,
        &Request::post_json("/writ/admin/kill-switch", &stop.to_string())
            .header("authorization", &format!("Bearer {KILL_TOKEN}")),
    );
    assert_eq!(admin.status, 200, "[{kind:?}] {}", admin.body_str());
    if std::env::var_os("WRIT_SHOW_METRICS").is_some() {
        let raw = gw.prometheus();
        let lines: Vec<&str> = raw.lines().filter(|l| l.contains("writ_")).collect();
        eprintln!("[{kind:?}]\n{}", lines.join("\n"));
    }
    let after = page_when(&gw, |p| {
        p.sum_matching("writ_requests_total") == Some(5.0)
            && p.value("writ_reservations_in_flight") == Some(0.0)
    });
    let raw_after = gw.prometheus();
    Seen {
        kind,
        start,
        after,
        raw_after,
    }
}

#[test]
fn labelled_series_exist_from_start_and_agree_between_envoy_and_writ_serve() {
    let dir = TempDir::new("metrics");
    let artifact = build(dir.path());
    let expected = expected_at_start();
    // The policy's series, spot-checked so the engine's list cannot silently shrink.
    for spec in [
        "writ_decisions_total;clause=AIP-3.1;action=deny;mode=enforce",
        "writ_decisions_total;clause=AIP-2.4;action=deny;mode=monitor",
        "writ_requests_total;workflow=support;outcome=denied;team=none",
        "writ_requests_total;workflow=none;outcome=allowed;team=other",
        "writ_spend_micros_total;workflow=support;team=other",
        "writ_escalations_total;workflow=support;queue=support-review",
        "writ_budget_alerts_total;clause=AIP-4.2;scope=team;window=day",
        "writ_drift_alerts_total;workflow=support",
        "writ_tags_total;key=cost-center;value=customer-support",
        "writ_kill_switch_stopped;workflow=support",
        "writ_reservations_in_flight",
    ] {
        assert_eq!(expected.get(&series_key(spec)), Some(&0.0), "{spec}");
    }
    assert_eq!(
        expected.get("writ_verification_assumed_ppm;workflow=support"),
        Some(&100_000.0)
    );

    let seen: Vec<Seen> = HostKind::BOTH.iter().map(|k| run(*k, &artifact)).collect();
    for s in &seen {
        let kind = s.kind;
        // Before any request: exactly the policy's series, at their start values.
        assert_eq!(series(&s.start), expected, "[{kind:?}] series at start");
        // Each family typed as the engine defines it.
        for f in metrics::FAMILIES {
            if s.start.samples.iter().any(|x| x.name == f.name) {
                assert_eq!(
                    s.start.types.get(f.name).map(String::as_str),
                    Some(f.kind.as_str()),
                    "[{kind:?}] TYPE of {}",
                    f.name
                );
            }
        }
        // The values moved as the requests say.
        let v = |spec: &str| s.after.value(spec);
        for (spec, want) in [
            (
                "writ_decisions_total;clause=AIP-3.1;action=deny;mode=enforce",
                1.0,
            ),
            (
                "writ_requests_total;workflow=support;outcome=denied;team=t1",
                1.0,
            ),
            (
                "writ_requests_total;workflow=support;outcome=allowed;team=t1",
                1.0,
            ),
            (
                "writ_requests_total;workflow=support;outcome=allowed;team=t2",
                1.0,
            ),
            // The third team is past the cap of two.
            (
                "writ_requests_total;workflow=support;outcome=allowed;team=other",
                1.0,
            ),
            (
                "writ_requests_total;workflow=support;outcome=admin;team=none",
                1.0,
            ),
            (
                "writ_spend_micros_total;workflow=support;team=t2",
                COST_MICROS,
            ),
            (
                "writ_spend_micros_total;workflow=support;team=other",
                COST_MICROS,
            ),
            (
                "writ_tags_total;key=cost-center;value=customer-support",
                3.0,
            ),
            ("writ_kill_switch_stopped;workflow=support", 1.0),
            ("writ_kill_switch_stopped;workflow=none", 0.0),
            ("writ_reservations_in_flight", 0.0),
            // A deny fired no other rule.
            (
                "writ_decisions_total;clause=AIP-2.4;action=deny;mode=monitor",
                0.0,
            ),
        ] {
            assert_eq!(v(spec), Some(want), "[{kind:?}] {spec}");
        }
        assert_eq!(
            v("writ_requests_total;workflow=support;outcome=allowed;team=t3"),
            None,
            "[{kind:?}] a team past the cap has no series of its own"
        );
    }
    // A real consumer reads both pages without glue: the official Python client's parser
    // accepts each page and finds exactly the writ series, labels and values ours found.
    for s in &seen {
        let theirs: BTreeMap<String, f64> =
            python::prometheus_client_samples(&s.raw_after, "writ_")
                .unwrap_or_else(|e| panic!("[{:?}] prometheus_client: {e}", s.kind))
                .into_iter()
                .map(|(name, labels, value)| {
                    let value = comparable(&name, value);
                    let key = if labels.is_empty() {
                        name
                    } else {
                        format!("{name};{labels}")
                    };
                    (key, value)
                })
                .collect();
        assert!(!theirs.is_empty(), "[{:?}] no writ series", s.kind);
        let ours = series(
            &crate::support::exposition::parse(&s.raw_after).map_or_else(
                |e| panic!("[{:?}] {e}", s.kind),
                |mut p| {
                    p.samples.retain(|x| x.name.starts_with("writ_"));
                    p
                },
            ),
        );
        assert_eq!(
            theirs, ours,
            "[{:?}] prometheus_client reads another page",
            s.kind
        );
    }
    // Both hosts: the same families, types, label sets and values.
    let [envoy, serve] = &seen[..] else {
        unreachable!()
    };
    assert_eq!(
        series(&envoy.after),
        series(&serve.after),
        "Envoy's /stats/prometheus and writ serve's /metrics differ"
    );
    assert_eq!(envoy.after.types, serve.after.types);
    // writ serve explains each family; Envoy prints no HELP of its own.
    for f in metrics::FAMILIES {
        if serve.after.types.contains_key(f.name) {
            assert_eq!(
                serve.after.helps.get(f.name).map(String::as_str),
                Some(f.help)
            );
        }
    }
}
