//! The accept loop shared by the tracker and the storage (feature `server`).
//!
//! One task per connection, a cap on concurrent connections, per-IO timeouts, an idle timeout
//! between requests, and a two-phase shutdown: stop accepting, then let each connection finish
//! the request it is serving (connections are only cancelled between requests) until a
//! deadline, after which the rest are dropped. Peers outside `allow_hosts` are closed at
//! accept, before a byte is read.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::acl::HostList;
use crate::auth::{self, AuthError, Challenge, ClusterSecret, Purpose};
use crate::cmd::Command;
use crate::conn::Connection;
use crate::error::ProtoError;
use crate::header::Header;
use crate::status;

/// The stream type every server-side connection uses.
pub type ServerStream = Pin<Box<TimeoutStream<TcpStream>>>;
/// A server-side connection.
pub type ServerConn = Connection<ServerStream>;

/// What to do with the connection after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Close,
}

/// Per-connection facts a service may need.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Cancelled when the server shuts down; long-lived request loops watch it.
    pub shutdown: CancellationToken,
    /// Set once the peer has proved the cluster secret on this connection (crate::auth).
    pub authenticated: Arc<AtomicBool>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, shutdown: CancellationToken) -> Self {
        ConnInfo {
            peer,
            local,
            shutdown,
            authenticated: Arc::default(),
        }
    }

    /// Whether the peer proved the cluster secret on this connection.
    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    pub fn set_authenticated(&self) {
        self.authenticated.store(true, Ordering::Release);
    }
}

/// A request handler: called once per request whose header has been read. The service must
/// consume exactly `header.pkg_len` body bytes or return `Flow::Close`.
pub trait Service: Send + Sync + 'static {
    fn call<'a>(
        &'a self,
        conn: &'a mut ServerConn,
        header: Header,
        info: &'a ConnInfo,
    ) -> impl Future<Output = Result<Flow, ProtoError>> + Send + 'a;

    /// Called when a connection ends, for bookkeeping (e.g. a storage's report connection).
    fn disconnected(&self, _info: &ConnInfo) {}

    /// Whether the connection is closed after answering EINVAL to an unknown command or a
    /// malformed ACTIVE_TEST. The storage does (its request stream may be out of sync), the
    /// tracker does not (A.4).
    fn close_after_einval(&self) -> bool {
        true
    }

    /// Called when a peer outside `allow_hosts` was turned away at accept (for a metric).
    fn refused(&self, _peer: SocketAddr) {}
}

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub max_connections: usize,
    /// Timeout of each read or write inside a request.
    pub network_timeout: Duration,
    /// How long a connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// How long in-flight requests get after shutdown starts.
    pub shutdown_timeout: Duration,
    /// Peers that may connect (`allow_hosts`); others are closed at accept.
    pub allow_hosts: HostList,
    /// Read buffer per connection: [`crate::conn::READ_BUFFER`] where bodies stream through
    /// (storage), a few KiB where requests are small (tracker: it is most of the memory a
    /// connection holds).
    pub read_buffer: usize,
}

/// Rate limit for warnings a hostile peer can trigger at will (refused connections, failed
/// authentication): at most one per `interval`; the ones in between go to DEBUG and are
/// counted in the next warning, so a scan or a flood cannot fill the log.
#[derive(Debug)]
pub struct WarnLimiter {
    interval: Duration,
    state: std::sync::Mutex<(Option<Instant>, u64)>,
}

impl WarnLimiter {
    pub fn new(interval: Duration) -> Self {
        WarnLimiter {
            interval,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)`: warn now, `n` events were only logged at DEBUG since the last warning.
    /// `None`: log this one at DEBUG.
    pub fn check(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|last| now.duration_since(last) < self.interval) {
            *suppressed += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(suppressed))
    }
}

impl Default for WarnLimiter {
    fn default() -> Self {
        WarnLimiter::new(Duration::from_secs(60))
    }
}

/// `admin_hosts`: the hosts that may send a daemon's operator commands (the tracker's
/// DELETE_STORAGE / DELETE_GROUP, the storage's SCRUB). Both daemons refuse the same way: the
/// request body is skipped, the answer is EPERM (1) and the connection stays open; the first
/// refusal each minute is a WARN, the rest DEBUG.
#[derive(Debug, Default)]
pub struct AdminHosts {
    hosts: HostList,
    warnings: WarnLimiter,
}

impl AdminHosts {
    pub fn new(hosts: HostList) -> Self {
        AdminHosts {
            hosts,
            warnings: WarnLimiter::default(),
        }
    }

    pub fn hosts(&self) -> &HostList {
        &self.hosts
    }

    /// Whether the peer of `info` may send admin commands.
    pub fn allows(&self, info: &ConnInfo) -> bool {
        self.hosts.allows(info.peer.ip())
    }

    /// Logs a refused admin command (rate limited, see the type docs).
    pub fn log_refusal(&self, info: &ConnInfo, command: Command) {
        match self.warnings.check() {
            Some(suppressed) => warn!(
                peer = %info.peer,
                ?command,
                admin_hosts = %self.hosts,
                suppressed,
                "admin command from a host not in admin_hosts: refused"
            ),
            None => {
                debug!(peer = %info.peer, ?command, "admin command from a host not in admin_hosts: refused")
            }
        }
    }

    /// Answers a refused admin command whose header was just read: skips a body of at most
    /// `max_body` bytes and answers EPERM, keeping the connection (a longer body closes it
    /// unanswered, as the request is not a well-formed one anyway).
    pub async fn refuse(
        &self,
        conn: &mut ServerConn,
        header: Header,
        command: Command,
        info: &ConnInfo,
        max_body: u64,
    ) -> Result<Flow, ProtoError> {
        self.log_refusal(info, command);
        let len = header.body_len()?;
        if len > max_body {
            return Ok(Flow::Close);
        }
        conn.discard(len).await?;
        conn.send_response(status::EPERM, &[]).await?;
        Ok(Flow::Continue)
    }
}

/// Runs the accept loop until `shutdown` is cancelled, then drains connections.
pub async fn serve<S: Service>(
    listener: TcpListener,
    options: ServerOptions,
    service: Arc<S>,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(options.max_connections));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    let refused_log = WarnLimiter::default();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(10);
                pair
            }
            Err(err) => {
                // EMFILE and friends: back off instead of spinning
                warn!(error = %err, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        if !options.allow_hosts.allows(peer.ip()) {
            // closed before a byte is read; an RST would be kinder to nobody
            drop(stream);
            service.refused(peer);
            match refused_log.check() {
                Some(suppressed) => warn!(
                    %peer,
                    allow_hosts = %options.allow_hosts,
                    suppressed,
                    "connection refused: peer not in allow_hosts (more within a minute are logged at debug)"
                ),
                None => debug!(%peer, "connection refused: peer not in allow_hosts"),
            }
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            warn!(%peer, max = options.max_connections, "connection limit reached, closing new connection");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let info = ConnInfo::new(peer, local, shutdown.clone());
        let service = service.clone();
        let options = options.clone();
        let span = tracing::info_span!("conn", %peer);
        tracker.spawn(
            async move {
                run_connection(stream, &options, service.as_ref(), &info).await;
                service.disconnected(&info);
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracker.close();
    info!(
        open = tracker.len(),
        "stopped accepting, draining connections"
    );
    if tokio::time::timeout(options.shutdown_timeout, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            open = tracker.len(),
            "shutdown deadline passed, dropping remaining connections"
        );
    }
}

async fn run_connection<S: Service>(
    stream: TcpStream,
    options: &ServerOptions,
    service: &S,
    info: &ConnInfo,
) {
    let mut timed = TimeoutStream::new(stream);
    timed.set_write_timeout(Some(options.network_timeout));
    let mut conn: ServerConn = Connection::with_capacity(options.read_buffer, Box::pin(timed));
    loop {
        // Waiting for the next request is bounded by the idle timeout only.
        conn.get_mut().as_mut().set_read_timeout_pinned(None);
        let next = tokio::select! {
            _ = info.shutdown.cancelled() => break,
            next = tokio::time::timeout(options.idle_timeout, conn.read_header()) => next,
        };
        let header = match next {
            Err(_) => {
                debug!("idle timeout");
                break;
            }
            Ok(Ok(Some(header))) => header,
            Ok(Ok(None)) => break,
            Ok(Err(err)) => {
                debug!(error = %err, "bad header");
                break;
            }
        };
        conn.get_mut()
            .as_mut()
            .set_read_timeout_pinned(Some(options.network_timeout));
        let flow = match builtin(&mut conn, header, service.close_after_einval()).await {
            Some(flow) => flow,
            // one span per request, inside the connection's: every line it logs names the command
            None => {
                service
                    .call(&mut conn, header, info)
                    .instrument(tracing::info_span!("req", cmd = header.cmd))
                    .await
            }
        };
        match flow {
            Ok(Flow::Continue) => {}
            Ok(Flow::Close) => break,
            Err(err) => {
                debug!(error = %err, cmd = header.cmd, "closing connection");
                break;
            }
        }
    }
}

/// QUIT, ACTIVE_TEST, negative lengths and unknown commands are answered the same way by
/// every server (A.4).
async fn builtin(
    conn: &mut ServerConn,
    header: Header,
    close_after_einval: bool,
) -> Option<Result<Flow, ProtoError>> {
    let len = match header.body_len() {
        Ok(len) => len,
        Err(err) => return Some(Err(err)),
    };
    match Command::try_from(header.cmd) {
        Ok(Command::Quit) => Some(Ok(Flow::Close)),
        Ok(Command::ActiveTest) if len == 0 => Some(
            conn.send_response(status::OK, &[])
                .await
                .map(|_| Flow::Continue),
        ),
        Ok(Command::ActiveTest) | Err(_) if close_after_einval => Some(reject(conn).await),
        Ok(Command::ActiveTest) | Err(_) => Some(refuse_and_continue(conn, len).await),
        Ok(_) => None,
    }
}

/// Answers EINVAL after consuming a small body, keeping the connection (tracker behaviour).
async fn refuse_and_continue(conn: &mut ServerConn, len: u64) -> Result<Flow, ProtoError> {
    const MAX_DISCARD: u64 = 256 * 1024;
    if len > MAX_DISCARD {
        return Ok(Flow::Close);
    }
    conn.discard(len).await?;
    conn.send_response(status::EINVAL, &[]).await?;
    Ok(Flow::Continue)
}

/// Serves AUTH_CHALLENGE (crate::auth) on a server connection whose header was just read:
/// runs the whole exchange (reading the AUTH_PROOF itself) and marks the connection
/// authenticated. `Ok(Err(why))`: the peer did not prove the secret (AUTH_PROOF out of turn,
/// an oversized challenge, a wrong proof, a hang-up); what could be answered was, and the
/// caller logs, counts and closes.
pub async fn authenticate(
    conn: &mut ServerConn,
    header: Header,
    secret: &ClusterSecret,
    purpose: Purpose,
    info: &ConnInfo,
) -> Result<Result<(), AuthError>, ProtoError> {
    let len = header.body_len()?;
    if header.cmd != Command::AuthChallenge.code() {
        conn.send_response(status::EINVAL, &[]).await?;
        return Ok(Err(AuthError::UnexpectedCommand(header.cmd)));
    }
    if len > Challenge::LEN as u64 {
        conn.send_response(status::EINVAL, &[]).await?;
        return Ok(Err(AuthError::BadLength {
            what: "AUTH_CHALLENGE",
            len: usize::try_from(len).unwrap_or(usize::MAX),
        }));
    }
    let body = conn.read_body(len, Challenge::LEN as u64).await?;
    match auth::respond(conn, secret, purpose, &body).await {
        Ok(()) => {
            info.set_authenticated();
            Ok(Ok(()))
        }
        Err(AuthError::Proto(err)) => Err(err),
        Err(err) => Ok(Err(err)),
    }
}

/// Answers EINVAL and closes: the request stream may be out of sync (O.2).
pub async fn reject(conn: &mut ServerConn) -> Result<Flow, ProtoError> {
    conn.send_response(status::EINVAL, &[]).await?;
    Ok(Flow::Close)
}

/// The number of async worker threads a daemon runs when its config says `configured`; 0 means
/// half the cores, at least one. The heavy lifting (disk writes, fsyncs, journal commits) runs
/// on dedicated threads, and every extra worker costs wake-ups between workers (a futex and a
/// context switch each time one hands a task to an idle other): on two cores a single worker
/// measured 8-16 % more small uploads per second than two.
pub fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.div_ceil(2)
}

/// Installs SIGTERM/SIGINT handlers now and returns a future that resolves on the first of
/// them. Installing before the daemon announces its address means a supervisor's early SIGTERM
/// is never fatal.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => info!("SIGTERM received, shutting down"),
                _ = int.recv() => info!("SIGINT received, shutting down"),
            },
            _ => std::future::pending().await,
        }
    }
}

/// Writes `<base_path>/<daemon>.addr` (the bound address) and `<daemon>.pid` atomically, so
/// scripts and tests that start a server on port 0 can find it.
pub fn write_runtime_files(
    base_path: &std::path::Path,
    daemon: &str,
    addr: SocketAddr,
) -> std::io::Result<()> {
    write_atomic(
        &base_path.join(format!("{daemon}.pid")),
        format!("{}\n", std::process::id()).as_bytes(),
    )?;
    write_atomic(
        &base_path.join(format!("{daemon}.addr")),
        format!("{addr}\n").as_bytes(),
    )
}

fn write_atomic(path: &std::path::Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_default_to_half_the_cores_and_keep_a_configured_count() {
        assert_eq!(worker_threads(3), 3);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default = worker_threads(0);
        assert!(default >= 1);
        assert!(
            default * 2 >= cores && default <= cores,
            "{default} of {cores}"
        );
    }

    #[test]
    fn warnings_are_rate_limited() {
        let limiter = WarnLimiter::new(Duration::from_secs(3600));
        assert_eq!(limiter.check(), Some(0));
        assert_eq!(limiter.check(), None);
        assert_eq!(limiter.check(), None);
        let open = WarnLimiter::new(Duration::ZERO);
        assert_eq!(open.check(), Some(0));
        assert_eq!(open.check(), Some(0));
    }
}
