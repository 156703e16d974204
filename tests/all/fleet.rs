//! Issue 16: a fleet of gateways sharing one policy state in a real etcd. Two Envoys (two
//! workers each) and one `writ serve`, all started with `--shared etcd://…`, on loopback.
//!
//! One run, in phases, each asserted from what the clients, the upstream, the store and the
//! audit records say:
//! 1. concurrent clients spread over the three instances against one team budget: only
//!    200 or 429; the admitted spend (priced from the upstream's `usage`) stays within the
//!    cap plus the documented bound (0 here: leases are granted only within the cap and
//!    each estimate covers its reply); the budget is reached; the store's ledger equals the
//!    sum of the audit records' `cost_micros` across the instances; half the traffic gets
//!    its usage in the last event of an SSE stream;
//! 2. a kill switch flipped through one Envoy stops all three instances, each within 5 s
//!    of the flip (a poll loop with that deadline), and each audits what it applied; a
//!    resume through `writ serve` brings all three back;
//! 3. the store stopped mid-load: requests that need budget the instance does not hold get
//!    503 `spend_unavailable` (fail closed, audited); the stop state of the kill switch is
//!    kept; a resume made during the outage reaches the fleet once the store is back;
//!    after the restart every instance reconnects by itself and no settled spend is lost:
//!    the ledger equals the audited spend again; a fourth instance with
//!    `--local-allowance` serves a new team up to the allowance, each request `degraded`;
//! 4. the store stopped and restarted while clients keep sending: only defined answers,
//!    nothing settled lost.
//!
//! Between 1 and 2: the `review` workflow's drift alert fires once, on the fleet's counts
//! (no instance sees enough outputs alone), with the counters in the store; and an idle
//! instance gives its unused lease back.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::families::COST_PER_REQUEST_MICROS;
use crate::support::cases::Gateway;
use crate::support::envoy::EnvoyProcess;
use crate::support::etcd::Etcd;
use crate::support::hosts::{HostKind, WritGateway, build_policy};
use crate::support::http::{Request, send};
use crate::support::process::run_ok;
use crate::support::serve::ServeProcess;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::workspace_root;

/// The budget policy of the concurrency tests, with a kill switch (token `test`).
const POLICY: &str = r#"# A small daily team budget and a kill switch, for the fleet tests.
policy "fleet-test" version "0.1.0" {
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

workflow "review" {
  match header "x-workflow" == "review"
  oversight HOTL below 0.70
  assume verification_rate <= 10%
  identify team by header "x-team", user by header "x-user"
}

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
/// Budget leased at a time: about six requests' worth (estimate 3,100 micros, cost 1,500),
/// so instances come back for more many times during the run.
const SLICE_MICROS: i64 = 20_000;
/// 64 concurrent clients, as the issue asks (on a 2-core machine about 1 % of requests get
/// the documented 503 `spend_unavailable` "busy" when their lease lost too many
/// compare-and-swap races; counted apart, `docs/fleet.md`).
const CLIENTS: usize = 64;
const PER_CLIENT: usize = 3;
const T: Duration = Duration::from_secs(20);

/// A 503 `spend_unavailable` (the store busy) in the statuses the clients collect.
const BUSY: u16 = 1503;
fn request(team: &str, stream: bool) -> Request {
    workflow_request("budget", team, stream)
}

fn workflow_request(workflow: &str, team: &str, stream: bool) -> Request {
    let mut body = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user",
        "content": "Summarise the attached ticket history for the weekly report, in one line."}]});
    if stream {
        body["stream"] = json!(true);
    }
    Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", workflow)
        .header("x-team", team)
        .header("x-user", "u1")
}

fn kill(action: &str, by: &str) -> Request {
    let body = json!({"workflow": "budget", "action": action, "reason": "fleet test", "by": by});
    Request::post_json("/writ/admin/kill-switch", &body.to_string())
        .header("authorization", "Bearer test")
}

/// Starts one Envoy from `writ envoy --shared` (two workers).
fn envoy(artifact: &std::path::Path, upstream: &Upstream, etcd: &Etcd) -> WritGateway {
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
    assert!(yaml.contains("writ_store"), "no store cluster in:\n{yaml}");
    WritGateway::Envoy(EnvoyProcess::start_with_workers(&yaml, 2).unwrap_or_else(|e| panic!("{e}")))
}

fn serve(
    artifact: &std::path::Path,
    upstream: &Upstream,
    etcd: &Etcd,
    more: &[&str],
) -> WritGateway {
    let mut extra: Vec<String> = [
        "--workers",
        "2",
        "--shared",
        &etcd.url(),
        "--lease-slice",
        &SLICE_MICROS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    extra.extend(more.iter().map(|s| s.to_string()));
    WritGateway::Serve(
        ServeProcess::start_with(artifact, upstream.addr(), &extra)
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// The audit records of every instance with `event == "request"` for `team`.
fn audited(fleet: &[WritGateway], team: &str) -> Vec<serde_json::Value> {
    fleet
        .iter()
        .flat_map(|g| g.audit_records())
        .filter(|r| r["event"] == "request" && r["team"] == team)
        .collect()
}

fn audited_micros(fleet: &[WritGateway], team: &str) -> i64 {
    audited(fleet, team)
        .iter()
        .map(|r| r["cost_micros"].as_i64().unwrap_or(0))
        .sum()
}

/// Waits until the store's ledger for `team` equals the audited spend (the ticks write
/// settled spend back about once a second); returns both.
fn wait_ledger(etcd: &Etcd, fleet: &[WritGateway], team: &str, want: i64) -> (i64, i64) {
    let deadline = Instant::now() + T;
    loop {
        let ledger = etcd.ledger_spent(&format!("/team/{team}/")).unwrap_or(-1);
        let audit = audited_micros(fleet, team);
        if (ledger == audit && audit == want) || Instant::now() > deadline {
            return (ledger, audit);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What each instance said about the store, and a refused request's answer, for a
/// failure message.
fn diagnose(fleet: &[WritGateway], team: &str) -> String {
    let mut out = String::new();
    for gw in fleet {
        out.push_str(&format!("--- [{}]\n", gw.name()));
        let notable = |l: &&str| {
            !l.contains("writ-audit")
                && ["fleet", "callout", "panic", "error", "fail", "timeout"]
                    .iter()
                    .any(|w| l.contains(w))
        };
        for line in gw.log().lines().filter(notable).take(20) {
            out.push_str(line);
            out.push('\n');
        }
        if let Some(r) = audited(std::slice::from_ref(gw), team)
            .iter()
            .find(|r| r["status"] != 200 && r["status"] != 429)
        {
            out.push_str(&format!("{r}\n"));
        }
    }
    out
}

fn status(gw: &WritGateway, req: &Request) -> (u16, String) {
    send(gw.addr(), req, T).map_or((0, String::new()), |r| (r.status, r.body_str()))
}

#[test]
fn a_fleet_shares_budget_kill_switch_and_survives_a_store_restart() {
    let dir = TempDir::new("fleet");
    std::fs::write(dir.path().join("fleet-test.policy"), POLICY).unwrap();
    std::fs::copy(
        workspace_root().join("policies/ai-policy.md"),
        dir.path().join("ai-policy.md"),
    )
    .unwrap();
    let artifact = build_policy(
        &dir.path().join("fleet-test.policy"),
        &dir.path().join("out"),
    );
    let mut etcd = Etcd::start().unwrap_or_else(|e| panic!("{e}"));
    // The first Envoy's model answers JSON, the other two stream SSE with usage last.
    let json_up = Upstream::start(Reply::Echo {
        sse: false,
        tool_args: false,
    });
    let sse_up = Upstream::start(Reply::Echo {
        sse: true,
        tool_args: false,
    });
    json_up.set_delay(Duration::from_millis(10));
    sse_up.set_delay(Duration::from_millis(10));
    let audit_log = dir.path().join("serve-audit.jsonl");
    let audit_log_arg = audit_log.display().to_string();
    let fleet = [
        envoy(&artifact, &json_up, &etcd),
        envoy(&artifact, &sse_up, &etcd),
        serve(&artifact, &sse_up, &etcd, &["--audit-log", &audit_log_arg]),
    ];

    // ---- 1. one team budget, concurrent clients across the fleet
    let team = "t-fleet";
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let fleet = &fleet;
                s.spawn(move || {
                    (0..PER_CLIENT)
                        .map(|i| {
                            let g = (c + i) % fleet.len();
                            let (s, body) = status(&fleet[g], &request(team, g > 0));
                            if !matches!(s, 200 | 429) {
                                eprintln!("[{}] {s} {body}", fleet[g].name());
                            }
                            // A lease that keeps losing the compare-and-swap fails closed
                            // as a defined 503 (docs/fleet.md, "busy"); it is counted
                            // apart, and never admitted.
                            let busy = s == 503 && body.contains("spend_unavailable");
                            if busy { BUSY } else { s }
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let admitted = statuses.iter().filter(|&&s| s == 200).count() as i64;
    let denied = statuses.iter().filter(|&&s| s == 429).count();
    let busy = statuses.iter().filter(|&&s| s == BUSY).count();
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(**s, 200 | 429 | BUSY))
        .collect();
    assert!(
        other.is_empty(),
        "statuses other than 200/429/busy 503: {other:?}\n{}",
        diagnose(&fleet, team)
    );
    // Busy answers are the exception under contention, not the rule.
    assert!(
        busy * 10 <= statuses.len(),
        "{busy} of {} requests found the store busy\n{}",
        statuses.len(),
        diagnose(&fleet, team)
    );
    let spent = admitted * COST_PER_REQUEST_MICROS;
    let forwarded = json_up.received().len() + sse_up.received().len();
    assert_eq!(forwarded as i64, admitted, "admitted = forwarded");
    assert!(
        spent <= CAP_MICROS,
        "admitted {spent} micros over a cap of {CAP_MICROS}"
    );
    assert!(
        denied > 0,
        "the budget was not reached ({admitted} admitted)"
    );
    // Refused early by at most one slice (plus one request's estimate) per instance.
    let underspend_bound = 3 * (SLICE_MICROS + 2 * 3_100);
    assert!(
        spent >= CAP_MICROS - underspend_bound,
        "only {spent} micros admitted of {CAP_MICROS}"
    );
    let (ledger, audit) = wait_ledger(&etcd, &fleet, team, spent);
    assert_eq!(
        (ledger, audit),
        (spent, spent),
        "store ledger vs audited vs upstream"
    );
    assert_eq!(
        audited(&fleet, team).len(),
        CLIENTS * PER_CLIENT,
        "one record per request"
    );
    for gw in &fleet {
        let served = audited(std::slice::from_ref(gw), team)
            .iter()
            .filter(|r| r["status"] == 200)
            .count();
        assert!(served > 0, "[{}] admitted nothing", gw.name());
    }
    eprintln!(
        "fleet budget: {admitted} admitted, {denied} denied, {busy} busy, ledger {ledger} micros of {CAP_MICROS}"
    );

    // ---- 1b. oversight counters across the fleet: the drift alert fires once
    oversight_counters_are_the_fleets(&etcd, &fleet);

    // ---- 1c. an idle instance gives its unused lease back
    idle_lease_is_given_back(&etcd, &fleet[0]);

    // ---- 2. the kill switch through one instance stops all three within 5 s
    let flip = send(fleet[0].addr(), &kill("stop", "fleet-test"), T).unwrap();
    assert_eq!(flip.status, 200, "{}", flip.body_str());
    let flipped = Instant::now();
    let probe = "t-kill";
    for gw in &fleet {
        loop {
            let (s, body) = status(gw, &request(probe, false));
            if s == 503 && body.contains("kill_switch") {
                break;
            }
            assert!(
                flipped.elapsed() < Duration::from_secs(5),
                "[{}] still answering {s} 5 s after the stop",
                gw.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "kill switch: [{}] stopped {:?} after the flip",
            gw.name(),
            flipped.elapsed()
        );
    }
    for gw in &fleet[1..] {
        let applied = gw.wait_audit("kill_switch", 1, T).into_iter().any(|r| {
            r["outcome"] == "stopped"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("applied from the fleet store"))
        });
        assert!(applied, "[{}] did not audit the stop it applied", gw.name());
    }
    // The applied flip is in the audit stream `--audit-log` writes (hash-chained, with the
    // request records), not only in the application log.
    let in_file = std::fs::read_to_string(&audit_log).unwrap_or_default();
    assert!(
        in_file
            .lines()
            .any(|l| l.contains("\"event\":\"kill_switch\"")
                && l.contains("applied from the fleet store")),
        "writ serve's --audit-log has no applied kill switch record"
    );

    // ---- 3. the store stopped: fail closed, last known kill state kept, then restart
    // A fourth instance allows a bounded local allowance while the store is down.
    let allowance = serve(
        &artifact,
        &json_up,
        &etcd,
        &["--local-allowance", &ALLOWANCE_MICROS.to_string()],
    );
    etcd.stop();
    let down_team = "t-down";
    for gw in &fleet {
        let (s, body) = status(gw, &request(down_team, false));
        assert_eq!(s, 503, "[{}] {body}", gw.name());
        assert!(
            body.contains("kill_switch"),
            "[{}] kill state lost: {body}",
            gw.name()
        );
    }
    // Resume reaches the instance it is sent to even with the store down; the others keep
    // their last known state (stopped) until the store is back.
    let resume = send(fleet[2].addr(), &kill("resume", "fleet-test"), T).unwrap();
    assert_eq!(resume.status, 200, "{}", resume.body_str());
    let (s, body) = status(&fleet[0], &request(down_team, false));
    assert!(
        s == 503 && body.contains("kill_switch"),
        "[envoy 1] {s} {body}"
    );
    // writ serve is running again but holds no budget for the new team: fail closed.
    let (s, body) = status(&fleet[2], &request(down_team, false));
    assert_eq!(s, 503, "{body}");
    assert!(body.contains("spend_unavailable"), "{body}");
    let errors = audited(&fleet[2..], down_team)
        .into_iter()
        .filter(|r| r["outcome"] == "error" && r["status"] == 503)
        .count();
    assert!(errors >= 1, "the fail-closed answer was not audited");

    local_allowance_is_degraded_and_bounded(&allowance);

    etcd.restart().unwrap_or_else(|e| panic!("{e}"));
    // The resume made during the outage was queued by `writ serve` and reaches the store,
    // and from it the Envoys, without being sent again.
    let back = Instant::now();
    let mid_team = "t-mid";
    for gw in &fleet {
        loop {
            let (s, body) = status(gw, &request(mid_team, gw.kind() == HostKind::Serve));
            if s == 200 {
                break;
            }
            assert!(
                back.elapsed() < T,
                "[{}] not serving {T:?} after the store came back: {s} {body}",
                gw.name()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Nothing settled before the stop was lost, and spend after it is counted too.
    let (ledger, audit) = wait_ledger(&etcd, &fleet, team, spent);
    assert_eq!(
        (ledger, audit),
        (spent, spent),
        "first team after the restart"
    );
    let mid = audited_micros(&fleet, mid_team);
    assert!(mid > 0);
    let (ledger, audit) = wait_ledger(&etcd, &fleet, mid_team, mid);
    assert_eq!(ledger, audit, "second team after the restart");
    // The degraded spend is written back once the store is back.
    let degraded = audited_micros(std::slice::from_ref(&allowance), "t-degraded");
    let (ledger, audit) = wait_ledger(
        &etcd,
        std::slice::from_ref(&allowance),
        "t-degraded",
        degraded,
    );
    assert_eq!(
        (ledger, audit),
        (degraded, degraded),
        "degraded spend written back"
    );

    // ---- 4. the store stopped and restarted while clients keep sending
    store_restart_mid_load(&mut etcd, &fleet);
}

/// What the allowance instance may admit per budget beyond its lease, store down.
const ALLOWANCE_MICROS: i64 = 10_000;

/// Store down, `--local-allowance`: a team the instance holds nothing for is served up to
/// the allowance, each request audited `degraded`, then refused 503 `spend_unavailable`.
fn local_allowance_is_degraded_and_bounded(gw: &WritGateway) {
    let team = "t-degraded";
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..8 {
        let (s, body) = status(gw, &request(team, false));
        match s {
            200 => served += 1,
            503 if body.contains("spend_unavailable") => refused += 1,
            _ => panic!("[{}] {s} {body}", gw.name()),
        }
    }
    // One after another, each settles at 1,500 before the next is admitted on its 3,100
    // estimate: k requests fit while 1,500 k + 3,100 <= 10,000, so five.
    assert_eq!((served, refused), (5, 3), "allowance of {ALLOWANCE_MICROS}");
    // Records are written as each stream closes, just after its answer.
    let deadline = Instant::now() + T;
    let recs = loop {
        let recs: Vec<_> = audited(std::slice::from_ref(gw), team)
            .into_iter()
            .filter(|r| r["status"] == 200)
            .collect();
        if recs.len() >= 5 || Instant::now() > deadline {
            break recs;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(recs.len(), 5);
    assert!(
        recs.iter().all(|r| r["degraded"] == true),
        "admitted on the allowance but not marked degraded: {recs:?}"
    );
    eprintln!("local allowance: {served} served degraded, {refused} refused with the store down");
}

/// The `review` workflow escalates every output (HOTL, and the test model sends no
/// confidence, which escalates failing safe) and assumes at most 10 %: its drift
/// alert needs 50 outputs, which no single instance sees here (about 20 each), so it can
/// only fire on the fleet's counts; and it fires once, on one instance.
fn oversight_counters_are_the_fleets(etcd: &Etcd, fleet: &[WritGateway]) {
    let team = "t-review";
    let per_instance = 20;
    let mut sent = 0;
    // In rounds, so every instance's tick publishes and reads between them.
    for _round in 0..4 {
        for _ in 0..per_instance / 4 {
            for gw in fleet {
                let (s, body) = status(gw, &workflow_request("review", team, false));
                assert_eq!(s, 200, "[{}] {body}", gw.name());
                sent += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(2_500));
    }
    // The alert is claimed on a tick and its record joins the winner's next request.
    // Only the `review` workflow's alert is under test: the `budget` workflow samples 2%
    // against an assumed 2%, so its own drift alert may fire too, by chance, and rightly.
    let deadline = Instant::now() + T;
    let alerts = loop {
        for gw in fleet {
            let _ = status(gw, &workflow_request("review", team, false));
            sent += 1;
        }
        let alerts: Vec<_> = fleet
            .iter()
            .flat_map(|g| g.audit_records())
            .filter(|r| r["event"] == "drift_alert" && r["workflow"] == "review")
            .collect();
        if !alerts.is_empty() || Instant::now() > deadline {
            break alerts;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        !alerts.is_empty(),
        "no drift alert after {sent} outputs
{}",
        diagnose(fleet, team)
    );
    // Every instance crossed on the fleet's numbers, each proposed; one claim won. Give the
    // losers' claims time to be answered and any stray record time to be written.
    std::thread::sleep(Duration::from_millis(3_000));
    for gw in fleet {
        let _ = status(gw, &workflow_request("review", team, false));
    }
    let alerts: Vec<_> = fleet
        .iter()
        .flat_map(|g| g.audit_records())
        .filter(|r| r["event"] == "drift_alert" && r["workflow"] == "review")
        .collect();
    assert_eq!(
        alerts.len(),
        1,
        "the drift alert fired more than once: {alerts:#?}"
    );
    let detail = alerts[0]["detail"].as_str().unwrap_or_default().to_string();
    let most_alone = fleet
        .iter()
        .map(|g| {
            audited(std::slice::from_ref(g), team)
                .iter()
                .filter(|r| r["status"] == 200)
                .count()
        })
        .max()
        .unwrap_or(0);
    eprintln!(
        "drift alert (once for the fleet): {detail}; at most {most_alone} outputs per instance"
    );
    // The store holds every instance's counters; their sum is the fleet's outputs.
    let (total, instances) = etcd
        .range("writ/counters/")
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .fold((0, 0), |(t, n), (_, v)| {
            let snap: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
            let here: i64 = snap
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("writ/oversight/review/"))
                .map(|(_, f)| f["total"].as_i64().unwrap_or(0))
                .sum();
            (t + here, n + 1)
        });
    assert_eq!(instances, fleet.len(), "one counters key per instance");
    let outputs = fleet
        .iter()
        .flat_map(|g| g.audit_records())
        .filter(|r| r["event"] == "request" && r["team"] == team && r["status"] == 200)
        .count() as i64;
    let deadline = Instant::now() + T;
    let mut total = total;
    while total != outputs && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        total = etcd
            .range("writ/counters/")
            .unwrap_or_default()
            .iter()
            .map(|(_, v)| {
                let snap: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
                snap.as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.starts_with("writ/oversight/review/"))
                    .map(|(_, f)| f["total"].as_i64().unwrap_or(0))
                    .sum::<i64>()
            })
            .sum();
    }
    assert_eq!(
        total, outputs,
        "the store's verification-rate counts vs the audited outputs"
    );
    assert!(
        (most_alone as u64) < 50,
        "an instance saw {most_alone} outputs alone: the test would not prove aggregation"
    );
    // The `review` workflow's claims only: the `budget` workflow's drift alert may be
    // claimed too, by chance (it samples 2% against an assumed 2%).
    let claimed = etcd
        .range("writ/alert/drift/writ/oversight/review/")
        .unwrap_or_default();
    assert_eq!(claimed.len(), 1, "one alert key: {claimed:?}");
}

/// A few requests on one instance, then nothing: after three poll periods it gives what it
/// leased beyond its spend back, so the store's commitment equals the spend.
fn idle_lease_is_given_back(etcd: &Etcd, gw: &WritGateway) {
    let team = "t-idle";
    for _ in 0..3 {
        let (s, body) = status(gw, &request(team, false));
        assert_eq!(s, 200, "[{}] {body}", gw.name());
    }
    let record = || {
        etcd.range("writ/spend/")
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.contains("/team/t-idle/"))
            .filter_map(|(_, v)| writ_plugin::fleet::budget::Record::decode(&v))
            .next()
            .unwrap_or_default()
    };
    let leased = record().committed();
    assert!(leased >= SLICE_MICROS, "leased {leased}");
    let deadline = Instant::now() + T;
    let given_back = loop {
        let r = record();
        if (r.committed() == r.spent() && r.spent() > 0) || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (given_back.committed(), given_back.spent()),
        (3 * COST_PER_REQUEST_MICROS, 3 * COST_PER_REQUEST_MICROS),
        "the idle lease was not given back: {given_back:?}"
    );
    eprintln!(
        "lease return: {leased} micros leased, {} kept after idling",
        given_back.committed()
    );
    // And the instance leases again when asked.
    let (s, body) = status(gw, &request(team, false));
    assert_eq!(s, 200, "[{}] after the give-back: {body}", gw.name());
}

/// Clients keep sending while the store is stopped and started again: every answer is a
/// 200, a 429 or the defined 503 `spend_unavailable`; nothing admitted is over the cap;
/// once the store is back the ledger equals the audited spend (nothing settled lost).
fn store_restart_mid_load(etcd: &mut Etcd, fleet: &[WritGateway]) {
    let team = "t-load";
    let clients = 12;
    let per_client = 12;
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    (0..per_client)
                        .map(|i| {
                            let g = (c + i) % fleet.len();
                            std::thread::sleep(Duration::from_millis(150));
                            status(&fleet[g], &request(team, g > 0))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        etcd.stop();
        std::thread::sleep(Duration::from_millis(1_500));
        etcd.restart().unwrap_or_else(|e| panic!("{e}"));
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let count = |f: &dyn Fn(&(u16, String)) -> bool| statuses.iter().filter(|s| f(s)).count();
    let ok = count(&|(s, _)| *s == 200);
    let refused = count(&|(s, _)| *s == 429);
    let unavailable = count(&|(s, b)| *s == 503 && b.contains("spend_unavailable"));
    assert_eq!(
        ok + refused + unavailable,
        statuses.len(),
        "undefined answers: {:?}",
        statuses
            .iter()
            .filter(|(s, b)| !(matches!(s, 200 | 429)
                || (*s == 503 && b.contains("spend_unavailable"))))
            .collect::<Vec<_>>()
    );
    let spent = ok as i64 * COST_PER_REQUEST_MICROS;
    assert!(spent <= CAP_MICROS, "{spent} admitted over {CAP_MICROS}");
    let (ledger, audit) = wait_ledger(etcd, fleet, team, spent);
    assert_eq!(
        (ledger, audit),
        (spent, spent),
        "ledger vs audited vs admitted"
    );
    eprintln!(
        "store restart mid-load: {ok} served, {refused} refused (429), {unavailable} fail-closed 503s"
    );
}
