//! `writ serve --audit-log`: one hash-chained record per request, no PII values in it, and
//! `writ audit verify` / `show` work on the file the gateway wrote.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::{Request, send};
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{workspace_root, writ_bin};

#[test]
fn serve_writes_a_verifiable_audit_log_without_values() {
    let upstream = Upstream::start(Reply::chat("Noted."));
    let dir = TempDir::new("serve-audit");
    let audit = dir.path().join("audit.jsonl");
    let stderr = dir.path().join("serve.log");
    let mut child = Command::new(writ_bin())
        .current_dir(workspace_root())
        .args(["serve", "--policy", "policies/support-assistant.policy"])
        .arg("--upstream")
        .arg(format!("http://{}", upstream.addr()))
        .args(["--listen", "127.0.0.1:0", "--audit-log"])
        .arg(&audit)
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

    // Records are written when each stream closes; give the gateway a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let t = std::fs::read_to_string(&audit).unwrap_or_default();
        if t.lines().count() >= 2 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
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
