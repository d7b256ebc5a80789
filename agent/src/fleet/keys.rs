//! Ed25519 keys for signing and verifying bundles, with `ring` (already in
//! the binary for TLS: no crypto crate of our own).
//!
//! Owns the key file formats. Never decides whether a bundle is accepted
//! (that is `bundle.rs` and the receiver).
//!
//! # Files
//! - Private key (`fleet keygen --out ops.key`): PEM `PRIVATE KEY`, a
//!   PKCS#8 v1 document (RFC 8410: the 32-byte seed, no public key), written
//!   with mode 0600. That is the form OpenSSL writes and reads (`openssl
//!   pkey -in ops.key -pubout`; OpenSSL 3.0 cannot read the v2 form ring
//!   generates), and a key made by `openssl genpkey -algorithm ed25519`
//!   signs here too.
//! - Public key (`ops.key.pub`, what a node lists in `fleet.trusted_keys`):
//!   PEM `PUBLIC KEY` (SubjectPublicKeyInfo, 44 bytes of DER). A node also
//!   accepts the raw 32 bytes, or those 32 bytes as one line of base64 or
//!   hex.
//! - Key id: the first 8 bytes of SHA-256 over the raw 32-byte public key,
//!   as 16 hex digits. Bundles carry it so a node names the key it does not
//!   trust; it is a hint, never a credential (the signature is checked
//!   against the trusted key's bytes).

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): SEQUENCE,
/// AlgorithmIdentifier { id-Ed25519 }, BIT STRING of 33 bytes (no unused
/// bits); the 32 key bytes follow.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The DER prefix of an Ed25519 PKCS#8 v1 private key (RFC 8410):
/// SEQUENCE, version 0, AlgorithmIdentifier { id-Ed25519 }, OCTET STRING
/// holding the OCTET STRING of the 32-byte seed, which follows.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Where the seed sits in the PKCS#8 v2 document ring generates: the same
/// 16 bytes of prefix (with version 1 and a longer outer length), then the
/// seed, then the public key.
const PKCS8_V2_SEED: std::ops::Range<usize> = 16..48;

/// Length of an Ed25519 public key and of a signature.
pub(crate) const PUBLIC_KEY_LEN: usize = 32;
pub(crate) const SIGNATURE_LEN: usize = 64;

/// Key files are small; anything larger is not a key (and is not read
/// whole into memory).
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: cannot read the key: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot write the key: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: already exists; keygen never overwrites a key (remove it first, or choose another --out)",
        path.display()
    )]
    Exists { path: PathBuf },
    #[error("{}: not an Ed25519 private key ({reason}); expected the PEM file `edge-agent fleet keygen` writes (PKCS#8 \"PRIVATE KEY\")", path.display())]
    BadPrivate { path: PathBuf, reason: String },
    #[error("{}: not an Ed25519 public key ({reason}); expected a PEM \"PUBLIC KEY\" (the .pub file `edge-agent fleet keygen` writes), the raw 32 bytes, or them as base64 or hex", path.display())]
    BadPublic { path: PathBuf, reason: String },
    #[error("cannot generate a key: {0}")]
    Generate(&'static str),
}

/// A public key that may verify bundles.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    bytes: [u8; PUBLIC_KEY_LEN],
    /// Where it was read from (for status and messages); empty for keys
    /// derived from a private key.
    pub(crate) source: PathBuf,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} from {})", self.id(), self.source.display())
    }
}

impl PublicKey {
    /// The key id: 16 hex digits of SHA-256 over the key bytes.
    pub(crate) fn id(&self) -> KeyId {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&d.as_ref()[..8]);
        KeyId(id)
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }

    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub(crate) fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.bytes);
        pem("PUBLIC KEY", &der)
    }

    /// Read a public key file in any of the accepted forms.
    pub(crate) fn read(path: &Path) -> Result<PublicKey, KeyError> {
        let bytes = read_small(path)?;
        let bad = |reason: &str| KeyError::BadPublic {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let raw: Vec<u8> = if bytes.len() == PUBLIC_KEY_LEN {
            bytes
        } else if bytes.starts_with(b"-----BEGIN") {
            let spki = SubjectPublicKeyInfoDer::from_pem_slice(&bytes)
                .map_err(|e| bad(&format!("no PEM \"PUBLIC KEY\" section could be read: {e}")))?;
            let der: &[u8] = spki.as_ref();
            match der.strip_prefix(&SPKI_PREFIX[..]) {
                Some(key) if key.len() == PUBLIC_KEY_LEN => key.to_vec(),
                _ => {
                    return Err(bad(
                        "the PEM holds a public key of another algorithm (only Ed25519 signs bundles)",
                    ));
                }
            }
        } else {
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| bad("neither PEM, 32 raw bytes, base64 nor hex"))?
                .trim();
            decode_text_key(text).ok_or_else(|| bad("neither PEM, 32 raw bytes, base64 nor hex"))?
        };
        let bytes: [u8; PUBLIC_KEY_LEN] = raw
            .try_into()
            .map_err(|_| bad("the key is not 32 bytes long"))?;
        Ok(PublicKey {
            bytes,
            source: path.to_path_buf(),
        })
    }
}

/// 32 bytes written as base64 (44 characters) or hex (64 digits).
fn decode_text_key(text: &str) -> Option<Vec<u8>> {
    if text.len() == 2 * PUBLIC_KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..PUBLIC_KEY_LEN)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
            .collect();
    }
    BASE64
        .decode(text)
        .ok()
        .filter(|b| b.len() == PUBLIC_KEY_LEN)
}

/// A key id, as carried in a bundle's envelope.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct KeyId(pub(crate) [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl std::str::FromStr for KeyId {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyId, String> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("\"{s}\" is not a key id (16 hex digits)"));
        }
        let mut id = [0u8; 8];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(KeyId(id))
    }
}

/// A private key that signs bundles (the operator's).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public().id())
    }
}

impl SigningKey {
    /// Read a PEM PKCS#8 Ed25519 private key.
    pub fn read(path: &Path) -> Result<SigningKey, KeyError> {
        let bytes = read_small(path)?;
        let bad = |reason: String| KeyError::BadPrivate {
            path: path.to_path_buf(),
            reason,
        };
        let der = PrivatePkcs8KeyDer::from_pem_slice(&bytes)
            .map_err(|e| bad(format!("no PEM \"PRIVATE KEY\" section could be read: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| bad(format!("ring refused it: {e}")))?;
        Ok(SigningKey { pair })
    }

    pub(crate) fn public(&self) -> PublicKey {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey {
            bytes,
            source: PathBuf::new(),
        }
    }

    /// The Ed25519 signature of exactly `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut sig = [0u8; SIGNATURE_LEN];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }
}

/// What `keygen` wrote.
#[derive(Debug)]
pub struct Generated {
    pub(crate) private: PathBuf,
    pub(crate) public: PathBuf,
    pub(crate) id: KeyId,
}

/// Make a new key pair: `out` (the private key, mode 0600, never
/// overwritten) and `out` + `.pub`.
pub fn generate(out: &Path) -> Result<Generated, KeyError> {
    let public_path = {
        let mut p = out.as_os_str().to_owned();
        p.push(".pub");
        PathBuf::from(p)
    };
    for p in [out, public_path.as_path()] {
        if p.symlink_metadata().is_ok() {
            return Err(KeyError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    let rng = ring::rand::SystemRandom::new();
    let v2 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| KeyError::Generate("the system's random source failed"))?;
    let mut v1 = PKCS8_V1_PREFIX.to_vec();
    v1.extend_from_slice(&v2.as_ref()[PKCS8_V2_SEED]);
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&v1)
        .map_err(|_| KeyError::Generate("ring refused the seed it generated"))?;
    let key = SigningKey { pair };
    if key.public().bytes.as_slice() != &v2.as_ref()[v2.as_ref().len() - PUBLIC_KEY_LEN..] {
        return Err(KeyError::Generate(
            "ring's PKCS#8 document has a layout this version does not know",
        ));
    }
    write_new(out, pem("PRIVATE KEY", &v1).as_bytes(), 0o600)?;
    let public = key.public();
    write_new(&public_path, public.to_pem().as_bytes(), 0o644)?;
    Ok(Generated {
        private: out.to_path_buf(),
        public: public_path,
        id: public.id(),
    })
}

/// Create `path` (it must not exist) with `mode` from the start, so the
/// private key is never readable by others, not even for a moment.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                err(e)
            }
        })?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

fn read_small(path: &Path) -> Result<Vec<u8>, KeyError> {
    use std::io::Read as _;
    let err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    f.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(KeyError::BadPublic {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_KEY_FILE_BYTES} bytes"),
        });
    }
    Ok(bytes)
}

/// PEM with 64-character lines (RFC 7468).
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_can_read_and_a_public_key_that_verifies() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ops.key");
        let g = generate(&out).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = SigningKey::read(&out).unwrap();
        let public = PublicKey::read(&g.public).unwrap();
        assert_eq!(public.id(), g.id);
        let sig = key.sign(b"payload");
        assert!(public.verifies(b"payload", &sig));
        assert!(!public.verifies(b"payload!", &sig));
    }

    #[test]
    fn keygen_never_overwrites_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("ops.key");
        generate(&out).unwrap();
        let before = std::fs::read(&out).unwrap();
        let e = generate(&out).unwrap_err();
        assert!(matches!(e, KeyError::Exists { .. }), "{e}");
        assert_eq!(std::fs::read(&out).unwrap(), before);
    }

    #[test]
    fn a_public_key_reads_as_pem_raw_base64_or_hex() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate(&dir.path().join("k")).unwrap();
        let pem = PublicKey::read(&g.public).unwrap();
        let raw = dir.path().join("raw");
        std::fs::write(&raw, pem.bytes).unwrap();
        let b64 = dir.path().join("b64");
        std::fs::write(&b64, format!("{}\n", BASE64.encode(pem.bytes))).unwrap();
        let hex = dir.path().join("hex");
        let hex_text: String = pem.bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&hex, hex_text).unwrap();
        for p in [raw, b64, hex] {
            assert_eq!(
                PublicKey::read(&p).unwrap().bytes,
                pem.bytes,
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn a_file_that_is_not_a_public_key_names_the_file_and_the_accepted_forms() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("junk.pub");
        std::fs::write(&p, "hello").unwrap();
        let e = PublicKey::read(&p).unwrap_err().to_string();
        assert!(e.contains("junk.pub") && e.contains("PUBLIC KEY"), "{e}");
    }

    #[test]
    fn key_ids_round_trip_through_text() {
        let id = KeyId([0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]);
        assert_eq!(id.to_string(), "deadbeef00010203");
        assert_eq!("deadbeef00010203".parse::<KeyId>().unwrap(), id);
        assert!("xyz".parse::<KeyId>().is_err());
    }
}
