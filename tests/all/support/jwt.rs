//! An identity provider for tests: fresh RS256, ES256 and EdDSA keys per run, their JWKS,
//! and tokens signed with them. RSA keys come from the `openssl` CLI (ring cannot make
//! them); EC and Ed25519 keys from ring.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

use super::process::run_ok;
use super::tempdir::TempDir;

/// The issuer and audience the tests configure.
pub const ISSUER: &str = "https://id.writ.test";
pub const AUDIENCE: &str = "writ-gateway";

/// One signing key and its public JWK.
pub struct Key {
    pub alg: Algorithm,
    pub kid: String,
    encoding: EncodingKey,
    pub jwk: serde_json::Value,
}

/// Keys of all three algorithms.
pub struct Issuer {
    pub rsa: Key,
    pub ec: Key,
    pub ed: Key,
}

impl Issuer {
    /// Mints fresh keys.
    pub fn new() -> Issuer {
        let rng = SystemRandom::new();
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed_pair = Ed25519KeyPair::from_pkcs8(ed_pkcs8.as_ref()).unwrap();
        let ed = Key {
            alg: Algorithm::EdDSA,
            kid: "ed-1".into(),
            encoding: EncodingKey::from_ed_der(ed_pkcs8.as_ref()),
            jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "alg": "EdDSA",
                "x": B64.encode(ed_pair.public_key().as_ref())}),
        };
        let ec_pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ec_pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, ec_pkcs8.as_ref(), &rng)
                .unwrap();
        let point = ec_pair.public_key().as_ref(); // 0x04 || x || y
        let ec = Key {
            alg: Algorithm::ES256,
            kid: "ec-1".into(),
            encoding: EncodingKey::from_ec_der(ec_pkcs8.as_ref()),
            jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "ec-1", "alg": "ES256",
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}),
        };
        let dir = TempDir::new("rsa");
        let pem = dir.path().join("rsa.pem");
        run_ok(
            std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                    "-out",
                ])
                .arg(&pem),
            std::time::Duration::from_secs(60),
        )
        .unwrap();
        let modulus = run_ok(
            std::process::Command::new("openssl")
                .args(["rsa", "-noout", "-modulus", "-in"])
                .arg(&pem),
            std::time::Duration::from_secs(30),
        )
        .unwrap();
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let rsa = Key {
            alg: Algorithm::RS256,
            kid: "rsa-1".into(),
            encoding: EncodingKey::from_rsa_pem(&std::fs::read(&pem).unwrap()).unwrap(),
            jwk: serde_json::json!({"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig",
                "n": B64.encode(&n), "e": "AQAB"}),
        };
        Issuer { rsa, ec, ed }
    }

    /// The public JWKS of all three keys.
    pub fn jwks(&self) -> String {
        serde_json::json!({"keys": [&self.rsa.jwk, &self.ec.jwk, &self.ed.jwk]}).to_string()
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Claims of a valid token for `team` and `sub`, valid for ten minutes.
pub fn claims(team: &str, sub: &str) -> serde_json::Value {
    serde_json::json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "team": team,
        "iat": now(), "exp": now() + 600})
}

/// `claims` signed with `key`.
pub fn sign(key: &Key, claims: &serde_json::Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

/// A token whose payload was changed after signing (the signature no longer matches).
pub fn tampered(key: &Key, claims: &serde_json::Value) -> String {
    let token = sign(key, claims);
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
    payload["team"] = serde_json::json!("finance");
    parts[1] = B64.encode(payload.to_string());
    parts.join(".")
}
