//! The login challenge: a plain-text message in the spirit of Sign-In with
//! Ethereum (EIP-4361), naming the node's domain, the DID, a one-time nonce,
//! when it was issued and when it expires, and the network. The wallet signs
//! the message bytes with an `authentication` key of the DID.
//!
//! [`LoginChallenge::message`] renders the text (PROTOCOL.md §6) and
//! [`LoginChallenge::parse`] reads it back: a wallet parses what a node sent
//! and checks the fields before it signs. `parse` accepts exactly the texts
//! `message` writes, so what the wallet checked is what it signs.

use crate::keys::{signature_from_b64, PublicKey};
use crate::op::{DidState, Relationship};
use crate::time::rfc3339;

/// The fields of a challenge; [`LoginChallenge::message`] renders the text
/// that is signed, [`LoginChallenge::parse`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginChallenge {
    /// The RFC 3986 authority the user signs in to (e.g. `127.0.0.1:7001`).
    pub domain: String,
    pub did: String,
    pub network_id: String,
    pub nonce: String,
    /// The relying party the token will be for (RFC 7519 `aud`).
    pub audience: String,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// End of the first line, after the domain (EIP-4361 layout).
const FIRST_LINE_SUFFIX: &str = " wants you to sign in with your DID:";
/// The statement line, between two blank lines.
const STATEMENT: &str = "Sign in to didmesh. This request will not trigger any transaction.";

/// Why a text is not a challenge [`LoginChallenge::message`] could have
/// written; the payload names the part that is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed login challenge: {0}")]
pub struct MessageError(pub &'static str);

impl LoginChallenge {
    /// The exact bytes to sign, EIP-4361 layout adapted to DIDs.
    pub fn message(&self) -> String {
        format!(
            "{domain}{FIRST_LINE_SUFFIX}\n{did}\n\n\
             {STATEMENT}\n\n\
             URI: didmesh://{domain}\n\
             Version: 1\n\
             Network ID: {network}\n\
             Audience: {aud}\n\
             Nonce: {nonce}\n\
             Issued At: {iat}\n\
             Expiration Time: {exp}",
            domain = self.domain,
            did = self.did,
            network = self.network_id,
            nonce = self.nonce,
            aud = self.audience,
            iat = rfc3339(self.issued_at),
            exp = rfc3339(self.expires_at),
        )
    }

    /// Reads a challenge text back into its fields. Only the exact layout
    /// of [`LoginChallenge::message`] is accepted (`\n` line ends, every
    /// line once and in order, canonical RFC 3339 UTC times), so
    /// `parse(text)?.message() == text`: a text with a second `Nonce:`
    /// line, a changed URI or trailing bytes is refused, never read one way
    /// by the wallet and another way by whoever relayed it.
    pub fn parse(text: &str) -> Result<LoginChallenge, MessageError> {
        let lines: Vec<&str> = text.split('\n').collect();
        // Twelve lines; the third and fifth are empty.
        let [first, did, "", statement, "", uri, version, network, audience, nonce, iat, exp] =
            lines.as_slice()
        else {
            return Err(MessageError("not the 12-line challenge layout"));
        };
        let domain = first
            .strip_suffix(FIRST_LINE_SUFFIX)
            .ok_or(MessageError("first line"))?;
        if *statement != STATEMENT {
            return Err(MessageError("statement line"));
        }
        if uri.strip_prefix("URI: didmesh://") != Some(domain) {
            return Err(MessageError("URI line does not name the domain"));
        }
        if *version != "Version: 1" {
            return Err(MessageError("Version line"));
        }
        let field = |line: &str, prefix: &str, what: &'static str| {
            line.strip_prefix(prefix)
                .map(str::to_string)
                .ok_or(MessageError(what))
        };
        let time = |line: &str, prefix: &str, what: &'static str| {
            line.strip_prefix(prefix)
                .and_then(parse_rfc3339)
                .ok_or(MessageError(what))
        };
        let challenge = LoginChallenge {
            domain: domain.to_string(),
            did: did.to_string(),
            network_id: field(network, "Network ID: ", "Network ID line")?,
            audience: field(audience, "Audience: ", "Audience line")?,
            nonce: field(nonce, "Nonce: ", "Nonce line")?,
            issued_at: time(iat, "Issued At: ", "Issued At line")?,
            expires_at: time(exp, "Expiration Time: ", "Expiration Time line")?,
        };
        // The layout above leaves no freedom but this makes it a rule:
        // only what `message` writes is a challenge.
        if challenge.message() != text {
            return Err(MessageError("not in canonical form"));
        }
        Ok(challenge)
    }
}

/// The inverse of [`rfc3339`]: `YYYY-MM-DDTHH:MM:SSZ` (four or more year
/// digits, UTC, no fraction) to unix seconds. Anything `rfc3339` would not
/// write back identically is refused by [`LoginChallenge::parse`].
fn parse_rfc3339(s: &str) -> Option<u64> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut date_parts = date.rsplitn(3, '-');
    let (d, m, y) = (date_parts.next()?, date_parts.next()?, date_parts.next()?);
    let mut time_parts = time.split(':');
    let (hh, mm, ss) = (time_parts.next()?, time_parts.next()?, time_parts.next()?);
    if time_parts.next().is_some() {
        return None;
    }
    let num = |t: &str, digits: usize| -> Option<u64> {
        if t.len() < digits || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        t.parse().ok()
    };
    let (y, m, d) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    let (hh, mm, ss) = (num(hh, 2)?, num(mm, 2)?, num(ss, 2)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    // Howard Hinnant's `days_from_civil`, the inverse of the formatter's
    // `civil_from_days` (proleptic Gregorian calendar, from 1970).
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era
        .checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)?;
    days.checked_mul(86_400)?
        .checked_add(hh * 3600 + mm * 60 + ss)
}

/// Why a login signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("signature must be base64url of 64 bytes")]
    BadEncoding,
    #[error("signature does not verify with any authentication key of the DID")]
    NoMatchingKey,
    #[error("DID is deactivated")]
    Deactivated,
}

/// Finds the `authentication` key of `state` that signed `message`.
pub fn verify_login<'a>(
    state: &'a DidState,
    message: &[u8],
    signature_b64: &str,
) -> Result<&'a PublicKey, LoginError> {
    let sig = signature_from_b64(signature_b64).map_err(|_| LoginError::BadEncoding)?;
    state
        .keys_for(Relationship::Authentication)
        .map(|vm| &vm.public_key_multibase)
        .find(|k| k.verify(message, &sig))
        .ok_or(LoginError::NoMatchingKey)
}

/// Verifies a login made with one of the DID's passkeys: the WebAuthn
/// assertion must sign SHA-256 of `message` ([`crate::passkey`]).
pub fn verify_passkey_login<'a>(
    state: &'a DidState,
    message: &[u8],
    assertion: &crate::passkey::Assertion,
    origins: &[String],
    rp_id: &str,
) -> Result<crate::passkey::Verified<'a>, crate::passkey::AssertionError> {
    let challenge = crate::passkey::challenge_for(message);
    crate::passkey::verify(
        &state.passkeys,
        assertion,
        &crate::passkey::Expected {
            challenge: &challenge,
            origins,
            rp_id,
        },
    )
}

/// Verifies a login signed by the key a `did:key` names.
pub fn verify_did_key_login(
    key: &PublicKey,
    message: &[u8],
    signature_b64: &str,
) -> Result<(), LoginError> {
    let sig = signature_from_b64(signature_b64).map_err(|_| LoginError::BadEncoding)?;
    if key.verify(message, &sig) {
        Ok(())
    } else {
        Err(LoginError::NoMatchingKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> LoginChallenge {
        LoginChallenge {
            domain: "127.0.0.1:7001".into(),
            did: "did:mesh:aaaa".into(),
            network_id: "mesh-abc".into(),
            nonce: "00ff".into(),
            audience: "home-api".into(),
            issued_at: 1_700_000_000,
            expires_at: 1_700_000_120,
        }
    }

    #[test]
    fn parses_what_a_node_writes() {
        let c = sample();
        assert_eq!(LoginChallenge::parse(&c.message()), Ok(c));
    }

    #[test]
    fn refuses_anything_message_would_not_write() {
        let text = sample().message();
        let bad = [
            String::new(),
            "hello".to_string(),
            format!("{text}\n"),
            format!("{text}\nNonce: 1234"),
            text.replace("\n", "\r\n"),
            text.replace(
                "URI: didmesh://127.0.0.1:7001",
                "URI: didmesh://evil.example",
            ),
            text.replace("Version: 1", "Version: 2"),
            text.replace("2023-11-14T22:13:20Z", "2023-11-14T22:13:20.5Z"),
            text.replace("2023-11-14T22:13:20Z", "2023-11-14 22:13:20Z"),
            text.replace("2023-11-14T22:13:20Z", "2023-02-30T22:13:20Z"),
            text.replace("2023-11-14T22:13:20Z", "+2023-11-14T22:13:20Z"),
            text.replace("Nonce: ", "Nonce:"),
        ];
        for b in bad {
            assert_ne!(b, text, "the mutation must change the text");
            assert!(LoginChallenge::parse(&b).is_err(), "accepted {b:?}");
        }
    }

    #[test]
    fn rfc3339_parse_inverts_format() {
        for t in [
            0,
            59,
            951_782_400,
            1_700_000_000,
            253_402_300_799,
            253_402_300_800,
            u64::MAX,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{t}");
        }
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
    }

    /// One line of printable text (no `\n`): what a field can hold.
    fn line() -> impl Strategy<Value = String> {
        "[^\n]{0,40}"
    }

    proptest! {
        #[test]
        fn parse_of_message_is_identity(
            domain in line(), did in line(), network_id in line(), nonce in line(),
            audience in line(), issued_at in any::<u64>(), expires_at in any::<u64>(),
        ) {
            let c = LoginChallenge {
                domain, did, network_id, nonce, audience, issued_at, expires_at,
            };
            prop_assert_eq!(LoginChallenge::parse(&c.message()), Ok(c));
        }

        #[test]
        fn message_of_parse_is_identity(text in "[^\n]{0,20}(\n[^\n]{0,30}){0,13}") {
            if let Ok(c) = LoginChallenge::parse(&text) {
                prop_assert_eq!(c.message(), text);
            }
        }

        #[test]
        fn message_of_parse_is_identity_near_valid_texts(
            idx in 0usize..12, junk in "[^\n]{0,12}", c in (line(), line(), any::<u64>()),
        ) {
            // Mutate one line of a real challenge: parse either refuses or
            // gives back fields whose message is exactly the mutated text.
            let base = LoginChallenge { domain: c.0, did: c.1, issued_at: c.2, ..sample() };
            let mut lines: Vec<String> = base.message().split('\n').map(str::to_string).collect();
            lines[idx].push_str(&junk);
            let text = lines.join("\n");
            if let Ok(parsed) = LoginChallenge::parse(&text) {
                prop_assert_eq!(parsed.message(), text);
            }
        }
    }
}
