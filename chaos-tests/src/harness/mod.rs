//! The real-process harness: a local cluster of `baton serve` processes,
//! chaos worker processes, a workload, seeded nemeses, and the recorder that
//! turns what they saw into a [`History`](crate::History) for the checker.
//!
//! [`run::run`] performs one run; [`profile`] holds the smoke and soak
//! profiles and the summary table.

pub mod cluster;
pub mod nemesis;
pub mod net;
pub mod profile;
pub mod record;
pub mod run;
pub mod worker;
