//! **workflows_finish**: every workflow reaches a terminal state after heal
//! (issue 12's third workflow invariant).
//!
//! Every acknowledged workflow is in the final state; every workflow there
//! has a terminal status and only terminal steps; and the status agrees with
//! the steps: succeeded with no failed or cancelled step, failed with a
//! failed step, cancelled only if a client asked (`workflow_cancel`).

use super::facts::Facts;
use super::flows::Flows;
use crate::history::{StepState, WorkflowStatus};
use crate::report::InvariantReport;

pub(super) fn check(f: &Facts<'_>, out: &mut InvariantReport) {
    let Some(flows) = Flows::new(f, out, "that every workflow finished") else { return };
    let fin = flows.fin;
    let mut missing = std::collections::BTreeSet::new();
    for s in &f.workflow_submits {
        let Some(wf) = s.acked() else { continue };
        if fin.state.workflow(wf).is_none() && missing.insert(wf) {
            let reply = s.reply.map_or(s.invoke_seq, |(seq, _)| seq);
            out.flag(format!(
                "{} was acknowledged as workflow {wf} at seq {reply}, but workflow {wf} is not in the final state \
                 (seq {})",
                s.describe(),
                fin.seq
            ))
            .seqs([s.invoke_seq, reply, fin.seq]);
        }
    }
    let mut terminal = 0;
    for flow in &flows.flows {
        let rec = flow.rec;
        let open: Vec<String> = rec
            .steps
            .iter()
            .filter(|s| !s.state.is_terminal())
            .map(|s| format!("{} {}", s.name, s.state.name()))
            .collect();
        if !rec.status.is_terminal() || !open.is_empty() {
            out.flag(format!(
                "workflow {} is still {} in the final state (seq {}) with steps [{}]: after heal and drain every \
                 workflow must finish",
                rec.id,
                rec.status.name(),
                fin.seq,
                open.join(", ")
            ))
            .seqs([fin.seq]);
            continue;
        }
        terminal += 1;
        let failed = rec.steps.iter().filter(|s| s.state == StepState::Failed).count();
        let cancelled = rec.steps.iter().filter(|s| s.state == StepState::Cancelled).count();
        let asked = f.workflow_cancels.iter().find(|(_, c)| c.workflow == rec.id).map(|(seq, _)| *seq);
        let wrong = match rec.status {
            WorkflowStatus::Succeeded if failed + cancelled > 0 => {
                Some(format!("succeeded with {failed} failed and {cancelled} cancelled steps"))
            }
            WorkflowStatus::Failed if failed == 0 => Some("failed without a failed step".to_string()),
            WorkflowStatus::Cancelled if asked.is_none() => {
                Some("cancelled, but no client asked to cancel it".to_string())
            }
            _ => None,
        };
        if let Some(wrong) = wrong {
            out.flag(format!("workflow {} {wrong} in the final state (seq {})", rec.id, fin.seq))
                .seqs(asked.into_iter().chain([fin.seq]));
        }
    }
    out.note(format!(
        "{} acknowledged workflow submits; {} workflows in the final state, {terminal} finished",
        f.workflow_submits.iter().filter(|s| s.acked().is_some()).count(),
        flows.flows.len()
    ));
}
