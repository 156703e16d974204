//! The append-only audit log `writ serve` writes: one audit record per line (JSONL), each
//! chained to the one before it so that any edit, removal or reordering is detected.
//!
//! Line format: the record's JSON object with two fields appended,
//! `..., "prev_sha256": P, "sha256": S}`:
//! - `P` is the sha256 (hex) of the previous line's bytes (without its newline); the first
//!   line carries [`GENESIS`], 64 zeros.
//! - `S` is the sha256 of this line's own bytes up to `P`, i.e. the line with
//!   `,"sha256":"S"` removed. It pinpoints an edit to the line that was edited (the chain
//!   alone would only notice it one line later, and never for the last line).
//!
//! A forger who rewrites a line and every line after it can rebuild a valid chain, as with
//! any hash chain: anchor the head (`writ audit verify` prints it; `--head` checks it)
//! somewhere the forger cannot write, e.g. a ticket or a second log sink.

use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// `prev_sha256` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The bytes after a line's content: `,"sha256":"` + 64 hex + `"}`.
const SELF_SUFFIX_LEN: usize = 11 + 64 + 2;

/// The last field of a line's content: `"prev_sha256":"` + 64 hex + `"`.
const PREV_FIELD_LEN: usize = 15 + 64 + 1;

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in d.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Builds the chained line for `record` after a line whose hash is `prev`. A record that
/// is not a JSON object is wrapped as `{"record": ...}`; fields named `prev_sha256` or
/// `sha256` in the record are replaced. The engine builds the lines Envoy's access log
/// writes with the same function, so both hosts' files verify alike.
pub fn chain_line(record: &serde_json::Value, prev: &str) -> String {
    writ_plugin::audit_chain::chain_line(record, prev)
}

/// An open audit log, appending at its end. Not synchronised: `writ serve` keeps it in a
/// `Mutex` so lines from concurrent requests never interleave.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    prev: String,
    lines: u64,
}

/// Why an audit log could not be opened for appending.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the audit log: {0}")]
    Io(#[from] io::Error),
    #[error(
        "the audit log ends with an incomplete line (a torn write?); run `writ audit verify` and repair it before appending"
    )]
    TornTail,
}

impl AuditLog {
    /// Opens (or creates) `path` for appending, continuing the chain from its last line.
    /// Only the tail of the file is read, so opening a large log is immediate.
    pub fn open(path: &Path) -> Result<AuditLog, OpenError> {
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        let prev = match last_line(&mut file)? {
            LastLine::Empty => GENESIS.to_string(),
            LastLine::Line(bytes) => sha256_hex(&bytes),
            LastLine::Torn => return Err(OpenError::TornTail),
        };
        Ok(AuditLog {
            file,
            prev,
            lines: 0,
        })
    }

    /// Appends one record as one line (a single `write` call) and returns the line's hash,
    /// the new head of the chain.
    pub fn append(&mut self, record: &serde_json::Value) -> io::Result<String> {
        let line = chain_line(record, &self.prev);
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.file.write_all(&bytes)?;
        self.prev = sha256_hex(line.as_bytes());
        self.lines += 1;
        Ok(self.prev.clone())
    }

    /// Flushes to stable storage (`fsync`); call it at shutdown or on a timer.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The hash of the last line written (or found when opening).
    pub fn head(&self) -> &str {
        &self.prev
    }

    /// Lines appended since this log was opened.
    pub fn appended(&self) -> u64 {
        self.lines
    }
}

enum LastLine {
    Empty,
    Line(Vec<u8>),
    Torn,
}

/// Reads the file's last line backwards in blocks, without scanning the whole file.
fn last_line(file: &mut File) -> io::Result<LastLine> {
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(LastLine::Empty);
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        return Ok(LastLine::Torn);
    }
    let end = len - 1;
    let mut start = end;
    let mut tail: Vec<u8> = Vec::new();
    const BLOCK: u64 = 64 * 1024;
    while start > 0 {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0u8; usize::try_from(start - from).unwrap_or(0)];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(&mut block)?;
        if let Some(nl) = block.iter().rposition(|&b| b == b'\n') {
            let mut line = block.split_off(nl + 1);
            line.extend_from_slice(&tail);
            tail = line;
            start = 0;
        } else {
            block.extend_from_slice(&tail);
            tail = block;
            start = from;
        }
    }
    file.seek(SeekFrom::End(0))?;
    Ok(LastLine::Line(tail))
}

/// An intact log: how many records and the hash of the last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub lines: u64,
    pub head: String,
}

/// The first line where the chain breaks, 1-based, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct Broken {
    pub line: u64,
    pub reason: String,
}

/// Checks every line of a log, streaming. Stops at the first bad line: not in the
/// writer's format, a `sha256` that is not the hash of the line's content (the line was
/// edited), or a `prev_sha256` that is not the hash of the line before (a line was removed or moved
/// before it, or the previous line was rewritten).
pub fn verify(mut reader: impl BufRead) -> io::Result<Result<Verified, Broken>> {
    let mut prev = GENESIS.to_string();
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(Ok(Verified {
                lines: n,
                head: prev,
            }));
        }
        n += 1;
        let broken = |reason: &str| {
            Ok(Err(Broken {
                line: n,
                reason: reason.to_string(),
            }))
        };
        let Some(line) = buf.strip_suffix(b"\n") else {
            return broken("incomplete last line (no newline): a torn or truncated write");
        };
        let Some(content_len) = line.len().checked_sub(SELF_SUFFIX_LEN) else {
            return broken("not a chained audit record");
        };
        let (content, suffix) = line.split_at(content_len);
        let Some(own) = suffix
            .strip_prefix(b",\"sha256\":\"")
            .and_then(|s| s.strip_suffix(b"\"}"))
        else {
            return broken("not a chained audit record (no trailing `sha256`)");
        };
        let mut unsigned = Vec::with_capacity(content.len() + 1);
        unsigned.extend_from_slice(content);
        unsigned.push(b'}');
        if sha256_hex(&unsigned).as_bytes() != own {
            return broken("the record was edited: its `sha256` does not match its content");
        }
        // The writer always puts `"prev_sha256":"<64 hex>"` last before `sha256`, and the
        // self-hash above proves this line is as written, so it is read without parsing.
        let Some(p) = content
            .len()
            .checked_sub(PREV_FIELD_LEN)
            .and_then(|at| content.get(at..))
            .and_then(|f| f.strip_prefix(b"\"prev_sha256\":\""))
            .and_then(|f| f.strip_suffix(b"\""))
        else {
            return broken("no `prev_sha256`");
        };
        if p != prev.as_bytes() {
            if n == 1 {
                return broken(
                    "the first record does not start the chain: records before it were removed",
                );
            }
            return broken(&format!(
                "`prev_sha256` is not the hash of line {}: a record was removed or reordered here",
                n - 1
            ));
        }
        prev = sha256_hex(line);
    }
}

/// Checks one line on its own: in the writer's format and not edited. Returns its
/// `prev_sha256`.
fn check_line(line: &[u8]) -> Result<&[u8], &'static str> {
    let content_len = line
        .len()
        .checked_sub(SELF_SUFFIX_LEN)
        .ok_or("not a chained audit record")?;
    let (content, suffix) = line.split_at(content_len);
    let own = suffix
        .strip_prefix(b",\"sha256\":\"")
        .and_then(|s| s.strip_suffix(b"\"}"))
        .ok_or("not a chained audit record (no trailing `sha256`)")?;
    let mut unsigned = Vec::with_capacity(content.len() + 1);
    unsigned.extend_from_slice(content);
    unsigned.push(b'}');
    if sha256_hex(&unsigned).as_bytes() != own {
        return Err("the record was edited: its `sha256` does not match its content");
    }
    content
        .len()
        .checked_sub(PREV_FIELD_LEN)
        .and_then(|at| content.get(at..))
        .and_then(|f| f.strip_prefix(b"\"prev_sha256\":\""))
        .and_then(|f| f.strip_suffix(b"\""))
        .ok_or("no `prev_sha256`")
}

/// An intact log written by several writers at once (Envoy's workers): the links form
/// chains, each starting at [`GENESIS`] (one per Envoy start), but a record may sit a few
/// lines away from its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLinked {
    pub lines: u64,
    /// One chain per writer start.
    pub chains: u64,
    /// The hash of the last record of the last chain in the file.
    pub head: String,
}

/// As [`verify`], but follows the `prev_sha256` links instead of the file order, for a file
/// that concurrent writers append to. Every line must be unedited, no two records may claim
/// the same predecessor (a fork), and every record must be reachable from the start of a
/// chain (a removed record cuts off every record after it). Reads the whole file.
pub fn verify_linked(mut reader: impl BufRead) -> io::Result<Result<VerifiedLinked, Broken>> {
    let mut text = Vec::new();
    reader.read_to_end(&mut text)?;
    let broken = |line: usize, reason: &str| {
        Ok(Err(Broken {
            line: line as u64 + 1,
            reason: reason.to_string(),
        }))
    };
    if !text.is_empty() && !text.ends_with(b"\n") {
        let last = text.iter().filter(|&&b| b == b'\n').count();
        return broken(
            last,
            "incomplete last line (no newline): a torn or truncated write",
        );
    }
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let mut child: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    let mut roots = Vec::new();
    let mut hashes = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let prev = match check_line(line) {
            Ok(p) => p,
            Err(reason) => return broken(i, reason),
        };
        hashes.push(sha256_hex(line));
        if prev == GENESIS.as_bytes() {
            roots.push(i);
        } else if let Some(other) = child.insert(prev, i) {
            return broken(
                i,
                &format!(
                    "it and line {} follow the same record: the chain forked",
                    other + 1
                ),
            );
        }
    }
    let mut seen = vec![false; lines.len()];
    let mut head = GENESIS.to_string();
    for &root in &roots {
        let mut at = root;
        loop {
            seen[at] = true;
            head = hashes[at].clone();
            match child.get(head.as_bytes()) {
                Some(&next) if !seen[next] => at = next,
                _ => break,
            }
        }
    }
    if let Some(first) = seen.iter().position(|s| !s) {
        return broken(
            first,
            "no chain leads to this record: a record before it was removed or edited",
        );
    }
    Ok(Ok(VerifiedLinked {
        lines: lines.len() as u64,
        chains: roots.len() as u64,
        head,
    }))
}

/// Every record whose `request_id` is `id`, with its 1-based line number, streaming. Lines
/// are parsed only when the quoted id occurs in them, so a scan costs little more than
/// reading the file.
pub fn find(mut reader: impl BufRead, id: &str) -> io::Result<Vec<(u64, serde_json::Value)>> {
    let needle = serde_json::to_string(id).unwrap_or_default();
    let needle = needle.as_bytes();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(out);
        }
        n += 1;
        if !contains(&buf, needle) {
            continue;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf)
            && v.get("request_id").and_then(|r| r.as_str()) == Some(id)
        {
            out.push((n, v));
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let mut from = 0;
    while let Some(i) = haystack
        .get(from..)
        .and_then(|h| h.iter().position(|&b| b == first))
    {
        let at = from + i + 1;
        if haystack.get(at..at + rest.len()) == Some(rest) {
            return true;
        }
        from = at;
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut prev = GENESIS.to_string();
        for i in 0..n {
            let line = chain_line(
                &serde_json::json!({"event": "request", "request_id": format!("req-{i}"), "status": 200}),
                &prev,
            );
            prev = sha256_hex(line.as_bytes());
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn linked_verification_accepts_reordering_only() {
        let text = String::from_utf8(sample(6)).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        lines.swap(2, 3);
        let swapped = lines.join("\n") + "\n";
        assert!(verify(swapped.as_bytes()).unwrap().is_err());
        let v = verify_linked(swapped.as_bytes()).unwrap().unwrap();
        assert_eq!((v.lines, v.chains), (6, 1));
        let head = verify(&sample(6)[..]).unwrap().unwrap().head;
        assert_eq!(v.head, head);
        // Two starts of the writer: two chains, both accepted.
        let second = chain_line(
            &serde_json::json!({"event": "request", "request_id": "later"}),
            GENESIS,
        );
        let twice = [sample(2), format!("{second}\n").into_bytes()].concat();
        assert_eq!(verify_linked(&twice[..]).unwrap().unwrap().chains, 2);
        // A removed record cuts off the rest; a duplicated one forks the chain.
        let mut removed = lines.clone();
        removed.remove(1);
        assert!(
            verify_linked((removed.join("\n") + "\n").as_bytes())
                .unwrap()
                .is_err()
        );
        let mut forked = lines.clone();
        forked.push(lines[4]);
        assert!(
            verify_linked((forked.join("\n") + "\n").as_bytes())
                .unwrap()
                .is_err()
        );
    }

    fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split_inclusive(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn check(bytes: &[u8]) -> Result<Verified, Broken> {
        verify(bytes).unwrap()
    }

    #[test]
    fn an_intact_log_verifies() {
        let log = sample(5);
        let v = check(&log).unwrap();
        assert_eq!(v.lines, 5);
        let last = lines(&log).pop().unwrap();
        assert_eq!(v.head, sha256_hex(last.strip_suffix(b"\n").unwrap()));
        assert_eq!(check(b"").unwrap().head, GENESIS);
    }

    #[test]
    fn one_changed_byte_is_found_on_its_line() {
        let log = sample(5);
        let l = lines(&log);
        let offset: usize = l[..2].iter().map(Vec::len).sum();
        // Change a digit of line 3's status, keeping it valid JSON.
        let line3 = String::from_utf8(l[2].clone()).unwrap();
        let at = offset + line3.find("200").unwrap();
        let mut edited = log.clone();
        edited[at] = b'4';
        assert_eq!(check(&edited).unwrap_err().line, 3);
        // The last line too, where a chain alone would see nothing.
        let mut tail = log.clone();
        let len = tail.len();
        let last = String::from_utf8(l[4].clone()).unwrap();
        tail[len - l[4].len() + last.find("req-4").unwrap() + 4] = b'9';
        assert_eq!(check(&tail).unwrap_err().line, 5);
    }

    #[test]
    fn a_removed_line_is_found_where_the_chain_breaks() {
        let l = lines(&sample(5));
        let removed: Vec<u8> = [&l[0][..], &l[1], &l[3], &l[4]].concat();
        let err = check(&removed).unwrap_err();
        assert_eq!(err.line, 3, "{err}");
        let first_removed: Vec<u8> = l[1..].concat();
        assert_eq!(check(&first_removed).unwrap_err().line, 1);
        let truncated = &sample(5)[..sample(5).len() - 1];
        assert_eq!(check(truncated).unwrap_err().line, 5);
    }

    #[test]
    fn swapped_lines_are_found() {
        let l = lines(&sample(5));
        let swapped: Vec<u8> = [&l[0][..], &l[2], &l[1], &l[3], &l[4]].concat();
        assert_eq!(check(&swapped).unwrap_err().line, 2);
    }

    #[test]
    fn the_writer_continues_the_chain_across_reopens() {
        let dir = std::env::temp_dir().join(format!("writ-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        let _ = std::fs::remove_file(&path);
        let mut log = AuditLog::open(&path).unwrap();
        for i in 0..3 {
            log.append(&serde_json::json!({"request_id": format!("a{i}")}))
                .unwrap();
        }
        let head = log.head().to_string();
        drop(log);
        let mut log = AuditLog::open(&path).unwrap();
        assert_eq!(log.head(), head);
        log.append(&serde_json::json!({"request_id": "b", "sha256": "forged"}))
            .unwrap();
        drop(log);
        let file = std::io::BufReader::new(File::open(&path).unwrap());
        let v = verify(file).unwrap().unwrap();
        assert_eq!(v.lines, 4);
        let found = find(std::io::BufReader::new(File::open(&path).unwrap()), "a1").unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, 2);
        assert!(
            find(std::io::BufReader::new(File::open(&path).unwrap()), "a")
                .unwrap()
                .is_empty()
        );
        // A torn tail refuses appends instead of extending a broken chain.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"x\"")
            .unwrap();
        assert!(matches!(AuditLog::open(&path), Err(OpenError::TornTail)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Timing on a 100k-record log: `cargo test -p writ --lib audit_log -- --ignored
    /// --nocapture` (numbers in the module's report, debug build).
    #[test]
    #[ignore]
    fn a_large_log_is_scanned_quickly() {
        let mut log = Vec::new();
        let mut prev = GENESIS.to_string();
        for i in 0..100_000 {
            let line = chain_line(
                &serde_json::json!({"event": "request", "time": "2026-11-24T03:28:20.000000Z",
                    "request_id": format!("req-{i}"), "workflow": "support", "policy": "p",
                    "policy_version": "1.0.0", "source_sha256": GENESIS,
                    "rules": [{"clause": "AIP-2.1", "title": "No customer personal data reaches a model provider",
                        "action": "tokenise", "mode": "enforce", "effect": "enforced"}],
                    "pii": {"email": 1}, "model_requested": "gpt-4o-mini", "tokens": {"prompt": 120, "completion": 80},
                    "cost_micros": 66, "currency": "EUR", "cost_estimated": false, "status": 200, "outcome": "allowed"}),
                &prev,
            );
            prev = sha256_hex(line.as_bytes());
            log.extend_from_slice(line.as_bytes());
            log.push(b'\n');
        }
        let t = std::time::Instant::now();
        let v = verify(&log[..]).unwrap().unwrap();
        let verify_time = t.elapsed();
        let t = std::time::Instant::now();
        let found = find(&log[..], "req-99999").unwrap();
        let find_time = t.elapsed();
        assert_eq!(v.lines, 100_000);
        assert_eq!(found.len(), 1);
        println!(
            "{} MB: verify {verify_time:?}, show {find_time:?}",
            log.len() / 1_000_000
        );
    }

    #[test]
    fn substring_search_is_exact() {
        assert!(contains(b"abc\"req-1\"def", b"\"req-1\""));
        assert!(!contains(b"abc\"req-10\"def", b"\"req-1\""));
        assert!(contains(b"aab", b"ab"));
        assert!(!contains(b"a", b"ab"));
    }
}
