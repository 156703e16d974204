//! AFL++ entry point for the `policy_lower` fuzz target (see `docs/fuzzing.md`): the target itself is
//! a library function, so this file only hands it AFL's input.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        writ_compiler::fuzz::policy_lower(data);
    });
}
