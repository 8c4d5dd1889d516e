//! `baton-check`: re-check a saved chaos history offline.
//!
//! Exit status: 0 when every invariant holds, 1 when any fails, 2 when the
//! history cannot be read (or the arguments are wrong).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use baton_chaos::{Config, History, Report, check};
use clap::Parser;

/// Check a Baton chaos history (JSONL) against every invariant.
#[derive(Debug, Parser)]
#[command(name = "baton-check", version)]
struct Args {
    /// The history file, one JSON event per line.
    history: PathBuf,
    /// Longest allowed time from the last heal to the drained final state.
    #[arg(long, value_name = "MS", default_value_t = Config::DEFAULT_LIVENESS_BOUND_MS)]
    liveness_bound_ms: u64,
    /// Added to the run's TTL + check interval when judging how soon a dead
    /// worker's tasks were granted again.
    #[arg(long, value_name = "MS", default_value_t = Config::DEFAULT_REASSIGN_SLACK_MS)]
    reassign_slack_ms: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let history = match History::read(&args.history) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("baton-check: cannot read history: {e}");
            return ExitCode::from(2);
        }
    };
    let config = Config { liveness_bound_ms: args.liveness_bound_ms, reassign_slack_ms: args.reassign_slack_ms };
    let report = check(&history, &config);
    if let Err(e) = print(&report, args.json) {
        eprintln!("baton-check: {e:#}");
        return ExitCode::from(2);
    }
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, report).context("writing the JSON report")?;
        writeln!(out).context("writing the JSON report")?;
    } else {
        out.write_all(report.render_text().as_bytes()).context("writing the report")?;
    }
    out.flush().context("writing the report")
}
