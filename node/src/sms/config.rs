//! The SMS file (`didmesh-node --sms FILE`, env `DIDMESH_SMS`): the Twilio
//! account, what a message costs, and the limits of the spend guard
//! ([`super::guard`]).
//!
//! ```toml
//! api_base = "https://api.twilio.com"   # default; a local server in tests
//! account_sid = "AC0123…"
//! auth_token_file = "twilio.token"      # or auth_token = "…"
//! from = "+15005550006"
//! monthly_budget = 50.00                # money per calendar month (UTC)
//! currency = "USD"                      # default; only shown
//! allow_prefixes = ["+1", "+44"]        # destinations that may be sent to
//! per_number_hour = 3                   # caps (these are the defaults)
//! per_number_day = 10
//! per_did_hour = 5
//! per_did_day = 20
//! per_client_hour = 10                  # client = IPv4 /24, IPv6 /64
//! per_client_day = 50
//! velocity_window_secs = 600            # > velocity_max sends to one
//! velocity_max = 30                     #   priced prefix in the window
//! velocity_block_secs = 3600            #   blocks that prefix this long
//!
//! [prices]                              # price per message; longest
//! "+1" = 0.0079                         #   prefix wins; a destination
//! "+44" = 0.0400                        #   with no price is refused
//! ```
//!
//! Everything is checked when the node starts; a bad file stops it with
//! the reason (the line, for a TOML error). Amounts are kept as integer
//! millionths of the currency ([`MICROS`]), so adding up a month of sends
//! never drifts. The auth token is a [`Secret`]: never in `Debug`, never in
//! a log line or an error message (a TOML error names the line only).

use crate::config_file;
use crate::federation::config::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Millionths of the currency unit per unit.
pub const MICROS: u64 = 1_000_000;
/// Twilio's API (the default `api_base`).
pub const TWILIO_API: &str = "https://api.twilio.com";
/// Largest amount accepted for a budget or a price (10 million units).
const MAX_AMOUNT: f64 = 10_000_000.0;
/// Most priced or allowed prefixes (the world has ~250 country codes).
const MAX_PREFIXES: usize = 1024;

/// The caps of the spend guard (module doc; defaults in [`Caps::default`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_number_hour: u32,
    pub per_number_day: u32,
    pub per_did_hour: u32,
    pub per_did_day: u32,
    pub per_client_hour: u32,
    pub per_client_day: u32,
    pub velocity_window_secs: u64,
    pub velocity_max: u32,
    pub velocity_block_secs: u64,
}

impl Default for Caps {
    fn default() -> Caps {
        Caps {
            per_number_hour: 3,
            per_number_day: 10,
            per_did_hour: 5,
            per_did_day: 20,
            per_client_hour: 10,
            per_client_day: 50,
            velocity_window_secs: 600,
            velocity_max: 30,
            velocity_block_secs: 3600,
        }
    }
}

/// A checked SMS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsConfig {
    /// Without a trailing slash.
    pub api_base: String,
    pub account_sid: String,
    pub auth_token: Secret,
    pub from: String,
    /// Millionths of `currency` per calendar month (UTC).
    pub monthly_budget: u64,
    pub currency: String,
    pub allow_prefixes: Vec<String>,
    /// (prefix, millionths per message), longest prefix first.
    pub prices: Vec<(String, u64)>,
    pub caps: Caps,
}

impl SmsConfig {
    /// Whether `number` starts with an allowed prefix.
    pub fn allowed(&self, number: &str) -> bool {
        self.allow_prefixes.iter().any(|p| number.starts_with(p))
    }

    /// The longest allowed prefix `number` starts with (the bucket a
    /// refusal for a missing price is counted under).
    pub fn allow_prefix_of(&self, number: &str) -> Option<&str> {
        self.allow_prefixes
            .iter()
            .filter(|p| number.starts_with(p.as_str()))
            .max_by_key(|p| p.len())
            .map(String::as_str)
    }

    /// The price of a message to `number`: the longest priced prefix it
    /// starts with, and the price; `None` when no prefix is priced.
    pub fn price_of(&self, number: &str) -> Option<(&str, u64)> {
        // Sorted longest first at load: the first match is the longest.
        self.prices
            .iter()
            .find(|(p, _)| number.starts_with(p.as_str()))
            .map(|(p, price)| (p.as_str(), *price))
    }

    /// One line for the start-up log: what SMS costs and what bounds it.
    pub fn summary(&self) -> String {
        let c = &self.caps;
        let prices: Vec<String> = self
            .prices
            .iter()
            .map(|(p, v)| format!("{p} {}", money(*v)))
            .collect();
        format!(
            "budget {} {}/month, allowed {}, prices per message {}, limits per number {}/h {}/day, \
             per DID {}/h {}/day, per client network {}/h {}/day, a prefix with more than {} sends \
             in {} s is blocked for {} s",
            money(self.monthly_budget),
            self.currency,
            self.allow_prefixes.join(" "),
            prices.join(", "),
            c.per_number_hour,
            c.per_number_day,
            c.per_did_hour,
            c.per_did_day,
            c.per_client_hour,
            c.per_client_day,
            c.velocity_max,
            c.velocity_window_secs,
            c.velocity_block_secs,
        )
    }
}

/// `micros` as a decimal amount: at least two decimals, no trailing zeros
/// beyond them (`50.00`, `0.0079`).
pub fn money(micros: u64) -> String {
    let whole = micros / MICROS;
    let frac = format!("{:06}", micros % MICROS);
    let frac = frac.trim_end_matches('0');
    let frac = if frac.len() < 2 {
        format!("{frac:0<2}")
    } else {
        frac.to_string()
    };
    format!("{whole}.{frac}")
}

/// Why an SMS file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SMS file {path}: {why}")]
pub struct SmsConfigError {
    pub path: String,
    pub why: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    api_base: Option<String>,
    account_sid: String,
    #[serde(default)]
    auth_token: Option<String>,
    #[serde(default)]
    auth_token_file: Option<std::path::PathBuf>,
    from: String,
    monthly_budget: f64,
    #[serde(default)]
    currency: Option<String>,
    allow_prefixes: Vec<String>,
    #[serde(default)]
    prices: BTreeMap<String, f64>,
    per_number_hour: Option<u32>,
    per_number_day: Option<u32>,
    per_did_hour: Option<u32>,
    per_did_day: Option<u32>,
    per_client_hour: Option<u32>,
    per_client_day: Option<u32>,
    velocity_window_secs: Option<u64>,
    velocity_max: Option<u32>,
    velocity_block_secs: Option<u64>,
}

// Hand-written so that nothing can ever print the token.
impl fmt::Debug for RawFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawFile")
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

/// A destination prefix: `+` and 1-15 digits, the first not 0 (E.164
/// numbers start with a country code, ITU-T E.164 §6).
pub fn valid_prefix(p: &str) -> bool {
    p.strip_prefix('+').is_some_and(|d| {
        (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// An amount in currency units as millionths.
fn amount(what: &str, v: f64) -> Result<u64, String> {
    if !v.is_finite() || !(0.0..=MAX_AMOUNT).contains(&v) {
        return Err(format!("{what} must be a number from 0 to {MAX_AMOUNT}"));
    }
    // In range, so the cast cannot saturate.
    Ok((v * MICROS as f64).round() as u64)
}

/// The API base: `https://host[:port][/path]`; `http://` only on a
/// loopback host (a local server speaking Twilio's API, in tests).
fn check_api_base(url: &str) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    let bad = |why: &str| Err(format!("api_base {url:?} {why}"));
    if url.contains(['?', '#', '@']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("must have no query, fragment, user info or spaces");
    }
    let Some(host) = crate::oidc::host_of(url) else {
        return bad("is not an absolute http(s) URL");
    };
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.split_once("://").map(|(s, _)| s) {
        Some("https") => Ok(url.to_string()),
        Some("http") if loopback => Ok(url.to_string()),
        _ => bad("must be https:// (http:// only on a loopback host)"),
    }
}

/// Parses an SMS file's text; `base` is the folder a relative
/// `auth_token_file` is read from.
pub fn parse(text: &str, base: &Path) -> Result<SmsConfig, String> {
    let raw: RawFile = config_file::parse_toml(text)?;
    let api_base = check_api_base(raw.api_base.as_deref().unwrap_or(TWILIO_API))?;
    // It is a URL path segment: letters and digits only (Twilio's are
    // "AC" and 32 hex digits).
    if raw.account_sid.is_empty()
        || raw.account_sid.len() > 64
        || !raw.account_sid.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err("account_sid must be 1-64 letters and digits".into());
    }
    let token = config_file::secret(
        raw.auth_token,
        raw.auth_token_file,
        base,
        "auth_token",
        "auth token",
    )?;
    let from = raw.from.trim().to_string();
    if from.is_empty() || from.chars().count() > 64 || from.chars().any(char::is_control) {
        return Err("from must be 1-64 printable characters (a number or sender id)".into());
    }
    let monthly_budget = amount("monthly_budget", raw.monthly_budget)?;
    let currency = raw.currency.unwrap_or_else(|| "USD".into());
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "currency {currency:?} must be an ISO 4217 code (three capital letters)"
        ));
    }
    if raw.allow_prefixes.is_empty() {
        return Err("allow_prefixes is empty: no number could be sent to".into());
    }
    if raw.allow_prefixes.len() > MAX_PREFIXES || raw.prices.len() > MAX_PREFIXES {
        return Err(format!("more than {MAX_PREFIXES} prefixes"));
    }
    for p in raw.allow_prefixes.iter().chain(raw.prices.keys()) {
        if !valid_prefix(p) {
            return Err(format!(
                "prefix {p:?} must be + and 1-15 digits, the first not 0 (e.g. \"+44\")"
            ));
        }
    }
    if raw.prices.is_empty() {
        return Err("[prices] is empty: every destination would be refused".into());
    }
    let mut prices = raw
        .prices
        .iter()
        .map(|(p, v)| Ok((p.clone(), amount(&format!("price of {p}"), *v)?)))
        .collect::<Result<Vec<_>, String>>()?;
    prices.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    let d = Caps::default();
    let caps = Caps {
        per_number_hour: raw.per_number_hour.unwrap_or(d.per_number_hour),
        per_number_day: raw.per_number_day.unwrap_or(d.per_number_day),
        per_did_hour: raw.per_did_hour.unwrap_or(d.per_did_hour),
        per_did_day: raw.per_did_day.unwrap_or(d.per_did_day),
        per_client_hour: raw.per_client_hour.unwrap_or(d.per_client_hour),
        per_client_day: raw.per_client_day.unwrap_or(d.per_client_day),
        velocity_window_secs: raw.velocity_window_secs.unwrap_or(d.velocity_window_secs),
        velocity_max: raw.velocity_max.unwrap_or(d.velocity_max),
        velocity_block_secs: raw.velocity_block_secs.unwrap_or(d.velocity_block_secs),
    };
    for (name, hour, day) in [
        ("per_number", caps.per_number_hour, caps.per_number_day),
        ("per_did", caps.per_did_hour, caps.per_did_day),
        ("per_client", caps.per_client_hour, caps.per_client_day),
    ] {
        if hour == 0 || day == 0 || day > 10_000 {
            return Err(format!("{name}_hour and {name}_day must be 1-10000"));
        }
        if hour > day {
            return Err(format!(
                "{name}_hour ({hour}) is more than {name}_day ({day})"
            ));
        }
    }
    if caps.velocity_max == 0 || caps.velocity_max > 100_000 {
        return Err("velocity_max must be 1-100000".into());
    }
    if !(1..=86_400).contains(&caps.velocity_window_secs)
        || !(1..=30 * 86_400).contains(&caps.velocity_block_secs)
    {
        return Err(
            "velocity_window_secs must be 1-86400 and velocity_block_secs 1-2592000".into(),
        );
    }
    Ok(SmsConfig {
        api_base,
        account_sid: raw.account_sid,
        auth_token: Secret::new(token),
        from,
        monthly_budget,
        currency,
        allow_prefixes: raw.allow_prefixes,
        prices,
        caps,
    })
}

/// Reads and checks the SMS file at `path`.
pub fn load(path: &Path) -> Result<SmsConfig, SmsConfigError> {
    config_file::load(path, parse).map_err(|why| SmsConfigError {
        path: path.display().to_string(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "very-secret-token"
from = "+15005550006"
monthly_budget = 50.00
allow_prefixes = ["+1", "+44"]

[prices]
"+1" = 0.0079
"+44" = 0.04
"+4475" = 0.06
"#;

    #[test]
    fn a_good_file_its_defaults_and_longest_prefix_prices() {
        let c = parse(GOOD, Path::new(".")).unwrap();
        assert_eq!(c.api_base, TWILIO_API);
        assert_eq!(c.monthly_budget, 50 * MICROS);
        assert_eq!(c.currency, "USD");
        assert_eq!(c.caps, Caps::default());
        assert_eq!(c.price_of("+447512345678"), Some(("+4475", 60_000)));
        assert_eq!(c.price_of("+442012345678"), Some(("+44", 40_000)));
        assert_eq!(c.price_of("+15551234567"), Some(("+1", 7_900)));
        assert_eq!(c.price_of("+33123456789"), None);
        assert!(c.allowed("+15551234567") && !c.allowed("+33123456789"));
        assert!(!format!("{c:?}").contains("very-secret-token"));
        assert!(!c.summary().contains("very-secret-token"));
        assert!(
            c.summary().contains("budget 50.00 USD/month"),
            "{}",
            c.summary()
        );
        assert_eq!(money(7_900), "0.0079");
        assert_eq!(money(40_000), "0.04");
        assert_eq!(money(0), "0.00");
        assert_eq!(money(12_345_600_000), "12345.60");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason_and_never_the_token() {
        let cases: &[(&str, String)] = &[
            (
                "unknown field",
                GOOD.replace("from =", "colour = \"red\"\nfrom ="),
            ),
            (
                "no auth token",
                GOOD.replace("auth_token = \"very-secret-token\"", ""),
            ),
            (
                "not both",
                GOOD.replace("auth_token =", "auth_token_file = \"x\"\nauth_token ="),
            ),
            (
                "cannot be read",
                GOOD.replace(
                    "auth_token = \"very-secret-token\"",
                    "auth_token_file = \"missing.token\"",
                ),
            ),
            (
                "https",
                format!("api_base = \"http://sms.example\"\n{GOOD}"),
            ),
            ("monthly_budget", GOOD.replace("50.00", "-1.0")),
            (
                "prefix \"44\"",
                GOOD.replace("\"+44\" = 0.04", "\"44\" = 0.04"),
            ),
            (
                "allow_prefixes is empty",
                GOOD.replace("[\"+1\", \"+44\"]", "[]"),
            ),
            ("account_sid", GOOD.replace("AC0123", "AC/../")),
            ("per_number_hour", format!("per_number_hour = 0\n{GOOD}")),
            (
                "line 3",
                GOOD.replace(
                    "auth_token = \"very-secret-token\"",
                    "auth_token = very-secret-token",
                ),
            ),
            (
                "[prices] is empty",
                GOOD.split("[prices]").next().unwrap().to_string(),
            ),
        ];
        for (want, text) in cases {
            let e = parse(text, Path::new("/nonexistent")).unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
            assert!(!e.contains("very-secret-token"), "{e}");
        }
        let c = parse(
            &format!("api_base = \"http://127.0.0.1:9/\"\n{GOOD}"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.api_base, "http://127.0.0.1:9");
    }

    #[test]
    fn the_token_file_is_read_relative_to_the_sms_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("twilio.token"), "tok-from-file\n").unwrap();
        let text = GOOD.replace(
            "auth_token = \"very-secret-token\"",
            "auth_token_file = \"twilio.token\"",
        );
        std::fs::write(dir.path().join("sms.toml"), text).unwrap();
        let c = load(&dir.path().join("sms.toml")).unwrap();
        assert_eq!(c.auth_token.expose(), "tok-from-file");
    }
}
