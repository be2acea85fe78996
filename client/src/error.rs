//! `ClientError`: every way a client operation can fail, with the server's status codes mapped
//! to named variants (A.6) and messages that say what to check.

use std::io;
use std::path::PathBuf;

use fdfs_proto::status;
use fdfs_proto::ProtoError;

/// The error of every [`Client`](crate::Client) operation.
///
/// Status codes answered by a tracker or storage become [`NotFound`](Self::NotFound) (2),
/// [`AlreadyExists`](Self::AlreadyExists) (17), [`InvalidArgument`](Self::InvalidArgument)
/// (22), [`NoSpace`](Self::NoSpace) (28) or [`Status`](Self::Status) for the others;
/// [`ClientError::status`] gives the raw code back.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Status 2: the file, its metadata, the group or a usable storage does not exist.
    #[error("not found (status 2): no such file, metadata, group or usable storage")]
    NotFound,
    /// Status 17: the file (e.g. a slave name) already exists.
    #[error("already exists (status 17)")]
    AlreadyExists,
    /// Status 28: no storage path has room above its reserved space.
    #[error("no space left (status 28): no storage has room above its reserved space — free disk space or add storages")]
    NoSpace,
    /// Status 22: the server refused the request as malformed.
    #[error("invalid argument (status 22): the server refused the request (wrong group, bad name, offset beyond the end, or not an appender file)")]
    InvalidArgument,
    /// Any other non-zero status.
    #[error("server answered status {0} ({desc})", desc = status::describe(*.0))]
    Status(u8),
    /// No tracker of the configuration could be reached.
    #[error("no tracker reachable (tried {tried}): {last} — is fdfs-trackerd running? check tracker_servers", tried = .tried.join(", "))]
    NoTracker { tried: Vec<String>, last: String },
    /// A TCP connection to a server (normally a storage) could not be made.
    #[error("cannot connect to {addr}: {source} — is the server running and reachable from here?")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// A network (or reader/writer) error in the middle of an exchange, timeouts included.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A local file could not be opened, read, written or renamed.
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The server answered something that does not follow the protocol.
    #[error("protocol error: {0} — is this a FastDFS tracker/storage?")]
    Protocol(ProtoError),
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file ID that is not `GROUP/Mxx/XX/YY/NAME`.
    #[error("invalid file id {0} — the expected shape is GROUP/Mxx/XX/YY/NAME, e.g. group1/M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt")]
    InvalidFileId(String),
    /// An argument refused before anything was sent (extension, group, prefix, metadata...).
    #[error("invalid {what}: {reason}")]
    InvalidInput { what: &'static str, reason: String },
}

impl ClientError {
    /// The FastDFS status code behind this error, if a server answered one.
    pub fn status(&self) -> Option<u8> {
        match self {
            ClientError::NotFound => Some(status::ENOENT),
            ClientError::AlreadyExists => Some(status::EEXIST),
            ClientError::NoSpace => Some(status::ENOSPC),
            ClientError::InvalidArgument => Some(status::EINVAL),
            ClientError::Status(code) => Some(*code),
            _ => None,
        }
    }

    /// The error for a non-zero status byte.
    pub fn from_status(code: u8) -> Self {
        match code {
            status::ENOENT => ClientError::NotFound,
            status::EEXIST => ClientError::AlreadyExists,
            status::ENOSPC => ClientError::NoSpace,
            status::EINVAL => ClientError::InvalidArgument,
            other => ClientError::Status(other),
        }
    }

    /// A file ID that failed to parse, with the reason.
    pub fn invalid_file_id(text: &str, err: &ProtoError) -> Self {
        match err {
            // the message already says what is expected
            ProtoError::InvalidField {
                field: "file id", ..
            } => ClientError::InvalidFileId(format!("{text:?}")),
            ProtoError::InvalidField { field, reason } => {
                ClientError::InvalidFileId(format!("{text:?} ({field}: {reason})"))
            }
            other => ClientError::InvalidFileId(format!("{text:?} ({other})")),
        }
    }

    /// A local argument that failed validation.
    pub(crate) fn input(what: &'static str, err: impl std::fmt::Display) -> Self {
        ClientError::InvalidInput {
            what,
            reason: err.to_string(),
        }
    }

    /// Whether the error means the connection itself failed (refused, reset, closed, timed
    /// out), as opposed to an answer from the server: such errors move on to the next tracker.
    pub(crate) fn is_connection_failure(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Io(_))
    }

    /// Whether the error shows a connection the peer had already dropped (as opposed to a
    /// slow one): a reused pooled connection failing this way is retried on a fresh one.
    pub(crate) fn is_dead_connection(&self) -> bool {
        match self {
            ClientError::Io(err) => matches!(
                err.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::NotConnected
            ),
            _ => false,
        }
    }
}

impl From<ProtoError> for ClientError {
    fn from(err: ProtoError) -> Self {
        match err {
            ProtoError::Status { status } => ClientError::from_status(status),
            ProtoError::Io(io) => ClientError::Io(io),
            ProtoError::Closed => ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by the server",
            )),
            other => ClientError::Protocol(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_variants_and_back() {
        for code in 1..=255u8 {
            let err = ClientError::from_status(code);
            assert_eq!(err.status(), Some(code), "{err}");
        }
        assert!(matches!(ClientError::from_status(2), ClientError::NotFound));
        assert!(matches!(
            ClientError::from_status(17),
            ClientError::AlreadyExists
        ));
        assert!(matches!(
            ClientError::from_status(22),
            ClientError::InvalidArgument
        ));
        assert!(matches!(ClientError::from_status(28), ClientError::NoSpace));
        assert!(matches!(
            ClientError::from_status(5),
            ClientError::Status(5)
        ));
        assert_eq!(ClientError::Config("x".into()).status(), None);
    }

    #[test]
    fn proto_errors_are_mapped() {
        let status: ClientError = ProtoError::Status { status: 2 }.into();
        assert!(matches!(status, ClientError::NotFound));
        let closed: ClientError = ProtoError::Closed.into();
        assert!(closed.is_dead_connection());
        assert!(closed.is_connection_failure());
        let io: ClientError = ProtoError::Io(io::Error::from(io::ErrorKind::TimedOut)).into();
        assert!(io.is_connection_failure());
        assert!(!io.is_dead_connection());
        let proto: ClientError = ProtoError::UnexpectedResponse(11).into();
        assert!(matches!(proto, ClientError::Protocol(_)));
        assert!(!proto.is_connection_failure());
        assert!(!ClientError::NotFound.is_connection_failure());
    }

    #[test]
    fn messages_say_what_to_do() {
        let err = ClientError::NoTracker {
            tried: vec!["127.0.0.1:22122".into(), "127.0.0.1:22123".into()],
            last: "connection refused".into(),
        };
        assert_eq!(
            err.to_string(),
            "no tracker reachable (tried 127.0.0.1:22122, 127.0.0.1:22123): connection refused \
             — is fdfs-trackerd running? check tracker_servers"
        );
        assert_eq!(
            ClientError::Status(5).to_string(),
            "server answered status 5 (i/o error)"
        );
        let bad = ClientError::invalid_file_id("x", &ProtoError::invalid("file id", "no slash"));
        assert!(bad.to_string().contains("GROUP/Mxx/XX/YY/NAME"));
    }
}
