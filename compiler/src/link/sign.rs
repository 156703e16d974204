//! Artifact signatures: an ed25519 signature in a `writ.signature` custom section, the last
//! section of the module, so a signed artifact stays one file that every wasm host loads
//! unchanged (custom sections are ignored by V8 and wasmtime).
//!
//! What is signed: the sha256 of every byte of the module before the signature section
//! (header, all sections, the `writ.manifest` section and the policy blob included),
//! prefixed with a domain string so the signature means nothing outside writ. ed25519 is
//! deterministic, so signing the same artifact with the same key gives the same bytes and
//! `writ build --sign` stays byte-reproducible. `docs/security.md` ("Artifacts") documents
//! the format and the key files.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use super::sha256_hex;

/// Name of the custom section that carries the signature; always the module's last section.
pub const SIGNATURE_SECTION: &str = "writ.signature";

/// Version of the signature section's JSON shape; verifiers refuse versions they do not know.
pub const SIGNATURE_FORMAT: u32 = 1;

/// Prefixed to the digest before signing, so a writ signature cannot be replayed as a
/// signature over anything else made with the same key.
const DOMAIN: &[u8] = b"writ artifact signature v1\0";

/// First line of a secret key file.
pub const SECRET_KEY_HEADER: &str = "writ ed25519 secret key v1";
/// First line of a public key file.
pub const PUBLIC_KEY_HEADER: &str = "writ ed25519 public key v1";

/// Why a key, a signature or an artifact was refused. Every message names what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("not a writ key file: {0}")]
    BadKey(String),
    #[error("the module's sections cannot be read ({0}): it was truncated or changed")]
    Malformed(String),
    #[error(
        "unsigned: the artifact has no `{SIGNATURE_SECTION}` section (build it with `writ build --sign KEY`)"
    )]
    Unsigned,
    #[error(
        "the `{SIGNATURE_SECTION}` section is not the last section: bytes were added after signing"
    )]
    NotLast,
    #[error("the artifact has more than one `{SIGNATURE_SECTION}` section")]
    Duplicate,
    #[error("the `{SIGNATURE_SECTION}` section is invalid: {0}")]
    BadSection(String),
    #[error(
        "signature does not match: the artifact was changed after signing (signed sha256 {signed}, content sha256 {actual})"
    )]
    Changed { signed: String, actual: String },
    #[error("wrong key: signed by key {key_id}, which is not trusted (trusted: {trusted})")]
    WrongKey { key_id: String, trusted: String },
    #[error("signature does not match key {key_id}: the artifact or its signature was changed")]
    Mismatch { key_id: String },
}

/// An ed25519 signing key, read from a `writ keygen` secret key file.
pub struct SecretKey(ed25519_dalek::SigningKey);

/// An ed25519 public key, read from a `writ keygen` public key file; what `--trust` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl SecretKey {
    /// The key for a 32-byte seed (from the OS's random source in `writ keygen`).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Parses a secret key file: the header line, then the 32-byte seed in hex.
    pub fn parse(text: &str) -> Result<SecretKey, SignError> {
        if text.lines().next().map(str::trim) == Some(PUBLIC_KEY_HEADER) {
            return Err(SignError::BadKey(
                "this is a public key; signing needs the secret `.key` file".into(),
            ));
        }
        Ok(SecretKey::from_seed(parse_key_file(
            text,
            SECRET_KEY_HEADER,
        )?))
    }

    /// The key file text, header line first.
    pub fn to_file(&self) -> String {
        format!("{SECRET_KEY_HEADER}\n{}\n", hex(self.0.as_bytes()))
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().key_id())
    }
}

impl PublicKey {
    /// Parses a public key file: the header line, then the 32-byte key in hex.
    pub fn parse(text: &str) -> Result<PublicKey, SignError> {
        if text.lines().next().map(str::trim) == Some(SECRET_KEY_HEADER) {
            return Err(SignError::BadKey(
                "this is a secret key; `--trust` takes the public `.pub` file".into(),
            ));
        }
        let bytes = parse_key_file(text, PUBLIC_KEY_HEADER)?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| SignError::BadKey("the key is not a valid ed25519 point".into()))
    }

    /// The key file text, header line first.
    pub fn to_file(&self) -> String {
        format!("{PUBLIC_KEY_HEADER}\n{}\n", hex(self.0.as_bytes()))
    }

    /// A short name for the key in messages and signatures: the first 16 hex digits of the
    /// sha256 of its 32 bytes.
    pub fn key_id(&self) -> String {
        sha256_hex(self.0.as_bytes())[..16].to_string()
    }
}

fn parse_key_file(text: &str, header: &str) -> Result<[u8; 32], SignError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(header) {
        return Err(SignError::BadKey(format!(
            "the first line must be `{header}`"
        )));
    }
    let body = lines
        .next()
        .ok_or_else(|| SignError::BadKey("the key line is missing".into()))?;
    if lines.next().is_some() {
        return Err(SignError::BadKey("unexpected lines after the key".into()));
    }
    let bytes = unhex(body).ok_or_else(|| SignError::BadKey("the key is not hex".into()))?;
    bytes
        .try_into()
        .map_err(|_| SignError::BadKey("the key must be 32 bytes (64 hex digits)".into()))
}

/// The content of the `writ.signature` section (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureRecord {
    /// [`SIGNATURE_FORMAT`].
    pub format: u32,
    /// Always `ed25519`.
    pub algorithm: String,
    /// [`PublicKey::key_id`] of the signing key; a hint for messages, not trusted.
    pub key_id: String,
    /// sha256 (hex) of the module bytes before this section: what was signed.
    pub signed_sha256: String,
    /// The 64-byte ed25519 signature over `DOMAIN || sha256`, in hex.
    pub signature: String,
}

/// What a successful verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The trusted key that signed the artifact.
    pub key_id: String,
    /// sha256 (hex) of the signed content (the module before the signature section).
    pub signed_sha256: String,
}

/// Where the module's sections lie: enough to split off the signature section.
struct Sections {
    /// Byte offset of the signature section (its id byte), if there is one.
    signature_at: Option<usize>,
    /// The signature section's payload after its name.
    signature: Option<(usize, usize)>,
    /// Whether any section follows the signature section.
    after_signature: bool,
    duplicate: bool,
}

/// Walks the module's sections by their length prefixes only, so any module, valid or
/// changed, can be split without trusting its content.
fn sections(wasm: &[u8]) -> Result<Sections, SignError> {
    let bad = |what: &str| SignError::Malformed(what.to_string());
    if wasm.len() < 8 {
        return Err(bad("shorter than a wasm header"));
    }
    let mut s = Sections {
        signature_at: None,
        signature: None,
        after_signature: false,
        duplicate: false,
    };
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        let (size, size_len) =
            leb128_u32(&wasm[at + 1..]).ok_or_else(|| bad("bad section size"))?;
        let body_start = at + 1 + size_len;
        let body_end = body_start
            .checked_add(size as usize)
            .filter(|&e| e <= wasm.len())
            .ok_or_else(|| bad("a section runs past the end of the file"))?;
        if s.signature_at.is_some() {
            s.after_signature = true;
        }
        if id == 0 {
            let body = &wasm[body_start..body_end];
            let (name_len, n) = leb128_u32(body).ok_or_else(|| bad("bad custom section name"))?;
            let name_end = n
                .checked_add(name_len as usize)
                .filter(|&e| e <= body.len())
                .ok_or_else(|| bad("bad custom section name"))?;
            if &body[n..name_end] == SIGNATURE_SECTION.as_bytes() {
                if s.signature_at.is_some() {
                    s.duplicate = true;
                }
                s.signature_at = Some(at);
                s.signature = Some((body_start + name_end, body_end));
                s.after_signature = false;
            }
        }
        at = body_end;
    }
    Ok(s)
}

/// Signs `wasm`: removes a signature section already there (re-signing replaces it), then
/// appends a new one. Deterministic: the same module and key give the same bytes.
pub fn sign(wasm: &[u8], key: &SecretKey) -> Result<Vec<u8>, SignError> {
    let s = sections(wasm)?;
    if s.duplicate || s.after_signature {
        return Err(SignError::Malformed(
            "it already carries a signature section that is not the last section".into(),
        ));
    }
    let content = &wasm[..s.signature_at.unwrap_or(wasm.len())];
    let digest = sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(content));
    let signature = key.0.sign(&message(&digest));
    let record = SignatureRecord {
        format: SIGNATURE_FORMAT,
        algorithm: "ed25519".into(),
        key_id: key.public().key_id(),
        signed_sha256: hex(&digest),
        signature: hex(&signature.to_bytes()),
    };
    let json = serde_json::to_vec(&record).map_err(|e| SignError::BadSection(e.to_string()))?;
    let mut out = content.to_vec();
    let mut section = Vec::new();
    push_leb128(&mut section, SIGNATURE_SECTION.len());
    section.extend_from_slice(SIGNATURE_SECTION.as_bytes());
    section.extend_from_slice(&json);
    out.push(0);
    push_leb128(&mut out, section.len());
    out.extend_from_slice(&section);
    Ok(out)
}

/// The signature record of `wasm`, if it has one, without checking it (for `writ inspect`).
pub fn read_signature(wasm: &[u8]) -> Result<Option<SignatureRecord>, SignError> {
    let s = sections(wasm)?;
    match s.signature {
        None => Ok(None),
        Some((from, to)) => parse_record(&wasm[from..to]).map(Some),
    }
}

fn parse_record(json: &[u8]) -> Result<SignatureRecord, SignError> {
    let record: SignatureRecord =
        serde_json::from_slice(json).map_err(|e| SignError::BadSection(e.to_string()))?;
    if record.format != SIGNATURE_FORMAT {
        return Err(SignError::BadSection(format!(
            "format {} is not supported (this writ reads {SIGNATURE_FORMAT})",
            record.format
        )));
    }
    // Only the exact bytes `sign` writes are accepted, so no change to the section (case,
    // spacing, escapes) goes unnoticed even where it would decode to the same record.
    if serde_json::to_vec(&record).ok().as_deref() != Some(json) {
        return Err(SignError::BadSection("it is not in canonical form".into()));
    }
    if record.algorithm != "ed25519" {
        return Err(SignError::BadSection(format!(
            "algorithm `{}` is not supported (only ed25519)",
            record.algorithm
        )));
    }
    Ok(record)
}

/// Checks that `wasm` carries a valid signature by one of `trusted` over every byte before
/// its signature section, and that nothing follows that section. Any changed byte, anywhere,
/// is refused: in the signed content the digest changes; in the signature section the record
/// no longer parses or no longer verifies; in a section header the walk fails or finds no
/// signature.
pub fn verify(wasm: &[u8], trusted: &[PublicKey]) -> Result<Verified, SignError> {
    let s = sections(wasm)?;
    if s.duplicate {
        return Err(SignError::Duplicate);
    }
    let (Some(at), Some((from, to))) = (s.signature_at, s.signature) else {
        return Err(SignError::Unsigned);
    };
    if s.after_signature {
        return Err(SignError::NotLast);
    }
    let record = parse_record(&wasm[from..to])?;
    let digest =
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(&wasm[..at]));
    let actual = hex(&digest);
    if actual != record.signed_sha256 {
        return Err(SignError::Changed {
            signed: record.signed_sha256,
            actual,
        });
    }
    let signature = unhex(&record.signature)
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| ed25519_dalek::Signature::from_bytes(&b))
        .ok_or_else(|| SignError::BadSection("the signature is not 64 bytes of hex".into()))?;
    let message = message(&digest);
    // The record names its key; that key must be trusted and must verify. (The id is covered
    // too: a changed id names an untrusted key or the wrong one.)
    let trusted_ids: Vec<String> = trusted.iter().map(PublicKey::key_id).collect();
    let Some(key) = trusted.iter().find(|k| k.key_id() == record.key_id) else {
        return Err(SignError::WrongKey {
            key_id: record.key_id,
            trusted: trusted_ids.join(", "),
        });
    };
    key.0
        .verify_strict(&message, &signature)
        .map_err(|_| SignError::Mismatch {
            key_id: record.key_id.clone(),
        })?;
    Ok(Verified {
        key_id: record.key_id,
        signed_sha256: actual,
    })
}

fn message(digest: &[u8]) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(digest);
    m
}

fn leb128_u32(bytes: &[u8]) -> Option<(u32, usize)> {
    let mut value: u32 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn push_leb128(out: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            // Lowercase only: the one spelling `sign` writes.
            let digit = |c: u8| match c {
                b'0'..=b'9' => Some(u32::from(c - b'0')),
                b'a'..=b'f' => Some(u32::from(c - b'a' + 10)),
                _ => None,
            };
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn module() -> Vec<u8> {
        // header, a type section, a custom section standing in for the manifest
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]);
        m.extend_from_slice(&[0, 6, 4, b'n', b'a', b'm', b'e', b'!']);
        m
    }

    #[test]
    fn sign_then_verify_and_every_flipped_byte_is_refused() {
        let key = SecretKey::from_seed([7; 32]);
        let signed = sign(&module(), &key).unwrap();
        assert_eq!(sign(&module(), &key).unwrap(), signed, "deterministic");
        assert_eq!(sign(&signed, &key).unwrap(), signed, "re-signing replaces");
        let trusted = [key.public()];
        assert!(verify(&signed, &trusted).is_ok());
        for i in 0..signed.len() {
            for bit in 0..8 {
                let mut bad = signed.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    verify(&bad, &trusted).is_err(),
                    "byte {i} bit {bit} flipped was accepted"
                );
            }
        }
    }

    #[test]
    fn unsigned_wrong_key_and_trailing_bytes_are_named() {
        let key = SecretKey::from_seed([7; 32]);
        let other = SecretKey::from_seed([8; 32]);
        let signed = sign(&module(), &key).unwrap();
        assert_eq!(verify(&module(), &[key.public()]), Err(SignError::Unsigned));
        assert!(matches!(
            verify(&signed, &[other.public()]),
            Err(SignError::WrongKey { .. })
        ));
        assert!(verify(&signed, &[other.public(), key.public()]).is_ok());
        let mut trailing = signed.clone();
        trailing.extend_from_slice(&[0, 2, 1, b'x']);
        assert_eq!(verify(&trailing, &[key.public()]), Err(SignError::NotLast));
    }

    #[test]
    fn key_files_round_trip_and_are_not_confused() {
        let key = SecretKey::from_seed([9; 32]);
        let again = SecretKey::parse(&key.to_file()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&key.public().to_file()).unwrap();
        assert_eq!(public, key.public());
        assert!(PublicKey::parse(&key.to_file()).is_err());
        assert!(SecretKey::parse(&public.to_file()).is_err());
        assert!(PublicKey::parse("hello").is_err());
    }
}
