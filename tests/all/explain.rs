//! `writ explain` cannot drift from enforcement: for every case of the bundled policy
//! tests, run fresh, its final action, fired rules and escalation equal what the artifact
//! did in the wasmtime host. Focused cases: a rule that did not fire names the false
//! sub-condition; findings name places, never values; deny beats tokenise; monitor mode;
//! spend under fresh state; clear errors.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use writ::policy_tests::format::Reply;
use writ::policy_tests::run::{Suite, case_request, discover};

use crate::support::tempdir::TempDir;
use crate::support::{output_text, workspace_root, writ};

/// Writes `value` as JSON to `dir/name` and returns the path as a string.
fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs `writ explain --format json` and parses its output.
fn explain_json(artifact: &str, request: &str, reply: Option<&str>) -> Value {
    let mut args = vec![
        "explain",
        artifact,
        "--request",
        request,
        "--format",
        "json",
    ];
    if let Some(r) = reply {
        args.extend(["--reply", r]);
    }
    let out = writ(&args);
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {t}"))
}

fn reply_file(reply: &Reply) -> Value {
    let mut v = json!({ "status": reply.status, "headers": reply.headers });
    match (&reply.events, &reply.body) {
        (Some(events), _) => v["events"] = json!(events),
        (None, Some(body)) => v["body"] = body.clone(),
        (None, None) => {}
    }
    v
}

#[test]
fn explain_agrees_with_the_artifact_on_every_bundled_case() {
    let dir = TempDir::new("writ-explain-agree");
    let files = discover(&[workspace_root().join("policies")]).unwrap();
    assert!(files.len() >= 3, "{files:?}");
    let mut checked = 0;
    let mut mcp_cases = 0;
    for path in files {
        let mut suite = Suite::load(&path).unwrap();
        // Explain runs from fresh state: so does each case here.
        for case in &mut suite.file.cases {
            case.continues = false;
            case.repeat = None;
        }
        let artifact = dir.path().join(suite.artifact_name());
        std::fs::write(&artifact, &suite.artifact.wasm).unwrap();
        let artifact = artifact.to_str().unwrap().to_string();
        let runs = suite.run(None).unwrap();
        for (case, run) in suite.file.cases.iter().zip(&runs) {
            let spec = case_request(case);
            let request = json!({
                "method": spec.method,
                "path": spec.path,
                "headers": spec.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                "body_text": String::from_utf8(spec.body.concat()).unwrap(),
            });
            let reply = case.reply.clone().unwrap_or_else(Reply::default_chat);
            let req = write_json(dir.path(), "req.json", &request);
            let rep = write_json(dir.path(), "reply.json", &reply_file(&reply));
            let what = format!("{} / {}", path.display(), case.name);
            // MCP messages are not explained (docs/mcp.md): explain says so and fails,
            // rather than explain them wrongly as model requests.
            let mcp = !spec.path.contains("/v1/")
                && serde_json::from_slice::<Value>(&spec.body.concat())
                    .is_ok_and(|b| b.get("jsonrpc").is_some());
            if mcp {
                let out = writ(&["explain", &artifact, "--request", &req]);
                let t = output_text(&out);
                assert!(
                    !out.status.success(),
                    "{what}: explained an MCP message: {t}"
                );
                assert!(t.contains("this is an MCP message"), "{what}: {t}");
                mcp_cases += 1;
                continue;
            }
            let ex = explain_json(&artifact, &req, Some(&rep));
            let o = &run.outcome;

            let fired: Vec<(String, String)> = ex["fired"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let s = |k: &str| f[k].as_str().unwrap().to_string();
                    (s("id"), s("mode"))
                })
                .collect();
            let acted: Vec<(String, String)> = o
                .fired
                .iter()
                .map(|f| (f.id.clone(), f.mode.clone()))
                .collect();
            assert_eq!(fired, acted, "{what}: fired rules");

            let outcome = &ex["outcome"];
            let status = outcome["status"].as_u64().map(|s| s as u16);
            match outcome["action"].as_str().unwrap() {
                "allowed" => {
                    assert!(o.upstream.is_some(), "{what}: explain allowed it");
                    assert_eq!(status, Some(o.client_status), "{what}: status");
                }
                "denied" => {
                    let reached = outcome["phase"] == "response";
                    assert_eq!(o.upstream.is_some(), reached, "{what}: {outcome}");
                    assert_eq!(status, Some(o.client_status), "{what}: status");
                    let winner = outcome["rule"].as_str().unwrap();
                    assert!(
                        o.fired.iter().any(|f| f.id == winner),
                        "{what}: {winner} not in the audit record"
                    );
                }
                "refused" => assert_eq!(status, Some(o.client_status), "{what}: status"),
                "admin" => {
                    assert!(o.upstream.is_none(), "{what}");
                    assert!(o.fired.is_empty(), "{what}");
                }
                other => panic!("{what}: unknown outcome {other}"),
            }
            // The per-rule statuses say the same as the fired list.
            let mut matched: Vec<&str> = ex["rules"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["status"] == "fired")
                .map(|r| r["id"].as_str().unwrap())
                .collect();
            let mut listed: Vec<&str> = fired.iter().map(|(id, _)| id.as_str()).collect();
            matched.sort_unstable();
            listed.sort_unstable();
            assert_eq!(matched, listed, "{what}: rule statuses");
            let queue = ex["escalation"]["queue"].as_str().map(str::to_string);
            assert_eq!(queue, o.escalated, "{what}: escalation");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} cases");
    assert!(mcp_cases >= 1, "the bundled MCP cases were not met");
}

/// A policy compiled from source into an artifact in `dir`.
fn build(dir: &Path, source: &str) -> String {
    let policy = dir.join("p.policy");
    std::fs::write(&policy, source).unwrap();
    let paper: String = ["2.1", "2.9", "3.1", "3.2", "4.2", "9.1"]
        .iter()
        .map(|c| format!("- **AIP-{c}** A clause.\n"))
        .collect();
    std::fs::write(dir.join("paper.md"), format!("# Paper\n\n{paper}")).unwrap();
    let out = writ(&[
        "build",
        policy.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let wasm: Vec<PathBuf> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .collect();
    wasm[0].to_str().unwrap().to_string()
}

const FOCUSED: &str = r#"policy "focused" version "1.0.0" {
  owner "security@example.com"
  implements "paper.md"
  currency EUR
}

workflow "support" {
  match header "x-workflow" == "support"
  oversight HIC
  identify team by header "x-team"
}

price "gpt-4o" input 2.50 EUR output 10.00 EUR per 1M tokens

rule AIP-2.1 "Personal data is pseudonymised" {
  on request
  when prompt has pii(email, credit_card)
  then tokenise
}

rule AIP-2.9 "Unapproved models may not see e-mail addresses" {
  on request
  when model not in ["gpt-4o-mini", "gpt-4o"] and prompt has pii(email)
  then deny 403 "No personal data to unapproved models."
}

rule AIP-3.1 "Only approved models" {
  on request
  when model not in ["gpt-4o-mini", "gpt-4o"]
  then deny 403 "Model not approved."
}

rule AIP-3.2 "Internal tokens are not forwarded" {
  on request
  when header "x-internal-token" == "letmein"
  then deny 403 "No internal tokens."
}

rule AIP-4.2 "Monthly budget per team" {
  on request
  when spend(team, month) > 5000 EUR
  then deny 429 "Budget reached."
}

rule AIP-9.1 "Trial: refuse long outputs" {
  on request
  when max_tokens > 100
  then deny 400 "Too long."
  enforcement monitor
}
"#;

const EMAIL: &str = "jane.doe@example.com";
const CARD: &str = "4111 1111 1111 1111";

fn focused_request(model: &str) -> Value {
    json!({
        "headers": {"x-workflow": "support", "x-team": "billing", "x-internal-token": "s3cr3t-header-value"},
        "body": {
            "model": model,
            "max_tokens": 500,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": format!("Mail {EMAIL}, card {CARD}.")}
            ],
            "metadata": {"ann@example.org": "x"}
        }
    })
}

fn rule<'v>(ex: &'v Value, id: &str) -> &'v Value {
    ex["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id}: {ex}"))
}

#[test]
fn explains_why_each_rule_matched_or_not_without_values() {
    let dir = TempDir::new("writ-explain-focused");
    let artifact = build(dir.path(), FOCUSED);
    let req = write_json(dir.path(), "req.json", &focused_request("gpt-4o"));
    let ex = explain_json(&artifact, &req, None);

    // An approved model: AIP-2.9 did not fire, and the false conjunct is named with the
    // model's actual value.
    let r = rule(&ex, "AIP-2.9");
    assert_eq!(r["status"], "not_fired", "{r}");
    assert_eq!(
        r["decided_by"],
        json!([r#"model not in ["gpt-4o", "gpt-4o-mini"]"#]),
        "{r}"
    );
    let first = &r["condition"]["children"][0];
    assert_eq!(first["value"], false, "{r}");
    assert_eq!(first["operands"][0]["value"], "gpt-4o", "{r}");
    // The evaluator short-circuits: the detector conjunct was never looked at.
    assert_eq!(r["condition"]["children"][1]["value"], Value::Null, "{r}");

    // Findings name JSON paths, a key by position, and the count, never the value.
    let r = rule(&ex, "AIP-2.1");
    assert_eq!(r["status"], "fired", "{r}");
    let findings = &r["condition"]["findings"];
    assert!(
        findings.as_array().unwrap().contains(&json!({
            "detector": "email", "location": "$.messages[1].content", "count": 1
        })),
        "{findings}"
    );
    assert!(
        findings.as_array().unwrap().contains(&json!({
            "detector": "credit_card", "location": "$.messages[1].content", "count": 1
        })),
        "{findings}"
    );
    assert!(
        findings.as_array().unwrap().contains(&json!({
            "detector": "email", "location": "$.metadata.<key 0> (the key)", "count": 1
        })),
        "{findings}"
    );

    // A header that is not an identity header: present, value withheld.
    let r = rule(&ex, "AIP-3.2");
    assert_eq!(r["status"], "not_fired", "{r}");
    assert_eq!(
        r["condition"]["operands"][0]["value"],
        json!({"withheld": true})
    );
    // An identity value is shown; spend is this request's estimate in a fresh ledger.
    assert_eq!(ex["request"]["team"], "billing");
    let r = rule(&ex, "AIP-4.2");
    assert_eq!(r["status"], "not_fired", "{r}");
    assert_eq!(r["condition"]["operands"][0]["fresh_state"], true, "{r}");
    assert!(
        r["condition"]["operands"][0]["value"]["micros"]
            .as_i64()
            .unwrap()
            > 0,
        "{r}"
    );

    // Monitor mode: would have denied, changed nothing.
    let r = rule(&ex, "AIP-9.1");
    assert_eq!(
        (&r["status"], &r["effect"]),
        (&json!("fired"), &json!("would_have"))
    );
    assert_eq!(ex["outcome"]["action"], "allowed", "{ex}");
    let p: Vec<&Value> = ex["precedence"].as_array().unwrap().iter().collect();
    let monitor = p.iter().find(|f| f["id"] == "AIP-9.1").unwrap();
    assert!(
        monitor["why"].as_str().unwrap().contains("would have"),
        "{monitor}"
    );
    assert_eq!(
        ex["transforms"]["tokenised"],
        json!(["credit_card", "email"])
    );

    // Neither output carries a detected value or a withheld header value.
    let text = output_text(&writ(&["explain", &artifact, "--request", &req]));
    assert!(text.contains("spend(team, month) = "), "{text}");
    assert!(text.contains("(fresh state"), "{text}");
    assert!(text.contains("decided by: model not in"), "{text}");
    assert!(text.contains("would have"), "{text}");
    let json_text = ex.to_string();
    for secret in [EMAIL, CARD, "ann@example.org", "s3cr3t-header-value"] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
        assert!(!json_text.contains(secret), "{secret} in {json_text}");
    }
}

#[test]
fn deny_wins_over_tokenise_and_the_first_deny_answers() {
    let dir = TempDir::new("writ-explain-precedence");
    let artifact = build(dir.path(), FOCUSED);
    let req = write_json(dir.path(), "req.json", &focused_request("gpt-3.5-turbo"));
    let ex = explain_json(&artifact, &req, None);
    assert_eq!(
        ex["outcome"],
        json!({"action": "denied", "status": 403, "rule": "AIP-2.9", "phase": "request"})
    );
    let why = |id: &str| {
        ex["precedence"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {ex}"))
            .clone()
    };
    assert_eq!(why("AIP-2.9")["effect"], "enforced");
    let t = why("AIP-2.1");
    assert_eq!(t["effect"], "overridden", "{t}");
    assert_eq!(
        t["why"], "deny from AIP-2.9 wins (deny beats tokenise)",
        "{t}"
    );
    let d = why("AIP-3.1");
    assert_eq!(d["effect"], "overridden", "{d}");
    assert!(
        d["why"]
            .as_str()
            .unwrap()
            .contains("the first deny answers"),
        "{d}"
    );
    // Deny ranks first in the listing.
    assert_eq!(ex["precedence"][0]["action"], "deny");
    // A deny before every spend rule answers before the spend admission.
    let r = rule(&ex, "AIP-4.2");
    assert_eq!(r["status"], "not_reached", "{r}");
    assert!(ex["transforms"]["tokenised"].as_array().unwrap().is_empty());
}

#[test]
fn explains_response_rules_from_a_streamed_reply() {
    let dir = TempDir::new("writ-explain-reply");
    let artifact = workspace_root().join("policies/support-assistant.policy");
    let out = writ(&[
        "build",
        artifact.to_str().unwrap(),
        "--out",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    let artifact = dir.path().join("support-assistant-1.0.0.wasm");
    let artifact = artifact.to_str().unwrap();
    let req = write_json(
        dir.path(),
        "req.json",
        &json!({
            "headers": {"x-workflow": "support-assistant", "x-jwt-team": "billing"},
            "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        }),
    );
    // An e-mail address split across two events, and a low confidence.
    let rep = write_json(
        dir.path(),
        "reply.json",
        &json!({
            "headers": {"x-model-confidence": "0.41"},
            "events": [
                {"choices": [{"index": 0, "delta": {"content": "Write to ann"}}]},
                {"choices": [{"index": 0, "delta": {"content": "@example.com today"}}]},
                "[DONE]"
            ]
        }),
    );
    let ex = explain_json(artifact, &req, Some(&rep));
    let r = rule(&ex, "AIP-2.5");
    assert_eq!(r["status"], "fired", "{r}");
    assert_eq!(
        r["condition"]["findings"],
        json!([{"detector": "email", "location": "reply events $.choices[0].delta.content", "count": 1}])
    );
    assert_eq!(rule(&ex, "AIP-5.1")["status"], "fired");
    assert_eq!(ex["escalation"]["queue"], "support-review");
    assert_eq!(ex["escalation"]["rule"], "AIP-5.1");
    assert!(!ex.to_string().contains("ann@example.com"));

    // Without a reply, response rules are not evaluated, and say so.
    let ex = explain_json(artifact, &req, None);
    let r = rule(&ex, "AIP-5.1");
    assert_eq!(r["status"], "not_reached", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("no reply"), "{r}");
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = TempDir::new("writ-explain-errors");
    let artifact = build(dir.path(), FOCUSED);
    let good = write_json(dir.path(), "req.json", &focused_request("gpt-4o"));
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "{ not json").unwrap();
    let not_object = write_json(dir.path(), "list.json", &json!([1, 2]));
    let bad_headers = write_json(dir.path(), "headers.json", &json!({"headers": 7}));
    let foreign = dir.path().join("foreign.wasm");
    // A valid, empty wasm module: not a writ artifact.
    std::fs::write(&foreign, b"\0asm\x01\0\0\0").unwrap();
    let missing = dir.path().join("missing.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["explain", &artifact, "--request", missing.to_str().unwrap()],
            "cannot read",
        ),
        (
            vec!["explain", "nope.wasm", "--request", &good],
            "cannot read nope.wasm",
        ),
        (
            vec![
                "explain",
                &artifact,
                "--request",
                not_json.to_str().unwrap(),
            ],
            "is not valid JSON",
        ),
        (
            vec!["explain", &artifact, "--request", &not_object],
            "a request file is a JSON object",
        ),
        (
            vec!["explain", &artifact, "--request", &bad_headers],
            "`headers` must be an object",
        ),
        (
            vec!["explain", foreign.to_str().unwrap(), "--request", &good],
            "is not a writ artifact",
        ),
        (
            vec![
                "explain",
                &artifact,
                "--request",
                &good,
                "--reply",
                &not_object,
            ],
            "a reply file is a JSON object",
        ),
    ];
    for (args, needle) in cases {
        let out = writ(&args);
        let t = output_text(&out);
        assert!(!out.status.success(), "{args:?}: {t}");
        assert!(t.contains(needle), "{args:?}: {t}");
        assert!(!t.contains("panicked"), "{args:?}: {t}");
    }
    // A body the engine refuses is explained, not an error of the tool.
    let raw = write_json(
        dir.path(),
        "raw.json",
        &json!({"headers": {"x-workflow": "support"}, "body_text": "{\"model\":"}),
    );
    let ex = explain_json(&artifact, &raw, None);
    assert_eq!(ex["outcome"]["action"], "refused", "{ex}");
    assert_eq!(ex["outcome"]["status"], 400, "{ex}");
    assert_eq!(rule(&ex, "AIP-3.1")["status"], "not_reached");

    // A JSON-RPC message off a model API's path is MCP, which explain does not explain; on
    // a model API's path (a query string does not change the path) it is a model request,
    // as the gateway treats it.
    let rpc = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let at = |path: &str| json!({"method": "POST", "path": path, "headers": {"x-workflow": "support"}, "body": rpc});
    let mcp = write_json(dir.path(), "mcp.json", &at("/mcp"));
    let out = writ(&["explain", &artifact, "--request", &mcp]);
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("this is an MCP message"), "{t}");
    let model = write_json(dir.path(), "model.json", &at("/v1/chat/completions?x=1"));
    let ex = explain_json(&artifact, &model, None);
    assert!(ex["outcome"]["action"].is_string(), "{ex}");
}
