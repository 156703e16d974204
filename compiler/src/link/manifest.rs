//! The artifact manifest: what an auditor needs to know about an artifact without running
//! it. Written beside the `.wasm` and embedded in it as the `writ.manifest` custom section.

use serde::{Deserialize, Serialize};
use writ_plugin::ir;

use crate::{Compiled, ManualClause};

/// Version of the manifest's JSON shape; readers refuse versions they do not know.
pub const MANIFEST_FORMAT: u32 = 1;

/// Name of the custom section that carries the manifest inside the artifact.
pub const MANIFEST_SECTION: &str = "writ.manifest";

/// Everything `writ inspect`, coverage and audit need about one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`] of this manifest.
    pub manifest_format: u32,
    /// `ir::FORMAT_VERSION` of the embedded policy blob.
    pub policy_format: u32,
    pub policy: String,
    pub version: String,
    pub owner: String,
    /// The paper policy the source implements, as written in the source.
    pub implements: String,
    /// sha256 (hex) of the artifact file. Absent from the embedded copy (a file cannot
    /// contain its own hash); present in the `.manifest.json` written beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    /// Key id of the key that signed the artifact (`writ build --sign`). Like
    /// `artifact_sha256`, only in the `.manifest.json` beside it: the signature covers the
    /// embedded manifest, so the embedded copy cannot name it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// sha256 (hex) of the `.policy` source.
    pub source_sha256: String,
    /// sha256 (hex) of the engine module the policy was linked into.
    pub engine_sha256: String,
    /// `writ-compiler <version>`, so an artifact names the compiler that produced it.
    pub compiler: String,
    /// The policy-wide default enforcement, `enforce` or `monitor`.
    pub enforcement: String,
    /// Every rule, in source order (the engine's rule indices).
    pub rules: Vec<ManifestRule>,
    /// Clauses the policy declares enforced outside the gateway.
    pub manual: Vec<ManualClause>,
}

/// One rule as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRule {
    /// Unique within the artifact: the clause id for a clause's first rule, then
    /// `<clause>#2`, `<clause>#3`… for further rules citing the same clause.
    pub id: String,
    pub clause: String,
    pub title: String,
    pub line: u32,
    pub column: u32,
    /// Byte range of the rule in the source.
    pub start: u32,
    pub end: u32,
    /// `request` or `response`.
    pub phase: String,
    /// The action keyword: `allow`, `deny`, `redact`, `tokenise`, `route`, `escalate`, `tag`.
    pub action: String,
    /// The rule's effective enforcement, `enforce` or `monitor` (policy-wide monitor wins).
    pub enforcement: String,
}

fn enforcement_str(e: ir::Enforcement) -> &'static str {
    match e {
        ir::Enforcement::Enforce => "enforce",
        ir::Enforcement::Monitor => "monitor",
    }
}

fn action_str(a: &ir::Action) -> &'static str {
    match a {
        ir::Action::Allow => "allow",
        ir::Action::Deny { .. } => "deny",
        ir::Action::Redact { .. } => "redact",
        ir::Action::Tokenise { .. } => "tokenise",
        ir::Action::Route(_) => "route",
        ir::Action::Escalate { .. } => "escalate",
        ir::Action::Hold { .. } => "hold",
        ir::Action::StripTool => "strip_tool",
        ir::Action::Tag { .. } => "tag",
    }
}

impl Manifest {
    /// Describes `compiled` linked into the engine whose sha256 is `engine_sha256`, without
    /// the artifact hash (see [`Manifest::artifact_sha256`]).
    pub fn describe(compiled: &Compiled, engine_sha256: String) -> Manifest {
        let policy = &compiled.policy;
        let ids = policy.rule_ids();
        let rules = policy
            .rules
            .iter()
            .zip(ids)
            .enumerate()
            .map(|(i, (rule, id))| {
                let info = compiled.rule_info.get(i);
                let enforcement = if policy.enforcement == ir::Enforcement::Monitor {
                    ir::Enforcement::Monitor
                } else {
                    rule.enforcement
                };
                ManifestRule {
                    id,
                    clause: rule.clause.clone(),
                    title: rule.title.clone(),
                    line: info.map_or(rule.line, |i| i.line),
                    column: info.map_or(0, |i| i.column),
                    start: info.map_or(0, |i| i.start),
                    end: info.map_or(0, |i| i.end),
                    phase: match rule.phase {
                        ir::Phase::Request => "request".into(),
                        ir::Phase::Response => "response".into(),
                    },
                    action: action_str(&rule.action).into(),
                    enforcement: enforcement_str(enforcement).into(),
                }
            })
            .collect();
        Manifest {
            manifest_format: MANIFEST_FORMAT,
            policy_format: ir::FORMAT_VERSION,
            policy: policy.name.clone(),
            version: policy.version.clone(),
            owner: compiled.owner.clone(),
            implements: compiled.implements.clone(),
            artifact_sha256: None,
            signed_by: None,
            source_sha256: policy.source_sha256.clone(),
            engine_sha256,
            compiler: format!("writ-compiler {}", env!("CARGO_PKG_VERSION")),
            enforcement: enforcement_str(policy.enforcement).into(),
            rules,
            manual: compiled.manual.clone(),
        }
    }

    /// Pretty JSON with a trailing newline, the form written to disk.
    pub fn to_json_pretty(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}
