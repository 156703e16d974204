//! Issue 5: a budget holds under concurrency, in both hosts. A small daily team budget
//! (`spend(team, day) > 0.05 EUR`, see [`crate::families::BUDGET_POLICY`]) takes 8 client
//! threads × 25 requests at once through real Envoy (2 workers, one VM each, sharing the
//! ledger through shared data) and `writ serve --workers 2`, with a slow upstream so many
//! requests are in flight together.
//!
//! Asserted, from what the upstream answered (each reply's `usage` priced with the policy's
//! table) rather than from the gateway's own word:
//! - the settled spend never exceeds the cap: the gateway reserves each request's estimate
//!   before the call and admits only while `settled + reserved + estimate <= cap`, and the
//!   estimate (prompt size + `max_tokens`) is above the real cost here, so the overshoot
//!   bound — "no more than the reservations in flight" — is in fact zero;
//! - the budget is actually reached (some requests are denied with 429, none reach the
//!   upstream) and every request gets 200 or 429, nothing else;
//! - the ledger (metric `writ_spend_micros_total`) equals the sum of the settled costs, which
//!   equals the sum of the audit records' `cost_micros`; one audit record per request; no
//!   reservation is left in flight.
//!
//! `WRIT_BUDGET_REPS=20 cargo test --test all budget_concurrency -- --nocapture` repeats
//! the whole run (fresh gateways, fresh ledgers) 20 times per host and reply kind (usage in
//! a JSON reply, and in the last event of an SSE stream).

use std::time::{Duration, Instant};

use crate::families::{
    BUDGET_CAP_MICROS, COST_PER_REQUEST_MICROS, budget_request, build_budget_policy,
};
use crate::support::cases::Gateway;
use crate::support::hosts::{HostKind, Options, WritGateway};
use crate::support::http::send;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};

const THREADS: usize = 8;
const PER_THREAD: usize = 25;
const TEAM: &str = "t-conc";

/// What one run measured.
#[derive(Debug)]
struct Run {
    admitted: usize,
    denied: usize,
    settled_micros: i64,
    elapsed: Duration,
}

fn run_once(kind: HostKind, artifact: &std::path::Path, reply: &Reply) -> Result<Run, String> {
    let upstream = Upstream::start(reply.clone());
    // A slow model: requests overlap, so reservations are in flight together.
    upstream.set_delay(Duration::from_millis(20));
    let opts = Options {
        workers: 2,
        team_label_max: Some(10),
        ..Options::default()
    };
    let gw = WritGateway::start(kind, artifact, upstream.addr(), &opts)?;
    let ctx = |m: String| format!("[{}] {m}", gw.name());
    let addr = gw.addr();
    let start = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(move || {
                    (0..PER_THREAD)
                        .map(|_| {
                            send(addr, &budget_request(TEAM), Duration::from_secs(20))
                                .map_or(0, |r| r.status)
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
    let elapsed = start.elapsed();
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let denied = statuses.iter().filter(|&&s| s == 429).count();
    if admitted + denied != THREADS * PER_THREAD {
        let other: Vec<_> = statuses
            .iter()
            .filter(|s| !matches!(s, 200 | 429))
            .collect();
        return Err(ctx(format!("statuses other than 200/429: {other:?}")));
    }
    // Spend from the upstream's side: every request it answered settled at its usage.
    let forwarded = upstream.received().len();
    if forwarded != admitted {
        return Err(ctx(format!(
            "{forwarded} requests reached the upstream, {admitted} admitted"
        )));
    }
    let settled = i64::try_from(forwarded).unwrap_or(i64::MAX) * COST_PER_REQUEST_MICROS;
    if settled > BUDGET_CAP_MICROS {
        return Err(ctx(format!(
            "settled {settled} micros over a cap of {BUDGET_CAP_MICROS} ({admitted} admitted)"
        )));
    }
    if admitted == 0 || denied == 0 {
        return Err(ctx(format!(
            "{admitted} admitted, {denied} denied: the budget was not exercised"
        )));
    }
    // The ledger and the audit trail agree with the upstream. Both hosts write them when
    // each stream closes, just after its client has the answer; Envoy's stats flush
    // asynchronously too, so wait (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ledger = gw.metric(&format!(
            "writ_spend_micros_total;workflow=budget;team={TEAM}"
        ));
        let in_flight = gw.metric("writ_reservations_in_flight");
        let records: Vec<_> = gw
            .audit_records()
            .into_iter()
            .filter(|r| r["event"] == "request" && r["team"] == TEAM)
            .collect();
        let audited: i64 = records
            .iter()
            .filter(|r| r["status"] == 200)
            .map(|r| r["cost_micros"].as_i64().unwrap_or(-1_000_000))
            .sum();
        let estimated = records
            .iter()
            .filter(|r| r["cost_estimated"] == true)
            .count();
        let state = (ledger, in_flight, records.len(), audited, estimated);
        let want = (
            Some(settled as f64),
            Some(0.0),
            THREADS * PER_THREAD,
            settled,
            0,
        );
        if state == want {
            break;
        }
        if Instant::now() > deadline {
            return Err(ctx(format!(
                "(ledger, reservations in flight, audit records, audited micros, estimated) = \
                 {state:?}, wanted {want:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // In Envoy, both workers took connections: the ledger was shared across two VMs.
    if let WritGateway::Envoy(envoy) = &gw {
        let stats = envoy
            .admin_get("/stats?filter=worker_.\\.downstream_cx_total")
            .map(|r| r.body_str())
            .unwrap_or_default();
        let per_worker: Vec<u64> = stats
            .lines()
            .filter(|l| l.starts_with("listener.") && l.contains(".worker_"))
            .filter_map(|l| l.rsplit(": ").next()?.trim().parse().ok())
            .collect();
        if per_worker.len() != 2 || per_worker.contains(&0) {
            return Err(ctx(format!("connections per worker: {stats}")));
        }
    }
    Ok(Run {
        admitted,
        denied,
        settled_micros: settled,
        elapsed,
    })
}

#[test]
fn a_budget_holds_under_concurrent_requests_in_both_hosts() {
    let reps: usize = std::env::var("WRIT_BUDGET_REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    let dir = TempDir::new("budget-concurrency");
    let artifact = build_budget_policy(dir.path());
    let mut failures = Vec::new();
    // Usage in a JSON reply, and in the last event of a stream (the gateway asks for it
    // with `stream_options.include_usage`); both cost 10 prompt + 5 completion tokens.
    let replies = [
        ("json", Reply::chat("ok")),
        (
            "sse",
            Reply::Echo {
                sse: true,
                tool_args: false,
            },
        ),
    ];
    for (kind, (mode, reply)) in HostKind::BOTH
        .into_iter()
        .flat_map(|k| replies.iter().map(move |r| (k, r)))
    {
        let mut admitted = Vec::new();
        for rep in 0..reps {
            match run_once(kind, &artifact, reply) {
                Ok(run) => {
                    eprintln!(
                        "{kind:?} {mode} run {}/{reps}: {} admitted, {} denied, settled {} of {} micros, {:?}",
                        rep + 1,
                        run.admitted,
                        run.denied,
                        run.settled_micros,
                        BUDGET_CAP_MICROS,
                        run.elapsed
                    );
                    admitted.push(run.admitted);
                }
                Err(e) => failures.push(format!("{mode} run {}: {e}", rep + 1)),
            }
        }
        eprintln!(
            "{kind:?} {mode}: {}/{reps} runs passed; admitted per run {admitted:?}",
            admitted.len()
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
