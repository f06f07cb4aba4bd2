//! The node's libp2p identity: an Ed25519 keypair kept in the data folder as
//! `p2p-key` (PKCS#8 PEM, RFC 8410, mode 0600), so the peer id survives
//! restarts and other nodes can keep it in their `--bootstrap` lists.
//!
//! It is a separate key from the member key (`member-key.pem`): the member
//! key signs tokens and may be rotated by a membership change, the peer key
//! only names a transport endpoint.

use crate::identity::{self, IdentityError};
use base64::Engine as _;
use libp2p::identity::Keypair;
use std::path::Path;

/// File name of the libp2p key in the data folder.
pub const P2P_KEY_FILE: &str = "p2p-key";

/// PKCS#8 v1 prefix for a bare Ed25519 seed (RFC 8410 §7).
const PKCS8_ED25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Loads the libp2p keypair from `dir`, creating it on first start.
pub fn load_or_create(dir: &Path) -> Result<Keypair, IdentityError> {
    let path = dir.join(P2P_KEY_FILE);
    let bad = || IdentityError::BadKey(path.display().to_string());
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(|source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|_| bad())?;
        let mut seed: [u8; 32] = der
            .strip_prefix(&PKCS8_ED25519_PREFIX)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        return Keypair::ed25519_from_bytes(&mut seed).map_err(|_| bad());
    }
    let seed = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let der = identity::pkcs8_der(&seed);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    identity::write_private(&path, pem.as_bytes())?;
    let mut bytes = seed.to_bytes();
    Keypair::ed25519_from_bytes(&mut bytes).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_is_stable_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(P2P_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
