//! A fake FastDFS server for wire tests: it records every request (raw bytes, split into
//! header and body, with the index of the connection it came on) and answers what the test's
//! handler says.

use std::sync::{Arc, Mutex};

use fdfs_proto::conn::Connection;
use fdfs_proto::header::Header;
use tokio::net::TcpListener;

/// Largest request body the fake accepts.
const MAX_BODY: u64 = 64 << 20;

// each test file uses its own subset of this module
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct Request {
    /// Index of the connection (0 = first accepted).
    pub conn: usize,
    /// Index of the request on its connection (0 = first).
    pub seq: usize,
    pub header: Header,
    pub body: Vec<u8>,
}

#[allow(dead_code)]
impl Request {
    /// Header and body as they were on the wire.
    pub fn raw(&self) -> Vec<u8> {
        let mut raw = self.header.encode().to_vec();
        raw.extend_from_slice(&self.body);
        raw
    }
}

#[allow(dead_code)]
pub enum Reply {
    /// Answer `status` with `body`.
    Answer(u8, Vec<u8>),
    /// Answer, then close the connection.
    AnswerAndClose(u8, Vec<u8>),
    /// Keep the connection open and never answer.
    Hang,
    /// Close the connection without answering (a server that dropped an idle connection
    /// just as the request came).
    Close,
}

#[allow(dead_code)]
impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::Answer(0, body.into())
    }

    pub fn status(status: u8) -> Reply {
        Reply::Answer(status, Vec::new())
    }
}

pub struct FakeServer {
    pub addr: String,
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

#[allow(dead_code)]
impl FakeServer {
    pub async fn start<F>(handler: F) -> FakeServer
    where
        F: Fn(&Request) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let handler = Arc::new(handler);
        tokio::spawn(async move {
            for index in 0.. {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                let handler = handler.clone();
                tokio::spawn(async move {
                    let mut conn = Connection::new(socket);
                    for seq in 0.. {
                        let Ok(Some(header)) = conn.read_header().await else {
                            return;
                        };
                        let Ok(len) = header.body_len() else { return };
                        let Ok(body) = conn.read_body(len, MAX_BODY).await else {
                            return;
                        };
                        let request = Request {
                            conn: index,
                            seq,
                            header,
                            body,
                        };
                        log.lock().unwrap().push(request.clone());
                        match handler(&request) {
                            Reply::Answer(status, body) => {
                                if conn.send_response(status, &body).await.is_err() {
                                    return;
                                }
                            }
                            Reply::AnswerAndClose(status, body) => {
                                let _ = conn.send_response(status, &body).await;
                                return;
                            }
                            Reply::Hang => {
                                std::future::pending::<()>().await;
                            }
                            Reply::Close => return,
                        }
                    }
                });
            }
        });
        FakeServer {
            addr: local.to_string(),
            port: local.port(),
            requests,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

/// An address nothing listens on (bound, then released).
#[allow(dead_code)]
pub async fn dead_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

/// Decodes a hex string, ignoring whitespace.
#[allow(dead_code)]
pub fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}
