//! The real-process harness: a local cluster of `baton serve` processes,
//! chaos worker processes, a workload, seeded nemeses, and the recorder that
//! turns what they saw into a [`History`](crate::History) for the checker.
//!
//! [`run::run`] performs one run, phase by phase; [`faults`] injects and
//! undoes faults, [`workload`] drives the clients, [`final_read`] reads the
//! final task table, [`summary`] condenses a run into its row, and
//! [`profile`] holds the smoke and soak profiles and the summary table.

pub mod cluster;
mod faults;
mod final_read;
pub mod nemesis;
pub mod net;
pub mod profile;
pub mod record;
pub mod run;
mod schedules;
pub mod secure;
pub mod summary;
pub mod worker;
mod workload;
