//! Shared pieces of the writ benches: the request every bench sends, a fast loopback
//! upstream that answers like a model provider, a bounded closed-loop load generator, and
//! readers for a process's CPU time and peak memory.
//!
//! Everything here is deliberately small and allocation-light, so that on a 2-core machine
//! the upstream and the load generator take as little CPU as possible away from the proxy
//! being measured.

pub mod fixtures;
pub mod load;
pub mod payload;
pub mod procstat;
pub mod upstream;
