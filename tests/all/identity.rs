//! Identity from a verifier only, in both hosts: a client's copy of a trusted header is
//! ignored; a verified token's claim sets it; a missing, expired, wrongly issued or forged
//! token gets an OpenAI-style 401 and an audit record. Keys and tokens are minted here.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::envoy::EnvoyProcess;
use crate::support::http::{Request, Response, send};
use crate::support::jwt::{self, AUDIENCE, ISSUER, Issuer};
use crate::support::serve::ServeProcess;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{output_text, writ};

/// Builds the support-assistant artifact (its workflow trusts `x-jwt-team` and `x-jwt-sub`).
fn artifact(dir: &Path) -> std::path::PathBuf {
    let out = writ(&[
        "build",
        "policies/support-assistant.policy",
        "--out",
        &dir.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", output_text(&out));
    dir.join("support-assistant-1.0.0.wasm")
}

fn ask(addr: SocketAddr, id: &str, token: Option<&str>, forged_team: Option<&str>) -> Response {
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]});
    let mut req = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-request-id", id);
    if let Some(t) = token {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    if let Some(team) = forged_team {
        req = req
            .header("x-jwt-team", team)
            .header("x-jwt-sub", "mallory");
    }
    send(addr, &req, Duration::from_secs(20)).unwrap()
}

/// Every `writ-audit` record in `text` (a host log) or every JSON line (an audit file).
fn records_in(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter_map(|l| match l.split_once("writ-audit ") {
            Some((_, json)) => serde_json::from_str(json).ok(),
            None => serde_json::from_str(l).ok(),
        })
        .filter(|v: &serde_json::Value| v["event"] == "request")
        .collect()
}

/// Waits until the records of request `id` appear, and returns them.
fn records_of(id: &str, read: &dyn Fn() -> String) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<_> = records_in(&read())
            .into_iter()
            .filter(|r| r["request_id"] == id)
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            // Give a duplicate the chance to show up before counting.
            std::thread::sleep(Duration::from_millis(200));
            return records_in(&read())
                .into_iter()
                .filter(|r| r["request_id"] == id)
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_openai_401(name: &str, r: &Response) {
    assert_eq!(
        r.status,
        401,
        "{name}: {}",
        String::from_utf8_lossy(&r.body)
    );
    let e = &r.json()["error"];
    assert!(
        e["message"].is_string() && e["type"] == "authentication_error" && e["code"].is_string(),
        "{name}: not an OpenAI-style error: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// The cases both hosts must pass. `exact_codes`: `writ serve` names each failure with its
/// own code; Envoy's code is its response detail.
fn identity_cases(
    host: &str,
    addr: SocketAddr,
    upstream: &Upstream,
    issuer: &Issuer,
    read: &dyn Fn() -> String,
    exact_codes: bool,
) {
    // A valid token of each algorithm: its claims are used, the forged header is not.
    for (i, key) in [&issuer.rsa, &issuer.ec, &issuer.ed]
        .into_iter()
        .enumerate()
    {
        let id = format!("{host}-valid-{i}");
        let token = jwt::sign(key, &jwt::claims("billing", "agent-7"));
        let r = ask(addr, &id, Some(&token), Some("finance"));
        assert_eq!(
            r.status,
            200,
            "{host} {:?}: {}",
            key.alg,
            String::from_utf8_lossy(&r.body)
        );
        let seen = upstream.received();
        let last = seen.last().unwrap();
        assert_eq!(
            last.header_value("x-jwt-team"),
            Some("billing"),
            "{host} {:?}",
            key.alg
        );
        assert_eq!(last.header_value("x-jwt-sub"), Some("agent-7"));
        assert_eq!(
            last.header_value("authorization"),
            None,
            "{host}: the token was forwarded"
        );
        let recs = records_of(&id, read);
        assert_eq!(recs.len(), 1, "{host}: {recs:?}");
        assert_eq!(recs[0]["team"], "billing", "{host}: {}", recs[0]);
        assert_eq!(recs[0]["user"], "agent-7");
    }
    let before = upstream.received().len();
    let mut expired = jwt::claims("billing", "agent-7");
    expired["exp"] = serde_json::json!(jwt::now() - 3600);
    expired["iat"] = serde_json::json!(jwt::now() - 7200);
    let mut wrong_issuer = jwt::claims("billing", "agent-7");
    wrong_issuer["iss"] = serde_json::json!("https://evil.example");
    let good = jwt::claims("billing", "agent-7");
    let refused = [
        ("missing", None, "missing_token"),
        (
            "expired",
            Some(jwt::sign(&issuer.ec, &expired)),
            "token_expired",
        ),
        (
            "wrong-issuer",
            Some(jwt::sign(&issuer.rsa, &wrong_issuer)),
            "invalid_issuer",
        ),
        (
            "bad-signature",
            Some(jwt::tampered(&issuer.ed, &good)),
            "invalid_signature",
        ),
        ("garbage", Some("not-a-jwt".to_string()), "malformed_token"),
    ];
    for (name, token, code) in refused {
        let id = format!("{host}-{name}");
        let r = ask(addr, &id, token.as_deref(), Some("finance"));
        assert_openai_401(&format!("{host} {name}"), &r);
        if exact_codes {
            assert_eq!(r.json()["error"]["code"], code, "{host} {name}");
        }
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(!body.contains("finance") && !body.contains("eyJ"), "{body}");
        let recs = records_of(&id, read);
        assert_eq!(recs.len(), 1, "{host} {name}: {recs:?}");
        assert_eq!(recs[0]["status"], 401, "{host} {name}: {}", recs[0]);
        assert!(recs[0].get("team").is_none(), "{host} {name}: {}", recs[0]);
    }
    assert_eq!(
        upstream.received().len(),
        before,
        "{host}: a refused request was forwarded"
    );
}

#[test]
fn serve_sets_identity_from_verified_tokens_only() {
    let dir = TempDir::new("identity-serve");
    let wasm = artifact(dir.path());
    let issuer = Issuer::new();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks()).unwrap();
    let audit = dir.path().join("audit.jsonl");
    let upstream = Upstream::start(Reply::chat("Noted."));
    let args: Vec<String> = [
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
        "--jwks",
        &jwks.display().to_string(),
        "--audit-log",
        &audit.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let serve = ServeProcess::start_with(&wasm, upstream.addr(), &args).unwrap();
    let read = || std::fs::read_to_string(&audit).unwrap_or_default();
    identity_cases("serve", serve_addr(&serve), &upstream, &issuer, &read, true);
    let verify = writ(&["audit", "verify", &audit.display().to_string()]);
    assert!(verify.status.success(), "{}", output_text(&verify));
}

fn serve_addr(serve: &ServeProcess) -> SocketAddr {
    use crate::support::cases::Gateway;
    serve.addr()
}

#[test]
fn serve_without_a_verifier_removes_forged_identity_and_warns() {
    let dir = TempDir::new("identity-serve-none");
    let wasm = artifact(dir.path());
    let upstream = Upstream::start(Reply::chat("Noted."));
    let serve = ServeProcess::start(&wasm, upstream.addr()).unwrap();
    let r = ask(serve_addr(&serve), "forged-1", None, Some("finance"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = upstream.received();
    assert_eq!(seen[0].header_value("x-jwt-team"), None);
    assert_eq!(seen[0].header_value("x-jwt-sub"), None);
    let log = serve.log();
    assert!(
        log.contains("warning: writ serve") && log.contains("`x-jwt-team`"),
        "{log}"
    );
    let recs = records_of("forged-1", &|| serve.log());
    assert_eq!(recs.len(), 1);
    assert!(recs[0].get("team").is_none(), "{}", recs[0]);
}

/// `writ envoy`'s config for the artifact, with kernel-chosen ports.
fn envoy_yaml(wasm: &Path, upstream: &Upstream, extra: &[&str]) -> (String, String) {
    let out = crate::support::writ_envoy(
        crate::support::workspace_root(),
        wasm,
        upstream.addr(),
        extra,
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn envoy_sets_identity_from_verified_tokens_only() {
    let dir = TempDir::new("identity-envoy");
    let wasm = artifact(dir.path());
    let issuer = Issuer::new();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, issuer.jwks()).unwrap();
    let upstream = Upstream::start(Reply::chat("Noted."));
    let jwks_arg = jwks.display().to_string();
    let (yaml, _) = envoy_yaml(
        &wasm,
        &upstream,
        &[
            "--jwt-issuer",
            ISSUER,
            "--jwt-audience",
            AUDIENCE,
            "--jwks",
            &jwks_arg,
        ],
    );
    let envoy = EnvoyProcess::start(&yaml).unwrap();
    let read = || envoy.log();
    identity_cases("envoy", envoy.listener(), &upstream, &issuer, &read, false);
}

#[test]
fn envoy_without_a_verifier_removes_forged_identity_and_warns() {
    let dir = TempDir::new("identity-envoy-none");
    let wasm = artifact(dir.path());
    let upstream = Upstream::start(Reply::chat("Noted."));
    let (yaml, warning) = envoy_yaml(&wasm, &upstream, &[]);
    assert!(
        warning.contains("warning: writ envoy") && warning.contains("`x-jwt-team`"),
        "{warning}"
    );
    let envoy = EnvoyProcess::start(&yaml).unwrap();
    let r = ask(envoy.listener(), "forged-1", None, Some("finance"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = upstream.received();
    assert_eq!(seen[0].header_value("x-jwt-team"), None);
    let recs = records_of("forged-1", &|| envoy.log());
    assert_eq!(recs.len(), 1);
    assert!(recs[0].get("team").is_none(), "{}", recs[0]);
}

#[test]
fn serve_engine_failure_answers_a_fixed_error_and_one_record() {
    let dir = TempDir::new("engine-failure");
    let wasm = artifact(dir.path());
    let audit = dir.path().join("audit.jsonl");
    let upstream = Upstream::start(Reply::chat("Noted."));
    let args: Vec<String> = [
        "--filter-timeout-ms",
        "1",
        "--audit-log",
        &audit.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let serve = ServeProcess::start_with(&wasm, upstream.addr(), &args).unwrap();
    // A prompt of almost 1 MiB (the engine's body limit) full of things to scan: the
    // engine's work on it is tens of milliseconds (`benches/README.md`, `body_growth`), so
    // it cannot finish within 1 ms on any machine. (The deadline was 20 ms until the
    // tokeniser's vault got faster and the prompt passed inside it.)
    let prompt = "call +1 415 555 0100 or mail a.b@example.com ".repeat(21_000);
    let body = serde_json::json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]});
    let req = Request::post_json("/v1/chat/completions", &body.to_string())
        .header("x-workflow", "support-assistant")
        .header("x-request-id", "trap-1");
    let r = send(serve_addr(&serve), &req, Duration::from_secs(30)).unwrap();
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        r#"{"error":{"message":"The policy engine failed; the request was not forwarded.","type":"engine_error","code":"engine_error"}}"#
    );
    assert!(upstream.received().is_empty());
    let read = || std::fs::read_to_string(&audit).unwrap_or_default();
    let recs = records_of("trap-1", &read);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["outcome"], "error");
    assert_eq!(recs[0]["status"], 503);
    assert_eq!(recs[0]["policy"], "support-assistant");
    assert!(
        !read().contains("example.com"),
        "a value reached the audit log"
    );
    // The gateway keeps serving after the failure.
    let small = ask(serve_addr(&serve), "after-1", None, None);
    assert_eq!(
        small.status,
        200,
        "{}",
        String::from_utf8_lossy(&small.body)
    );
}
