//! The accept loop: HTTP/1.1 with keep-alive on hyper, at most `max_connections` open
//! connections (more are closed at once), request headers (and idle keep-alive connections)
//! timing out after `network_timeout`, and a graceful stop that lets requests in flight finish
//! within `shutdown_timeout`. Peers outside the HTTP allow lists are answered 403.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::handler::{self, State};

/// Serves `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(state.settings.max_connections));
    let header_timeout = state.settings.network_timeout;
    let drain = state.settings.shutdown_timeout;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning
                warn!(error = %err, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "too many http connections, closing");
            continue;
        };
        let _ = stream.set_nodelay(true);
        // a peer outside both allow lists gets one 403 per request, then the connection
        // closes; one in either is served what its lists allow (handler::Access)
        let access = handler::Access {
            files: state.settings.allow_hosts.allows(peer.ip()),
            metrics: state.settings.metrics_allow_hosts.allows(peer.ip()),
        };
        let allowed = access.files || access.metrics;
        if !allowed {
            debug!(%peer, "http peer in neither http_allow_hosts nor metrics_allow_hosts: 403");
            if let Some(exporter) = &state.exporter {
                exporter.metrics.refused("http_allow_hosts");
            }
        }
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move {
                Ok::<_, Infallible>(if allowed {
                    handler::handle(state, request, access).await
                } else {
                    handler::forbidden()
                })
            }
        });
        let connection = http1::Builder::new()
            .keep_alive(allowed)
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, error = %err, "http connection ended with an error");
            }
            drop(permit);
        });
    }
    info!("http server stopping");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("http connections still open at the shutdown deadline, dropping them");
    }
}
