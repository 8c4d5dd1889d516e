//! `baton schedule ...`: create a schedule from flags and a job or workflow
//! file, list, read, pause, resume, delete and run schedules, and list their
//! runs. Times are printed as RFC 3339 UTC, plus the schedule's zone for a
//! cron schedule; `--json` prints the fields listed in docs/cli.md.

use std::path::PathBuf;

use baton_client::proto::cadence::Kind;
use baton_client::{Error, proto};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Value, json};

use crate::cli::{Global, print_json, print_page};
use crate::cli_time::{self, rfc3339, rfc3339_in};
use crate::{job_file, workflow_file};

// Parsed once per process: the size of the create variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ScheduleCmd {
    /// Create a schedule (idempotent by namespace and name).
    Create(CreateArgs),
    /// Replace a schedule's spec (same namespace and name, the flags of
    /// `create`); its next fire time is computed afresh, live runs go on.
    Update {
        id: u64,
        #[command(flatten)]
        args: CreateArgs,
    },
    /// Schedules with their next fire times and last runs.
    List {
        #[arg(long)]
        namespace: Option<String>,
        /// Schedules per page (1..=200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Start after this schedule id: the previous page's next_page_token.
        #[arg(long)]
        after: Option<u64>,
    },
    /// One schedule: its rule, next 5 fire times, live and recent runs.
    Get { id: u64 },
    /// Stop firing; fire times passed while paused are misfires on resume.
    Pause { id: u64 },
    /// Start firing again.
    Resume { id: u64 },
    /// Delete the schedule; its live runs go on.
    Delete { id: u64 },
    /// Start a run now, under the overlap policy.
    RunNow { id: u64 },
    /// The schedule's recent runs and skipped fires, newest first.
    Runs { id: u64 },
}

#[derive(Args, Debug, Clone, Default)]
#[command(group(ArgGroup::new("cadence").required(true).args(["cron", "every", "delay", "at"])))]
#[command(group(ArgGroup::new("template").required(true).args(["file", "workflow"])))]
pub struct CreateArgs {
    /// Unique in the namespace.
    #[arg(long)]
    pub name: String,
    /// A 5-field (minute first) or 6-field (second first) cron pattern.
    #[arg(long)]
    pub cron: Option<String>,
    /// The cron pattern's IANA time zone (default UTC).
    #[arg(long, requires = "cron")]
    pub tz: Option<String>,
    /// Fixed rate: fire every DUR (e.g. 30s, 5m).
    #[arg(long)]
    pub every: Option<String>,
    /// Fixed delay: fire DUR after the previous run ended.
    #[arg(long)]
    pub delay: Option<String>,
    /// Once, at TIME (RFC 3339 or ms since the Unix epoch).
    #[arg(long)]
    pub at: Option<String>,
    /// A job file (TOML or JSON; `-` for stdin): each run starts this job.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A workflow file (docs/workflows.md): each run starts this workflow.
    #[arg(long)]
    pub workflow: Option<PathBuf>,
    /// No fire before TIME.
    #[arg(long)]
    pub start: Option<String>,
    /// No fire after TIME.
    #[arg(long)]
    pub end: Option<String>,
    /// Each fire waits a deterministic offset below DUR.
    #[arg(long)]
    pub jitter: Option<String>,
    /// Missed fire times: skip, fire-once, or fire-all[:N] (the newest N, default 1000).
    #[arg(long)]
    pub misfire: Option<String>,
    /// How late a fire may be and still be on time (default 5s).
    #[arg(long)]
    pub misfire_grace: Option<String>,
    /// A fire while a run is live: skip (default), allow, cancel-previous or buffer-one.
    #[arg(long)]
    pub overlap: Option<String>,
    /// Default: the template file's namespace, else `default`.
    #[arg(long)]
    pub namespace: Option<String>,
}

/// A `--misfire` value.
pub fn parse_misfire(s: &str) -> Result<(proto::MisfirePolicy, u32), Error> {
    let bad = || Error::InvalidArgument(format!("--misfire {s:?}: use skip, fire-once or fire-all[:N]"));
    Ok(match s.split_once(':') {
        None if s == "skip" => (proto::MisfirePolicy::Skip, 0),
        None if s == "fire-once" => (proto::MisfirePolicy::FireOnce, 0),
        None if s == "fire-all" => (proto::MisfirePolicy::FireAll, 0),
        Some(("fire-all", n)) => (proto::MisfirePolicy::FireAll, n.parse().map_err(|_| bad())?),
        _ => return Err(bad()),
    })
}

/// An `--overlap` value.
pub fn parse_overlap(s: &str) -> Result<proto::OverlapPolicy, Error> {
    Ok(match s {
        "skip" => proto::OverlapPolicy::Skip,
        "allow" => proto::OverlapPolicy::Allow,
        "cancel-previous" => proto::OverlapPolicy::CancelPrevious,
        "buffer-one" => proto::OverlapPolicy::BufferOne,
        other => {
            return Err(Error::InvalidArgument(format!(
                "--overlap {other:?}: use skip, allow, cancel-previous or buffer-one"
            )));
        }
    })
}

/// The namespace of a schedule or trigger: `--namespace`, else the
/// template file's, else `default`; the two may not disagree.
pub fn namespace_of(flag: Option<&str>, file: &str) -> Result<String, Error> {
    match (flag, file) {
        (Some(f), file) if !file.is_empty() && f != file => Err(Error::InvalidArgument(format!(
            "--namespace {f:?} differs from the file's namespace {file:?}; give one or make them agree"
        ))),
        (Some(f), _) => Ok(f.to_string()),
        (None, "") => Ok("default".into()),
        (None, file) => Ok(file.to_string()),
    }
}

pub fn file_err(e: workflow_file::FileError) -> Error {
    Error::InvalidArgument(e.to_string())
}

/// The job spec in a job file (for schedules and triggers).
pub fn load_job(path: &std::path::Path) -> Result<proto::JobSpec, Error> {
    job_file::load(path).and_then(|f| f.into_spec(&path.display().to_string())).map_err(file_err)
}

/// The template as given (file already read): flags → spec. Pure.
pub fn spec_from(a: &CreateArgs, template: proto::schedule_spec::Template) -> Result<proto::ScheduleSpec, Error> {
    // clap drops `--tz`'s requirement of `--cron` when another cadence
    // (which conflicts with `--cron`) is given, so it is checked here.
    if a.tz.is_some() && a.cron.is_none() {
        return Err(Error::InvalidArgument("--tz is the zone of a --cron pattern; give --cron".into()));
    }
    let kind = match (&a.cron, &a.every, &a.delay, &a.at) {
        (Some(c), None, None, None) => {
            Kind::Cron(proto::CronCadence { pattern: c.clone(), time_zone: a.tz.clone().unwrap_or_default() })
        }
        (None, Some(d), None, None) => Kind::EveryMs(cli_time::duration_ms("--every", d)?),
        (None, None, Some(d), None) => Kind::DelayMs(cli_time::duration_ms("--delay", d)?),
        (None, None, None, Some(t)) => Kind::AtMs(cli_time::parse_time("--at", t)?),
        _ => return Err(Error::InvalidArgument("give exactly one of --cron, --every, --delay, --at".into())),
    };
    let file_ns = match &template {
        proto::schedule_spec::Template::Job(j) => j.namespace.clone(),
        proto::schedule_spec::Template::Workflow(w) => w.namespace.clone(),
    };
    let namespace = namespace_of(a.namespace.as_deref(), &file_ns)?;
    let (misfire, misfire_max) = a.misfire.as_deref().map(parse_misfire).transpose()?.unwrap_or_default();
    let opt_time = |flag: &str, v: &Option<String>| v.as_deref().map(|t| cli_time::parse_time(flag, t)).transpose();
    let opt_ms = |flag: &str, v: &Option<String>| v.as_deref().map(|d| cli_time::duration_ms(flag, d)).transpose();
    Ok(proto::ScheduleSpec {
        namespace,
        name: a.name.clone(),
        cadence: Some(proto::Cadence { kind: Some(kind) }),
        start_ms: opt_time("--start", &a.start)?.unwrap_or(0),
        end_ms: opt_time("--end", &a.end)?.unwrap_or(0),
        jitter_ms: opt_ms("--jitter", &a.jitter)?.unwrap_or(0),
        misfire: misfire as i32,
        misfire_max,
        misfire_grace_ms: opt_ms("--misfire-grace", &a.misfire_grace)?,
        overlap: a.overlap.as_deref().map(parse_overlap).transpose()?.unwrap_or_default() as i32,
        template: Some(template),
    })
}

/// Read the template file the flags name, then build the spec.
fn spec_from_files(a: &CreateArgs) -> Result<proto::ScheduleSpec, Error> {
    let template = match (&a.file, &a.workflow) {
        (Some(f), None) => proto::schedule_spec::Template::Job(load_job(f)?),
        (None, Some(w)) => proto::schedule_spec::Template::Workflow(workflow_file::load(w).map_err(file_err)?),
        _ => return Err(Error::InvalidArgument("give -f JOB_FILE or --workflow FILE".into())),
    };
    spec_from(a, template)
}

fn misfire_name(v: i32) -> &'static str {
    match proto::MisfirePolicy::try_from(v) {
        Ok(proto::MisfirePolicy::Skip) => "skip",
        Ok(proto::MisfirePolicy::FireOnce) => "fire_once",
        Ok(proto::MisfirePolicy::FireAll) => "fire_all",
        Err(_) => "unknown",
    }
}

fn overlap_name(v: i32) -> &'static str {
    match proto::OverlapPolicy::try_from(v) {
        Ok(proto::OverlapPolicy::Skip) => "skip",
        Ok(proto::OverlapPolicy::Allow) => "allow",
        Ok(proto::OverlapPolicy::CancelPrevious) => "cancel_previous",
        Ok(proto::OverlapPolicy::BufferOne) => "buffer_one",
        Err(_) => "unknown",
    }
}

pub fn outcome_name(v: i32) -> &'static str {
    match proto::RunOutcome::try_from(v) {
        Ok(proto::RunOutcome::Live) => "live",
        Ok(proto::RunOutcome::Buffered) => "buffered",
        Ok(proto::RunOutcome::Succeeded) => "succeeded",
        Ok(proto::RunOutcome::Failed) => "failed",
        Ok(proto::RunOutcome::Cancelled) => "cancelled",
        Ok(proto::RunOutcome::Skipped) => "skipped",
        _ => "unknown",
    }
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// The cron zone of a schedule, for printing its times (empty otherwise).
fn zone(s: &proto::Schedule) -> &str {
    match s.cadence.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(Kind::Cron(c)) if !c.time_zone.is_empty() => &c.time_zone,
        _ => "",
    }
}

/// `cron "*/5 * * * *" Europe/Berlin`, `every 30s`, `delay 1m`, `at TIME`.
pub fn cadence_text(c: Option<&proto::Cadence>) -> String {
    match c.and_then(|c| c.kind.as_ref()) {
        Some(Kind::Cron(c)) => {
            format!("cron {:?} {}", c.pattern, if c.time_zone.is_empty() { "UTC" } else { &c.time_zone })
        }
        Some(Kind::EveryMs(ms)) => format!("every {}", crate::cli_job::human_ms(*ms)),
        Some(Kind::DelayMs(ms)) => format!("delay {}", crate::cli_job::human_ms(*ms)),
        Some(Kind::AtMs(ms)) => format!("at {}", rfc3339(*ms)),
        None => "-".into(),
    }
}

fn cadence_json(c: Option<&proto::Cadence>) -> Value {
    match c.and_then(|c| c.kind.as_ref()) {
        Some(Kind::Cron(c)) => {
            json!({"cron": c.pattern, "time_zone": if c.time_zone.is_empty() { "UTC" } else { &c.time_zone }})
        }
        Some(Kind::EveryMs(ms)) => json!({"every_ms": ms}),
        Some(Kind::DelayMs(ms)) => json!({"delay_ms": ms}),
        Some(Kind::AtMs(ms)) => json!({"at_ms": ms}),
        None => Value::Null,
    }
}

/// The documented JSON form of a run.
pub fn run_json(r: &proto::ScheduleRun) -> Value {
    json!({
        "fire_ms": r.fire_ms, "manual": r.manual, "job_id": nonzero(r.job_id),
        "workflow_id": nonzero(r.workflow_id), "outcome": outcome_name(r.outcome),
        "reason": (!r.reason.is_empty()).then_some(&r.reason), "at_ms": nonzero(r.at_ms),
    })
}

/// The documented JSON form of a schedule.
pub fn schedule_json(s: &proto::Schedule) -> Value {
    json!({
        "id": s.id, "namespace": s.namespace, "name": s.name,
        "cadence": cadence_json(s.cadence.as_ref()),
        "start_ms": nonzero(s.start_ms), "end_ms": nonzero(s.end_ms), "jitter_ms": s.jitter_ms,
        "misfire": misfire_name(s.misfire), "misfire_max": nonzero(u64::from(s.misfire_max)),
        "misfire_grace_ms": s.misfire_grace_ms, "overlap": overlap_name(s.overlap),
        "template": {"kind": s.template_kind, "shards": nonzero(u64::from(s.template_shards)), "steps": nonzero(u64::from(s.template_steps))},
        "paused": s.paused, "next_fire_ms": nonzero(s.next_fire_ms), "upcoming_fire_ms": s.upcoming_fire_ms,
        "live_runs": s.live_runs.iter().map(run_json).collect::<Vec<_>>(),
        "buffered_fire_ms": nonzero(s.buffered_fire_ms),
        "recent_runs": s.recent_runs.iter().map(run_json).collect::<Vec<_>>(),
        "runs_started": s.runs_started, "fires_skipped": s.fires_skipped,
        "created_ms": s.created_ms, "updated_ms": s.updated_ms,
    })
}

/// `job 42 succeeded`, `workflow 7 live`, `skipped: a run is live ...`.
pub fn run_text(r: &proto::ScheduleRun) -> String {
    let target = match (r.job_id, r.workflow_id) {
        (0, 0) => String::new(),
        (j, 0) => format!("job {j} "),
        (_, w) => format!("workflow {w} "),
    };
    let manual = if r.manual { " (run now)" } else { "" };
    let reason = if r.reason.is_empty() { String::new() } else { format!(": {}", r.reason) };
    format!("{target}{}{manual}{reason}", outcome_name(r.outcome))
}

fn state(s: &proto::Schedule) -> &'static str {
    if s.paused {
        "paused"
    } else if s.next_fire_ms == 0 && s.live_runs.is_empty() {
        "done"
    } else {
        "active"
    }
}

/// The `list` table: a row per schedule, then its next fire times and
/// last runs indented below it.
pub fn list_table(schedules: &[proto::Schedule]) -> String {
    let mut out = format!(
        "{:>6}  {:<16} {:<20} {:<7} {:>6} {:>7}  CADENCE\n",
        "ID", "NAMESPACE", "NAME", "STATE", "RUNS", "SKIPPED"
    );
    for s in schedules {
        out.push_str(&format!(
            "{:>6}  {:<16} {:<20} {:<7} {:>6} {:>7}  {}\n",
            s.id,
            s.namespace,
            s.name,
            state(s),
            s.runs_started,
            s.fires_skipped,
            cadence_text(s.cadence.as_ref())
        ));
        let z = zone(s);
        for (i, t) in s.upcoming_fire_ms.iter().enumerate() {
            let label = if i == 0 { "next" } else { "    " };
            out.push_str(&format!("        {label} {}\n", rfc3339_in(*t, z)));
        }
        for (i, r) in s.recent_runs.iter().enumerate() {
            let label = if i == 0 { "last" } else { "    " };
            out.push_str(&format!("        {label} {}  {}\n", rfc3339_in(r.fire_ms, z), run_text(r)));
        }
    }
    out
}

/// The `get` view.
pub fn schedule_text(s: &proto::Schedule) -> String {
    let z = zone(s);
    let mut out = format!(
        "schedule {} {:?} in {}: {}, {}\n",
        s.id,
        s.name,
        s.namespace,
        state(s),
        cadence_text(s.cadence.as_ref())
    );
    let template = match s.template_kind.as_str() {
        "job" => format!("a job of {} shard(s)", s.template_shards),
        "workflow" => format!("a workflow of {} step(s)", s.template_steps),
        other => other.to_string(),
    };
    let misfire = match (misfire_name(s.misfire), s.misfire_max) {
        ("fire_all", n) => format!("fire_all:{n}"),
        (m, _) => m.to_string(),
    };
    out.push_str(&format!(
        "  runs {template}; misfire {misfire} (grace {}); overlap {}; jitter {}\n",
        crate::cli_job::human_ms(s.misfire_grace_ms),
        overlap_name(s.overlap),
        crate::cli_job::human_ms(s.jitter_ms)
    ));
    if s.start_ms != 0 {
        out.push_str(&format!("  from {}\n", rfc3339_in(s.start_ms, z)));
    }
    if s.end_ms != 0 {
        out.push_str(&format!("  until {}\n", rfc3339_in(s.end_ms, z)));
    }
    out.push_str(&format!("  runs started {}, fires skipped {}\n", s.runs_started, s.fires_skipped));
    if s.upcoming_fire_ms.is_empty() {
        out.push_str("  no fire time left\n");
    }
    for t in &s.upcoming_fire_ms {
        out.push_str(&format!("  next {}\n", rfc3339_in(*t, z)));
    }
    for r in &s.live_runs {
        out.push_str(&format!("  live {}\n", run_text(r)));
    }
    if s.buffered_fire_ms != 0 {
        out.push_str(&format!("  buffered {}\n", rfc3339_in(s.buffered_fire_ms, z)));
    }
    if !s.recent_runs.is_empty() {
        out.push_str(&runs_table(&s.recent_runs, z));
    }
    out
}

/// The `runs` table, newest first.
pub fn runs_table(runs: &[proto::ScheduleRun], zone: &str) -> String {
    let mut out = format!("{:<24}  RUN\n", "FIRE TIME");
    for r in runs {
        out.push_str(&format!("{:<24}  {}\n", rfc3339_in(r.fire_ms, zone), run_text(r)));
    }
    out
}

fn say(g: &Global, v: Value, text: String) {
    if g.json { print_json(&v) } else { println!("{text}") }
}

fn next_text(next_fire_ms: u64) -> String {
    if next_fire_ms == 0 { "no fire time left".into() } else { format!("next fire {}", rfc3339(next_fire_ms)) }
}

pub async fn schedule(g: &Global, cmd: ScheduleCmd) -> Result<(), Error> {
    let client = g.client()?;
    match cmd {
        ScheduleCmd::Create(a) => {
            let r = client.create_schedule(spec_from_files(&a)?).await?;
            say(
                g,
                json!({"schedule_id": r.schedule_id, "duplicate": r.duplicate, "next_fire_ms": nonzero(r.next_fire_ms)}),
                format!(
                    "schedule {} {}; {}",
                    r.schedule_id,
                    if r.duplicate { "already existed" } else { "created" },
                    next_text(r.next_fire_ms)
                ),
            );
        }
        ScheduleCmd::Update { id, args } => {
            let r = client.update_schedule(id, spec_from_files(&args)?).await?;
            say(
                g,
                json!({"schedule_id": r.schedule_id, "paused": r.paused, "next_fire_ms": nonzero(r.next_fire_ms)}),
                format!("schedule {} updated; {}", r.schedule_id, next_text(r.next_fire_ms)),
            );
        }
        ScheduleCmd::List { namespace, limit, after } => {
            let r = client
                .list_schedules(proto::ListSchedulesRequest {
                    namespace: namespace.unwrap_or_default(),
                    page_size: limit,
                    page_token: after.unwrap_or(0),
                    ..Default::default()
                })
                .await?;
            let items = r.schedules.iter().map(schedule_json).collect();
            print_page(g, "schedules", items, &list_table(&r.schedules), r.next_page_token);
        }
        ScheduleCmd::Get { id } => {
            let s = client.get_schedule(id).await?;
            if g.json { print_json(&schedule_json(&s)) } else { print!("{}", schedule_text(&s)) }
        }
        ScheduleCmd::Pause { id } | ScheduleCmd::Resume { id } => {
            let pause = matches!(cmd, ScheduleCmd::Pause { .. });
            let r = if pause { client.pause_schedule(id).await? } else { client.resume_schedule(id).await? };
            say(
                g,
                json!({"schedule_id": id, "paused": r.paused, "next_fire_ms": nonzero(r.next_fire_ms)}),
                format!("schedule {id} {}", if r.paused { "paused" } else { "resumed" }),
            );
        }
        ScheduleCmd::Delete { id } => {
            client.delete_schedule(id).await?;
            say(g, json!({"schedule_id": id, "deleted": true}), format!("schedule {id} deleted"));
        }
        ScheduleCmd::RunNow { id } => {
            let r = client.run_schedule_now(id).await?;
            let text = match (r.job_id, r.workflow_id) {
                (0, 0) => format!("schedule {id} started no run: {}", r.skipped_reason),
                (j, 0) => format!("schedule {id} started job {j}"),
                (_, w) => format!("schedule {id} started workflow {w}"),
            };
            say(
                g,
                json!({"schedule_id": id, "fire_ms": r.fire_ms, "job_id": nonzero(r.job_id),
                       "workflow_id": nonzero(r.workflow_id),
                       "skipped_reason": (!r.skipped_reason.is_empty()).then_some(&r.skipped_reason)}),
                text,
            );
        }
        ScheduleCmd::Runs { id } => {
            let r = client.schedule_runs(id).await?;
            if g.json {
                print_json(&json!({
                    "schedule_id": id, "runs_started": r.runs_started, "fires_skipped": r.fires_skipped,
                    "runs": r.runs.iter().map(run_json).collect::<Vec<_>>(),
                }));
            } else {
                // The zone is the schedule's: read it once for the times.
                let z = client.get_schedule(id).await.map(|s| zone(&s).to_string()).unwrap_or_default();
                print!("{}", runs_table(&r.runs, &z));
                println!("runs started {}, fires skipped {}", r.runs_started, r.fires_skipped);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "cli_schedule_tests.rs"]
mod tests;
