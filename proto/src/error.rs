use std::io;

/// Everything that can go wrong while decoding or exchanging FastDFS packets.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed by peer")]
    Closed,
    #[error("body truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("bad body length {len} for {what}")]
    BadLength { what: &'static str, len: u64 },
    #[error("negative packet length {0}")]
    NegativeLength(i64),
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge { len: u64, max: u64 },
    #[error("invalid {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("unexpected response command {0} (expected 100)")]
    UnexpectedResponse(u8),
    #[error("server answered status {status} ({})", crate::status::describe(*status))]
    Status { status: u8 },
}

impl ProtoError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ProtoError::InvalidField {
            field,
            reason: reason.into(),
        }
    }

    /// The FastDFS status byte a server should answer for this decoding error.
    pub fn status(&self) -> u8 {
        match self {
            ProtoError::Status { status } => *status,
            ProtoError::Io(_) | ProtoError::Closed => crate::status::EIO,
            _ => crate::status::EINVAL,
        }
    }
}
