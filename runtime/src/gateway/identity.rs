//! Who a request is, from a verifier only: the gateway's JWT check.
//!
//! A header the client sets is what the client says. Headers that a deployment trusts for
//! identity (a policy's `trusted header`s) must only ever carry a value a verifier set, so
//! the gateway removes every client copy of them before the filter runs, then, when a
//! verifier is configured, checks the bearer token and sets each header from a claim of
//! the verified token. The crate stays policy-agnostic: the caller names the headers and
//! the claims.
//!
//! Verified: the signature (RS256, ES256 or EdDSA, against a JWKS), `iss`, `aud`, `exp`
//! (required) and `nbf` (when present), with a bounded clock skew. A token whose header
//! names another algorithm (`none`, HMAC) is refused, so a public key can never be used as
//! an HMAC secret.

use crate::abi::Headers;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// The default and largest clock skew accepted on `exp` and `nbf`: enough for hosts whose
/// clocks are kept by NTP, small enough that an expired token stops working within a minute.
pub const MAX_CLOCK_SKEW_SECS: u64 = 60;

/// What the gateway does to identity headers on every proxied request.
#[derive(Debug, Clone, Default)]
pub struct IdentityConfig {
    /// Lower-case header names whose client copies are always removed.
    pub strip: Vec<String>,
    /// When set, a valid bearer token is required and its claims fill `claims`.
    pub verifier: Option<JwtVerifier>,
    /// Request paths exempt from the token check (the kill switch's admin endpoint, which
    /// has its own bearer token); their identity headers are still removed.
    pub exempt_paths: Vec<String>,
}

/// A configured JWT verifier: the keys, and what a token must say.
#[derive(Debug, Clone)]
pub struct JwtVerifier {
    keys: Vec<Jwk>,
    issuer: String,
    audiences: Vec<String>,
    /// `(header, claim)`: the header is set from the verified token's claim.
    claims: Vec<(String, String)>,
    leeway_secs: u64,
}

/// Why a verifier could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error("the JWKS is not a JSON Web Key Set: {0}")]
    Jwks(String),
    #[error("the JWKS has no RSA, P-256 or Ed25519 signing key")]
    NoKeys,
    #[error("an audience is required")]
    NoAudience,
    #[error("an issuer is required")]
    NoIssuer,
}

/// Why a request's token was refused. The message is fixed and safe to show a client: it
/// never echoes the token or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No `authorization: Bearer …` header.
    Missing,
    /// Not a JWT, or a header naming an algorithm other than RS256, ES256 or EdDSA.
    Malformed,
    /// No key of the JWKS verifies the signature.
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl TokenError {
    /// The machine-readable `code` of the 401 body.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_token",
            Self::Malformed => "malformed_token",
            Self::BadSignature => "invalid_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::WrongIssuer => "invalid_issuer",
            Self::WrongAudience => "invalid_audience",
        }
    }

    /// The human-readable `message` of the 401 body.
    pub fn message(self) -> &'static str {
        match self {
            Self::Missing => "A bearer token is required.",
            Self::Malformed => "The bearer token is not a valid JWT.",
            Self::BadSignature => "The bearer token's signature is not valid.",
            Self::Expired => "The bearer token has expired.",
            Self::NotYetValid => "The bearer token is not valid yet.",
            Self::WrongIssuer => "The bearer token was issued by an untrusted issuer.",
            Self::WrongAudience => "The bearer token is not meant for this gateway.",
        }
    }
}

impl JwtVerifier {
    /// A verifier for tokens from `issuer` for any of `audiences`, signed by a key of
    /// `jwks` (JSON); `claims` maps each header to set to the claim it comes from.
    pub fn new(
        jwks: &[u8],
        issuer: &str,
        audiences: Vec<String>,
        claims: Vec<(String, String)>,
    ) -> Result<JwtVerifier, VerifierError> {
        if issuer.is_empty() {
            return Err(VerifierError::NoIssuer);
        }
        if audiences.is_empty() {
            return Err(VerifierError::NoAudience);
        }
        let set: JwkSet =
            serde_json::from_slice(jwks).map_err(|e| VerifierError::Jwks(e.to_string()))?;
        let keys: Vec<Jwk> = set
            .keys
            .into_iter()
            .filter(|k| family(k).is_some())
            .collect();
        if keys.is_empty() {
            return Err(VerifierError::NoKeys);
        }
        Ok(JwtVerifier {
            keys,
            issuer: issuer.to_string(),
            audiences,
            claims: claims
                .into_iter()
                .map(|(h, c)| (h.to_ascii_lowercase(), c))
                .collect(),
            leeway_secs: MAX_CLOCK_SKEW_SECS,
        })
    }

    /// Sets the clock skew accepted on `exp` and `nbf`, capped at [`MAX_CLOCK_SKEW_SECS`].
    pub fn with_clock_skew(mut self, secs: u64) -> JwtVerifier {
        self.leeway_secs = secs.min(MAX_CLOCK_SKEW_SECS);
        self
    }

    /// Verifies `token` and returns the `(header, value)` pairs its claims give. A claim
    /// that is absent, or not a string, number or boolean, sets no header.
    pub fn verify(&self, token: &str) -> Result<Vec<(String, String)>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let alg = header.alg;
        if !matches!(alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
            return Err(TokenError::Malformed);
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.leeway_secs;
        let candidates = self.keys.iter().filter(|k| {
            family(k) == Some(alg)
                && match (&header.kid, &k.common.key_id) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        });
        let mut last = TokenError::BadSignature;
        for jwk in candidates {
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &key,
                &validation,
            ) {
                Ok(data) => return Ok(self.headers_from(&data.claims)),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature | K::InvalidKeyFormat | K::InvalidEcdsaKey => {
                            TokenError::BadSignature
                        }
                        K::ExpiredSignature => TokenError::Expired,
                        K::ImmatureSignature => TokenError::NotYetValid,
                        K::InvalidIssuer => TokenError::WrongIssuer,
                        K::InvalidAudience => TokenError::WrongAudience,
                        K::MissingRequiredClaim(c) if c == "iss" => TokenError::WrongIssuer,
                        K::MissingRequiredClaim(c) if c == "aud" => TokenError::WrongAudience,
                        K::MissingRequiredClaim(_) => TokenError::Expired,
                        _ => TokenError::Malformed,
                    };
                    // Only a signature failure may be another key's token; anything else
                    // means the signature checked out and the claims did not.
                    if last != TokenError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn headers_from(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (header, claim) in &self.claims {
            let value = match claims.get(claim) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    v.to_string()
                }
                _ => continue,
            };
            // A value that cannot travel as a header value is dropped, not mangled.
            if value.is_empty() || value.chars().any(|c| c.is_control()) {
                continue;
            }
            out.push((header.clone(), value));
        }
        out
    }
}

/// The algorithm a JWK verifies, for the three families writ accepts.
fn family(jwk: &Jwk) -> Option<Algorithm> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

/// The bearer token of an `authorization` header value.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl IdentityConfig {
    /// Applies the identity rules to one request's headers: removes the client's copies of
    /// the trusted headers, then (unless `path` is exempt) verifies the bearer token and
    /// adds the headers its claims give.
    pub fn apply(&self, path: &str, headers: &mut Headers) -> Result<(), TokenError> {
        let strip = |name: &str| {
            self.strip.iter().any(|s| s.eq_ignore_ascii_case(name))
                || self
                    .verifier
                    .as_ref()
                    .is_some_and(|v| v.claims.iter().any(|(h, _)| h.eq_ignore_ascii_case(name)))
        };
        headers.retain(|(k, _)| !strip(k));
        let Some(verifier) = &self.verifier else {
            return Ok(());
        };
        let bare = path.split('?').next().unwrap_or(path);
        if self.exempt_paths.iter().any(|p| p == bare) {
            return Ok(());
        }
        let token = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| bearer(v))
            .ok_or(TokenError::Missing)?;
        let set = verifier.verify(token)?;
        headers.extend(set);
        Ok(())
    }
}

/// Largest JWKS document read from a URL.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Fetches a JWKS document once (at start-up, and again on each reload), verifying an
/// HTTPS server against the web roots plus `extra_ca`. Blocking; call it before serving.
pub fn fetch_jwks(url: &str, extra_ca: Option<&[u8]>) -> Result<Vec<u8>, String> {
    use http_body_util::BodyExt;
    let tls = super::proxy::tls_config(extra_ca).map_err(|e| e.to_string())?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(connector);
    let request = hyper::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let call = async {
            let reply = client.request(request).await.map_err(|e| e.to_string())?;
            if !reply.status().is_success() {
                return Err(format!("status {}", reply.status()));
            }
            let body = http_body_util::Limited::new(reply.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok(body.to_bytes().to_vec())
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), call)
            .await
            .map_err(|_| "timed out".to_string())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_copies_are_removed_without_a_verifier() {
        let cfg = IdentityConfig {
            strip: vec!["x-jwt-team".into()],
            ..Default::default()
        };
        let mut h: Headers = vec![
            ("X-JWT-Team".into(), "forged".into()),
            ("x-other".into(), "kept".into()),
        ];
        assert_eq!(cfg.apply("/v1/chat/completions", &mut h), Ok(()));
        assert_eq!(h, vec![("x-other".to_string(), "kept".to_string())]);
    }

    #[test]
    fn bearer_tokens_parse() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }

    #[test]
    fn bad_jwks_and_tokens_are_refused() {
        assert!(JwtVerifier::new(b"{}", "i", vec!["a".into()], vec![]).is_err());
        let jwks = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let v = JwtVerifier::new(jwks, "i", vec!["a".into()], vec![]);
        assert!(v.is_ok());
        if let Ok(v) = v {
            assert_eq!(v.verify("not.a.jwt"), Err(TokenError::Malformed));
            // alg none is never accepted.
            let none = "eyJhbGciOiJub25lIn0.eyJpc3MiOiJpIn0.";
            assert_eq!(v.verify(none), Err(TokenError::Malformed));
        }
    }
}
