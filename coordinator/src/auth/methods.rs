//! The one map of every public API method to the role it needs and how its
//! namespace is found. A method missing here is refused when auth is on
//! (a test checks every method of the `.proto` is here), so a new RPC is
//! closed until someone decides who may call it.
//!
//! The layer checks the role in at least one namespace (or in `*` for
//! [`Scope::Cluster`]) before any handler runs; the handler then calls
//! `Ctx::authorize`, which finds the namespace of the request's object
//! ([`Target`]) and checks the role there.

use baton_client::proto;

use super::Role;

/// How a method's namespace is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// No namespace: the role is needed in `*` (membership, backups, the
    /// list of all workers).
    Cluster,
    /// Named in the request (a field, or the spec's namespace; every spec of a batch).
    Namespace,
    /// A list's namespace filter; an unfiltered list needs the role in `*`.
    Filter,
    /// An object named by id, whose namespace is read from this node's state
    /// (after the call was routed where it is served).
    Job,
    Workflow,
    /// By id, or by (namespace, name) when the id is 0.
    Schedule,
    Trigger,
    /// The worker session: the caller's worker grants decide which
    /// namespaces' tasks the session receives.
    Session,
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The method's name, as audit events and the metric show it.
    pub action: &'static str,
    pub role: Role,
    pub scope: Scope,
}

impl Rule {
    /// Admin and operator actions are audited whatever their outcome;
    /// others only when refused.
    pub fn audited(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }
}

/// Paths served without authentication: health checks, reflection, and
/// Status (roles, term and indexes; what probes and `cluster status` read;
/// its state hash, a full scan, needs admin in `*`, checked by the handler).
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
        || path == "/baton.v1.ClusterService/Status"
}

macro_rules! rules {
    ($($service:literal { $($method:literal => $role:ident, $scope:ident;)* })*) => {
        /// (gRPC path, rule) of every mapped method.
        pub const METHODS: &[(&str, Rule)] = &[
            $($((
                concat!("/baton.v1.", $service, "/", $method),
                Rule { action: $method, role: Role::$role, scope: Scope::$scope },
            ),)*)*
        ];
    };
}

rules! {
    "JobService" {
        "SubmitJob" => Submitter, Namespace;
        "SubmitJobs" => Submitter, Namespace;
        "GetJob" => Reader, Job;
        "ListJobs" => Reader, Filter;
        "CancelJob" => Operator, Job;
        "WatchJob" => Reader, Job;
        "GetResults" => Reader, Job;
        "DeleteJob" => Operator, Job;
        "RetryJob" => Operator, Job;
        "CancelTask" => Operator, Job;
        "PauseJob" => Operator, Job;
        "ResumeJob" => Operator, Job;
        "SetPriority" => Operator, Job;
        "PauseNamespace" => Operator, Namespace;
        "ResumeNamespace" => Operator, Namespace;
        "SetNamespaceRetention" => Operator, Namespace;
        "SetNamespaceIdempotencyWindow" => Operator, Namespace;
        // A quota limits a tenant: set by the cluster's admins, never by
        // the tenant's own operators.
        "SetNamespaceQuota" => Admin, Cluster;
        "GetNamespace" => Reader, Namespace;
        "GetTaskLogs" => Reader, Job;
    }
    "WorkflowService" {
        "SubmitWorkflow" => Submitter, Namespace;
        "GetWorkflow" => Reader, Workflow;
        "ListWorkflows" => Reader, Filter;
        "WatchWorkflow" => Reader, Workflow;
        "CancelWorkflow" => Operator, Workflow;
        "ApproveStep" => Operator, Workflow;
        "RejectStep" => Operator, Workflow;
        "GetWorkflowResult" => Reader, Workflow;
    }
    "ScheduleService" {
        "CreateSchedule" => Submitter, Namespace;
        "UpdateSchedule" => Operator, Schedule;
        "GetSchedule" => Reader, Schedule;
        "ListSchedules" => Reader, Filter;
        "PauseSchedule" => Operator, Schedule;
        "ResumeSchedule" => Operator, Schedule;
        "DeleteSchedule" => Operator, Schedule;
        "RunScheduleNow" => Submitter, Schedule;
        "ListScheduleRuns" => Reader, Schedule;
    }
    "EventService" {
        "PublishEvent" => Submitter, Namespace;
        "CreateTrigger" => Operator, Namespace;
        "ListTriggers" => Reader, Filter;
        "DeleteTrigger" => Operator, Trigger;
    }
    "WorkerService" {
        "Session" => Worker, Session;
        "ListWorkers" => Reader, Cluster;
    }
    "ClusterService" {
        "AddLearner" => Admin, Cluster;
        "ChangeMembership" => Admin, Cluster;
        "RemoveNode" => Admin, Cluster;
        "TriggerSnapshot" => Admin, Cluster;
        "Backup" => Admin, Cluster;
    }
}

/// The rule of a gRPC path, if the method is mapped.
pub fn rule(path: &str) -> Option<&'static Rule> {
    METHODS.iter().find(|(p, _)| *p == path).map(|(_, r)| r)
}

/// What a request names, from which its namespace is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object<'a> {
    Cluster,
    Namespace(&'a str),
    /// Every namespace a batch names.
    Namespaces(Vec<&'a str>),
    /// A list filter; empty for all namespaces.
    Filter(&'a str),
    Job(u64),
    Workflow(u64),
    Schedule(u64),
    Trigger(u64),
}

impl Object<'_> {
    /// Whether this object is what `scope` says the method names.
    pub fn fits(&self, scope: Scope) -> bool {
        matches!(
            (self, scope),
            (Object::Cluster, Scope::Cluster)
                | (Object::Namespace(_) | Object::Namespaces(_), Scope::Namespace)
                | (Object::Filter(_), Scope::Filter)
                | (Object::Job(_), Scope::Job)
                | (Object::Workflow(_), Scope::Workflow)
                | (Object::Schedule(_) | Object::Namespace(_), Scope::Schedule)
                | (Object::Trigger(_), Scope::Trigger)
        )
    }
}

/// A request message's object.
pub trait Target {
    fn object(&self) -> Object<'_>;
}

macro_rules! target {
    ($($ty:ident => |$r:ident| $e:expr;)*) => {
        $(impl Target for proto::$ty {
            fn object(&self) -> Object<'_> {
                let $r = self;
                $e
            }
        })*
    };
}

fn spec_ns<T>(spec: &Option<T>, ns: impl Fn(&T) -> &str) -> Object<'_> {
    // A missing spec is refused by the handler's validation; "" names no
    // namespace anyone holds, so only `*` grants pass until then.
    Object::Namespace(spec.as_ref().map_or("", ns))
}

target! {
    SubmitJobRequest => |r| spec_ns(&r.spec, |s| &s.namespace);
    SubmitJobsRequest => |r| Object::Namespaces(r.specs.iter().map(|s| s.namespace.as_str()).collect());
    GetJobRequest => |r| Object::Job(r.job_id);
    ListJobsRequest => |r| Object::Filter(&r.namespace);
    CancelJobRequest => |r| Object::Job(r.job_id);
    WatchJobRequest => |r| Object::Job(r.job_id);
    GetResultsRequest => |r| Object::Job(r.job_id);
    DeleteJobRequest => |r| Object::Job(r.job_id);
    RetryJobRequest => |r| Object::Job(r.job_id);
    CancelTaskRequest => |r| Object::Job(r.job_id);
    PauseJobRequest => |r| Object::Job(r.job_id);
    ResumeJobRequest => |r| Object::Job(r.job_id);
    SetPriorityRequest => |r| Object::Job(r.job_id);
    PauseNamespaceRequest => |r| Object::Namespace(&r.namespace);
    ResumeNamespaceRequest => |r| Object::Namespace(&r.namespace);
    SetNamespaceRetentionRequest => |r| Object::Namespace(&r.namespace);
    SetNamespaceIdempotencyWindowRequest => |r| Object::Namespace(&r.namespace);
    SetNamespaceQuotaRequest => |_r| Object::Cluster;
    GetNamespaceRequest => |r| Object::Namespace(&r.namespace);
    GetTaskLogsRequest => |r| Object::Job(r.job_id);
    SubmitWorkflowRequest => |r| spec_ns(&r.spec, |s| &s.namespace);
    GetWorkflowRequest => |r| Object::Workflow(r.workflow_id);
    ListWorkflowsRequest => |r| Object::Filter(&r.namespace);
    WatchWorkflowRequest => |r| Object::Workflow(r.workflow_id);
    CancelWorkflowRequest => |r| Object::Workflow(r.workflow_id);
    ResolveStepRequest => |r| Object::Workflow(r.workflow_id);
    GetWorkflowResultRequest => |r| Object::Workflow(r.workflow_id);
    CreateScheduleRequest => |r| spec_ns(&r.spec, |s| &s.namespace);
    UpdateScheduleRequest => |r| Object::Schedule(r.schedule_id);
    GetScheduleRequest => |r| if r.schedule_id == 0 { Object::Namespace(&r.namespace) } else { Object::Schedule(r.schedule_id) };
    ListSchedulesRequest => |r| Object::Filter(&r.namespace);
    PauseScheduleRequest => |r| Object::Schedule(r.schedule_id);
    ResumeScheduleRequest => |r| Object::Schedule(r.schedule_id);
    DeleteScheduleRequest => |r| Object::Schedule(r.schedule_id);
    RunScheduleNowRequest => |r| Object::Schedule(r.schedule_id);
    ListScheduleRunsRequest => |r| Object::Schedule(r.schedule_id);
    PublishEventRequest => |r| Object::Namespace(&r.namespace);
    CreateTriggerRequest => |r| spec_ns(&r.spec, |s| &s.namespace);
    ListTriggersRequest => |r| Object::Filter(&r.namespace);
    DeleteTriggerRequest => |r| Object::Trigger(r.trigger_id);
    ListWorkersRequest => |_r| Object::Cluster;
    StatusRequest => |_r| Object::Cluster;
    AddLearnerRequest => |_r| Object::Cluster;
    ChangeMembershipRequest => |_r| Object::Cluster;
    RemoveNodeRequest => |_r| Object::Cluster;
    TriggerSnapshotRequest => |_r| Object::Cluster;
    BackupRequest => |_r| Object::Cluster;
}
