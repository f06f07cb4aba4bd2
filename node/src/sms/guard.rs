//! The spend guard: what stands between a stranger with a script and this
//! node's SMS bill.
//!
//! SMS pumping (also "artificially inflated traffic", Twilio's "SMS
//! pumping fraud" guide) is the attack: a fraudster who shares in the
//! termination fees of premium-rate ranges makes a service send one-time
//! codes to numbers in those ranges, from many accounts and many
//! addresses. No single account or address does anything unusual; the
//! money goes out anyway. So besides per-entity caps the guard bounds the
//! total and watches each destination prefix:
//!
//! 1. **allow-list**: the destination must start with an `allow_prefixes`
//!    entry (`not_allowed`);
//! 2. **price**: the longest `[prices]` prefix it starts with gives the
//!    price; none → `no_price` (an unpriced destination could cost
//!    anything);
//! 3. **blocked prefix**: a prefix the velocity alarm blocked
//!    (`prefix_blocked`) until its block ends;
//! 4. **velocity alarm**: a request that makes more than `velocity_max`
//!    priced requests to one prefix in the last `velocity_window_secs`
//!    (sent or refused by a later step: the spike in demand is the signal)
//!    blocks that prefix for `velocity_block_secs` (`velocity`, logged as
//!    a warning; flushed at once);
//! 5. **caps**, sliding windows of an hour and a day over messages sent:
//!    per number, per DID, per client network (IPv4 /24, IPv6 /64;
//!    [`crate::limits`]) (`per_number_hour`, …, `per_client_day`);
//! 6. **budget**: this calendar month's (UTC) spend plus the price may not
//!    exceed `monthly_budget` (`budget`); a warning is logged once a month
//!    when the spend passes 80 %.
//!
//! Then the price is **reserved** (added to the month's spend) and the
//! windows are updated in one sled batch, under one lock, before the
//! message goes out; the reservation is flushed to disk first, so a crash
//! after sending cannot forget money spent. A provider answer that sent
//! nothing refunds it ([`Guard::refund`]); an ambiguous failure (timeout)
//! keeps it. So the month's spend never exceeds the budget, whatever the
//! concurrency, and a restart resets nothing.
//!
//! Everything lives in the sled tree [`TREE`] of the node's store. Numbers,
//! DIDs and client networks are keys only as a keyed hash (a random key
//! made once and kept in the tree), so the tree is not a list of phone
//! numbers. Layout (integers big-endian):
//!
//! ```text
//! key                   → 32 random bytes (the hashing key)
//! m/{YYYY-MM}/spent     → u64 millionths spent this month
//! m/{YYYY-MM}/warned    → present once the 80 % warning was logged
//! m/{YYYY-MM}/p/{bucket} → JSON {sent, spent, refused: {reason: n}}
//! t/sent, t/r/{reason}  → u64 totals since the tree was made (/metrics)
//! w/{n|d|c}/{hash16}    → u64 send times of the last day (caps)
//! v/{prefix}            → u64 times of the velocity window's requests
//! b/{prefix}            → u64 end of the prefix's block
//! ```
//!
//! A bucket is the priced prefix that matched, or for refusals before a
//! price is known: the allowed prefix (`no_price`) or `(unlisted)`.
//! Old window entries are pruned by [`Guard::prune`]; month records stay
//! (a few hundred bytes a month).

use super::config::{money, SmsConfig, MICROS};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The sled tree's name.
pub const TREE: &str = "sms-guard";
/// The bucket of a destination no allowed prefix covers.
pub const UNLISTED: &str = "(unlisted)";
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// Seconds between two prunes of old window entries.
const PRUNE_EVERY: u64 = 600;

/// Why the guard refused a message (module doc). The `as_str` names are
/// an interface: the 429's `reason`, `/v1/status`, `/metrics` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NotAllowed,
    NoPrice,
    PrefixBlocked,
    Velocity,
    PerNumberHour,
    PerNumberDay,
    PerDidHour,
    PerDidDay,
    PerClientHour,
    PerClientDay,
    Budget,
    /// Not a guard refusal: the provider failed after the reservation.
    ProviderError,
}

impl Reason {
    pub const ALL: [Reason; 12] = [
        Reason::NotAllowed,
        Reason::NoPrice,
        Reason::PrefixBlocked,
        Reason::Velocity,
        Reason::PerNumberHour,
        Reason::PerNumberDay,
        Reason::PerDidHour,
        Reason::PerDidDay,
        Reason::PerClientHour,
        Reason::PerClientDay,
        Reason::Budget,
        Reason::ProviderError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotAllowed => "not_allowed",
            Reason::NoPrice => "no_price",
            Reason::PrefixBlocked => "prefix_blocked",
            Reason::Velocity => "velocity",
            Reason::PerNumberHour => "per_number_hour",
            Reason::PerNumberDay => "per_number_day",
            Reason::PerDidHour => "per_did_hour",
            Reason::PerDidDay => "per_did_day",
            Reason::PerClientHour => "per_client_hour",
            Reason::PerClientDay => "per_client_day",
            Reason::Budget => "budget",
            Reason::ProviderError => "provider_error",
        }
    }

    /// A sentence for the person whose code was not sent.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::NotAllowed => "this node does not send SMS to that country or range",
            Reason::NoPrice => {
                "this node has no price for that destination, so it sends nothing there"
            }
            Reason::PrefixBlocked => {
                "SMS to that country or range are paused after a spike of requests"
            }
            Reason::Velocity => {
                "too many SMS to that country or range in a short time; it is paused"
            }
            Reason::PerNumberHour => "too many codes to this number in the last hour",
            Reason::PerNumberDay => "too many codes to this number today",
            Reason::PerDidHour => "too many codes for this DID in the last hour",
            Reason::PerDidDay => "too many codes for this DID today",
            Reason::PerClientHour => "too many codes requested from your network in the last hour",
            Reason::PerClientDay => "too many codes requested from your network today",
            Reason::Budget => "this node's SMS budget for the month is spent",
            Reason::ProviderError => "the SMS provider failed",
        }
    }
}

/// One request for a message.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// E.164, checked by the caller.
    pub number: &'a str,
    pub did: &'a str,
    /// The client's address (its network is what counts).
    pub client: IpAddr,
    pub now: u64,
}

/// Money set aside for one message ([`Guard::reserve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The priced prefix that matched (the velocity and stats bucket).
    pub prefix: String,
    /// Millionths.
    pub price: u64,
    /// `YYYY-MM` the spend was booked in.
    pub month: String,
}

/// A refusal: which limit, and seconds until it may pass again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub retry_after: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("SMS guard store: {0}")]
    Store(String),
    #[error("the SMS guard is unavailable (a request failed while holding it)")]
    Poisoned,
}

impl From<sled::Error> for GuardError {
    fn from(e: sled::Error) -> GuardError {
        GuardError::Store(e.to_string())
    }
}

/// Per month and bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stats {
    sent: u64,
    /// Millionths.
    spent: u64,
    refused: BTreeMap<String, u64>,
}

/// A prefix the velocity alarm blocked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub prefix: String,
    /// Unix seconds the block ends.
    pub until: u64,
}

/// One bucket's month, for `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrefixRow {
    pub prefix: String,
    pub sent: u64,
    pub spent: f64,
    pub refused_by_reason: BTreeMap<String, u64>,
}

/// The month so far (the `sms` section of `/v1/status`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GuardView {
    /// `YYYY-MM` (UTC).
    pub month: String,
    pub currency: String,
    pub spent: f64,
    pub budget: f64,
    /// The same in millionths (exact).
    pub spent_micros: u64,
    pub budget_micros: u64,
    pub blocked_prefixes: Vec<Blocked>,
    pub sent: u64,
    pub refused_by_reason: BTreeMap<String, u64>,
    /// Per bucket (module doc), for the spend table.
    pub prefixes: Vec<PrefixRow>,
}

/// Totals since the tree was made, for `/metrics` counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub refused: BTreeMap<&'static str, u64>,
}

/// The guard (module doc).
pub struct Guard {
    tree: sled::Tree,
    config: SmsConfig,
    /// Serializes every read-modify-write of the tree (one node process
    /// owns its store; sled's lock keeps a second one out).
    lock: Mutex<()>,
    hash_key: [u8; 32],
    last_prune: AtomicU64,
}

fn be(v: Option<sled::IVec>) -> u64 {
    v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0)
}

fn times(v: Option<sled::IVec>) -> Vec<u64> {
    v.map(|v| {
        v.chunks_exact(8)
            .filter_map(|c| <[u8; 8]>::try_from(c).ok())
            .map(u64::from_be_bytes)
            .collect()
    })
    .unwrap_or_default()
}

fn encode_times(t: &[u64]) -> Vec<u8> {
    t.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn micros_f64(m: u64) -> f64 {
    m as f64 / MICROS as f64
}

/// Days since 1970-01-01 → (year, month, day) (H. Hinnant, "chrono-
/// compatible low-level date algorithms", `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) → days since 1970-01-01 (`days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The calendar month (UTC) of unix time `t`: `YYYY-MM`.
pub fn month_of(t: u64) -> String {
    let (y, m, _) = civil_from_days((t / DAY) as i64);
    format!("{y:04}-{m:02}")
}

/// Unix time the month after `t`'s begins (UTC).
pub fn next_month(t: u64) -> u64 {
    let (y, m, _) = civil_from_days((t / DAY) as i64);
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    (days_from_civil(y, m, 1).max(0) as u64) * DAY
}

impl Guard {
    /// Opens the guard on its tree (made by the caller from the node's
    /// store: `store.side_tree(TREE)`).
    pub fn open(tree: sled::Tree, config: SmsConfig) -> Result<Guard, GuardError> {
        let hash_key = match tree.get(b"key")? {
            Some(k) if k.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&k);
                key
            }
            _ => {
                let mut key = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut key);
                tree.insert(b"key", &key[..])?;
                crate::storage::gated(|| tree.flush())?;
                key
            }
        };
        Ok(Guard {
            tree,
            config,
            lock: Mutex::new(()),
            hash_key,
            last_prune: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &SmsConfig {
        &self.config
    }

    /// The window key of an entity: `w/{kind}/` + 16 bytes of a keyed hash.
    fn window_key(&self, kind: u8, value: &[u8]) -> Vec<u8> {
        let mut h = blake3::Hasher::new_keyed(&self.hash_key);
        h.update(&[kind]);
        h.update(value);
        let mut k = vec![b'w', b'/', kind, b'/'];
        k.extend_from_slice(&h.finalize().as_bytes()[..16]);
        k
    }

    fn stats(&self, month: &str, bucket: &str) -> Result<Stats, GuardError> {
        Ok(self
            .tree
            .get(format!("m/{month}/p/{bucket}"))?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_default())
    }

    fn put_stats(&self, batch: &mut sled::Batch, month: &str, bucket: &str, s: &Stats) {
        if let Ok(v) = serde_json::to_vec(s) {
            batch.insert(format!("m/{month}/p/{bucket}").as_bytes(), v);
        }
    }

    /// Counts a refusal in the month's bucket and the totals.
    fn count_refusal(
        &self,
        batch: &mut sled::Batch,
        month: &str,
        bucket: &str,
        reason: Reason,
    ) -> Result<(), GuardError> {
        let mut s = self.stats(month, bucket)?;
        *s.refused.entry(reason.as_str().to_string()).or_default() += 1;
        self.put_stats(batch, month, bucket, &s);
        let total = format!("t/r/{}", reason.as_str());
        let n = be(self.tree.get(&total)?) + 1;
        batch.insert(total.as_bytes(), &n.to_be_bytes());
        Ok(())
    }

    /// Counts a refusal and answers it; `velocity` (key, times) is the
    /// prefix's velocity window with this request in it, when it got that
    /// far.
    fn refuse_with(
        &self,
        month: &str,
        bucket: &str,
        reason: Reason,
        retry_after: u64,
        velocity: Option<(&str, &[u8])>,
    ) -> Result<Result<Reservation, Refusal>, GuardError> {
        let mut batch = sled::Batch::default();
        if let Some((key, times)) = velocity {
            batch.insert(key.as_bytes(), times);
        }
        self.count_refusal(&mut batch, month, bucket, reason)?;
        crate::storage::gated(|| self.tree.apply_batch(batch))?;
        Ok(Err(Refusal {
            reason,
            retry_after: retry_after.max(1),
        }))
    }

    fn refuse(
        &self,
        month: &str,
        bucket: &str,
        reason: Reason,
        retry_after: u64,
        velocity_key: &str,
        velocity: &[u8],
    ) -> Result<Result<Reservation, Refusal>, GuardError> {
        self.refuse_with(
            month,
            bucket,
            reason,
            retry_after,
            Some((velocity_key, velocity)),
        )
    }

    /// Checks an attempt against every limit (module doc) and, when it
    /// passes, reserves its price and books it in the windows, in one
    /// batch. Call [`Self::flush`] before sending.
    pub fn reserve(&self, a: &Attempt<'_>) -> Result<Result<Reservation, Refusal>, GuardError> {
        let _held = self.lock.lock().map_err(|_| GuardError::Poisoned)?;
        let c = &self.config;
        let caps = &c.caps;
        let now = a.now;
        let month = month_of(now);
        let Some(allow) = c.allow_prefix_of(a.number) else {
            return self.refuse_with(&month, UNLISTED, Reason::NotAllowed, DAY, None);
        };
        let Some((prefix, price)) = c.price_of(a.number) else {
            return self.refuse_with(&month, allow, Reason::NoPrice, DAY, None);
        };
        let block_key = format!("b/{prefix}");
        let blocked_until = be(self.tree.get(&block_key)?);
        if blocked_until > now {
            return self.refuse_with(
                &month,
                prefix,
                Reason::PrefixBlocked,
                blocked_until - now,
                None,
            );
        }
        // The velocity alarm: this prefix's priced requests in the window,
        // this one included (sent or refused below: a spike of demand is
        // the signal, whatever stops each request).
        let velocity_key = format!("v/{prefix}");
        let mut v = times(self.tree.get(&velocity_key)?);
        v.retain(|&s| s + caps.velocity_window_secs > now);
        v.push(now);
        if v.len() > caps.velocity_max as usize {
            let until = now + caps.velocity_block_secs;
            let mut batch = sled::Batch::default();
            batch.insert(block_key.as_bytes(), &until.to_be_bytes());
            batch.remove(velocity_key.as_bytes());
            self.count_refusal(&mut batch, &month, prefix, Reason::Velocity)?;
            // Rare, and what an operator must find after a crash: the
            // caller flushes it ([`Self::flush`]; not here, under the lock).
            crate::storage::gated(|| self.tree.apply_batch(batch))?;
            tracing::warn!(
                prefix,
                requests = v.len(),
                window_secs = caps.velocity_window_secs,
                blocked_secs = caps.velocity_block_secs,
                "SMS to {prefix} blocked: {} requests in {} s is a spike (SMS pumping?)",
                v.len(),
                caps.velocity_window_secs
            );
            return Ok(Err(Refusal {
                reason: Reason::Velocity,
                retry_after: caps.velocity_block_secs,
            }));
        }
        let velocity = encode_times(&v);
        // Caps, in sliding windows of the last hour and day.
        let client = crate::limits::client_prefix(a.client).to_string();
        let entities = [
            (
                self.window_key(b'n', a.number.as_bytes()),
                caps.per_number_hour,
                caps.per_number_day,
                Reason::PerNumberHour,
                Reason::PerNumberDay,
            ),
            (
                self.window_key(b'd', a.did.as_bytes()),
                caps.per_did_hour,
                caps.per_did_day,
                Reason::PerDidHour,
                Reason::PerDidDay,
            ),
            (
                self.window_key(b'c', client.as_bytes()),
                caps.per_client_hour,
                caps.per_client_day,
                Reason::PerClientHour,
                Reason::PerClientDay,
            ),
        ];
        let mut windows = Vec::with_capacity(entities.len());
        for (key, per_hour, per_day, hour_reason, day_reason) in entities {
            let mut t = times(self.tree.get(&key)?);
            t.retain(|&s| s + DAY > now);
            let in_hour: Vec<u64> = t.iter().copied().filter(|&s| s + HOUR > now).collect();
            if in_hour.len() >= per_hour as usize {
                let oldest = in_hour.first().copied().unwrap_or(now);
                return self.refuse(
                    &month,
                    prefix,
                    hour_reason,
                    oldest + HOUR - now,
                    &velocity_key,
                    &velocity,
                );
            }
            if t.len() >= per_day as usize {
                let oldest = t.first().copied().unwrap_or(now);
                return self.refuse(
                    &month,
                    prefix,
                    day_reason,
                    oldest + DAY - now,
                    &velocity_key,
                    &velocity,
                );
            }
            windows.push((key, t));
        }
        // The budget.
        let spent_key = format!("m/{month}/spent");
        let spent = be(self.tree.get(&spent_key)?);
        if spent.saturating_add(price) > c.monthly_budget {
            return self.refuse(
                &month,
                prefix,
                Reason::Budget,
                next_month(now) - now,
                &velocity_key,
                &velocity,
            );
        }
        // Reserve: spend, windows, velocity, stats, in one batch.
        let mut batch = sled::Batch::default();
        let after = spent + price;
        batch.insert(spent_key.as_bytes(), &after.to_be_bytes());
        for (key, mut t) in windows {
            t.push(now);
            batch.insert(key, encode_times(&t));
        }
        batch.insert(velocity_key.as_bytes(), velocity);
        let mut s = self.stats(&month, prefix)?;
        s.spent += price;
        self.put_stats(&mut batch, &month, prefix, &s);
        let warned_key = format!("m/{month}/warned");
        // 80 %, in integers: after / budget >= 4 / 5.
        let warn = u128::from(after) * 5 >= u128::from(c.monthly_budget) * 4
            && self.tree.get(&warned_key)?.is_none();
        if warn {
            batch.insert(warned_key.as_bytes(), &[1u8][..]);
        }
        crate::storage::gated(|| self.tree.apply_batch(batch))?;
        if warn {
            tracing::warn!(
                month = %month,
                spent = %money(after),
                budget = %money(c.monthly_budget),
                currency = %c.currency,
                "SMS spend passed 80% of the monthly budget; at 100% the SMS factor stops until next month"
            );
        }
        Ok(Ok(Reservation {
            prefix: prefix.to_string(),
            price,
            month,
        }))
    }

    /// Makes what [`Self::reserve`] wrote durable (before sending).
    pub async fn flush(&self) -> Result<(), GuardError> {
        // Not sled's flush_async: it would overlap other threads' batches
        // ([`crate::storage::gated`]).
        crate::storage::gated_flush(self.tree.clone()).await?;
        Ok(())
    }

    /// The provider accepted the message.
    pub fn sent(&self, r: &Reservation) -> Result<(), GuardError> {
        let _held = self.lock.lock().map_err(|_| GuardError::Poisoned)?;
        let mut batch = sled::Batch::default();
        let mut s = self.stats(&r.month, &r.prefix)?;
        s.sent += 1;
        self.put_stats(&mut batch, &r.month, &r.prefix, &s);
        let n = be(self.tree.get(b"t/sent")?) + 1;
        batch.insert(&b"t/sent"[..], &n.to_be_bytes());
        crate::storage::gated(|| self.tree.apply_batch(batch))?;
        Ok(())
    }

    /// The provider failed. `refund`: it certainly sent nothing, so the
    /// reserved price goes back to the month; else it stays spent.
    pub fn failed(&self, r: &Reservation, refund: bool) -> Result<(), GuardError> {
        let _held = self.lock.lock().map_err(|_| GuardError::Poisoned)?;
        let mut batch = sled::Batch::default();
        let mut s = self.stats(&r.month, &r.prefix)?;
        *s.refused
            .entry(Reason::ProviderError.as_str().to_string())
            .or_default() += 1;
        if refund {
            s.spent = s.spent.saturating_sub(r.price);
            let spent_key = format!("m/{}/spent", r.month);
            let spent = be(self.tree.get(&spent_key)?).saturating_sub(r.price);
            batch.insert(spent_key.as_bytes(), &spent.to_be_bytes());
        }
        self.put_stats(&mut batch, &r.month, &r.prefix, &s);
        let total = format!("t/r/{}", Reason::ProviderError.as_str());
        let n = be(self.tree.get(&total)?) + 1;
        batch.insert(total.as_bytes(), &n.to_be_bytes());
        crate::storage::gated(|| self.tree.apply_batch(batch))?;
        Ok(())
    }

    /// The month of `now` so far.
    pub fn view(&self, now: u64) -> Result<GuardView, GuardError> {
        let month = month_of(now);
        let spent = be(self.tree.get(format!("m/{month}/spent"))?);
        let mut blocked = vec![];
        for item in self.tree.scan_prefix(b"b/") {
            let (k, v) = item?;
            let until = be(Some(v));
            if until > now {
                blocked.push(Blocked {
                    prefix: String::from_utf8_lossy(&k[2..]).into_owned(),
                    until,
                });
            }
        }
        let mut sent = 0;
        let mut refused: BTreeMap<String, u64> = BTreeMap::new();
        let mut prefixes = vec![];
        let head = format!("m/{month}/p/");
        for item in self.tree.scan_prefix(head.as_bytes()) {
            let (k, v) = item?;
            let s: Stats = serde_json::from_slice(&v).unwrap_or_default();
            sent += s.sent;
            for (r, n) in &s.refused {
                *refused.entry(r.clone()).or_default() += n;
            }
            prefixes.push(PrefixRow {
                prefix: String::from_utf8_lossy(&k[head.len()..]).into_owned(),
                sent: s.sent,
                spent: micros_f64(s.spent),
                refused_by_reason: s.refused,
            });
        }
        Ok(GuardView {
            month,
            currency: self.config.currency.clone(),
            spent: micros_f64(spent),
            budget: micros_f64(self.config.monthly_budget),
            spent_micros: spent,
            budget_micros: self.config.monthly_budget,
            blocked_prefixes: blocked,
            sent,
            refused_by_reason: refused,
            prefixes,
        })
    }

    /// Totals since the tree was made.
    pub fn totals(&self) -> Result<Totals, GuardError> {
        let mut t = Totals {
            sent: be(self.tree.get(b"t/sent")?),
            refused: BTreeMap::new(),
        };
        for r in Reason::ALL {
            t.refused.insert(
                r.as_str(),
                be(self.tree.get(format!("t/r/{}", r.as_str()))?),
            );
        }
        Ok(t)
    }

    /// Drops window entries older than their window and ended blocks, at
    /// most every [`PRUNE_EVERY`] seconds (the housekeeping timer calls it
    /// every few seconds).
    pub fn prune(&self, now: u64) -> Result<(), GuardError> {
        let last = self.last_prune.load(Ordering::Relaxed);
        if now < last + PRUNE_EVERY {
            return Ok(());
        }
        self.last_prune.store(now, Ordering::Relaxed);
        let _held = self.lock.lock().map_err(|_| GuardError::Poisoned)?;
        let window = self.config.caps.velocity_window_secs;
        let mut batch = sled::Batch::default();
        for (head, keep) in [(&b"w/"[..], DAY), (&b"v/"[..], window)] {
            for item in self.tree.scan_prefix(head) {
                let (k, v) = item?;
                if times(Some(v)).last().is_none_or(|&s| s + keep <= now) {
                    batch.remove(k);
                }
            }
        }
        for item in self.tree.scan_prefix(b"b/") {
            let (k, v) = item?;
            if be(Some(v)) <= now {
                batch.remove(k);
            }
        }
        crate::storage::gated(|| self.tree.apply_batch(batch))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sms::config::parse;
    use std::path::Path;

    fn guard(extra: &str) -> Guard {
        let text = format!(
            r#"{extra}
account_sid = "AC1"
auth_token = "t"
from = "+15005550006"
monthly_budget = 1.00
allow_prefixes = ["+1", "+44", "+881"]
[prices]
"+1" = 0.01
"+44" = 0.04
"#
        );
        let config = parse(&text, Path::new(".")).unwrap();
        let db = sled::Config::new().temporary(true).open().unwrap();
        Guard::open(db.open_tree(TREE).unwrap(), config).unwrap()
    }

    fn attempt<'a>(number: &'a str, did: &'a str, client: &str, now: u64) -> Attempt<'a> {
        Attempt {
            number,
            did,
            client: client.parse().unwrap(),
            now,
        }
    }

    #[test]
    fn months_in_utc() {
        assert_eq!(month_of(0), "1970-01");
        // 2024-02-29T23:59:59Z, then 2024-03-01T00:00:00Z
        assert_eq!(month_of(1_709_251_199), "2024-02");
        assert_eq!(month_of(1_709_251_200), "2024-03");
        assert_eq!(next_month(1_709_251_199), 1_709_251_200);
        // 2023-12-31 → 2024-01-01T00:00:00Z
        assert_eq!(next_month(1_704_067_199), 1_704_067_200);
        assert_eq!(month_of(1_704_067_200), "2024-01");
    }

    #[test]
    fn the_order_of_the_limits_and_sliding_windows() {
        let g = guard("");
        let t = 1_700_000_000;
        let r = |n, d, c, now| g.reserve(&attempt(n, d, c, now)).unwrap();
        assert_eq!(
            r("+33123456789", "d1", "10.0.0.1", t).unwrap_err().reason,
            Reason::NotAllowed
        );
        assert_eq!(
            r("+88163000000", "d1", "10.0.0.1", t).unwrap_err().reason,
            Reason::NoPrice
        );
        for i in 0..3 {
            let res = r("+15550000001", "d1", "10.0.0.1", t + i).unwrap();
            assert_eq!((res.prefix.as_str(), res.price), ("+1", 10_000));
        }
        let refused = r("+15550000001", "d1", "10.0.0.1", t + 3).unwrap_err();
        assert_eq!(refused.reason, Reason::PerNumberHour);
        assert_eq!(refused.retry_after, HOUR - 3);
        // per DID: 5 an hour
        assert!(r("+15550000002", "d1", "10.0.0.1", t + 4).is_ok());
        assert!(r("+15550000002", "d1", "10.0.0.1", t + 5).is_ok());
        assert_eq!(
            r("+15550000003", "d1", "10.0.0.1", t + 6)
                .unwrap_err()
                .reason,
            Reason::PerDidHour
        );
        // sliding: an hour after the first send there is room again
        assert!(r("+15550000001", "d1", "10.0.0.1", t + HOUR).is_ok());
        let v = g.view(t + HOUR).unwrap();
        assert_eq!(v.sent, 0, "nothing confirmed sent");
        assert_eq!(v.spent_micros, 6 * 10_000);
        assert_eq!(v.refused_by_reason["not_allowed"], 1);
        assert_eq!(v.refused_by_reason["per_did_hour"], 1);
    }

    #[test]
    fn the_budget_is_never_exceeded_and_refunds_give_it_back() {
        let g = guard("per_number_hour = 100\nper_number_day = 100\nper_did_hour = 100\nper_did_day = 100\nper_client_hour = 100\nper_client_day = 100\nvelocity_max = 1000");
        let t = 1_700_000_000;
        let mut last = None;
        for i in 0..30 {
            match g
                .reserve(&attempt("+442070000000", &format!("d{i}"), "10.0.0.1", t))
                .unwrap()
            {
                Ok(r) => last = Some(r),
                Err(refusal) => {
                    assert_eq!(refusal.reason, Reason::Budget);
                    assert_eq!(i, 25, "1.00 buys 25 messages at 0.04");
                    assert_eq!(refusal.retry_after, next_month(t) - t);
                    break;
                }
            }
        }
        assert_eq!(g.view(t).unwrap().spent_micros, MICROS);
        g.failed(&last.unwrap(), true).unwrap();
        let v = g.view(t).unwrap();
        assert_eq!(v.spent_micros, MICROS - 40_000);
        assert_eq!(v.refused_by_reason["provider_error"], 1);
        assert!(g
            .reserve(&attempt("+442070000000", "x", "10.0.0.1", t))
            .unwrap()
            .is_ok());
        // a new month starts from zero
        assert!(g
            .reserve(&attempt("+442070000000", "y", "10.0.0.1", next_month(t)))
            .unwrap()
            .is_ok());
    }

    #[test]
    fn the_velocity_alarm_blocks_the_prefix_and_only_that_prefix() {
        let g = guard("velocity_max = 5\nvelocity_window_secs = 60\nvelocity_block_secs = 600");
        let t = 1_700_000_000;
        for i in 0..5 {
            let n = format!("+1555000000{i}");
            assert!(g
                .reserve(&attempt(&n, &format!("d{i}"), &format!("10.0.{i}.1"), t))
                .unwrap()
                .is_ok());
        }
        let trip = g
            .reserve(&attempt("+15550000009", "d9", "10.1.0.1", t))
            .unwrap()
            .unwrap_err();
        assert_eq!(trip.reason, Reason::Velocity);
        let again = g
            .reserve(&attempt("+15550000008", "d8", "10.2.0.1", t + 100))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (again.reason, again.retry_after),
            (Reason::PrefixBlocked, 500)
        );
        assert!(g
            .reserve(&attempt("+442070000000", "d7", "10.3.0.1", t + 100))
            .unwrap()
            .is_ok());
        assert_eq!(
            g.view(t + 100).unwrap().blocked_prefixes,
            vec![Blocked {
                prefix: "+1".into(),
                until: t + 600
            }]
        );
        assert!(g
            .reserve(&attempt("+15550000008", "d8", "10.2.0.1", t + 600))
            .unwrap()
            .is_ok());
        g.prune(t + 2 * DAY).unwrap();
        assert_eq!(g.tree.scan_prefix(b"w/").count(), 0);
        assert_eq!(g.tree.scan_prefix(b"b/").count(), 0);
    }
}
