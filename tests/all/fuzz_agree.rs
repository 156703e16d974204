//! Native and wasm agree: the request fuzz target's corpus (its seeds, the committed
//! regression inputs and deterministic mutants of them) runs through the linked artifact
//! in the wasmtime host and through the engine's native request path
//! (`writ_plugin::fuzz::native_exchange`), and both must answer the same: the same local
//! status and body, or the same request upstream (placeholders compared by shape, as
//! each side draws its own nonce) and the same restored reply to the client.

use writ_compiler::fuzz::{FUZZ_BODY_LIMIT, FUZZ_POLICY, fuzz_engine, request_inputs};
use writ_compiler::link;
use writ_plugin::fuzz::{NativeOutcome, echo_reply, native_exchange, split_request};
use writ_runtime::{Host, HostConfig, RequestSpec, UpstreamReply};

/// The engine exactly as `build.rs` embedded it in the `writ` binary.
const ENGINE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/engine.wasm"));

/// Mutants run on top of the seeds: enough to reach every branch of the request path the
/// seeds do not, few enough for CI.
const MUTANTS: usize = 800;

/// `text` with the four code characters of every placeholder of the fuzz policy's
/// tokenised types replaced by `####`.
fn shape(text: &str) -> String {
    let mut out = text.to_string();
    for tag in ["EMAIL_", "PHONE_", "IBAN_"] {
        let mut from = 0;
        while let Some(at) = out.get(from..).and_then(|s| s.find(tag)) {
            let code = from + at + tag.len();
            let is_code = out.get(code..code + 4).is_some_and(|c| {
                c.bytes().all(|b| {
                    b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b))
                })
            });
            if is_code {
                out.replace_range(code..code + 4, "####");
            }
            from = code;
        }
    }
    out
}

#[test]
fn native_and_wasm_agree_on_the_request_corpus() {
    let compiled = writ_compiler::compile("fuzz.policy", FUZZ_POLICY)
        .unwrap_or_else(|e| panic!("{}", e.render("fuzz.policy", FUZZ_POLICY)));
    let artifact = link::link(ENGINE, &compiled).unwrap();
    let mut config = HostConfig::new(artifact.wasm);
    config.plugin_config = format!("{{\"body_limit\": {FUZZ_BODY_LIMIT}}}").into_bytes();
    let host = Host::new(config).unwrap();
    let mut vm = host.vm().unwrap();
    let engine = fuzz_engine();
    let inputs = request_inputs(MUTANTS);
    let (mut local, mut forwarded) = (0usize, 0usize);
    for (i, input) in inputs.iter().enumerate() {
        let (headers, body) = split_request(input);
        let native = native_exchange(
            engine,
            &headers,
            &body,
            FUZZ_BODY_LIMIT,
            [3; 16],
            &echo_reply,
        );
        let method = headers[0].1.clone();
        let path = headers[1].1.clone();
        let rest: Vec<(&str, &str)> = headers[2..]
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let spec = RequestSpec::new(&method, &path, &rest, &body);
        let ex = vm.http_request(&spec, |up| {
            UpstreamReply::new(
                200,
                &[("content-type", "application/json")],
                &echo_reply(&up.body),
            )
        });
        let what = || format!("input {i}: {:?}", String::from_utf8_lossy(input));
        assert!(
            ex.error.is_none(),
            "{}: the host failed: {:?}",
            what(),
            ex.error
        );
        match native {
            NativeOutcome::Local { status, body } => {
                local += 1;
                assert!(
                    ex.upstream_request.is_none(),
                    "{}: wasm forwarded, native answered {status}",
                    what()
                );
                assert_eq!(ex.client_response.status, status, "{}", what());
                assert_eq!(
                    String::from_utf8_lossy(&ex.client_response.body_bytes()),
                    String::from_utf8_lossy(&body),
                    "{}",
                    what()
                );
            }
            NativeOutcome::Forwarded {
                upstream_headers,
                upstream_body,
                status,
                client_body,
            } => {
                forwarded += 1;
                let up = ex.upstream_request.as_ref().unwrap_or_else(|| {
                    panic!(
                        "{}: native forwarded, wasm answered {} {}",
                        what(),
                        ex.client_response.status,
                        String::from_utf8_lossy(&ex.client_response.body_bytes())
                    )
                });
                assert_eq!(
                    shape(&String::from_utf8_lossy(&up.body)),
                    shape(&String::from_utf8_lossy(&upstream_body)),
                    "{}: the upstream bodies differ",
                    what()
                );
                for name in [":path", "x-note"] {
                    let native_value = upstream_headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| shape(v));
                    assert_eq!(
                        up.header(name).map(shape),
                        native_value,
                        "{}: upstream header {name} differs",
                        what()
                    );
                }
                assert_eq!(ex.client_response.status, status, "{}", what());
                assert_eq!(
                    String::from_utf8_lossy(&ex.client_response.body_bytes()),
                    String::from_utf8_lossy(&client_body),
                    "{}: the client replies differ",
                    what()
                );
            }
        }
    }
    // The corpus must reach both ends of the request path, or the test proves little.
    assert!(
        local >= 20 && forwarded >= 20,
        "local {local}, forwarded {forwarded}"
    );
}
