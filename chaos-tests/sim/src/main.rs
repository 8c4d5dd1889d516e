//! `baton-sim`: run the deterministic simulation for one seed or a range.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use baton_sim::{SimConfig, TABLE_HEADER, parse_seed_range, run, table_row};

#[derive(Parser, Debug)]
#[command(name = "baton-sim", about = "Baton's deterministic simulation: one seed, or a range of seeds")]
struct Args {
    /// Run one seed and print its trace hash and the checker's verdict.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run a half-open range of seeds, `A..B`, and print a summary table.
    #[arg(long)]
    seeds: Option<String>,
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    nodes: usize,
    /// Nemesis steps (one fault each).
    #[arg(long, default_value_t = SimConfig::default().steps)]
    steps: usize,
    /// Largest wall-clock skew of a node, either way (ms); 0 runs every node on true time.
    #[arg(long, default_value_t = SimConfig::default().max_skew_ms)]
    max_skew_ms: u64,
    /// Inject the known bug: acknowledge log appends before fsync.
    #[arg(long)]
    ack_before_fsync: bool,
    /// Inject the old clock bug: leaders use their wall clock as log time.
    #[arg(long)]
    wall_clock_as_log_time: bool,
    /// Inject an entry past the size limit: the first job carries this many payload bytes.
    #[arg(long)]
    oversized_job_bytes: Option<usize>,
    /// With --seed: write the history (JSONL) here, for `baton-check`.
    #[arg(long)]
    history: Option<PathBuf>,
    /// With --seed: print the checker's full report.
    #[arg(long)]
    report: bool,
    /// Print every simulated event (the trace) to stderr.
    #[arg(long)]
    trace: bool,
}

fn parse_nodes(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("{s} nodes: the simulation runs 3 or 5")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = SimConfig {
        nodes: args.nodes,
        steps: args.steps,
        ack_before_fsync: args.ack_before_fsync,
        max_skew_ms: args.max_skew_ms,
        wall_clock_as_log_time: args.wall_clock_as_log_time,
        print_trace: args.trace,
        oversized_job_bytes: args.oversized_job_bytes,
        ..SimConfig::default()
    };
    match (args.seed, &args.seeds) {
        (Some(seed), _) => {
            let started = Instant::now();
            let o = run(seed, &config);
            println!("{o}");
            println!("trace hash: {}", o.trace_hash);
            if let Some(path) = &args.history {
                if let Err(e) = o.history.write(path) {
                    eprintln!("cannot write {}: {e}", path.display());
                    return ExitCode::from(2);
                }
                println!("history: {} ({} events)", path.display(), o.history.len());
            }
            if args.report || !o.passed() {
                print!("{}", o.report.render_text());
            }
            for v in &o.sim_violations {
                println!("sim violation: {v}");
            }
            println!("verdict: {} ({:.2}s wall)", o.verdict(), started.elapsed().as_secs_f64());
            if o.passed() {
                ExitCode::SUCCESS
            } else {
                println!("replay: {}", o.replay_command());
                ExitCode::FAILURE
            }
        }
        (None, Some(range)) => {
            let range = match parse_seed_range(range) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            println!("seeds {}..{} on {} nodes, {} steps", range.start, range.end, config.nodes, config.steps);
            println!("{TABLE_HEADER}");
            let started = Instant::now();
            let mut failed = Vec::new();
            for seed in range.clone() {
                let o = run(seed, &config);
                println!("{}", table_row(&o));
                if !o.passed() {
                    failed.push(o);
                }
            }
            println!(
                "{} seeds, {} failed, {:.1}s wall",
                range.end - range.start,
                failed.len(),
                started.elapsed().as_secs_f64()
            );
            for o in &failed {
                println!("seed {} failed {:?}; replay: {}", o.seed, o.failed_invariants(), o.replay_command());
                for v in &o.sim_violations {
                    println!("  sim violation: {v}");
                }
            }
            if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        (None, None) => {
            eprintln!("give --seed N or --seeds A..B");
            ExitCode::from(2)
        }
    }
}
