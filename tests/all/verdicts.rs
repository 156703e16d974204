//! Review outcomes on the wire, handoff context and kill points, end to end in both hosts
//! (real Envoy and `writ serve`) with the bundled claims assistant (HITL, `handoff includes
//! output`, `review_signals`, `kill_point cost_per_transaction > 18.00 EUR over 7 days after
//! 20 requests then stop`):
//!
//! 1. a draft about a claimant is escalated; the handoff carries the model's output with
//!    the claimant's e-mail still a placeholder, never the raw value;
//! 2. verdicts are posted back: a wrong token, a malformed body, an unknown review id and
//!    a second verdict get their defined errors; the accepted verdict's audit record names
//!    the escalated request; the review metrics move;
//! 3. twenty quick approvals by one reviewer raise the three rubber-stamp signals;
//! 4. expensive replies push the cost per transaction past the kill point, which alerts
//!    and stops the workflow (503) exactly as an operator's flip would;
//! 5. `writ review` reads it all back: Q3 passes `escalations_reviewed` and fails
//!    `rubber_stamp`, Q1 fails `kill_points`.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cases::Gateway;
use crate::support::hosts::{HostKind, Options, WritGateway, build_policy};
use crate::support::http::{Request, Response, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{output_text, workspace_root, writ_in};

const POLICY: &str = "policies/claims-assistant.policy";
const WORKFLOW: &str = "claims-assistant";
/// The token whose sha256 the bundled policies hold (`docs/kill-switch.md`).
const TOKEN: &str = "test";
const EMAIL: &str = "jane.doe@example.com";

fn draft(gw: &WritGateway, id: &str) -> Response {
    let body = json!({"model": "gpt-4o", "max_tokens": 100,
        "messages": [{"role": "user", "content": format!("Draft a decision for claimant {EMAIL}")}]});
    let req = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", WORKFLOW)
        .header("x-request-id", id);
    send(gw.addr(), &req, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("[{}] {id}: {e}\n{}", gw.name(), gw.log()))
}

fn post_verdict(gw: &WritGateway, token: &str, body: &str) -> Response {
    let req = Request::post_json("/writ/admin/reviews", body)
        .header("authorization", &format!("Bearer {token}"));
    send(gw.addr(), &req, Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("[{}] verdict: {e}\n{}", gw.name(), gw.log()))
}

fn verdict(review_id: &str, reviewer: &str, verdict: &str, seconds: u64) -> String {
    json!({"review_id": review_id, "reviewer": reviewer, "verdict": verdict, "seconds": seconds})
        .to_string()
}

fn code(r: &Response) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

/// The handoff the review queue received for `request_id`.
fn handoff(review: &Upstream, request_id: &str) -> (String, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        for r in review.received() {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if v["request_id"] == request_id {
                return (String::from_utf8_lossy(&r.body).into_owned(), v);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no handoff for {request_id}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A reply as costly as 7.5 million prompt tokens of gpt-4o (18.75 EUR + output).
fn expensive() -> Reply {
    let body = json!({
        "id": "chatcmpl-costly", "object": "chat.completion", "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Approved."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7_500_000, "completion_tokens": 10, "total_tokens": 7_500_010}
    });
    Reply::Json {
        status: 200,
        body: body.to_string(),
    }
}

/// The gateway's audit records as `writ serve` would chain them into its log.
fn chained(records: &[Value], path: &Path) {
    let mut prev = writ::audit_log::GENESIS.to_string();
    let mut out = String::new();
    for r in records {
        let line = writ::audit_log::chain_line(r, &prev);
        prev = writ::audit_log::sha256_hex(line.as_bytes());
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{e}"));
}

fn review_check(audit: &Path, q: &str, id: &str) -> Value {
    let audit = audit.to_string_lossy().into_owned();
    let out = writ_in(
        workspace_root(),
        &["review", POLICY, "--audit", &audit, "--format", "json"],
    );
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));
    r["questions"]
        .as_array()
        .and_then(|qs| qs.iter().find(|x| x["id"] == q))
        .and_then(|x| x["checks"].as_array())
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no {q}/{id} in {r:#}"))
}

fn scenario(kind: HostKind) {
    let dir = TempDir::new("verdicts");
    let artifact = build_policy(&workspace_root().join(POLICY), &dir.path().join("out"));
    let upstream = Upstream::start(Reply::Echo {
        sse: false,
        tool_args: false,
    });
    let review = Upstream::start(Reply::Json {
        status: 202,
        body: "{}".into(),
    });
    let opts = Options {
        review_queue: Some(review.addr()),
        ..Options::default()
    };
    let gw = WritGateway::start(kind, &artifact, upstream.addr(), &opts)
        .unwrap_or_else(|e| panic!("[{kind:?}] cannot start: {e}"));
    let name = gw.name().to_string();
    let metric = |spec: &str| gw.metric(spec);

    // 1. Escalation with the output in the handoff, PII still tokenised.
    let res = draft(&gw, "v-0");
    assert_eq!(res.status, 200, "[{name}] {}\n{}", res.body_str(), gw.log());
    assert!(
        res.body_str().contains(EMAIL),
        "[{name}] restored for the client"
    );
    let review_id = res
        .header_value("x-writ-review-id")
        .unwrap_or_else(|| panic!("[{name}] no review id: {:?}", res.headers))
        .to_string();
    let (raw, payload) = handoff(&review, "v-0");
    let output = payload["output"].as_str().unwrap_or_default();
    assert!(
        output.starts_with("Draft a decision for claimant "),
        "[{name}] output in the handoff: {payload}"
    );
    assert!(
        !raw.contains(EMAIL),
        "[{name}] raw PII in the handoff: {raw}"
    );
    assert!(!raw.contains("messages"), "[{name}] the prompt left: {raw}");
    assert_ne!(output, format!("Draft a decision for claimant {EMAIL}"));

    // 2. Verdicts: refused ones first, each with its code; none consumes the review.
    let good = verdict(&review_id, "handler@example.com", "approved", 95);
    let r = post_verdict(&gw, "wrong", &good);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (401, "unauthorized"),
        "[{name}]"
    );
    let r = post_verdict(&gw, TOKEN, r#"{"review_id": 1}"#);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (400, "invalid_request"),
        "[{name}]"
    );
    let r = post_verdict(&gw, TOKEN, &verdict(&review_id, "h", "maybe", 1));
    assert_eq!(
        (r.status, code(&r).as_str()),
        (400, "invalid_verdict"),
        "[{name}]"
    );
    let r = post_verdict(&gw, TOKEN, &verdict("rev-unknown", "h", "approved", 1));
    assert_eq!(
        (r.status, code(&r).as_str()),
        (404, "unknown_review"),
        "[{name}]"
    );
    let r = post_verdict(&gw, TOKEN, &good);
    assert_eq!(r.status, 200, "[{name}] {}\n{}", r.body_str(), gw.log());
    assert_eq!(r.json()["request_id"], "v-0", "[{name}]");
    let r = post_verdict(&gw, TOKEN, &good);
    assert_eq!(
        (r.status, code(&r).as_str()),
        (409, "already_reviewed"),
        "[{name}]"
    );
    let records = gw.wait_audit("review_verdict", 6, Duration::from_secs(10));
    assert_eq!(
        records.len(),
        6,
        "[{name}] one record per call: {records:#?}"
    );
    let accepted: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "reviewed")
        .collect();
    assert_eq!(accepted.len(), 1, "[{name}]");
    assert_eq!(accepted[0]["verdict"]["escalated_request_id"], "v-0");
    assert_eq!(accepted[0]["verdict"]["review_id"], review_id.as_str());
    assert_eq!(accepted[0]["workflow"], WORKFLOW);
    let wf = format!("workflow={WORKFLOW}");
    assert_eq!(
        metric(&format!("writ_reviews_total;verdict=approved;{wf}")),
        Some(1.0),
        "[{name}]"
    );
    assert_eq!(
        metric(&format!("writ_reviews_pending;{wf}")),
        Some(0.0),
        "[{name}]"
    );
    assert_eq!(
        metric(&format!("writ_review_spent_seconds_total;{wf}")),
        Some(95.0),
        "[{name}]"
    );

    // 3. Twenty quick approvals by one reviewer: rubber stamps.
    for i in 1..=20 {
        let res = draft(&gw, &format!("v-{i}"));
        assert_eq!(res.status, 200, "[{name}] v-{i}: {}", res.body_str());
        let rid = res
            .header_value("x-writ-review-id")
            .unwrap_or_default()
            .to_string();
        let r = post_verdict(
            &gw,
            TOKEN,
            &verdict(&rid, "alice@example.com", "approved", 4),
        );
        assert_eq!(r.status, 200, "[{name}] v-{i}: {}", r.body_str());
    }
    let signals = gw.wait_audit("review_signal", 3, Duration::from_secs(10));
    let mut names: Vec<&str> = signals
        .iter()
        .filter_map(|s| s["signal"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["approval_rate", "median_review_time", "reviewer_share"],
        "[{name}]"
    );
    for s in ["approval_rate", "median_review_time", "reviewer_share"] {
        assert_eq!(
            metric(&format!("writ_review_signals_total;signal={s};{wf}")),
            Some(1.0),
            "[{name}] {s}"
        );
    }
    // 21 outputs at a few micro-euros each: the kill point did not fire.
    assert_eq!(
        metric(&format!(
            "writ_kill_points_crossed_total;metric=cost_per_transaction;{wf}"
        )),
        Some(0.0),
        "[{name}]"
    );
    let reviewed = dir.path().join("reviewed.jsonl");
    chained(&gw.audit_records(), &reviewed);

    // 4. Expensive replies: the 7-day cost per transaction passes 18.00 EUR and the workflow
    // stops.
    upstream.set_reply(expensive());
    let mut stopped_at = None;
    for i in 0..20 {
        let res = draft(&gw, &format!("c-{i}"));
        if res.status == 503 {
            assert_eq!(code(&res), "kill_switch", "[{name}] {}", res.body_str());
            stopped_at = Some(i);
            break;
        }
        assert_eq!(res.status, 200, "[{name}] c-{i}: {}", res.body_str());
    }
    // Every output is reviewed (HITL) at 12.00 EUR, so the cost per transaction is
    // 12.00 + AI spend per output: (21 × ~0 + 9 × 18.75) / 30 = 5.63 keeps it under 18.00,
    // (10 × 18.75) / 31 = 6.05 crosses it: the tenth expensive reply (judged when its record
    // is written, which in Envoy may trail the client's next request a little).
    assert!(
        stopped_at.is_some_and(|i| (10..=12).contains(&i)),
        "[{name}] {stopped_at:?}\n{}",
        gw.log()
    );
    let crossed = gw.wait_audit("kill_point", 1, Duration::from_secs(10));
    assert_eq!(crossed.len(), 1, "[{name}]");
    assert_eq!(crossed[0]["outcome"], "stopped");
    assert_eq!(
        crossed[0]["signal"],
        "cost_per_transaction > 18.00 EUR over 7 days"
    );
    let flips = gw.wait_audit("kill_switch", 1, Duration::from_secs(10));
    assert_eq!(flips.len(), 1, "[{name}]");
    assert_eq!(flips[0]["user"], "kill_point");
    assert_eq!(flips[0]["outcome"], "stopped");
    assert_eq!(flips[0]["workflow"], WORKFLOW);
    assert_eq!(
        metric(&format!(
            "writ_kill_points_crossed_total;metric=cost_per_transaction;{wf}"
        )),
        Some(1.0),
        "[{name}]"
    );
    assert_eq!(
        metric(&format!("writ_kill_switch_stopped;{wf}")),
        Some(1.0),
        "[{name}]"
    );

    // 5. The review reads it back.
    let c = review_check(&reviewed, "q3", &format!("escalations_reviewed:{WORKFLOW}"));
    assert_eq!(c["verdict"], "pass", "[{name}] {c}");
    let c = review_check(&reviewed, "q3", &format!("rubber_stamp:{WORKFLOW}"));
    assert_eq!(c["verdict"], "fail", "[{name}] {c}");
    assert!(
        c["evidence"]
            .as_str()
            .unwrap_or("")
            .contains("`reviewer_share`"),
        "{c}"
    );
    let c = review_check(&reviewed, "q1", &format!("kill_points:{WORKFLOW}"));
    assert_eq!(c["verdict"], "pass", "[{name}] {c}");
    let all = dir.path().join("all.jsonl");
    chained(&gw.audit_records(), &all);
    let c = review_check(&all, "q1", &format!("kill_points:{WORKFLOW}"));
    assert_eq!(c["verdict"], "fail", "[{name}] {c}");
    assert!(
        c["evidence"]
            .as_str()
            .unwrap_or("")
            .contains("(the workflow was stopped)"),
        "{c}"
    );
    // The expensive drafts were escalated and never reviewed: a finding.
    let c = review_check(&all, "q3", &format!("escalations_reviewed:{WORKFLOW}"));
    assert_eq!(c["verdict"], "fail", "[{name}] {c}");
}

#[test]
fn verdicts_handoff_output_and_kill_points_in_writ_serve() {
    scenario(HostKind::Serve);
}

#[test]
fn verdicts_handoff_output_and_kill_points_in_envoy() {
    scenario(HostKind::Envoy);
}
