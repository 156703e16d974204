//! Issue 5, end to end: every governance rule family, from one table of cases, in both hosts
//! (real Envoy on V8 and `writ serve` on wasmtime), each with the artifact `writ build`
//! wrote and the deployment configuration an operator would give it.
//!
//! The table ([`cases`]) names the policy each case runs under; per host, one gateway per
//! policy runs its cases in table order (a budget is exhausted after it settles, the kill
//! switch comes last). Cases return a note (a measurement) that the test prints.
//!
//! Where the hosts legitimately differ, the cases read through [`WritGateway`], which
//! hides it: metrics come from Envoy's admin `/stats/prometheus` or `writ serve`'s
//! `/metrics` on the listener, parsed into the same labelled series; audit records from
//! Envoy's application log or `writ serve`'s stderr (the marker-prefixed line is the same;
//! only Envoy's prefix differs). Both run two workers, so the kill switch and the budget
//! ledger are exercised across VMs through shared data in both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::cases::Gateway;
use crate::support::hosts::{HostKind, Options, REVIEW_PATH, WritGateway, build_policy};
use crate::support::http::{Request, Response, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::workspace_root;

/// The operator token whose sha256 the bundled policies hold.
const KILL_TOKEN: &str = "test";
const T: Duration = Duration::from_secs(20);

/// A small budget: each request costs a known amount from the upstream's `usage`.
pub const BUDGET_POLICY: &str = r#"# A small daily team budget, for end-to-end budget tests.
policy "budget-test" version "0.1.0" {
  owner       "security@example.com"
  implements  "ai-policy.md"
  currency    EUR
}

workflow "budget" {
  match header "x-workflow" == "budget"
  oversight HIC sample 2%
  assume verification_rate <= 2%
  identify team by header "x-team", user by header "x-user"
}

price "gpt-4o-mini" input 100 EUR output 100 EUR per 1M tokens

rule AIP-4.2 "Daily team budget" {
  on request
  when spend(team, day) > 0.05 EUR
  then deny 429 "Daily AI budget reached."
}
"#;

/// The budget's cap in micros (`0.05 EUR`).
pub const BUDGET_CAP_MICROS: i64 = 50_000;
/// What one request costs: [`Reply::chat`]'s usage is 10 prompt + 5 completion tokens, at
/// 100 EUR per million tokens each = 100 micros per token.
pub const COST_PER_REQUEST_MICROS: i64 = 15 * 100;

/// Writes [`BUDGET_POLICY`] (with the paper policy it implements) into `dir` and builds it.
pub fn build_budget_policy(dir: &Path) -> PathBuf {
    let source = dir.join("budget-test.policy");
    let paper = workspace_root().join("policies/ai-policy.md");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&source, BUDGET_POLICY).unwrap();
    std::fs::copy(paper, dir.join("ai-policy.md")).unwrap();
    build_policy(&source, &dir.join("out"))
}

/// A request of the budget workflow, with a prompt long enough that the gateway's
/// pre-call estimate is above the real cost (so the reservation covers the settlement).
pub fn budget_request(team: &str) -> Request {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user",
        "content": "Summarise the attached ticket history for the weekly report, in one line."}]});
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "budget")
        .header("x-team", team)
        .header("x-user", "u1")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Policy {
    Support,
    Code,
    Budget,
}

/// What a case runs against.
struct Env<'a> {
    gw: &'a WritGateway,
    upstream: &'a Upstream,
    review: &'a Upstream,
}

struct FamilyCase {
    name: &'static str,
    policy: Policy,
    run: fn(&Env) -> Result<String, String>,
}

fn support_chat(model: &str, content: &str, id: &str) -> Request {
    let body = json!({"model": model, "messages": [{"role": "user", "content": content}]});
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-jwt-team", "billing")
        .header("x-jwt-sub", "agent-7")
        .header("x-request-id", id)
}

fn call(env: &Env, req: &Request) -> Result<Response, String> {
    send(env.gw.addr(), req, T).map_err(|e| format!("request failed: {e}"))
}

fn describe(res: &Response) -> String {
    format!("status {} body {}", res.status, res.body_str())
}

/// An OpenAI-style error with the given status and code.
fn expect_error(res: &Response, status: u16, code: &str) -> Result<(), String> {
    let e = &res.json()["error"];
    if res.status == status
        && e["message"].is_string()
        && e["type"].is_string()
        && e["code"] == code
    {
        Ok(())
    } else {
        Err(format!(
            "expected {status} with error code `{code}`, got {}",
            describe(res)
        ))
    }
}

fn upstream_count_unchanged(env: &Env, before: usize) -> Result<(), String> {
    let after = env.upstream.received().len();
    if after == before {
        Ok(())
    } else {
        Err(format!(
            "{} request(s) reached the upstream",
            after - before
        ))
    }
}

fn model_allowlist_deny(env: &Env) -> Result<String, String> {
    let before = env.upstream.received().len();
    let res = call(env, &support_chat("gpt-3.5-turbo", "hello", "fam-deny"))?;
    expect_error(&res, 403, "AIP-3.1")?;
    if res.json()["error"]["message"] != "Model not approved for the support assistant." {
        return Err(format!("message: {}", describe(&res)));
    }
    upstream_count_unchanged(env, before)?;
    Ok(String::new())
}

fn escalation_handoff(env: &Env) -> Result<String, String> {
    // `Reply::chat` carries no confidence score: HOTL fails safe and escalates.
    env.upstream
        .set_reply(Reply::chat("Your refund is on its way."));
    let reviews_before = env.review.received().len();
    let res = call(
        env,
        &support_chat("gpt-4o-mini", "Where is my refund?", "fam-esc"),
    )?;
    if res.status != 200 {
        return Err(describe(&res));
    }
    let queue = res.header_value("x-writ-review-queue");
    let id = res.header_value("x-writ-review-id").unwrap_or_default();
    let reason = res.header_value("x-writ-review-reason").unwrap_or_default();
    if queue != Some("support-review") || id.is_empty() || reason.is_empty() {
        return Err(format!("review headers missing: {:?}", res.headers));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let handoff = loop {
        if let Some(h) = env.review.received().get(reviews_before) {
            break h.clone();
        }
        if Instant::now() > deadline {
            return Err("no handoff reached the review queue within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let payload: Value = serde_json::from_slice(&handoff.body).unwrap_or_default();
    if handoff.method != "POST"
        || handoff.path != REVIEW_PATH
        || payload["review_id"] != id
        || payload["queue"] != "support-review"
        || payload["request_id"] != "fam-esc"
    {
        return Err(format!(
            "handoff {} {}: {payload}",
            handoff.method, handoff.path
        ));
    }
    Ok(format!("handoff {id} posted"))
}

fn audit_one_record_per_request(env: &Env) -> Result<String, String> {
    env.upstream.set_reply(Reply::chat("Noted."));
    let email = "audit.person@example.com";
    let ids = ["fam-audit-1", "fam-audit-2", "fam-audit-3"];
    for (i, id) in ids.iter().enumerate() {
        let model = if i == 2 {
            "gpt-3.5-turbo"
        } else {
            "gpt-4o-mini"
        };
        call(env, &support_chat(model, &format!("mail {email}"), id))?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = env.gw.audit_records();
        let per_id: Vec<usize> = ids
            .iter()
            .map(|id| {
                records
                    .iter()
                    .filter(|r| r["event"] == "request" && r["request_id"] == *id)
                    .count()
            })
            .collect();
        if per_id == [1, 1, 1] {
            // Give a duplicate a moment to show up, then check again.
            std::thread::sleep(Duration::from_millis(200));
            let again = env.gw.audit_records();
            let n = again
                .iter()
                .filter(|r| r["event"] == "request")
                .filter(|r| ids.iter().any(|id| r["request_id"] == *id))
                .count();
            if n != 3 {
                return Err(format!("{n} records for 3 requests"));
            }
            let log = env.gw.log();
            if log.contains(email) {
                return Err("the e-mail value is in the gateway's log".into());
            }
            let denied = again
                .iter()
                .find(|r| r["request_id"] == "fam-audit-3")
                .cloned()
                .unwrap_or_default();
            if denied["status"] != 403 {
                return Err(format!("denied request's record: {denied}"));
            }
            // Both CLIs tell the artifact its hash, so every record names the artifact.
            let sha = denied["artifact_sha256"].as_str().unwrap_or_default();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("no artifact_sha256 in {denied}"));
            }
            return Ok(String::new());
        }
        if Instant::now() > deadline {
            return Err(format!("audit records per request: {per_id:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Series every host must export after the cases above (`family;label=value`: at least
/// these labels).
const SUPPORT_METRICS: &[&str] = &[
    "writ_requests_total;workflow=support-assistant;outcome=allowed",
    "writ_requests_total;workflow=support-assistant;outcome=denied",
    "writ_escalations_total;workflow=support-assistant;queue=support-review",
    "writ_reservations_in_flight",
];

fn metrics_exported(env: &Env) -> Result<String, String> {
    let page = env.gw.writ_exposition();
    let names: BTreeSet<String> = page.samples.iter().map(|s| s.key()).collect();
    let missing: Vec<&&str> = SUPPORT_METRICS
        .iter()
        .filter(|m| page.sum_matching(m).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing {missing:?}; exported {names:?}"));
    }
    let denied = page
        .sum_matching("writ_requests_total;outcome=denied")
        .unwrap_or_default();
    if denied < 2.0 {
        return Err(format!("denied counter {denied}"));
    }
    let raw = env.gw.prometheus();
    let sample = raw
        .lines()
        .find(|l| l.contains("writ_escalations_total") && !l.starts_with('#'))
        .unwrap_or_default()
        .to_string();
    Ok(format!("{} writ metrics, e.g. `{sample}`", names.len()))
}

fn kill_switch(env: &Env) -> Result<String, String> {
    let admin = |token: &str, action: &str| {
        let body = json!({"workflow": "support-assistant", "action": action,
            "reason": "INC-1: drill", "by": "oncall@example.com"});
        let req = Request::post_json("/writ/admin/kill-switch", &body.to_string())
            .header("authorization", &format!("Bearer {token}"));
        call(env, &req)
    };
    let ok = || call(env, &support_chat("gpt-4o-mini", "hi", "fam-kill"));
    let before = env.upstream.received().len();
    let wrong = admin("not-the-token", "stop")?;
    if wrong.status != 401 {
        return Err(format!("wrong token: {}", describe(&wrong)));
    }
    upstream_count_unchanged(env, before)?;
    if ok()?.status != 200 {
        return Err("a wrong token stopped the workflow".into());
    }
    // Flip latency: from sending the stop to the first request answered 503, and how
    // many requests after the admin call's 200 still got the old answer (shared data is
    // written before the admin call answers, so none should).
    let late = std::cell::Cell::new(0u32);
    let flip = |action: &str, want: u16| -> Result<Duration, String> {
        let start = Instant::now();
        let res = admin(KILL_TOKEN, action)?;
        if res.status != 200 {
            return Err(format!("{action}: {}", describe(&res)));
        }
        loop {
            if ok()?.status == want {
                return Ok(start.elapsed());
            }
            late.set(late.get() + 1);
            if start.elapsed() > Duration::from_secs(5) {
                return Err(format!("not {want} within 5 s of {action}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let stop = flip("stop", 503)?;
    // Every later request, on fresh connections (so on any worker), is stopped.
    let before = env.upstream.received().len();
    for _ in 0..10 {
        expect_error(&ok()?, 503, "kill_switch")?;
    }
    upstream_count_unchanged(env, before)?;
    let resume = flip("resume", 200)?;
    for _ in 0..5 {
        let res = ok()?;
        if res.status != 200 {
            return Err(format!("after resume: {}", describe(&res)));
        }
    }
    // More cycles, for the worst case.
    let (mut worst_stop, mut worst_resume) = (stop, resume);
    for _ in 0..10 {
        worst_stop = worst_stop.max(flip("stop", 503)?);
        worst_resume = worst_resume.max(flip("resume", 200)?);
    }
    Ok(format!(
        "stop→503 in {stop:?}, resume→200 in {resume:?}; worst of 11 cycles {worst_stop:?} / \
         {worst_resume:?}; requests answered the old way after the admin 200: {}",
        late.get()
    ))
}

fn route_to_cheapest(env: &Env) -> Result<String, String> {
    env.upstream.set_reply(Reply::chat("fn main() {}"));
    let body = json!({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "a hello world"}]});
    let req = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "code-assistant")
        .header("x-jwt-team", "apps")
        .header("x-jwt-sub", "dev-1");
    let before = env.upstream.received().len();
    let res = call(env, &req)?;
    if res.status != 200 {
        return Err(describe(&res));
    }
    let seen = env.upstream.received();
    let [forwarded] = &seen[before..] else {
        return Err(format!("{} requests upstream", seen.len() - before));
    };
    let sent: Value = serde_json::from_slice(&forwarded.body).unwrap_or_default();
    if sent["model"] != "gpt-4o-mini" {
        return Err(format!("upstream got model {}", sent["model"]));
    }
    Ok(String::new())
}

fn budget_settles_from_usage(env: &Env) -> Result<String, String> {
    env.upstream.set_reply(Reply::chat("ok"));
    let res = call(env, &budget_request("t-settle"))?;
    if res.status != 200 {
        return Err(describe(&res));
    }
    let records = env.gw.wait_audit("request", 1, Duration::from_secs(10));
    let record = records.last().cloned().unwrap_or_default();
    if record["cost_micros"] != COST_PER_REQUEST_MICROS || record["cost_estimated"] != false {
        return Err(format!("audit record: {record}"));
    }
    let ledger = wait_metric(
        env.gw,
        "writ_spend_micros_total;workflow=budget;team=t-settle",
    );
    if ledger != Some(COST_PER_REQUEST_MICROS as f64) {
        return Err(format!(
            "ledger metric {ledger:?}; exported {:?}",
            env.gw.writ_metrics()
        ));
    }
    Ok(String::new())
}

/// Reads a metric, waiting up to 5 s for it to appear (Envoy flushes stats to its admin
/// page asynchronously).
pub fn wait_metric(gw: &WritGateway, name: &str) -> Option<f64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = gw.metric(name);
        if v.is_some() || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn budget_denies_with_429(env: &Env) -> Result<String, String> {
    env.upstream.set_reply(Reply::chat("ok"));
    let mut admitted = 0;
    for _ in 0..200 {
        let before = env.upstream.received().len();
        let res = call(env, &budget_request("t-deny"))?;
        if res.status == 200 {
            admitted += 1;
            continue;
        }
        expect_error(&res, 429, "AIP-4.2")?;
        upstream_count_unchanged(env, before)?;
        let spent = admitted * COST_PER_REQUEST_MICROS;
        if spent > BUDGET_CAP_MICROS {
            return Err(format!("{admitted} admitted, {spent} micros over the cap"));
        }
        let ledger = wait_metric(
            env.gw,
            "writ_spend_micros_total;workflow=budget;team=t-deny",
        );
        if ledger != Some(spent as f64) {
            return Err(format!("ledger {ledger:?}, settled {spent}"));
        }
        return Ok(format!(
            "{admitted} admitted ({spent} micros of {BUDGET_CAP_MICROS}), then 429"
        ));
    }
    Err("no 429 after 200 requests".into())
}

/// The table: every family, each under the policy that declares it.
fn cases() -> Vec<FamilyCase> {
    let case = |name, policy, run| FamilyCase { name, policy, run };
    vec![
        case(
            "model allowlist deny",
            Policy::Support,
            model_allowlist_deny,
        ),
        case(
            "escalation: review headers and handoff",
            Policy::Support,
            escalation_handoff,
        ),
        case(
            "audit: one record per request, no values",
            Policy::Support,
            audit_one_record_per_request,
        ),
        case(
            "metrics: the same names in both hosts",
            Policy::Support,
            metrics_exported,
        ),
        case(
            "kill switch: 401, stop, resume",
            Policy::Support,
            kill_switch,
        ),
        case("route to cheapest", Policy::Code, route_to_cheapest),
        case(
            "budget settles from usage",
            Policy::Budget,
            budget_settles_from_usage,
        ),
        case("budget deny 429", Policy::Budget, budget_denies_with_429),
    ]
}

#[test]
fn every_rule_family_holds_in_both_hosts() {
    let dir = TempDir::new("families");
    let policies = workspace_root().join("policies");
    let artifacts = [
        (
            Policy::Support,
            build_policy(
                &policies.join("support-assistant.policy"),
                &dir.path().join("support"),
            ),
        ),
        (
            Policy::Code,
            build_policy(
                &policies.join("code-assistant.policy"),
                &dir.path().join("code"),
            ),
        ),
        (
            Policy::Budget,
            build_budget_policy(&dir.path().join("budget")),
        ),
    ];
    let mut failures = Vec::new();
    let mut metric_names = Vec::new();
    for kind in HostKind::BOTH {
        for (policy, artifact) in &artifacts {
            let upstream = Upstream::start(Reply::chat("ok"));
            let review = Upstream::start(Reply::Json {
                status: 202,
                body: "{}".into(),
            });
            let opts = Options {
                review_queue: Some(review.addr()),
                team_label_max: Some(10),
                ..Options::default()
            };
            let gw = match WritGateway::start(kind, artifact, upstream.addr(), &opts) {
                Ok(gw) => gw,
                Err(e) => {
                    failures.push(format!("[{kind:?} / {policy:?}] cannot start: {e}"));
                    continue;
                }
            };
            let env = Env {
                gw: &gw,
                upstream: &upstream,
                review: &review,
            };
            for case in cases().iter().filter(|c| c.policy == *policy) {
                match (case.run)(&env) {
                    Ok(note) => eprintln!("[{}] {}: ok {note}", gw.name(), case.name),
                    Err(e) => failures.push(format!(
                        "[{} / {}] {e}\n--- wasm log lines ---\n{}",
                        gw.name(),
                        case.name,
                        wasm_lines(&gw.log())
                    )),
                }
            }
            if *policy == Policy::Support {
                // Compared as exported, not normalised: the hosts agree on the names.
                let names: BTreeSet<String> =
                    gw.writ_metrics().into_iter().map(|(n, _)| n).collect();
                metric_names.push((gw.name().to_string(), names));
            }
        }
    }
    // The same request sequence gives the same metric names in both hosts.
    if let [(a, na), (b, nb)] = metric_names.as_slice()
        && na != nb
    {
        failures.push(format!(
            "metric names differ:\n  only in {a}: {:?}\n  only in {b}: {:?}",
            na.difference(nb).collect::<Vec<_>>(),
            nb.difference(na).collect::<Vec<_>>()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn wasm_lines(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("wasm log") || l.contains("writ"))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `writ serve` prints the module's log lines as Envoy does, so the shared case table's
/// log expectations (a monitor rule's `would have denied 400 … AIP-4.4`) hold there too.
#[test]
fn writ_serve_logs_what_monitor_rules_would_have_done() {
    use crate::support::cases::{build_e2e_policy, e2e_cases, run_cases};
    use crate::support::serve::ServeProcess;
    let dir = TempDir::new("serve-monitor-log");
    let artifact = build_e2e_policy(dir.path());
    let upstream = Upstream::start(Reply::chat("fine"));
    let serve = ServeProcess::start(&artifact, upstream.addr()).unwrap();
    let cases = e2e_cases();
    assert!(cases.iter().any(|c| !c.log_contains.is_empty()));
    if let Err(e) = run_cases(&serve, &upstream, &cases) {
        panic!("{e}\n--- writ serve log ---\n{}", serve.log());
    }
    // Debug lines stay out; info lines carry the level.
    assert!(serve.log().contains("[info] wasm log: writ-audit "));
}
