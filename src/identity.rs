//! Identity sources, shared by `writ serve` and `writ envoy`: which headers an artifact
//! trusts, which token claim sets each, and the flags that configure the verifier.
//!
//! A policy names its identity headers (`identify team by trusted header "x-jwt-team"`);
//! a trusted header must only ever carry a value that a verifier set. Both commands
//! remove the client's copies of every trusted header, and with a verifier configured set
//! each from a claim of the verified token: header `x-jwt-<claim>` comes from claim
//! `<claim>` (`x-jwt-team` ← `team`, `x-jwt-sub` ← `sub`), or from the claim that
//! `--jwt-claim HEADER=CLAIM` names.

use std::path::PathBuf;

/// The verifier flags both commands take.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct JwtArgs {
    /// Verify a bearer JWT on every request: the `iss` it must carry. With `--jwt-audience`
    /// and `--jwks`; trusted identity headers are then set from the token's claims.
    #[arg(long, value_name = "ISSUER", requires_all = ["jwt_audience", "jwks"])]
    pub jwt_issuer: Option<String>,
    /// An `aud` the token must carry (one of them, when repeated).
    #[arg(long, value_name = "AUDIENCE", requires = "jwt_issuer")]
    pub jwt_audience: Vec<String>,
    /// The keys that sign tokens: a JWKS file, or an `http(s)://` URL serving one.
    #[arg(long, value_name = "FILE|URL", requires = "jwt_issuer")]
    pub jwks: Option<String>,
    /// Set trusted header HEADER from claim CLAIM, overriding the `x-jwt-<claim>`
    /// convention. Repeatable.
    #[arg(long = "jwt-claim", value_name = "HEADER=CLAIM")]
    pub jwt_claims: Vec<String>,
}

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

impl JwtArgs {
    /// The JWKS source, when a verifier is configured.
    pub fn jwks_source(&self) -> Option<JwksSource> {
        let s = self.jwks.as_deref()?;
        Some(if s.starts_with("http://") || s.starts_with("https://") {
            JwksSource::Url(s.to_string())
        } else {
            JwksSource::File(PathBuf::from(s))
        })
    }
}

/// The trusted identity headers of a policy (lower case, each once, in workflow order).
pub fn trusted_headers(policy: &writ_plugin::ir::Policy) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in &policy.workflows {
        for id in [&w.team, &w.user].into_iter().flatten() {
            let h = id.header.to_ascii_lowercase();
            if id.trusted && !out.contains(&h) {
                out.push(h);
            }
        }
    }
    out
}

/// `(header, claim)` for each trusted header: an explicit `HEADER=CLAIM`, else the
/// `x-jwt-<claim>` convention. A header neither covers is an error, since the verifier
/// would otherwise never set it.
pub fn claim_mapping(
    headers: &[String],
    explicit: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut given = Vec::new();
    for spec in explicit {
        let Some((h, c)) = spec.split_once('=') else {
            anyhow::bail!("--jwt-claim expects HEADER=CLAIM, got `{spec}`");
        };
        let (h, c) = (h.trim().to_ascii_lowercase(), c.trim().to_string());
        if h.is_empty() || c.is_empty() {
            anyhow::bail!("--jwt-claim expects HEADER=CLAIM, got `{spec}`");
        }
        given.push((h, c));
    }
    let mut out = Vec::new();
    for h in headers {
        if let Some((_, c)) = given.iter().find(|(gh, _)| gh == h) {
            out.push((h.clone(), c.clone()));
        } else if let Some(c) = h.strip_prefix("x-jwt-").filter(|c| !c.is_empty()) {
            out.push((h.clone(), c.to_string()));
        } else {
            anyhow::bail!(
                "the policy trusts header `{h}`, but no claim sets it: name one with `--jwt-claim {h}=CLAIM`"
            );
        }
    }
    for (h, _) in &given {
        if !headers.contains(h) {
            anyhow::bail!("--jwt-claim names `{h}`, which is not a trusted header of the policy");
        }
    }
    Ok(out)
}

/// The warning both commands print when a policy trusts headers but no verifier is set.
pub fn unverified_warning(command: &str, headers: &[String]) -> String {
    format!(
        "warning: {command}: the policy trusts header(s) {}, but no verifier is configured \
         (--jwt-issuer, --jwt-audience, --jwks): clients' copies are removed, so these \
         identities are absent",
        headers
            .iter()
            .map(|h| format!("`{h}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_follow_the_convention_or_the_flag() {
        let hs = vec!["x-jwt-team".to_string(), "x-org".to_string()];
        assert!(claim_mapping(&hs, &[]).is_err());
        let m = claim_mapping(&hs, &["X-Org=org_id".to_string()]).unwrap_or_default();
        assert_eq!(
            m,
            vec![
                ("x-jwt-team".to_string(), "team".to_string()),
                ("x-org".to_string(), "org_id".to_string())
            ]
        );
        assert!(claim_mapping(&hs, &["x-other=a".to_string(), "x-org=b".to_string()]).is_err());
    }
}
