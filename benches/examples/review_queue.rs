//! Records N escalations of one workflow (each a new review id, none reviewed) and then
//! the verdicts of the first N/2, through [`review_verdict`] on a [`MemoryStore`]: the
//! shared-data work a HOTL workflow that escalates every reply pays per request, with the
//! queue past its listed limit, as in a backlog. For callgrind, like `session_exchange`:
//!
//! ```sh
//! cargo build --release -p writ-benches --example review_queue
//! valgrind --tool=callgrind target/release/examples/review_queue 1000   # and 2000
//! ```
//!
//! The difference of the two totals over 1,000 is the cost of one escalation and half a
//! verdict; start-up drops out.
#![allow(clippy::print_stdout)]

use writ_plugin::review_verdict::{record_escalation, record_review};
use writ_plugin::store::MemoryStore;

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
    let store = MemoryStore::new();
    let mut gauges = 0usize;
    for i in 0..n {
        let id = format!("rev-{i:016x}");
        let at = 1_000 + i as i64;
        let updates = record_escalation(&store, "support", &id, &format!("req-{i}"), at)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        gauges += updates.len();
    }
    for i in 0..n / 2 {
        let id = format!("rev-{i:016x}");
        let updates = record_review(&store, "support", &id, i % 2 == 0, 60, 30.0)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        gauges += updates.len();
    }
    println!(
        "{n} escalations, {} verdicts, {gauges} gauge updates",
        n / 2
    );
    Ok(())
}
