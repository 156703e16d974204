//! Issue 17 §5 in Envoy: `writ envoy` turns a workflow's `fallback … to cluster …` into
//! Envoy's own retry (an aggregate cluster of the default upstream and the fallback
//! clusters, a route with a retry policy for the workflow's header), so a 5xx from the
//! primary is answered by the fallback cluster, and the filter writes one audit record
//! whose `attempts` list Envoy's attempts from its attempt count (`docs/fallback.md`).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cases::Gateway;
use crate::support::hosts::{HostKind, Options, WritGateway, build_policy};
use crate::support::http::{Request, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::workspace_root;

const POLICY: &str = r#"# Fallback clusters carried out by Envoy's router.
policy "fallback-envoy" version "0.1.0" {
  owner       "security@example.com"
  implements  "ai-policy.md"
}

workflow "support" {
  match header "x-workflow" == "support"
  fallback on 5xx, connect to cluster "backup" then reply 503 "The assistant is unavailable; try again later."
}

workflow "plain" {
  match header "x-workflow" == "plain"
}
"#;

const T: Duration = Duration::from_secs(30);

fn chat(workflow: &str, id: &str) -> Request {
    let body = json!({"model": "gpt-4o", "max_tokens": 5,
        "messages": [{"role": "user", "content": "Where is my order?"}]});
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", workflow)
        .header("x-request-id", id)
}

fn failing(status: u16) -> Reply {
    Reply::Json {
        status,
        body: json!({"error": {"message": "overloaded", "type": "server_error"}}).to_string(),
    }
}

/// Every request record of `id`, once at least one is logged.
fn records(gw: &WritGateway, id: &str) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = gw
            .audit_records()
            .into_iter()
            .filter(|r| r["event"] == "request" && r["request_id"] == id)
            .collect();
        if !found.is_empty() || std::time::Instant::now() > deadline {
            // Give a duplicate the chance to show.
            std::thread::sleep(Duration::from_millis(200));
            return gw
                .audit_records()
                .into_iter()
                .filter(|r| r["event"] == "request" && r["request_id"] == id)
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn envoy_retries_a_failed_primary_on_the_fallback_cluster() {
    let dir = TempDir::new("fallback-envoy");
    let source = dir.path().join("fallback-envoy.policy");
    std::fs::write(&source, POLICY).unwrap();
    std::fs::copy(
        workspace_root().join("policies/ai-policy.md"),
        dir.path().join("ai-policy.md"),
    )
    .unwrap();
    let artifact = build_policy(&source, &dir.path().join("out"));
    check(&artifact);
}

fn check(artifact: &Path) {
    let primary = Upstream::start(failing(503));
    let backup = Upstream::start(Reply::chat("from backup"));
    let opts = Options {
        clusters: vec![("backup".to_string(), backup.addr())],
        ..Options::default()
    };
    let gw = WritGateway::start(HostKind::Envoy, artifact, primary.addr(), &opts)
        .unwrap_or_else(|e| panic!("cannot start Envoy: {e}"));
    let call = |req: &Request| send(gw.addr(), req, T).unwrap();

    // The primary answers 503: Envoy sends the same request to the backup cluster.
    let r = call(&chat("support", "fe-retry"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().contains("from backup"), "{}", r.body_str());
    assert_eq!(primary.received().len(), 1);
    assert_eq!(backup.received().len(), 1);
    let recs = records(&gw, "fe-retry");
    assert_eq!(recs.len(), 1, "one record per request: {recs:?}");
    assert_eq!(
        recs[0]["attempts"],
        json!([
            {"model": "gpt-4o", "failure": "envoy_retry"},
            {"model": "gpt-4o", "cluster": "backup", "status": 200},
        ]),
        "{}",
        recs[0]
    );
    assert_eq!(recs[0]["status"], 200);

    // Both fail: the filter's degraded reply ends it, after Envoy's two attempts.
    backup.set_reply(failing(502));
    let r = call(&chat("support", "fe-down"));
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(
        r.json()["error"]["message"],
        "The assistant is unavailable; try again later."
    );
    let recs = records(&gw, "fe-down");
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["outcome"], "degraded");
    assert_eq!(
        recs[0]["attempts"],
        json!([
            {"model": "gpt-4o", "failure": "envoy_retry"},
            {"model": "gpt-4o", "cluster": "backup", "status": 502, "failure": "5xx"},
            {"status": 503, "answer": "reply"},
        ]),
        "{}",
        recs[0]
    );
    assert_eq!(primary.received().len(), 2);
    assert_eq!(backup.received().len(), 2);

    // A workflow without a fallback is not retried: the primary's 503 goes through.
    let r = call(&chat("plain", "fe-plain"));
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(primary.received().len(), 3);
    assert_eq!(backup.received().len(), 2);
}
