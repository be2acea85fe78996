//! Connection pool: idle connections per server address, reused most-recent first.
//!
//! Only connections whose last exchange completed cleanly come back (see [`Conn`]); idle ones
//! are dropped after `pool_idle_timeout`, and beyond `pool_max_idle_per_server` per address.
//! The lock is a std mutex: it is never held across an `.await`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ClientConfig;
use crate::conn::Conn;
use crate::error::ClientError;

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

#[derive(Debug)]
pub(crate) struct Pool {
    connect_timeout: Duration,
    network_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    /// Per address, oldest first.
    idle: Mutex<HashMap<String, Vec<Idle>>>,
}

impl Pool {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Pool {
            connect_timeout: config.connect_timeout,
            network_timeout: config.network_timeout,
            max_idle: config.pool_max_idle_per_server,
            idle_timeout: config.pool_idle_timeout,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// An idle connection to `addr` if a live one is pooled, else a new one.
    pub(crate) async fn get(&self, addr: &str) -> Result<Conn, ClientError> {
        while let Some(idle) = self.pop_idle(addr) {
            if idle.since.elapsed() >= self.idle_timeout {
                tracing::debug!(addr, "dropping expired idle connection");
                continue;
            }
            if !idle.conn.looks_alive() {
                tracing::debug!(addr, "dropping idle connection closed by the server");
                continue;
            }
            let mut conn = idle.conn;
            conn.mark_reused();
            return Ok(conn);
        }
        self.connect(addr).await
    }

    /// A new connection to `addr`, bypassing the idle ones.
    pub(crate) async fn connect(&self, addr: &str) -> Result<Conn, ClientError> {
        Conn::connect(addr, self.connect_timeout, self.network_timeout).await
    }

    /// Hands a connection back after use; it is kept only if its last exchange completed
    /// cleanly and there is room.
    pub(crate) fn put(&self, conn: Conn) {
        if !conn.is_reusable() {
            tracing::debug!(
                addr = conn.addr(),
                "closing connection after an unfinished or failed exchange"
            );
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let list = idle.entry(conn.addr().to_string()).or_default();
        list.retain(|entry| entry.since.elapsed() < self.idle_timeout);
        if list.len() < self.max_idle {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    fn pop_idle(&self, addr: &str) -> Option<Idle> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        idle.get_mut(addr).and_then(Vec::pop)
    }

    #[cfg(test)]
    pub(crate) fn idle_count(&self, addr: &str) -> usize {
        let idle = self.idle.lock().unwrap();
        idle.get(addr).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdfs_proto::conn::Connection;
    use fdfs_proto::header::Header;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// How the fake server answers each request (one entry per request, then it closes).
    #[derive(Clone, Copy)]
    enum Answer {
        Ok(&'static [u8]),
        Status(u8),
        /// A header announcing `len` bytes, then the connection closes.
        Short(u64),
        /// A reply followed by bytes nobody asked for.
        OkWithJunk,
        /// A reply, then the server closes the connection.
        OkThenClose,
    }

    async fn server(script: Vec<Answer>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let script = std::sync::Arc::new(script);
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                tokio::spawn(async move {
                    let mut conn = Connection::new(socket);
                    for answer in script.iter() {
                        let Ok(Some(header)) = conn.read_header().await else {
                            return;
                        };
                        conn.discard(header.body_len().unwrap()).await.unwrap();
                        match *answer {
                            Answer::Ok(body) => conn.send_response(0, body).await.unwrap(),
                            Answer::Status(code) => conn.send_response(code, &[]).await.unwrap(),
                            Answer::Short(len) => {
                                conn.send(Header::response(0, len), b"ab").await.unwrap();
                                return;
                            }
                            Answer::OkWithJunk => {
                                conn.send(Header::response(0, 0), b"junk").await.unwrap()
                            }
                            Answer::OkThenClose => {
                                conn.send_response(0, &[]).await.unwrap();
                                conn.get_mut().shutdown().await.unwrap();
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn pool(max_idle: usize, idle_timeout: Duration) -> Pool {
        let mut config = ClientConfig::new(vec!["127.0.0.1:1".into()]);
        config.pool_max_idle_per_server = max_idle;
        config.pool_idle_timeout = idle_timeout;
        config.network_timeout = Duration::from_secs(5);
        Pool::new(&config)
    }

    const MINUTE: Duration = Duration::from_secs(60);

    async fn exchange(pool: &Pool, addr: &str) -> (bool, Result<Vec<u8>, ClientError>) {
        let mut conn = pool.get(addr).await.unwrap();
        let reused = conn.is_reused();
        let result = conn.call(111, &[], 16).await;
        pool.put(conn);
        (reused, result)
    }

    #[tokio::test]
    async fn clean_exchanges_and_non_einval_statuses_keep_the_connection() {
        let addr = server(vec![
            Answer::Ok(b"x"),
            Answer::Status(2),
            Answer::Status(17),
            Answer::Ok(b""),
        ])
        .await;
        let pool = pool(8, MINUTE);
        let (reused, result) = exchange(&pool, &addr).await;
        assert!(!reused);
        assert_eq!(result.unwrap(), b"x");
        assert_eq!(pool.idle_count(&addr), 1);
        let (reused, result) = exchange(&pool, &addr).await;
        assert!(reused);
        assert!(matches!(result, Err(ClientError::NotFound)));
        let (reused, result) = exchange(&pool, &addr).await;
        assert!(reused);
        assert!(matches!(result, Err(ClientError::AlreadyExists)));
        let (reused, result) = exchange(&pool, &addr).await;
        assert!(reused);
        assert!(result.is_ok());
        assert_eq!(pool.idle_count(&addr), 1);
    }

    #[tokio::test]
    async fn einval_io_errors_and_partial_bodies_close_the_connection() {
        let pool = pool(8, MINUTE);
        let addr = server(vec![Answer::Status(22), Answer::Ok(b"")]).await;
        let (_, result) = exchange(&pool, &addr).await;
        assert!(matches!(result, Err(ClientError::InvalidArgument)));
        assert_eq!(pool.idle_count(&addr), 0);

        let addr = server(vec![Answer::Short(10)]).await;
        let (_, result) = exchange(&pool, &addr).await;
        assert!(result.unwrap_err().is_dead_connection());
        assert_eq!(pool.idle_count(&addr), 0);

        // a reply larger than allowed is refused before its body is read
        let addr = server(vec![Answer::Ok(&[7; 100])]).await;
        let (_, result) = exchange(&pool, &addr).await;
        assert!(matches!(result, Err(ClientError::Protocol(_))));
        assert_eq!(pool.idle_count(&addr), 0);

        // a connection handed back before its exchange finished is dropped
        let addr = server(vec![Answer::Ok(b"abc")]).await;
        let mut conn = pool.get(&addr).await.unwrap();
        conn.send(111, 0, &[]).await.unwrap();
        conn.read_reply_header().await.unwrap();
        pool.put(conn);
        assert_eq!(pool.idle_count(&addr), 0);
    }

    #[tokio::test]
    async fn out_of_sync_and_closed_connections_are_not_reused() {
        let pool = pool(8, MINUTE);
        let addr = server(vec![Answer::OkWithJunk, Answer::Ok(b"")]).await;
        let (_, result) = exchange(&pool, &addr).await;
        assert!(result.is_ok());
        let conn = pool.get(&addr).await.unwrap();
        assert!(
            !conn.is_reused(),
            "a connection with unread bytes was reused"
        );

        let addr = server(vec![Answer::OkThenClose]).await;
        let mut conn = pool.get(&addr).await.unwrap();
        conn.call(111, &[], 0).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while conn.looks_alive() {
            assert!(Instant::now() < deadline, "close never seen");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pool.put(conn);
        assert_eq!(pool.idle_count(&addr), 1);
        let conn = pool.get(&addr).await.unwrap();
        assert!(
            !conn.is_reused(),
            "a connection closed by the server was reused"
        );
    }

    #[tokio::test]
    async fn idle_limits_apply() {
        let addr = server(vec![Answer::Ok(b""); 4]).await;
        let pool = pool(2, MINUTE);
        let mut conns = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.get(&addr).await.unwrap();
            conn.call(111, &[], 0).await.unwrap();
            conns.push(conn);
        }
        for conn in conns {
            pool.put(conn);
        }
        assert_eq!(pool.idle_count(&addr), 2);

        let expired = self::pool(2, Duration::ZERO);
        let (_, result) = exchange(&expired, &addr).await;
        assert!(result.is_ok());
        let conn = expired.get(&addr).await.unwrap();
        assert!(!conn.is_reused(), "an expired connection was reused");

        let none = self::pool(0, MINUTE);
        let (_, result) = exchange(&none, &addr).await;
        assert!(result.is_ok());
        assert_eq!(none.idle_count(&addr), 0);
    }

    #[tokio::test]
    async fn retry_rule_needs_a_reused_connection_and_no_reply() {
        let addr = server(vec![Answer::Ok(b"")]).await;
        let pool = pool(8, MINUTE);
        let mut conn = pool.get(&addr).await.unwrap();
        let dead: Result<(), ClientError> = Err(fdfs_proto::ProtoError::Closed.into());
        assert!(
            !conn.died_before_reply(&dead),
            "fresh connections are not retried"
        );
        conn.mark_reused();
        assert!(conn.died_before_reply(&dead));
        let timeout: Result<(), ClientError> =
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
        assert!(!conn.died_before_reply(&timeout));
        conn.call(111, &[], 0).await.unwrap();
        assert!(!conn.died_before_reply(&dead), "a reply was received");
    }
}
