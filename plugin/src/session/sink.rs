//! The synchronous audit sink (`docs/audit.md`): with a sink configured, the end of an
//! answer (a local reply, or the last of a forwarded reply) is held until the sink has
//! stored the request's records; if it did not, the answer is withheld (fail closed).

use super::{Effect, Held, Level, Next, Session, Stage};
use crate::store::SharedStore;

impl Session {
    /// Seals the record and asks the adapter to post it to the audit sink, holding `held`
    /// until the sink answers. `None` without a sink (the adapter goes on as usual).
    pub fn hold_for_audit(&mut self, held: Held, store: &dyn SharedStore) -> Option<Vec<Effect>> {
        let target = self.config.audit_sink.clone()?;
        let mut effects = self.seal(store);
        effects.push(Effect::PostAuditSink {
            target,
            body: self.sealed_lines.join("\n").into_bytes(),
        });
        self.held = Some(held);
        Some(effects)
    }

    /// At the end of a forwarded reply (`next` would let it go), holds it for the audit
    /// sink. `None` when nothing is held (no sink, not the end, or not forwarded).
    pub fn hold_end_of_reply(
        &mut self,
        next: Next,
        end_of_stream: bool,
        store: &dyn SharedStore,
    ) -> Option<Vec<Effect>> {
        if !end_of_stream || next != Next::Continue || self.stage != Stage::Forwarded {
            return None;
        }
        self.hold_for_audit(Held::Reply, store)
    }

    /// The audit sink answered with `status` (`None`: no status could be read): a 2xx lets
    /// the held answer go; anything else withholds it.
    pub fn on_audit_sink_answer(&mut self, status: Option<u16>) -> Vec<Effect> {
        let stored = status.is_some_and(|s| (200..300).contains(&s));
        if !stored {
            self.log(
                Level::Error,
                "writ: the audit sink did not store the request's records; the answer is withheld"
                    .into(),
            );
        }
        self.release_held(stored);
        std::mem::take(&mut self.out)
    }

    /// The call to the audit sink could not even be made (`why` from the host): the held
    /// answer is withheld at once.
    pub fn on_audit_sink_unreachable(&mut self, why: &str) -> Vec<Effect> {
        let cluster = self
            .config
            .audit_sink
            .as_ref()
            .map(|t| t.cluster.clone())
            .unwrap_or_default();
        self.log(
            Level::Error,
            format!("writ: the audit sink `{cluster}` cannot be called ({why})"),
        );
        self.release_held(false);
        std::mem::take(&mut self.out)
    }

    /// Lets the held answer go once the sink stored the records; otherwise withholds it:
    /// a local reply becomes 503 `audit_unavailable`, a reply in flight is reset.
    fn release_held(&mut self, stored: bool) {
        let effect = match (self.held.take(), stored) {
            (
                Some(Held::Local {
                    status,
                    body,
                    headers,
                }),
                true,
            ) => Effect::LocalReply {
                status,
                body,
                headers,
                hold_for_audit: false,
            },
            (Some(Held::Local { .. }), false) => Effect::LocalReply {
                status: 503,
                body: crate::wire::error_body(
                    "The audit record could not be written; the request was not answered.",
                    "engine_error",
                    "audit_unavailable",
                ),
                headers: Vec::new(),
                hold_for_audit: false,
            },
            (Some(Held::Reply), true) => Effect::ResumeReply,
            (Some(Held::Reply), false) => Effect::ResetReply,
            (None, _) => return,
        };
        self.out.push(effect);
    }
}
