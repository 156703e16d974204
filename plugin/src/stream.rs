//! Reply rewriting: placeholders restored and leaked values redacted, in JSON replies and
//! in streamed (`text/event-stream`) replies cut into arbitrary chunks.
//!
//! A streamed reply delivers each piece of text (a choice's `delta.content`, a tool call's
//! `function.arguments`, a completion's `text`, a Responses API event's `delta`, an
//! Anthropic block's `delta.text`, or any other string field) as fragments spread over
//! many events, and the proxy sees those events cut into arbitrary byte chunks.
//! [`SseRestorer`] reassembles events, and per *stream key* — scope (choice, block or
//! output index), tool call or content index, and field (its JSON path) — runs a
//! [`TextStream`] that holds back only what is still undecided. Per-event metadata (ids,
//! `type`, `status`, `finish_reason`, …) is scanned whole in its event, and `data:`
//! payloads that are not JSON are one text stream of their own:
//!
//! - restoration holds the suffix that could still become a placeholder of this request
//!   (at most the longest placeholder, [`Vault::max_placeholder_len`]);
//! - response-side redaction holds the trailing text a detector match could still
//!   extend into (the trailing run without whitespace, plus a bounded window for
//!   detectors whose values contain spaces, see [`Hold`]), so no part of a leaked value
//!   is sent before the part that reveals it.
//!
//! Held text goes out with the next fragment of the same key, or, when the key ends
//! (`finish_reason`, a `….done` or `content_block_stop` event, `data: [DONE]`, end of
//! stream) with no fragment to carry it, in a small event of its own just before the
//! event that ends it: a chat chunk for the chat fields, otherwise a copy of the key's
//! last event with every other streamed string emptied. Every event is otherwise
//! passed through byte for byte, with only the changed JSON strings re-encoded.
//!
//! # Wiring in the filter
//!
//! - Request headers: when the policy may tokenise, redact or restore, set
//!   [`UPSTREAM_ACCEPT_ENCODING`] and remove [`LENGTH_HEADERS`] (the body is rewritten
//!   after the headers are forwarded, so its length is unknown then).
//! - Request body (end of stream): `let mut vault = Vault::new(tokenise::nonce(request_id,
//!   now_nanos, per_vm_counter));` then [`tokenise::rewrite_request`]; on `Err` answer 400,
//!   on `Some(body)` replace the whole buffered body. Keep `vault` in the HTTP context.
//! - Response headers: `let rr = ReplyRewriter::new(content_type, content_encoding,
//!   &ctx)`; if [`ReplyRewriter::strip_length`], remove [`LENGTH_HEADERS`].
//! - Response body: `rr.on_body(bytes, end_of_stream, &ctx)` and do what the
//!   [`BodyAction`] says. Underneath: `EventStream` → an [`SseRestorer`] fed every chunk;
//!   `Json` → buffered to the end, then [`rewrite_reply_json`]; `Encoded` → fail closed
//!   when response redaction is in force, else pass through (placeholders reveal
//!   nothing).
//!
//! The invariant the tests check: for every way of cutting the reply, the text the client
//! reassembles per key equals the text it would get from the whole reply at once, with
//! the original values in place of the placeholders.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use crate::detect;
use crate::ir;
use crate::json_strings::{self, JsonError, Leaf, Path, Seg, Slot};
use crate::tokenise::{self, Find, Match, Vault};

/// How far back response redaction must hold text for a set of detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hold {
    /// Bytes a match (plus the scanner's look-ahead) can span across whitespace; 0 when
    /// every wanted detector matches only runs without whitespace.
    pub span: usize,
    /// Hold an unfinished `-----BEGIN … PRIVATE KEY-----` block until its end line.
    pub pem: bool,
    /// Hold an unfinished service-account key file until its private key
    /// ([`detect::unfinished_block`]).
    pub block: bool,
    /// Bytes before a value that decide whether it matches (context keywords such as
    /// `NHS`, `password=` keys): this much already-emitted text is kept and scanned again
    /// in front of the held text, so a cut between keyword and value changes nothing.
    pub context: usize,
}

/// Text held by one stream key beyond this is released even if undecided, so a reply
/// without whitespace (or an unterminated key block) can never make the filter buffer the
/// whole stream. Whole-vs-chunked equality holds for values shorter than this.
pub const HOLD_CAP: usize = 8 * 1024;

/// Span across whitespace assumed for a custom detector: its DFA may match anything.
const CUSTOM_SPAN: usize = 256;

impl Hold {
    /// The hold needed for detector `d`. Built-ins whose values never contain whitespace
    /// (e-mail, IP addresses, tokens, keys, JWTs) need none beyond the trailing word;
    /// numbers written with spaces (cards, IBANs, phones, SSNs) need their longest
    /// spelling plus the scanner's look-ahead (the bounds of `detect`'s `max_len` plus 2,
    /// rounded up), times [`detect::EXPANSION`] for their disguised spellings (fullwidth
    /// digits, `%XX`); key blocks are held to their end line. Custom patterns get a fixed
    /// 256 bytes: the IR does not yet carry a pattern's maximum length.
    pub fn of(d: &ir::Detector) -> Hold {
        let fixed = |span: usize| Hold {
            span,
            ..Hold::default()
        };
        match &d.kind {
            ir::DetectorKind::Builtin(name) => match name.as_str() {
                "email" | "ipv4" | "ipv6" | "aws_access_key" | "github_token" | "slack_token"
                | "openai_key" | "jwt" => Hold::default(),
                "credit_card" => fixed(48 * detect::EXPANSION),
                "us_ssn" | "us_itin" => fixed(24 * detect::EXPANSION),
                "phone" => fixed(56 * detect::EXPANSION),
                "iban" => fixed(64 * detect::EXPANSION),
                "private_key" => Hold {
                    span: 88,
                    pem: true,
                    ..Hold::default()
                },
                // The other built-ins: from the scanner's own bounds.
                other => match detect::stream_hold(other) {
                    Some(h) => Hold {
                        span: h.span,
                        pem: false,
                        block: h.block,
                        context: h.context,
                    },
                    None => fixed(CUSTOM_SPAN),
                },
            },
            ir::DetectorKind::Custom(_) => fixed(CUSTOM_SPAN),
        }
    }

    /// The hold for a set of detectors: the widest of each.
    pub fn union(self, other: Hold) -> Hold {
        Hold {
            span: self.span.max(other.span),
            pem: self.pem || other.pem,
            block: self.block || other.block,
            context: self.context.max(other.context),
        }
    }
}

/// Response-side redaction settings: which detectors' values to mask in replies.
#[derive(Clone, Copy)]
pub struct Redact<'a> {
    pub finder: &'a dyn Find,
    pub wanted: &'a [u16],
    pub hold: Hold,
}

impl<'a> Redact<'a> {
    /// Redaction of the `wanted` detectors (indices into `detectors`, the policy's list).
    pub fn new(finder: &'a dyn Find, wanted: &'a [u16], detectors: &[ir::Detector]) -> Self {
        let hold = wanted
            .iter()
            .filter_map(|&i| detectors.get(usize::from(i)))
            .map(Hold::of)
            .fold(Hold::default(), Hold::union);
        Redact {
            finder,
            wanted,
            hold,
        }
    }
}

/// Everything a reply rewrite needs from its request: the request's vault and, if the
/// policy redacts responses, what to redact.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    pub vault: &'a Vault,
    pub redact: Option<Redact<'a>>,
}

impl Ctx<'_> {
    /// True when replies need no rewriting at all, so the filter can pass them through.
    pub fn is_noop(&self) -> bool {
        self.vault.is_empty() && self.redact.is_none_or(|r| r.wanted.is_empty())
    }
}

/// Response-side redaction counts per detector, for the audit record (never values).
pub type Redacted = BTreeMap<u16, u32>;

/// The incremental rewrite of one piece of streamed text.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    /// Input not yet restored: a possible placeholder prefix.
    restore_held: String,
    /// Restored text not yet emitted: a possible partial detector match.
    redact_held: String,
    /// The tail of the emitted text ([`Hold::context`] bytes), scanned again in front of
    /// `redact_held` and never re-emitted.
    redact_ctx: String,
    scratch: Vec<Match>,
    /// The text is JSON (tool-call arguments): restored values and masks are escaped for
    /// it, and no replacement or cut splits one of its escapes ([`crate::json_text`]).
    json: bool,
}

impl TextStream {
    /// A stream of JSON text (tool-call arguments), see [`crate::json_text`].
    pub fn json_text(json: bool) -> TextStream {
        TextStream {
            json,
            ..TextStream::default()
        }
    }

    /// Feeds the next fragment and appends to `out` whatever is now decided. With
    /// `at_end`, everything held is released.
    pub fn push(
        &mut self,
        fragment: &str,
        ctx: &Ctx<'_>,
        at_end: bool,
        out: &mut String,
        redacted: &mut Redacted,
    ) {
        let input: Cow<'_, str> = if self.restore_held.is_empty() {
            Cow::Borrowed(fragment)
        } else {
            let mut s = std::mem::take(&mut self.restore_held);
            s.push_str(fragment);
            Cow::Owned(s)
        };
        // Room for about the restored text at once (a placeholder and its value differ by
        // a few bytes), instead of a buffer that doubles push after push.
        let mut restored = String::new();
        let target = if ctx.redact.is_some() {
            &mut restored
        } else {
            &mut *out
        };
        target.reserve(input.len());
        let used = if self.json {
            ctx.vault
                .restore_into_with(&input, target, at_end, &crate::json_text::escape_into)
        } else {
            ctx.vault.restore_into(&input, target, at_end)
        };
        self.restore_held = input.get(used..).unwrap_or_default().to_string();
        let Some(r) = ctx.redact else { return };
        if self.redact_held.is_empty() {
            self.redact_held = restored;
        } else {
            self.redact_held.push_str(&restored);
        }
        self.redact_step(&r, ctx.vault, at_end, out, redacted);
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.restore_held.is_empty() && self.redact_held.is_empty()
    }

    fn redact_step(
        &mut self,
        r: &Redact<'_>,
        vault: &Vault,
        at_end: bool,
        out: &mut String,
        redacted: &mut Redacted,
    ) {
        // Matches only ever move the cut back, so when the cut is 0 even without them
        // (no whitespace far enough from the end yet: held text shorter than the hold
        // span, or a word still growing) nothing can be released and the scan would be
        // thrown away: skip it. Without a context to keep (`hold.context == 0`) the state
        // after the skipped step is the same as after the scan. Streamed text arrives a
        // few bytes per event, so this spares a scan of the whole held text per event.
        if !at_end
            && r.hold.context == 0
            && safe_cut(
                &self.redact_held,
                &[],
                Hold {
                    pem: false,
                    ..r.hold
                },
            ) == 0
        {
            return;
        }
        // Scan the kept context and the held text together; matches starting in the
        // context were decided (and emitted) before.
        let skip = self.redact_ctx.len();
        let mut joined = std::mem::take(&mut self.redact_ctx);
        joined.push_str(&self.redact_held);
        let hits = &mut self.scratch;
        hits.clear();
        r.finder.find(&joined, r.wanted, hits);
        hits.retain(|h| h.start >= skip);
        for h in hits.iter_mut() {
            h.start -= skip;
            h.end -= skip;
        }
        let text = &self.redact_held;
        if self.json {
            crate::json_text::widen_matches(text, hits);
        }
        let cut = if at_end {
            text.len()
        } else if self.json {
            crate::json_text::boundary_before(text, safe_cut(text, hits, r.hold))
        } else {
            safe_cut(text, hits, r.hold)
        };
        let mut at = 0usize;
        for h in hits.iter().filter(|h| h.end <= cut) {
            let (Some(keep), Some(value)) = (text.get(at..h.start), text.get(h.start..h.end))
            else {
                continue;
            };
            out.push_str(keep);
            let plain = if self.json {
                crate::json_text::decode(value)
            } else {
                Cow::Borrowed(value)
            };
            if vault.contains_value(&plain) {
                out.push_str(value);
            } else {
                let mask = tokenise::mask(r.finder.name(h.detector).unwrap_or("value"));
                if self.json {
                    crate::json_text::escape_into(&mask, out);
                } else {
                    out.push_str(&mask);
                }
                *redacted.entry(h.detector).or_default() += 1;
            }
            at = h.end;
        }
        out.push_str(text.get(at..cut).unwrap_or_default());
        if r.hold.context > 0 {
            // The new context: the last `context` bytes of what was emitted (original
            // text, so the scanner sees what the whole stream would have shown it).
            let emitted = joined.get(..skip + cut).unwrap_or_default();
            let mut from = emitted.len().saturating_sub(r.hold.context);
            // Start after whitespace (up to 64 bytes further back) so the scanner
            // restarts at a token start, as it passes there in the whole text.
            let ws = emitted
                .as_bytes()
                .get(from.saturating_sub(64)..from)
                .and_then(|w| w.iter().rposition(u8::is_ascii_whitespace));
            if let Some(k) = ws {
                from = from.saturating_sub(64) + k + 1;
            }
            while from > 0 && !emitted.is_char_boundary(from) {
                from -= 1;
            }
            self.redact_ctx = emitted.get(from..).unwrap_or_default().to_string();
        }
        self.redact_held.drain(..cut);
    }
}

/// The longest prefix of `text` whose redaction cannot change whatever follows: it ends
/// right after an ASCII whitespace byte (no value without whitespace can extend across
/// it, and a scanner restarting there sees a token start, as it would in the whole text),
/// at least `hold.span` bytes before the end (values with spaces and the scanner's
/// look-ahead fit in the rest), before an unfinished private-key block, and not inside a
/// match. Past [`HOLD_CAP`] the whitespace and key-block conditions are dropped.
fn safe_cut(text: &str, hits: &[Match], hold: Hold) -> usize {
    let b = text.as_bytes();
    let n = b.len();
    let mut limit = n.saturating_sub(hold.span);
    let capped = n > HOLD_CAP;
    if hold.pem
        && !capped
        && let Some(p) = unfinished_key_block(text)
        && !hits.iter().any(|h| h.start <= p && p < h.end)
    {
        limit = limit.min(p);
    }
    if hold.block
        && !capped
        && let Some(p) = detect::unfinished_block(text)
    {
        limit = limit.min(p);
    }
    let allowed = |c: usize| {
        b.get(c.wrapping_sub(1))
            .is_some_and(u8::is_ascii_whitespace)
            || (capped && text.is_char_boundary(c))
    };
    // Linear: `c` only moves down, to an allowed position or to a match's start.
    let mut c = limit;
    loop {
        while c > 0 && !allowed(c) {
            c -= 1;
        }
        if c == 0 {
            return 0;
        }
        match hits.iter().rev().find(|h| h.start < c && c < h.end) {
            Some(h) => c = h.start,
            None => return c,
        }
    }
}

/// Start of the last `-----BEGIN` whose header is unfinished or names a private key.
fn unfinished_key_block(text: &str) -> Option<usize> {
    let p = text.rfind("-----BEGIN")?;
    let rest = text.get(p + 10..).unwrap_or_default();
    match rest.find("-----") {
        None => Some(p),
        Some(e) if rest.get(..e).is_some_and(|h| h.contains("PRIVATE KEY")) => Some(p),
        Some(_) => None,
    }
}

/// Rewrites one whole string (restore, then redact): for JSON replies and for strings of
/// streamed events that are not streamed text. `None` when unchanged.
pub fn rewrite_text(text: &str, ctx: &Ctx<'_>, redacted: &mut Redacted) -> Option<String> {
    rewrite_text_as(text, false, ctx, redacted)
}

/// [`rewrite_text`] of a string that is JSON text when `json` (tool-call arguments).
pub fn rewrite_text_as(
    text: &str,
    json: bool,
    ctx: &Ctx<'_>,
    redacted: &mut Redacted,
) -> Option<String> {
    // Most strings of a reply (its keys, ids, roles, finish reasons) hold no placeholder
    // and nothing to redact. One scan shows that, without the stream's buffers: a JSON
    // reply has a dozen such strings, and streaming each cost more than its scan.
    if !ctx.vault.may_contain_placeholder(text) {
        let r = ctx.redact?;
        let mut hits = Vec::new();
        r.finder.find(text, r.wanted, &mut hits);
        if hits.is_empty() {
            return None;
        }
    }
    rewrite_text_streamed(text, json, ctx, redacted)
}

/// [`rewrite_text_as`] through a [`TextStream`], with the whole text as its one fragment.
fn rewrite_text_streamed(
    text: &str,
    json: bool,
    ctx: &Ctx<'_>,
    redacted: &mut Redacted,
) -> Option<String> {
    let mut ts = TextStream::json_text(json);
    let mut out = String::with_capacity(text.len());
    ts.push(text, ctx, true, &mut out, redacted);
    (out != text).then_some(out)
}

/// The result of rewriting a whole JSON reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyRewrite {
    /// The new body, or `None` to forward the original.
    pub body: Option<Vec<u8>>,
    pub redacted: Redacted,
}

/// Restores placeholders in (and redacts) every string and object key of a non-streamed
/// JSON reply, except protocol fields ([`tokenise::is_structural`]). A reply that is not valid JSON
/// is an error: the filter must not forward it unrestored when it has to redact.
pub fn rewrite_reply_json(body: &[u8], ctx: &Ctx<'_>) -> Result<ReplyRewrite, JsonError> {
    let mut redacted = Redacted::new();
    if ctx.is_noop() {
        return Ok(ReplyRewrite::default());
    }
    let body = json_strings::rewrite_strings_and_keys(body, |path, s, slot| {
        if slot == Slot::Value && tokenise::is_structural(path) {
            None
        } else {
            let json = slot == Slot::Value
                && path
                    .last_key()
                    .is_some_and(crate::json_text::is_json_text_field);
            rewrite_text_as(s, json, ctx, &mut redacted)
        }
    })?;
    Ok(ReplyRewrite { body, redacted })
}

/// Which streamed field a string is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    /// `delta.<name>` for `content`, `reasoning_content`, `reasoning`, `refusal`.
    Delta(&'static str),
    /// `delta.tool_calls[j].function.arguments`.
    ToolArguments,
    /// `delta.function_call.arguments` (the legacy single function call).
    FunctionArguments,
    /// `text` (legacy completions).
    Text,
    /// The top-level `delta` of a Responses API event (`response.output_text.delta`,
    /// `response.function_call_arguments.delta`, …), keyed by output and content index.
    Event,
    /// Any other string field of an event, by its path below the key's scope (interned
    /// in [`SseRestorer::paths`]): `choice` when the scope is a `choices[i]` element,
    /// else the event's top-level `index` / `output_index`. An upstream may stream text
    /// in fields no one has listed (`delta.audio.transcript`, Anthropic's `delta.text`,
    /// a gateway's own), so every field is reassembled across events by its path.
    Other { choice: bool, path: u32 },
    /// The text of `data:` payloads that are not JSON.
    Raw,
}

impl Field {
    /// True for fields scoped by a choice (a `finish_reason` ends them).
    fn in_choice(self) -> bool {
        match self {
            Field::Delta(_) | Field::ToolArguments | Field::FunctionArguments | Field::Text => true,
            Field::Other { choice, .. } => choice,
            Field::Event | Field::Raw => false,
        }
    }

    /// True for fields whose added events copy the last event that carried them.
    fn templated(self) -> bool {
        matches!(self, Field::Event | Field::Other { .. })
    }
}

/// One piece of streamed text: scope (choice or output index), sub-scope (tool call or
/// content index), field.
type Key = (u64, Option<u64>, Field);

/// The scope of the text of non-JSON `data:` payloads.
const RAW_KEY: Key = (u64::MAX, None, Field::Raw);

const DELTA_TEXT: &[&str] = &["content", "reasoning_content", "reasoning", "refusal"];
/// Top-level fields copied into events the restorer adds, so they look like their
/// neighbours to a client.
const TOP_FIELDS: &[&str] = &["id", "object", "created", "model", "system_fingerprint"];
/// String fields that describe an event rather than stream text: each is scanned whole
/// in its own event, never held back (holding part of an id or a status would corrupt
/// it). Keys ending in `_id` count too.
const METADATA_KEYS: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "system_fingerprint",
    "type",
    "event",
    "finish_reason",
    "stop_reason",
    "stop_sequence",
    "service_tier",
    "obfuscation",
    "status",
    "role",
    "name",
    "index",
];
/// Distinct field paths one reply may stream in; strings of further paths are scanned
/// whole, event by event, so a hostile upstream cannot grow the restorer without bound.
const MAX_PATHS: usize = 256;

/// True for a string that is per-event metadata (see [`METADATA_KEYS`]).
fn is_metadata(path: &Path<'_>) -> bool {
    path.last_key()
        .is_some_and(|k| METADATA_KEYS.contains(&k) || k.ends_with("_id"))
}

/// Classifies a string below `choices[a]` as streamed text: (field, tool call position).
fn streamed(path: &Path<'_>) -> Option<(Field, Option<usize>)> {
    if path.key(0) != Some("choices") || path.index(1).is_none() {
        return None;
    }
    let segs = path.segs().get(2..)?;
    let k = |i: usize| match segs.get(i) {
        Some(Seg::Key(k)) => Some(k.as_ref()),
        _ => None,
    };
    match segs.len() {
        1 if k(0) == Some("text") => Some((Field::Text, None)),
        2 if k(0) == Some("delta") => {
            let name = DELTA_TEXT.iter().find(|n| Some(**n) == k(1))?;
            Some((Field::Delta(name), None))
        }
        3 if k(0) == Some("delta")
            && k(1) == Some("function_call")
            && k(2) == Some("arguments") =>
        {
            Some((Field::FunctionArguments, None))
        }
        5 if k(0) == Some("delta")
            && k(1) == Some("tool_calls")
            && k(3) == Some("function")
            && k(4) == Some("arguments") =>
        {
            match segs.get(2) {
                Some(Seg::Index(j)) => Some((Field::ToolArguments, Some(*j))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Where a string of another field streams to: (choice position, tool call position,
/// the path below them written out, e.g. `delta.audio.transcript`).
fn other_path(path: &Path<'_>) -> (Option<usize>, Option<usize>, String) {
    let segs = path.segs();
    let (choice, tool, rest) = match (path.key(0), path.index(1)) {
        (Some("choices"), Some(a)) => match (path.key(2), path.key(3), path.index(4)) {
            (Some("delta"), Some("tool_calls"), Some(b)) => {
                (Some(a), Some(b), segs.get(5..).unwrap_or_default())
            }
            _ => (Some(a), None, segs.get(2..).unwrap_or_default()),
        },
        _ => (None, None, segs),
    };
    let mut s = String::new();
    for seg in rest {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => {
                s.push('[');
                s.push_str(&i.to_string());
                s.push(']');
            }
        }
    }
    (choice, tool, s)
}

/// Where a string of an event streams to.
#[derive(Debug, Clone)]
enum Streamed {
    /// Below `choices[a]`: (choice position, field, tool call position).
    Choice(usize, Field, Option<usize>),
    /// A Responses API event's top-level `delta`.
    TopDelta,
    /// Any other field (see [`other_path`]).
    Other(Option<usize>, Option<usize>, String),
}

/// Whether a string of an event is tool-call arguments, JSON text ([`crate::json_text`]):
/// chat `function.arguments` (streamed or whole), the `delta` of a Responses arguments
/// event, and any other field named `arguments` or `partial_json` (Anthropic's
/// `input_json_delta`, Responses items and `….done` events).
fn is_json_text(kind: Option<&Streamed>, event_type: &str) -> bool {
    match kind {
        Some(Streamed::Choice(_, field, _)) => {
            matches!(field, Field::ToolArguments | Field::FunctionArguments)
        }
        Some(Streamed::TopDelta) => crate::json_text::is_arguments_event(event_type),
        Some(Streamed::Other(_, _, path)) => {
            crate::json_text::is_json_text_field(path.rsplit('.').next().unwrap_or_default())
        }
        None => false,
    }
}

/// A string of an event: its span, its text, and where it streams to, if anywhere.
type EventString = (Range<usize>, String, Option<Streamed>);

/// What one event's JSON payload holds that the restorer needs.
#[derive(Default)]
struct Scan {
    /// Every string value and object key that may change, in document order.
    strings: Vec<EventString>,
    /// `choices[a].index` by position a.
    choice_index: Vec<(usize, u64)>,
    /// `choices[a].delta.tool_calls[b].index`.
    tool_index: Vec<(usize, usize, u64)>,
    /// Positions a whose `finish_reason` is set.
    finished: Vec<usize>,
    /// The spans of the event's [`TOP_FIELDS`].
    top: Vec<(&'static str, Range<usize>)>,
    /// The event's `type` (Responses API, Anthropic), top-level `index` (Anthropic's
    /// content block), `output_index` and `content_index` (or `summary_index`).
    event_type: Option<String>,
    index: Option<u64>,
    output_index: Option<u64>,
    content_index: Option<u64>,
}

/// The shape of the event added when a templated key's held text is released: the last
/// event that carried the key (raw bytes, for its other lines) and its payload with
/// every streamed string emptied and every other string as it was sent, with the span
/// of the key's string in it.
#[derive(Debug)]
struct Template {
    raw: Vec<u8>,
    payload: Vec<u8>,
    span: Range<usize>,
}

/// Restores placeholders (and redacts leaked values) in a `text/event-stream` reply fed
/// in arbitrary byte chunks. One per response; see the module docs for what it holds.
#[derive(Debug, Default)]
pub struct SseRestorer {
    /// Bytes of the event being received.
    event: Vec<u8>,
    /// Bytes in the current line so far (0 at a line start).
    line_len: usize,
    /// The last byte was `\r`: a following `\n` completes the same line break.
    prev_cr: bool,
    streams: BTreeMap<Key, TextStream>,
    /// The latest values of [`TOP_FIELDS`], raw JSON.
    top: Vec<(&'static str, Vec<u8>)>,
    /// The upstream's latest line break (`\n`, `\r\n` or `\r`; empty before the
    /// first), used for the events the restorer adds.
    eol: &'static [u8],
    redacted: Redacted,
    /// Templated keys' last event (see [`Template`]), the shape of the event added when
    /// their held text is released.
    templates: BTreeMap<Key, Template>,
    /// Interned paths of [`Field::Other`] keys (at most [`MAX_PATHS`]).
    paths: BTreeMap<String, u32>,
    /// Strings scanned whole (object keys, `object`, …) that came out unchanged, at most
    /// [`KNOWN_ENTRIES`] of at most [`KNOWN_BYTES`] each: see [`SseRestorer::rewrite_whole`].
    unchanged: Vec<Box<str>>,
    /// Events passed through unchanged / rewritten / added (for metrics and benches).
    pub stats: SseStats,
}

/// Most strings [`SseRestorer::rewrite_whole`] remembers as unchanged, and the longest.
const KNOWN_ENTRIES: usize = 32;
const KNOWN_BYTES: usize = 64;

/// Counters of what the restorer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SseStats {
    pub passed: u64,
    pub rewritten: u64,
    pub added: u64,
}

impl SseRestorer {
    pub fn new() -> SseRestorer {
        SseRestorer::default()
    }

    /// The line break for added events: the upstream's own, `\n` before any.
    fn line_break(&self) -> &'static [u8] {
        if self.eol.is_empty() { b"\n" } else { self.eol }
    }

    /// Response-side redaction counts so far, for the audit record.
    pub fn redacted(&self) -> &Redacted {
        &self.redacted
    }

    /// Feeds the next chunk of the reply body; appends to `out` the bytes to send now.
    pub fn push(&mut self, chunk: &[u8], ctx: &Ctx<'_>, out: &mut Vec<u8>) {
        let mut from = 0usize;
        let mut i = 0usize;
        while let Some(&c) = chunk.get(i) {
            if !self.prev_cr && c != b'\r' && c != b'\n' {
                // Inside a line: skip to its end at once.
                let rest = chunk.get(i..).unwrap_or_default();
                let run = rest
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .unwrap_or(rest.len());
                self.line_len += run;
                i += run;
                continue;
            }
            i += 1;
            if self.prev_cr && c == b'\n' {
                self.prev_cr = false;
                self.eol = b"\r\n";
                // The `\n` of a `\r\n` whose `\r` ended an event belongs to that event.
                if self.event.is_empty() && from == i - 1 {
                    out.push(b'\n');
                    from = i;
                }
                continue;
            }
            if self.prev_cr {
                self.eol = b"\r";
            } else if c == b'\n' {
                self.eol = b"\n";
            }
            self.prev_cr = false;
            if c == b'\r' || c == b'\n' {
                self.prev_cr = c == b'\r';
                if self.line_len == 0 {
                    self.event
                        .extend_from_slice(chunk.get(from..i).unwrap_or_default());
                    from = i;
                    let ev = std::mem::take(&mut self.event);
                    self.dispatch(&ev, ctx, out);
                    self.event = ev;
                    self.event.clear();
                }
                self.line_len = 0;
            } else {
                self.line_len += 1;
            }
        }
        self.event
            .extend_from_slice(chunk.get(from..).unwrap_or_default());
    }

    /// Ends the reply: an unterminated last event is completed and processed, and all held
    /// text is released (in added events, before the end).
    pub fn finish(&mut self, ctx: &Ctx<'_>, out: &mut Vec<u8>) {
        if !self.event.is_empty() {
            let mut ev = std::mem::take(&mut self.event);
            let eol = self.line_break();
            if self.line_len > 0 {
                ev.extend_from_slice(eol);
            }
            ev.extend_from_slice(eol);
            self.dispatch(&ev, ctx, out);
        }
        self.line_len = 0;
        self.flush(|_| true, ctx, out);
    }

    /// Processes one complete event (its bytes, blank line included).
    fn dispatch(&mut self, raw: &[u8], ctx: &Ctx<'_>, out: &mut Vec<u8>) {
        let lines = split_lines(raw);
        let data: Vec<Range<usize>> = lines.iter().filter_map(|l| data_value(raw, l)).collect();
        if data.is_empty() || ctx.is_noop() {
            self.stats.passed += 1;
            out.extend_from_slice(raw);
            return;
        }
        let payload: Cow<'_, [u8]> = match data.as_slice() {
            [one] => Cow::Borrowed(raw.get(one.clone()).unwrap_or_default()),
            many => Cow::Owned(
                many.iter()
                    .map(|r| raw.get(r.clone()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(&b'\n'),
            ),
        };
        if payload.trim_ascii() == b"[DONE]" {
            self.flush(|_| true, ctx, out);
            self.stats.passed += 1;
            out.extend_from_slice(raw);
            return;
        }
        let Some(new) = self.rewrite_payload(&payload, raw, ctx, out) else {
            self.stats.passed += 1;
            out.extend_from_slice(raw);
            return;
        };
        self.stats.rewritten += 1;
        if let [one] = data.as_slice()
            && !new.contains(&b'\n')
        {
            out.extend_from_slice(raw.get(..one.start).unwrap_or_default());
            out.extend_from_slice(&new);
            out.extend_from_slice(raw.get(one.end..).unwrap_or_default());
            return;
        }
        write_event(raw, &lines, &new, None, out);
    }

    /// Rewrites one payload; added events for keys that end here go to `out` first.
    /// `None` when the payload is unchanged. A payload that is not JSON is text.
    fn rewrite_payload(
        &mut self,
        payload: &[u8],
        raw: &[u8],
        ctx: &Ctx<'_>,
        out: &mut Vec<u8>,
    ) -> Option<Vec<u8>> {
        // Only an object or an array is an event's JSON; anything else (`data: 4053`,
        // plain words) is text, scanned across events like a field.
        let json = matches!(payload.trim_ascii_start().first(), Some(b'{' | b'['));
        let scan = json
            .then(|| scan_payload(payload, ctx, &self.unchanged).ok())
            .flatten();
        let Some(scan) = scan else {
            let text = String::from_utf8_lossy(payload);
            let mut o = String::with_capacity(text.len());
            let ts = self.streams.entry(RAW_KEY).or_default();
            ts.push(&text, ctx, false, &mut o, &mut self.redacted);
            return (o.as_bytes() != payload).then(|| o.into_bytes());
        };
        let choice = |a: usize| {
            scan.choice_index
                .iter()
                .find(|(p, _)| *p == a)
                .map_or(a as u64, |(_, v)| *v)
        };
        let tool = |a: usize, b: usize| {
            scan.tool_index
                .iter()
                .find(|(p, q, _)| *p == a && *q == b)
                .map_or(b as u64, |(_, _, v)| *v)
        };
        let finished: Vec<u64> = scan.finished.iter().map(|&a| choice(a)).collect();
        let ty = scan.event_type.as_deref().unwrap_or_default();
        // Untyped events (chat chunks, custom upstreams) and typed delta events stream
        // their fields; other typed events (`….done`, `message_start`, …) carry whole
        // values.
        let streams_fields = scan.event_type.is_none() || ty.ends_with("delta");
        let event_key: Key = (
            scan.output_index.unwrap_or(0),
            Some(scan.content_index.unwrap_or(0)),
            Field::Event,
        );
        let top_scope = scan.index.or(scan.output_index).unwrap_or(0);
        let top_sub = scan.content_index;
        // (string position, new text) for every string that changed, and the positions
        // that are streamed, for templates.
        let mut edits: Vec<(usize, String)> = Vec::new();
        let mut streamed_at: Vec<usize> = Vec::new();
        let mut held: Vec<(Key, usize)> = Vec::new();
        for (i, (_, text, kind)) in scan.strings.iter().enumerate() {
            let json = is_json_text(kind.as_ref(), ty);
            let (key, end) = match kind {
                Some(Streamed::Choice(a, field, b)) => {
                    let c = choice(*a);
                    ((c, b.map(|b| tool(*a, b)), *field), finished.contains(&c))
                }
                Some(Streamed::TopDelta) if ty.ends_with(".delta") => (event_key, false),
                Some(Streamed::Other(a, b, path)) if streams_fields => {
                    match (self.intern(path), a) {
                        (Some(id), Some(a)) => {
                            let c = choice(*a);
                            let field = Field::Other {
                                choice: true,
                                path: id,
                            };
                            ((c, b.map(|b| tool(*a, b)), field), finished.contains(&c))
                        }
                        (Some(id), None) => {
                            let field = Field::Other {
                                choice: false,
                                path: id,
                            };
                            ((top_scope, top_sub, field), false)
                        }
                        (None, _) => {
                            if let Some(n) = self.rewrite_whole(text, json, ctx) {
                                edits.push((i, n));
                            }
                            continue;
                        }
                    }
                }
                _ => {
                    if let Some(n) = self.rewrite_whole(text, json, ctx) {
                        edits.push((i, n));
                    }
                    continue;
                }
            };
            streamed_at.push(i);
            let ts = self
                .streams
                .entry(key)
                .or_insert_with(|| TextStream::json_text(json));
            let mut o = String::with_capacity(text.len() + 16);
            ts.push(text, ctx, end, &mut o, &mut self.redacted);
            if end {
                self.streams.remove(&key);
            } else if key.2.templated() && !ts.is_empty() {
                held.push((key, i));
            }
            if o != *text {
                edits.push((i, o));
            }
        }
        if !held.is_empty() {
            self.keep_templates(payload, raw, &scan.strings, &edits, &streamed_at, &held);
        }
        // The events this restorer adds repeat the latest top-level fields: as the client
        // saw them (restored, redacted), never as the upstream sent them.
        for (name, span) in &scan.top {
            let edited = scan
                .strings
                .iter()
                .position(|(s, _, _)| s == span)
                .and_then(|i| edits.iter().find(|(j, _)| *j == i));
            let value = match edited {
                Some((_, text)) => {
                    let mut v = Vec::with_capacity(text.len() + 2);
                    json_strings::push_json_string(&mut v, text);
                    v
                }
                None => payload.get(span.clone()).unwrap_or_default().to_vec(),
            };
            match self.top.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value,
                None => self.top.push((name, value)),
            }
        }
        for c in finished {
            self.flush(|k| k.0 == c && k.2.in_choice(), ctx, out);
        }
        let top_level = |k: &Key| !k.2.in_choice() && k.2 != Field::Raw;
        if ty.ends_with(".done") {
            self.flush(
                |k| *k == event_key || (top_level(k) && k.0 == top_scope && k.1 == top_sub),
                ctx,
                out,
            );
        } else if ty == "content_block_stop" {
            self.flush(|k| top_level(k) && k.0 == top_scope, ctx, out);
        } else if matches!(
            ty,
            "response.completed"
                | "response.failed"
                | "response.incomplete"
                | "error"
                | "message_stop"
        ) {
            self.flush(|_| true, ctx, out);
        }
        let edits: Vec<(Range<usize>, String)> = edits
            .into_iter()
            .filter_map(|(i, s)| Some((scan.strings.get(i)?.0.clone(), s)))
            .collect();
        (!edits.is_empty()).then(|| json_strings::splice(payload, &edits))
    }

    /// [`rewrite_text_as`] of a string scanned whole in its event, remembering the short
    /// ones that come out unchanged. A stream repeats its object keys and metadata
    /// (`"object":"chat.completion.chunk"`, `"choices"`, `"delta"`, …) in every event, and
    /// the answer depends only on the text and `json` (the vault and the detectors are
    /// fixed for the reply; an unchanged string counts no redaction), so a repeat is not
    /// restored and scanned again. Only non-JSON strings are remembered, so
    /// [`scan_payload`] can leave them out before copying them.
    fn rewrite_whole(&mut self, text: &str, json: bool, ctx: &Ctx<'_>) -> Option<String> {
        if !json && is_known(&self.unchanged, text) {
            return None;
        }
        let new = rewrite_text_as(text, json, ctx, &mut self.redacted);
        if new.is_none()
            && !json
            && text.len() <= KNOWN_BYTES
            && self.unchanged.len() < KNOWN_ENTRIES
        {
            self.unchanged.push(text.into());
        }
        new
    }

    /// The interned id of a [`Field::Other`] path, `None` past [`MAX_PATHS`].
    fn intern(&mut self, path: &str) -> Option<u32> {
        if let Some(id) = self.paths.get(path) {
            return Some(*id);
        }
        let id = u32::try_from(self.paths.len()).ok()?;
        if self.paths.len() >= MAX_PATHS {
            return None;
        }
        self.paths.insert(path.to_string(), id);
        Some(id)
    }

    /// Records this event as the template of each key in `held` (whose text is held
    /// back): its payload with every streamed string emptied and every other string as
    /// sent, so an added event repeats nothing and reveals nothing.
    fn keep_templates(
        &mut self,
        payload: &[u8],
        raw: &[u8],
        strings: &[EventString],
        edits: &[(usize, String)],
        streamed_at: &[usize],
        held: &[(Key, usize)],
    ) {
        let mut shaped: Vec<(usize, &str)> = streamed_at.iter().map(|&i| (i, "")).collect();
        shaped.extend(
            edits
                .iter()
                .filter(|(i, _)| !streamed_at.contains(i))
                .map(|(i, s)| (*i, s.as_str())),
        );
        shaped.sort_unstable_by_key(|(i, _)| *i);
        let spans: Vec<(Range<usize>, &str)> = shaped
            .iter()
            .filter_map(|(i, s)| Some((strings.get(*i)?.0.clone(), *s)))
            .collect();
        let (tpl, at) = json_strings::splice_tracked(payload, &spans);
        for (key, i) in held {
            let Some(p) = shaped.iter().position(|(j, _)| j == i) else {
                continue;
            };
            let Some(span) = at.get(p) else { continue };
            self.templates.insert(
                *key,
                Template {
                    raw: raw.to_vec(),
                    payload: tpl.clone(),
                    span: span.clone(),
                },
            );
        }
    }

    /// Releases the held text of the keys `which` selects, each in an added
    /// event written to `out`, and forgets those keys.
    fn flush(&mut self, which: impl Fn(&Key) -> bool, ctx: &Ctx<'_>, out: &mut Vec<u8>) {
        let keys: Vec<Key> = self.streams.keys().filter(|k| which(k)).copied().collect();
        for key in keys {
            let Some(mut ts) = self.streams.remove(&key) else {
                continue;
            };
            let mut text = String::new();
            ts.push("", ctx, true, &mut text, &mut self.redacted);
            if !text.is_empty() {
                self.added_event(key, &text, out);
            }
            self.templates.remove(&key);
        }
    }

    /// Writes an event carrying `text` for `key`: a copy of the key's template for
    /// templated keys, `data:` lines for raw text, else a chat completion chunk.
    fn added_event(&mut self, key: Key, text: &str, out: &mut Vec<u8>) {
        self.stats.added += 1;
        let eol = self.line_break();
        if key.2.templated() {
            if let Some(t) = self.templates.remove(&key) {
                let payload = json_strings::splice(&t.payload, &[(t.span, text)]);
                write_event(&t.raw, &split_lines(&t.raw), &payload, Some(eol), out);
            }
            return;
        }
        if key.2 == Field::Raw {
            for part in text.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(part.as_bytes());
                out.extend_from_slice(eol);
            }
            out.extend_from_slice(eol);
            return;
        }
        let mut j: Vec<u8> = Vec::with_capacity(text.len() + 160);
        j.push(b'{');
        for (k, v) in &self.top {
            json_strings::push_json_string(&mut j, k);
            j.push(b':');
            j.extend_from_slice(v);
            j.push(b',');
        }
        let (c, t, field) = key;
        j.extend_from_slice(format!("\"choices\":[{{\"index\":{c},").as_bytes());
        match field {
            Field::Text => {
                j.extend_from_slice(b"\"text\":");
                json_strings::push_json_string(&mut j, text);
            }
            Field::Delta(name) => {
                j.extend_from_slice(b"\"delta\":{");
                json_strings::push_json_string(&mut j, name);
                j.push(b':');
                json_strings::push_json_string(&mut j, text);
                j.push(b'}');
            }
            Field::FunctionArguments => {
                j.extend_from_slice(b"\"delta\":{\"function_call\":{\"arguments\":");
                json_strings::push_json_string(&mut j, text);
                j.extend_from_slice(b"}}");
            }
            Field::Event | Field::Other { .. } | Field::Raw => {}
            Field::ToolArguments => {
                let t = t.unwrap_or(0);
                j.extend_from_slice(
                    format!(
                        "\"delta\":{{\"tool_calls\":[{{\"index\":{t},\"function\":{{\"arguments\":"
                    )
                    .as_bytes(),
                );
                json_strings::push_json_string(&mut j, text);
                j.extend_from_slice(b"}}]}");
            }
        }
        j.extend_from_slice(b",\"finish_reason\":null}]}");
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&j);
        out.extend_from_slice(eol);
        out.extend_from_slice(eol);
    }
}

/// Writes event `raw` with its data replaced by `payload`: other lines as they were, the
/// payload split into `data:` lines where the first data line was. For an added event
/// (`added` is the line break to use), `id:` and `retry:` lines are left out, so the
/// copy does not move the client's last event id, and every line ends with the break.
fn write_event(
    raw: &[u8],
    lines: &[Line],
    payload: &[u8],
    added: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    let mut first = true;
    for l in lines {
        let line = raw.get(l.start..l.end).unwrap_or_default();
        let eol = match added {
            Some(eol) => eol,
            None => raw
                .get(l.end..l.full_end)
                .filter(|e| !e.is_empty())
                .unwrap_or(b"\n"),
        };
        if data_value(raw, l).is_none() {
            let field = line.split(|&c| c == b':').next().unwrap_or_default();
            if added.is_some() && (field == b"id" || field == b"retry") {
                continue;
            }
            if added.is_some() {
                out.extend_from_slice(line);
                out.extend_from_slice(eol);
            } else {
                out.extend_from_slice(raw.get(l.start..l.full_end).unwrap_or_default());
            }
        } else if first {
            first = false;
            for part in payload.split(|&c| c == b'\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(part);
                out.extend_from_slice(eol);
            }
        }
    }
}

/// Collects what [`SseRestorer::rewrite_payload`] needs from one payload in one pass.
fn scan_payload(payload: &[u8], ctx: &Ctx<'_>, known: &[Box<str>]) -> Result<Scan, JsonError> {
    struct Collect<'p, 'c> {
        ctx: &'c Ctx<'c>,
        /// Whole, non-JSON strings known to come out unchanged ([`SseRestorer::rewrite_whole`]).
        known: &'p [Box<str>],
        scan: Scan,
    }
    impl<'a> json_strings::Visitor<'a> for Collect<'_, '_> {
        fn leaf(&mut self, path: &Path<'a>, leaf: Leaf<'_>, span: Range<usize>) {
            let scan = &mut self.scan;
            if path.len() == 1
                && let Some(k) = path.key(0)
                && let Some(name) = TOP_FIELDS.iter().find(|n| **n == k)
            {
                scan.top.push((name, span.clone()));
            }
            let in_choice = path.key(0) == Some("choices");
            if path.len() == 1 {
                match (path.key(0), leaf) {
                    (Some("type"), Leaf::Str(t)) => scan.event_type = Some(t.to_string()),
                    (Some("index"), Leaf::Number(n)) => scan.index = n.parse().ok(),
                    (Some("output_index"), Leaf::Number(n)) => scan.output_index = n.parse().ok(),
                    (Some("content_index" | "summary_index"), Leaf::Number(n)) => {
                        scan.content_index = n.parse().ok()
                    }
                    _ => {}
                }
            }
            match leaf {
                Leaf::Str(s) => {
                    if in_choice && path.len() == 3 && path.key(2) == Some("finish_reason") {
                        if let Some(a) = path.index(1) {
                            scan.finished.push(a);
                        }
                        return;
                    }
                    if tokenise::is_structural(path) {
                        return;
                    }
                    let kind = if path.len() == 1 && path.key(0) == Some("delta") {
                        Some(Streamed::TopDelta)
                    } else if let Some((f, b)) = streamed(path) {
                        path.index(1).map(|a| Streamed::Choice(a, f, b))
                    } else if is_metadata(path) {
                        None
                    } else {
                        let (a, b, p) = other_path(path);
                        Some(Streamed::Other(a, b, p))
                    };
                    // A string that is not streamed text changes only if it holds a
                    // placeholder or a value to redact; skip copying the others.
                    if kind.is_none()
                        && (self.ctx.redact.is_none() && !self.ctx.vault.may_contain_placeholder(s)
                            || is_known(self.known, s))
                    {
                        return;
                    }
                    scan.strings.push((span, s.to_string(), kind));
                }
                Leaf::Number(n) if in_choice && path.last_key() == Some("index") => {
                    let Ok(v) = n.parse::<u64>() else { return };
                    match (path.len(), path.index(1)) {
                        (3, Some(a)) => scan.choice_index.push((a, v)),
                        (6, Some(a))
                            if path.key(3) == Some("tool_calls")
                                && path.key(2) == Some("delta") =>
                        {
                            if let Some(b) = path.index(4) {
                                scan.tool_index.push((a, b, v));
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }

        /// Object keys are scanned whole, event by event (they are never streamed).
        fn key(&mut self, _path: &Path<'a>, key: &str, span: Range<usize>) {
            if (self.ctx.redact.is_some() || self.ctx.vault.may_contain_placeholder(key))
                && !is_known(self.known, key)
            {
                self.scan.strings.push((span, key.to_string(), None));
            }
        }
    }
    let mut c = Collect {
        ctx,
        known,
        scan: Scan::default(),
    };
    json_strings::visit(payload, &mut c)?;
    Ok(c.scan)
}

/// Whether `text` is one of the `known` unchanged strings.
fn is_known(known: &[Box<str>], text: &str) -> bool {
    text.len() <= KNOWN_BYTES && known.iter().any(|k| **k == *text)
}

/// One line of an event: content `start..end`, line break included up to `full_end`.
struct Line {
    start: usize,
    end: usize,
    full_end: usize,
}

fn split_lines(raw: &[u8]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut start = 0usize;
    let mut i = 0usize;
    while i < raw.len() {
        match raw.get(i) {
            Some(b'\r') => {
                let full_end = if raw.get(i + 1) == Some(&b'\n') {
                    i + 2
                } else {
                    i + 1
                };
                lines.push(Line {
                    start,
                    end: i,
                    full_end,
                });
                start = full_end;
                i = full_end;
            }
            Some(b'\n') => {
                lines.push(Line {
                    start,
                    end: i,
                    full_end: i + 1,
                });
                start = i + 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if start < raw.len() {
        lines.push(Line {
            start,
            end: raw.len(),
            full_end: raw.len(),
        });
    }
    lines
}

/// The value range of a `data` field line (after `data:` and one optional space).
fn data_value(raw: &[u8], l: &Line) -> Option<Range<usize>> {
    let line = raw.get(l.start..l.end)?;
    // A stream may open with a byte order mark, which clients skip.
    let bom = if line.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let rest = line.get(bom..)?.strip_prefix(b"data")?;
    let skip = match rest {
        [] => 0,
        [b':', b' ', ..] => 2,
        [b':', ..] => 1,
        _ => return None,
    };
    Some(l.start + bom + 4 + skip..l.end)
}

/// How the filter should treat a reply body, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `application/json` (or `+json`): buffer the body, then [`rewrite_reply_json`].
    Json,
    /// `text/event-stream`: feed every chunk through an [`SseRestorer`].
    EventStream,
    /// A compressed body (`content-encoding` other than identity) that cannot be rewritten:
    /// the filter fails closed when it must redact, and otherwise lets placeholders through
    /// unrestored (they reveal nothing).
    Encoded,
    /// Anything else: passed through untouched.
    Other,
}

/// Classifies a reply from its `content-type` and `content-encoding` headers.
pub fn reply_kind(content_type: Option<&str>, content_encoding: Option<&str>) -> ReplyKind {
    if content_encoding.is_some_and(|e| {
        let e = e.trim();
        !e.is_empty() && !e.eq_ignore_ascii_case("identity")
    }) {
        return ReplyKind::Encoded;
    }
    let mime = content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if mime == "text/event-stream" {
        ReplyKind::EventStream
    } else if mime == "application/json" || mime.ends_with("+json") {
        ReplyKind::Json
    } else {
        ReplyKind::Other
    }
}

/// What the filter does with a response body callback's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyAction {
    /// Forward the bytes as they are.
    Unchanged,
    /// Replace the callback's bytes with these (possibly none: text is being held).
    Replace(Vec<u8>),
    /// Keep buffering (return `StopIterationAndBuffer`); the whole body comes at the end.
    Buffer,
    /// Fail closed: answer an error instead of forwarding (a reply that must be redacted
    /// but cannot be read: compressed, or not valid JSON).
    Fail(&'static str),
}

/// One response's rewriting, driven by the filter's response callbacks, so the filter
/// only moves bytes: build it from the response headers, ask [`Self::strip_length`]
/// whether to remove [`LENGTH_HEADERS`], then hand every body callback to
/// [`Self::on_body`].
#[derive(Debug)]
pub struct ReplyRewriter {
    kind: ReplyKind,
    sse: SseRestorer,
    active: bool,
    must_redact: bool,
}

impl ReplyRewriter {
    /// From the reply's `content-type` and `content-encoding`, and the request's context.
    pub fn new(
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        ctx: &Ctx<'_>,
    ) -> ReplyRewriter {
        ReplyRewriter {
            kind: reply_kind(content_type, content_encoding),
            sse: SseRestorer::new(),
            active: !ctx.is_noop(),
            must_redact: ctx.redact.is_some_and(|r| !r.wanted.is_empty()),
        }
    }

    /// True when the body may change length, so `content-length` must go.
    pub fn strip_length(&self) -> bool {
        self.active && matches!(self.kind, ReplyKind::Json | ReplyKind::EventStream)
    }

    /// Response-side redaction counts, for the audit record (never values).
    pub fn redacted(&self) -> &Redacted {
        self.sse.redacted()
    }

    /// Handles one body callback: `body` is the new chunk for event streams, or the whole
    /// buffered body once `end` is true for JSON.
    pub fn on_body(&mut self, body: &[u8], end: bool, ctx: &Ctx<'_>) -> BodyAction {
        if !self.active {
            return BodyAction::Unchanged;
        }
        match self.kind {
            ReplyKind::Other => BodyAction::Unchanged,
            ReplyKind::Encoded if self.must_redact => {
                BodyAction::Fail("the upstream reply is compressed and cannot be redacted")
            }
            ReplyKind::Encoded => BodyAction::Unchanged,
            ReplyKind::Json if !end => BodyAction::Buffer,
            ReplyKind::Json => match rewrite_reply_json(body, ctx) {
                Ok(r) => {
                    for (k, n) in r.redacted {
                        *self.sse.redacted.entry(k).or_default() += n;
                    }
                    r.body.map_or(BodyAction::Unchanged, BodyAction::Replace)
                }
                Err(_) if self.must_redact => {
                    BodyAction::Fail("the upstream reply is not valid JSON and cannot be redacted")
                }
                Err(_) => BodyAction::Unchanged,
            },
            ReplyKind::EventStream => {
                let mut out = Vec::with_capacity(body.len() + 64);
                self.sse.push(body, ctx, &mut out);
                if end {
                    self.sse.finish(ctx, &mut out);
                }
                if out == body {
                    BodyAction::Unchanged
                } else {
                    BodyAction::Replace(out)
                }
            }
        }
    }
}

/// Request header the filter sets whenever it may rewrite the reply (vault not empty, or
/// response redaction in force), so the upstream answers uncompressed: a compressed reply
/// cannot be restored or redacted. Replaces any `accept-encoding` the client sent.
pub const UPSTREAM_ACCEPT_ENCODING: (&str, &str) = ("accept-encoding", "identity");

/// Headers the filter removes when it rewrites a body, because the new length differs:
/// on the request when [`tokenise::rewrite_request`] returned a new body, on the reply
/// (in the response-headers callback, before any body is seen) whenever the reply may be
/// rewritten. Envoy then re-frames the body (chunked on HTTP/1.1). `content-md5`-style
/// digests would be wrong too, so they go as well.
pub const LENGTH_HEADERS: &[&str] = &["content-length", "content-md5", "digest"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_kinds() {
        assert_eq!(
            reply_kind(Some("text/event-stream; charset=utf-8"), None),
            ReplyKind::EventStream
        );
        assert_eq!(
            reply_kind(Some("application/json"), Some("identity")),
            ReplyKind::Json
        );
        assert_eq!(
            reply_kind(Some("application/json"), Some("gzip")),
            ReplyKind::Encoded
        );
        assert_eq!(reply_kind(Some("text/plain"), None), ReplyKind::Other);
        assert_eq!(reply_kind(None, None), ReplyKind::Other);
    }

    #[test]
    fn reply_rewriter_drives_json_and_sse() {
        let mut vault = Vault::new([1; 16]);
        let ph = vault.tokenise("email", "a@b.io").into_owned();
        let ctx = Ctx {
            vault: &vault,
            redact: None,
        };
        let mut json = ReplyRewriter::new(Some("application/json"), None, &ctx);
        assert!(json.strip_length());
        assert_eq!(json.on_body(b"{", false, &ctx), BodyAction::Buffer);
        let body = format!("{{\"content\":\"{ph}\"}}");
        assert_eq!(
            json.on_body(body.as_bytes(), true, &ctx),
            BodyAction::Replace(b"{\"content\":\"a@b.io\"}".to_vec())
        );
        let mut sse = ReplyRewriter::new(Some("text/event-stream"), None, &ctx);
        let ev = format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"{ph}\"}}]}}\n\n");
        let (a, b) = ev.as_bytes().split_at(20);
        assert_eq!(sse.on_body(a, false, &ctx), BodyAction::Replace(Vec::new()));
        assert_eq!(
            sse.on_body(b, true, &ctx),
            BodyAction::Replace(
                b"data: {\"choices\":[{\"index\":0,\"text\":\"a@b.io\"}]}\n\n".to_vec()
            )
        );
        let mut gz = ReplyRewriter::new(Some("application/json"), Some("gzip"), &ctx);
        assert_eq!(gz.on_body(b"x", true, &ctx), BodyAction::Unchanged);
        let empty = Vault::new([0; 16]);
        let noop = Ctx {
            vault: &empty,
            redact: None,
        };
        let mut pass = ReplyRewriter::new(Some("text/event-stream"), None, &noop);
        assert!(!pass.strip_length());
        assert_eq!(
            pass.on_body(b"data: x", false, &noop),
            BodyAction::Unchanged
        );
    }

    /// Finds `SECRET` (detector 0) and `hunter2` (detector 1), as the policy's
    /// response-side detectors would.
    struct Two;
    impl Find for Two {
        fn find(&self, text: &str, wanted: &[u16], out: &mut Vec<crate::detect::Match>) {
            out.clear();
            for (d, word) in [(0u16, "SECRET"), (1, "hunter2")] {
                if wanted.contains(&d) {
                    out.extend(
                        text.match_indices(word)
                            .map(|(at, _)| crate::detect::Match {
                                detector: d,
                                start: at,
                                end: at + word.len(),
                            }),
                    );
                }
            }
            out.sort_by_key(|m| m.start);
        }
        fn name(&self, d: u16) -> Option<&str> {
            ["token", "password"].get(usize::from(d)).copied()
        }
    }

    /// Whether a whole string is streamed or only scanned, the result and the counts are
    /// the same: strings with placeholders, with values to redact, with a value the client
    /// sent itself, with both, with neither; as prose and as JSON text; with and without
    /// redaction.
    #[test]
    fn a_whole_string_scanned_first_rewrites_as_streamed() {
        let mut vault = Vault::new([3; 16]);
        let ph = vault.tokenise("email", "a@b.io").into_owned();
        vault.tokenise("name", "SECRET").into_owned();
        let texts = [
            String::new(),
            "finish_reason".to_string(),
            "stop".to_string(),
            format!("write to {ph} now"),
            ph.clone(),
            "the key is SECRET".to_string(),
            "SECRET and hunter2 and hunter2".to_string(),
            format!("{ph} hunter2"),
            "EMAIL_ but no code".to_string(),
            format!("{{\"to\":\"{ph}\",\"pw\":\"hunter2\"}}"),
            "caf\u{e9} \u{1F600} hunter2".to_string(),
        ];
        let wanted = [0u16, 1];
        for redact in [None, Some(&wanted[..1]), Some(&wanted[..])] {
            let ctx = Ctx {
                vault: &vault,
                redact: redact.map(|w| Redact {
                    finder: &Two,
                    wanted: w,
                    hold: Hold::default(),
                }),
            };
            for text in &texts {
                for json in [false, true] {
                    let (mut a, mut b) = (Redacted::new(), Redacted::new());
                    let fast = rewrite_text_as(text, json, &ctx, &mut a);
                    let streamed = rewrite_text_streamed(text, json, &ctx, &mut b);
                    assert_eq!(
                        (&fast, &a),
                        (&streamed, &b),
                        "{text:?} json={json} {redact:?}"
                    );
                }
            }
        }
        // The cases above do rewrite: restored, redacted, and left alone.
        let ctx = Ctx {
            vault: &vault,
            redact: Some(Redact {
                finder: &Two,
                wanted: &wanted,
                hold: Hold::default(),
            }),
        };
        let mut r = Redacted::new();
        let out = rewrite_text_as(&format!("{ph} SECRET hunter2"), false, &ctx, &mut r);
        assert_eq!(out.as_deref(), Some("a@b.io SECRET [PASSWORD]"));
        assert_eq!(r.get(&1), Some(&1));
        assert_eq!(rewrite_text_as("finish_reason", false, &ctx, &mut r), None);
    }

    #[test]
    fn data_lines() {
        let raw = b"\xEF\xBB\xBFevent: x\r\ndata:{\"a\":1}\r\ndata: 2\ndata\n\n";
        let bom = b"\xEF\xBB\xBFdata: 1\n";
        assert_eq!(data_value(bom, &split_lines(bom)[0]), Some(9..10));
        let lines = split_lines(raw);
        let vals: Vec<&[u8]> = lines
            .iter()
            .filter_map(|l| data_value(raw, l))
            .map(|r| &raw[r])
            .collect();
        assert_eq!(vals, vec![&b"{\"a\":1}"[..], b"2", b""]);
    }

    #[test]
    fn key_blocks_are_held() {
        assert_eq!(unfinished_key_block("a -----BEGIN RSA PRI"), Some(2));
        assert_eq!(
            unfinished_key_block("a -----BEGIN RSA PRIVATE KEY-----\nMII"),
            Some(2)
        );
        assert_eq!(
            unfinished_key_block("a -----BEGIN CERTIFICATE-----\nMII"),
            None
        );
    }
}
