//! Linking: compiled policy + prebuilt engine wasm → one self-contained artifact.
//!
//! The engine exports two functions, `writ_policy_ptr` and `writ_policy_len`, whose
//! placeholder bodies the linker replaces with constants. The serialized policy is appended
//! as an active data segment just past the end of the engine's initial memory, and the
//! memory's initial size grows to cover it. That region is safe from the allocator: Rust's
//! wasm32 allocator (dlmalloc) only hands out pages it obtains with `memory.grow`, which
//! start at the memory's current end, and the stack and static data lie below
//! `__heap_base` (the linker checks `__heap_base` when the engine exports it).
//!
//! The output is a pure function of (engine bytes, compiled policy): no timestamps, no
//! paths, no hash-map ordering, so the same source gives the same sha256 anywhere.

mod manifest;
pub mod sign;

use std::ops::Range;

use sha2::{Digest, Sha256};
use wasm_encoder::{
    CodeSection, ConstExpr, DataSection, MemorySection, MemoryType, Module, RawSection,
};
use wasmparser::{
    DataKind, ExternalKind, Operator, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures,
};
use writ_plugin::ir;
use writ_plugin::{POLICY_LEN_EXPORT, POLICY_PTR_EXPORT};

pub use manifest::{MANIFEST_FORMAT, MANIFEST_SECTION, Manifest, ManifestRule};

use crate::Compiled;

const PAGE: u64 = 65536;

/// Why an artifact could not be produced or read. Linking errors are compiler or engine
/// bugs, never the policy author's; reading errors mean the file is not a writ artifact.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the engine module is invalid: {0}")]
    InvalidEngine(String),
    #[error("the engine does not export `{0}` as a function returning i32")]
    MissingExport(&'static str),
    #[error("the engine has no single 32-bit linear memory to embed the policy in")]
    NoMemory,
    #[error("the policy does not fit in the engine's memory limits")]
    TooLarge,
    #[error("the linked module does not validate: {0}")]
    Invalid(String),
    #[error("not a writ artifact: {0}")]
    NotAnArtifact(String),
}

/// A linked artifact: the module bytes and the manifest written beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The complete module, manifest section included.
    pub wasm: Vec<u8>,
    /// The manifest with `artifact_sha256` filled in (the form written to disk).
    pub manifest: Manifest,
}

impl Artifact {
    /// `<policy>-<version>`, the stem of both the `.wasm` and the `.manifest.json`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.manifest.policy, self.manifest.version)
    }
}

/// Hex sha256, the form every hash in a manifest takes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// Links `compiled` into `engine` and validates the result.
pub fn link(engine: &[u8], compiled: &Compiled) -> Result<Artifact, LinkError> {
    let mut manifest = Manifest::describe(compiled, sha256_hex(engine));
    let embedded = serde_json::to_vec(&manifest).map_err(|e| LinkError::Invalid(e.to_string()))?;
    let wasm = embed(engine, &compiled.policy.encode(), &embedded)?;
    validate(&wasm)?;
    manifest.artifact_sha256 = Some(sha256_hex(&wasm));
    Ok(Artifact { wasm, manifest })
}

/// Checks a module with wasmparser's validator (default features: what V8 and wasmtime
/// accept by default).
pub fn validate(wasm: &[u8]) -> Result<(), LinkError> {
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(wasm)
        .map(|_| ())
        .map_err(|e| LinkError::Invalid(e.to_string()))
}

/// The facts about the engine module the linker needs, gathered in one pass.
#[derive(Default)]
struct Layout {
    func_types: Vec<u32>,
    imported_funcs: u32,
    memory: Option<wasmparser::MemoryType>,
    memory_count: u32,
    ptr_func: Option<u32>,
    len_func: Option<u32>,
    heap_base_global: Option<u32>,
    imported_globals: u32,
    global_inits: Vec<Option<i64>>,
    /// Every function type: (params, results); only `[] -> [i32]` matters here.
    type_shapes: Vec<(Vec<ValType>, Vec<ValType>)>,
}

fn invalid(e: wasmparser::BinaryReaderError) -> LinkError {
    LinkError::InvalidEngine(e.to_string())
}

fn const_i64(expr: &wasmparser::ConstExpr<'_>) -> Option<i64> {
    let mut ops = expr.get_operators_reader();
    match ops.read().ok()? {
        Operator::I32Const { value } => Some(i64::from(value)),
        Operator::I64Const { value } => Some(value),
        _ => None,
    }
}

fn scan(engine: &[u8]) -> Result<Layout, LinkError> {
    let mut l = Layout::default();
    for payload in Parser::new(0).parse_all(engine) {
        match payload.map_err(invalid)? {
            Payload::TypeSection(reader) => {
                for group in reader {
                    for sub in group.map_err(invalid)?.into_types() {
                        let shape = match &sub.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => {
                                (f.params().to_vec(), f.results().to_vec())
                            }
                            _ => (vec![], vec![]),
                        };
                        l.type_shapes.push(shape);
                    }
                }
            }
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    match import.map_err(invalid)?.ty {
                        TypeRef::Func(_) => l.imported_funcs += 1,
                        TypeRef::Memory(m) => {
                            l.memory_count += 1;
                            l.memory = Some(m);
                        }
                        TypeRef::Global(_) => l.imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::FunctionSection(reader) => {
                for ty in reader {
                    l.func_types.push(ty.map_err(invalid)?);
                }
            }
            Payload::MemorySection(reader) => {
                for m in reader {
                    l.memory_count += 1;
                    l.memory = Some(m.map_err(invalid)?);
                }
            }
            Payload::GlobalSection(reader) => {
                for g in reader {
                    l.global_inits
                        .push(const_i64(&g.map_err(invalid)?.init_expr));
                }
            }
            Payload::ExportSection(reader) => {
                for e in reader {
                    let e = e.map_err(invalid)?;
                    match (e.kind, e.name) {
                        (ExternalKind::Func, POLICY_PTR_EXPORT) => l.ptr_func = Some(e.index),
                        (ExternalKind::Func, POLICY_LEN_EXPORT) => l.len_func = Some(e.index),
                        (ExternalKind::Global, "__heap_base") => l.heap_base_global = Some(e.index),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(l)
}

impl Layout {
    /// The defined-function index (position in the code section) of an exported
    /// `[] -> [i32]` function.
    fn defined_i32_getter(&self, func: Option<u32>, name: &'static str) -> Result<u32, LinkError> {
        let func = func.ok_or(LinkError::MissingExport(name))?;
        let defined = func
            .checked_sub(self.imported_funcs)
            .ok_or(LinkError::MissingExport(name))?;
        let ty = *self
            .func_types
            .get(defined as usize)
            .ok_or(LinkError::MissingExport(name))?;
        match self.type_shapes.get(ty as usize) {
            Some((params, results)) if params.is_empty() && results[..] == [ValType::I32] => {
                Ok(defined)
            }
            _ => Err(LinkError::MissingExport(name)),
        }
    }

    fn heap_base(&self) -> Option<u64> {
        let index = self.heap_base_global?.checked_sub(self.imported_globals)?;
        let value = (*self.global_inits.get(index as usize)?)?;
        u64::try_from(value).ok()
    }
}

/// A body for `fn() -> i32 { value }`: no locals, `i32.const value`, `end`.
fn const_body(value: i32) -> Vec<u8> {
    let mut f = wasm_encoder::Function::new([]);
    f.instructions().i32_const(value).end();
    let mut bytes = Vec::new();
    wasm_encoder::Encode::encode(&f, &mut bytes);
    // `Function::encode` writes a length prefix; `CodeSection::raw` adds its own.
    let mut reader = wasmparser::BinaryReader::new(&bytes, 0);
    match reader.read_var_u32() {
        Ok(_) => bytes[reader.original_position()..].to_vec(),
        Err(_) => bytes,
    }
}

/// Rewrites `engine` with `blob` embedded and `manifest_json` as a custom section.
fn embed(engine: &[u8], blob: &[u8], manifest_json: &[u8]) -> Result<Vec<u8>, LinkError> {
    let layout = scan(engine)?;
    let ptr_fn = layout.defined_i32_getter(layout.ptr_func, POLICY_PTR_EXPORT)?;
    let len_fn = layout.defined_i32_getter(layout.len_func, POLICY_LEN_EXPORT)?;
    if ptr_fn == len_fn {
        // Merged by the optimizer: rewriting one would rewrite both.
        return Err(LinkError::MissingExport(POLICY_LEN_EXPORT));
    }
    let memory = match layout.memory {
        Some(m) if layout.memory_count == 1 && !m.memory64 && !m.shared => m,
        _ => return Err(LinkError::NoMemory),
    };
    let offset = memory
        .initial
        .checked_mul(PAGE)
        .ok_or(LinkError::TooLarge)?;
    if let Some(heap_base) = layout.heap_base()
        && heap_base > offset
    {
        return Err(LinkError::InvalidEngine(format!(
            "__heap_base ({heap_base}) lies past the initial memory ({offset} bytes)"
        )));
    }
    let blob_len = u64::try_from(blob.len()).map_err(|_| LinkError::TooLarge)?;
    let new_initial = memory.initial + blob_len.div_ceil(PAGE).max(1);
    if memory.maximum.is_some_and(|max| new_initial > max) || new_initial > 65536 {
        return Err(LinkError::TooLarge);
    }
    let ptr = i32::try_from(offset).map_err(|_| LinkError::TooLarge)?;
    let len = i32::try_from(blob_len).map_err(|_| LinkError::TooLarge)?;

    let mut new_segment = DataSection::new();
    new_segment.active(0, &ConstExpr::i32_const(ptr), blob.iter().copied());

    let mut module = Module::new();
    let mut saw_code = false;
    let mut wrote_data = false;
    for payload in Parser::new(0).parse_all(engine) {
        match payload.map_err(invalid)? {
            Payload::Version { .. } | Payload::End(_) | Payload::CodeSectionEntry(_) => {}
            Payload::MemorySection(reader) => {
                let mut section = MemorySection::new();
                for m in reader {
                    let m = m.map_err(invalid)?;
                    section.memory(MemoryType {
                        minimum: new_initial,
                        maximum: m.maximum,
                        memory64: m.memory64,
                        shared: m.shared,
                        page_size_log2: m.page_size_log2,
                    });
                }
                module.section(&section);
            }
            Payload::DataCountSection { count, .. } => {
                module.section(&wasm_encoder::DataCountSection { count: count + 1 });
            }
            Payload::CodeSectionStart { range, .. } => {
                module.section(&rebuild_code(
                    engine,
                    range,
                    [(ptr_fn, ptr), (len_fn, len)],
                )?);
                saw_code = true;
            }
            Payload::DataSection(reader) => {
                let mut section = DataSection::new();
                for d in reader {
                    section.raw(&engine[d.map_err(invalid)?.range]);
                }
                section.active(0, &ConstExpr::i32_const(ptr), blob.iter().copied());
                module.section(&section);
                wrote_data = true;
            }
            // A manifest from an earlier link is replaced, never duplicated.
            Payload::CustomSection(c) if c.name() == MANIFEST_SECTION => {}
            other => {
                let Some((id, range)) = raw_section(&other) else {
                    return Err(LinkError::InvalidEngine(
                        "unsupported section in a core module".into(),
                    ));
                };
                // Only custom sections may follow code; a module without data gets its
                // data section right after code.
                if saw_code && !wrote_data {
                    module.section(&new_segment);
                    wrote_data = true;
                }
                module.section(&RawSection {
                    id,
                    data: &engine[range],
                });
            }
        }
    }
    if !wrote_data {
        module.section(&new_segment);
    }
    module.section(&wasm_encoder::CustomSection {
        name: MANIFEST_SECTION.into(),
        data: manifest_json.into(),
    });
    Ok(module.finish())
}

/// Section id and byte range of a section copied verbatim.
fn raw_section(payload: &Payload<'_>) -> Option<(u8, Range<usize>)> {
    let (id, range) = match payload {
        Payload::CustomSection(r) => (0, r.range()),
        Payload::TypeSection(r) => (1, r.range()),
        Payload::ImportSection(r) => (2, r.range()),
        Payload::FunctionSection(r) => (3, r.range()),
        Payload::TableSection(r) => (4, r.range()),
        Payload::GlobalSection(r) => (6, r.range()),
        Payload::ExportSection(r) => (7, r.range()),
        Payload::StartSection { range, .. } => (8, range.clone()),
        Payload::ElementSection(r) => (9, r.range()),
        Payload::TagSection(r) => (13, r.range()),
        _ => return None,
    };
    Some((id, range))
}

/// Copies the code section, replacing the bodies of `consts` (defined-function index,
/// value) with `i32.const value`.
fn rebuild_code(
    engine: &[u8],
    range: Range<usize>,
    consts: [(u32, i32); 2],
) -> Result<CodeSection, LinkError> {
    let reader = wasmparser::CodeSectionReader::new(wasmparser::BinaryReader::new(
        &engine[range.clone()],
        range.start,
    ))
    .map_err(invalid)?;
    let mut code = CodeSection::new();
    for (i, body) in reader.into_iter().enumerate() {
        let body = body.map_err(invalid)?;
        match consts.iter().find(|(f, _)| *f as usize == i) {
            Some((_, value)) => code.raw(&const_body(*value)),
            None => code.raw(&engine[body.range()]),
        };
    }
    Ok(code)
}

/// Reads the manifest embedded in an artifact (without `artifact_sha256`; compute it from
/// the file with [`sha256_hex`]).
pub fn read_manifest(wasm: &[u8]) -> Result<Manifest, LinkError> {
    for payload in Parser::new(0).parse_all(wasm) {
        let payload = payload.map_err(|e| LinkError::NotAnArtifact(e.to_string()))?;
        if let Payload::CustomSection(c) = payload
            && c.name() == MANIFEST_SECTION
        {
            let manifest: Manifest = serde_json::from_slice(c.data())
                .map_err(|e| LinkError::NotAnArtifact(format!("bad manifest: {e}")))?;
            if manifest.manifest_format != MANIFEST_FORMAT {
                return Err(LinkError::NotAnArtifact(format!(
                    "manifest format {} is not supported (this writ reads {MANIFEST_FORMAT})",
                    manifest.manifest_format
                )));
            }
            return Ok(manifest);
        }
    }
    Err(LinkError::NotAnArtifact(format!(
        "no `{MANIFEST_SECTION}` section"
    )))
}

/// Finds the policy blob the way the engine does (the constants the two getters return,
/// then the active data segment holding that range) and decodes it.
pub fn read_policy(wasm: &[u8]) -> Result<ir::Policy, LinkError> {
    let not = |why: &str| LinkError::NotAnArtifact(why.to_string());
    let layout = scan(wasm).map_err(|e| not(&e.to_string()))?;
    let ptr_fn = layout
        .defined_i32_getter(layout.ptr_func, POLICY_PTR_EXPORT)
        .map_err(|e| not(&e.to_string()))?;
    let len_fn = layout
        .defined_i32_getter(layout.len_func, POLICY_LEN_EXPORT)
        .map_err(|e| not(&e.to_string()))?;
    let (mut ptr, mut len) = (None, None);
    let mut blob = None;
    let mut segments = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| not(&e.to_string()))? {
            Payload::CodeSectionStart { range, .. } => {
                let reader = wasmparser::CodeSectionReader::new(wasmparser::BinaryReader::new(
                    &wasm[range.clone()],
                    range.start,
                ))
                .map_err(|e| not(&e.to_string()))?;
                for (i, body) in reader.into_iter().enumerate() {
                    let body = body.map_err(|e| not(&e.to_string()))?;
                    if i == ptr_fn as usize || i == len_fn as usize {
                        let mut ops = body
                            .get_operators_reader()
                            .map_err(|e| not(&e.to_string()))?;
                        let value = match (ops.read(), ops.read()) {
                            (Ok(Operator::I32Const { value }), Ok(Operator::End)) => Some(value),
                            _ => None,
                        };
                        if i == ptr_fn as usize {
                            ptr = value;
                        } else {
                            len = value;
                        }
                    }
                }
            }
            Payload::DataSection(reader) => {
                for d in reader {
                    let d = d.map_err(|e| not(&e.to_string()))?;
                    if let DataKind::Active { offset_expr, .. } = &d.kind
                        && let Some(at) = const_i64(offset_expr)
                    {
                        segments.push((at, d.data));
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(ptr), Some(len)) = (ptr, len) else {
        return Err(not("the policy getters were never linked"));
    };
    let (ptr, len) = (i64::from(ptr as u32), i64::from(len as u32));
    for (at, data) in segments {
        let end = at + data.len() as i64;
        if ptr >= at && ptr + len <= end {
            let from = usize::try_from(ptr - at).map_err(|_| not("bad offset"))?;
            blob = from
                .checked_add(len as usize)
                .and_then(|end| data.get(from..end));
        }
    }
    let blob = blob.ok_or_else(|| not("no data segment holds the policy"))?;
    ir::Policy::decode(blob).map_err(|e| not(&e.to_string()))
}

#[cfg(test)]
mod tests;
