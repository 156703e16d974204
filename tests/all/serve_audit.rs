//! `writ serve --audit-log`: one hash-chained record per request, no PII values in it, and
//! `writ audit verify` / `show` work on the file the gateway wrote.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::{Request, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{workspace_root, writ_bin};

/// Starts `writ serve` on the support-assistant policy with an audit log at `audit`, and
/// waits for its address.
fn start_serve(
    upstream: &Upstream,
    dir: &TempDir,
    audit: &std::path::Path,
    extra: &[&str],
) -> (std::process::Child, std::net::SocketAddr) {
    let stderr = dir.path().join("serve.log");
    let child = Command::new(writ_bin())
        .current_dir(workspace_root())
        .args(["serve", "--policy", "policies/support-assistant.policy"])
        .arg("--upstream")
        .arg(format!("http://{}", upstream.addr()))
        .args(["--listen", "127.0.0.1:0", "--audit-log"])
        .arg(audit)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: std::net::SocketAddr = loop {
        let log = std::fs::read_to_string(&stderr).unwrap_or_default();
        if let Some(a) = log
            .split("listening on http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "writ serve did not start:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    (child, addr)
}

/// Reads the audit log until it holds `n` records (records are written when each stream
/// closes), for up to ten seconds.
fn wait_for_records(audit: &std::path::Path, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = std::fs::read_to_string(audit).unwrap_or_default();
        if t.lines().count() >= n || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_writes_a_verifiable_audit_log_without_values() {
    let upstream = Upstream::start(Reply::chat("Noted."));
    let dir = TempDir::new("serve-audit");
    let audit = dir.path().join("audit.jsonl");
    let (mut child, addr) = start_serve(&upstream, &dir, &audit, &[]);

    let ask = |model: &str, text: &str, id: &str| {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]});
        let req = Request::post_json("/v1/chat/completions", &body.to_string())
            .header("x-workflow", "support-assistant")
            .header("x-jwt-team", "billing")
            .header("x-request-id", id);
        send(addr, &req, Duration::from_secs(20)).unwrap()
    };
    assert_eq!(
        ask("gpt-4o-mini", "My email is jane.doe@example.com", "req-ok").status,
        200
    );
    assert_eq!(ask("gpt-3.5-turbo", "hello", "req-denied").status, 403);

    let text = wait_for_records(&audit, 2);
    let _ = child.kill();
    let _ = child.wait();

    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    assert!(
        !text.contains("jane.doe@example.com"),
        "a value leaked into the audit log"
    );
    assert_eq!(records[0]["request_id"], "req-ok");
    assert_eq!(records[0]["pii"]["email"], 1, "{}", records[0]);
    assert_eq!(records[1]["status"], 403);
    assert!(
        records[1]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["clause"] == "AIP-3.1"),
        "{}",
        records[1]
    );
    let sha = records[0]["artifact_sha256"].as_str().unwrap_or_default();
    assert_eq!(sha.len(), 64, "the gateway tells the artifact its hash");

    let verify = Command::new(writ_bin())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let show = Command::new(writ_bin())
        .args(["audit", "show", "req-denied"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&show.stdout).contains("AIP-3.1"));

    // One byte changed anywhere breaks the chain.
    let tampered = text.replacen("\"status\":403", "\"status\":200", 1);
    assert_ne!(tampered, text);
    std::fs::write(&audit, tampered).unwrap();
    let verify = Command::new(writ_bin())
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(!verify.status.success());
}

/// A chat request just under the 1 MiB body limit whose prompt is ~71,000 distinct e-mail
/// addresses (one every ~15 bytes).
fn one_mebibyte_of_addresses(request_id: &str) -> Request {
    let mut content = String::with_capacity(1 << 20);
    let mut addresses = 0u32;
    while content.len() < 1_040_000 {
        content.push_str(&format!("u{addresses:x}@ex.org "));
        addresses += 1;
    }
    assert!(addresses > 70_000, "{addresses}");
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}]
    })
    .to_string();
    assert!(body.len() <= 1 << 20, "{}", body.len());
    Request::post_json("/v1/chat/completions", &body)
        .header("x-workflow", "support-assistant")
        .header("x-jwt-team", "billing")
        .header("x-request-id", request_id)
}

/// Deadline safety (issue 14 §6): a prompt just under the 1 MiB body limit holding ~70,000
/// distinct e-mail addresses finishes inside the guest's call deadline in `writ serve`:
/// 200, every address tokenised before the upstream sees it, one `allow` record. (A filter
/// that ran past its deadline would give 503 `engine_error` and an `error` record.)
#[test]
fn serve_tokenises_a_one_mebibyte_prompt_of_addresses_in_time() {
    let upstream = Upstream::start(Reply::chat("Noted."));
    let dir = TempDir::new("serve-1mib");
    let audit = dir.path().join("audit.jsonl");
    let (mut child, addr) = start_serve(&upstream, &dir, &audit, &[]);

    let req = one_mebibyte_of_addresses("req-1mib");
    let reply = send(addr, &req, Duration::from_secs(60)).unwrap();
    let text = wait_for_records(&audit, 1);
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(reply.status, 200, "{}", reply.body_str());
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    let sent = String::from_utf8_lossy(&received[0].body);
    assert!(!sent.contains("@ex.org"), "an address reached the upstream");
    let forwarded: serde_json::Value = serde_json::from_str(&sent).unwrap();
    assert!(
        forwarded["messages"][0]["content"]
            .as_str()
            .is_some_and(|c| c.len() > 500_000),
        "the prompt was not forwarded"
    );
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0]["request_id"], "req-1mib");
    assert_eq!(records[0]["status"], 200, "{}", records[0]);
    assert_eq!(records[0]["outcome"], "allowed", "{}", records[0]);
}

/// The same prompt under a 1 ms filter deadline: the guest is stopped, the client gets the
/// fixed 503 `engine_error` (nothing internal), nothing reaches the upstream, and the
/// request still has its one record, outcome `error`.
#[test]
fn serve_fails_a_one_mebibyte_prompt_closed_past_the_filter_deadline() {
    let upstream = Upstream::start(Reply::chat("Noted."));
    let dir = TempDir::new("serve-1mib-deadline");
    let audit = dir.path().join("audit.jsonl");
    let (mut child, addr) = start_serve(&upstream, &dir, &audit, &["--filter-timeout-ms", "1"]);

    let reply = send(
        addr,
        &one_mebibyte_of_addresses("req-deadline"),
        Duration::from_secs(60),
    )
    .unwrap();
    let text = wait_for_records(&audit, 1);
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(reply.status, 503, "{}", reply.body_str());
    let error = &reply.json()["error"];
    assert_eq!(error["code"], "engine_error", "{error}");
    assert_eq!(error["type"], "engine_error", "{error}");
    let body = reply.body_str();
    for internal in [
        "wasm",
        "trap",
        "epoch",
        "deadline",
        "interrupt",
        "backtrace",
    ] {
        assert!(
            !body.to_ascii_lowercase().contains(internal),
            "internals reached the client: {body}"
        );
    }
    assert!(upstream.received().is_empty(), "the request was forwarded");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    assert_eq!(records[0]["request_id"], "req-deadline");
    assert_eq!(records[0]["outcome"], "error", "{}", records[0]);
    assert_eq!(records[0]["status"], 503, "{}", records[0]);
}
