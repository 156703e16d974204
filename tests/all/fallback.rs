//! A workflow's `fallback` when the provider fails, in both hosts (`docs/fallback.md`):
//! `writ serve` retries itself (another model, another cluster), and both hosts answer the
//! degraded way (a fixed reply, a human handoff with 202). Every attempt is in the audit
//! record.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cases::Gateway;
use crate::support::hosts::{HostKind, Options, WritGateway, build_policy};
use crate::support::http::{Request, Response, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::workspace_root;

const POLICY: &str = r#"# Fallback end-to-end test.
policy "fallback-test" version "0.1.0" {
  owner       "security@example.com"
  implements  "ai-policy.md"
}

workflow "support" {
  match header "x-workflow" == "support"
  fallback on 5xx, 429, timeout, connect to model "gpt-4o-mini" then cluster "backup" then reply 503 "The assistant is unavailable; try again later."
}

workflow "claims" {
  match header "x-workflow" == "claims"
  fallback on 5xx, connect to human "claims-desk"
}

workflow "strict" {
  match header "x-workflow" == "strict"
  fallback on 5xx to model "gpt-4o-mini" then reply 503 "Strict mode: no fallback model."
}

price "gpt-4o" input 2.50 EUR output 10.00 EUR per 1M tokens
price "gpt-4o-mini" input 0.15 EUR output 0.60 EUR per 1M tokens

rule AIP-3.1 "Only approved models" {
  on request
  when model not in ["gpt-4o", "gpt-4o-mini"]
  then deny 403 "Model not approved."
}

rule AIP-3.2 "The strict workflow keeps its model" {
  on request
  when workflow == "strict" and model == "gpt-4o-mini"
  then deny 403 "The strict workflow uses gpt-4o only."
}
"#;

const T: Duration = Duration::from_secs(30);

fn build(dir: &Path) -> PathBuf {
    let source = dir.join("fallback-test.policy");
    std::fs::write(&source, POLICY).unwrap();
    std::fs::copy(
        workspace_root().join("policies/ai-policy.md"),
        dir.join("ai-policy.md"),
    )
    .unwrap();
    build_policy(&source, &dir.join("out"))
}

fn chat(workflow: &str, model: &str, id: &str) -> Request {
    let body = json!({"model": model, "max_tokens": 5,
        "messages": [{"role": "user", "content": "Where is my order?"}]});
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", workflow)
        .header("x-request-id", id)
}

fn call(gw: &WritGateway, req: &Request) -> Response {
    send(gw.addr(), req, T).unwrap_or_else(|e| panic!("[{}] request failed: {e}", gw.name()))
}

fn failing(status: u16) -> Reply {
    Reply::Json {
        status,
        body: json!({"error": {"message": "overloaded", "type": "server_error"}}).to_string(),
    }
}

/// The request record of `id`, once logged.
fn record(gw: &WritGateway, id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = gw
            .audit_records()
            .into_iter()
            .find(|r| r["event"] == "request" && r["request_id"] == id);
        if let Some(r) = found {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "[{}] no audit record for {id}:\n{}",
            gw.name(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn models(up: &Upstream) -> Vec<String> {
    up.received()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v["model"].as_str().unwrap_or("").to_string()
        })
        .collect()
}

struct Rig {
    gw: WritGateway,
    primary: Upstream,
    backup: Upstream,
    review: Upstream,
}

fn start(kind: HostKind, artifact: &Path) -> Rig {
    let primary = Upstream::start(Reply::chat("from primary"));
    let backup = Upstream::start(Reply::chat("from backup"));
    let review = Upstream::start(Reply::Json {
        status: 200,
        body: "{}".into(),
    });
    let opts = Options {
        review_queue: Some(review.addr()),
        clusters: vec![("backup".to_string(), backup.addr())],
        ..Options::default()
    };
    let gw = WritGateway::start(kind, artifact, primary.addr(), &opts)
        .unwrap_or_else(|e| panic!("[{kind:?}] cannot start: {e}"));
    Rig {
        gw,
        primary,
        backup,
        review,
    }
}

/// A healthy provider: no fallback, one attempt recorded.
fn healthy_provider_is_used_alone(rig: &Rig) {
    let ok = call(&rig.gw, &chat("support", "gpt-4o", "fb-ok"));
    assert_eq!(ok.status, 200, "{}", ok.body_str());
    assert!(ok.body_str().contains("from primary"));
    let rec = record(&rig.gw, "fb-ok");
    assert_eq!(rec["attempts"], json!([{"model": "gpt-4o", "status": 200}]));
    assert_eq!(rec["outcome"], "allowed");
}

/// `writ serve`: the primary fails (503, then a closed connection); the fallback model is
/// tried on it, then the backup cluster answers.
fn serve_retries_model_then_cluster(rig: &Rig) {
    rig.primary.set_reply(failing(503));
    let before = rig.primary.received().len();
    let r = call(&rig.gw, &chat("support", "gpt-4o", "fb-retry"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().contains("from backup"), "{}", r.body_str());
    assert_eq!(models(&rig.primary)[before..], ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(models(&rig.backup), ["gpt-4o-mini"]);
    let rec = record(&rig.gw, "fb-retry");
    assert_eq!(
        rec["attempts"],
        json!([
            {"model": "gpt-4o", "status": 503, "failure": "5xx"},
            {"model": "gpt-4o-mini", "status": 503, "failure": "5xx"},
            {"model": "gpt-4o-mini", "cluster": "backup", "status": 200},
        ])
    );
    assert_eq!(rec["model_used"], "gpt-4o-mini");
    assert_eq!(rec["status"], 200);

    // The provider closes the connection without a word: `connect`, then the same path.
    rig.primary.set_reply(Reply::Raw {
        bytes: Vec::new(),
        reset: false,
    });
    let r = call(&rig.gw, &chat("support", "gpt-4o", "fb-closed"));
    assert_eq!(r.status, 200, "{}", r.body_str());
    let rec = record(&rig.gw, "fb-closed");
    assert_eq!(
        rec["attempts"],
        json!([
            {"model": "gpt-4o", "status": 502, "failure": "connect"},
            {"model": "gpt-4o-mini", "status": 502, "failure": "connect"},
            {"model": "gpt-4o-mini", "cluster": "backup", "status": 200},
        ])
    );

    // 429 from the backup too: the fixed reply ends it.
    rig.primary.set_reply(failing(429));
    rig.backup.set_reply(failing(429));
    let r = call(&rig.gw, &chat("support", "gpt-4o", "fb-all-down"));
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(
        r.json()["error"]["message"],
        "The assistant is unavailable; try again later."
    );
    let rec = record(&rig.gw, "fb-all-down");
    assert_eq!(rec["outcome"], "degraded");
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "{attempts:?}");
    assert_eq!(attempts[3], json!({"status": 503, "answer": "reply"}));
    rig.backup.set_reply(Reply::chat("from backup"));
}

/// Both hosts: the fallback model the rules refuse is skipped (re-checked with every
/// request rule), and the fixed reply answers.
fn refused_fallback_model_is_skipped(rig: &Rig, kind: HostKind) {
    rig.primary.set_reply(failing(500));
    let before = rig.primary.received().len();
    let r = call(&rig.gw, &chat("strict", "gpt-4o", "fb-strict"));
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_eq!(
        r.json()["error"]["message"],
        "Strict mode: no fallback model."
    );
    assert_eq!(rig.primary.received().len(), before + 1, "one attempt only");
    let rec = record(&rig.gw, "fb-strict");
    let skipped = match kind {
        // writ serve could retry, but AIP-3.2 refuses the model.
        HostKind::Serve => "AIP-3.2",
        // Envoy's router does not send the request again on the filter's word.
        HostKind::Envoy => "no_host_retry",
    };
    assert_eq!(
        rec["attempts"],
        json!([
            {"model": "gpt-4o", "status": 500, "failure": "5xx"},
            {"model": "gpt-4o-mini", "skipped": skipped},
            {"status": 503, "answer": "reply"},
        ])
    );
}

/// Both hosts: the human-only path hands off and answers 202 with the review id.
fn human_only_path_hands_off(rig: &Rig) {
    rig.primary.set_reply(failing(502));
    let r = call(&rig.gw, &chat("claims", "gpt-4o", "fb-human"));
    assert_eq!(r.status, 202, "{}", r.body_str());
    let body = r.json();
    assert_eq!(body["status"], "pending_human");
    assert_eq!(body["queue"], "claims-desk");
    let review_id = body["review_id"].as_str().unwrap().to_string();
    assert!(review_id.starts_with("rev-"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let handoff = loop {
        let got = rig.review.received();
        if let Some(h) = got.iter().find_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            (v["review_id"] == review_id.as_str()).then_some(v)
        }) {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "no handoff posted");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(handoff["queue"], "claims-desk");
    assert_eq!(handoff["request_id"], "fb-human");
    assert_eq!(handoff["reason"], "provider failed (5xx)");
    let rec = record(&rig.gw, "fb-human");
    assert_eq!(rec["outcome"], "degraded");
    assert_eq!(rec["escalation"]["review_id"], review_id.as_str());
    assert_eq!(
        rec["attempts"],
        json!([
            {"model": "gpt-4o", "status": 502, "failure": "5xx"},
            {"status": 202, "answer": "human"},
        ])
    );
}

/// A failure the workflow did not declare goes to the client as it is.
fn undeclared_failure_passes_through(rig: &Rig) {
    rig.primary.set_reply(failing(429));
    let r = call(&rig.gw, &chat("claims", "gpt-4o", "fb-429"));
    assert_eq!(r.status, 429, "{}", r.body_str());
    let rec = record(&rig.gw, "fb-429");
    assert_eq!(rec["attempts"], json!([{"model": "gpt-4o", "status": 429}]));
}

#[test]
fn fallback_in_both_hosts() {
    let dir = TempDir::new("fallback");
    let artifact = build(dir.path());
    for kind in HostKind::BOTH {
        let rig = start(kind, &artifact);
        healthy_provider_is_used_alone(&rig);
        if kind == HostKind::Serve {
            serve_retries_model_then_cluster(&rig);
        }
        refused_fallback_model_is_skipped(&rig, kind);
        human_only_path_hands_off(&rig);
        undeclared_failure_passes_through(&rig);
    }
}
