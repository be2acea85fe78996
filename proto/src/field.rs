//! Fixed-width fields and big-endian integers (B, Conventions).

use crate::error::ProtoError;

/// Appends `value` as a NUL-padded field of exactly `width` bytes.
///
/// Values longer than the field are cut: callers validate lengths before encoding, so a cut
/// only happens for values that cannot be represented anyway.
pub fn put_fixed(out: &mut Vec<u8>, value: &[u8], width: usize) {
    let used = value.len().min(width);
    out.extend_from_slice(&value[..used]);
    out.resize(out.len() + (width - used), 0);
}

pub fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_be_bytes());
}

pub fn put_i32(out: &mut Vec<u8>, value: i32) {
    out.extend_from_slice(&value.to_be_bytes());
}

/// The bytes of a fixed-width field up to its first NUL; anything after the NUL is ignored
/// because real servers leave garbage there.
pub fn fixed_bytes(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

/// A cursor over a body that hands out fields in order and reports short bodies as errors.
#[derive(Debug)]
pub struct FieldReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> FieldReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        FieldReader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], ProtoError> {
        if self.remaining() < len {
            return Err(ProtoError::Truncated {
                need: self.pos + len,
                have: self.buf.len(),
            });
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, ProtoError> {
        Ok(self.bytes(1)?[0])
    }

    pub fn i64(&mut self) -> Result<i64, ProtoError> {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(self.bytes(8)?);
        Ok(i64::from_be_bytes(raw))
    }

    pub fn i32(&mut self) -> Result<i32, ProtoError> {
        let mut raw = [0u8; 4];
        raw.copy_from_slice(self.bytes(4)?);
        Ok(i32::from_be_bytes(raw))
    }

    /// A non-negative int64 length or size field.
    pub fn len_field(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        let value = self.i64()?;
        u64::try_from(value)
            .map_err(|_| ProtoError::invalid(what, format!("negative value {value}")))
    }

    /// A fixed-width string field, read up to its first NUL.
    pub fn fixed_str(&mut self, width: usize, what: &'static str) -> Result<&'a str, ProtoError> {
        let raw = fixed_bytes(self.bytes(width)?);
        std::str::from_utf8(raw).map_err(|_| ProtoError::invalid(what, "not valid text"))
    }

    /// Everything left in the body.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    /// Everything left, as text.
    pub fn rest_str(&mut self, what: &'static str) -> Result<&'a str, ProtoError> {
        std::str::from_utf8(self.rest()).map_err(|_| ProtoError::invalid(what, "not valid text"))
    }

    /// Fails unless the whole body was consumed.
    pub fn finish(&self, what: &'static str) -> Result<(), ProtoError> {
        if self.remaining() != 0 {
            return Err(ProtoError::BadLength {
                what,
                len: self.buf.len() as u64,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_fields_pad_and_stop_at_nul() {
        let mut out = Vec::new();
        put_fixed(&mut out, b"group1", 16);
        assert_eq!(out.len(), 16);
        assert_eq!(&out[..7], b"group1\0");
        let mut garbage = out.clone();
        garbage[10] = b'x';
        assert_eq!(fixed_bytes(&garbage), b"group1");
        let mut full = Vec::new();
        put_fixed(&mut full, b"abcdefghijklmnop", 16);
        assert_eq!(fixed_bytes(&full), b"abcdefghijklmnop");
    }

    #[test]
    fn reader_reports_short_bodies() {
        let mut reader = FieldReader::new(&[0, 0, 0, 1]);
        assert!(matches!(reader.i64(), Err(ProtoError::Truncated { .. })));
        let mut reader = FieldReader::new(&[0, 0, 0, 0, 0, 0, 0, 7, 9]);
        assert_eq!(reader.i64().unwrap(), 7);
        assert!(reader.finish("x").is_err());
        assert_eq!(reader.u8().unwrap(), 9);
        assert!(reader.finish("x").is_ok());
    }
}
