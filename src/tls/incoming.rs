//! Accepting TLS connections for the gRPC server here rather than in tonic, so that a refused
//! handshake is logged with its reason and the peer's address.
//!
//! tonic does the handshake itself when given a `ServerTlsConfig`, and logs a failure at `debug`
//! without the peer: an operator whose caller reports "connection closed" finds nothing. Here each
//! accepted TCP connection gets its own handshake task (so a slow peer holds up no one), bounded
//! by the handshake timeout; a failure is logged at `warn` with the peer address and rustls' reason
//! (`invalid peer certificate: …`, `peer sent no certificates`, …), which names certificate
//! properties (issuer unknown, usage, expiry), never a certificate's subject or names. A success is
//! handed to tonic as a `tokio_rustls` stream, for which tonic provides the same connection info
//! (peer certificates) as for its own TLS, so `Request::peer_certs` works unchanged.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;

/// How many finished handshakes may wait for tonic to take them.
const READY_QUEUE: usize = 64;

/// The connections of `listener` after a successful TLS handshake with `config` (as it is when each
/// connection arrives), with Nagle's
/// algorithm off (small gRPC frames would otherwise wait for the peer's delayed ACK). Ends when the
/// receiving side is dropped, i.e. when the server stops.
pub fn tls_incoming(
    listener: TcpListener,
    config: Arc<super::LiveConfig>,
    handshake_timeout: Duration,
) -> impl Stream<Item = io::Result<TlsStream<TcpStream>>> + Send + 'static {
    let (ready, incoming) = tokio::sync::mpsc::channel(READY_QUEUE);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = ready.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Per-connection errors (reset before accept, too many open files) must not
                    // end the server; back off a little in case it is the latter.
                    tracing::warn!(%error, "accepting a TCP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // The configuration of the moment: a reload applies from the next handshake on.
            let acceptor = TlsAcceptor::from(config.current());
            let ready = ready.clone();
            tokio::spawn(async move {
                if let Some(stream) = handshake(acceptor, tcp, peer, handshake_timeout).await {
                    let _ = ready.send(Ok(stream)).await;
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// One handshake; `None` (after logging why) when the peer was refused or gave up.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::warn!(
                %peer,
                reason = %error,
                hint = refusal_hint(&error.to_string()),
                "TLS handshake refused"
            );
            None
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                reason = "no complete handshake within the timeout",
                timeout_s = timeout.as_secs(),
                "TLS handshake refused"
            );
            None
        }
    }
}

/// What the operator can tell the caller, for the refusals people run into.
fn refusal_hint(reason: &str) -> &'static str {
    if reason.contains("UnknownIssuer") || reason.contains("BadSignature") {
        "the client certificate was not issued by a CA in the server's --client-ca file"
    } else if reason.contains("InvalidPurpose") || reason.contains("extended key usage") {
        "the client certificate lacks the clientAuth extended key usage; reissue it with it"
    } else if reason.contains("no certificates") || reason.contains("NoCertificatesPresented") {
        "the client sent no certificate; every caller needs one with its organisation"
    } else if reason.contains("Expired") || reason.contains("expired") {
        "the client certificate has expired"
    } else {
        "see the reason"
    }
}
