//! Linker tests on a small hand-built engine; `tests/all/artifact.rs` covers the real one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use wasm_encoder::{
    ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType, TypeSection,
};
use writ_plugin::ir::*;

/// A module shaped like the real engine: one memory, an existing data segment, a
/// `__heap_base` global and the two placeholder getters (plus an unrelated function).
fn fake_engine() -> Vec<u8> {
    let mut m = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([], [wasm_encoder::ValType::I32]);
    m.section(&types);
    let mut funcs = FunctionSection::new();
    funcs.function(0).function(0).function(0);
    m.section(&funcs);
    let mut mem = MemorySection::new();
    mem.memory(MemoryType {
        minimum: 2,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    m.section(&mem);
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: wasm_encoder::ValType::I32,
            mutable: false,
            shared: false,
        },
        &ConstExpr::i32_const(70000),
    );
    m.section(&globals);
    let mut exports = ExportSection::new();
    exports
        .export("memory", ExportKind::Memory, 0)
        .export("other", ExportKind::Func, 0)
        .export(POLICY_PTR_EXPORT, ExportKind::Func, 1)
        .export(POLICY_LEN_EXPORT, ExportKind::Func, 2)
        .export("__heap_base", ExportKind::Global, 0);
    m.section(&exports);
    let mut code = CodeSection::new();
    for v in [7, 0x5752_4954, 0] {
        let mut f = Function::new([]);
        f.instructions().i32_const(v).end();
        code.function(&f);
    }
    m.section(&code);
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(1024), b"static".iter().copied());
    m.section(&data);
    m.section(&wasm_encoder::CustomSection {
        name: "producers".into(),
        data: b"x".as_slice().into(),
    });
    m.finish()
}

fn compiled(blob_padding: usize) -> Compiled {
    Compiled {
        policy: Policy {
            name: "support".into(),
            version: "1.3.0".into(),
            source_sha256: "ab".repeat(32),
            currency: "EUR".into(),
            enforcement: Enforcement::Enforce,
            workflows: vec![],
            prices: vec![],
            detectors: vec![],
            rules: vec![
                Rule {
                    clause: "AIP-3.1".into(),
                    title: "x".repeat(blob_padding),
                    phase: Phase::Request,
                    condition: Expr::Const(true),
                    action: Action::Deny {
                        status: 403,
                        message: "no".into(),
                    },
                    enforcement: Enforcement::Enforce,
                    alert_at_percent: None,
                    line: 3,
                },
                Rule {
                    clause: "AIP-3.1".into(),
                    title: "second".into(),
                    phase: Phase::Response,
                    condition: Expr::Const(false),
                    action: Action::Allow,
                    enforcement: Enforcement::Monitor,
                    alert_at_percent: None,
                    line: 9,
                },
            ],
            kill_switch: None,
        },
        rule_info: vec![],
        manual: vec![],
        owner: "sec@example.com".into(),
        implements: "ai-policy.md".into(),
        rollout: Vec::new(),
        warnings: crate::Diagnostics::default(),
    }
}

#[test]
fn links_a_valid_module_that_reads_back() {
    let engine = fake_engine();
    validate(&engine).unwrap();
    let c = compiled(10);
    let a = link(&engine, &c).unwrap();
    validate(&a.wasm).unwrap();
    assert_eq!(read_policy(&a.wasm).unwrap(), c.policy);

    let embedded = read_manifest(&a.wasm).unwrap();
    assert_eq!(embedded.artifact_sha256, None);
    assert_eq!(
        a.manifest.artifact_sha256.as_deref(),
        Some(sha256_hex(&a.wasm).as_str())
    );
    assert_eq!(embedded.engine_sha256, sha256_hex(&engine));
    let ids: Vec<_> = embedded.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["AIP-3.1", "AIP-3.1#2"]);
    assert_eq!(embedded.rules[1].phase, "response");
    assert_eq!(embedded.rules[1].enforcement, "monitor");
    assert_eq!(a.file_stem(), "support-1.3.0");
}

#[test]
fn grows_initial_memory_past_the_blob_and_keeps_other_code() {
    let engine = fake_engine();
    let a = link(&engine, &compiled(200_000)).unwrap();
    let layout = scan(&a.wasm).unwrap();
    let blob_len = compiled(200_000).policy.encode().len() as u64;
    let mem = layout.memory.unwrap();
    // Two original pages, then the blob at 128 KiB rounded up to whole pages.
    assert_eq!(mem.initial, 2 + blob_len.div_ceil(PAGE));
    // The unrelated function keeps its body; the getters now return constants.
    let mut bodies = vec![];
    for p in Parser::new(0).parse_all(&a.wasm) {
        if let Payload::CodeSectionEntry(body) = p.unwrap() {
            let mut ops = body.get_operators_reader().unwrap();
            bodies.push(ops.read().unwrap().clone());
        }
    }
    assert_eq!(
        format!("{bodies:?}"),
        format!(
            "{:?}",
            [
                Operator::I32Const { value: 7 },
                Operator::I32Const { value: 131072 },
                Operator::I32Const {
                    value: blob_len as i32
                },
            ]
        )
    );
}

#[test]
fn linking_is_deterministic_and_relinking_replaces_the_manifest() {
    let engine = fake_engine();
    let a = link(&engine, &compiled(5)).unwrap();
    let b = link(&engine, &compiled(5)).unwrap();
    assert_eq!(a.wasm, b.wasm);
    let mut sections = 0;
    for p in Parser::new(0).parse_all(&a.wasm) {
        if let Payload::CustomSection(c) = p.unwrap()
            && c.name() == MANIFEST_SECTION
        {
            sections += 1;
        }
    }
    assert_eq!(sections, 1);
}

#[test]
fn refuses_engines_without_the_getters_and_foreign_files() {
    let mut m = Module::new();
    let mut mem = MemorySection::new();
    mem.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    m.section(&mem);
    let bare = m.finish();
    assert_eq!(
        link(&bare, &compiled(1)),
        Err(LinkError::MissingExport(POLICY_PTR_EXPORT))
    );
    assert!(matches!(
        read_manifest(&bare),
        Err(LinkError::NotAnArtifact(_))
    ));
    assert!(matches!(
        read_policy(&fake_engine()),
        Err(LinkError::NotAnArtifact(_))
    ));
    assert!(matches!(
        read_manifest(b"not wasm"),
        Err(LinkError::NotAnArtifact(_))
    ));
}

/// Truncated and bit-flipped artifacts and engines: reading and linking return errors,
/// never panic (a smoke run of what a fuzzer would do).
#[test]
fn damaged_modules_never_panic() {
    let engine = fake_engine();
    let artifact = link(&engine, &compiled(40)).unwrap().wasm;
    for cut in 0..artifact.len() {
        let _ = read_manifest(&artifact[..cut]);
        let _ = read_policy(&artifact[..cut]);
    }
    for cut in 0..engine.len() {
        let _ = link(&engine[..cut], &compiled(1));
    }
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..2000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bad = artifact.clone();
        let at = (state % bad.len() as u64) as usize;
        bad[at] ^= 1 << (state >> 61);
        let _ = read_manifest(&bad);
        let _ = read_policy(&bad);
        let mut bad_engine = engine.clone();
        let at = (state % bad_engine.len() as u64) as usize;
        bad_engine[at] ^= 1 << (state >> 61);
        if let Ok(a) = link(&bad_engine, &compiled(1)) {
            // Whatever links must still validate (link validates before returning).
            validate(&a.wasm).unwrap();
        }
    }
}
