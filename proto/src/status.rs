//! Status bytes (A.6): 0 for success, otherwise a Linux errno value.

pub const OK: u8 = 0;
pub const EPERM: u8 = 1;
pub const ENOENT: u8 = 2;
pub const EINTR: u8 = 4;
pub const EIO: u8 = 5;
pub const EAGAIN: u8 = 11;
pub const ENOMEM: u8 = 12;
pub const EACCES: u8 = 13;
pub const EBUSY: u8 = 16;
pub const EEXIST: u8 = 17;
pub const EISDIR: u8 = 21;
pub const EINVAL: u8 = 22;
pub const ENOSPC: u8 = 28;
pub const ENAMETOOLONG: u8 = 36;
pub const EOPNOTSUPP: u8 = 95;
pub const ETIMEDOUT: u8 = 110;
pub const EALREADY: u8 = 114;

/// A short human description of a status byte, for logs and CLI errors.
pub fn describe(status: u8) -> &'static str {
    match status {
        OK => "success",
        EPERM => "operation not permitted",
        ENOENT => "not found",
        EINTR => "interrupted",
        EIO => "i/o error",
        EAGAIN => "try again",
        ENOMEM => "out of memory",
        EACCES => "access denied",
        EBUSY => "busy",
        EEXIST => "already exists",
        EISDIR => "not a regular file",
        EINVAL => "invalid argument",
        ENOSPC => "no space left",
        ENAMETOOLONG => "name too long",
        EOPNOTSUPP => "operation not supported",
        ETIMEDOUT => "timed out",
        EALREADY => "already done",
        _ => "unknown error",
    }
}

/// Maps an I/O error to the status byte a server answers for it.
pub fn from_io(err: &std::io::Error) -> u8 {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::NotFound => ENOENT,
        ErrorKind::AlreadyExists => EEXIST,
        ErrorKind::PermissionDenied => EACCES,
        ErrorKind::InvalidInput | ErrorKind::InvalidData => EINVAL,
        _ => match err.raw_os_error() {
            Some(code) if (1..=255).contains(&code) => code as u8,
            _ => EIO,
        },
    }
}
