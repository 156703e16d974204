//! `writ package`: the OCI image layout read back by a standard tool (Debian's `skopeo`),
//! the artifact extracted from it byte for byte (a signed one included), the layout
//! reproducible, the printed WasmPlugin valid against Istio's own CRD schema (vendored in
//! `tests/data/istio/`), and one flipped artifact byte visible in every digest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use wasmparser::{Parser, Payload};
use writ_compiler::link::sha256_hex;

use crate::support::cases::build_e2e_policy;
use crate::support::process::run_ok;
use crate::support::skopeo::skopeo;
use crate::support::tempdir::TempDir;
use crate::support::{output_text, workspace_root, writ_in};

const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const IMAGE: &str = "localhost:5000/writ/e2e-gateway:0.1.0";

/// `writ package ARTIFACT --oci OCI EXTRA…` in `dir`; returns the printed YAML, panicking
/// with the CLI's output unless it succeeds.
fn package(dir: &Path, artifact: &Path, oci: &str, extra: &[&str]) -> String {
    let artifact = artifact.display().to_string();
    let mut args = vec!["package", artifact.as_str(), "--oci", oci];
    args.extend_from_slice(extra);
    let out = writ_in(dir, &args);
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The printed WasmPlugin as JSON.
fn yaml_to_json(yaml: &str) -> Value {
    serde_norway::from_str(yaml).unwrap_or_else(|e| panic!("not YAML ({e}):\n{yaml}"))
}

/// The digests a layout holds: (manifest, layer, config) sha256 hex, read from its files.
fn layout_digests(oci: &Path) -> (String, String, String) {
    let read = |p: &Path| -> Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let index = read(&oci.join("index.json"));
    let hex = |d: &Value| {
        d["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string()
    };
    let manifest_sha = hex(&index["manifests"][0]);
    let manifest = read(&oci.join("blobs/sha256").join(&manifest_sha));
    (
        manifest_sha,
        hex(&manifest["layers"][0]),
        hex(&manifest["config"]),
    )
}

/// Every file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn skopeo_reads_the_layout_and_a_signed_artifact_comes_out_unchanged() {
    let (dir, signed, public, _unsigned) = crate::signing::signed_e2e();
    let d = dir.path();
    let wasm = std::fs::read(&signed).unwrap();
    let public = public.display().to_string();
    let yaml = package(d, &signed, "oci", &["--trust", &public, "--image", IMAGE]);
    let plugin = yaml_to_json(&yaml);
    let pinned = plugin["spec"]["sha256"].as_str().unwrap().to_string();
    let (manifest_sha, layer_sha, config_sha) = layout_digests(&d.join("oci"));
    assert_eq!(
        pinned, manifest_sha,
        "the WasmPlugin pins the image manifest"
    );
    assert_eq!(plugin["spec"]["url"], format!("oci://{IMAGE}"));

    // What skopeo makes of the image: the digest Istio checks, one layer, the config with
    // writ's manifest as a label (the layer's media type is checked in the raw manifest
    // below: Debian 12's skopeo 1.9 has no `LayersData`).
    let layout = format!("oci:{}", d.join("oci").display());
    let inspect: Value = serde_json::from_str(&skopeo(&["inspect", &layout])).unwrap();
    assert_eq!(inspect["Digest"], format!("sha256:{pinned}"), "{inspect:#}");
    assert_eq!(inspect["Layers"], json!([format!("sha256:{layer_sha}")]));
    assert_eq!(
        (inspect["Architecture"].as_str(), inspect["Os"].as_str()),
        (Some("wasm"), Some("unknown"))
    );
    let writ_manifest: Value =
        serde_json::from_str(inspect["Labels"]["dev.writ.manifest"].as_str().unwrap()).unwrap();
    assert_eq!(writ_manifest["policy"], "e2e-gateway");
    assert_eq!(writ_manifest["version"], "0.1.0");
    assert_eq!(writ_manifest["artifact_sha256"], sha256_hex(&wasm));
    assert!(writ_manifest["signed_by"].is_string(), "{writ_manifest:#}");
    assert!(
        writ_manifest["rules"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    );

    // The manifest as stored, with its annotations; its own sha256 is the pinned one.
    let raw = skopeo(&["inspect", "--raw", &format!("{layout}:0.1.0")]);
    assert_eq!(sha256_hex(raw.as_bytes()), pinned);
    let raw: Value = serde_json::from_str(&raw).unwrap();
    let notes = &raw["annotations"];
    assert_eq!(notes["module.wasm.image/variant"], "compat");
    assert_eq!(notes["dev.writ.artifact.sha256"], sha256_hex(&wasm));
    assert_eq!(notes["dev.writ.policy.version"], "0.1.0");
    assert_eq!(notes["org.opencontainers.image.title"], "e2e-gateway");
    assert_eq!(notes["org.opencontainers.image.version"], "0.1.0");
    assert!(notes.get("org.opencontainers.image.created").is_none());
    assert_eq!(raw["layers"].as_array().unwrap().len(), 1);
    assert_eq!(raw["layers"][0]["mediaType"], LAYER_TYPE);
    assert_eq!(raw["config"]["digest"], format!("sha256:{config_sha}"));

    // Copied out by skopeo (digests preserved), the layer unpacked by Debian's tar: exactly
    // `plugin.wasm`, the signed artifact byte for byte, still verifying.
    let copy = d.join("copied");
    skopeo(&[
        "copy",
        "--preserve-digests",
        &layout,
        &format!("dir:{}", copy.display()),
    ]);
    assert_eq!(
        sha256_hex(&std::fs::read(copy.join("manifest.json")).unwrap()),
        pinned
    );
    let unpacked = d.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(copy.join(&layer_sha))
            .arg("-C")
            .arg(&unpacked),
        Duration::from_secs(60),
    )
    .unwrap();
    let files: Vec<_> = tree(&unpacked).into_keys().collect();
    assert_eq!(files, [PathBuf::from("plugin.wasm")]);
    let extracted = std::fs::read(unpacked.join("plugin.wasm")).unwrap();
    assert!(
        extracted == wasm,
        "plugin.wasm differs from the signed artifact"
    );
    let verify = writ_in(d, &["verify", "unpacked/plugin.wasm", "--trust", &public]);
    assert!(verify.status.success(), "{}", output_text(&verify));
}

#[test]
fn packaging_twice_gives_identical_bytes() {
    let dir = TempDir::new("package-repro");
    let d = dir.path();
    // The bundled support policy, whose identity headers the WasmPlugin's comment names.
    let source = workspace_root().join("policies/support-assistant.policy");
    let build = writ_in(d, &["build", source.to_str().unwrap(), "--out", "out"]);
    assert!(build.status.success(), "{}", output_text(&build));
    let artifact = d.join("out/support-assistant-1.0.0.wasm");
    let first = package(d, &artifact, "a", &[]);
    assert!(
        first.contains("# The policy trusts x-jwt-team, x-jwt-sub:"),
        "{first}"
    );
    // A second apart, so a timestamp of second resolution would show.
    std::thread::sleep(Duration::from_millis(1100));
    let second = package(d, &artifact, "b", &[]);
    let a = tree(&d.join("a"));
    assert_eq!(
        a.len(),
        5,
        "oci-layout, index.json and three blobs: {:?}",
        a.keys()
    );
    assert!(
        a == tree(&d.join("b")),
        "two layouts of one artifact differ"
    );
    assert_eq!(first, second);
    // Packaging into the same folder again replaces the layout with the same bytes.
    let again = package(d, &artifact, "a", &[]);
    assert!(a == tree(&d.join("a")));
    assert_eq!(first, again);
    // Every blob is stored under its own digest.
    for (path, bytes) in &a {
        if path.starts_with("blobs") {
            assert_eq!(
                path.file_name().unwrap().to_str().unwrap(),
                sha256_hex(bytes)
            );
        }
    }
}

/// Istio's CRD schema for a WasmPlugin (`tests/data/istio/wasmplugin-crd.yaml`), as a JSON
/// schema for the whole resource: `apiVersion`, `kind` and `metadata` as the API server
/// checks them, and, as `kubectl apply`'s strict field validation does, no field the
/// schema does not declare (except under `x-kubernetes-preserve-unknown-fields`).
fn wasm_plugin_schema() -> Value {
    let path = workspace_root().join("tests/data/istio/wasmplugin-crd.yaml");
    let crd: Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "WasmPlugin");
    let version = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .unwrap();
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    let properties = schema["properties"].as_object_mut().unwrap();
    properties.insert(
        "apiVersion".into(),
        json!({"const": "extensions.istio.io/v1alpha1"}),
    );
    properties.insert("kind".into(), json!({"const": "WasmPlugin"}));
    properties.insert(
        "metadata".into(),
        json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            },
        }),
    );
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    strict(&mut schema);
    schema
}

/// Forbids undeclared fields in every object schema that declares its properties.
fn strict(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let declares = map.get("type") == Some(&json!("object"))
                && map.get("properties").is_some_and(Value::is_object)
                && map.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
                && !map.contains_key("additionalProperties");
            if declares {
                map.insert("additionalProperties".into(), json!(false));
            }
            map.values_mut().for_each(strict);
        }
        Value::Array(items) => items.iter_mut().for_each(strict),
        _ => {}
    }
}

fn schema_errors(validator: &jsonschema::Validator, resource: &Value) -> Vec<String> {
    validator
        .iter_errors(resource)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_wasm_plugin_is_valid_against_istios_crd_schema() {
    let dir = TempDir::new("package-crd");
    let d = dir.path();
    let artifact = build_e2e_policy(d);
    std::fs::write(
        d.join("plugin.json"),
        r#"{"review_queue": {"cluster": "review", "path": "/reviews"}, "body_limit": 65536}"#,
    )
    .unwrap();
    let yaml = package(
        d,
        &artifact,
        "oci",
        &[
            "--namespace",
            "llm",
            "--selector",
            "app=llm-gateway",
            "--config",
            "plugin.json",
            "--cluster",
            "review=review-queue.writ.svc.cluster.local:8081",
            "--audit-sink",
            "writ-audit-sink.writ.svc.cluster.local:9902",
        ],
    );
    let validator = jsonschema::validator_for(&wasm_plugin_schema()).unwrap();
    let resource = yaml_to_json(&yaml);
    let errors = schema_errors(&validator, &resource);
    assert!(errors.is_empty(), "{errors:#?}\n{yaml}");

    let spec = &resource["spec"];
    let (manifest_sha, _, _) = layout_digests(&d.join("oci"));
    let artifact_sha = sha256_hex(&std::fs::read(&artifact).unwrap());
    assert_eq!(
        resource["metadata"],
        json!({"name": "writ-e2e-gateway", "namespace": "llm"})
    );
    assert_eq!(
        spec["url"],
        format!("oci://{IMAGE}"),
        "the default image reference"
    );
    assert_eq!(spec["sha256"], manifest_sha);
    assert_eq!(spec["phase"], "STATS");
    assert_eq!(spec["failStrategy"], "FAIL_CLOSE");
    assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["type"], "HTTP");
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"app": "llm-gateway"}})
    );
    // The deployment settings `writ envoy` would configure, with Istio's cluster names.
    let config = &spec["pluginConfig"];
    assert_eq!(
        *config,
        json!({
            "review_queue": {
                "cluster": "outbound|8081||review-queue.writ.svc.cluster.local",
                "path": "/reviews",
                "authority": "review-queue.writ.svc.cluster.local",
            },
            "body_limit": 65536,
            "audit_sink": {
                "cluster": "outbound|9902||writ-audit-sink.writ.svc.cluster.local",
                "path": "/records",
                "timeout_ms": 5000,
                "authority": "writ-audit-sink.writ.svc.cluster.local",
            },
            "artifact_sha256": artifact_sha,
        })
    );
    // …which the engine itself reads without a complaint (Istio hands it over as JSON).
    let (parsed, problems) =
        writ_plugin::config::PluginConfig::parse(config.to_string().as_bytes());
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(parsed.audit_sink.unwrap().path, "/records");
    assert_eq!(parsed.body_limit, 65536);

    // The validator refuses what Istio would: each tampered copy has an error at its field.
    for (from, to, field) in [
        (
            "failStrategy: FAIL_CLOSE",
            "failStrategy: FAIL_SOMETHING",
            "/spec/failStrategy",
        ),
        ("phase: STATS", "phase: BEFORE_ALL", "/spec/phase"),
        (
            &format!("sha256: {manifest_sha}"),
            &format!("sha256: sha256:{manifest_sha}"),
            "/spec/sha256",
        ),
        ("failStrategy:", "failstrategy:", "/spec"),
        ("kind: WasmPlugin", "kind: EnvoyFilter", "/kind"),
    ] {
        assert!(yaml.contains(from), "`{from}` not in\n{yaml}");
        let tampered = yaml_to_json(&yaml.replacen(from, to, 1));
        let errors = schema_errors(&validator, &tampered);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{field}: "))),
            "`{to}` accepted: {errors:?}"
        );
    }
    let mut no_url = resource.clone();
    no_url["spec"].as_object_mut().unwrap().remove("url");
    assert!(
        !schema_errors(&validator, &no_url).is_empty(),
        "a WasmPlugin without url"
    );

    // FAIL_RELOAD is offered, FAIL_OPEN never.
    let reload = package(d, &artifact, "oci", &["--failure-policy", "reload"]);
    assert_eq!(yaml_to_json(&reload)["spec"]["failStrategy"], "FAIL_RELOAD");
    assert!(
        yaml.ends_with('\n') && yaml.starts_with("# Istio WasmPlugin"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("The policy trusts"),
        "the e2e policy trusts no header"
    );
    let open = writ_in(
        d,
        &[
            "package",
            "out/e2e-gateway-0.1.0.wasm",
            "--oci",
            "oci",
            "--failure-policy",
            "open",
        ],
    );
    assert!(!open.status.success());
    assert!(
        output_text(&open).contains("fail-open"),
        "{}",
        output_text(&open)
    );
}

/// The offset of a byte in the middle of the code section (the engine's code, outside the
/// manifest and the policy blob).
fn code_byte(wasm: &[u8]) -> usize {
    Parser::new(0)
        .parse_all(wasm)
        .find_map(|p| match p.unwrap() {
            Payload::CodeSectionStart { range, .. } => {
                Some(range.start + (range.end - range.start) / 2)
            }
            _ => None,
        })
        .unwrap()
}

#[test]
fn a_flipped_artifact_byte_changes_every_digest() {
    let dir = TempDir::new("package-flip");
    let d = dir.path();
    let artifact = build_e2e_policy(d);
    let mut wasm = std::fs::read(&artifact).unwrap();
    let at = code_byte(&wasm);
    wasm[at] ^= 0x01;
    std::fs::write(d.join("flipped.wasm"), &wasm).unwrap();

    let original = yaml_to_json(&package(d, &artifact, "a", &[]));
    let flipped = yaml_to_json(&package(d, Path::new("flipped.wasm"), "b", &[]));
    let (a_manifest, a_layer, a_config) = layout_digests(&d.join("a"));
    let (b_manifest, b_layer, b_config) = layout_digests(&d.join("b"));
    assert_ne!(a_layer, b_layer);
    assert_ne!(
        a_config, b_config,
        "the config's writ manifest names the artifact hash"
    );
    assert_ne!(a_manifest, b_manifest);
    assert_eq!(original["spec"]["sha256"], a_manifest);
    assert_eq!(flipped["spec"]["sha256"], b_manifest);
    assert_eq!(
        flipped["spec"]["pluginConfig"]["artifact_sha256"],
        sha256_hex(&wasm)
    );
    assert_ne!(
        original["spec"]["pluginConfig"]["artifact_sha256"],
        flipped["spec"]["pluginConfig"]["artifact_sha256"]
    );
    let annotation = |oci: &str, manifest: &str| -> Value {
        let path = d.join(oci).join("blobs/sha256").join(manifest);
        let m: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        m["annotations"]["dev.writ.artifact.sha256"].clone()
    };
    assert_eq!(annotation("b", &b_manifest), sha256_hex(&wasm));
    assert_ne!(annotation("a", &a_manifest), annotation("b", &b_manifest));
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = TempDir::new("package-bad");
    let d = dir.path();
    let artifact = build_e2e_policy(d);
    let artifact = artifact.display().to_string();
    std::fs::write(d.join("not.wasm"), b"hello").unwrap();
    std::fs::create_dir_all(d.join("mine")).unwrap();
    std::fs::write(d.join("mine/notes.txt"), b"keep me").unwrap();
    let keygen = writ_in(d, &["keygen", "--out", "k"]);
    assert!(keygen.status.success(), "{}", output_text(&keygen));
    let sha = "ab".repeat(32);
    let pinned_elsewhere = format!("localhost:5000/writ/x@sha256:{sha}");
    for (args, expected) in [
        (vec!["not.wasm", "--oci", "o1"], "not a writ artifact"),
        (
            vec![&artifact, "--oci", "o2", "--trust", "k.pub"],
            "refusing artifact",
        ),
        (
            vec![&artifact, "--oci", "mine"],
            "neither empty nor an OCI image layout",
        ),
        (
            vec![&artifact, "--oci", "o3", "--image", "oci://r/x:1"],
            "without a scheme",
        ),
        (
            vec![&artifact, "--oci", "o4", "--image", &pinned_elsewhere],
            "names digest",
        ),
        (
            vec![&artifact, "--oci", "o5", "--cluster", "review"],
            "expected NAME=HOST:PORT",
        ),
        (
            vec![&artifact, "--oci", "o6", "--audit-sink", "sink"],
            "expected HOST:PORT",
        ),
    ] {
        let mut full = vec!["package"];
        full.extend(args.iter().copied());
        let out = writ_in(d, &full);
        let text = output_text(&out);
        assert!(!out.status.success(), "{full:?} succeeded:\n{text}");
        assert!(
            text.contains(expected),
            "{full:?}: expected `{expected}` in:\n{text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    for o in ["o1", "o2", "o3", "o4", "o5", "o6"] {
        assert!(!d.join(o).exists(), "a refused package wrote {o}");
    }
    assert_eq!(std::fs::read(d.join("mine/notes.txt")).unwrap(), b"keep me");
}
