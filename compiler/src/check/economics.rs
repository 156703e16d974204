//! The business case of a workflow, checked against its own declarations (issue 15).
//!
//! The model: cost per transaction = AI spend per request + verification rate × review
//! cost. A workflow that states `assume cost_per_transaction`, `review_cost` and
//! `manual_cost` is rejected when its declarations alone cannot meet it: HITL reviews every
//! output, so one review per transaction; an HIC sample reviews its share; the assumed
//! verification rate reviews its share; and no business case may cost more than doing the
//! transaction by hand. The numbers are in the message, so the reader sees the sum.

use crate::ast::Span;
use crate::diag::{Diagnostic, codes};

use super::percent_text;

/// What a workflow states about its business case, with where it states it.
#[derive(Debug, Default)]
pub(super) struct BusinessCase {
    /// `oversight HITL`: every output reviewed.
    pub hitl: Option<Span>,
    /// `oversight HOTL below …`: the rate depends on the model's confidence.
    pub hotl: bool,
    /// `oversight HIC sample N%` with N > 0, as a fraction.
    pub sample: Option<(f64, Span)>,
    /// `assume verification_rate …`, as a fraction.
    pub rate: Option<(f64, Span)>,
    /// `assume cost_per_transaction <= …`, in micros.
    pub cost: Option<(i64, Span)>,
    /// `review_cost …`, in micros.
    pub review: Option<(i64, Span)>,
    /// `manual_cost …`, in micros.
    pub manual: Option<(i64, Span)>,
}

/// An amount in micros as the policy writes money: at least two decimals, more only when
/// needed (`4.5` → `4.50 EUR`, `0.0125` → `0.0125 EUR`).
pub(crate) fn money(micros: i64, currency: &str) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let mut frac = format!("{:06}", m % 1_000_000);
    while frac.len() > 2 && frac.ends_with('0') {
        frac.pop();
    }
    format!("{sign}{}.{frac} {currency}", m / 1_000_000)
}

/// `share` of `review`, in micros, rounded to the nearest micro.
fn share_of(share: f64, review: i64) -> i64 {
    (share * review as f64).round() as i64
}

/// Checks one workflow's business case; `currency` is the policy's.
pub(super) fn check(b: &BusinessCase, currency: &str, diags: &mut Vec<Diagnostic>) {
    let m = |micros: i64| money(micros, currency);
    if let (Some((cost, cost_span)), Some((review, review_span))) = (b.cost, b.review) {
        // The verification each part of the design needs, most certain first: the first
        // that overruns the business case is reported (the later ones would repeat it).
        let mut parts: Vec<(Span, f64, &str)> = Vec::new();
        if let Some(h) = b.hitl {
            parts.push((h, 1.0, "hitl"));
        }
        if let Some((s, span)) = b.sample {
            parts.push((span, s, "sample"));
        }
        if let Some((r, span)) = b.rate {
            parts.push((span, r, "rate"));
        }
        for (span, share, what) in parts {
            let needs = share_of(share, review);
            let sum = format!(
                "{} × {} = {} of review per transaction",
                percent_text(share),
                m(review),
                m(needs)
            );
            if needs > cost {
                let (code, message, label, help) = match what {
                    "hitl" => (
                        codes::HITL_OVER_BUSINESS_CASE,
                        format!(
                            "HITL reviews every output: {sum}, over the assumed cost per transaction of {}",
                            m(cost)
                        ),
                        "every output goes to a human".to_string(),
                        "the business case is underwater by design: raise `assume cost_per_transaction`, lower `review_cost`, or review fewer outputs (`oversight HOTL below …`)",
                    ),
                    "sample" => (
                        codes::SAMPLE_OVER_BUSINESS_CASE,
                        format!(
                            "the HIC sample alone costs more than the business case: {sum}, over the assumed {}",
                            m(cost)
                        ),
                        format!("sends {} of outputs to a human", percent_text(share)),
                        "lower the sample or the review cost, or raise `assume cost_per_transaction`",
                    ),
                    _ => (
                        codes::VERIFICATION_OVER_BUSINESS_CASE,
                        format!(
                            "the assumed verification rate alone costs more than the business case: {sum}, over the assumed {}",
                            m(cost)
                        ),
                        format!("{} of outputs verified", percent_text(share)),
                        "the two assumptions contradict each other: lower the verification rate or the review cost, or raise `assume cost_per_transaction`",
                    ),
                };
                diags.push(
                    Diagnostic::new(code, message, span, label)
                        .with_label(cost_span, format!("assumes {} per transaction", m(cost)))
                        .with_label(review_span, format!("{} per review", m(review)))
                        .help(help),
                );
                break;
            }
            if needs == cost && needs > 0 {
                diags.push(
                    Diagnostic::new(
                        codes::NO_ROOM_FOR_AI,
                        format!(
                            "verification uses up the whole business case: {sum}, all of the assumed {}, leaving {} for AI spend",
                            m(cost),
                            m(0)
                        ),
                        span,
                        "leaves nothing for AI spend",
                    )
                    .with_label(cost_span, format!("assumes {} per transaction", m(cost)))
                    .help("any request that costs anything breaks the business case: raise `assume cost_per_transaction` or lower the review share"),
                );
                break;
            }
        }
    }
    if let (Some((cost, cost_span)), Some((manual, manual_span))) = (b.cost, b.manual)
        && cost > manual
    {
        diags.push(
            Diagnostic::new(
                codes::DEARER_THAN_MANUAL,
                format!(
                    "the business case costs more than the manual process: {} per transaction assumed, {} by hand",
                    m(cost),
                    m(manual)
                ),
                cost_span,
                format!("assumes {} per transaction", m(cost)),
            )
            .with_label(manual_span, format!("{} by hand", m(manual)))
            .help("automating the workflow loses money by design: lower the assumed cost per transaction below the manual cost"),
        );
    }
    incomplete(b, diags);
}

/// Warns about a business case stated in part: each part needs the others to be checked.
fn incomplete(b: &BusinessCase, diags: &mut Vec<Diagnostic>) {
    let warn = |span: Span, message: String, label: &str, help: &str| {
        Diagnostic::new(
            codes::INCOMPLETE_BUSINESS_CASE,
            message,
            span,
            label.to_string(),
        )
        .help(help.to_string())
    };
    match b.cost {
        None => {
            for (part, word) in [(b.review, "review_cost"), (b.manual, "manual_cost")] {
                if let Some((_, span)) = part {
                    diags.push(warn(
                        span,
                        format!("`{word}` without `assume cost_per_transaction`"),
                        "nothing to hold it against",
                        "state the business case: `assume cost_per_transaction <= … EUR`",
                    ));
                }
            }
        }
        Some((_, span)) => {
            let reviews = b.hitl.is_some() || b.hotl || b.sample.is_some();
            if b.review.is_none() && reviews {
                diags.push(warn(
                    span,
                    "`assume cost_per_transaction` without `review_cost`".to_string(),
                    "the verification share of this cost cannot be checked",
                    "add `review_cost … EUR`: the cost of one human verification",
                ));
            }
            if b.manual.is_none() {
                diags.push(warn(
                    span,
                    "`assume cost_per_transaction` without `manual_cost`".to_string(),
                    "cannot be compared with the manual process",
                    "add `manual_cost … EUR`: the cost of one transaction done by hand",
                ));
            }
            if b.hotl && b.rate.is_none() {
                diags.push(warn(
                    span,
                    "`assume cost_per_transaction` under HOTL without `assume verification_rate`"
                        .to_string(),
                    "the share of outputs reviewed is unknown",
                    "add `assume verification_rate <= N%`: HOTL reviews what falls under its threshold",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn money_reads_as_written() {
        assert_eq!(money(4_500_000, "EUR"), "4.50 EUR");
        assert_eq!(money(12_500, "EUR"), "0.0125 EUR");
        assert_eq!(money(0, "EUR"), "0.00 EUR");
        assert_eq!(money(-1_100_000, "USD"), "-1.10 USD");
    }
}
