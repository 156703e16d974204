//! Issue 5: budgets under concurrency (see the tests below).
