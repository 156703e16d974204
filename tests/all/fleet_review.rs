//! Issue 16, the fleet's oversight and its stops: one Envoy (with its workers) and two
//! `writ serve`s sharing one real etcd, on loopback.
//!
//! 1. rubber-stamp signals are judged on the fleet's day: verdicts posted to different
//!    instances add up to a signal that neither reaches alone, it fires once for the
//!    fleet (one claim in the store, one record), and its record reaches `writ serve`'s
//!    `--audit-log` file on a tick, with no request after it;
//! 2. a verdict reaches any instance: a review escalated through Envoy is accepted by a
//!    `writ serve` once the escalation is in the store, and only once fleet-wide;
//! 3. a kill switch flipped through `writ serve` is audited by Envoy on its tick, with no
//!    traffic through Envoy;
//! 4. `writ serve` stopped with SIGTERM gives its unused budget lease back: the store then
//!    holds its settled spend only, which equals its audited spend; Envoy stopped with
//!    SIGTERM runs the same give-back from its root contexts' `on_done` but exits without
//!    waiting for the store's answer (best effort, `docs/fleet.md`), so what it may leave
//!    is checked against the bound: at most one slice plus one estimate, no spend lost,
//!    and another instance then serves the rest of the cap and no more.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::families::COST_PER_REQUEST_MICROS;
use crate::support::cases::Gateway;
use crate::support::envoy::EnvoyProcess;
use crate::support::etcd::Etcd;
use crate::support::hosts::build_policy;
use crate::support::http::{Request, Response, send};
use crate::support::process::run_ok;
use crate::support::serve::ServeProcess;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::workspace_root;

/// Every output of `review` is escalated (HOTL, and the test model sends no confidence);
/// four verdicts a day make a sample; a kill switch (token `test`) for the admin paths.
const POLICY: &str = r#"# Review signals and budgets across a fleet, for the fleet tests.
policy "fleet-review" version "0.1.0" {
  owner       "security@example.com"
  implements  "ai-policy.md"
  currency    EUR
}

workflow "review" {
  match header "x-workflow" == "review"
  oversight HOTL below 0.70
  identify team by header "x-team", user by header "x-user"
  review_signals after 4 reviews { approval_rate > 98% }
}

price "gpt-4o-mini" input 100 EUR output 100 EUR per 1M tokens

rule AIP-4.2 "Daily team budget" {
  on request
  when spend(team, day) > 0.2 EUR
  then deny 429 "Daily AI budget reached."
}

kill_switch {
  admin path "/writ/admin/kill-switch"
  token sha256 "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
}
"#;

const CAP_MICROS: i64 = 200_000;
const SLICE_MICROS: i64 = 20_000;
/// A request's estimate (prompt size and `max_tokens` priced), above its cost.
const ESTIMATE_MICROS: i64 = 3_100;
const T: Duration = Duration::from_secs(20);

fn ask(addr: std::net::SocketAddr, team: &str) -> Response {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user",
        "content": "Summarise the attached ticket history for the weekly report, in one line."}]});
    let req = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "review")
        .header("x-team", team)
        .header("x-user", "u1");
    send(addr, &req, T).unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// One escalated output: its review id.
fn escalate(addr: std::net::SocketAddr, team: &str) -> String {
    let r = ask(addr, team);
    assert_eq!(r.status, 200, "{}", r.body_str());
    r.header_value("x-writ-review-id")
        .unwrap_or_else(|| panic!("no review id from {addr}"))
        .to_string()
}

fn post_verdict(addr: std::net::SocketAddr, review_id: &str, reviewer: &str) -> Response {
    let body = json!({"review_id": review_id, "reviewer": reviewer, "verdict": "approved",
                      "seconds": 40});
    let req = Request::post_json("/writ/admin/reviews", &body.to_string())
        .header("authorization", "Bearer test");
    send(addr, &req, T).unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn kill(addr: std::net::SocketAddr, action: &str) -> Response {
    let body = json!({"workflow": "review", "action": action, "reason": "fleet test", "by": "ops"});
    let req = Request::post_json("/writ/admin/kill-switch", &body.to_string())
        .header("authorization", "Bearer test");
    send(addr, &req, T).unwrap_or_else(|e| panic!("{addr}: {e}"))
}

fn records(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(writ_plugin::audit::parse_log_line)
        .collect()
}

/// The records of a `writ serve --audit-log` file (chained JSON lines).
fn file_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Polls `f` until it returns `Some` or `T` passes.
fn wait_for<R>(what: &str, mut f: impl FnMut() -> Option<R>) -> R {
    let deadline = Instant::now() + T;
    loop {
        if let Some(r) = f() {
            return r;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The day-of-verdicts counts of `review` each instance published: `reviews` per
/// instance key.
fn published_reviews(etcd: &Etcd) -> Vec<i64> {
    etcd.range("writ/counters/")
        .unwrap_or_default()
        .iter()
        .map(|(_, v)| {
            let snap: Value = serde_json::from_slice(v).unwrap_or_default();
            snap.as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("writ/review/day/review/"))
                .map(|(_, f)| f["reviews"].as_i64().unwrap_or(0))
                .sum()
        })
        .collect()
}

/// The fleet's record of `team`'s daily ledger.
fn ledger(etcd: &Etcd, team: &str) -> writ_plugin::fleet::budget::Record {
    etcd.range("writ/spend/")
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k.contains(&format!("/team/{team}/")))
        .filter_map(|(_, v)| writ_plugin::fleet::budget::Record::decode(&v))
        .next()
        .unwrap_or_default()
}

fn envoy(artifact: &std::path::Path, upstream: &Upstream, etcd: &Etcd) -> EnvoyProcess {
    let yaml = run_ok(
        std::process::Command::new(crate::support::writ_bin())
            .arg("envoy")
            .arg(artifact)
            .arg("--upstream")
            .arg(upstream.addr().to_string())
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--shared", &etcd.url()])
            .args(["--lease-slice", &SLICE_MICROS.to_string()]),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("writ envoy --shared: {e}"));
    EnvoyProcess::start_with_workers(&yaml, 2).unwrap_or_else(|e| panic!("{e}"))
}

fn serve(
    artifact: &std::path::Path,
    upstream: &Upstream,
    etcd: &Etcd,
    audit_log: &std::path::Path,
) -> ServeProcess {
    let extra: Vec<String> = [
        "--workers",
        "2",
        "--shared",
        &etcd.url(),
        "--lease-slice",
        &SLICE_MICROS.to_string(),
        "--audit-log",
        &audit_log.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ServeProcess::start_with(artifact, upstream.addr(), &extra).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_fleet_judges_reviews_together_flushes_on_ticks_and_gives_leases_back_at_shutdown() {
    let dir = TempDir::new("fleet-review");
    std::fs::write(dir.path().join("fleet-review.policy"), POLICY).unwrap();
    std::fs::copy(
        workspace_root().join("policies/ai-policy.md"),
        dir.path().join("ai-policy.md"),
    )
    .unwrap();
    let artifact = build_policy(
        &dir.path().join("fleet-review.policy"),
        &dir.path().join("out"),
    );
    let etcd = Etcd::start().unwrap_or_else(|e| panic!("{e}"));
    let up = Upstream::start(Reply::Echo {
        sse: false,
        tool_args: false,
    });
    let mut env = envoy(&artifact, &up, &etcd);
    let s_log = dir.path().join("s-audit.jsonl");
    let r_log = dir.path().join("r-audit.jsonl");
    let mut s = serve(&artifact, &up, &etcd, &s_log);
    let r = serve(&artifact, &up, &etcd, &r_log);
    let (e_addr, s_addr, r_addr) = (env.listener(), s.addr(), r.addr());

    // ---- 1. two approvals through Envoy, two through `writ serve`: four make the sample.
    let on_envoy: Vec<String> = (0..2).map(|_| escalate(e_addr, "t-rev")).collect();
    let on_serve: Vec<String> = (0..2).map(|_| escalate(s_addr, "t-rev")).collect();
    for id in &on_envoy {
        let v = post_verdict(e_addr, id, "alice");
        assert_eq!(v.status, 200, "[envoy] {}", v.body_str());
    }
    // Envoy's tick publishes its day; `writ serve`'s next ticks read it.
    wait_for("Envoy's verdicts in the store", || {
        published_reviews(&etcd).contains(&2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(3_000));
    for id in &on_serve {
        let v = post_verdict(s_addr, id, "alice");
        assert_eq!(v.status, 200, "[serve] {}", v.body_str());
    }
    // Claimed on a tick and written on a tick: no request needed after the verdict.
    let signal = wait_for("the approval-rate signal in the audit log file", || {
        file_records(&s_log)
            .into_iter()
            .find(|r| r["event"] == "review_signal")
    });
    assert_eq!(signal["signal"], "approval_rate");
    let detail = signal["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("(4 of 4"),
        "judged on the fleet's four: {detail}"
    );
    let claims = etcd
        .range("writ/alert/review_signal/")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claims.len(), 1, "one claim for the fleet: {claims:?}");
    // Neither instance alone had four verdicts, and the signal is written once.
    std::thread::sleep(Duration::from_millis(2_500));
    let everywhere: Vec<Value> = records(&env.log())
        .into_iter()
        .chain(file_records(&s_log))
        .chain(file_records(&r_log))
        .filter(|r| r["event"] == "review_signal")
        .collect();
    assert_eq!(everywhere.len(), 1, "fired more than once: {everywhere:#?}");
    let verdicts = |recs: Vec<Value>| {
        recs.iter()
            .filter(|r| r["event"] == "review_verdict" && r["status"] == 200)
            .count()
    };
    assert_eq!(
        (
            verdicts(records(&env.log())),
            verdicts(file_records(&s_log))
        ),
        (2, 2)
    );
    eprintln!("review signal (once for the fleet): {detail}");

    // ---- 2. escalated through Envoy, reviewed through the other `writ serve`.
    let id = escalate(e_addr, "t-rev");
    let key = format!("writ/review/item/{id}");
    wait_for("the escalation in the store", || {
        (!etcd.range(&key).unwrap_or_default().is_empty()).then_some(())
    });
    let v = post_verdict(r_addr, &id, "bob");
    assert_eq!(v.status, 200, "[serve] {}", v.body_str());
    let escalated = records(&env.log())
        .into_iter()
        .find(|r| r["event"] == "request" && r["escalation"]["review_id"] == id.as_str())
        .unwrap_or_else(|| panic!("no escalation record for {id}"));
    assert_eq!(v.json()["request_id"], escalated["request_id"]);
    assert_eq!(v.json()["workflow"], "review");
    let again = post_verdict(e_addr, &id, "carol");
    assert_eq!(
        (again.status, again.json()["error"]["code"].clone()),
        (409, json!("already_reviewed")),
        "one verdict per review, fleet-wide: {}",
        again.body_str()
    );
    let unknown = post_verdict(r_addr, "rev-nobody", "bob");
    assert_eq!(
        (unknown.status, unknown.json()["error"]["code"].clone()),
        (404, json!("unknown_review"))
    );
    let recorded = wait_for("the verdict's record in the file", || {
        file_records(&r_log)
            .into_iter()
            .find(|r| r["event"] == "review_verdict" && r["status"] == 200)
    });
    assert_eq!(
        recorded["verdict"]["escalated_request_id"],
        escalated["request_id"]
    );

    // ---- 3. a kill switch flipped through `writ serve` reaches Envoy's log on its tick.
    let applied = |log: &str, outcome: &str| {
        records(log).into_iter().any(|r| {
            r["event"] == "kill_switch"
                && r["outcome"] == outcome
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("applied from the fleet store"))
        })
    };
    let v = kill(s_addr, "stop");
    assert_eq!(v.status, 200, "{}", v.body_str());
    wait_for("Envoy's record of the stop, with no traffic", || {
        applied(&env.log(), "stopped").then_some(())
    });
    wait_for(
        "the other `writ serve`'s record of the stop, in its file",
        || {
            applied(
                &file_records(&r_log)
                    .iter()
                    .map(|r| format!("writ-audit {r}\n"))
                    .collect::<String>(),
                "stopped",
            )
            .then_some(())
        },
    );
    let v = kill(s_addr, "resume");
    assert_eq!(v.status, 200, "{}", v.body_str());
    wait_for("Envoy's record of the resume", || {
        applied(&env.log(), "resumed").then_some(())
    });
    wait_for("Envoy serving again", || {
        (ask(e_addr, "t-rev").status == 200).then_some(())
    });

    // ---- 4. `writ serve` stopped gives its lease back; Envoy stopped keeps its own.
    for _ in 0..3 {
        assert_eq!(ask(s_addr, "t-stop").status, 200);
    }
    let before = ledger(&etcd, "t-stop");
    assert!(
        before.committed() >= SLICE_MICROS,
        "leased a slice: {before:?}"
    );
    let status = s.terminate(T);
    assert!(status.is_some(), "writ serve did not stop within {T:?}");
    let after = ledger(&etcd, "t-stop");
    let audited: i64 = file_records(&s_log)
        .iter()
        .filter(|r| r["event"] == "request" && r["team"] == "t-stop")
        .map(|r| r["cost_micros"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(audited, 3 * COST_PER_REQUEST_MICROS);
    assert_eq!(
        (after.committed(), after.spent()),
        (audited, audited),
        "after SIGTERM the store holds the settled spend only: {after:?} (before: {before:?})\n{}",
        s.log()
    );
    assert!(s.log().contains("budget leases given back"), "{}", s.log());
    eprintln!(
        "shutdown give-back (writ serve): {} leased, {} kept",
        before.committed(),
        after.committed()
    );

    for _ in 0..3 {
        assert_eq!(ask(e_addr, "t-envoy").status, 200);
    }
    let leased = wait_for("Envoy's spend written back", || {
        let l = ledger(&etcd, "t-envoy");
        (l.spent() == 3 * COST_PER_REQUEST_MICROS).then_some(l)
    });
    let status = env.terminate(T);
    assert!(status.is_some(), "Envoy did not stop within {T:?}");
    std::thread::sleep(Duration::from_millis(1_000));
    let stranded = ledger(&etcd, "t-envoy");
    assert!(
        env.log().contains("budget leases back to the fleet store"),
        "Envoy calls the root contexts' on_done at SIGTERM: {}",
        env.log()
    );
    for line in env.log().lines().filter(|l| {
        l.contains("giving")
            || l.contains("given back")
            || l.contains("shutting")
            || l.contains("exiting")
    }) {
        eprintln!("envoy: {line}");
    }
    eprintln!(
        "Envoy stopped: {} committed before, {} after, {} spent",
        leased.committed(),
        stranded.committed(),
        stranded.spent()
    );
    assert_eq!(
        stranded.spent(),
        3 * COST_PER_REQUEST_MICROS,
        "no spend lost"
    );
    assert!(
        stranded.committed() - stranded.spent() <= SLICE_MICROS + ESTIMATE_MICROS,
        "a stopped Envoy strands at most a slice and an estimate: {stranded:?}"
    );
    assert!(stranded.committed() <= CAP_MICROS);
    // Another instance leases what is left: the cap minus what Envoy still holds.
    let mut served = 0;
    while ask(r_addr, "t-envoy").status == 200 {
        served += 1;
        assert!(served < 200, "no end to the budget");
    }
    let end = ledger(&etcd, "t-envoy");
    assert!(end.committed() <= CAP_MICROS, "over the cap: {end:?}");
    eprintln!(
        "after Envoy's stop another instance served {served} more; {} committed of {CAP_MICROS}",
        end.committed()
    );
    drop(r);
}
