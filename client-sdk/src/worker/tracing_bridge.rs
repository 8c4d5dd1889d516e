//! The `tracing` bridge: a [`Layer`] that copies events emitted inside a
//! handler's span into that attempt's task log.
//!
//! The worker runs every handler inside a span named [`TASK_SPAN`] (target
//! [`TASK_SPAN_TARGET`], fields `job`, `shard`, `attempt`, `token`). When the
//! span is created, the layer attaches the attempt's log buffer to it; an
//! event whose scope contains such a span goes to that buffer, as
//! `message key=value …` at the event's level. Tasks the handler spawns
//! carry the span only if they are instrumented with it
//! (`.in_current_span()`).
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::EnvFilter::new("info")))
//!     .with(baton_client::worker::TaskLogLayer::new())
//!     .init();
//! ```
//!
//! Filters: the span is created at ERROR level so that a global level filter
//! does not disable it, but a global filter by target (`EnvFilter` as a
//! layer of its own, e.g. `my_app=debug`) must also enable target
//! [`TASK_SPAN_TARGET`]; otherwise put the filter on the output layer only,
//! as above. Events reach the task log only if the subscriber enables them.

use std::cell::RefCell;
use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::logs::{LogLevel, LogSink};
use super::session::AttemptKey;

/// Name of the span every handler runs in.
pub const TASK_SPAN: &str = "baton_task";
/// Target of that span.
pub const TASK_SPAN_TARGET: &str = "baton_client::task";

thread_local! {
    /// The sink of the task span being created on this thread: set by
    /// [`task_span`] around the span's creation, taken by the layer's
    /// `on_new_span`, which runs synchronously inside it.
    static NEW_TASK_SINK: RefCell<Option<LogSink>> = const { RefCell::new(None) };
}

/// The span a handler runs in, with its attempt's sink attached when a
/// [`TaskLogLayer`] is installed.
pub(crate) fn task_span(key: AttemptKey, attempt: u32, sink: &LogSink) -> tracing::Span {
    NEW_TASK_SINK.with(|s| *s.borrow_mut() = Some(sink.clone()));
    let span = tracing::error_span!(
        target: TASK_SPAN_TARGET,
        TASK_SPAN,
        job = key.job,
        shard = key.shard,
        attempt,
        token = key.token
    );
    // Not taken when no layer is installed or the span is disabled.
    NEW_TASK_SINK.with(|s| s.borrow_mut().take());
    span
}

/// Routes `tracing` events emitted inside a handler's span to that
/// attempt's task log. Install it once, on a registry-based subscriber.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskLogLayer {
    _private: (),
}

impl TaskLogLayer {
    pub fn new() -> TaskLogLayer {
        TaskLogLayer::default()
    }
}

/// The sink stored in a task span's extensions.
struct TaskSink(LogSink);

impl<S> Layer<S> for TaskLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        if meta.name() != TASK_SPAN || meta.target() != TASK_SPAN_TARGET {
            return;
        }
        if let (Some(sink), Some(span)) = (NEW_TASK_SINK.with(|s| s.borrow_mut().take()), ctx.span(id)) {
            span.extensions_mut().insert(TaskSink(sink));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        for span in scope {
            if let Some(TaskSink(sink)) = span.extensions().get::<TaskSink>() {
                let mut line = Line::default();
                event.record(&mut line);
                sink.log(LogLevel::from_tracing(event.metadata().level()), line.finish());
                return;
            }
        }
    }
}

/// An event's fields as one line: the message, then ` key=value` for the rest.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn finish(mut self) -> String {
        if self.message.is_empty() {
            return self.fields.trim_start().to_string();
        }
        self.message.push_str(&self.fields);
        self.message
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use tokio::sync::mpsc;
    use tracing::Instrument;
    use tracing_subscriber::prelude::*;

    fn sink(job: u64) -> (LogSink, AttemptKey) {
        let (tx, _rx) = mpsc::channel(1);
        let key = AttemptKey { job, shard: 0, token: 10 + job };
        (LogSink::new(key, tx), key)
    }

    fn messages(s: &LogSink) -> Vec<(i32, String)> {
        s.take().lines.into_iter().map(|l| (l.level, l.message)).collect()
    }

    #[test]
    fn events_inside_a_handlers_span_go_to_its_attempt_and_nowhere_else() {
        let subscriber = tracing_subscriber::registry().with(TaskLogLayer::new());
        let _guard = tracing::subscriber::set_default(subscriber);
        let (a, ka) = sink(1);
        let (b, kb) = sink(2);
        let span_a = task_span(ka, 1, &a);
        let span_b = task_span(kb, 2, &b);
        tracing::info!("outside every task");
        span_a.in_scope(|| {
            tracing::info!(rows = 3, "read the input");
            // A span of the handler's own inside the task span.
            tracing::debug_span!("parse").in_scope(|| tracing::warn!(path = "x.csv", "odd header"));
        });
        span_b.in_scope(|| tracing::error!("b failed"));
        assert_eq!(
            messages(&a),
            vec![
                (proto::LogLevel::Info as i32, "read the input rows=3".to_string()),
                (proto::LogLevel::Warn as i32, "odd header path=\"x.csv\"".to_string()),
            ]
        );
        assert_eq!(messages(&b), vec![(proto::LogLevel::Error as i32, "b failed".to_string())]);
    }

    #[tokio::test]
    async fn a_future_instrumented_with_the_span_logs_across_awaits() {
        let subscriber = tracing_subscriber::registry().with(TaskLogLayer::new());
        let _guard = tracing::subscriber::set_default(subscriber);
        let (a, ka) = sink(1);
        async {
            tracing::info!("before");
            tokio::task::yield_now().await;
            tracing::info!("after");
        }
        .instrument(task_span(ka, 1, &a))
        .await;
        let got: Vec<String> = messages(&a).into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, ["before", "after"]);
    }

    #[test]
    fn without_the_layer_nothing_is_captured_and_nothing_leaks_to_the_next_span() {
        let (a, ka) = sink(1);
        {
            let _guard = tracing::subscriber::set_default(tracing_subscriber::registry());
            let span = task_span(ka, 1, &a);
            span.in_scope(|| tracing::info!("not captured"));
        }
        assert!(a.take().is_empty());
        NEW_TASK_SINK.with(|s| assert!(s.borrow().is_none()));
    }
}
