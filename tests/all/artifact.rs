//! The artifact as a file: built by `writ build` (byte-reproducible, valid wasm, only
//! proxy-wasm imports), read back by `writ inspect` and by the linker's own reader.

use std::path::Path;
use std::process::Command;

use writ_compiler::link;
use writ_compiler::{Compiled, ManualClause, RuleInfo};
use writ_plugin::ir::*;

use crate::support::tempdir::TempDir;
use crate::support::{workspace_root, writ_bin};

/// The engine exactly as `build.rs` embedded it in the `writ` binary.
const ENGINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/engine.wasm"));

/// A policy written directly in IR, so these tests do not depend on the front end.
fn hand_compiled() -> Compiled {
    let rule = |clause: &str, title: &str, condition: Expr, action: Action, line: u32| Rule {
        clause: clause.into(),
        title: title.into(),
        phase: Phase::Request,
        condition,
        action,
        enforcement: Enforcement::Enforce,
        alert_at_percent: None,
        line,
    };
    let policy = Policy {
        name: "hand-made".into(),
        version: "0.3.1".into(),
        source_sha256: "0f".repeat(32),
        currency: "EUR".into(),
        enforcement: Enforcement::Enforce,
        workflows: vec![],
        prices: vec![],
        detectors: vec![Detector {
            name: "email".into(),
            class: DetectorClass::Pii,
            kind: DetectorKind::Builtin("email".into()),
        }],
        rules: vec![
            rule(
                "AIP-3.1",
                "Only approved models",
                Expr::Not(Box::new(Expr::In {
                    operand: Operand::Field(Field::Model),
                    set: vec![Value::Str("gpt-4o".into())],
                })),
                Action::Deny {
                    status: 403,
                    message: "Model not approved.".into(),
                },
                10,
            ),
            rule(
                "AIP-2.1",
                "No e-mail addresses",
                Expr::Has {
                    subject: Text::Prompt,
                    detectors: vec![0],
                },
                Action::Deny {
                    status: 400,
                    message: "Remove e-mail addresses.".into(),
                },
                16,
            ),
        ],
        kill_switch: None,
    };
    Compiled {
        rule_info: vec![
            RuleInfo {
                clause: "AIP-3.1".into(),
                title: "Only approved models".into(),
                line: 10,
                column: 1,
                start: 200,
                end: 320,
            },
            RuleInfo {
                clause: "AIP-2.1".into(),
                title: "No e-mail addresses".into(),
                line: 16,
                column: 1,
                start: 322,
                end: 400,
            },
        ],
        manual: vec![ManualClause {
            clause: "AIP-9.1".into(),
            title: "Staff training".into(),
            owner: "hr@example.com".into(),
            reason: "not a gateway concern".into(),
            line: 22,
        }],
        owner: "security@example.com".into(),
        implements: "ai-policy.md".into(),
        rollout: Vec::new(),
        warnings: writ_compiler::Diagnostics::default(),
        policy,
    }
}

/// Imports and exports of a module, as (module, name) and name lists.
fn interface(wasm: &[u8]) -> (Vec<(String, String)>, Vec<String>) {
    let (mut imports, mut exports) = (vec![], vec![]);
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload.unwrap() {
            wasmparser::Payload::ImportSection(r) => {
                for i in r.into_imports() {
                    let i = i.unwrap();
                    imports.push((i.module.to_string(), i.name.to_string()));
                }
            }
            wasmparser::Payload::ExportSection(r) => {
                for e in r {
                    exports.push(e.unwrap().name.to_string());
                }
            }
            _ => {}
        }
    }
    (imports, exports)
}

fn writ(args: &[&str]) -> std::process::Output {
    Command::new(writ_bin()).args(args).output().unwrap()
}

#[test]
fn linked_engine_validates_imports_only_proxy_wasm_and_reads_back() {
    let compiled = hand_compiled();
    let artifact = link::link(ENGINE, &compiled).unwrap();
    link::validate(&artifact.wasm).unwrap();
    assert_eq!(link::read_policy(&artifact.wasm).unwrap(), compiled.policy);

    let (imports, exports) = interface(&artifact.wasm);
    assert!(!imports.is_empty());
    for (module, name) in &imports {
        assert!(
            module == "env" && name.starts_with("proxy_"),
            "unexpected import {module}.{name}"
        );
    }
    for needed in [
        "memory",
        "proxy_abi_version_0_2_1",
        "proxy_on_vm_start",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "malloc",
    ] {
        assert!(
            exports.iter().any(|e| e == needed),
            "missing export {needed}"
        );
    }
    eprintln!(
        "engine {} bytes, artifact {} bytes",
        ENGINE.len(),
        artifact.wasm.len()
    );
}

#[test]
fn inspect_lists_rules_from_the_wasm_alone() {
    let dir = TempDir::new("inspect");
    let artifact = link::link(ENGINE, &hand_compiled()).unwrap();
    // Only the module: no manifest file beside it.
    let wasm = dir.path().join("copied.wasm");
    std::fs::write(&wasm, &artifact.wasm).unwrap();
    let wasm = wasm.to_str().unwrap();

    let out = writ(&["inspect", wasm]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("hand-made 0.3.1"), "{text}");
    assert!(text.contains(&link::sha256_hex(&artifact.wasm)), "{text}");
    assert!(text.contains(&"0f".repeat(32)), "{text}");
    assert!(text.contains("writ-compiler "), "{text}");
    for needle in ["AIP-3.1", "Only approved models", "AIP-2.1", "AIP-9.1"] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }

    let out = writ(&["inspect", wasm, "--format", "json"]);
    assert!(out.status.success());
    let m: link::Manifest = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m, artifact.manifest);
    let clauses: Vec<_> = m.rules.iter().map(|r| r.clause.as_str()).collect();
    assert_eq!(clauses, ["AIP-3.1", "AIP-2.1"]);
    assert_eq!(m.rules[0].line, 10);
    assert_eq!(m.rules[0].action, "deny");
}

#[test]
fn inspect_refuses_files_that_are_not_artifacts() {
    let dir = TempDir::new("inspect-bad");
    let engine = dir.path().join("engine.wasm");
    std::fs::write(&engine, ENGINE).unwrap();
    let out = writ(&["inspect", engine.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a writ artifact"));
}

/// Every file `writ build` wrote into `dir`, sorted, with its bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn writ_build_is_byte_reproducible_across_output_folders() {
    let source = workspace_root().join("policies/support-assistant.policy");
    let (a, b) = (TempDir::new("build-a"), TempDir::new("build-b"));
    let b_out = b.path().join("nested/out");
    for out in [a.path(), b_out.as_path()] {
        let res = writ(&[
            "build",
            source.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            res.status.success(),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
        let line = String::from_utf8(res.stdout).unwrap();
        assert!(line.contains(".wasm") && line.contains("sha256:"), "{line}");
    }
    let (fa, fb) = (files(a.path()), files(&b_out));
    let names: Vec<_> = fa.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "support-assistant-1.0.0.manifest.json",
            "support-assistant-1.0.0.wasm"
        ]
    );
    assert_eq!(fa, fb, "two builds of the same source differ");

    let wasm = &fa[1].1;
    link::validate(wasm).unwrap();
    let manifest: link::Manifest = serde_json::from_slice(&fa[0].1).unwrap();
    assert_eq!(
        manifest.artifact_sha256.as_deref(),
        Some(link::sha256_hex(wasm).as_str())
    );
    let policy = link::read_policy(wasm).unwrap();
    assert_eq!(policy.name, "support-assistant");
    assert_eq!(policy.rules.len(), manifest.rules.len());
}

#[test]
fn writ_build_reports_errors_and_exits_1() {
    let dir = TempDir::new("build-bad");
    let bad = dir.path().join("bad.policy");
    std::fs::write(&bad, "policy \"x\" version \"not-semver\" {\n").unwrap();
    let out = writ(&[
        "build",
        bad.to_str().unwrap(),
        "--out",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error"));
    assert!(!dir.path().join("out").exists() || files(&dir.path().join("out")).is_empty());
}

/// One request through a VM of `host`, answered by an upstream that echoes 200 `{}`.
fn send(vm: &mut writ_runtime::Vm, content_type: &str, body: &str) -> writ_runtime::Exchange {
    let req = writ_runtime::RequestSpec::new(
        "POST",
        "/v1/chat/completions",
        &[("content-type", content_type)],
        body.as_bytes(),
    );
    vm.http_request(&req, |_| {
        writ_runtime::UpstreamReply::new(200, &[("content-type", "application/json")], b"{}")
    })
}

/// The `error` object of a local JSON reply.
fn error_of(ex: &writ_runtime::Exchange) -> serde_json::Value {
    let body = ex.client_response.body_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["error"].clone()
}

#[test]
fn artifact_starts_in_the_wasmtime_host_and_decides() {
    let artifact = link::link(ENGINE, &hand_compiled()).unwrap();
    let host =
        writ_runtime::Host::new(writ_runtime::HostConfig::new(artifact.wasm.clone())).unwrap();
    let mut vm = host.vm().unwrap();

    let ok = send(
        &mut vm,
        "application/json",
        r#"{"model":"gpt-4o","messages":[]}"#,
    );
    assert_eq!(ok.error, None);
    assert_eq!(ok.client_response.status, 200);
    assert!(ok.upstream_request.is_some());

    let denied = send(&mut vm, "application/json", r#"{"model":"gpt-3.5-turbo"}"#);
    assert_eq!(denied.client_response.status, 403);
    assert!(denied.upstream_request.is_none());
    let e = error_of(&denied);
    assert_eq!(e["type"], "policy_violation");
    assert_eq!(e["code"], "AIP-3.1");
    assert_eq!(e["message"], "Model not approved.");
    assert_eq!(
        denied.client_response.header("content-type"),
        Some("application/json")
    );

    let pii = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"mail bob@example.org"}]}"#;
    let denied = send(&mut vm, "application/json", pii);
    assert_eq!(denied.client_response.status, 400);
    assert_eq!(error_of(&denied)["code"], "AIP-2.1");

    let bad = send(&mut vm, "application/json", r#"{"model":"#);
    assert_eq!(bad.client_response.status, 400);
    assert_eq!(error_of(&bad)["code"], "invalid_json");
    assert!(bad.upstream_request.is_none());

    let text = send(&mut vm, "text/plain", "hello");
    assert_eq!(text.client_response.status, 415);
    assert_eq!(error_of(&text)["type"], "invalid_request_error");
    assert!(text.upstream_request.is_none());
}

#[test]
fn unlinked_engine_refuses_to_start() {
    // The bare engine has no policy: `proxy_on_vm_start` returns false, so no VM (and no
    // request) ever runs without a policy.
    let started = writ_runtime::Host::new(writ_runtime::HostConfig::new(ENGINE.to_vec()))
        .and_then(|host| host.vm().map(|_| ()));
    match started {
        Err(e) => assert!(e.to_string().contains("refused to start"), "{e}"),
        Ok(()) => panic!("an engine without a policy must not start"),
    }
}
