//! The tracker's HTTP endpoint (`http_port`): `GET /metrics` in the Prometheus text format and
//! `GET /healthz` answering `ok`. HTTP/1 with hyper; connections are capped, slow request
//! headers time out, and shutdown lets open exchanges finish within `shutdown_timeout`. Peers
//! outside `metrics_allow_hosts` (by default `allow_hosts`) get 403 and a close, as on the
//! storage's HTTP port.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fdfs_proto::acl::HostList;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::service::Tracker;

/// Scrapers and probes need few connections; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Content type of the Prometheus text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves HTTP on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tracker: Arc<Tracker>,
    allow_hosts: HostList,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                warn!(error = %err, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            debug!(%peer, "too many http connections, closing");
            continue;
        };
        // the metrics describe the whole cluster: no more open than the tracker port itself
        let allowed = allow_hosts.allows(peer.ip());
        if !allowed {
            debug!(%peer, "http peer not in metrics_allow_hosts: 403");
            tracker.metrics().refused("metrics_allow_hosts");
        }
        let tracker = tracker.clone();
        let service = service_fn(move |request| {
            let response = if allowed {
                respond(&tracker, &request)
            } else {
                forbidden()
            };
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = http1::Builder::new()
            .keep_alive(allowed)
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%peer, error = %err, "http connection ended with an error");
            }
            drop(permit);
        });
    }
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("http connections still open at the shutdown deadline, dropping them");
    }
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The answer to a peer outside the allow list; the connection closes after it.
fn forbidden() -> Response<Full<Bytes>> {
    let mut response = text(
        StatusCode::FORBIDDEN,
        "text/plain; charset=utf-8",
        "host not allowed\n",
    );
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn respond(tracker: &Tracker, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let path = request.uri().path();
    if !matches!(path, "/metrics" | "/healthz") {
        return text(StatusCode::NOT_FOUND, PLAIN, "not found\n");
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "use GET\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // For HEAD, hyper sends the headers (with the GET body's length) and drops the body.
    if path == "/metrics" {
        text(
            StatusCode::OK,
            METRICS_CONTENT_TYPE,
            tracker.render_metrics(),
        )
    } else {
        text(StatusCode::OK, PLAIN, "ok")
    }
}
