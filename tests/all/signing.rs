//! Artifacts that cannot be swapped: `writ keygen` → `writ build --sign` → `writ verify`,
//! and one flipped byte anywhere (header, code, policy blob, manifest, signature) refused by
//! `writ verify`, by `writ serve --trust`, by `writ envoy --trust`, and by real Envoy itself
//! when it fetches the module through `writ envoy --artifact-url` (sha256 pinned).

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmparser::{Parser, Payload};
use writ_compiler::link::sign;

use crate::support::cases::{Case, Expect, build_e2e_policy, run_case};
use crate::support::envoy::EnvoyProcess;
use crate::support::http::{Request, read_request, send};
use crate::support::process::run_bounded;
use crate::support::serve::ServeProcess;
use crate::support::tempdir::TempDir;
use crate::support::upstream::{Reply, Upstream};
use crate::support::{output_text, writ_envoy, writ_in};

/// A signed build of the e2e policy: (temp dir, signed artifact, public key, the unsigned
/// artifact of the same policy).
pub(crate) fn signed_e2e() -> (TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = TempDir::new("signing");
    let unsigned = build_e2e_policy(dir.path());
    let keygen = writ_in(dir.path(), &["keygen", "--out", "ci"]);
    assert!(keygen.status.success(), "{}", output_text(&keygen));
    let build = writ_in(
        dir.path(),
        &[
            "build",
            "e2e-gateway.policy",
            "--sign",
            "ci.key",
            "--out",
            "signed",
        ],
    );
    assert!(build.status.success(), "{}", output_text(&build));
    let signed = dir.path().join("signed/e2e-gateway-0.1.0.wasm");
    let public = dir.path().join("ci.pub");
    (dir, signed, public, unsigned)
}

/// Byte offsets to flip, one in each part of the artifact, named.
fn positions(wasm: &[u8]) -> Vec<(&'static str, usize)> {
    let mut out = vec![("header", 5)];
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.unwrap() {
            Payload::CodeSectionStart { range, .. } => {
                out.push(("code section", range.start + (range.end - range.start) / 2));
            }
            Payload::DataSection(reader) => {
                // The policy blob is the last active segment the linker appends.
                let last = reader.into_iter().last().unwrap().unwrap();
                out.push(("policy blob", last.range.end - 3));
            }
            Payload::CustomSection(c) if c.name() == "writ.manifest" => {
                out.push(("manifest section", c.data_offset() + c.data().len() / 2));
            }
            Payload::CustomSection(c) if c.name() == sign::SIGNATURE_SECTION => {
                let r = c.range();
                out.push(("signature section size", r.start + 1));
                out.push(("signature key id", c.data_offset() + 40));
                out.push(("signature bytes", c.data_offset() + c.data().len() - 10));
            }
            _ => {}
        }
    }
    out.push(("last byte", wasm.len() - 1));
    assert_eq!(out.len(), 8, "every part found: {out:?}");
    out
}

fn flipped(wasm: &[u8], at: usize) -> Vec<u8> {
    let mut bad = wasm.to_vec();
    bad[at] ^= 0x01;
    bad
}

#[test]
fn keygen_build_sign_verify_round_trip() {
    let (dir, signed, public, unsigned) = signed_e2e();
    let d = dir.path();

    // The secret key is private to its owner, and never overwritten by accident.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("ci.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "secret key mode {mode:o}");
    }
    let before = std::fs::read(d.join("ci.key")).unwrap();
    let again = writ_in(d, &["keygen", "--out", "ci"]);
    assert!(!again.status.success());
    assert!(
        output_text(&again).contains("--force"),
        "{}",
        output_text(&again)
    );
    assert_eq!(std::fs::read(d.join("ci.key")).unwrap(), before);
    let default = writ_in(d, &["keygen"]);
    assert!(default.status.success(), "{}", output_text(&default));
    assert!(d.join("writ.key").is_file() && d.join("writ.pub").is_file());

    // Signing is reproducible: a second signed build has the same bytes.
    let rebuild = writ_in(
        d,
        &[
            "build",
            "e2e-gateway.policy",
            "--sign",
            "ci.key",
            "--out",
            "again",
        ],
    );
    assert!(rebuild.status.success(), "{}", output_text(&rebuild));
    let bytes = std::fs::read(&signed).unwrap();
    assert_eq!(
        std::fs::read(d.join("again/e2e-gateway-0.1.0.wasm")).unwrap(),
        bytes,
        "two signed builds differ"
    );
    // The manifest beside it hashes the signed file and names the key.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.join("signed/e2e-gateway-0.1.0.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["artifact_sha256"],
        writ_compiler::link::sha256_hex(&bytes)
    );
    assert!(manifest["signed_by"].is_string(), "{manifest}");
    // The signed artifact is still a valid module and a readable writ artifact.
    wasmparser::Validator::new().validate_all(&bytes).unwrap();
    let inspect = writ_in(d, &["inspect", signed.to_str().unwrap()]);
    assert!(inspect.status.success(), "{}", output_text(&inspect));
    assert!(output_text(&inspect).contains("signature    key "));

    // Rebuilding over a signed artifact of the same version is the same enforcement.
    let over = writ_in(
        d,
        &[
            "build",
            "e2e-gateway.policy",
            "--sign",
            "ci.key",
            "--out",
            "signed",
        ],
    );
    assert!(over.status.success(), "{}", output_text(&over));
    assert_eq!(std::fs::read(&signed).unwrap(), bytes);

    let pubkey = public.to_str().unwrap();
    let ok = writ_in(d, &["verify", signed.to_str().unwrap(), "--trust", pubkey]);
    assert!(ok.status.success(), "{}", output_text(&ok));
    assert!(output_text(&ok).contains("ok, signed by key"));
    let json = writ_in(
        d,
        &[
            "verify",
            signed.to_str().unwrap(),
            unsigned.to_str().unwrap(),
            "--trust",
            pubkey,
            "--format",
            "json",
        ],
    );
    assert!(!json.status.success(), "one of two is unsigned");
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report[0]["ok"], true);
    assert_eq!(report[1]["ok"], false);
    assert_eq!(
        report[0]["artifact_sha256"],
        writ_compiler::link::sha256_hex(&bytes)
    );

    let unsigned_out = writ_in(
        d,
        &["verify", unsigned.to_str().unwrap(), "--trust", pubkey],
    );
    assert!(!unsigned_out.status.success());
    assert!(
        output_text(&unsigned_out).contains("unsigned"),
        "{}",
        output_text(&unsigned_out)
    );

    let wrong = writ_in(
        d,
        &["verify", signed.to_str().unwrap(), "--trust", "writ.pub"],
    );
    assert!(!wrong.status.success());
    assert!(
        output_text(&wrong).contains("wrong key"),
        "{}",
        output_text(&wrong)
    );
    // A secret key is not a trust anchor, and says so.
    let secret = writ_in(
        d,
        &["verify", signed.to_str().unwrap(), "--trust", "ci.key"],
    );
    assert!(!secret.status.success());
    assert!(
        output_text(&secret).contains("secret key"),
        "{}",
        output_text(&secret)
    );
}

#[test]
fn one_flipped_byte_anywhere_is_refused_by_writ_verify_and_writ_envoy() {
    let (dir, signed, public, _) = signed_e2e();
    let bytes = std::fs::read(&signed).unwrap();
    let key = sign::PublicKey::parse(&std::fs::read_to_string(&public).unwrap()).unwrap();
    // Exhaustively through the library, one bit in every 251st byte (every part is hit).
    for at in (0..bytes.len()).step_by(251) {
        assert!(
            sign::verify(&flipped(&bytes, at), std::slice::from_ref(&key)).is_err(),
            "byte {at} flipped was accepted"
        );
    }
    // And through the command line, once per part.
    let pubkey = public.to_str().unwrap();
    for (part, at) in positions(&bytes) {
        let bad = dir.path().join(format!("flipped-{at}.wasm"));
        std::fs::write(&bad, flipped(&bytes, at)).unwrap();
        let out = writ_in(
            dir.path(),
            &["verify", bad.to_str().unwrap(), "--trust", pubkey],
        );
        let text = output_text(&out);
        assert!(!out.status.success(), "{part} (byte {at}) accepted: {text}");
        assert!(text.contains("refusing artifact"), "{part}: {text}");
        assert!(
            text.contains(bad.to_str().unwrap()),
            "{part}: unnamed: {text}"
        );
        let envoy = writ_in(
            dir.path(),
            &[
                "envoy",
                bad.to_str().unwrap(),
                "--upstream",
                "127.0.0.1:9",
                "--trust",
                pubkey,
            ],
        );
        assert!(
            !envoy.status.success() && envoy.stdout.is_empty(),
            "writ envoy wrote a config for a changed artifact ({part}): {}",
            output_text(&envoy)
        );
    }
}

#[test]
fn writ_serve_trust_refuses_unsigned_or_changed_artifacts_and_names_them() {
    let (dir, signed, public, unsigned) = signed_e2e();
    let upstream = Upstream::start(Reply::chat("ok"));
    let trust = vec!["--trust".to_string(), public.display().to_string()];

    let serve = ServeProcess::start_with(&signed, upstream.addr(), &trust).unwrap();
    let case = Case::new(
        "signed artifact enforces",
        Request::post_json(
            "/v1/chat/completions",
            r#"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .header("x-workflow", "e2e"),
        Expect::Denied {
            status: 403,
            code: None,
        },
    );
    run_case(&serve, &upstream, &case).unwrap();
    drop(serve);

    let refused = |artifact: &Path, why: &str| {
        let err = match ServeProcess::start_with(artifact, upstream.addr(), &trust) {
            Ok(_) => panic!("writ serve --trust served {why}"),
            Err(e) => e,
        };
        assert!(err.contains("refusing artifact"), "{why}: {err}");
        assert!(
            err.contains(&artifact.display().to_string()),
            "{why}: {err}"
        );
        err
    };
    assert!(refused(&unsigned, "an unsigned artifact").contains("unsigned"));
    let bytes = std::fs::read(&signed).unwrap();
    for (part, at) in positions(&bytes) {
        let bad = dir.path().join(format!("serve-flipped-{at}.wasm"));
        std::fs::write(&bad, flipped(&bytes, at)).unwrap();
        refused(&bad, part);
    }
    // A source compiled in memory cannot be signed.
    let source = dir.path().join("e2e-gateway.policy");
    assert!(refused(&source, "a .policy source").contains("signed `.wasm`"));
    assert!(
        upstream.received().is_empty(),
        "nothing reached the upstream"
    );
}

#[test]
fn writ_serve_trust_keeps_the_verified_module_when_a_reload_finds_a_changed_one() {
    let (dir, signed, public, _) = signed_e2e();
    let upstream = Upstream::start(Reply::chat("ok"));
    // Serve a copy, so the test can change the file under the running gateway.
    let live = dir.path().join("live.wasm");
    std::fs::copy(&signed, &live).unwrap();
    let trust = vec!["--trust".to_string(), public.display().to_string()];
    let serve = ServeProcess::start_with(&live, upstream.addr(), &trust).unwrap();
    let denied = Case::new(
        "still enforced",
        Request::post_json(
            "/v1/chat/completions",
            r#"{"model":"gpt-3.5-turbo","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .header("x-workflow", "e2e"),
        Expect::Denied {
            status: 403,
            code: None,
        },
    );
    run_case(&serve, &upstream, &denied).unwrap();
    let bytes = std::fs::read(&signed).unwrap();
    std::fs::write(&live, flipped(&bytes, bytes.len() / 2)).unwrap();
    let hup = run_bounded(
        Command::new("kill").args(["-HUP", &serve.pid().to_string()]),
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(hup.status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !serve.log().contains("reload failed") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = serve.log();
    assert!(
        log.contains("reload failed, keeping the current module")
            && log.contains("refusing artifact")
            && log.contains(&live.display().to_string()),
        "{log}"
    );
    run_case(&serve, &upstream, &denied).unwrap();
}

/// A loopback HTTP server that answers every request with `body` (the artifact Envoy
/// fetches), counting the requests it served.
struct FileServer {
    addr: SocketAddr,
    body: Arc<Mutex<Vec<u8>>>,
    served: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FileServer {
    fn start(body: Vec<u8>) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = FileServer {
            addr: listener.local_addr().unwrap(),
            body: Arc::new(Mutex::new(body)),
            served: Arc::default(),
            stop: Arc::default(),
        };
        let (body, served, stop) = (
            server.body.clone(),
            server.served.clone(),
            server.stop.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let Ok(reader) = conn.try_clone() else {
                    continue;
                };
                let mut reader = BufReader::new(reader);
                while let Ok(Some(_)) = read_request(&mut reader) {
                    let body = body.lock().unwrap().clone();
                    served.fetch_add(1, Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/wasm\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if conn
                        .write_all(head.as_bytes())
                        .and_then(|()| conn.write_all(&body))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        server
    }

    fn url(&self) -> String {
        format!("http://{}/artifacts/e2e-gateway-0.1.0.wasm", self.addr)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
    }
}

/// `writ envoy` for `artifact` fetched from `url`, with kernel-chosen ports.
fn envoy_config(
    dir: &Path,
    artifact: &Path,
    public: &Path,
    url: &str,
    upstream: &Upstream,
) -> String {
    let public = public.display().to_string();
    let extra = [
        "--trust",
        &public,
        "--artifact-url",
        url,
        "--artifact-fetch-retries",
        "0",
    ];
    let out = writ_envoy(dir, artifact, upstream.addr(), &extra);
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn envoy_pins_the_sha256_and_refuses_a_changed_module() {
    let (dir, signed, public, _) = signed_e2e();
    let bytes = std::fs::read(&signed).unwrap();
    let upstream = Upstream::start(Reply::chat("ok"));
    let chat = |model: &str| {
        Request::post_json(
            "/v1/chat/completions",
            &format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#),
        )
        .header("x-workflow", "e2e")
    };

    // The module as signed: Envoy fetches it, the hash matches, the policy enforces.
    let server = FileServer::start(bytes.clone());
    let config = envoy_config(dir.path(), &signed, &public, &server.url(), &upstream);
    assert!(
        config.contains("remote:") && config.contains(&writ_compiler::link::sha256_hex(&bytes))
    );
    let envoy = EnvoyProcess::start(&config).unwrap();
    assert!(
        server.served.load(Ordering::SeqCst) >= 1,
        "Envoy never fetched the module"
    );
    run_case(
        &envoy,
        &upstream,
        &Case::new("approved", chat("gpt-4o-mini"), Expect::Forwarded),
    )
    .unwrap();
    run_case(
        &envoy,
        &upstream,
        &Case::new(
            "not approved",
            chat("gpt-3.5-turbo"),
            Expect::Denied {
                status: 403,
                code: None,
            },
        ),
    )
    .unwrap();
    drop(envoy);

    // The same config, but the module served has one flipped byte: Envoy refuses it, and
    // no request reaches the upstream with the changed module in place.
    for (part, at) in positions(&bytes) {
        *server.body.lock().unwrap() = flipped(&bytes, at);
        let before = upstream.received().len();
        // Envoy fetches the module, finds its sha256 differs from the pinned one ("data is
        // invalid" at debug level), gives up after the configured retries, and the filter,
        // configured to fail closed, answers 503 to everything.
        let envoy = EnvoyProcess::start(&config).unwrap();
        for _ in 0..3 {
            let r = send(
                envoy.listener(),
                &chat("gpt-4o-mini"),
                Duration::from_secs(10),
            );
            let status = r.map(|r| r.status).unwrap_or(0);
            assert_eq!(
                status, 503,
                "{part} (byte {at}): Envoy answered {status} with a changed module"
            );
        }
        let log = envoy.log();
        assert!(
            log.contains("Retry limit exceeded for fetching data from remote data source")
                && log.contains("Plugin writ failed to load"),
            "{part}: Envoy did not refuse the module:\n{log}"
        );
        assert!(
            envoy.wait_access_log("wasm_fail_stream", Duration::from_secs(5)),
            "{part}: {}",
            envoy.access_log()
        );
        assert_eq!(
            upstream.received().len(),
            before,
            "{part}: a request passed with a changed module"
        );
    }
}
