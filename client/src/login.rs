//! What the wallet checks before it signs a login challenge.
//!
//! The signed message names the domain the user signs in to, the DID and a
//! nonce (`did_core::login`, modelled on Sign-In with Ethereum). A wallet
//! that signs whatever a server sends could be made to sign a challenge that
//! a phishing site relayed from the real node. So, as EIP-4361 §"Wallet
//! implementer steps" asks, the wallet reads the message with
//! [`LoginChallenge::parse`] (which accepts only the exact layout a node
//! writes) and refuses unless:
//!
//! 1. the domain is the authority of the node URL the wallet itself is
//!    talking to,
//! 2. the DID is the DID the wallet is logging in as,
//! 3. the nonce is the nonce returned next to the message, and
//! 4. (when the user asked for one) the audience is that audience.

use did_core::login::LoginChallenge;

/// Why a challenge was not signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("refusing to sign: the challenge is for domain {found:?} but this wallet is talking to {expected:?} (possible phishing)")]
    DomainMismatch { expected: String, found: String },
    #[error("refusing to sign: the challenge is for DID {found:?}, not {expected}")]
    DidMismatch { expected: String, found: String },
    #[error("refusing to sign: the challenge's nonce does not match the nonce returned with it")]
    NonceMismatch,
    #[error("refusing to sign: the challenge is for audience {found:?}, not {expected:?}")]
    AudienceMismatch { expected: String, found: String },
    #[error("refusing to sign: the challenge message is malformed ({0})")]
    Malformed(&'static str),
}

/// A URL authority: lower-case host (IPv6 in brackets) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: u16,
}

impl Authority {
    /// The authority of an `http://` or `https://` URL, with the scheme's
    /// default port when none is written.
    pub fn of_url(url: &str) -> Result<Authority, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        // `host_str` writes IPv6 in brackets and normalized, like `parse`.
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => return Err(format!("{url:?} has no host")),
        };
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| format!("{url:?} has no port and no default for its scheme"))?;
        Ok(Authority { host, port })
    }

    /// Parses `host[:port]` as written in a challenge, with `default_port`
    /// when the port is left out (RFC 3986 §3.2).
    pub fn parse(s: &str, default_port: u16) -> Option<Authority> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            let addr: std::net::Ipv6Addr = v6.parse().ok()?;
            (format!("[{addr}]"), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
                None => (s.to_ascii_lowercase(), None),
            }
        };
        if host.is_empty()
            || host.contains(|c: char| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
        {
            return None;
        }
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        Some(Authority { host, port })
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Checks a challenge before signing it (module doc, rules 1-4); returns
/// its fields as checked.
pub fn check_challenge(
    message: &str,
    node: &Authority,
    did: &str,
    nonce: &str,
    audience: Option<&str>,
) -> Result<LoginChallenge, ChallengeError> {
    // Exactly one way to read the text: a message with, say, two `Nonce:`
    // lines could show the user one and give the server another.
    let challenge = LoginChallenge::parse(message).map_err(|e| ChallengeError::Malformed(e.0))?;
    if Authority::parse(&challenge.domain, node.port).as_ref() != Some(node) {
        return Err(ChallengeError::DomainMismatch {
            expected: node.to_string(),
            found: challenge.domain,
        });
    }
    if challenge.did != did {
        return Err(ChallengeError::DidMismatch {
            expected: did.to_string(),
            found: challenge.did,
        });
    }
    if nonce.is_empty() || challenge.nonce != nonce {
        return Err(ChallengeError::NonceMismatch);
    }
    if let Some(expected) = audience {
        if challenge.audience != expected {
            return Err(ChallengeError::AudienceMismatch {
                expected: expected.to_string(),
                found: challenge.audience,
            });
        }
    }
    Ok(challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(domain: &str) -> LoginChallenge {
        LoginChallenge {
            domain: domain.into(),
            did: "did:mesh:aaaa".into(),
            network_id: "net".into(),
            nonce: "00ff".into(),
            audience: "home-api".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_120,
        }
    }

    fn node(url: &str) -> Authority {
        Authority::of_url(url).unwrap()
    }

    #[test]
    fn accepts_the_nodes_own_challenge() {
        let c = challenge("127.0.0.1:7301");
        check_challenge(
            &c.message(),
            &node("http://127.0.0.1:7301/"),
            &c.did,
            "00ff",
            Some("home-api"),
        )
        .unwrap();
        check_challenge(
            &c.message(),
            &node("http://127.0.0.1:7301"),
            &c.did,
            "00ff",
            None,
        )
        .unwrap();
    }

    #[test]
    fn default_ports_and_case_compare_equal() {
        let c = challenge("Node.Example");
        check_challenge(
            &c.message(),
            &node("http://node.example:80"),
            &c.did,
            "00ff",
            None,
        )
        .unwrap();
        let c = challenge("[::1]:7000");
        check_challenge(
            &c.message(),
            &node("http://[0:0::1]:7000"),
            &c.did,
            "00ff",
            None,
        )
        .unwrap();
    }

    #[test]
    fn refuses_a_mismatched_domain() {
        let c = challenge("evil.example:7301");
        let err = check_challenge(
            &c.message(),
            &node("http://127.0.0.1:7301"),
            &c.did,
            "00ff",
            None,
        )
        .unwrap_err();
        assert!(matches!(err, ChallengeError::DomainMismatch { .. }));
        assert!(err.to_string().contains("phishing"));
        // same host, other port
        let c = challenge("127.0.0.1:7302");
        assert!(check_challenge(
            &c.message(),
            &node("http://127.0.0.1:7301"),
            &c.did,
            "00ff",
            None
        )
        .is_err());
        // a name that resolves to the same address is still another domain
        let c = challenge("localhost:7301");
        assert!(check_challenge(
            &c.message(),
            &node("http://127.0.0.1:7301"),
            &c.did,
            "00ff",
            None
        )
        .is_err());
    }

    #[test]
    fn refuses_other_did_nonce_or_audience() {
        let c = challenge("127.0.0.1:7301");
        let n = node("http://127.0.0.1:7301");
        assert!(matches!(
            check_challenge(&c.message(), &n, "did:mesh:bbbb", "00ff", None),
            Err(ChallengeError::DidMismatch { .. })
        ));
        assert_eq!(
            check_challenge(&c.message(), &n, &c.did, "0000", None),
            Err(ChallengeError::NonceMismatch)
        );
        assert!(matches!(
            check_challenge(&c.message(), &n, &c.did, "00ff", Some("bank")),
            Err(ChallengeError::AudienceMismatch { .. })
        ));
    }

    #[test]
    fn refuses_malformed_messages() {
        let n = node("http://127.0.0.1:7301");
        assert!(check_challenge("hello", &n, "did:mesh:aaaa", "00ff", None).is_err());
        let twice = format!("{}\nNonce: 1234", challenge("127.0.0.1:7301").message());
        assert!(matches!(
            check_challenge(&twice, &n, "did:mesh:aaaa", "00ff", None),
            Err(ChallengeError::Malformed(_))
        ));
        // a relay that rewrites the URI line but keeps the first one
        let relayed = challenge("127.0.0.1:7301").message().replace(
            "URI: didmesh://127.0.0.1:7301",
            "URI: didmesh://evil.example",
        );
        assert!(matches!(
            check_challenge(&relayed, &n, "did:mesh:aaaa", "00ff", None),
            Err(ChallengeError::Malformed(_))
        ));
        assert!(check_challenge("", &n, "", "", None).is_err());
    }
}
