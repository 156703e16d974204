//! Audit that cannot vanish in Envoy: `writ envoy --audit-log FILE` makes Envoy's access
//! log write one hash-chained record per request to FILE, whatever Envoy's log level, and
//! `writ audit verify` / `show` read it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::cases::build_e2e_policy;
use crate::support::envoy::EnvoyProcess;
use crate::support::http::{Request, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{output_text, writ_envoy, writ_in};

/// `writ envoy --audit-log` for the e2e policy, with kernel-chosen ports.
fn config(dir: &Path, artifact: &Path, upstream: &Upstream, audit: &Path) -> String {
    let audit = audit.display().to_string();
    let out = writ_envoy(dir, artifact, upstream.addr(), &["--audit-log", &audit]);
    String::from_utf8(out.stdout).unwrap()
}

fn chat(model: &str, user: &str) -> Request {
    Request::post_json(
        "/v1/chat/completions",
        &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
    )
    .header("x-workflow", "e2e")
    .header("x-team", "support")
    .header("x-user", user)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(path).len() < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    lines(path)
}

#[test]
fn at_log_level_error_every_request_has_one_chained_record() {
    let dir = TempDir::new("envoy-audit");
    let artifact = build_e2e_policy(dir.path());
    let upstream = Upstream::start(Reply::chat("ok"));
    let audit = dir.path().join("audit.jsonl");
    let yaml = config(dir.path(), &artifact, &upstream, &audit);
    let envoy = EnvoyProcess::start_with_log_level(&yaml, 2, "error").unwrap();

    // Allowed and denied requests from several clients at once, so both workers chain.
    let n_threads = 4;
    let per_thread = 10;
    let addr = envoy.listener();
    let handles: Vec<_> = (0..n_threads)
        .map(|t| {
            std::thread::spawn(move || {
                (0..per_thread)
                    .map(|i| {
                        let model = if i % 2 == 0 {
                            "gpt-4o-mini"
                        } else {
                            "gpt-3.5-turbo"
                        };
                        let r = send(
                            addr,
                            &chat(model, &format!("u{t}-{i}")),
                            Duration::from_secs(10),
                        );
                        r.map(|r| r.status).unwrap_or(0)
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 403),
        "{statuses:?}"
    );
    // A body over the buffer limit gets Envoy's 413 while the filter waits for it: the
    // filter still writes that request's record (status 413, outcome error).
    let big = format!(
        r#"{{"model":"gpt-4o-mini","x":"{}"}}"#,
        "x".repeat(1100 * 1024)
    );
    let r = send(
        addr,
        &Request::post_json("/v1/chat/completions", &big),
        Duration::from_secs(10),
    );
    assert_eq!(r.map(|r| r.status).unwrap_or(0), 413);

    let n = n_threads * per_thread + 1;
    let got = wait_lines(&audit, n);
    std::thread::sleep(Duration::from_millis(300));
    let got_after = lines(&audit);
    assert_eq!(
        got.len(),
        n,
        "records: {}",
        got.last().cloned().unwrap_or_default()
    );
    assert_eq!(got_after.len(), n, "a stray line was written");
    assert_eq!(
        got.iter().filter(|l| l.contains("\"status\":413")).count(),
        1,
        "one record for the 413"
    );
    for (t, i) in (0..n_threads).flat_map(|t| (0..per_thread).map(move |i| (t, i))) {
        let user = format!("\"user\":\"u{t}-{i}\"");
        assert_eq!(
            got.iter().filter(|l| l.contains(&user)).count(),
            1,
            "one record for u{t}-{i}"
        );
    }
    // The application log at `error` has no record: the file does not depend on it.
    assert!(!envoy.log().contains("writ-audit"), "{}", envoy.log());

    let verify = writ_in(dir.path(), &["audit", "verify", audit.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", output_text(&verify));
    assert!(output_text(&verify).contains(&format!("ok, {n} records")));
    let first: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    let id = first["request_id"].as_str().unwrap();
    let show = writ_in(dir.path(), &["audit", "show", id, audit.to_str().unwrap()]);
    assert!(show.status.success(), "{}", output_text(&show));
    assert!(output_text(&show).contains(id));

    // An edited record is caught.
    let mut edited = got.clone();
    edited[n / 2] = edited[n / 2].replacen("\"outcome\":\"", "\"outcome\":\"x", 1);
    assert_ne!(edited[n / 2], got[n / 2]);
    let tampered = dir.path().join("tampered.jsonl");
    std::fs::write(&tampered, edited.join("\n") + "\n").unwrap();
    let bad = writ_in(dir.path(), &["audit", "verify", tampered.to_str().unwrap()]);
    assert!(!bad.status.success(), "{}", output_text(&bad));
    // So is a removed one.
    let mut removed = got.clone();
    removed.remove(n / 3);
    std::fs::write(&tampered, removed.join("\n") + "\n").unwrap();
    let bad = writ_in(dir.path(), &["audit", "verify", tampered.to_str().unwrap()]);
    assert!(!bad.status.success(), "{}", output_text(&bad));
}

/// `writ audit sink` on a kernel-chosen loopback port, appending to `out`; returns the
/// process and its address.
fn start_sink(dir: &Path, out: &Path) -> (ChildGuard, std::net::SocketAddr) {
    let log = dir.join("sink.log");
    let child = std::process::Command::new(crate::support::writ_bin())
        .args(["audit", "sink", "--listen", "127.0.0.1:0", "--out"])
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text
            .split("listening on http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            return (guard, addr);
        }
        assert!(Instant::now() < deadline, "the sink did not start: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the child on drop.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// With `--audit-sink`, the filter posts each request's records to `writ audit sink` and
/// holds the end of the answer until the sink has written them. So after a SIGKILL of
/// Envoy under load, every request whose answer a client saw has its record, and the
/// file's chain verifies. (The access-log file of `--audit-log` is written after the
/// answer, through Envoy's buffered flush thread; a SIGKILL loses its last records, as
/// `docs/audit.md` records.)
#[test]
fn after_kill_9_under_load_every_answered_request_has_its_record() {
    let dir = TempDir::new("envoy-audit-kill");
    let artifact = build_e2e_policy(dir.path());
    let upstream = Upstream::start(Reply::chat("ok"));
    let audit = dir.path().join("audit.jsonl");
    let (_sink, sink_addr) = start_sink(dir.path(), &audit);
    let out = writ_envoy(
        dir.path(),
        &artifact,
        upstream.addr(),
        &["--audit-sink", &sink_addr.to_string()],
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let envoy = EnvoyProcess::start_with_log_level(&yaml, 2, "error").unwrap();
    let addr = envoy.listener();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                let mut i = 0;
                // Bounded: at most 2000 requests per client, and a few seconds in all.
                while !stop.load(Ordering::SeqCst) && i < 2000 {
                    let user = format!("k{t}-{i}");
                    // Allowed and denied requests: both kinds of answer wait for the sink.
                    let model = if i % 3 == 0 {
                        "gpt-3.5-turbo"
                    } else {
                        "gpt-4o-mini"
                    };
                    if let Ok(r) = send(addr, &chat(model, &user), Duration::from_secs(5))
                        && (r.status == 200 || r.status == 403)
                    {
                        answered.push(user);
                    }
                    i += 1;
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    drop(envoy); // SIGKILL, mid-load
    stop.store(true, Ordering::SeqCst);
    let answered: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(answered.len() > 20, "too little load: {}", answered.len());
    let verify = writ_in(dir.path(), &["audit", "verify", audit.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", output_text(&verify));
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|u| !text.contains(&format!("\"user\":\"{u}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no record after kill -9: {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(10)]
    );
    // Exactly one record per answered request: none twice.
    for u in answered.iter().take(50) {
        let n = text.matches(&format!("\"user\":\"{u}\"")).count();
        assert_eq!(n, 1, "{u} has {n} records");
    }
}
