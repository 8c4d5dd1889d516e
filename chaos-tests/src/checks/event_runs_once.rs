//! **event_runs_once**: one published event id starts one run set (issue
//! 14's third schedule invariant).
//!
//! - At most one job per (trigger, event id) in the final state.
//! - At most one acknowledged publish of an event id (per namespace) is not
//!   a duplicate: the others must answer `duplicate`, and a duplicate
//!   reports no run.
//! - Every run a non-duplicate publish reported exists in the final state
//!   and names that trigger and event id; and every job of that event in the
//!   final state is one the publish reported.
//! - Every job started by an event names an event id some acknowledged
//!   publish carried (no_phantom_jobs does not judge runs, which have no key).

use std::collections::{BTreeMap, BTreeSet};

use super::facts::Facts;
use crate::history::{EventPublish, JobId, RunOf, TriggerId};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    // Acknowledged publishes by (namespace, event id); needs no final state.
    let mut by_id: BTreeMap<(&str, &str), Vec<(u64, &EventPublish)>> = BTreeMap::new();
    for &(seq, p) in &f.publishes {
        by_id.entry((p.namespace.as_str(), p.event_id.as_str())).or_default().push((seq, p));
        if p.duplicate && p.runs.iter().any(|r| r.job.is_some()) {
            let jobs: Vec<String> = p.runs.iter().filter_map(|r| r.job).map(|j| format!("job {j}")).collect();
            out.flag(format!(
                "the publish of event {:?} by {} at seq {seq} answered duplicate but reported runs ({}): a duplicate \
                 starts nothing",
                p.event_id,
                p.client,
                jobs.join(", ")
            ))
            .seqs([seq]);
        }
    }
    let mut first_new: BTreeMap<(&str, &str), (u64, &EventPublish)> = BTreeMap::new();
    for (key, list) in &by_id {
        let news: Vec<_> = list.iter().filter(|(_, p)| !p.duplicate).collect();
        if let Some(first) = news.first() {
            first_new.insert(*key, **first);
        }
        if news.len() > 1 {
            let seqs: Vec<String> = news.iter().map(|(s, _)| format!("seq {s}")).collect();
            out.flag(format!(
                "event {:?} in namespace {:?} was acknowledged as new {} times ({}): the second must answer duplicate",
                key.1,
                key.0,
                news.len(),
                seqs.join(", ")
            ))
            .seqs(news.iter().map(|(s, _)| *s));
        }
    }

    let Some(fin) = f.final_state() else {
        if f.publishes.is_empty() {
            out.note("no event was published and there is no final state: nothing to judge");
            return;
        }
        return super::no_final_state(out, "how many runs each event started");
    };
    let mut runs: BTreeMap<(TriggerId, &str), Vec<JobId>> = BTreeMap::new();
    for j in &fin.state.jobs {
        if let Some(RunOf::Event { trigger, event_id }) = &j.run_of {
            runs.entry((*trigger, event_id.as_str())).or_default().push(j.id);
        }
    }
    let published: BTreeSet<&str> = f.publishes.iter().map(|(_, p)| p.event_id.as_str()).collect();
    for ((trigger, event_id), jobs) in &runs {
        if jobs.len() > 1 {
            let ids: Vec<String> = jobs.iter().map(|j| format!("job {j}")).collect();
            out.flag(format!(
                "trigger {trigger} has {} runs of event {event_id:?} in the final state (seq {}): {}; one event \
                 starts one run per trigger",
                jobs.len(),
                fin.seq,
                ids.join(", ")
            ))
            .job(jobs[1])
            .seqs([fin.seq]);
        }
        if !published.contains(event_id) {
            out.flag(format!(
                "job {} in the final state (seq {}) is trigger {trigger}'s run of event {event_id:?}, which no \
                 acknowledged publish carried",
                jobs[0], fin.seq
            ))
            .job(jobs[0])
            .seqs([fin.seq]);
        }
    }
    let mut reported_runs = 0;
    for ((_, event_id), (seq, p)) in &first_new {
        let mut reported: BTreeSet<(TriggerId, JobId)> = BTreeSet::new();
        for r in &p.runs {
            let Some(job) = r.job else { continue };
            reported_runs += 1;
            reported.insert((r.trigger, job));
            let fj = fin.state.job(job);
            let matches = fj
                .is_some_and(|j| j.run_of == Some(RunOf::Event { trigger: r.trigger, event_id: event_id.to_string() }));
            if !matches {
                let what = match fj {
                    None => "is not in the final state".to_string(),
                    Some(j) => format!("names {:?} as its start", j.run_of),
                };
                out.flag(format!(
                    "the publish of event {event_id:?} at seq {seq} reported job {job} for trigger {}, but job {job} \
                     {what} (final state at seq {})",
                    r.trigger, fin.seq
                ))
                .job(job)
                .seqs([*seq, fin.seq]);
            }
        }
        for ((trigger, id), jobs) in runs.iter().filter(|((_, id), _)| id == event_id) {
            for job in jobs.iter().filter(|j| !reported.contains(&(*trigger, **j))) {
                out.flag(format!(
                    "job {job} in the final state (seq {}) is trigger {trigger}'s run of event {id:?}, but the \
                     publish at seq {seq} did not report it",
                    fin.seq
                ))
                .job(*job)
                .seqs([*seq, fin.seq]);
            }
        }
    }
    out.note(format!(
        "{} event ids published, {reported_runs} reported runs and {} (trigger, event) run sets checked",
        by_id.len(),
        runs.len()
    ));
}
