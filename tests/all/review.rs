//! `writ review`: real traffic through `writ serve` for the HOTL support assistant, first
//! with confident replies (the measured verification rate holds the 10% assumption, Q1
//! passes), then with low-confidence ones until it drifts past it (Q1 fails and names both
//! numbers). The same audit log gives all three formats; a tampered log and a record from
//! an artifact nobody built from the policy fail their gates.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::http::{Request, send};
use crate::support::serve::ServeProcess;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{output_text, workspace_root, writ_in};

const POLICY: &str = "policies/support-assistant.policy";
/// All bundled policies: together they cover every clause of the paper policy.
const ALL: &[&str] = &[
    "policies/claims-assistant.policy",
    "policies/code-assistant.policy",
    POLICY,
];

/// A chat completion whose response carries `x-model-confidence: confidence`.
fn reply_with_confidence(confidence: &str) -> Reply {
    let body = serde_json::json!({
        "id": "chatcmpl-review",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Your plan renews monthly."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-model-confidence: {confidence}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    Reply::Raw {
        bytes: (head + &body).into_bytes(),
        reset: false,
    }
}

fn ask(serve: &ServeProcess, id: &str) {
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "When does my plan renew?"}]});
    let req = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-jwt-team", "billing")
        .header("x-request-id", id);
    let resp = send(
        crate::support::cases::Gateway::addr(serve),
        &req,
        Duration::from_secs(20),
    )
    .unwrap_or_else(|e| panic!("{id}: {e}\n{}", serve.log()));
    assert_eq!(
        resp.status,
        200,
        "{id}: {}\n{}",
        resp.body_str(),
        serve.log()
    );
}

/// Waits until the audit log has `n` lines.
fn wait_for_lines(audit: &Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(audit).unwrap_or_default();
        if text.lines().count() >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "{n} records expected:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn review(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["review"];
    all.extend_from_slice(args);
    let out = writ_in(workspace_root(), &all);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        output_text(&out),
    )
}

fn review_json(audit: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    review_policies(&[POLICY], audit, extra)
}

fn review_policies(policies: &[&str], audit: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let audit = audit.to_string_lossy().into_owned();
    let mut args = policies.to_vec();
    args.extend(["--audit", audit.as_str(), "--format", "json"]);
    args.extend_from_slice(extra);
    let (code, stdout, all) = review(&args);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}:\n{all}"));
    (code, json)
}

fn question<'a>(review: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    review["questions"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["id"] == id))
        .unwrap_or_else(|| panic!("no {id} in {review:#}"))
}

fn check<'a>(review: &'a serde_json::Value, q: &str, id: &str) -> &'a serde_json::Value {
    question(review, q)["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no {q}/{id} in {review:#}"))
}

/// Runs the traffic once: 10 confident replies (snapshot: `holds.jsonl`), then
/// low-confidence ones until the measured rate passes 10% (`drifted.jsonl`).
fn traffic(dir: &Path) -> (PathBuf, PathBuf) {
    let upstream = Upstream::start(reply_with_confidence("0.95"));
    let audit = dir.join("audit.jsonl");
    let serve = ServeProcess::start_with(
        &workspace_root().join(POLICY),
        upstream.addr(),
        &["--audit-log".into(), audit.to_string_lossy().into_owned()],
    )
    .unwrap();
    for i in 0..10 {
        ask(&serve, &format!("confident-{i}"));
    }
    let holds = dir.join("holds.jsonl");
    std::fs::write(&holds, wait_for_lines(&audit, 10)).unwrap();
    upstream.set_reply(reply_with_confidence("0.20"));
    for i in 0..2 {
        ask(&serve, &format!("unsure-{i}"));
    }
    let drifted = dir.join("drifted.jsonl");
    std::fs::write(&drifted, wait_for_lines(&audit, 12)).unwrap();
    // The gateway's own counters, scraped while it runs, agree with the audit log.
    let url = format!(
        "http://{}/metrics",
        crate::support::cases::Gateway::addr(&serve)
    );
    let (_, r) = review_json(&drifted, &["--metrics", &url]);
    let routed = check(&r, "q3", "escalations_routed")["evidence"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(routed.contains("2 escalations routed"), "{routed}");
    assert!(routed.contains("the scrape counts 2 "), "{routed}");
    (holds, drifted)
}

#[test]
fn review_fails_q1_on_drift_and_passes_when_the_assumption_holds() {
    let dir = TempDir::new("review");
    let (holds, drifted) = traffic(dir.path());

    // 2 of 12 outputs escalated: 16.7% against the assumed 10%.
    let (code, r) = review_json(&drifted, &[]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["verdict"], "fail");
    assert_eq!(question(&r, "q1")["verdict"], "fail", "{r:#}");
    let drift = check(&r, "q1", "verification_rate:support-assistant");
    let text = drift["evidence"].as_str().unwrap();
    assert!(text.contains("drift"), "{text}");
    assert!(text.contains("assumes 10%"), "{text}");
    assert!(text.contains("observed 16.7%"), "{text}");
    assert!(text.contains("2 of 12"), "{text}");
    let conflicts = r["conflicts"].to_string();
    assert!(
        conflicts.contains("strategy assumes 10% verification"),
        "{conflicts}"
    );
    // HOTL escalations without verdicts: a finding, and the layer conflict named.
    assert_eq!(
        check(&r, "q3", "escalations_reviewed:support-assistant")["verdict"],
        "fail"
    );
    assert!(conflicts.contains("no review verdicts are logged, so compliance cannot be proved"));
    assert_eq!(check(&r, "q3", "escalations_routed")["verdict"], "pass");
    assert_eq!(check(&r, "q3", "handoff_context")["verdict"], "pass");
    // The artifact `writ serve` ran is the one built from the policy.
    assert_eq!(
        check(&r, "q2", "artifact_tested")["verdict"],
        "pass",
        "{r:#}"
    );
    assert_eq!(check(&r, "q4", "audit_chain")["verdict"], "pass");
    assert_eq!(check(&r, "q4", "audit_lookup")["verdict"], "pass");
    // The policy's team budget (AIP-4.2) is read, but this traffic's `x-jwt-team` came from
    // the client, so `writ serve` dropped it: no record names a team to hold against it.
    let headroom = check(&r, "q1", "budget_headroom");
    assert_eq!(headroom["verdict"], "unknown", "{headroom}");
    assert_eq!(
        headroom["evidence"],
        "no request record in the window carries `cost_micros` for a capped scope"
    );
    // The business case from the policy: AI spend per request + 16.7% × 4.50 EUR review
    // = 0.75 EUR and a few micros, within the assumed 1.10 EUR.
    let cost = check(&r, "q1", "cost_per_transaction:support-assistant");
    assert_eq!(cost["verdict"], "pass", "{cost}");
    let text = cost["evidence"].as_str().unwrap();
    assert!(
        text.contains("assumes 1.10 EUR per transaction, observed 0.75"),
        "{text}"
    );
    assert!(text.contains("16.7% verified × 4.50 EUR review"), "{text}");
    assert!(text.contains("the manual process costs 6.00 EUR"), "{text}");
    let observed = &r["observed"][0];
    assert_eq!(observed["assumed_cost_micros"], 1_100_000);
    assert_eq!(observed["review_cost_micros"], 4_500_000);
    let per_tx = observed["cost_per_transaction_micros"].as_f64().unwrap();
    let spend = observed["ai_spend_micros"].as_f64().unwrap();
    assert!(spend > 0.0, "{observed}");
    assert!(
        (per_tx - (spend + 2.0 / 12.0 * 4_500_000.0)).abs() < 1e-6,
        "{observed}"
    );

    // The same traffic against a tighter business case (0.50 EUR per transaction, still
    // consistent on paper: 10% × 4.50 EUR = 0.45 EUR): production breaks it.
    let tight = dir.path().join("tight.policy");
    let source = std::fs::read_to_string(workspace_root().join(POLICY)).unwrap();
    let tightened = source.replacen(
        "assume cost_per_transaction <= 1.10 EUR",
        "assume cost_per_transaction <= 0.50 EUR",
        1,
    );
    assert_ne!(tightened, source);
    std::fs::write(&tight, tightened).unwrap();
    let (code, t) = review_policies(&[tight.to_str().unwrap()], &drifted, &[]);
    assert_eq!(code, 1, "{t:#}");
    let cost = check(&t, "q1", "cost_per_transaction:support-assistant");
    assert_eq!(cost["verdict"], "fail", "{cost}");
    let text = cost["evidence"].as_str().unwrap();
    assert!(
        text.contains("assumes 0.50 EUR per transaction, observed 0.75"),
        "{text}"
    );
    assert!(
        t["conflicts"].to_string().contains(
            "strategy assumes 0.50 EUR per transaction for `support-assistant` while production measures 0.75"
        ),
        "{t:#}"
    );

    // Reviewed alone, the support assistant leaves clauses to the other policies.
    assert_eq!(check(&r, "q2", "clauses")["verdict"], "fail", "{r:#}");

    // 0 of 10 escalated: the assumption holds. With all three policies every clause is
    // enforced or owned by hand.
    let (code, r) = review_policies(ALL, &holds, &[]);
    assert_eq!(check(&r, "q2", "clauses")["verdict"], "pass", "{r:#}");
    assert_eq!(question(&r, "q1")["verdict"], "pass", "{r:#}");
    let held = check(&r, "q1", "verification_rate:support-assistant");
    assert!(
        held["evidence"].as_str().unwrap().contains("observed 0%"),
        "{held}"
    );
    assert_ne!(r["verdict"], "fail", "{r:#}");
    assert_eq!(code, 0);
    // Every bundled workflow fills its rollout pack, and Q5 reads the DRI and the go-live
    // date from it.
    for (workflow, dri, go_live) in [
        (
            "claims-assistant",
            "head-of-claims@example.com",
            "2026-11-16",
        ),
        (
            "code-assistant",
            "head-of-engineering@example.com",
            "2027-01-11",
        ),
        (
            "support-assistant",
            "head-of-support@example.com",
            "2026-10-01",
        ),
    ] {
        assert_eq!(
            r["rollout_pack_missing"][workflow],
            serde_json::json!([]),
            "{r:#}"
        );
        let pack = check(&r, "q5", &format!("rollout_pack:{workflow}"));
        assert_eq!(pack["verdict"], "pass", "{pack}");
        let d = check(&r, "q5", &format!("dri:{workflow}"));
        assert!(d["evidence"].as_str().unwrap().contains(dri), "{d}");
        let g = check(&r, "q5", &format!("go_live:{workflow}"));
        assert_eq!(
            g["evidence"],
            format!("`{workflow}` goes live {go_live} (from the rollout pack)")
        );
        assert_eq!(
            check(&r, "q1", &format!("cost_per_transaction:{workflow}"))["verdict"],
            if workflow == "support-assistant" {
                "pass"
            } else {
                // No traffic of the other workflows in this log.
                "unknown"
            }
        );
    }
    assert_eq!(question(&r, "q5")["verdict"], "pass", "{r:#}");

    // --since after the traffic: nothing to measure, so unknown, not pass.
    let (_, r) = review_json(&drifted, &["--since", "2999-01-01"]);
    assert_eq!(question(&r, "q1")["verdict"], "unknown", "{r:#}");

    // The other formats from the same log.
    let audit = drifted.to_string_lossy().into_owned();
    let (code, md, all) = review(&[POLICY, "--audit", &audit]);
    assert_eq!(code, 1, "{all}");
    assert!(md.contains("**Verdict: fail**"), "{md}");
    assert!(md.contains("## 1. Does the business case survive"), "{md}");
    assert!(md.contains("observed 16.7%"), "{md}");
    let (code, html, all) = review(&[POLICY, "--audit", &audit, "--format", "html"]);
    assert_eq!(code, 1, "{all}");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(html.matches("<svg").count() >= 3, "{html}");
    assert!(html.contains("<polyline"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "the page must fetch nothing:\n{html}"
    );
    assert!(!html.contains("<script"), "{html}");

    // A tampered log fails its gate.
    let text = std::fs::read_to_string(&drifted).unwrap();
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(
        &tampered,
        text.replacen("\"status\":200", "\"status\":204", 1),
    )
    .unwrap();
    let (code, r) = review_json(&tampered, &[]);
    assert_eq!(code, 1);
    assert_eq!(check(&r, "q4", "audit_chain")["verdict"], "fail", "{r:#}");
    assert_eq!(r["verdict"], "fail");

    // A record from an artifact not built from the policy, in a chain that verifies.
    let foreign = dir.path().join("foreign.jsonl");
    let mut prev = writ::audit_log::GENESIS.to_string();
    let mut out = String::new();
    for line in std::fs::read_to_string(&holds).unwrap().lines() {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["artifact_sha256"] = serde_json::json!("ab".repeat(32));
        let chained = writ::audit_log::chain_line(&v, &prev);
        prev = writ::audit_log::sha256_hex(chained.as_bytes());
        out.push_str(&chained);
        out.push('\n');
    }
    std::fs::write(&foreign, out).unwrap();
    let (code, r) = review_json(&foreign, &[]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(check(&r, "q4", "audit_chain")["verdict"], "pass", "{r:#}");
    let untested = check(&r, "q2", "artifact_tested");
    assert_eq!(untested["verdict"], "fail", "{r:#}");
    assert!(
        untested["evidence"]
            .as_str()
            .unwrap()
            .contains(&"ab".repeat(32))
    );
}

#[test]
fn review_input_errors_exit_2_and_the_template_lists_the_pack() {
    let (code, _, all) = review(&[POLICY, "--audit", "no/such/audit.jsonl"]);
    assert_eq!(code, 2, "{all}");
    assert!(all.contains("cannot read no/such/audit.jsonl"), "{all}");
    let (code, _, all) = review(&[POLICY, "--audit", POLICY, "--since", "last week"]);
    assert_eq!(code, 2, "{all}");
    assert!(all.contains("--since `last week` is not a date"), "{all}");

    let (code, pack, all) = review(&["--template", "support-assistant"]);
    assert_eq!(code, 0, "{all}");
    assert!(pack.contains("workflow \"support-assistant\""), "{pack}");
    for field in writ_compiler::rollout::FIELDS {
        assert!(
            pack.lines()
                .any(|l| l.trim_start().starts_with(&format!("{} ", field.name))),
            "{} missing:\n{pack}",
            field.name
        );
    }
    // The template is the policy's own syntax: pasted into a workflow, every field name
    // is known and only the placeholder date needs filling.
    let dir = TempDir::new("review-template");
    let policy = dir.path().join("t.policy");
    std::fs::write(
        &policy,
        format!(
            "policy \"t\" version \"1.0.0\" {{\n  owner \"o@example.com\"\n  implements \"ai-policy.md\"\n}}\n\nworkflow \"support-assistant\" {{\n  match header \"x-workflow\" == \"support-assistant\"\n{pack}}}\n"
        ),
    )
    .unwrap();
    let out = writ_in(dir.path(), &["check", "t.policy"]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains("E0130"), "{text}");
    assert!(!text.contains("error[E0001]"), "{text}");
    assert!(text.contains("`go_live` is not a date"), "{text}");
}

/// A workflow whose rollout pack misses a field is not ready: the review lists the field
/// and fails.
#[test]
fn review_fails_a_workflow_whose_rollout_pack_is_incomplete() {
    let dir = TempDir::new("review-pack");
    let source = std::fs::read_to_string(workspace_root().join(POLICY)).unwrap();
    let without: String = source
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            // The pack's `fallback` field, not the workflow's `fallback on …` statement.
            let pack_fallback = l.starts_with("fallback ") && !l.starts_with("fallback on ");
            !pack_fallback && !l.starts_with("dri ")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(source.lines().count(), without.lines().count() + 2);
    let policy = dir.path().join("support.policy");
    std::fs::write(&policy, without).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let record = serde_json::json!({"event": "kill_switch", "time": "2026-12-01T00:00:00.000000Z", "request_id": "", "policy": "support-assistant", "policy_version": "1.0.0", "source_sha256": "", "status": 401, "outcome": "unauthorized"});
    std::fs::write(
        &audit,
        writ::audit_log::chain_line(&record, writ::audit_log::GENESIS) + "\n",
    )
    .unwrap();
    let (code, r) = review_policies(
        &[policy.to_str().unwrap()],
        &audit,
        &["--go-live", "2026-11-02"],
    );
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(
        r["rollout_pack_missing"]["support-assistant"],
        serde_json::json!(["dri", "fallback"])
    );
    let pack = check(&r, "q5", "rollout_pack:support-assistant");
    assert_eq!(pack["verdict"], "fail");
    assert!(
        pack["evidence"]
            .as_str()
            .unwrap()
            .contains("2 of 23 fields missing (dri, fallback)"),
        "{pack}"
    );
    assert_eq!(check(&r, "q5", "dri:support-assistant")["verdict"], "fail");
    // `--go-live` overrides the pack's date, and says so.
    assert_eq!(
        check(&r, "q5", "go_live:support-assistant")["evidence"],
        "`support-assistant` goes live 2026-11-02 (from `--go-live`, overriding the policy's 2026-10-01)"
    );
    let (_, md, _) = review(&[policy.to_str().unwrap(), "--audit", audit.to_str().unwrap()]);
    assert!(
        md.contains("- `support-assistant`: dri, fallback (`writ review --template support-assistant` prints the block to fill)"),
        "{md}"
    );
}

/// Rollback needs an older version of the policy, signed by a trusted key, in the
/// artifacts folder: verified with `--trust`, unknown without it, failed when unsigned.
#[test]
fn review_finds_a_signed_older_artifact_to_roll_back_to() {
    let dir = TempDir::new("review-rollback");
    let d = dir.path();
    let keygen = writ_in(d, &["keygen", "--out", "ci"]);
    assert!(keygen.status.success(), "{}", output_text(&keygen));
    let source = std::fs::read_to_string(workspace_root().join(POLICY)).unwrap();
    let old = source.replacen("version \"1.0.0\"", "version \"0.9.0\"", 1);
    assert_ne!(old, source);
    std::fs::write(d.join("old.policy"), old).unwrap();
    let audit = d.join("audit.jsonl");
    let record = serde_json::json!({"event": "kill_switch", "time": "2026-12-01T00:00:00.000000Z", "request_id": "", "policy": "support-assistant", "policy_version": "1.0.0", "source_sha256": "", "status": 401, "outcome": "unauthorized"});
    std::fs::write(
        &audit,
        writ::audit_log::chain_line(&record, writ::audit_log::GENESIS) + "\n",
    )
    .unwrap();
    let policy = workspace_root().join(POLICY).to_string_lossy().into_owned();
    let audit_arg = audit.to_string_lossy().into_owned();
    let rollback = |extra: &[&str]| {
        let mut args = vec![
            "review",
            policy.as_str(),
            "--audit",
            audit_arg.as_str(),
            "--artifacts",
            "out",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        let out = writ_in(d, &args);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));
        check(&r, "q4", "rollback:support-assistant").clone()
    };

    let build = writ_in(d, &["build", "old.policy", "--out", "out"]);
    assert!(build.status.success(), "{}", output_text(&build));
    let unsigned = rollback(&["--trust", "ci.pub"]);
    assert_eq!(unsigned["verdict"], "fail", "{unsigned}");
    assert!(unsigned["evidence"].as_str().unwrap().contains("unsigned"));

    std::fs::remove_dir_all(d.join("out")).unwrap();
    let build = writ_in(
        d,
        &["build", "old.policy", "--out", "out", "--sign", "ci.key"],
    );
    assert!(build.status.success(), "{}", output_text(&build));
    let trusted = rollback(&["--trust", "ci.pub"]);
    assert_eq!(trusted["verdict"], "pass", "{trusted}");
    assert!(
        trusted["evidence"]
            .as_str()
            .unwrap()
            .contains("support-assistant-0.9.0.wasm")
    );
    let unverified = rollback(&[]);
    assert_eq!(unverified["verdict"], "unknown", "{unverified}");
    assert!(unverified["evidence"].as_str().unwrap().contains("--trust"));
}
