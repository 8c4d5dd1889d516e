//! Accepting connections on a port that may be TLS: the first byte of each
//! connection tells a TLS ClientHello (0x16) from anything else. A TLS
//! connection is handshaken with the current material; any other is served
//! plaintext, and on a TLS port [`require_tls`] answers each of its calls
//! with `TLS_REQUIRED`, so a plaintext client learns what is wrong instead
//! of seeing a dropped connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::Connected;

use super::{Port, TlsState};

/// First byte of a TLS record carrying a handshake (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// Time a new connection has to send its first byte and finish the TLS
/// handshake; a silent client must not hold a handshake slot for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per port; more wait to be accepted (the
/// kernel's backlog queues them), which bounds the memory slow clients cost.
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Handshaken connections waiting for the server to pick them up.
const ACCEPTED_QUEUE: usize = 64;

/// One accepted connection.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What the services see of a connection (a request extension).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// Arrived over TLS.
    pub tls: bool,
    /// The client's certificate, when it presented one that verified.
    pub peer_cert: Option<CertificateDer<'static>>,
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(s) => ConnInfo { remote: s.peer_addr().ok(), tls: false, peer_cert: None },
            Conn::Tls(s) => {
                let (tcp, session) = s.get_ref();
                ConnInfo {
                    remote: tcp.peer_addr().ok(),
                    tls: true,
                    peer_cert: session.peer_certificates().and_then(|c| c.first()).map(|c| c.clone().into_owned()),
                }
            }
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections of `listener`: all plaintext without TLS; with TLS,
/// each classified by its first byte and handshaken off the accept loop.
pub fn incoming(
    listener: impl Stream<Item = io::Result<TcpStream>> + Send + 'static,
    tls: Option<Arc<TlsState>>,
    port: Port,
) -> Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>> {
    let Some(tls) = tls else {
        return Box::pin(listener.map(|s| s.map(Conn::Plain)));
    };
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        let mut listener = std::pin::pin!(listener);
        loop {
            let next = tokio::select! {
                n = listener.next() => n,
                _ = tx.closed() => return,
            };
            let tcp = match next {
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    tracing::debug!(?port, error = %e, "accept failed");
                    continue;
                }
                None => return,
            };
            let Ok(slot) = slots.clone().acquire_owned().await else { return };
            let (tx, tls) = (tx.clone(), tls.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let remote = tcp.peer_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, classify(tcp, &tls, port)).await {
                    Ok(Ok(Some(conn))) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::warn!(?port, ?remote, error = %e, "tls handshake failed"),
                    Err(_) => tracing::debug!(?port, ?remote, "no tls handshake within the timeout"),
                }
            });
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Peek the first byte; handshake a TLS connection. `None`: closed at once.
async fn classify(tcp: TcpStream, tls: &TlsState, port: Port) -> io::Result<Option<Conn>> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return Ok(Some(Conn::Plain(tcp)));
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config(port));
    Ok(Some(Conn::Tls(Box::new(acceptor.accept(tcp).await?))))
}

/// The interceptor of a port: with `required`, a call that came over a
/// plaintext connection is refused with `TLS_REQUIRED`.
pub fn require_tls(
    required: bool,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone + Send + Sync + 'static {
    move |req: tonic::Request<()>| {
        if required && req.extensions().get::<ConnInfo>().is_some_and(|c| !c.tls) {
            return Err(crate::error::to_status(crate::error::ApiError::TlsRequired));
        }
        Ok(req)
    }
}
