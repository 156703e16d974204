//! Hold for approval: a reply whose tool calls a `hold` rule withholds is stored under its
//! review id until a reviewer approves or rejects it; the client gets a `pending_approval`
//! answer and, once approved, the stored reply when it retries with the review id.
//! `docs/tools.md` describes the flow and every answer's JSON.
//!
//! State lives in shared data under `writ/hold/<review_id>` (the same store as the kill
//! switch, so every worker of a host sees it). The stored reply is the one the client
//! would have received (placeholders already restored), so what is released is exactly
//! what the reviewer approved, not a fresh answer of the model. A release is single use:
//! the entry moves to `released` with a compare-and-swap, so two retries cannot both get
//! it.
//!
//! The reviewer's endpoint, [`APPROVALS_PATH`], is authenticated like the kill switch: a
//! bearer token whose sha256 is the policy's `kill_switch` token hash. A policy without a
//! kill switch has no approver, so the checker refuses `hold` there, and the engine
//! answers the path with 404 (fail closed: nothing can be released).

use crate::audit::AuditRecord;
use crate::calendar::rfc3339;
use crate::ir::KillSwitch;
use crate::kill_switch::AdminResponse;
use crate::store::{self, SharedStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The admin path where a reviewer approves or rejects a held tool call.
pub const APPROVALS_PATH: &str = "/writ/admin/approvals";

/// The request header a client retries with to collect an approved reply.
pub const REVIEW_ID_HEADER: &str = "x-writ-review-id";

/// The HTTP status of a `pending_approval` answer: accepted, not yet done.
pub const PENDING_STATUS: u16 = 202;

/// Where one held reply lives.
pub fn hold_key(review_id: &str) -> String {
    format!("writ/hold/{}", store::key_segment(review_id))
}

/// Whether a request is for the approvals endpoint (query string ignored).
pub fn is_approvals_path(path: &str) -> bool {
    path.split('?').next() == Some(APPROVALS_PATH)
}

/// The lifecycle of a held reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Pending,
    Approved,
    Rejected,
    /// Approved and handed to the client once; a second retry gets nothing.
    Released,
}

impl HoldState {
    /// The word the answers and audit records use.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Pending => "pending_approval",
            HoldState::Approved => "approved",
            HoldState::Rejected => "rejected",
            HoldState::Released => "released",
        }
    }
}

/// One withheld tool call, as the client and the reviewer see it: never its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldCall {
    pub id: String,
    pub name: String,
}

/// A held reply and what a reviewer decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub state: HoldState,
    pub review_id: String,
    pub workflow: Option<String>,
    /// The hold rule's id and clause, and its queue and reason.
    pub rule: String,
    pub clause: String,
    pub queue: String,
    pub reason: String,
    /// The calls the rule matched.
    pub tool_calls: Vec<HeldCall>,
    /// sha256 (hex) of the request body as the client sent it: a retry must send the same
    /// request to collect the reply.
    pub request_sha256: String,
    /// The reply to release: its content type and body, placeholders restored.
    pub content_type: String,
    pub body: String,
    /// When it was held and, later, decided (RFC 3339), and by whom.
    pub held_at: String,
    #[serde(default)]
    pub decided_at: Option<String>,
    #[serde(default)]
    pub decided_by: Option<String>,
}

/// sha256 (hex) of a request body, which binds a retry to the held request.
pub fn request_digest(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stores a new held reply. A store failure is returned: the caller then fails closed
/// (the client gets an error, never the held calls).
pub fn put(store: &dyn SharedStore, held: &Held) -> Result<(), &'static str> {
    let bytes = serde_json::to_vec(held).map_err(|_| "cannot encode the held reply")?;
    store
        .set(&hold_key(&held.review_id), &bytes, 0)
        .map_err(|_| "cannot store the held reply")
}

/// Reads a held reply and its CAS token.
pub fn get(store: &dyn SharedStore, review_id: &str) -> Option<(Held, u32)> {
    let (bytes, cas) = store.get(&hold_key(review_id))?;
    // An entry that was deleted (emptied) or is not ours reads as absent.
    serde_json::from_slice(&bytes).ok().map(|h| (h, cas))
}

/// The `pending_approval` body the client receives (status [`PENDING_STATUS`]).
pub fn pending_body(held: &Held) -> Vec<u8> {
    let v = serde_json::json!({
        "object": "writ.pending_approval",
        "status": "pending_approval",
        "review_id": held.review_id,
        "queue": held.queue,
        "reason": held.reason,
        "rule": held.rule,
        "clause": held.clause,
        "tool_calls": held.tool_calls,
        "retry": {
            "header": REVIEW_ID_HEADER,
            "value": held.review_id,
            "message": "Send the same request again with this header once a reviewer has approved the tool calls."
        }
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

/// What a retry with a review id gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// Approved: the held reply, once.
    Reply { content_type: String, body: Vec<u8> },
    /// Still waiting: the same `pending_approval` body, status 202.
    Pending(Vec<u8>),
    /// A defined error answer: status and OpenAI-style JSON body.
    Refused { status: u16, body: Vec<u8> },
}

/// Answers a retry carrying `review_id` for the request whose body hashes to
/// `request_sha256`: the approved reply (marking it released), the pending answer again,
/// or an error — 404 unknown id, 409 a different request, 403 rejected, 410 already
/// released, 503 the store could not record the release (nothing is handed out).
pub fn release(store: &dyn SharedStore, review_id: &str, request_sha256: &str) -> Release {
    let refused = |status: u16, message: &str, code: &str| Release::Refused {
        status,
        body: crate::wire::error_body(message, "approval_error", code),
    };
    let Some((mut held, cas)) = get(store, review_id) else {
        return refused(
            404,
            "no tool call is held under this review id",
            "unknown_review_id",
        );
    };
    if held.request_sha256 != request_sha256 {
        return refused(
            409,
            "the review id belongs to another request; retry with the request that was held",
            "review_id_mismatch",
        );
    }
    match held.state {
        HoldState::Pending => Release::Pending(pending_body(&held)),
        HoldState::Rejected => refused(403, "a reviewer rejected the held tool calls", "rejected"),
        HoldState::Released => refused(
            410,
            "the approved tool calls were already released",
            "already_released",
        ),
        HoldState::Approved => {
            held.state = HoldState::Released;
            let body = std::mem::take(&mut held.body);
            let content_type = held.content_type.clone();
            let Ok(bytes) = serde_json::to_vec(&held) else {
                return refused(503, "could not record the release; retry", "store_error");
            };
            // A concurrent retry that released it first makes this CAS fail.
            if store.set(&hold_key(review_id), &bytes, cas).is_err() {
                return refused(503, "could not record the release; retry", "store_error");
            }
            Release::Reply {
                content_type,
                body: body.into_bytes(),
            }
        }
    }
}

#[derive(Deserialize)]
struct DecisionBody {
    review_id: String,
    decision: String,
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: String,
}

/// The reviewer's endpoint: `POST` [`APPROVALS_PATH`] with `authorization: Bearer <token>`
/// (the kill switch's) and `{"review_id": "...", "decision": "approve"|"reject", "by":
/// "...", "reason": "..."}`. Answers 200 with the new state, 401 without a valid token,
/// 405 for another method, 400 for a malformed body, 404 for an unknown review id, 409
/// when it was already decided, 503 when the store refused the write. Every call gets an
/// audit record (event `approval`).
pub fn handle_decision(
    store: &dyn SharedStore,
    ks: &KillSwitch,
    method: &str,
    authorization: Option<&str>,
    body: &[u8],
    unix_nanos: i64,
) -> AdminResponse {
    let mut audit = AuditRecord {
        event: "approval".into(),
        time: rfc3339(unix_nanos),
        ..AuditRecord::default()
    };
    if let Err(r) = crate::kill_switch::check_admin_call(ks, method, authorization) {
        return AdminResponse::error(r.status, r.message, r.code, r.outcome, &mut audit);
    }
    let parsed: DecisionBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!(
                "expected {{\"review_id\", \"decision\": \"approve\"|\"reject\", \"by\", \"reason\"}}: {e}"
            );
            return AdminResponse::error(400, &msg, "invalid_request", "rejected", &mut audit);
        }
    };
    audit.user = parsed.by.clone();
    audit.detail = Some(format!("review {}: {}", parsed.review_id, parsed.reason));
    let new_state = match parsed.decision.as_str() {
        "approve" => HoldState::Approved,
        "reject" => HoldState::Rejected,
        other => {
            let msg = format!("unknown decision `{other}`; use `approve` or `reject`");
            return AdminResponse::error(400, &msg, "invalid_decision", "rejected", &mut audit);
        }
    };
    let Some((mut held, cas)) = get(store, &parsed.review_id) else {
        return AdminResponse::error(
            404,
            "no tool call is held under this review id",
            "unknown_review_id",
            "rejected",
            &mut audit,
        );
    };
    audit.workflow = held.workflow.clone();
    audit.rules.push(crate::audit::RuleRecord {
        id: held.rule.clone(),
        clause: held.clause.clone(),
        title: held.reason.clone(),
        action: "hold".into(),
        mode: "enforce".into(),
        effect: "enforced".into(),
    });
    if held.state != HoldState::Pending {
        let msg = format!("the review was already decided: {}", held.state.as_str());
        return AdminResponse::error(409, &msg, "already_decided", "rejected", &mut audit);
    }
    held.state = new_state;
    held.decided_at = Some(rfc3339(unix_nanos));
    held.decided_by = Some(parsed.by.unwrap_or_else(|| "reviewer".into()));
    let stored = serde_json::to_vec(&held)
        .ok()
        .and_then(|b| store.set(&hold_key(&held.review_id), &b, cas).ok());
    if stored.is_none() {
        return AdminResponse::error(
            503,
            "could not record the decision; retry",
            "store_error",
            "error",
            &mut audit,
        );
    }
    let value = serde_json::json!({
        "review_id": held.review_id,
        "state": held.state.as_str(),
        "by": held.decided_by,
        "at": held.decided_at,
        "tool_calls": held.tool_calls,
    });
    let outcome = held.state.as_str();
    AdminResponse::new(200, &value, outcome, &mut audit)
}

/// [`handle_decision`] for a whole policy (its kill switch's token; the policy's identity
/// in the audit record). `None` when the policy has no kill switch: there is no approver.
pub fn handle_decision_for(
    store: &dyn SharedStore,
    policy: &crate::ir::Policy,
    method: &str,
    authorization: Option<&str>,
    body: &[u8],
    unix_nanos: i64,
) -> Option<AdminResponse> {
    let ks = policy.kill_switch.as_ref()?;
    let mut r = handle_decision(store, ks, method, authorization, body, unix_nanos);
    r.audit.policy = policy.name.clone();
    r.audit.policy_version = policy.version.clone();
    r.audit.source_sha256 = policy.source_sha256.clone();
    Some(r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
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

    fn held(id: &str) -> Held {
        Held {
            state: HoldState::Pending,
            review_id: id.into(),
            workflow: Some("support".into()),
            rule: "AIP-9.2".into(),
            clause: "AIP-9.2".into(),
            queue: "refund-approvals".into(),
            reason: "refund over limit".into(),
            tool_calls: vec![HeldCall {
                id: "call_1".into(),
                name: "issue_refund".into(),
            }],
            request_sha256: request_digest(b"{}"),
            content_type: "application/json".into(),
            body: r#"{"choices":[]}"#.into(),
            held_at: "2026-01-01T00:00:00Z".into(),
            decided_at: None,
            decided_by: None,
        }
    }

    fn decide(s: &MemoryStore, auth: Option<&str>, body: &str) -> AdminResponse {
        handle_decision(s, &ks(), "POST", auth, body.as_bytes(), 0)
    }

    #[test]
    fn pending_then_approved_then_released_once() {
        let s = MemoryStore::default();
        put(&s, &held("rev-1")).unwrap();
        let digest = request_digest(b"{}");
        let Release::Pending(body) = release(&s, "rev-1", &digest) else {
            panic!("expected pending");
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], "pending_approval");
        assert_eq!(v["review_id"], "rev-1");
        assert_eq!(v["tool_calls"][0]["name"], "issue_refund");
        assert_eq!(v["retry"]["header"], REVIEW_ID_HEADER);

        let r = decide(
            &s,
            Some("Bearer test"),
            r#"{"review_id":"rev-1","decision":"approve","by":"ana"}"#,
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.audit.event, "approval");
        assert_eq!(r.audit.outcome, "approved");
        assert_eq!(r.audit.rules[0].action, "hold");
        // Deciding twice is refused.
        let again = decide(
            &s,
            Some("Bearer test"),
            r#"{"review_id":"rev-1","decision":"reject"}"#,
        );
        assert_eq!(again.status, 409);

        // Another request cannot collect it.
        assert!(matches!(
            release(&s, "rev-1", &request_digest(b"{\"x\":1}")),
            Release::Refused { status: 409, .. }
        ));
        assert_eq!(
            release(&s, "rev-1", &digest),
            Release::Reply {
                content_type: "application/json".into(),
                body: br#"{"choices":[]}"#.to_vec()
            }
        );
        assert!(matches!(
            release(&s, "rev-1", &digest),
            Release::Refused { status: 410, .. }
        ));
    }

    #[test]
    fn rejected_unknown_and_unauthorised() {
        let s = MemoryStore::default();
        put(&s, &held("rev-2")).unwrap();
        assert_eq!(
            decide(&s, None, r#"{"review_id":"rev-2","decision":"approve"}"#).status,
            401
        );
        assert_eq!(
            decide(
                &s,
                Some("Bearer wrong"),
                r#"{"review_id":"rev-2","decision":"approve"}"#
            )
            .status,
            401
        );
        assert_eq!(decide(&s, Some("Bearer test"), "{nope").status, 400);
        assert_eq!(
            decide(
                &s,
                Some("Bearer test"),
                r#"{"review_id":"rev-2","decision":"maybe"}"#
            )
            .status,
            400
        );
        assert_eq!(
            decide(
                &s,
                Some("Bearer test"),
                r#"{"review_id":"nope","decision":"approve"}"#
            )
            .status,
            404
        );
        assert_eq!(
            handle_decision(&s, &ks(), "GET", Some("Bearer test"), b"{}", 0).status,
            405
        );
        // Still pending after the refused calls.
        assert!(matches!(
            release(&s, "rev-2", &request_digest(b"{}")),
            Release::Pending(_)
        ));
        let r = decide(
            &s,
            Some("Bearer test"),
            r#"{"review_id":"rev-2","decision":"reject"}"#,
        );
        assert_eq!(r.status, 200);
        assert!(matches!(
            release(&s, "rev-2", &request_digest(b"{}")),
            Release::Refused { status: 403, .. }
        ));
        assert!(matches!(
            release(&s, "unknown", "x"),
            Release::Refused { status: 404, .. }
        ));
        assert!(is_approvals_path("/writ/admin/approvals?x=1"));
        assert!(!is_approvals_path("/writ/admin/approvals/x"));
    }
}
