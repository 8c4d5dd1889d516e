//! Baton's chaos harness: for now, its history format and its history checker.
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
//! The rest of the harness (the nemeses, the workload that drives a real
//! cluster, and the deterministic simulation) comes later and will produce
//! histories in this format.
//!
//! What this crate never does: the checker never talks to a cluster, starts a
//! process or reads a clock. It only reads histories, so any verdict can be
//! reproduced offline from the saved file.

#![warn(missing_docs)]

mod checks;
mod error;
pub mod history;
mod report;

pub use checks::{Config, check};
pub use error::Error;
pub use history::History;
pub use report::{Invariant, InvariantReport, Report, Verdict, Violation};
