//! Named limits. Every size the state machine accepts is bounded here, because
//! apply() must stay cheap and deterministic whatever a client sends, and one
//! entry must fit comfortably inside a Raft append and a RocksDB write batch.
//!
//! These are compile-time constants on purpose: apply() on every replica must
//! reach the same verdict for the same entry, so a per-node setting here would
//! break determinism. The coordinator may enforce *tighter* limits at its edge.

/// Largest encoded record the codec will decode (64 MiB). Guards decoding of
/// corrupt bytes against absurd allocations; larger than any legal entry.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Most shards in one job. 100k keeps a single SubmitJob entry (and its apply)
/// to a bounded amount of work; bigger jobs are split by the client.
pub const MAX_SHARDS_PER_JOB: usize = 100_000;

/// Largest encoded command the edge lets into the log (1 MiB + 64 KiB of
/// envelope). openraft 0.9 gives every AppendEntries one heartbeat interval
/// (30 ms by default) to be encoded, sent, appended and fsynced by the
/// follower; a single entry cannot be split across requests, so an entry
/// larger than what moves in that time never commits and every write behind
/// it stalls. 1 MiB takes about 9 ms on 1 GbE.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024 + 64 * 1024;

/// Largest payload of one shard (1 MiB). Payloads travel in log entries and
/// down worker streams; big inputs belong in object storage, referenced here.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Largest sum of shard payloads in one job (1 MiB), so that a SubmitJob
/// fits in one entry of at most [`MAX_ENTRY_BYTES`].
pub const MAX_JOB_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Largest result of one shard (1 MiB); results are kept in the task table.
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;

/// Longest error message kept for a failed attempt (4 KiB). Longer messages
/// are rejected by validation; the SDK truncates before sending.
pub const MAX_ERROR_BYTES: usize = 4096;

/// Longest progress message (1 KiB).
pub const MAX_PROGRESS_MESSAGE_BYTES: usize = 1024;

/// Most labels or constraints on a job or worker.
pub const MAX_LABELS: usize = 32;

/// Longest label key or value, namespace, job name or worker name (bytes).
pub const MAX_NAME_BYTES: usize = 128;

/// Longest idempotency key (bytes).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

/// Most commands in one Batch entry. The coordinator's batcher groups at most
/// this many requests, so one entry's apply cost is bounded.
pub const MAX_BATCH_COMMANDS: usize = 4096;

/// Most assignments or timeouts in one AssignTasks/TimeoutAttempts command.
pub const MAX_ITEMS_PER_COMMAND: usize = 10_000;

/// Highest max_attempts a job may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 1000;

/// Most namespaces one worker session may be restricted to: a credential
/// names its namespaces one by one, and the record is read on every
/// planning round, so the list stays short.
pub const MAX_WORKER_NAMESPACES: usize = 64;

/// Highest worker capacity (concurrent tasks per session).
pub const MAX_WORKER_CAPACITY: u32 = 10_000;

/// Longest per-attempt timeout or backoff (7 days, in ms).
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;

/// Default per-attempt timeout when a job gives none (30 minutes).
pub const ATTEMPT_TIMEOUT_MS_DEFAULT: u64 = 30 * 60 * 1000;

/// Default first retry backoff (1 s) and cap (60 s).
pub const BACKOFF_BASE_MS_DEFAULT: u64 = 1000;
pub const BACKOFF_MAX_MS_DEFAULT: u64 = 60_000;

/// Default max attempts when a job gives none.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 3;

/// How long an idempotency key dedups a resubmission when its namespace sets
/// no window of its own (24 h, in ms). Client retries happen within seconds
/// to minutes; a day is generous.
pub const IDEMPOTENCY_WINDOW_MS_DEFAULT: u64 = 24 * 3600 * 1000;

/// Shortest idempotency window a namespace may set (1 s, in ms). Below that a
/// client's own retry (backoff plus a round trip) could outlive the record and
/// create a second job. A positive window also puts every new record's expiry
/// after the entry's time, which the pruning cursor relies on.
pub const IDEMPOTENCY_WINDOW_MS_MIN: u64 = 1000;

/// Longest idempotency window a namespace may set (7 days, in ms). Every
/// record stays on disk for its window whatever the job's retention, so this
/// bounds the table at 7 days of submits.
pub const IDEMPOTENCY_WINDOW_MS_MAX: u64 = 7 * 24 * 3600 * 1000;

/// Expired idempotency keys an applied entry may prune, before its
/// commands' share ([`IDEMPOTENCY_PRUNE_PER_COMMAND`]). Pruning is spread
/// over entries so no single apply does unbounded work.
pub const IDEMPOTENCY_PRUNE_PER_ENTRY: usize = 64;

/// Expired idempotency keys an entry may prune for each command it carries
/// (2): a command writes at most one key, so pruning keeps pace with
/// writing however busy the entries are. A fixed budget per entry let a
/// stream of large batches write keys faster than they were pruned.
pub const IDEMPOTENCY_PRUNE_PER_COMMAND: usize = 2;

/// What an entry carrying `commands` commands may prune.
pub const fn idempotency_prune_budget(commands: usize) -> usize {
    IDEMPOTENCY_PRUNE_PER_ENTRY + IDEMPOTENCY_PRUNE_PER_COMMAND * commands
}

/// Largest not-before offset into the future accepted at submit (30 days).
pub const MAX_NOT_BEFORE_AHEAD_MS: u64 = 30 * 24 * 3600 * 1000;

/// Most live worker sessions. Each costs a little memory on every node.
pub const MAX_LIVE_SESSIONS: usize = 100_000;

/// Most pending + assigned tasks across all jobs (10 M). The scheduler's
/// indexes hold every live task in memory; this caps that memory
/// (about 50 bytes each) and turns overload into RESOURCE_EXHAUSTED.
pub const MAX_LIVE_TASKS: u64 = 10_000_000;

/// Steps in one workflow. The workflow's record holds every step's state and
/// is rewritten by each entry that moves a step, so it is kept to tens of KiB.
pub const MAX_STEPS_PER_WORKFLOW: usize = 1000;

/// Dependency edges in one workflow (names in all its steps' `depends_on`,
/// counted together): each is evaluated when its source step finishes, so
/// this bounds the work one entry can cause.
pub const MAX_EDGES_PER_WORKFLOW: usize = 10_000;

/// Steps on the longest dependency chain. Each link costs at least one
/// commit round trip, so a deeper chain is better split into workflows.
pub const MAX_WORKFLOW_DEPTH: usize = 500;

/// Shards a dynamic map's generator may emit. Its result carries them, so
/// they also fit [`MAX_RESULT_BYTES`].
pub const MAX_DYNAMIC_CHILDREN: usize = 10_000;

/// Longest gate timeout, like every other duration.
pub const MAX_GATE_TIMEOUT_MS: u64 = MAX_DURATION_MS;

/// Live (unfinished) workflows: each keeps its record in memory.
pub const MAX_LIVE_WORKFLOWS: usize = 100_000;

/// How long a finished job or workflow is kept when neither it nor its
/// namespace sets a retention (7 days, in ms). After that it is deleted with
/// its tasks, payloads, results and logs, so disk use follows the load.
pub const RETENTION_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;

/// Longest retention a job or namespace may ask for (366 days, in ms).
pub const MAX_RETENTION_MS: u64 = 366 * 24 * 3600 * 1000;

/// How long an ended worker session is kept for `ListWorkers` and for
/// reports that arrive late (1 hour, in ms). Its worker-name record goes with
/// it when no newer session took the name.
pub const SESSION_RETENTION_MS: u64 = 3600 * 1000;

/// Keys the garbage collector may delete per applied entry, before its
/// commands' share ([`GC_KEYS_PER_COMMAND`]). Deletion runs inside apply(),
/// so a follower catching up on a backlog does bounded work per entry and
/// never stalls; 512 deletes are a few hundred microseconds.
pub const GC_KEYS_PER_ENTRY: usize = 512;

/// Keys the collector may delete per command an entry carries (16). A fixed
/// budget per entry fell behind creation under load: a busy leader puts a
/// few hundred commands in one entry, creating more keys than 512, and the
/// backlog (with the disk) grew without end. 16 is more than a command's own
/// keys (a single-shard job has about 8 over its life; each shard of a larger
/// job has a report of its own), so collection keeps pace, and an entry's
/// deletions stay proportional to the rest of its work.
pub const GC_KEYS_PER_COMMAND: usize = 16;

/// What the collector may delete in an entry carrying `commands` commands.
pub const fn gc_budget(commands: usize) -> usize {
    GC_KEYS_PER_ENTRY + GC_KEYS_PER_COMMAND * commands
}

/// Longest log line (4 KiB); the SDK truncates longer ones and says so.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// Most lines in one AppendLogs command; the SDK flushes at most this many.
/// 256 lines of the longest length are 1 MiB of messages, so the command
/// fits one log entry ([`MAX_ENTRY_BYTES`]) whatever its lines.
pub const MAX_LOG_LINES_PER_COMMAND: usize = 256;

/// Bytes of log messages a `CompleteTask` or `FailTask` may carry with it
/// (32 KiB, the SDK's flush size): an attempt's last lines ride with its
/// report, one command per task instead of two, and a result of
/// [`MAX_RESULT_BYTES`] plus these still fits one entry. More lines go
/// ahead of the report as `AppendLogs`.
pub const MAX_REPORT_LOG_BYTES: usize = 32 * 1024;

/// Bytes of messages kept per attempt (256 KiB). The attempt's record is
/// rewritten on each append, so it stays small; older lines are dropped
/// first and counted.
pub const MAX_LOG_BYTES_PER_ATTEMPT: u64 = 256 * 1024;

/// Bytes of log messages accepted per job over all its attempts (64 MiB).
/// Past it, a flush's lines are refused and counted as dropped: a chatty job
/// cannot fill the replicas' disks.
pub const MAX_LOG_BYTES_PER_JOB: u64 = 64 * 1024 * 1024;

/// Namespaces with stored settings: each is held in memory on every node.
pub const MAX_NAMESPACE_RECORDS: usize = 10_000;

/// Bytes each stored log line is charged beyond its message (its time,
/// level and framing), against [`MAX_LOG_BYTES_PER_ATTEMPT`] and
/// [`MAX_LOG_BYTES_PER_JOB`]: empty lines cost something too, so no flood of
/// them can grow an attempt's record or a job's logs without bound.
pub const LOG_LINE_OVERHEAD_BYTES: u64 = 16;

/// Most schedules a cluster holds (live or paused). Every schedule record is
/// kept in memory on every node (its template is not), and the leader scans
/// only the due ones, so this bounds memory, not per-entry work.
pub const MAX_SCHEDULES: usize = 10_000;

/// Most event triggers a cluster holds; like schedules, kept in memory.
pub const MAX_TRIGGERS: usize = 10_000;

/// Most triggers on one (namespace, topic). One PublishEvent starts a run
/// for each matching trigger in its own entry, so this bounds that entry.
pub const MAX_TRIGGERS_PER_TOPIC: usize = 16;

/// Shortest period of a fixed-rate schedule and shortest delay of a
/// fixed-delay one (1 s): a cron pattern's finest grain is a second too.
/// Faster firing is a stream, not a schedule; each fire is a log entry.
pub const MIN_SCHEDULE_PERIOD_MS: u64 = 1000;

/// Longest cron pattern (bytes).
pub const MAX_CRON_BYTES: usize = 256;

/// Longest IANA time-zone name (bytes).
pub const MAX_TIME_ZONE_BYTES: usize = 64;

/// Largest jitter of a schedule (1 h). A fire waits a deterministic offset
/// below it, so many schedules on the same minute do not fire together.
pub const MAX_SCHEDULE_JITTER_MS: u64 = 3600 * 1000;

/// How late a fire may be and still count as on time (default 5 s): a fire
/// applied later than its due time plus this grace was missed, and the
/// schedule's misfire policy decides what to do with it. A leader failover
/// takes well under this, so a healthy cluster's fires are never misfires.
pub const MISFIRE_GRACE_MS_DEFAULT: u64 = 5000;

/// Largest misfire grace a schedule may set (1 day).
pub const MAX_MISFIRE_GRACE_MS: u64 = 24 * 3600 * 1000;

/// Most missed fire times a `fire_all` schedule catches up on after an outage
/// or a pause; older missed times are skipped. Each caught-up fire is one entry.
pub const MAX_FIRE_ALL_CATCH_UP: u32 = 1000;

/// Most runs of one schedule that may be live at once under the `allow`
/// overlap policy; a fire beyond it is skipped with that reason. Bounds the
/// live-run list in the schedule's record.
pub const MAX_LIVE_RUNS_PER_SCHEDULE: usize = 64;

/// Most recent runs (fired or skipped) a schedule's record remembers for
/// reads; older ones drop off (their jobs stay, until retention).
pub const MAX_RECENT_RUNS: usize = 50;

/// Longest event topic (bytes).
pub const MAX_TOPIC_BYTES: usize = 128;

/// Most debounce keys one trigger remembers; the oldest is forgotten first.
pub const MAX_DEBOUNCE_KEYS: usize = 1024;

/// Longest debounce window (1 day).
pub const MAX_DEBOUNCE_MS: u64 = 24 * 3600 * 1000;

/// Most event gates that may wait on one (namespace, topic) at once. A
/// publish opens every matching one in its own entry, so this bounds that
/// entry; a gate that would pass it fails when it starts, saying why.
pub const MAX_EVENT_GATES_PER_TOPIC: usize = 1000;
