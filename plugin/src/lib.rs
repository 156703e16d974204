//! writ-plugin: the enforcement engine compiled into every writ artifact.
//!
//! Architecture invariant: everything except `filter` is plain Rust with no host calls, so
//! it builds natively and is unit-tested and benchmarked without a wasm host; only
//! `filter` (wasm32 only) touches proxy-wasm.

/// The provider APIs (OpenAI chat, completions, embeddings, Responses; Anthropic Messages):
/// which one a request speaks and a shape-neutral view of it.
pub mod api;
pub mod approval;
pub mod audit;
pub mod audit_chain;
pub mod calendar;
pub mod config;
pub mod decide;
pub mod detect;
pub mod detection;
pub mod eval;
/// `writ explain`: traces each rule with the evaluator's own context (native only, so the
/// engine in the artifact does not carry it).
#[cfg(not(target_arch = "wasm32"))]
pub mod explain;
pub mod fallback;
pub mod fleet;
/// Fuzz targets and their smoke runs (tests and the `fuzzing` feature only; see `docs/fuzzing.md`).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod ir;
pub mod json_strings;
pub mod json_text;
pub mod kill_point;
pub mod kill_switch;
pub mod mcp;
pub mod metrics;
pub mod oversight;
pub mod rate_limit;
pub mod request;
pub mod review_verdict;
pub mod session;
pub mod spend;
pub mod store;
pub mod stream;
pub mod tokenise;
pub mod tools;
pub mod usage;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod filter;

/// Names of the two exported functions the linker rewrites to point at the embedded policy.
/// Shared with `writ_compiler::link` so the two sides cannot drift apart.
pub const POLICY_PTR_EXPORT: &str = "writ_policy_ptr";
/// See [`POLICY_PTR_EXPORT`].
pub const POLICY_LEN_EXPORT: &str = "writ_policy_len";

/// Where the linked policy blob starts in linear memory. The engine as built returns a
/// placeholder; `writ build` rewrites this function's body to return the address of the
/// data segment it appends. `inline(never)` and `black_box` keep the compiler from
/// inlining or constant-folding the placeholder into callers, which would bypass the
/// rewrite; the distinct constants keep the two functions from being merged.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn writ_policy_ptr() -> i32 {
    core::hint::black_box(0x5752_4954)
}

/// Length in bytes of the linked policy blob; the unlinked engine answers 0. See
/// [`writ_policy_ptr`].
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn writ_policy_len() -> i32 {
    core::hint::black_box(0)
}

/// The policy blob the linker embedded, or `None` in an engine that was never linked.
#[cfg(target_arch = "wasm32")]
pub fn embedded_policy() -> Option<&'static [u8]> {
    let ptr = writ_policy_ptr() as u32 as usize;
    let len = writ_policy_len() as u32 as usize;
    if len == 0 || ptr == 0 {
        return None;
    }
    // The linker appends the blob as an active data segment inside the module's initial
    // memory, above everything the allocator can hand out (wasm32 dlmalloc only allocates
    // from pages it obtains with `memory.grow`), and nothing ever writes to it.
    let memory_end = core::arch::wasm32::memory_size(0) * 65536;
    if ptr.checked_add(len)? > memory_end {
        return None;
    }
    // SAFETY: the range lies inside linear memory (checked above), is initialised by the
    // data segment at instantiation, and is never written, so a shared 'static borrow is
    // sound.
    Some(unsafe { core::slice::from_raw_parts(ptr as *const u8, len) })
}
