//! W3C Trace Context (`traceparent`): parsing what a client sent, and the ids of the spans
//! the gateway starts, so a provider's spans join the client's trace.

/// A parsed `traceparent` header: `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The span that sent the request (the client's span, or the gateway's upstream span).
    pub parent_id: [u8; 8],
    pub flags: u8,
}

/// The `sampled` bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// Parses a header value; `None` for anything the W3C spec says to ignore (a bad
    /// length, upper-case or non-hex digits, version `ff`, an all-zero id). A later version
    /// is read by its version-00 prefix, as the spec asks.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim_matches([' ', '\t']);
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = bytes.get(0..2)?;
        if version == b"ff" || !is_lower_hex(version) {
            return None;
        }
        if version == b"00" && bytes.len() != 55 {
            return None;
        }
        if bytes.get(2) != Some(&b'-')
            || bytes.get(35) != Some(&b'-')
            || bytes.get(52) != Some(&b'-')
            || (bytes.len() > 55 && bytes.get(55) != Some(&b'-'))
        {
            return None;
        }
        let trace_id: [u8; 16] = decode_hex(bytes.get(3..35)?)?;
        let parent_id: [u8; 8] = decode_hex(bytes.get(36..52)?)?;
        let [flags]: [u8; 1] = decode_hex(bytes.get(53..55)?)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The header value, version 00.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            self.flags
        )
    }

    /// Whether the sender records this trace (parent-based sampling follows it).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn decode_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != N * 2 || !is_lower_hex(digits) {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        let text = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex, as trace ids are written.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A random non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    while id == [0; 16] {
        fill_random(&mut id);
    }
    id
}

/// A random non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    let mut id = [0u8; 8];
    while id == [0; 8] {
        fill_random(&mut id);
    }
    id
}

/// The OS's random bytes; should it fail, a hash of the time and a counter (ids must be
/// unique, not secret).
fn fill_random(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    for chunk in buf.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.write_u128(nanos);
        let bytes = h.finish().to_le_bytes();
        for (dst, src) in chunk.iter_mut().zip(bytes) {
            *dst = src;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_and_writes_version_00() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(h).unwrap();
        assert_eq!(hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&tp.parent_id), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.header(), h);
    }

    #[test]
    fn refuses_what_the_spec_says_to_ignore() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_a_later_version_by_its_prefix() {
        let h = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes-later";
        let tp = TraceParent::parse(h).unwrap();
        assert!(!tp.sampled());
    }

    #[test]
    fn new_ids_are_non_zero_and_differ() {
        assert_ne!(new_trace_id(), new_trace_id());
        assert_ne!(new_span_id(), [0; 8]);
    }
}
