//! Baton's chaos harness: real-process runs with seeded faults, the history
//! they record, and the checker that judges it.
//!
//! A chaos run records what clients, workers and the nemesis saw as a
//! [`History`]: submits and their replies, the attempts workers were granted,
//! their completes and replies, faults injected and healed, the task table
//! after heal and drain, and each replica's state hash. [`check`] judges a
//! history against Baton's promises (`docs/guarantees.md`) and returns a
//! [`Report`] with a verdict per [`Invariant`] and every violation, each naming
//! the job, task, token and event seqs involved. `baton-check` runs the same
//! check on a saved history file.
//!
//! [`harness`] produces such histories from real `baton` processes: it
//! starts a local cluster and chaos worker processes, drives a workload,
//! injects seeded faults (kills, pauses, partitions through network
//! namespaces, zombie workers, membership changes), heals, drains and merges
//! what every process recorded. The deterministic tier lives in `baton-sim`.
//!
//! What this crate never does: the checker never talks to a cluster, starts a
//! process or reads a clock. It only reads histories, so any verdict can be
//! reproduced offline from the saved file. The harness never decides a
//! verdict itself; it only records.

#![warn(missing_docs)]

mod checks;
mod error;
pub mod harness;
pub mod history;
mod report;

pub use checks::{Config, check};
pub use error::Error;
pub use history::History;
pub use report::{Invariant, InvariantReport, Report, Verdict, Violation};
