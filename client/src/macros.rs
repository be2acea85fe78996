//! Macros shared by the `Client` operations: run a request on a pooled connection, and on the
//! configured trackers in turn. (Macros rather than functions taking async closures, so the
//! operations' futures stay plainly `Send`.)

/// Runs `$body` (an expression using `$conn: &mut Conn`) on a connection to `$addr` taken from
/// the pool, and hands the connection back. When `$idempotent` and a pooled connection turns
/// out to have been closed by the server before it answered, the request is sent once more
/// on a fresh connection. Evaluates to the body's `Result`.
macro_rules! on_conn {
    ($pool:expr, $addr:expr, $idempotent:expr, |$conn:ident| $body:expr) => {{
        let mut fresh = false;
        loop {
            let got = if fresh {
                $pool.connect($addr).await
            } else {
                $pool.get($addr).await
            };
            let mut conn = match got {
                Ok(conn) => conn,
                Err(err) => break Err(err),
            };
            let result = {
                let $conn = &mut conn;
                $body.await
            };
            let retry = $idempotent && !fresh && conn.died_before_reply(&result);
            $pool.put(conn);
            if retry {
                tracing::debug!(addr = %$addr, "pooled connection was closed by the server, retrying on a new one");
                fresh = true;
                continue;
            }
            break result;
        }
    }};
}

/// Runs a tracker query (`$body` using `$conn`) on the configured trackers in turn, starting
/// from a rotating index. Connection failures move on to the next tracker; any answer,
/// error statuses included, ends the search.
macro_rules! on_tracker {
    ($inner:expr, |$conn:ident| $body:expr) => {{
        let inner = &$inner;
        let trackers = &inner.config.tracker_servers;
        let start = inner
            .next_tracker
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tried = Vec::new();
        let mut last = String::new();
        let mut answer = None;
        for step in 0..trackers.len() {
            let addr = &trackers[(start + step) % trackers.len()];
            match on_conn!(inner.pool, addr.as_str(), true, |$conn| $body) {
                Err(err) if err.is_connection_failure() => {
                    tracing::debug!(tracker = %addr, error = %err, "tracker unreachable, trying the next one");
                    tried.push(addr.clone());
                    last = $crate::client::short_cause(&err);
                }
                other => {
                    answer = Some(other);
                    break;
                }
            }
        }
        match answer {
            Some(result) => result,
            None => Err($crate::ClientError::NoTracker { tried, last }),
        }
    }};
}
