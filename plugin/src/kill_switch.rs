//! The kill switch: an operator stops or resumes a workflow at runtime, without a
//! redeploy, by calling an admin path the filter answers itself.
//!
//! State lives in shared data under `writ/kill/<workflow>` (`*` stops every workflow).
//! Envoy shares data between all worker VMs of the same `vm_id`, and the filter checks
//! [`is_stopped`] on every request (one or two shared-data reads, no parsing beyond the
//! first byte), so a flip applies from the next request on any worker, far within the
//! five seconds the paper policy asks for. Shared data does not survive an Envoy restart:
//! a stop is an incident measure, and a permanent one belongs in the policy.
//!
//! Authentication: `authorization: Bearer <token>`, whose sha256 must equal the policy's
//! `token_sha256` (compared in constant time). The policy holds only the hash.

use crate::audit::AuditRecord;
use crate::calendar::rfc3339;
use crate::ir::KillSwitch;
use crate::store::{self, SharedStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The workflow name that stands for every workflow.
pub const ALL_WORKFLOWS: &str = "*";

/// The shared-data key of a workflow's switch.
pub fn state_key(workflow: &str) -> String {
    format!("writ/kill/{}", store::key_segment(workflow))
}

/// What an operator last did to a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillState {
    pub stopped: bool,
    /// Who flipped it, as the operator declared (`by` in the request; the token is shared).
    pub by: String,
    /// RFC 3339 time of the flip.
    pub at: String,
    pub reason: String,
}

impl KillState {
    /// Stored as one state byte (`S` stopped, `R` running) then JSON details, so the
    /// per-request check reads only the first byte.
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![if self.stopped { b'S' } else { b'R' }];
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    fn decode(bytes: &[u8]) -> Option<KillState> {
        let (_, json) = bytes.split_first()?;
        serde_json::from_slice(json).ok()
    }
}

/// Whether `workflow` (or every workflow) is stopped. A request outside every workflow
/// is stopped only by `*`. A value this engine did not write reads as stopped: an unknown
/// state fails closed.
pub fn is_stopped(store: &dyn SharedStore, workflow: Option<&str>) -> bool {
    let stopped = |key: &str| match store.get(key) {
        None => false,
        Some((bytes, _)) => bytes.first() != Some(&b'R'),
    };
    stopped(&state_key(ALL_WORKFLOWS)) || workflow.is_some_and(|w| stopped(&state_key(w)))
}

/// The details of a workflow's switch, `None` when it was never flipped.
pub fn state(store: &dyn SharedStore, workflow: &str) -> Option<KillState> {
    store
        .get(&state_key(workflow))
        .and_then(|(b, _)| KillState::decode(&b))
}

/// The body a request of a stopped workflow receives, with status [`STOPPED_STATUS`].
pub fn stopped_body(workflow: Option<&str>) -> Vec<u8> {
    crate::wire::error_body(
        &format!(
            "the workflow `{}` has been stopped by an operator; try again later",
            workflow.unwrap_or(ALL_WORKFLOWS)
        ),
        "workflow_stopped",
        "kill_switch",
    )
}

/// The status of a request refused because its workflow is stopped.
pub const STOPPED_STATUS: u16 = 503;

/// The title under which a request refused by the kill switch cites the switch's clause
/// in its audit record, as if the switch were a rule.
pub const RULE_TITLE: &str = "Kill switch";

/// Whether a request is for the admin endpoint (the path without its query string).
pub fn is_admin_path(ks: &KillSwitch, path: &str) -> bool {
    path.split('?').next() == Some(ks.admin_path.as_str())
}

/// What the admin endpoint answers.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminResponse {
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// Extra response headers (`www-authenticate` on a 401).
    pub headers: Vec<(&'static str, String)>,
    /// The audit record of this call: every attempt is audited, refused ones included.
    pub audit: AuditRecord,
}

impl AdminResponse {
    /// An answer of `status` with a JSON `value`; the call's audit record takes the status
    /// and `outcome`, and moves into the answer.
    pub fn new(
        status: u16,
        value: &serde_json::Value,
        outcome: &str,
        audit: &mut AuditRecord,
    ) -> AdminResponse {
        audit.status = status;
        audit.outcome = outcome.to_string();
        AdminResponse {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
            headers: Vec::new(),
            audit: std::mem::take(audit),
        }
    }

    /// A refused admin call: an OpenAI-style error of type `admin_error`, audited as
    /// `outcome`.
    pub fn error(
        status: u16,
        message: &str,
        code: &str,
        outcome: &str,
        audit: &mut AuditRecord,
    ) -> AdminResponse {
        let value = admin_error(message, "admin_error", code);
        let mut r = AdminResponse::new(status, &value, outcome, audit);
        if status == 401 {
            r.headers.push(("www-authenticate", "Bearer".to_string()));
        }
        r
    }
}

/// The body of an admin error, OpenAI-shaped, so one client parser reads every admin path.
pub fn admin_error(message: &str, kind: &str, code: &str) -> serde_json::Value {
    serde_json::json!({"error": {"message": message, "type": kind, "code": code}})
}

/// Why an admin call was refused before its body was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminRefusal {
    pub status: u16,
    pub message: &'static str,
    pub code: &'static str,
    /// The audit outcome: `unauthorized` or `rejected`.
    pub outcome: &'static str,
}

/// The checks every admin path makes first, in this order: the bearer token (so nothing
/// about the call is revealed to someone without it, not even the method), then POST.
pub fn check_admin_call(
    ks: &KillSwitch,
    method: &str,
    authorization: Option<&str>,
) -> Result<(), AdminRefusal> {
    if !authorized(ks, authorization) {
        return Err(AdminRefusal {
            status: 401,
            message: "a valid bearer token is required",
            code: "unauthorized",
            outcome: "unauthorized",
        });
    }
    if !method.eq_ignore_ascii_case("POST") {
        return Err(AdminRefusal {
            status: 405,
            message: "use POST",
            code: "method_not_allowed",
            outcome: "rejected",
        });
    }
    Ok(())
}

#[derive(Deserialize)]
struct AdminBody {
    workflow: String,
    action: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

/// Handles one admin request: `POST` with `authorization: Bearer <token>` and a JSON body
/// `{"workflow": "...", "action": "stop"|"resume", "reason": "...", "by": "..."}`.
/// `workflows` lists the policy's workflow names; `*` is accepted as every workflow.
///
/// Answers 200 with the new state, 401 on a missing or wrong token (before the body is
/// even parsed), 405 for another method, 400 for a malformed body or unknown action, 404
/// for an unknown workflow, and 503 when shared data could not be written.
pub fn handle_admin(
    store: &dyn SharedStore,
    ks: &KillSwitch,
    workflows: &[&str],
    method: &str,
    authorization: Option<&str>,
    body: &[u8],
    unix_nanos: i64,
) -> AdminResponse {
    let mut audit = AuditRecord {
        event: "kill_switch".into(),
        time: rfc3339(unix_nanos),
        ..AuditRecord::default()
    };
    if let Err(r) = check_admin_call(ks, method, authorization) {
        return AdminResponse::error(r.status, r.message, r.code, r.outcome, &mut audit);
    }
    let parsed: AdminBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!(
                "expected {{\"workflow\", \"action\": \"stop\"|\"resume\", \"reason\"}}: {e}"
            );
            return AdminResponse::error(400, &msg, "invalid_request", "rejected", &mut audit);
        }
    };
    audit.workflow = Some(parsed.workflow.clone());
    audit.user = parsed.by.clone();
    audit.detail = Some(parsed.reason.clone());
    let stopped = match parsed.action.as_str() {
        "stop" => true,
        "resume" => false,
        other => {
            let msg = format!("unknown action `{other}`; use `stop` or `resume`");
            return AdminResponse::error(400, &msg, "invalid_action", "rejected", &mut audit);
        }
    };
    if parsed.workflow != ALL_WORKFLOWS && !workflows.contains(&parsed.workflow.as_str()) {
        let msg = format!("the policy has no workflow `{}`", parsed.workflow);
        return AdminResponse::error(404, &msg, "unknown_workflow", "rejected", &mut audit);
    }
    let state = KillState {
        stopped,
        by: parsed.by.unwrap_or_else(|| "operator".into()),
        at: rfc3339(unix_nanos),
        reason: parsed.reason,
    };
    // A flip overwrites whatever was there: the last operator's word wins.
    if store
        .set(&state_key(&parsed.workflow), &state.encode(), 0)
        .is_err()
    {
        return AdminResponse::error(
            503,
            "could not record the switch; retry",
            "store_error",
            "error",
            &mut audit,
        );
    }
    let value = serde_json::json!({
        "workflow": parsed.workflow,
        "state": if stopped { "stopped" } else { "running" },
        "by": state.by,
        "at": state.at,
        "reason": state.reason,
    });
    let outcome = if stopped { "stopped" } else { "resumed" };
    AdminResponse::new(200, &value, outcome, &mut audit)
}

/// Flips a workflow's switch on behalf of the gateway itself (a kill point with `then
/// stop`), exactly as an operator's `stop` would: the same state under the same key, and
/// an audit record of the same shape (`event: kill_switch`, outcome `stopped`, `user` the
/// declared `by`, `detail` the reason). `None` when shared data could not be written (the
/// caller logs it; the alert still stands).
pub fn stop_by(
    store: &dyn SharedStore,
    policy: &crate::ir::Policy,
    workflow: &str,
    by: &str,
    reason: &str,
    unix_nanos: i64,
) -> Option<AuditRecord> {
    let state = KillState {
        stopped: true,
        by: by.to_string(),
        at: rfc3339(unix_nanos),
        reason: reason.to_string(),
    };
    store.set(&state_key(workflow), &state.encode(), 0).ok()?;
    Some(AuditRecord {
        event: "kill_switch".into(),
        time: rfc3339(unix_nanos),
        workflow: Some(workflow.to_string()),
        user: Some(by.to_string()),
        policy: policy.name.clone(),
        policy_version: policy.version.clone(),
        source_sha256: policy.source_sha256.clone(),
        status: 200,
        outcome: "stopped".into(),
        detail: Some(reason.to_string()),
        ..AuditRecord::default()
    })
}

/// [`handle_admin`] for a whole policy: its kill switch and workflow names, with the
/// policy's name, version and source hash in the audit record (the artifact hash is the
/// host's to add). `None` when the policy declares no kill switch: the path is then an
/// ordinary request.
pub fn handle_admin_for(
    store: &dyn SharedStore,
    policy: &crate::ir::Policy,
    method: &str,
    authorization: Option<&str>,
    body: &[u8],
    unix_nanos: i64,
) -> Option<AdminResponse> {
    let ks = policy.kill_switch.as_ref()?;
    let names: Vec<&str> = policy.workflows.iter().map(|w| w.name.as_str()).collect();
    let mut r = handle_admin(store, ks, &names, method, authorization, body, unix_nanos);
    r.audit.policy = policy.name.clone();
    r.audit.policy_version = policy.version.clone();
    r.audit.source_sha256 = policy.source_sha256.clone();
    Some(r)
}

/// Whether the `authorization` header carries a bearer token whose sha256 is the policy's
/// hash. The comparison takes the same time wherever the digests differ.
pub fn authorized(ks: &KillSwitch, authorization: Option<&str>) -> bool {
    let Some(expected) = decode_hex32(&ks.token_sha256) else {
        // A policy with a malformed hash accepts nobody.
        return false;
    };
    let Some(token) = authorization.and_then(bearer_token) else {
        return false;
    };
    let digest = Sha256::digest(token.as_bytes());
    let diff = digest
        .iter()
        .zip(expected.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    diff == 0
}

fn bearer_token(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, token) = header.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        let &[hi, lo] = pair else { return None };
        *o = u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    // sha256("test")
    const TEST_HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn ks() -> KillSwitch {
        KillSwitch {
            clause: None,
            admin_path: "/writ/admin/kill-switch".into(),
            token_sha256: TEST_HASH.into(),
        }
    }

    fn call(s: &MemoryStore, auth: Option<&str>, body: &str) -> AdminResponse {
        handle_admin(
            s,
            &ks(),
            &["support", "billing"],
            "POST",
            auth,
            body.as_bytes(),
            0,
        )
    }

    #[test]
    fn stop_and_resume_take_effect_on_the_next_check() {
        let s = MemoryStore::new();
        assert!(!is_stopped(&s, Some("support")));
        let r = call(
            &s,
            Some("Bearer test"),
            r#"{"workflow":"support","action":"stop","reason":"incident 42","by":"alice"}"#,
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.audit.outcome, "stopped");
        assert_eq!(r.audit.workflow.as_deref(), Some("support"));
        assert!(is_stopped(&s, Some("support")));
        assert!(!is_stopped(&s, Some("billing")));
        assert!(!is_stopped(&s, None));
        assert_eq!(
            state(&s, "support").map(|st| st.by),
            Some("alice".to_string())
        );
        let r = call(
            &s,
            Some("bearer test"),
            r#"{"workflow":"support","action":"resume","reason":"fixed"}"#,
        );
        assert_eq!(r.status, 200);
        assert!(!is_stopped(&s, Some("support")));
        let r = call(
            &s,
            Some("Bearer test"),
            r#"{"workflow":"*","action":"stop","reason":"all"}"#,
        );
        assert_eq!(r.status, 200);
        assert!(is_stopped(&s, Some("billing")));
        assert!(is_stopped(&s, None));
    }

    #[test]
    fn wrong_tokens_and_bad_bodies_are_refused() {
        let s = MemoryStore::new();
        let stop = r#"{"workflow":"support","action":"stop","reason":"x"}"#;
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("test"),
            Some("Basic test"),
            Some("Bearer "),
        ] {
            let r = call(&s, auth, stop);
            assert_eq!(r.status, 401, "{auth:?}");
            assert_eq!(r.audit.outcome, "unauthorized");
            assert!(!is_stopped(&s, Some("support")));
        }
        assert_eq!(call(&s, Some("Bearer test"), "{not json").status, 400);
        assert_eq!(
            call(&s, Some("Bearer test"), r#"{"workflow":"support"}"#).status,
            400
        );
        assert_eq!(
            call(
                &s,
                Some("Bearer test"),
                r#"{"workflow":"support","action":"pause"}"#
            )
            .status,
            400
        );
        assert_eq!(
            call(
                &s,
                Some("Bearer test"),
                r#"{"workflow":"nope","action":"stop"}"#
            )
            .status,
            404
        );
        let get = handle_admin(&s, &ks(), &["support"], "GET", Some("Bearer test"), b"", 0);
        assert_eq!(get.status, 405);
        let bad_policy = KillSwitch {
            clause: None,
            admin_path: "/a".into(),
            token_sha256: "zz".into(),
        };
        assert!(!authorized(&bad_policy, Some("Bearer test")));
        assert!(!is_stopped(&s, Some("support")));
    }

    #[test]
    fn unknown_state_fails_closed_and_paths_ignore_queries() {
        let s = MemoryStore::new();
        let _ = s.set(&state_key("support"), b"?", 0);
        assert!(is_stopped(&s, Some("support")));
        assert!(is_admin_path(&ks(), "/writ/admin/kill-switch?x=1"));
        assert!(!is_admin_path(&ks(), "/writ/admin/kill-switch/x"));
        let body: serde_json::Value =
            serde_json::from_slice(&stopped_body(Some("support"))).unwrap_or_default();
        assert_eq!(body["error"]["code"], "kill_switch");
    }
}
