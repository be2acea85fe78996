//! Cluster-secret authentication between fdfs-rs servers (fdfs-rs extension, not FastDFS).
//!
//! When `cluster_secret` is set, a storage proves to a tracker (before JOIN) and to a peer
//! storage (before pushing or pulling replicas) that it holds the secret, and the other side
//! proves the same back, over the ordinary FastDFS framing:
//!
//! ```text
//! initiator → responder  cmd 240 AUTH_CHALLENGE  u8 version (1) | u8 purpose | nonce_i[32]
//! responder → initiator  cmd 100 status 0        nonce_r[32] | mac_r[32]
//! initiator → responder  cmd 241 AUTH_PROOF      mac_i[32]
//! responder → initiator  cmd 100 status 0        (empty)   — or status 1 (EPERM), then close
//!
//! mac_x = HMAC-SHA256(secret, "fdfs-rs cluster auth v1" 0x00 | purpose | role_x | nonce_i | nonce_r)
//! role_r = b'R', role_i = b'I'
//! ```
//!
//! The responder proves itself first, so a sync sender learns that its receiver holds the
//! secret before any file content goes out; both nonces are fresh random values, so a
//! recorded exchange cannot be replayed, and the role and purpose bytes keep a MAC made for
//! one side or one use from being reflected into another. A server without a secret answers
//! 240 like any unknown command (status 22), which the initiator reports as such.
//!
//! Codes 240 and 241 lie far above every FastDFS 6.x code (the highest is 111, ACTIVE_TEST;
//! see the C registry of the wire spec), so no FastDFS peer or client sends them.
//!
//! The messages and the MAC are pure functions here; [`initiate`] and [`respond`] are the thin
//! exchanges over a [`Connection`] both daemons use.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::cmd::Command;
use crate::conn::Connection;
use crate::{status, ProtoError};

/// Version byte of the challenge.
pub const VERSION: u8 = 1;
pub const NONCE_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
/// Shortest secret accepted: 16 bytes, so it cannot be guessed offline from a recorded MAC.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted (a file holding something else entirely is a mistake).
pub const MAX_SECRET_LEN: usize = 4096;
const LABEL: &[u8] = b"fdfs-rs cluster auth v1\0";

type HmacSha256 = Hmac<Sha256>;

/// What an authenticated connection is for; bound into every MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Purpose {
    /// A storage's report connection to a tracker (JOIN, BEAT, ...).
    TrackerLink = 1,
    /// Storage ↔ storage replication (sync pushes and the file-list pull).
    Sync = 2,
}

impl TryFrom<u8> for Purpose {
    type Error = AuthError;
    fn try_from(value: u8) -> Result<Self, AuthError> {
        match value {
            1 => Ok(Purpose::TrackerLink),
            2 => Ok(Purpose::Sync),
            other => Err(AuthError::Purpose(other)),
        }
    }
}

/// Which side of the exchange made a MAC; bound into it, so one side's MAC is never
/// accepted as the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Role {
    /// The side that connected and sent AUTH_CHALLENGE.
    Initiator = b'I',
    /// The side that answers it.
    Responder = b'R',
}

/// Why an authentication exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("bad {what} length {len}")]
    BadLength { what: &'static str, len: usize },
    #[error("unsupported authentication version {0}")]
    Version(u8),
    #[error("unknown authentication purpose {0}")]
    Purpose(u8),
    #[error("authentication for {got:?} where {expected:?} was expected")]
    WrongPurpose { got: Purpose, expected: Purpose },
    #[error("the peer does not hold the cluster secret (MAC mismatch)")]
    BadMac,
    #[error("expected AUTH_PROOF (241), got command {0}")]
    UnexpectedCommand(u8),
    #[error("the peer does not authenticate (it answered 22): set cluster_secret on it too")]
    Unsupported,
    #[error("the peer refused our proof (status {0}): the cluster secrets differ")]
    Refused(u8),
    #[error("the peer hung up after our proof instead of sending its own: it does not hold the same cluster secret")]
    Abandoned,
    #[error(transparent)]
    Proto(#[from] ProtoError),
}

/// The shared secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

/// Why a configured secret was refused (the caller names the key).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the secret is {len} bytes; at least {MIN_SECRET_LEN} are needed")]
    TooShort { len: usize },
    #[error("the secret is {len} bytes; at most {MAX_SECRET_LEN} are accepted")]
    TooLong { len: usize },
    #[error("cluster_secret and cluster_secret_file are both set; keep one")]
    Both,
}

impl ClusterSecret {
    /// A secret from its bytes, as written in the config.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        if bytes.len() > MAX_SECRET_LEN {
            return Err(SecretError::TooLong { len: bytes.len() });
        }
        Ok(ClusterSecret(bytes))
    }

    /// Reads a secret file; one trailing newline (as editors and `echo` write) is not part of
    /// the secret.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let mut bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        Self::new(bytes)
    }

    /// The secret of a config: `cluster_secret` (already checked when parsed) or the content
    /// of `cluster_secret_file`; `None` when neither is set (authentication off). An error
    /// comes with the key to name.
    pub fn from_config(
        inline: Option<&ClusterSecret>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, (&'static str, SecretError)> {
        match (inline, file) {
            (Some(_), Some(_)) => Err(("cluster_secret", SecretError::Both)),
            (Some(secret), None) => Ok(Some(secret.clone())),
            (None, Some(path)) => Self::from_file(path)
                .map(Some)
                .map_err(|err| ("cluster_secret_file", err)),
            (None, None) => Ok(None),
        }
    }

    fn hmac(&self, role: Role, purpose: Purpose, nonce_i: &Nonce, nonce_r: &Nonce) -> HmacSha256 {
        // new_from_slice accepts keys of any length for HMAC
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(LABEL);
        mac.update(&[purpose as u8, role as u8]);
        mac.update(&nonce_i.0);
        mac.update(&nonce_r.0);
        mac
    }

    /// The MAC `role` sends in the exchange with these nonces.
    pub fn mac(
        &self,
        role: Role,
        purpose: Purpose,
        nonce_i: &Nonce,
        nonce_r: &Nonce,
    ) -> [u8; MAC_LEN] {
        self.hmac(role, purpose, nonce_i, nonce_r)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Checks a MAC sent by `role`, in constant time.
    pub fn verify(
        &self,
        role: Role,
        purpose: Purpose,
        nonce_i: &Nonce,
        nonce_r: &Nonce,
        mac: &[u8; MAC_LEN],
    ) -> Result<(), AuthError> {
        self.hmac(role, purpose, nonce_i, nonce_r)
            .verify_slice(mac)
            .map_err(|_| AuthError::BadMac)
    }
}

/// `cluster_secret = "..."` in a config: the UTF-8 bytes of the string.
impl<'de> serde::Deserialize<'de> for ClusterSecret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ClusterSecret::new(text.into_bytes()).map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret(<{} bytes>)", self.0.len())
    }
}

/// A fresh random value, one per side per exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nonce(pub [u8; NONCE_LEN]);

impl Nonce {
    /// From the operating system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Nonce(bytes)
    }
}

/// AUTH_CHALLENGE (240) body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub purpose: Purpose,
    pub nonce: Nonce,
}

impl Challenge {
    pub const LEN: usize = 2 + NONCE_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.push(VERSION);
        out.push(self.purpose as u8);
        out.extend_from_slice(&self.nonce.0);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, AuthError> {
        let [version, purpose, nonce @ ..] = body else {
            return Err(AuthError::BadLength {
                what: "AUTH_CHALLENGE",
                len: body.len(),
            });
        };
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| AuthError::BadLength {
            what: "AUTH_CHALLENGE",
            len: body.len(),
        })?;
        if *version != VERSION {
            return Err(AuthError::Version(*version));
        }
        Ok(Challenge {
            purpose: Purpose::try_from(*purpose)?,
            nonce: Nonce(nonce),
        })
    }
}

/// The responder's answer to a challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChallengeReply {
    pub nonce: Nonce,
    pub mac: [u8; MAC_LEN],
}

impl ChallengeReply {
    pub const LEN: usize = NONCE_LEN + MAC_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.nonce.0);
        out.extend_from_slice(&self.mac);
        out
    }

    pub fn decode(body: &[u8]) -> Result<Self, AuthError> {
        let bad = || AuthError::BadLength {
            what: "AUTH_CHALLENGE reply",
            len: body.len(),
        };
        if body.len() != Self::LEN {
            return Err(bad());
        }
        let (nonce, mac) = body.split_at(NONCE_LEN);
        Ok(ChallengeReply {
            nonce: Nonce(nonce.try_into().map_err(|_| bad())?),
            mac: mac.try_into().map_err(|_| bad())?,
        })
    }
}

/// AUTH_PROOF (241) body: the initiator's MAC.
pub fn decode_proof(body: &[u8]) -> Result<[u8; MAC_LEN], AuthError> {
    body.try_into().map_err(|_| AuthError::BadLength {
        what: "AUTH_PROOF",
        len: body.len(),
    })
}

/// The initiator's side, between sending the challenge and sending the proof.
#[derive(Debug)]
pub struct Initiator<'a> {
    secret: &'a ClusterSecret,
    challenge: Challenge,
}

impl<'a> Initiator<'a> {
    pub fn new(secret: &'a ClusterSecret, purpose: Purpose, nonce: Nonce) -> Self {
        Initiator {
            secret,
            challenge: Challenge { purpose, nonce },
        }
    }

    pub fn challenge(&self) -> &Challenge {
        &self.challenge
    }

    /// Checks the responder's proof; returns our own proof (the AUTH_PROOF body).
    pub fn on_reply(&self, reply: &[u8]) -> Result<[u8; MAC_LEN], AuthError> {
        let reply = ChallengeReply::decode(reply)?;
        let Challenge { purpose, nonce } = self.challenge;
        self.secret
            .verify(Role::Responder, purpose, &nonce, &reply.nonce, &reply.mac)?;
        Ok(self
            .secret
            .mac(Role::Initiator, purpose, &nonce, &reply.nonce))
    }
}

/// The responder's side, between answering the challenge and checking the proof.
#[derive(Debug)]
pub struct Responder<'a> {
    secret: &'a ClusterSecret,
    challenge: Challenge,
    nonce: Nonce,
}

impl<'a> Responder<'a> {
    /// Checks a challenge (purpose as `expected`); returns the state and the reply body.
    pub fn on_challenge(
        secret: &'a ClusterSecret,
        expected: Purpose,
        body: &[u8],
        nonce: Nonce,
    ) -> Result<(Self, Vec<u8>), AuthError> {
        let challenge = Challenge::decode(body)?;
        if challenge.purpose != expected {
            return Err(AuthError::WrongPurpose {
                got: challenge.purpose,
                expected,
            });
        }
        let mac = secret.mac(Role::Responder, challenge.purpose, &challenge.nonce, &nonce);
        let reply = ChallengeReply { nonce, mac }.encode();
        Ok((
            Responder {
                secret,
                challenge,
                nonce,
            },
            reply,
        ))
    }

    /// Checks the initiator's AUTH_PROOF body.
    pub fn on_proof(&self, body: &[u8]) -> Result<(), AuthError> {
        let mac = decode_proof(body)?;
        self.secret.verify(
            Role::Initiator,
            self.challenge.purpose,
            &self.challenge.nonce,
            &self.nonce,
            &mac,
        )
    }
}

/// Runs the initiator's side on a fresh connection. `Ok` means both sides proved the secret.
pub async fn initiate<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    secret: &ClusterSecret,
    purpose: Purpose,
) -> Result<(), AuthError> {
    let initiator = Initiator::new(secret, purpose, Nonce::random());
    let reply = match conn
        .call(
            Command::AuthChallenge.code(),
            &initiator.challenge().encode(),
            ChallengeReply::LEN as u64,
        )
        .await
    {
        Err(ProtoError::Status {
            status: status::EINVAL,
        }) => return Err(AuthError::Unsupported),
        Err(ProtoError::Status { status }) => return Err(AuthError::Refused(status)),
        other => other?,
    };
    let proof = initiator.on_reply(&reply)?;
    match conn.call(Command::AuthProof.code(), &proof, 0).await {
        Ok(_) => Ok(()),
        Err(ProtoError::Status { status }) => Err(AuthError::Refused(status)),
        Err(err) => Err(err.into()),
    }
}

/// Runs the responder's side after an AUTH_CHALLENGE header whose body (at most
/// [`Challenge::LEN`] bytes, checked by the caller) is `challenge`. Answers every step itself:
/// `Ok(())` means the initiator proved the secret; on `Err` the caller closes the connection
/// (a refusal has been answered with EINVAL or EPERM where the stream allowed it).
pub async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    secret: &ClusterSecret,
    expected: Purpose,
    challenge: &[u8],
) -> Result<(), AuthError> {
    let (responder, reply) =
        match Responder::on_challenge(secret, expected, challenge, Nonce::random()) {
            Ok(pair) => pair,
            Err(err) => {
                conn.send_response(status::EINVAL, &[]).await?;
                return Err(err);
            }
        };
    conn.send_response(status::OK, &reply).await?;
    // an initiator that cannot check our MAC hangs up here: that is its answer
    let header = match conn.read_header().await {
        Ok(Some(header)) => header,
        Ok(None) | Err(ProtoError::Closed) => return Err(AuthError::Abandoned),
        Err(err) => return Err(err.into()),
    };
    let len = header.body_len()?;
    if header.cmd != Command::AuthProof.code() || len != MAC_LEN as u64 {
        conn.send_response(status::EINVAL, &[]).await?;
        return Err(if header.cmd != Command::AuthProof.code() {
            AuthError::UnexpectedCommand(header.cmd)
        } else {
            AuthError::BadLength {
                what: "AUTH_PROOF",
                len: usize::try_from(len).unwrap_or(usize::MAX),
            }
        });
    }
    let proof = conn.read_body(len, MAC_LEN as u64).await?;
    match responder.on_proof(&proof) {
        Ok(()) => {
            conn.send_response(status::OK, &[]).await?;
            Ok(())
        }
        Err(err) => {
            conn.send_response(status::EPERM, &[]).await?;
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret(text: &str) -> ClusterSecret {
        ClusterSecret::new(text.as_bytes()).unwrap()
    }

    #[test]
    fn messages_round_trip() {
        let challenge = Challenge {
            purpose: Purpose::Sync,
            nonce: Nonce([7; NONCE_LEN]),
        };
        let bytes = challenge.encode();
        assert_eq!(bytes.len(), Challenge::LEN);
        assert_eq!(&bytes[..2], &[1, 2]);
        assert_eq!(Challenge::decode(&bytes).unwrap(), challenge);
        let reply = ChallengeReply {
            nonce: Nonce([1; NONCE_LEN]),
            mac: [2; MAC_LEN],
        };
        assert_eq!(ChallengeReply::decode(&reply.encode()).unwrap(), reply);
    }

    #[test]
    fn bad_messages_are_refused() {
        assert!(matches!(
            Challenge::decode(&[]),
            Err(AuthError::BadLength { .. })
        ));
        assert!(matches!(
            Challenge::decode(&[1, 1]),
            Err(AuthError::BadLength { .. })
        ));
        let mut bytes = Challenge {
            purpose: Purpose::TrackerLink,
            nonce: Nonce([0; NONCE_LEN]),
        }
        .encode();
        bytes[0] = 2;
        assert!(matches!(
            Challenge::decode(&bytes),
            Err(AuthError::Version(2))
        ));
        bytes[0] = 1;
        bytes[1] = 9;
        assert!(matches!(
            Challenge::decode(&bytes),
            Err(AuthError::Purpose(9))
        ));
        bytes.push(0);
        assert!(matches!(
            Challenge::decode(&bytes),
            Err(AuthError::BadLength { .. })
        ));
        assert!(ChallengeReply::decode(&[0; 63]).is_err());
        assert!(decode_proof(&[0; 33]).is_err());
    }

    #[test]
    fn a_full_exchange_with_the_same_secret_succeeds() {
        let key = secret("0123456789abcdef-cluster");
        let initiator = Initiator::new(&key, Purpose::TrackerLink, Nonce::random());
        let (responder, reply) = Responder::on_challenge(
            &key,
            Purpose::TrackerLink,
            &initiator.challenge().encode(),
            Nonce::random(),
        )
        .unwrap();
        let proof = initiator.on_reply(&reply).unwrap();
        responder.on_proof(&proof).unwrap();
    }

    #[test]
    fn each_side_detects_a_different_secret() {
        let ours = secret("0123456789abcdef-ours");
        let theirs = secret("0123456789abcdef-theirs");
        // a rogue responder cannot prove itself: the initiator stops before sending anything
        let initiator = Initiator::new(&ours, Purpose::Sync, Nonce::random());
        let (_, reply) = Responder::on_challenge(
            &theirs,
            Purpose::Sync,
            &initiator.challenge().encode(),
            Nonce::random(),
        )
        .unwrap();
        assert!(matches!(initiator.on_reply(&reply), Err(AuthError::BadMac)));
        // a rogue initiator cannot make a proof the responder accepts
        let rogue = Initiator::new(&theirs, Purpose::Sync, Nonce::random());
        let (responder, _) = Responder::on_challenge(
            &ours,
            Purpose::Sync,
            &rogue.challenge().encode(),
            Nonce::random(),
        )
        .unwrap();
        let guess = theirs.mac(
            Role::Initiator,
            Purpose::Sync,
            &rogue.challenge().nonce,
            &Nonce([0; 32]),
        );
        assert!(matches!(responder.on_proof(&guess), Err(AuthError::BadMac)));
    }

    #[test]
    fn macs_are_bound_to_role_purpose_and_both_nonces() {
        let key = secret("0123456789abcdef");
        let (a, b) = (Nonce([1; 32]), Nonce([2; 32]));
        let base = key.mac(Role::Initiator, Purpose::Sync, &a, &b);
        // reflecting the responder's MAC back as a proof fails
        assert_ne!(base, key.mac(Role::Responder, Purpose::Sync, &a, &b));
        assert_ne!(base, key.mac(Role::Initiator, Purpose::TrackerLink, &a, &b));
        assert_ne!(base, key.mac(Role::Initiator, Purpose::Sync, &b, &a));
        assert!(key
            .verify(Role::Initiator, Purpose::Sync, &a, &b, &base)
            .is_ok());
        assert!(key
            .verify(Role::Responder, Purpose::Sync, &a, &b, &base)
            .is_err());
    }

    #[test]
    fn the_purpose_is_checked() {
        let key = secret("0123456789abcdef");
        let challenge = Challenge {
            purpose: Purpose::Sync,
            nonce: Nonce::random(),
        };
        assert!(matches!(
            Responder::on_challenge(
                &key,
                Purpose::TrackerLink,
                &challenge.encode(),
                Nonce::random()
            ),
            Err(AuthError::WrongPurpose { .. })
        ));
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert!(matches!(
            ClusterSecret::new(b"short".to_vec()),
            Err(SecretError::TooShort { len: 5 })
        ));
        assert!(ClusterSecret::new(vec![b'x'; MAX_SECRET_LEN + 1]).is_err());
        let key = secret("very-secret-value-123");
        assert!(!format!("{key:?}").contains("very-secret"));
        let dir = tempdir();
        let path = dir.join("secret");
        std::fs::write(&path, "0123456789abcdef\r\n").unwrap();
        assert_eq!(
            ClusterSecret::from_file(&path).unwrap(),
            secret("0123456789abcdef")
        );
        std::fs::write(&path, "0123456789abcdef\n\n").unwrap();
        assert_eq!(
            ClusterSecret::from_file(&path).unwrap(),
            secret("0123456789abcdef\n")
        );
        assert!(matches!(
            ClusterSecret::from_file(&dir.join("missing")),
            Err(SecretError::Read { .. })
        ));
        let inline = secret("0123456789abcdef-inline");
        assert_eq!(ClusterSecret::from_config(None, None).unwrap(), None);
        assert_eq!(
            ClusterSecret::from_config(Some(&inline), None).unwrap(),
            Some(inline.clone())
        );
        assert_eq!(
            ClusterSecret::from_config(None, Some(&path)).unwrap(),
            Some(secret("0123456789abcdef\n"))
        );
        let both = ClusterSecret::from_config(Some(&inline), Some(&path)).unwrap_err();
        assert!(matches!(both, ("cluster_secret", SecretError::Both)));
        std::fs::write(&path, "short\n").unwrap();
        let (key, err) = ClusterSecret::from_config(None, Some(&path)).unwrap_err();
        assert_eq!(key, "cluster_secret_file");
        assert!(err.to_string().contains("at least 16"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "fdfs-auth-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn exchange_over_a_socket_pair() {
        let key = secret("0123456789abcdef-socket");
        let wrong = secret("0123456789abcdef-wrong!");
        for (server_key, ok) in [(key.clone(), true), (wrong, false)] {
            let (a, b) = tokio::io::duplex(1024);
            let mut client = Connection::new(a);
            let mut server = Connection::new(b);
            let serving = tokio::spawn(async move {
                let header = server.read_header().await.unwrap().unwrap();
                assert_eq!(header.cmd, Command::AuthChallenge.code());
                let body = server
                    .read_body(header.body_len().unwrap(), 64)
                    .await
                    .unwrap();
                respond(&mut server, &server_key, Purpose::Sync, &body).await
            });
            let result = initiate(&mut client, &key, Purpose::Sync).await;
            assert_eq!(result.is_ok(), ok, "{result:?}");
            if ok {
                serving.await.unwrap().unwrap();
            } else {
                // the initiator saw the bad responder MAC and hung up before its proof
                assert!(matches!(result, Err(AuthError::BadMac)));
                drop(client);
                assert!(matches!(serving.await.unwrap(), Err(AuthError::Abandoned)));
            }
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(body in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Challenge::decode(&body);
            let _ = ChallengeReply::decode(&body);
            let _ = decode_proof(&body);
            let key = secret("0123456789abcdef");
            let _ = Responder::on_challenge(&key, Purpose::Sync, &body, Nonce([0; 32]));
        }

        #[test]
        fn challenges_round_trip(nonce in any::<[u8; 32]>(), sync in any::<bool>()) {
            let purpose = if sync { Purpose::Sync } else { Purpose::TrackerLink };
            let challenge = Challenge { purpose, nonce: Nonce(nonce) };
            prop_assert_eq!(Challenge::decode(&challenge.encode()).unwrap(), challenge);
        }
    }
}
