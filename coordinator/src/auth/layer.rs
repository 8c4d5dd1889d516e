//! The tower layer in front of every public service: it authenticates the
//! caller and checks the method's role before any handler runs, and audits
//! the call once it has an answer.
//!
//! With auth off it only passes calls through. With auth on:
//! - health, reflection and Status are open ([`methods::is_open`]);
//! - an unmapped method is refused with PERMISSION_DENIED;
//! - no credential, or a bad or expired one: UNAUTHENTICATED. A client
//!   certificate the TLS handshake verified stands in for a token when the
//!   call sends none and `[[auth.certs]]` names it;
//! - a principal without the method's role in any namespace (or in `*` for
//!   a cluster method): PERMISSION_DENIED;
//! - otherwise the handler runs with [`Authed`] in the request's extensions,
//!   and checks the namespace of what the request names (`check.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use baton_client::error::ERROR_CODE_HEADER;
use baton_client::error::codes;

use rustls::pki_types::CertificateDer;

use super::check::Authed;
use super::methods::{self, Rule, Scope};
use super::{AUTHORIZATION_HEADER, Authenticator, Principal};
use crate::audit::{self, AuditSlot};
use crate::error::{ApiError, to_status};
use crate::tls::accept::ConnInfo;

/// Authenticates and pre-authorizes every call (see the module doc).
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    /// `None`: auth is off and every call passes.
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService { inner, auth: self.auth.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

/// The layer's verdict on one call.
enum Verdict {
    /// Pass on, with these extensions.
    Pass(Option<Authed>, Option<Arc<Principal>>),
    /// Answer with this error; audit as (who, action, outcome).
    Refuse(ApiError, String, &'static str),
}

fn decide(auth: &Authenticator, path: &str, header: Option<&[u8]>, cert: Option<&CertificateDer<'_>>) -> Verdict {
    if methods::is_open(path) {
        // Open, but a valid credential still counts for privileged options.
        return Verdict::Pass(None, auth.authenticate_call(header, cert).ok());
    }
    let action = methods::rule(path).map_or("unmapped", |r| r.action);
    let principal = match auth.authenticate_call(header, cert) {
        Ok(p) => p,
        Err(e) => return Verdict::Refuse(ApiError::Unauthenticated(e.to_string()), "-".into(), action),
    };
    let Some(rule) = methods::rule(path) else {
        return Verdict::Refuse(
            ApiError::PermissionDenied(format!("method {path} is not open to any role")),
            principal.name.clone(),
            action,
        );
    };
    if !holds(&principal, rule) {
        let ns = if rule.scope == Scope::Cluster { "*" } else { "any" };
        return Verdict::Refuse(
            ApiError::PermissionDenied(format!("needs role {} in namespace {ns}", rule.role)),
            principal.name.clone(),
            action,
        );
    }
    Verdict::Pass(Some(Authed { principal: principal.clone(), rule, audit: AuditSlot::default() }), Some(principal))
}

/// The layer's check: the role somewhere (or in `*` for a cluster method).
fn holds(p: &Principal, rule: &Rule) -> bool {
    match rule.scope {
        Scope::Cluster => p.allows_all(rule.role),
        _ => p.allows_some(rule.role),
    }
}

/// An error's audit outcome.
fn outcome_of(code: &str) -> String {
    match code {
        codes::PERMISSION_DENIED => "denied".into(),
        codes::UNAUTHENTICATED => "unauthenticated".into(),
        c => c.to_ascii_lowercase(),
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for AuthService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(auth) = &self.auth else {
            return Box::pin(inner.call(req));
        };
        let header = req.headers().get(AUTHORIZATION_HEADER).map(|v| v.as_bytes());
        // Set by the TLS acceptor: the client certificate that verified, if any.
        let cert = req.extensions().get::<ConnInfo>().and_then(|c| c.peer_cert.as_ref());
        match decide(auth, req.uri().path(), header, cert) {
            Verdict::Refuse(e, who, action) => {
                audit::record(&who, action, "-", &outcome_of(e.code()));
                let status = to_status(e);
                Box::pin(async move { Ok(status.into_http()) })
            }
            Verdict::Pass(authed, principal) => {
                if let Some(p) = principal {
                    req.extensions_mut().insert(p);
                }
                let Some(authed) = authed else {
                    return Box::pin(inner.call(req));
                };
                req.extensions_mut().insert(authed.clone());
                Box::pin(async move {
                    let resp = inner.call(req).await?;
                    // A handler's error is a trailers-only answer: its code is in the headers.
                    let header = |k: &str| resp.headers().get(k).and_then(|v| v.to_str().ok());
                    let outcome = match (header(ERROR_CODE_HEADER), header("grpc-status")) {
                        (Some(code), _) => outcome_of(code),
                        (None, Some(s)) if s != "0" => format!("grpc_status_{s}"),
                        _ => "ok".to_string(),
                    };
                    let refused = outcome == "denied" || outcome == "unauthenticated";
                    if (authed.rule.audited() || refused)
                        && let Some(object) = authed.audit.object()
                    {
                        audit::record(&authed.principal.name, authed.rule.action, &object, &outcome);
                    }
                    Ok(resp)
                })
            }
        }
    }
}
