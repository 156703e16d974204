//! AFL++ entry point for the `detectors` fuzz target (see `docs/fuzzing.md`): the target itself is
//! a library function, so this file only hands it AFL's input.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        writ_plugin::fuzz::detectors(data);
    });
}
