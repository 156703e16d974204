//! Every rule family enforced by a linked artifact in the wasmtime host (writ-runtime):
//! tokenise and restore (JSON and SSE cut one character per event), redact on both sides,
//! route, tag, budgets with settlement and alerts, escalation with a handoff to a loopback
//! review queue, the kill switch, monitor mode, and the one audit line per request.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use writ_compiler::link;
use writ_runtime::{Exchange, Host, HostConfig, RequestSpec, UpstreamReply, UpstreamRequest, Vm};

use crate::support::upstream::{Reply, Upstream};

/// The engine exactly as `build.rs` embedded it in the `writ` binary.
const ENGINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/engine.wasm"));

/// sha256("test"), the operator token of the kill switch below.
const TOKEN_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn policy_source() -> String {
    format!(
        r#"policy "enforce-test" version "1.0.0" {{
  owner      "security@example.com"
  implements "ai-policy.md"
  currency   EUR
}}

workflow "support" {{
  match header "x-workflow" == "support"
  oversight HOTL below 0.70
  identify team by header "x-team", user by header "x-user"
}}

price "gpt-4o-mini" input 0.15 EUR output 0.60 EUR per 1M tokens
price "gpt-4o" input 2.50 EUR output 10.00 EUR per 1M tokens

detector employee_id = regex "EMP-[0-9]{{6}}"

rule AIP-1.2 "Unregistered workflows are refused" {{
  on request
  when workflow != "support"
  then deny 403 "This workflow is not registered for AI use."
}}

rule AIP-2.1 "Customer data is pseudonymised" {{
  on request
  when prompt has pii(email, phone)
  then tokenise
}}

rule AIP-2.2 "Government identifiers never leave" {{
  on request
  when prompt has pii(us_ssn)
  then deny 400 "Remove government identifiers."
}}

rule AIP-2.3 "Employee identifiers are masked" {{
  on request
  when prompt has pii(employee_id)
  then redact
}}

rule AIP-2.4 "No credentials in prompts" {{
  on request
  when prompt has secret
  then deny 400 "Remove credentials."
  enforcement monitor
}}

rule AIP-2.5 "Card numbers the model invents are masked" {{
  on response
  when response has pii(credit_card)
  then redact
}}

rule AIP-3.2 "Cheap lane" {{
  on request
  when header "x-lane" == "cheap"
  then route to cheapest ["gpt-4o", "gpt-4o-mini"]
}}

rule AIP-4.1 "Cost centre" {{
  on request
  when workflow == "support"
  then tag "cost-center" = "customer-support"
}}

rule AIP-4.2 "Monthly budget per team" {{
  on request
  when spend(team, month) > 0.01 EUR
  then deny 429 "Monthly AI budget reached for your team."
  alert at 50%
}}

rule AIP-5.1 "Low-confidence answers go to a human" {{
  on response
  when confidence(header "x-model-confidence") < 0.70
  then escalate "support-review" reason "low confidence"
}}

kill_switch {{
  admin path "/writ/admin/kill-switch"
  token sha256 "{TOKEN_SHA256}"
}}
"#
    )
}

/// A host running the test policy, with `plugin_config` and callout `clusters`.
fn host(plugin_config: &str, clusters: &[(&str, String)]) -> Host {
    host_of(&policy_source(), plugin_config, clusters)
}

/// A host running `source`.
fn host_of(source: &str, plugin_config: &str, clusters: &[(&str, String)]) -> Host {
    let compiled = writ_compiler::compile("enforce-test.policy", source)
        .unwrap_or_else(|e| panic!("{}", e.render("enforce-test.policy", source)));
    let artifact = link::link(ENGINE, &compiled).unwrap();
    let mut config = HostConfig::new(artifact.wasm);
    config.plugin_config = plugin_config.as_bytes().to_vec();
    for (name, url) in clusters {
        config.clusters.insert(name.to_string(), url.clone());
    }
    Host::new(config).unwrap()
}

/// A chat request of the `support` workflow.
fn chat(team: &str, body: &Value, extra: &[(&str, &str)]) -> RequestSpec {
    let mut headers = vec![
        ("content-type", "application/json"),
        ("x-workflow", "support"),
        ("x-team", team),
        ("x-user", "u1"),
    ];
    headers.extend_from_slice(extra);
    RequestSpec::new(
        "POST",
        "/v1/chat/completions",
        &headers,
        body.to_string().as_bytes(),
    )
}

fn json_reply(body: &Value, extra: &[(&str, &str)]) -> UpstreamReply {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(extra);
    UpstreamReply::new(200, &headers, body.to_string().as_bytes())
}

/// The audit records a request logged (every `writ-audit` line).
fn audits(ex: &Exchange) -> Vec<Value> {
    ex.logs
        .iter()
        .filter_map(|l| writ_plugin::audit::parse_log_line(&l.message))
        .collect()
}

/// The request's one audit record; fails unless there is exactly one.
fn audit(ex: &Exchange) -> Value {
    let records: Vec<Value> = audits(ex)
        .into_iter()
        .filter(|r| r["event"] == "request" || r["event"] == "kill_switch")
        .collect();
    assert_eq!(
        records.len(),
        1,
        "audit records: {records:#?}\nlogs: {:#?}",
        ex.logs
    );
    records[0].clone()
}

fn fired(record: &Value) -> Vec<(String, String, String)> {
    record["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["clause"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["mode"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn everything_upstream_saw(up: &UpstreamRequest) -> String {
    let mut s = String::from_utf8_lossy(&up.body).into_owned();
    for (k, v) in &up.headers {
        s.push_str(&format!("\n{k}: {v}"));
    }
    s
}

/// The placeholder of type `tag` the upstream received (e.g. `EMAIL_7Q2K`).
fn placeholder(seen: &str, tag: &str) -> String {
    let at = seen
        .find(&format!("{tag}_"))
        .unwrap_or_else(|| panic!("no {tag} placeholder in {seen}"));
    seen[at..at + tag.len() + 5].to_string()
}

fn metric(ex: &Exchange, name: &str) -> Option<i64> {
    ex.metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

const EMAIL: &str = "alice.doe@example.com";
const PHONE: &str = "+44 20 7946 0958";

fn pii_request() -> Value {
    json!({
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": format!("Write to {EMAIL} or call {PHONE}.")},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
              "function": {"name": "send", "arguments": format!("{{\"to\":\"{EMAIL}\"}}")}}]},
            {"role": "user", "content": [{"type": "text", "text": format!("cc {EMAIL}")}]}
        ]
    })
}

/// Two rules cite AIP-2.2: the audit record names each by its own id (`AIP-2.2`,
/// `AIP-2.2#2`, as the manifest does), so a test or an auditor can tell which one acted.
#[test]
fn audit_records_name_each_rule_of_a_shared_clause_by_its_id() {
    let source = policy_source().replace(
        "rule AIP-2.3 ",
        r#"rule AIP-2.2 "Passport numbers never leave" {
  on request
  when prompt has pii(us_passport)
  then deny 400 "Remove passport numbers."
}

rule AIP-2.3 "#,
    );
    let host = host_of(&source, "", &[]);
    let mut vm = host.vm().unwrap();
    let ids = |vm: &mut Vm, prompt: &str| {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]});
        let ex = vm.http_request(&chat("t-ids", &body, &[]), |_| {
            json_reply(&json!({"choices": []}), &[])
        });
        let record = audit(&ex);
        record["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["clause"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let ssn = ids(&mut vm, "my SSN is 123-45-6789");
    assert!(
        ssn.contains(&("AIP-2.2".into(), "AIP-2.2".into())),
        "{ssn:?}"
    );
    assert!(!ssn.iter().any(|(id, _)| id == "AIP-2.2#2"), "{ssn:?}");
    let passport = ids(&mut vm, "my passport number is 912803456");
    assert!(
        passport.contains(&("AIP-2.2#2".into(), "AIP-2.2".into())),
        "{passport:?}"
    );
    assert!(
        !passport.iter().any(|(id, _)| id == "AIP-2.2"),
        "{passport:?}"
    );
}

#[test]
fn tokenised_values_never_reach_the_upstream_and_json_replies_are_restored() {
    let host = host("", &[]);
    let mut vm = host.vm().unwrap();
    let mut seen = String::new();
    let ex = vm.http_request(
        &chat("t-json", &pii_request(), &[("content-length", "999")]),
        |up| {
            seen = everything_upstream_saw(up);
            let email = placeholder(&seen, "EMAIL");
            json_reply(
                &json!({"choices": [{"index": 0, "message": {"role": "assistant",
                    "content": format!("I wrote to {email}."),
                    "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "send",
                      "arguments": format!("{{\"to\":\"{email}\"}}")}}]}}],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 8}}),
                &[("x-model-confidence", "0.95"), ("content-length", "1")],
            )
        },
    );
    assert_eq!(ex.error, None);
    assert_eq!(ex.client_response.status, 200);
    assert!(!seen.contains(EMAIL) && !seen.contains("alice"), "{seen}");
    assert!(!seen.contains(PHONE), "{seen}");
    let up = ex.upstream_request.as_ref().unwrap();
    assert_eq!(up.header("accept-encoding"), Some("identity"));
    assert_eq!(up.header("content-length"), None);
    let sent: Value = serde_json::from_slice(&up.body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");

    let body: Value = serde_json::from_slice(&ex.client_response.body_bytes()).unwrap();
    let msg = &body["choices"][0]["message"];
    assert_eq!(msg["content"], format!("I wrote to {EMAIL}."));
    assert_eq!(
        msg["tool_calls"][0]["function"]["arguments"],
        format!("{{\"to\":\"{EMAIL}\"}}")
    );
    assert_eq!(ex.client_response.header("content-length"), None);
    assert_eq!(ex.client_response.header("x-writ-review-id"), None);

    let record = audit(&ex);
    assert_eq!(record["outcome"], "allowed");
    assert_eq!(record["status"], 200);
    assert_eq!(record["workflow"], "support");
    assert_eq!(record["team"], "t-json");
    assert_eq!(record["pii"]["email"], 3, "{record}");
    assert_eq!(record["pii"]["phone"], 1, "{record}");
    assert_eq!(record["tags"]["cost-center"], "customer-support");
    assert_eq!(record["tokens"]["prompt"], 30);
    assert_eq!(record["cost_estimated"], false);
    assert_eq!(record["confidence"], 0.95);
    assert!(
        fired(&record).contains(&("AIP-2.1".into(), "tokenise".into(), "enforce".into())),
        "{record}"
    );
    for line in &ex.logs {
        assert!(
            !line.message.contains(EMAIL),
            "a log line leaks: {}",
            line.message
        );
        assert!(
            !line.message.contains(PHONE),
            "a log line leaks: {}",
            line.message
        );
    }
}

/// An SSE chunk carrying one content delta.
fn content_event(text: &str) -> Vec<u8> {
    let v = json!({"choices": [{"index": 0, "delta": {"content": text}}]});
    format!("data: {v}\n\n").into_bytes()
}

fn args_event(text: &str) -> Vec<u8> {
    let v = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
        "function": {"arguments": text}}]}}]});
    format!("data: {v}\n\n").into_bytes()
}

/// The text the client reassembles from an SSE body: content and tool-call arguments,
/// and how many `[DONE]` events it saw.
fn reassemble(body: &[u8]) -> (String, String, usize) {
    let text = String::from_utf8(body.to_vec()).unwrap();
    let (mut content, mut args, mut done) = (String::new(), String::new(), 0);
    for event in text.split("\n\n") {
        let Some(data) = event.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done += 1;
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        let delta = &v["choices"][0]["delta"];
        if let Some(c) = delta["content"].as_str() {
            content.push_str(c);
        }
        if let Some(a) = delta["tool_calls"][0]["function"]["arguments"].as_str() {
            args.push_str(a);
        }
    }
    (content, args, done)
}

#[test]
fn streamed_replies_are_restored_one_character_per_event() {
    let host = host("", &[]);
    let mut vm = host.vm().unwrap();
    let mut req = pii_request();
    req["stream"] = json!(true);
    let mut seen = String::new();
    let ex = vm.http_request(&chat("t-sse", &req, &[]), |up| {
        seen = everything_upstream_saw(up);
        let email = placeholder(&seen, "EMAIL");
        let phone = placeholder(&seen, "PHONE");
        let text = format!("Mail {email}, phone {phone}.");
        let args = format!("{{\"to\":\"{email}\"}}");
        let mut chunks: Vec<Vec<u8>> = text
            .chars()
            .map(|c| content_event(&c.to_string()))
            .collect();
        chunks.extend(args.chars().map(|c| args_event(&c.to_string())));
        chunks.push(
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 40, "completion_tokens": 12}})
            )
            .into_bytes(),
        );
        chunks.push(b"data: [DONE]\n\n".to_vec());
        UpstreamReply {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("x-model-confidence".into(), "0.9".into()),
            ],
            body: chunks,
        }
    });
    assert_eq!(ex.error, None);
    assert!(!seen.contains(EMAIL) && !seen.contains(PHONE), "{seen}");
    let sent: Value = serde_json::from_slice(&ex.upstream_request.as_ref().unwrap().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    // The stream is rewritten as it goes: many chunks reach the client, not one.
    assert!(ex.client_response.body.len() > 10);
    let (content, args, done) = reassemble(&ex.client_response.body_bytes());
    assert_eq!(content, format!("Mail {EMAIL}, phone {PHONE}."));
    assert_eq!(args, format!("{{\"to\":\"{EMAIL}\"}}"));
    assert_eq!(done, 1);
    let record = audit(&ex);
    assert_eq!(record["tokens"]["completion"], 12, "{record}");
    assert_eq!(record["cost_estimated"], false);
    assert!(!record.to_string().contains(EMAIL));
}

#[test]
fn redaction_on_both_sides_and_routing_to_the_cheapest_model() {
    let host = host("", &[]);
    let mut vm = host.vm().unwrap();
    let body = json!({"model": "gpt-4o", "max_tokens": 50,
        "messages": [{"role": "user", "content": "Badge EMP-123456 asks for a card."}]});
    let ex = vm.http_request(&chat("t-redact", &body, &[("x-lane", "cheap")]), |up| {
        let seen = everything_upstream_saw(up);
        assert!(!seen.contains("EMP-123456"), "{seen}");
        assert!(seen.contains("[EMPLOYEE_ID]"), "{seen}");
        json_reply(
            &json!({"choices": [{"index": 0, "message": {"role": "assistant",
                "content": "Use card 4111 1111 1111 1111 today."}}]}),
            &[("x-model-confidence", "0.9")],
        )
    });
    let sent: Value = serde_json::from_slice(&ex.upstream_request.as_ref().unwrap().body).unwrap();
    assert_eq!(sent["model"], "gpt-4o-mini");
    let reply = String::from_utf8(ex.client_response.body_bytes()).unwrap();
    assert!(!reply.contains("4111"), "{reply}");
    assert!(reply.contains("[CREDIT_CARD]"), "{reply}");
    let record = audit(&ex);
    assert_eq!(record["model_requested"], "gpt-4o");
    assert_eq!(record["model_used"], "gpt-4o-mini");
    assert_eq!(record["pii"]["employee_id"], 1);
    assert_eq!(record["pii"]["credit_card"], 1);
    // No usage came back: the estimate is charged and the record says so.
    assert_eq!(record["cost_estimated"], true);
    let rules = fired(&record);
    for clause in ["AIP-2.3", "AIP-2.5", "AIP-3.2", "AIP-4.1"] {
        assert!(rules.iter().any(|r| r.0 == clause), "{clause} in {rules:?}");
    }
}

#[test]
fn budgets_settle_from_usage_alert_once_and_then_deny() {
    let host = host(r#"{"metrics": {"team_label": {"max": 10}}}"#, &[]);
    let mut vm = host.vm().unwrap();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello"}]});
    // 20 000 completion tokens at 0.60 EUR per 1M: 12 000 micros, over the 10 000 cap.
    let ex = vm.http_request(&chat("t-budget", &body, &[]), |_| {
        json_reply(
            &json!({"choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 20000}}),
            &[("x-model-confidence", "0.9")],
        )
    });
    assert_eq!(ex.client_response.status, 200);
    let record = audit(&ex);
    assert_eq!(record["cost_micros"], 12_002, "{record}");
    assert_eq!(record["cost_estimated"], false);
    let alerts: Vec<Value> = audits(&ex)
        .into_iter()
        .filter(|r| r["event"] == "budget_alert")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        metric(
            &ex,
            "writ_budget_alerts_total;clause=AIP-4.2;scope=team;window=month"
        ),
        Some(1)
    );
    assert_eq!(
        metric(
            &ex,
            "writ_spend_micros_total;workflow=support;team=t-budget"
        ),
        Some(12_002)
    );
    assert_eq!(metric(&ex, "writ_reservations_in_flight"), Some(0));

    let mut called = false;
    let denied = vm.http_request(&chat("t-budget", &body, &[]), |_| {
        called = true;
        json_reply(&json!({}), &[])
    });
    assert!(!called);
    assert_eq!(denied.client_response.status, 429);
    let e: Value = serde_json::from_slice(&denied.client_response.body_bytes()).unwrap();
    assert_eq!(e["error"]["code"], "AIP-4.2");
    let record = audit(&denied);
    assert_eq!(record["outcome"], "denied");
    assert!(fired(&record).contains(&("AIP-4.2".into(), "deny".into(), "enforce".into())));
    assert_eq!(metric(&denied, "writ_reservations_in_flight"), Some(0));

    // Another team has its own ledger.
    let ok = vm.http_request(&chat("t-other", &body, &[]), |_| {
        json_reply(
            &json!({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}),
            &[("x-model-confidence", "0.9")],
        )
    });
    assert_eq!(ok.client_response.status, 200);
}

#[test]
fn pii_denies_name_the_types_never_the_values() {
    let host = host("", &[]);
    let mut vm = host.vm().unwrap();
    let body = json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "My SSN is 123-45-6789."}]});
    let ex = vm.http_request(&chat("t-ssn", &body, &[]), |_| panic!("must not be called"));
    assert_eq!(ex.client_response.status, 400);
    let text = String::from_utf8(ex.client_response.body_bytes()).unwrap();
    assert!(text.contains("us_ssn"), "{text}");
    assert!(!text.contains("6789"), "{text}");
    let record = audit(&ex);
    assert_eq!(record["pii"]["us_ssn"], 1);
    // Hashes, ids and times are digits the record makes itself; "6789" may be among them.
    let mut said = record.clone();
    for own in ["time", "request_id", "artifact_sha256", "source_sha256"] {
        said[own] = Value::Null;
    }
    assert!(!said.to_string().contains("6789"), "{said}");
}

#[test]
fn monitor_rules_log_what_they_would_have_done() {
    let host = host("", &[]);
    let mut vm = host.vm().unwrap();
    let token = format!("ghp_{}", "a1B2c3D4e5".repeat(4).get(..36).unwrap());
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10,
        "messages": [{"role": "user", "content": format!("key {token}")}]});
    let ex = vm.http_request(&chat("t-mon", &body, &[]), |_| {
        json_reply(&json!({}), &[("x-model-confidence", "0.9")])
    });
    assert_eq!(ex.client_response.status, 200);
    assert!(
        ex.logs
            .iter()
            .any(|l| l.message.contains("would have denied 400") && l.message.contains("AIP-2.4")),
        "{:#?}",
        ex.logs
    );
    let record = audit(&ex);
    assert!(
        fired(&record).contains(&("AIP-2.4".into(), "deny".into(), "monitor".into())),
        "{record}"
    );
    assert_eq!(record["outcome"], "allowed");
}

/// Waits until the review server has received `n` requests.
fn wait_for(up: &Upstream, n: usize) -> Vec<crate::support::http::Request> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = up.received();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn low_confidence_replies_are_escalated_with_a_handoff() {
    let reviews = Upstream::start(Reply::Json {
        status: 202,
        body: "{}".into(),
    });
    let config = json!({"review_queue": {"cluster": "reviews", "path": "/reviews"},
                        "artifact_sha256": "ab".repeat(32)});
    let host = host(
        &config.to_string(),
        &[("reviews", format!("http://{}", reviews.addr()))],
    );
    let mut vm = host.vm().unwrap();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10,
        "messages": [{"role": "user", "content": format!("mail {EMAIL}")}]});
    let ex = vm.http_request(&chat("t-esc", &body, &[("x-request-id", "req-42")]), |_| {
        json_reply(
            &json!({"choices": [{"index": 0, "message": {"content": "maybe"}}]}),
            &[("x-model-confidence", "0.41")],
        )
    });
    assert_eq!(ex.client_response.status, 200);
    let id = ex
        .client_response
        .header("x-writ-review-id")
        .unwrap()
        .to_string();
    assert!(id.starts_with("rev-"), "{id}");
    assert_eq!(
        ex.client_response.header("x-writ-review-queue"),
        Some("support-review")
    );
    assert_eq!(
        ex.client_response.header("x-writ-review-reason"),
        Some("low confidence")
    );
    let record = audit(&ex);
    assert_eq!(record["escalation"]["queue"], "support-review");
    assert_eq!(record["escalation"]["review_id"], id.as_str());
    assert_eq!(record["request_id"], "req-42");
    assert_eq!(record["artifact_sha256"], "ab".repeat(32));
    assert!(
        fired(&record).contains(&("AIP-5.1".into(), "escalate".into(), "enforce".into())),
        "{record}"
    );
    assert_eq!(
        metric(
            &ex,
            "writ_escalations_total;workflow=support;queue=support-review"
        ),
        Some(1)
    );
    // One output today, escalated: the whole day's rate.
    assert_eq!(
        metric(&ex, "writ_verification_rate_ppm;workflow=support"),
        Some(1_000_000)
    );

    let got = wait_for(&reviews, 1);
    assert_eq!(got.len(), 1, "the review queue got no handoff");
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/reviews");
    let handoff: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(handoff["queue"], "support-review");
    assert_eq!(handoff["clause"], "AIP-5.1");
    assert_eq!(handoff["review_id"], id.as_str());
    assert_eq!(handoff["request_id"], "req-42");
    assert_eq!(handoff["confidence"], 0.41);
    assert_eq!(handoff["summary"]["pii"]["email"], 1);
    assert!(!String::from_utf8_lossy(&got[0].body).contains(EMAIL));

    // A confident reply is not escalated, and nothing more is handed off.
    let ex = vm.http_request(&chat("t-esc", &body, &[]), |_| {
        json_reply(&json!({}), &[("x-model-confidence", "0.95")])
    });
    assert_eq!(ex.client_response.header("x-writ-review-id"), None);
    assert!(audit(&ex).get("escalation").is_none());
}

fn admin(vm: &mut Vm, token: &str, action: &str) -> Exchange {
    let body = json!({"workflow": "support", "action": action, "reason": "incident", "by": "ops"});
    let auth = format!("Bearer {token}");
    let req = RequestSpec::new(
        "POST",
        "/writ/admin/kill-switch",
        &[
            ("content-type", "application/json"),
            ("authorization", &auth),
        ],
        body.to_string().as_bytes(),
    );
    vm.http_request(&req, |_| {
        panic!("the admin path never reaches the upstream")
    })
}

#[test]
fn kill_switch_stops_and_resumes_a_workflow() {
    let host = host("", &[]);
    let mut vm = host.vm().unwrap();
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": []});
    let ok = |ex: &Exchange| ex.client_response.status == 200;

    let wrong = admin(&mut vm, "nope", "stop");
    assert_eq!(wrong.client_response.status, 401);
    assert_eq!(audit(&wrong)["outcome"], "unauthorized");

    let stop = admin(&mut vm, "test", "stop");
    assert_eq!(
        stop.client_response.status, 200,
        "{:?}",
        stop.client_response
    );
    assert_eq!(audit(&stop)["outcome"], "stopped");
    assert_eq!(
        metric(&stop, "writ_kill_switch_stopped;workflow=support"),
        Some(1)
    );
    // Another VM of the same host (another worker) sees the flip at once.
    let mut other = host.vm().unwrap();
    for vm in [&mut vm, &mut other] {
        let ex = vm.http_request(&chat("t-kill", &body, &[]), |_| panic!("stopped"));
        assert_eq!(ex.client_response.status, 503);
        let e: Value = serde_json::from_slice(&ex.client_response.body_bytes()).unwrap();
        assert_eq!(e["error"]["code"], "kill_switch");
        assert_eq!(audit(&ex)["outcome"], "stopped");
    }

    let resume = admin(&mut vm, "test", "resume");
    assert_eq!(resume.client_response.status, 200);
    let ex = vm.http_request(&chat("t-kill", &body, &[]), |_| {
        json_reply(&json!({}), &[("x-model-confidence", "0.9")])
    });
    assert!(ok(&ex), "{:?}", ex.client_response);
}

#[test]
fn every_request_logs_exactly_one_audit_line() {
    let host = host("", &[]);
    let mut vm = host.vm().unwrap();
    let good = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": []});
    let cases: Vec<(RequestSpec, u16)> = vec![
        (chat("t-one", &good, &[]), 200),
        (
            RequestSpec::new(
                "POST",
                "/v1/chat/completions",
                &[("content-type", "application/json")],
                good.to_string().as_bytes(),
            ),
            403,
        ),
        (
            RequestSpec::new(
                "POST",
                "/v1/chat/completions",
                &[
                    ("content-type", "application/json"),
                    ("x-workflow", "support"),
                ],
                b"{not json",
            ),
            400,
        ),
    ];
    for (req, status) in cases {
        let ex = vm.http_request(&req, |_| {
            json_reply(&json!({}), &[("x-model-confidence", "0.9")])
        });
        assert_eq!(ex.client_response.status, status);
        let record = audit(&ex);
        assert_eq!(record["status"], status);
    }
    // An upstream error releases the reservation instead of charging it.
    let ex = vm.http_request(&chat("t-one", &good, &[]), |_| {
        UpstreamReply::new(500, &[("content-type", "application/json")], b"{}")
    });
    assert_eq!(ex.client_response.status, 500);
    let record = audit(&ex);
    assert!(record.get("cost_micros").is_none(), "{record}");
    assert_eq!(metric(&ex, "writ_reservations_in_flight"), Some(0));
}

/// The same artifact in real Envoy (V8): tokenised values never reach the upstream, a card
/// number streamed one character per event is masked without any part of it reaching the
/// client, a reply without a confidence score is escalated (HOTL fails safe) with review
/// headers, and the kill switch stops and resumes the workflow; one audit record each.
#[test]
fn the_artifact_enforces_in_envoy() {
    use crate::support::envoy::EnvoyProcess;
    use crate::support::http::{Request, send};
    use crate::support::process::run_ok;
    use crate::support::tempdir::TempDir;

    let dir = TempDir::new("enforcement-envoy");
    let compiled = writ_compiler::compile("enforce-test.policy", &policy_source()).unwrap();
    let wasm = dir.path().join("enforce-test.wasm");
    std::fs::write(&wasm, link::link(ENGINE, &compiled).unwrap().wasm).unwrap();
    let card = "4111 1111 1111 1111";
    let mut events: Vec<(Duration, String)> = format!("Card {card} ok.")
        .chars()
        .map(|c| {
            let v = json!({"choices": [{"index": 0, "delta": {"content": c.to_string()}}]});
            (Duration::ZERO, v.to_string())
        })
        .collect();
    events.push((Duration::ZERO, "[DONE]".into()));
    let upstream = Upstream::start(Reply::Sse { events });
    let yaml = run_ok(
        std::process::Command::new(crate::support::writ_bin())
            .arg("envoy")
            .arg(&wasm)
            .arg("--upstream")
            .arg(upstream.addr().to_string())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]),
        Duration::from_secs(30),
    )
    .unwrap();
    let envoy = EnvoyProcess::start(&yaml).unwrap();
    let t = Duration::from_secs(10);
    let chat = |body: &Value| {
        Request::post_json("/v1/chat/completions", &body.to_string())
            .header("x-workflow", "support")
            .header("x-team", "t-envoy")
    };
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 20, "stream": true,
        "messages": [{"role": "user", "content": format!("mail {EMAIL}")}]});

    let res = send(envoy.listener(), &chat(&body), t).unwrap();
    let log = || envoy.log();
    assert_eq!(res.status, 200, "{}\n{}", res.body_str(), log());
    let seen = upstream.received();
    let up = seen.last().unwrap();
    let up_text = String::from_utf8_lossy(&up.body);
    assert!(!up_text.contains(EMAIL), "{up_text}");
    assert!(up_text.contains("EMAIL_"), "{up_text}");
    assert!(up_text.contains("include_usage"), "{up_text}");
    let (content, _, done) = reassemble(&res.body);
    assert_eq!(content, "Card [CREDIT_CARD] ok.");
    assert_eq!(done, 1);
    assert!(!res.body_str().contains("4111"));
    assert_eq!(
        res.header_value("x-writ-review-queue"),
        Some("support-review")
    );
    assert!(
        res.header_value("x-writ-review-reason")
            .unwrap()
            .contains("HOTL")
    );

    // The kill switch, across Envoy's workers.
    let admin = |token: &str, action: &str| {
        let b = json!({"workflow": "support", "action": action, "reason": "drill"});
        let req = Request::post_json("/writ/admin/kill-switch", &b.to_string())
            .header("authorization", &format!("Bearer {token}"));
        send(envoy.listener(), &req, t).unwrap()
    };
    assert_eq!(admin("wrong", "stop").status, 401);
    assert_eq!(admin("test", "stop").status, 200);
    let plain = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": []});
    let stopped = send(envoy.listener(), &chat(&plain), t).unwrap();
    assert_eq!(stopped.status, 503, "{}", stopped.body_str());
    assert_eq!(stopped.json()["error"]["code"], "kill_switch");
    assert_eq!(admin("test", "resume").status, 200);
    assert_eq!(
        send(envoy.listener(), &chat(&plain), t).unwrap().status,
        200
    );

    // One request audit record per request (5 requests and admin calls so far: 1 + 3
    // admin + 2), and no e-mail value anywhere in the log.
    assert!(envoy.wait_log("\"outcome\":\"resumed\"", t));
    std::thread::sleep(Duration::from_millis(300));
    let log = log();
    let records: Vec<Value> = log
        .lines()
        .filter_map(writ_plugin::audit::parse_log_line)
        .filter(|r| r["event"] == "request" || r["event"] == "kill_switch")
        .collect();
    assert_eq!(records.len(), 6, "{log}");
    assert!(!log.contains(EMAIL));
}
