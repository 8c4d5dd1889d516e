//! The Baton coordinator: a node of the Raft cluster that holds the task
//! table, serves the public gRPC API, and, while it is the leader, assigns
//! shards, detects dead workers and reassigns their tasks.
//!
//! Layout: [`node`] wires everything; [`identity`] says who the node is and
//! admits peers' messages, [`bootstrap`] forms a new cluster once;
//! [`network`] is the Raft transport;
//! [`proposer`] batches commands into log entries, stamped in log time by
//! [`clock`]; [`leader`] is the leader's pure core and the task that runs it;
//! [`scheduler`] is the pure `plan()`; [`api`] holds the gRPC services;
//! [`http`] the metrics and health endpoints; [`auth`] authenticates and
//! authorizes every API call before a handler runs, and [`audit`] records
//! admin and operator actions and refusals.
//!
//! What this crate never does:
//! - change the task table except by proposing a command through Raft;
//! - make a safety decision from a clock: time is only stamped into entries
//!   (apply() re-checks everything) or used for liveness (leases, timers);
//! - block a worker stream or the leader task on an unbounded queue.

pub mod api;
pub mod audit;
pub mod auth;
pub mod bootstrap;
pub mod cli;
pub mod cli_auth;
pub mod cli_certs;
pub mod cli_event;
pub mod cli_job;
pub mod cli_logs;
pub mod cli_recovery;
pub mod cli_schedule;
pub mod cli_time;
pub mod cli_trigger;
pub mod cli_workflow;
pub mod clock;
pub mod config;
pub mod dev;
pub mod error;
pub mod http;
pub mod identity;
pub mod job_file;
pub mod leader;
pub mod network;
pub mod node;
pub mod proposer;
pub mod scheduler;
pub mod snapshot_trigger;
pub mod tls;
pub mod token_bucket;
pub mod workflow_file;
