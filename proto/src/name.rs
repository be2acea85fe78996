//! Remote file names (H): the 20 bytes behind the 27 base64 characters, the size-field bits,
//! the 7-character suffix, slave names and name classification.

use std::net::Ipv4Addr;

use crate::error::ProtoError;

/// Base64 alphabet of FastDFS names (H.3): RFC 4648 base64url.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/// Length of the encoded record in a name.
pub const ENCODED_LEN: usize = 27;
/// Length of the suffix (random digits and extension).
pub const SUFFIX_LEN: usize = 7;
/// Length of a normal logical name `Mxx/XX/YY/` + 27 + 7.
pub const NORMAL_NAME_LEN: usize = 44;
/// Length of a trunk logical name.
pub const TRUNK_NAME_LEN: usize = 60;
/// Length of the `Mxx/XX/YY/` prefix.
pub const PATH_PREFIX_LEN: usize = 10;

/// Bit 63 of the size field: a normal file below 4 GiB with random bits above the size.
pub const NORMAL_MARK: u64 = 1 << 63;
/// Bit 58: appender file.
pub const APPENDER_FLAG: u64 = 1 << 58;
/// Bit 59: trunk-stored file.
pub const TRUNK_FLAG: u64 = 1 << 59;
/// Largest numeric storage id that fits a name (H.2).
pub const MAX_STORAGE_ID: u32 = 0xFF_FFFF;

/// Who accepted the upload: an IPv4 address or a numeric storage id (H.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Ip(Ipv4Addr),
    Id(u32),
}

impl Source {
    fn encode(self) -> [u8; 4] {
        match self {
            Source::Ip(ip) => ip.octets(),
            // The reference implementation byte-swaps ids on little-endian hosts (H.2).
            Source::Id(id) => id.to_le_bytes(),
        }
    }

    fn decode(raw: [u8; 4]) -> Self {
        let value = u32::from_le_bytes(raw);
        if value > 0 && value <= MAX_STORAGE_ID {
            Source::Id(value)
        } else {
            Source::Ip(Ipv4Addr::from(raw))
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Ip(ip) => write!(f, "{ip}"),
            Source::Id(id) => write!(f, "{id}"),
        }
    }
}

/// The decoded 20-byte record of a remote name (H.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NameFields {
    pub source: Source,
    pub timestamp: u32,
    pub size_field: u64,
    pub crc32: u32,
}

/// What kind of file a name denotes (H.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Normal,
    Appender,
    Slave,
    Trunk,
}

impl FileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Normal => "normal",
            FileKind::Appender => "appender",
            FileKind::Slave => "slave",
            FileKind::Trunk => "trunk",
        }
    }
}

impl NameFields {
    pub fn to_bytes(&self) -> [u8; 20] {
        let mut raw = [0u8; 20];
        raw[0..4].copy_from_slice(&self.source.encode());
        raw[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        raw[8..16].copy_from_slice(&self.size_field.to_be_bytes());
        raw[16..20].copy_from_slice(&self.crc32.to_be_bytes());
        raw
    }

    pub fn from_bytes(raw: &[u8; 20]) -> Self {
        let mut source = [0u8; 4];
        source.copy_from_slice(&raw[0..4]);
        let mut ts = [0u8; 4];
        ts.copy_from_slice(&raw[4..8]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&raw[8..16]);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&raw[16..20]);
        NameFields {
            source: Source::decode(source),
            timestamp: u32::from_be_bytes(ts),
            size_field: u64::from_be_bytes(size),
            crc32: u32::from_be_bytes(crc),
        }
    }

    /// The 27 base64 characters of a name.
    pub fn encode(&self) -> String {
        encode_base64(&self.to_bytes())
    }

    /// Decodes the 27 characters at offset 10 of a logical name, or of a base name.
    pub fn decode(encoded: &str) -> Result<Self, ProtoError> {
        let raw = decode_base64(encoded.as_bytes())?;
        Ok(Self::from_bytes(&raw))
    }

    /// Decodes the record from a logical name (`Mxx/XX/YY/...`).
    pub fn from_logical_name(logical: &str) -> Result<Self, ProtoError> {
        let base = logical
            .get(PATH_PREFIX_LEN..PATH_PREFIX_LEN + ENCODED_LEN)
            .ok_or_else(|| ProtoError::invalid("file name", "too short to decode"))?;
        Self::decode(base)
    }

    pub fn is_appender(&self) -> bool {
        self.size_field & APPENDER_FLAG != 0
    }

    pub fn is_trunk(&self) -> bool {
        self.size_field & TRUNK_FLAG != 0
    }

    /// The file size as a client reads it from a name (H.4).
    pub fn file_size(&self) -> u64 {
        if self.size_field & NORMAL_MARK != 0 || self.is_trunk() {
            self.size_field & 0xFFFF_FFFF
        } else {
            self.size_field
        }
    }
}

/// The size field of a new name (H.4); `random` supplies the 23 random bits.
pub fn size_field(size: u64, appender: bool, random: u32) -> u64 {
    let random = u64::from(random & 0x7F_FFFF) << 32;
    if appender {
        NORMAL_MARK | APPENDER_FLAG | random
    } else if size < (1 << 32) {
        NORMAL_MARK | random | size
    } else {
        size
    }
}

/// Classifies a logical name (H.8).
pub fn classify(logical: &str, fields: &NameFields) -> FileKind {
    let len = logical.len();
    if fields.is_appender() {
        FileKind::Appender
    } else if len > TRUNK_NAME_LEN || (len > NORMAL_NAME_LEN && !fields.is_trunk()) {
        FileKind::Slave
    } else if fields.is_trunk() {
        FileKind::Trunk
    } else {
        FileKind::Normal
    }
}

/// Whether `base` is shaped as a generated normal name: the encoded fields, then the
/// 7-character suffix of digits and an optional `.ext` (H.6). The length rule of [`classify`]
/// takes a short slave name (a master without its extension plus a prefix, `<fields>123_s`)
/// for a normal one; this tells them apart where it matters (checking content against the
/// fields, which for a slave are its master's).
pub fn has_normal_suffix(base: &str) -> bool {
    let Some(suffix) = base.get(ENCODED_LEN..) else {
        return false;
    };
    let digits = suffix.split('.').next().unwrap_or("");
    suffix.len() == SUFFIX_LEN && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an upload extension: 0..6 characters of `[A-Za-z0-9_.-]` (A.5).
pub fn validate_ext(ext: &str) -> Result<(), ProtoError> {
    if ext.len() > crate::EXT_LEN {
        return Err(ProtoError::invalid("extension", "longer than 6 characters"));
    }
    if !ext.bytes().all(is_name_char) {
        return Err(ProtoError::invalid(
            "extension",
            format!("bad characters in {ext:?}"),
        ));
    }
    Ok(())
}

/// Checks a slave prefix: 1..16 characters of `[A-Za-z0-9_.-]` (A.5).
pub fn validate_prefix(prefix: &str) -> Result<(), ProtoError> {
    if prefix.is_empty() || prefix.len() > crate::PREFIX_LEN {
        return Err(ProtoError::invalid("prefix", "must be 1 to 16 characters"));
    }
    if !prefix.bytes().all(is_name_char) {
        return Err(ProtoError::invalid(
            "prefix",
            format!("bad characters in {prefix:?}"),
        ));
    }
    Ok(())
}

/// Characters allowed in extensions, prefixes and base names.
pub fn is_name_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-')
}

/// The 7-character suffix (H.6) from an extension and the random digits drawn for it.
///
/// `digits` must hold at least `7 - 1 - ext.len()` decimal digits (7 when `ext` is empty).
pub fn suffix(ext: &str, digits: &str) -> String {
    if ext.is_empty() {
        digits[..SUFFIX_LEN].to_string()
    } else {
        format!("{}.{}", &digits[..SUFFIX_LEN - 1 - ext.len()], ext)
    }
}

/// Draws a suffix with fresh random digits.
pub fn random_suffix(ext: &str, rng: &mut impl rand::Rng) -> String {
    let digits: String = (0..SUFFIX_LEN)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect();
    suffix(ext, &digits)
}

/// The base name of a normal or appender file: 27 characters + suffix.
pub fn base_name(fields: &NameFields, suffix: &str) -> String {
    let mut out = fields.encode();
    out.push_str(suffix);
    out
}

/// What every slave name of `master` starts with (H.9): the master name without its `.ext`,
/// a `.` looked for only in its final 7 characters; the whole name when there is none.
/// `None` when that would cut a non-ASCII name inside a character.
pub fn slave_stem(master: &str) -> Option<&str> {
    // bytes, not chars: a non-ASCII master must not panic on a char boundary
    let tail_start = master.len().saturating_sub(SUFFIX_LEN);
    match master.as_bytes()[tail_start..]
        .iter()
        .rposition(|&b| b == b'.')
    {
        Some(dot) => master.get(..tail_start + dot),
        None => Some(master),
    }
}

/// The logical name of a slave (H.9): master without its `.ext`, then prefix, then `.ext`.
pub fn slave_name(master: &str, prefix: &str, ext: &str) -> Result<String, ProtoError> {
    validate_prefix(prefix)?;
    validate_ext(ext)?;
    if prefix == "-m" && ext.is_empty() {
        return Err(ProtoError::invalid(
            "prefix",
            "-m without extension collides with metadata",
        ));
    }
    let stem = slave_stem(master)
        .ok_or_else(|| ProtoError::invalid("file name", "master name is not ASCII"))?;
    let mut out = String::with_capacity(master.len() + prefix.len() + ext.len() + 1);
    out.push_str(stem);
    out.push_str(prefix);
    if !ext.is_empty() {
        out.push('.');
        out.push_str(ext);
    }
    if out == master {
        return Err(ProtoError::invalid(
            "prefix",
            "slave name equals the master name",
        ));
    }
    Ok(out)
}

/// PJW hash with an arithmetic shift (I.2), used by the hash directory mode.
pub fn pjw_hash(bytes: &[u8]) -> i32 {
    let mut hash: i32 = 0;
    for &byte in bytes {
        hash = hash.wrapping_shl(4).wrapping_add(i32::from(byte));
        let top = hash & (0xF000_0000u32 as i32);
        if top != 0 {
            hash = (hash ^ (top >> 24)) & 0x0FFF_FFFF;
        }
    }
    hash
}

fn encode_base64(raw: &[u8; 20]) -> String {
    let mut out = String::with_capacity(ENCODED_LEN);
    for chunk in raw.chunks(3) {
        let b0 = chunk[0];
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let index = (n >> (18 - 6 * i)) & 0x3F;
            out.push(char::from(ALPHABET[index as usize]));
        }
    }
    out
}

fn decode_base64(encoded: &[u8]) -> Result<[u8; 20], ProtoError> {
    if encoded.len() != ENCODED_LEN {
        return Err(ProtoError::invalid(
            "file name",
            "encoded part is not 27 characters",
        ));
    }
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = [0u8; 20];
    let mut pos = 0;
    for &ch in encoded {
        let value = match ch {
            b'A'..=b'Z' => ch - b'A',
            b'a'..=b'z' => ch - b'a' + 26,
            b'0'..=b'9' => ch - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return Err(ProtoError::invalid("file name", "not base64")),
        };
        bits = (bits << 6) | u32::from(value);
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out[pos] = (bits >> nbits) as u8;
            pos += 1;
            bits &= (1 << nbits) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(raw: &[u8]) -> String {
        raw.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// H.12: every vector decodes to the captured 20 bytes and re-encodes to the same text.
    #[test]
    fn spec_vectors() {
        let vectors = [
            (
                "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt",
                "7f00001f6b036de180556ce400000006363a3020",
                FileKind::Normal,
            ),
            (
                "M00/00/00/fwAAH2sDbeuEAzFAAAAAADY6MCA790.txt",
                "7f00001f6b036deb8403314000000000363a3020",
                FileKind::Appender,
            ),
            (
                "M00/00/00/fwAAH2sDbfeAf-LuAAAABjY6MCA7161024x1024.txt",
                "7f00001f6b036df7807fe2ee00000006363a3020",
                FileKind::Slave,
            ),
            (
                "M00/1F/98/oYYBAGsDbvqAM2mPAAAABjY6MCA581.txt",
                "a18601006b036efa8033698f00000006363a3020",
                FileKind::Normal,
            ),
            (
                "M00/00/00/fwAAH2sDb2eAIcp1AAAADC_HDHc440.txt",
                "7f00001f6b036f678021ca750000000c2fc70c77",
                FileKind::Normal,
            ),
            (
                "M00/00/00/fwAAH2sDbiiAPSwfAAAAFoA2zqM266.txt",
                "7f00001f6b036e28803d2c1f000000168036cea3",
                FileKind::Normal,
            ),
            (
                "M00/00/00/fwAAH2sDbiiAR31UAAAAAAAAAAA1921179",
                "7f00001f6b036e2880477d540000000000000000",
                FileKind::Normal,
            ),
        ];
        for (name, raw_hex, kind) in vectors {
            let fields = NameFields::from_logical_name(name).unwrap();
            assert_eq!(hex(&fields.to_bytes()), raw_hex, "{name}");
            assert_eq!(fields.encode(), &name[10..37]);
            assert_eq!(classify(name, &fields), kind, "{name}");
        }
        let v1 = NameFields::from_logical_name(vectors[0].0).unwrap();
        assert_eq!(v1.source, Source::Ip(Ipv4Addr::new(127, 0, 0, 31)));
        assert_eq!(v1.timestamp, 1_795_386_849);
        assert_eq!(v1.file_size(), 6);
        assert_eq!(v1.crc32, 909_783_072);
        let v4 = NameFields::from_logical_name(vectors[3].0).unwrap();
        assert_eq!(v4.source, Source::Id(100_001));
        let v6 = NameFields::from_logical_name(vectors[5].0).unwrap();
        assert_eq!(v6.file_size(), 22);
        assert_eq!(v6.crc32, 0x8036_CEA3);
    }

    #[test]
    fn size_fields() {
        assert_eq!(size_field(6, false, 0x556CE4), 0x80556ce4_00000006);
        assert_eq!(size_field(0, true, 0x033140), 0x84033140_00000000);
        assert_eq!(size_field(5 << 32, false, 0x1234), 5 << 32);
        let fields = NameFields {
            source: Source::Id(1),
            timestamp: 0,
            size_field: 5 << 32,
            crc32: 0,
        };
        assert_eq!(fields.file_size(), 5 << 32);
    }

    #[test]
    fn suffixes() {
        assert_eq!(suffix("txt", "2751234"), "275.txt");
        assert_eq!(suffix("", "1921179"), "1921179");
        assert_eq!(suffix("abcdef", "9999999"), ".abcdef");
        assert_eq!(suffix(".txt", "7612345"), "76..txt");
        let mut rng = rand::thread_rng();
        let random = random_suffix("JPG", &mut rng);
        assert_eq!(random.len(), 7);
        assert!(random.ends_with(".JPG"));
    }

    #[test]
    fn slave_names() {
        let master = "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275.txt";
        assert_eq!(
            slave_name(master, "_s", "").unwrap(),
            "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275_s"
        );
        assert_eq!(
            slave_name(master, "_p", "png").unwrap(),
            "M00/00/00/fwAAH2sDbeGAVWzkAAAABjY6MCA275_p.png"
        );
        assert_eq!(
            slave_name(
                "M00/00/00/fwAAH2sDbfeAf-LuAAAABjY6MCA716.txt",
                "1024x1024",
                "txt"
            )
            .unwrap(),
            "M00/00/00/fwAAH2sDbfeAf-LuAAAABjY6MCA7161024x1024.txt"
        );
        assert!(slave_name(master, "", "png").is_err());
        assert!(slave_name(master, "-m", "").is_err());
        assert!(slave_name(master, "a/b", "").is_err());
        assert!(slave_name(master, "12345678901234567", "").is_err());
        assert!(slave_name("M00/00/00/ab\u{e9}\u{e9}\u{e9}\u{e9}", "_s", "").is_ok());
    }

    #[test]
    fn extensions() {
        assert!(validate_ext("txt").is_ok());
        assert!(validate_ext("").is_ok());
        assert!(validate_ext(".txt").is_ok());
        assert!(validate_ext("t/t").is_err());
        assert!(validate_ext("abcdefg").is_err());
    }

    #[test]
    fn pjw_vectors() {
        assert_eq!(pjw_hash(b"fwAAH2sDbeGAVWzkAAAABjY6MCA"), 180_771_281);
        assert_eq!(
            pjw_hash(&[0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9, 0xF8, 0xF7, 0xF6]),
            53_839_686
        );
    }

    #[test]
    fn bad_base64_is_an_error() {
        assert!(NameFields::decode("fwAAH2sDbeGAVWzkAAAABjY6MC!").is_err());
        assert!(NameFields::decode("short").is_err());
        assert!(NameFields::from_logical_name("M00/00/00/abc").is_err());
    }

    proptest! {
        #[test]
        fn fields_round_trip(ip in any::<u32>(), id in 1u32..=MAX_STORAGE_ID, use_id in any::<bool>(),
                             ts in any::<u32>(), size in any::<u64>(), crc in any::<u32>()) {
            let source = if use_id { Source::Id(id) } else {
                // addresses whose little-endian value looks like an id are ambiguous (H.2)
                let raw = ip.to_be_bytes();
                prop_assume!(u32::from_le_bytes(raw) > MAX_STORAGE_ID || u32::from_le_bytes(raw) == 0);
                Source::Ip(Ipv4Addr::from(raw))
            };
            let fields = NameFields { source, timestamp: ts, size_field: size, crc32: crc };
            let text = fields.encode();
            prop_assert_eq!(text.len(), ENCODED_LEN);
            prop_assert_eq!(NameFields::decode(&text).unwrap(), fields);
        }

        #[test]
        fn decode_never_panics(text in "\\PC{0,40}") {
            let _ = NameFields::decode(&text);
            let _ = NameFields::from_logical_name(&text);
        }
    }
}
