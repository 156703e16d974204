//! Stable diagnostic codes. `E` codes are errors (the policy does not compile), `W` codes
//! are warnings (it compiles, but probably does not say what its author meant). A code never
//! changes meaning once released; retired codes are not reused. Each constant's doc
//! paragraph is the user-facing explanation of the code.

/// A stable diagnostic code such as `E0103`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Code(&'static str);

impl Code {
    /// The code as printed, e.g. `E0103`.
    pub fn id(self) -> &'static str {
        self.0
    }

    /// Errors start with `E`, warnings with `W`.
    pub fn severity(self) -> super::Severity {
        if self.0.starts_with('W') {
            super::Severity::Warning
        } else {
            super::Severity::Error
        }
    }
}

// ---- syntax ----

/// The parser met a token it did not expect. The label says, in words, what could have
/// come there instead (a string, a condition, `then`, …).
pub const UNEXPECTED_TOKEN: Code = Code("E0001");
/// A string literal has no closing `"` on its line. Strings cannot span lines.
pub const UNCLOSED_STRING: Code = Code("E0002");
/// A `{`, `(` or `[` has no matching `}`, `)` or `]`.
pub const UNCLOSED_BLOCK: Code = Code("E0003");
/// Parentheses, brackets or `not`s nest deeper than the compiler accepts (64 levels); the
/// limit keeps hostile input from exhausting the stack. Simplify the condition.
pub const NESTING_TOO_DEEP: Code = Code("E0004");
/// A closing `}`, `)` or `]` has no opening partner.
pub const UNMATCHED_CLOSE: Code = Code("E0005");

// ---- names ----

/// A condition names a field that does not exist. Fields are `model`, `path`, `method`,
/// `header "x"`, `workflow`, `team`, `user`, `max_tokens`, `stream`, `status` and
/// `response header "x"`.
pub const UNKNOWN_FIELD: Code = Code("E0101");
/// A condition calls a function that does not exist; the functions are `spend(scope,
/// window)` and `confidence(header "x" | json "/pointer")`.
pub const UNKNOWN_FUNCTION: Code = Code("E0102");
/// A `has`, `redact` or `tokenise` names a detector that is neither built in nor declared
/// with `detector name = regex "…"`.
pub const UNKNOWN_DETECTOR: Code = Code("E0103");
/// `then` is followed by a word that is not an action (`allow`, `deny`, `redact`,
/// `tokenise`, `route`, `escalate`, `tag`).
pub const UNKNOWN_ACTION: Code = Code("E0104");
/// `workflow == "x"` compares against a workflow the policy does not declare, so it could
/// never be true.
pub const UNKNOWN_WORKFLOW: Code = Code("E0105");
/// `oversight` takes `HITL`, `HOTL below <threshold>` or `HIC [sample N%]`.
pub const UNKNOWN_OVERSIGHT: Code = Code("E0106");
/// A spend window must be `hour`, `day` or `month` (calendar windows in UTC).
pub const UNKNOWN_WINDOW: Code = Code("E0107");
/// A spend scope must be `team`, `user` or `workflow`; `identify` sets `team` and `user`.
pub const UNKNOWN_SCOPE: Code = Code("E0108");
/// A detector class must be `pii` or `secret`, or, after `has`, `redact` and `tokenise`, a
/// group of built-ins such as `pii.eu` or `government_id` (`docs/language.md` lists
/// them); a declared detector's `class` is `pii` or `secret`.
pub const UNKNOWN_CLASS: Code = Code("E0109");
/// A custom detector's validator must be `luhn`, `iban` or `mod97`.
pub const UNKNOWN_VALIDATOR: Code = Code("E0110");
/// Enforcement is `enforce` (act) or `monitor` (only record what would have happened).
pub const UNKNOWN_ENFORCEMENT: Code = Code("E0111");
/// A rule runs `on request` or `on response`.
pub const UNKNOWN_PHASE: Code = Code("E0112");
/// `assume` knows two assumptions: `verification_rate` (a share) and
/// `cost_per_transaction` (an amount).
pub const UNKNOWN_ASSUMPTION: Code = Code("E0113");
/// A detector was named under the wrong class, e.g. `pii(github_token)`, or under a group
/// it is not in, e.g. `pii.eu(us_ssn)`; the class decides what `prompt has pii` means, so
/// it must match the detector's own.
pub const CLASS_MISMATCH: Code = Code("E0114");
/// A currency must be an ISO 4217 code: three upper-case letters such as `EUR`.
pub const INVALID_CURRENCY: Code = Code("E0115");

// ---- duplicates ----

/// Two rules have the same clause id and the same title. Several rules may enforce one
/// clause, but each needs its own title so audit records tell them apart.
pub const DUPLICATE_RULE: Code = Code("E0201");
/// Two workflows share a name; a request could not be attributed to one of them.
pub const DUPLICATE_WORKFLOW: Code = Code("E0202");
/// Two detectors share a name, or a custom detector reuses a built-in's name.
pub const DUPLICATE_DETECTOR: Code = Code("E0203");
/// A model has two prices; budgets would depend on which one was read.
pub const DUPLICATE_PRICE: Code = Code("E0204");
/// A block states the same thing twice (two `owner`s, two `when`s, …).
pub const DUPLICATE_STATEMENT: Code = Code("E0205");
/// A file has more than one `policy` header or `kill_switch` block.
pub const DUPLICATE_ITEM: Code = Code("E0206");

// ---- types ----

/// The two sides of a comparison have different types, e.g. `model == 3`, or money compared
/// with a plain number (`spend(team, month) > 5` — write `5 EUR`).
pub const TYPE_MISMATCH: Code = Code("E0301");
/// A list mixes types (`["a", 1]`); lists hold values of one type.
pub const MIXED_LIST: Code = Code("E0302");
/// An amount is in a currency other than the policy's; one policy uses one currency.
pub const CURRENCY_MISMATCH: Code = Code("E0303");
/// An ordering operator (`<`, `<=`, `>`, `>=`) applied to strings or booleans.
pub const BAD_OPERATOR: Code = Code("E0304");
/// A value standing alone as a condition is not a boolean (`when model`).
pub const NOT_A_CONDITION: Code = Code("E0305");

// ---- values ----

/// A custom detector's pattern is not a valid regular expression.
pub const INVALID_REGEX: Code = Code("E0401");
/// A custom detector's pattern compiles to an automaton larger than the engine accepts;
/// narrow the pattern (bounded repetitions, ASCII classes such as `[0-9]`).
pub const REGEX_TOO_LARGE: Code = Code("E0402");
/// A policy version must be semantic versioning `MAJOR.MINOR.PATCH`.
pub const INVALID_VERSION: Code = Code("E0403");
/// A deny status must be an HTTP error status, 400 to 599.
pub const STATUS_OUT_OF_RANGE: Code = Code("E0404");
/// A percentage is over 100%.
pub const PERCENT_OUT_OF_RANGE: Code = Code("E0405");
/// A HOTL threshold (or a confidence compared against) must lie between 0 and 1.
pub const THRESHOLD_OUT_OF_RANGE: Code = Code("E0406");
/// A kill-switch token must be given as its sha256: 64 lower-case hex characters. Never
/// write the token itself in a policy.
pub const INVALID_TOKEN_HASH: Code = Code("E0407");
/// An amount has more than six decimals; money is kept in millionths of a unit.
pub const AMOUNT_PRECISION: Code = Code("E0408");
/// A string that must not be empty is empty (a name, owner, message, header, …).
pub const EMPTY_STRING: Code = Code("E0409");
/// The kill switch's admin path is not a request path (it must start with `/`).
pub const INVALID_PATH: Code = Code("E0410");

// ---- structure ----

/// The file has no `policy "name" version "x.y.z" { … }` header.
pub const MISSING_HEADER: Code = Code("E0501");
/// The policy header has no `owner`: someone must answer for the policy.
pub const MISSING_OWNER: Code = Code("E0502");
/// The policy header has no `implements`: the paper policy its clause ids come from.
pub const MISSING_IMPLEMENTS: Code = Code("E0503");
/// A block lacks a required statement (a rule's `on`, `when` or `then`; a workflow's
/// `match`; a manual clause's `owner` or `reason`; the kill switch's path or token).
pub const MISSING_STATEMENT: Code = Code("E0504");
/// The paper policy named by `implements` cannot be read (it is resolved relative to the
/// `.policy` file). Without it no clause id can be checked and coverage has nothing to
/// cover, so `writ check` refuses the policy.
pub const PAPER_NOT_FOUND: Code = Code("E0505");

// ---- cross-layer consistency ----

/// A request-phase rule reads something only a reply has: `confidence(…)`, `status`,
/// `response header "x"` or `response has …`.
pub const RESPONSE_ONLY: Code = Code("E0601");
/// `alert at N%` is a budget alert; it only makes sense on a rule whose condition uses
/// `spend(…)`.
pub const ALERT_WITHOUT_SPEND: Code = Code("E0602");
/// `route to cheapest [...]` needs a price for every candidate model to compare them.
pub const ROUTE_WITHOUT_PRICE: Code = Code("E0603");
/// A workflow `match` is evaluated on request headers before the body arrives, so it may
/// only read `header "x"`, `path` and `method`.
pub const MATCH_USES_BODY: Code = Code("E0604");
/// `oversight HITL` reviews every output, so its verification rate is 100%; an assumption
/// that excludes 100% (`<= 20%`, `< 100%`, `== 50%`) contradicts it. Pick HOTL or HIC, or
/// assume `verification_rate == 100%`.
pub const HITL_RATE: Code = Code("E0605");
/// `redact`/`tokenise` without a detector list acts on the detectors the rule's `has` names;
/// this rule has none.
pub const NOTHING_TO_TRANSFORM: Code = Code("E0606");
/// `below` belongs to HOTL and `sample` to HIC.
pub const OVERSIGHT_OPTION: Code = Code("E0607");
/// `route` rewrites the requested model, so it only works on request-phase rules.
pub const ROUTE_ON_RESPONSE: Code = Code("E0608");
/// `header "…" has` and `scan headers […]` take HTTP header names: letters, digits and
/// `!#$%&'*+-.^_`|~`, not empty, not a pseudo-header such as `:path` (use `query has` or
/// `scan query` for the query string).
pub const BAD_HEADER_NAME: Code = Code("E0609");
/// A `route` sends requests to a model that an enforced deny refuses by model alone (an
/// allowlist `model not in [...]`, or `model == "x"`). Rules see the model the client
/// asked for, not the one a route picks, so routed requests reach the denied model without
/// the deny ever firing. Route to an allowed model, or allow the model.
pub const ROUTE_TO_DENIED_MODEL: Code = Code("E0610");
/// `oversight HIC sample N%` sends N% of outputs to a human, so the verification rate is at
/// least N%; an assumption that excludes every rate from N% up (`sample 5%` with
/// `assume verification_rate <= 2%`) contradicts it, and the drift alert would fire for
/// ever. Lower the sample or raise the assumption.
pub const HIC_SAMPLE_RATE: Code = Code("E0611");
/// `tokens(…)` and `requests(…)` count a request when it is admitted, before it leaves
/// for the provider, so a rate limit belongs in an `on request` rule; a response rule
/// would see the reply of a request that was already counted and sent.
pub const REQUEST_ONLY: Code = Code("E0612");

// ---- operating model: kill points, review signals, handoff context (issue 15) ----

/// A `kill_point` measures `cost_per_transaction` (AI spend per reply, in the policy's
/// currency) or `verification_rate` (the share of outputs sent to a human); any other
/// name is unknown.
pub const UNKNOWN_KILL_METRIC: Code = Code("E0650");
/// A kill point's threshold does not fit its measure: a cost is an amount (`3.00 EUR`), a
/// rate a percentage (`40%`) or a fraction 0..1. A kill point fires when the measure rises
/// past the threshold, so it takes `>` or `>=`.
pub const KILL_POINT_VALUE: Code = Code("E0651");
/// A kill point's window is `over N hours` or `over N days`, N a whole number from 1, and
/// at most 90 days (the gateway sums one counter per hour or day of the window, and the
/// production readiness review looks at most a quarter back); `after N requests` takes a
/// whole number from 1.
pub const KILL_POINT_WINDOW: Code = Code("E0652");
/// `then stop` flips the workflow's kill switch, and verdicts for `review_signals` are
/// posted with the kill switch's token: both need a `kill_switch` block (without one,
/// nobody could resume the workflow, or post a verdict).
pub const NEEDS_KILL_SWITCH: Code = Code("E0653");
/// `review_signals` knows `median_review_time < DURATION`, `approval_rate > N%` and
/// `reviewer_share > N%`: a rubber stamp is fast, approves nearly everything, or is one
/// reviewer clearing most of the queue. The list may not be empty.
pub const UNKNOWN_REVIEW_SIGNAL: Code = Code("E0654");
/// A review signal's value or operator does not fit it: `median_review_time` takes a
/// duration (`30s`, `2m`, `1h`) and `<`; `approval_rate` and `reviewer_share` take a
/// percentage and `>`; `after N reviews` a whole number from 1.
pub const REVIEW_SIGNAL_VALUE: Code = Code("E0655");
/// `handoff includes` takes `output` (the model's output, PII still tokenised). Raw
/// prompts never leave the gateway, so `prompt` is refused.
pub const HANDOFF_CONTENT: Code = Code("E0656");
/// `tool_call.argument "…"` takes an RFC 6901 JSON pointer into the call's arguments: empty
/// is the whole arguments object (never a value a comparison can read), otherwise it starts
/// with `/`, and `~` is only written as `~0` (a `~`) or `~1` (a `/`). Write e.g.
/// `tool_call.argument "/amount"` or `"/order/id"`.
pub const BAD_JSON_POINTER: Code = Code("E0630");
/// `tool.name` reads a tool the request offers, and `strip tool` removes such tools from
/// the request before it is sent: both belong in `on request` rules. In a response-phase
/// rule, read the reply's calls with `tool_call.name`.
pub const TOOL_REQUEST_ONLY: Code = Code("E0631");
/// A tool action without the tools it acts on: `strip tool` removes the offered tools its
/// condition holds for, so the condition must read `tool.name`; `escalate … hold`
/// withholds the reply's tool calls its condition holds for, so the condition must read
/// `tool_call.…` and the rule must be `on response`.
pub const TOOL_ACTION_WITHOUT_TOOL: Code = Code("E0632");
/// `escalate … hold` withholds tool calls until a reviewer approves them at the approvals
/// endpoint, which is authenticated with the kill switch's token: a policy without a
/// `kill_switch` block has no one who could ever approve, and every held call would be
/// lost. Declare a kill switch.
pub const HOLD_WITHOUT_APPROVER: Code = Code("E0633");

// ---- fallback ----

/// `fallback on …` names a failure the gateway does not know. The failures are `5xx` (the
/// provider answered 500 to 599), `429` (rate limited), `timeout` (no answer within the
/// upstream timeout) and `connect` (the connection failed or was reset).
pub const UNKNOWN_FAILURE: Code = Code("E0660");
/// A `fallback` names failures but nothing to do on them: add `to` and at least one step
/// (`model "…"`, `cluster "…"`, `reply 503 "…"` or `human "…"`).
pub const EMPTY_FALLBACK: Code = Code("E0661");
/// A fallback model has no `price` while the policy prices models: the spend reservation
/// is re-made at the fallback model's price, so it needs one. Add a `price` line.
pub const FALLBACK_WITHOUT_PRICE: Code = Code("E0662");
/// A fallback model is one an enforced request deny refuses by model alone (an allowlist
/// `model not in [...]`, or `model == "x"`). Every request rule is re-checked for the
/// fallback model, so the deny would skip the step on every request: it can never be used.
/// Fall back to an allowed model, or allow the model.
pub const FALLBACK_TO_DENIED_MODEL: Code = Code("E0663");
/// A step follows a degraded answer (`reply` or `human`): the answer ends the fallback, so
/// the step is never tried. Put retries (`model`, `cluster`) first and one answer last.
pub const FALLBACK_AFTER_ANSWER: Code = Code("E0664");
/// `reply` answers with an error in the API's shape, so its status is a whole number from
/// 400 to 599 (e.g. `reply 503 "…"`).
pub const FALLBACK_REPLY_STATUS: Code = Code("E0665");
/// A fallback `cluster` name travels to the host in a header and names an Envoy cluster:
/// letters, digits, `_`, `-` and `.` only.
pub const BAD_CLUSTER_NAME: Code = Code("E0666");

// ---- rule logic ----

/// A rule's condition (or a workflow's `match`) can never be true, e.g.
/// `model == "a" and model == "b"` or `model in []`, so the rule would never fire.
pub const NEVER_FIRES: Code = Code("E0701");

/// The check accepted a policy it then could not resolve (a name, detector or amount it
/// let through): a bug in writ, not in the policy. Please report it with the policy that
/// triggers it. Lowering itself cannot fail.
pub const INTERNAL: Code = Code("E0900");

/// An earlier rule with the same phase and action fires on all the traffic this one does
/// (its condition is the same or weaker), so this rule never changes an outcome.
pub const SHADOWED_RULE: Code = Code("W0001");
/// Two rules match the same traffic with contradictory actions: one allows, and one denies
/// the same traffic or more (its condition is the same or weaker). Deny wins by precedence,
/// so the allow is dead.
pub const CONTRADICTORY_RULES: Code = Code("W0002");
/// A spend budget per team or user relies on an identity header the client sets itself;
/// a client can dodge the budget by changing it. Use `by trusted header` with a header set
/// by Envoy's `jwt_authn`.
pub const UNTRUSTED_BUDGET: Code = Code("W0003");
/// The condition is always true, so the rule fires on every request in its phase.
pub const ALWAYS_FIRES: Code = Code("W0004");
/// A custom detector is declared but no rule uses it.
pub const UNUSED_DETECTOR: Code = Code("W0005");
/// A workflow's `match` implies an earlier workflow's, and a request belongs to the first
/// workflow whose `match` holds, so this workflow never gets a request.
pub const SHADOWED_WORKFLOW: Code = Code("W0007");
/// A budget is kept per team or user, but no workflow says where the team or user comes
/// from (`identify`), so every request falls into one shared, unnamed bucket.
pub const UNIDENTIFIED_SCOPE: Code = Code("W0006");
/// Two enforced denies in one phase answer the same traffic differently (another status or
/// message), and the earlier one's condition is the same or weaker. The first deny in file
/// order answers, so the later one is never sent. Merge them, or make their conditions
/// exclude each other.
pub const CONFLICTING_DENIES: Code = Code("W0008");
/// An `allow` comes after an enforced deny it shares traffic with (both conditions can hold
/// at once), as if it were an exception to it. Deny takes precedence wherever both hold,
/// whichever rule comes first, so the allow exempts nothing there; to exempt that traffic,
/// exclude it in the deny's condition. (When the deny covers all of the allow's traffic, W0002 is reported
/// instead; an `allow` without a condition only records exchanges and is not reported.)
pub const ALLOW_OVERRIDDEN: Code = Code("W0009");
/// Two enforced routes send the same traffic to different models, and the earlier one's
/// condition is the same or weaker. The first route in file order wins, so the later one
/// never applies.
pub const CONFLICTING_ROUTES: Code = Code("W0010");

// ---- the business case and the rollout pack (issue 15) ----
//
// The model: cost per transaction = AI spend per request + verification rate × review
// cost. `docs/operating-model.md` explains it.

/// A `rollout { … }` block names a field the rollout pack does not have. The fields are
/// `purpose`, `primary_user`, `trigger`, `output`, `review_point`, `hard_stops`, `dri`,
/// `platform_owner`, `security_owner`, `data_owner`, `on_call`, `redaction`, `retention`,
/// `audit_log`, `eval_set`, `release_gate`, `phase`, `next_gate`, `approved_models`,
/// `routing`, `fallback`, `incident_actions` and `go_live`.
pub const UNKNOWN_ROLLOUT_FIELD: Code = Code("E0130");
/// A rollout-pack field has a value of the wrong shape: most take a string, `hard_stops`,
/// `approved_models` and `incident_actions` a list of strings, `phase` one of `dogfood`,
/// `beta` or `default_on`, and `go_live` a date `"YYYY-MM-DD"`.
pub const BAD_ROLLOUT_VALUE: Code = Code("E0420");
/// `assume cost_per_transaction` is a ceiling: write it with `<=` or `<`.
pub const ASSUMPTION_OPERATOR: Code = Code("E0421");
/// `oversight HITL` sends every output to a human, so every transaction costs at least one
/// `review_cost`; that alone is more than `assume cost_per_transaction`, before any AI
/// spend. The business case is underwater by design: raise the assumed cost, lower the
/// review cost, or review fewer outputs (HOTL, HIC).
pub const HITL_OVER_BUSINESS_CASE: Code = Code("E0620");
/// The assumed verification rate times the review cost (the verification share of each
/// transaction) is more than `assume cost_per_transaction`, before any AI spend. Either
/// assumption is wrong.
pub const VERIFICATION_OVER_BUSINESS_CASE: Code = Code("E0621");
/// An HIC sample sends its share of outputs to a human; that share times the review cost is
/// more than `assume cost_per_transaction`, before any AI spend.
pub const SAMPLE_OVER_BUSINESS_CASE: Code = Code("E0622");
/// `assume cost_per_transaction` is more than `manual_cost`: the business case costs more
/// than doing the transaction by hand, so automating it loses money by design.
pub const DEARER_THAN_MANUAL: Code = Code("E0623");
/// The verification the workflow is designed or assumed to need (the HITL review, the HIC
/// sample, or the assumed rate, times the review cost) uses up all of `assume
/// cost_per_transaction`, leaving nothing for AI spend: any request that costs anything
/// breaks the business case.
pub const NO_ROOM_FOR_AI: Code = Code("W0020");
/// A workflow states part of a business case but not enough to check it: a `review_cost`
/// or `manual_cost` with no `assume cost_per_transaction` to hold it against, an assumed
/// cost per transaction without the `review_cost` its verification needs or the
/// `manual_cost` it must beat, or HOTL without the `assume verification_rate` the cost
/// depends on.
pub const INCOMPLETE_BUSINESS_CASE: Code = Code("W0021");

/// Every code with its severity, for documentation tests.
pub const ALL: &[Code] = &[
    UNEXPECTED_TOKEN,
    UNCLOSED_STRING,
    UNCLOSED_BLOCK,
    NESTING_TOO_DEEP,
    UNMATCHED_CLOSE,
    UNKNOWN_FIELD,
    UNKNOWN_FUNCTION,
    UNKNOWN_DETECTOR,
    UNKNOWN_ACTION,
    UNKNOWN_WORKFLOW,
    UNKNOWN_OVERSIGHT,
    UNKNOWN_WINDOW,
    UNKNOWN_SCOPE,
    UNKNOWN_CLASS,
    UNKNOWN_VALIDATOR,
    UNKNOWN_ENFORCEMENT,
    UNKNOWN_PHASE,
    UNKNOWN_ASSUMPTION,
    CLASS_MISMATCH,
    INVALID_CURRENCY,
    DUPLICATE_RULE,
    DUPLICATE_WORKFLOW,
    DUPLICATE_DETECTOR,
    DUPLICATE_PRICE,
    DUPLICATE_STATEMENT,
    DUPLICATE_ITEM,
    TYPE_MISMATCH,
    MIXED_LIST,
    CURRENCY_MISMATCH,
    BAD_OPERATOR,
    NOT_A_CONDITION,
    INVALID_REGEX,
    REGEX_TOO_LARGE,
    INVALID_VERSION,
    STATUS_OUT_OF_RANGE,
    PERCENT_OUT_OF_RANGE,
    THRESHOLD_OUT_OF_RANGE,
    INVALID_TOKEN_HASH,
    AMOUNT_PRECISION,
    EMPTY_STRING,
    INVALID_PATH,
    MISSING_HEADER,
    MISSING_OWNER,
    MISSING_IMPLEMENTS,
    MISSING_STATEMENT,
    PAPER_NOT_FOUND,
    RESPONSE_ONLY,
    ALERT_WITHOUT_SPEND,
    ROUTE_WITHOUT_PRICE,
    MATCH_USES_BODY,
    HITL_RATE,
    NOTHING_TO_TRANSFORM,
    OVERSIGHT_OPTION,
    ROUTE_ON_RESPONSE,
    BAD_HEADER_NAME,
    ROUTE_TO_DENIED_MODEL,
    HIC_SAMPLE_RATE,
    REQUEST_ONLY,
    UNKNOWN_KILL_METRIC,
    KILL_POINT_VALUE,
    KILL_POINT_WINDOW,
    NEEDS_KILL_SWITCH,
    UNKNOWN_REVIEW_SIGNAL,
    REVIEW_SIGNAL_VALUE,
    HANDOFF_CONTENT,
    BAD_JSON_POINTER,
    TOOL_REQUEST_ONLY,
    TOOL_ACTION_WITHOUT_TOOL,
    HOLD_WITHOUT_APPROVER,
    UNKNOWN_FAILURE,
    EMPTY_FALLBACK,
    FALLBACK_WITHOUT_PRICE,
    FALLBACK_TO_DENIED_MODEL,
    FALLBACK_AFTER_ANSWER,
    FALLBACK_REPLY_STATUS,
    BAD_CLUSTER_NAME,
    NEVER_FIRES,
    INTERNAL,
    SHADOWED_RULE,
    CONTRADICTORY_RULES,
    UNTRUSTED_BUDGET,
    ALWAYS_FIRES,
    UNUSED_DETECTOR,
    UNIDENTIFIED_SCOPE,
    SHADOWED_WORKFLOW,
    CONFLICTING_DENIES,
    ALLOW_OVERRIDDEN,
    CONFLICTING_ROUTES,
    UNKNOWN_ROLLOUT_FIELD,
    BAD_ROLLOUT_VALUE,
    ASSUMPTION_OPERATOR,
    HITL_OVER_BUSINESS_CASE,
    VERIFICATION_OVER_BUSINESS_CASE,
    SAMPLE_OVER_BUSINESS_CASE,
    DEARER_THAN_MANUAL,
    NO_ROOM_FOR_AI,
    INCOMPLETE_BUSINESS_CASE,
];
