//! Governance state under concurrency: spend ledgers, alerts, kill switch and oversight
//! counters shared by many workers through the CAS store, as Envoy's worker threads share
//! proxy-wasm shared data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use writ_plugin::ir::{
    Action, CmpOp, Enforcement, Expr, KillSwitch, Micros, Operand, Oversight, Phase, Policy, Price,
    Rule, Scope, Value, Window, Workflow,
};
use writ_plugin::store::{CasMismatch, MemoryStore, SharedStore};
use writ_plugin::{kill_switch, oversight, spend};

/// A store that widens race windows: it yields between operations and makes every
/// `fail_every`-th write fail as if another worker had won, so CAS retries really run.
struct Hostile {
    inner: MemoryStore,
    writes: AtomicU64,
    fail_every: u64,
}

impl Hostile {
    fn new(fail_every: u64) -> Hostile {
        Hostile {
            inner: MemoryStore::new(),
            writes: AtomicU64::new(0),
            fail_every,
        }
    }
}

impl SharedStore for Hostile {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let r = self.inner.get(key);
        std::thread::yield_now();
        r
    }
    fn set(&self, key: &str, value: &[u8], cas: u32) -> Result<(), CasMismatch> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        if self.fail_every > 0 && n % self.fail_every == self.fail_every - 1 {
            return Err(CasMismatch);
        }
        self.inner.set(key, value, cas)
    }
}

fn budget_key(key: &str, cap: Micros, alert_at: Option<Micros>) -> spend::BudgetKey {
    spend::BudgetKey {
        key: key.into(),
        scope: Scope::Team,
        window: Window::Month,
        cap: Some(cap),
        cap_rule: Some(0),
        alert_at,
        alert_rule: Some(0),
    }
}

/// N threads × M requests against a budget far smaller than the demand. At every admit
/// the ledger total (settled + reserved, this request included) is within the cap;
/// afterwards the ledger holds exactly the sum of what was settled, nothing reserved.
#[test]
fn concurrent_requests_never_overspend_and_lose_no_update() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 400;
    const CAP: Micros = 50_000;
    let store = Hostile::new(7);
    let keys = [
        budget_key(
            "writ/spend/team/billing/month/2026-11",
            CAP,
            Some(CAP * 8 / 10),
        ),
        // A second, looser ledger each request is also charged to (the user's).
        budget_key("writ/spend/user/u1/day/2026-11-24", CAP * 10, None),
    ];
    let settled_sum = AtomicI64::new(0);
    let admitted = AtomicUsize::new(0);
    let denied = AtomicUsize::new(0);
    let alerts = Mutex::new(Vec::new());
    let start = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, keys, settled_sum, admitted, denied, alerts, start) = (
                &store,
                &keys,
                &settled_sum,
                &admitted,
                &denied,
                &alerts,
                &start,
            );
            s.spawn(move || {
                start.wait();
                for i in 0..PER_THREAD {
                    let estimate = 100 + ((t * 31 + i * 17) % 400) as Micros;
                    match spend::reserve(store, keys, estimate) {
                        Ok(spend::Admission::Admit { totals }) => {
                            assert!(totals[0] <= CAP, "admitted at total {}", totals[0]);
                            admitted.fetch_add(1, Ordering::Relaxed);
                            if i % 5 == 0 {
                                // The upstream failed: nothing is charged.
                                spend::release(store, keys, estimate).unwrap();
                            } else {
                                // Real cost at most the estimate (the estimate is an upper bound).
                                let actual = estimate - (i as Micros % 50);
                                let a = spend::settle(store, keys, estimate, actual).unwrap();
                                settled_sum.fetch_add(actual, Ordering::Relaxed);
                                alerts.lock().unwrap().extend(a);
                            }
                        }
                        Ok(spend::Admission::Deny { current, limit, .. }) => {
                            assert_eq!(limit, CAP);
                            assert!(current + estimate > CAP);
                            denied.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("store error: {e}"),
                    }
                }
            });
        }
    });
    let ledger = spend::ledger(&store, &keys[0].key).unwrap();
    assert_eq!(ledger.settled, settled_sum.load(Ordering::Relaxed));
    assert_eq!(ledger.reserved, 0);
    assert_eq!(ledger.in_flight, 0);
    assert!(ledger.settled <= CAP);
    let user = spend::ledger(&store, &keys[1].key).unwrap();
    assert_eq!(user.settled, ledger.settled);
    assert!(admitted.load(Ordering::Relaxed) > 100);
    assert!(
        denied.load(Ordering::Relaxed) > 100,
        "the budget must actually bind"
    );
    let alerts = alerts.into_inner().unwrap();
    assert_eq!(alerts.len(), 1, "one alert per window: {alerts:?}");
    assert!(alerts[0].settled >= CAP * 8 / 10);
    assert!(ledger.alerted);
}

/// Many workers hit ledgers that do not exist yet at the same instant: creation must not
/// let one worker's write overwrite another's (the CREATE_CAS create-if-absent).
#[test]
fn simultaneous_creation_loses_nothing() {
    const THREADS: usize = 8;
    let store = MemoryStore::new();
    for round in 0..50 {
        let key = [budget_key(&format!("fresh/{round}"), Micros::MAX, None)];
        let start = Barrier::new(THREADS);
        std::thread::scope(|s| {
            for _ in 0..THREADS {
                let (store, key, start) = (&store, &key, &start);
                s.spawn(move || {
                    start.wait();
                    let r = spend::reserve(store, key, 10).unwrap();
                    assert!(matches!(r, spend::Admission::Admit { .. }));
                });
            }
        });
        let l = spend::ledger(&store, &key[0].key).unwrap();
        assert_eq!(
            (l.reserved, l.in_flight),
            (10 * THREADS as Micros, THREADS as u32)
        );
    }
}

fn budget_policy() -> Policy {
    let rule = |clause: &str, scope, window, op, limit, enforcement| Rule {
        clause: clause.into(),
        title: format!("budget {clause}"),
        phase: Phase::Request,
        condition: Expr::Compare {
            left: Operand::Spend { scope, window },
            op,
            right: Operand::Const(Value::Money(limit)),
        },
        action: Action::Deny {
            status: 429,
            message: "Budget reached.".into(),
        },
        enforcement,
        alert_at_percent: Some(80),
        line: 1,
    };
    Policy {
        name: "p".into(),
        version: "1.0.0".into(),
        source_sha256: "00".into(),
        currency: "EUR".into(),
        enforcement: Enforcement::Enforce,
        workflows: vec![Workflow {
            name: "support".into(),
            matcher: Expr::Const(true),
            oversight: Oversight::Hotl { threshold: 0.7 },
            assumed_verification_rate: Some(0.1),
            team: None,
            user: None,
            scan_headers: Vec::new(),
            scan_query: false,
            business_case: Default::default(),
            kill_points: Vec::new(),
            review_signals: None,
            handoff_output: false,
            fallback: None,
        }],
        prices: vec![Price {
            model: "gpt-4o-mini".into(),
            input_per_mtok: 150_000,
            output_per_mtok: 600_000,
            cached_input_per_mtok: None,
        }],
        detectors: vec![],
        rules: vec![
            rule(
                "AIP-4.2",
                Scope::Team,
                Window::Month,
                CmpOp::Gt,
                1_000,
                Enforcement::Enforce,
            ),
            rule(
                "AIP-4.3",
                Scope::Team,
                Window::Month,
                CmpOp::Ge,
                500,
                Enforcement::Monitor,
            ),
            rule(
                "AIP-4.4",
                Scope::User,
                Window::Day,
                CmpOp::Ge,
                5_000,
                Enforcement::Enforce,
            ),
        ],
        kill_switch: Some(KillSwitch {
            clause: None,
            admin_path: "/writ/admin/kill-switch".into(),
            // sha256("test")
            token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        }),
    }
}

/// The whole request-side flow the filter runs: plan, estimate, reserve, settle.
#[test]
fn a_policy_budget_denies_with_its_rule_once_spent() {
    let policy = budget_policy();
    let now = 1_795_490_900; // 2026-11-24T03:28:20Z
    let plan = spend::SpendPlan::for_request(&policy, Some("support"), Some("billing"), None, now);
    assert_eq!(plan.keys.len(), 2);
    assert_eq!(plan.keys[0].key, "writ/spend/team/billing/month/2026-11");
    assert_eq!(plan.keys[0].cap, Some(1_000));
    assert_eq!(
        plan.keys[0].alert_at,
        Some(400),
        "the lowest threshold: 80% of 500"
    );
    assert_eq!(plan.keys[1].key, "writ/spend/user/-/day/2026-11-24");
    assert_eq!(plan.keys[1].cap, Some(4_999));
    let store = MemoryStore::new();
    let price = spend::price_for(&policy.prices, "gpt-4o-mini").unwrap();
    let body = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 1000,
        "messages": [{"role": "user", "content": "hello"}]});
    let est = spend::estimate(price, &body, spend::DEFAULT_MAX_COMPLETION_TOKENS);
    assert!(est.micros > 0);
    let mut admitted = 0;
    let mut monitor_hits = 0;
    loop {
        match spend::reserve(&store, &plan.keys, est.micros).unwrap() {
            spend::Admission::Admit { totals } => {
                admitted += 1;
                if !plan.would_have_denied(&totals).is_empty() {
                    monitor_hits += 1;
                }
                let usage = writ_plugin::usage::usage_from_json(&serde_json::json!(
                    {"usage": {"prompt_tokens": 12, "completion_tokens": 300}}))
                .unwrap();
                spend::settle(
                    &store,
                    &plan.keys,
                    est.micros,
                    spend::cost_micros(price, &usage),
                )
                .unwrap();
            }
            spend::Admission::Deny { rule, limit, .. } => {
                assert_eq!(rule, Some(0));
                assert_eq!(policy.rules[0].clause, "AIP-4.2");
                assert_eq!(limit, 1_000);
                break;
            }
        }
        assert!(admitted < 1000, "never denied");
    }
    assert!(admitted > 1);
    assert!(
        monitor_hits > 0,
        "the monitor budget at 500 would have denied some"
    );
}

/// A stop flips every worker's next check; a resume flips it back.
#[test]
fn kill_switch_flip_is_seen_by_every_worker() {
    let policy = budget_policy();
    let store = MemoryStore::new();
    // Each step: the operator acts, then every worker checks.
    let step = Barrier::new(5);
    let admin = |body: &[u8]| {
        kill_switch::handle_admin_for(&store, &policy, "POST", Some("Bearer test"), body, 0)
            .unwrap()
    };
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (store, step) = (&store, &step);
            s.spawn(move || {
                assert!(!kill_switch::is_stopped(store, Some("support")));
                step.wait(); // checked running
                step.wait(); // stopped
                assert!(kill_switch::is_stopped(store, Some("support")));
                step.wait(); // checked stopped
                step.wait(); // resumed
                assert!(!kill_switch::is_stopped(store, Some("support")));
            });
        }
        step.wait();
        let r = admin(br#"{"workflow":"support","action":"stop","reason":"incident"}"#);
        assert_eq!(r.status, 200);
        assert_eq!(r.audit.policy, "p");
        assert_eq!(r.audit.event, "kill_switch");
        assert!(r.audit.log_line().starts_with("writ-audit {"));
        step.wait();
        step.wait();
        let r = admin(br#"{"workflow":"support","action":"resume","reason":"fixed"}"#);
        assert_eq!((r.status, r.audit.outcome.as_str()), (200, "resumed"));
        step.wait();
    });
}

/// Verification-rate counters from many workers add up exactly, and drift alerts once.
#[test]
fn verification_counts_are_exact_under_concurrency() {
    let store = Hostile::new(5);
    let alerts = AtomicUsize::new(0);
    let cfg = oversight::DriftConfig {
        window: Window::Hour,
        min_samples: 20,
    };
    std::thread::scope(|s| {
        for t in 0..6 {
            let (store, alerts) = (&store, &alerts);
            s.spawn(move || {
                for i in 0..200 {
                    let escalated = (t + i) % 3 == 0;
                    let (_, a) =
                        oversight::record_outcome(store, "support", escalated, Some(0.1), cfg, 0)
                            .unwrap();
                    if a.is_some() {
                        alerts.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(alerts.load(Ordering::Relaxed), 1);
    let rate = oversight::sliding_rate(&store, "support", Window::Hour, 0).unwrap();
    assert!((rate - 400.0 / 1200.0).abs() < 1e-9, "{rate}");
}

/// The filter's view: admit with a reservation, settle from a streamed reply's usage, and
/// log the alert the settlement raised as an audit record.
#[test]
fn reservations_settle_from_stream_usage_and_alert_into_the_audit_log() {
    let policy = budget_policy();
    let store = MemoryStore::new();
    let plan = spend::SpendPlan::for_request(&policy, Some("support"), Some("ops"), Some("u"), 0);
    let price = spend::price_for(&policy.prices, "gpt-4o-mini").unwrap();
    let mut body = serde_json::json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}]});
    assert!(writ_plugin::usage::request_stream_usage(&mut body));
    let mut alerts = Vec::new();
    for _ in 0..3 {
        let (admission, held) =
            spend::Reservation::admit(&store, &plan, price, &body, 4096).unwrap();
        assert!(matches!(admission, spend::Admission::Admit { .. }));
        let mut held = held.unwrap();
        let mut sse = writ_plugin::usage::SseUsage::new();
        sse.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n");
        sse.push(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":");
        sse.push(b"300}}\n\ndata: [DONE]\n\n");
        let settled = held.settle(&store, sse.finish()).unwrap().unwrap();
        assert!(!settled.estimated);
        assert_eq!(settled.cost_micros, 182);
        alerts.extend(settled.alerts);
        held.release(&store).unwrap();
    }
    // 546 settled crosses 80% of the monitor budget's 500 (400) once.
    assert_eq!(alerts.len(), 1);
    let record = alerts[0].audit_record(&policy, 0);
    assert_eq!(record.event, "budget_alert");
    assert!(record.detail.as_deref().unwrap().starts_with("AIP-4.3"));
    let payload: serde_json::Value = serde_json::from_slice(&alerts[0].payload(&policy)).unwrap();
    assert_eq!(payload["clause"], "AIP-4.3");
    let ledger = spend::ledger(&store, &plan.keys[0].key).unwrap();
    assert_eq!(
        (ledger.settled, ledger.reserved, ledger.in_flight),
        (546, 0, 0)
    );
}

/// Hostile bytes never panic the parsers the filter feeds from the network: SSE usage,
/// reply usage, confidence, the admin endpoint, audit log lines, stored values.
#[test]
fn hostile_input_never_panics() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet: &[u8] = b"data: {}[]\":,usage prompt_tokens 0123456789\n\r\\-.eE\xff\x00";
    let policy = budget_policy();
    let ks = policy.kill_switch.clone().unwrap();
    let store = MemoryStore::new();
    for _ in 0..2000 {
        let len = (next() % 200) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let mut sse = writ_plugin::usage::SseUsage::new();
        for chunk in bytes.chunks(1 + (next() % 7) as usize) {
            sse.push(chunk);
        }
        let _ = sse.finish();
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            let _ = writ_plugin::usage::usage_from_json(&v);
            let _ = spend::estimate(&policy.prices[0], &v, 4096);
            let mut v2 = v.clone();
            let _ = writ_plugin::usage::request_stream_usage(&mut v2);
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = writ_plugin::audit::parse_log_line(&format!("writ-audit {text}"));
        let src = writ_plugin::ir::ConfidenceSource::Header("c".into());
        let _ = oversight::read_confidence(&src, |_| Some(text.as_ref()), None);
        let r = kill_switch::handle_admin(
            &store,
            &ks,
            &["support"],
            "POST",
            Some("Bearer test"),
            &bytes,
            0,
        );
        assert!(r.status == 400 || r.status == 200 || r.status == 404);
        // Garbage under a ledger key is refused, never trusted.
        store
            .set("writ/spend/team/x/month/2026-11", &bytes, 0)
            .unwrap();
        let key = [budget_key("writ/spend/team/x/month/2026-11", 10, None)];
        if let Ok(spend::Admission::Admit { totals }) = spend::reserve(&store, &key, 1) {
            assert!(totals[0] <= 10);
        }
        let _ = spend::release(&store, &key, 1);
    }
}

/// Per-request cost of the governance state on the in-memory store (debug build numbers
/// are in the report): `cargo test -p writ-plugin --test governance -- --ignored --nocapture`.
#[test]
#[ignore]
fn per_request_cost() {
    let policy = budget_policy();
    let store = MemoryStore::new();
    let price = &policy.prices[0];
    let body = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hello there"}]});
    let n = 20_000;
    let t = std::time::Instant::now();
    for i in 0..n {
        let plan = spend::SpendPlan::for_request(&policy, Some("support"), Some("t"), Some("u"), i);
        let (_, held) = spend::Reservation::admit(&store, &plan, price, &body, 4096).unwrap();
        if let Some(mut held) = held {
            held.settle(&store, Some(writ_plugin::usage::Usage::default()))
                .unwrap();
        }
        assert!(!kill_switch::is_stopped(&store, Some("support")));
        let cfg = oversight::DriftConfig::default();
        oversight::record_outcome(&store, "support", false, Some(0.1), cfg, i).unwrap();
    }
    println!("per request: {:?}", t.elapsed() / n as u32);
}
