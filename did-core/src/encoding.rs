//! Canonical encoding and content identifiers.
//!
//! Every operation is encoded as canonical JSON in the sense of RFC 8785
//! (JCS) restricted to the subset didmesh uses: objects, arrays, strings,
//! integers, booleans and null; object members sorted by key (our keys are
//! ASCII, so UTF-16 order equals byte order); no insignificant whitespace;
//! strings escaped the way JCS and serde_json agree on. Floats are refused.
//! Python reproduces it with
//! `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
//!
//! A CID is a CIDv1 (multiformats) with the `raw` codec (0x55) and a blake3
//! multihash (0x1e, 32 bytes), in multibase base32-lower (`b…`), so any
//! multiformats tool can parse it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

const BASE32_LOWER: data_encoding::Encoding = data_encoding::BASE32_NOPAD;

/// CIDv1 prefix: version 1, codec raw (0x55), multihash blake3 (0x1e), 32 bytes.
pub const CID_PREFIX: [u8; 4] = [0x01, 0x55, 0x1e, 0x20];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodingError {
    #[error("floating-point numbers are not allowed in operations")]
    Float,
    #[error("value cannot be encoded: {0}")]
    Serialize(String),
}

/// Encodes any serializable value as canonical JSON bytes.
pub fn canonical_json<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, EncodingError> {
    let value = serde_json::to_value(v).map_err(|e| EncodingError::Serialize(e.to_string()))?;
    canonical_value(&value)
}

/// Encodes a JSON value canonically. Key order never depends on serde_json's
/// map implementation (a `preserve_order` feature elsewhere in the graph must
/// not change our bytes), so members are sorted here.
pub fn canonical_value(value: &Value) -> Result<Vec<u8>, EncodingError> {
    let mut out = Vec::with_capacity(512);
    write_value(value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), EncodingError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.extend_from_slice(i.to_string().as_bytes());
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else {
                return Err(EncodingError::Float);
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            if in_utf16_order(map) {
                for (i, (k, v)) in map.iter().enumerate() {
                    write_entry(i, k, v, out)?;
                }
            } else {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                // RFC 8785 §3.2.3 sorts by UTF-16 code units.
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    write_entry(i, k, v, out)?;
                }
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// The canonical encodings of `value` and of `value` without its top-level
/// keys `skip`, in one pass: each top-level entry is written once, and
/// copied to the second encoding unless skipped (an op's bytes and its
/// signing bytes, [`crate::Operation`]).
pub fn canonical_value_and_without(
    value: &Value,
    skip: &[&str],
) -> Result<(Vec<u8>, Vec<u8>), EncodingError> {
    let Value::Object(map) = value else {
        let all = canonical_value(value)?;
        return Ok((all.clone(), all));
    };
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    if !in_utf16_order(map) {
        entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
    }
    let mut all = Vec::with_capacity(512);
    let mut kept = Vec::with_capacity(512);
    all.push(b'{');
    kept.push(b'{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            all.push(b',');
        }
        let start = all.len();
        write_entry(0, k, v, &mut all)?;
        if !skip.contains(&k.as_str()) {
            if kept.len() > 1 {
                kept.push(b',');
            }
            kept.extend_from_slice(&all[start..]);
        }
    }
    all.push(b'}');
    kept.push(b'}');
    Ok((all, kept))
}

fn write_entry(i: usize, k: &str, v: &Value, out: &mut Vec<u8>) -> Result<(), EncodingError> {
    if i > 0 {
        out.push(b',');
    }
    write_string(k, out);
    out.push(b':');
    write_value(v, out)
}

/// Whether `map` iterates in RFC 8785 order already: its keys ASCII (byte
/// order is then UTF-16 order) and ascending, as serde_json's map gives
/// them (a `BTreeMap`; not so with its `preserve_order` feature, hence the
/// check). Every key of a didmesh op is; the sort is then skipped.
fn in_utf16_order(map: &serde_json::Map<String, Value>) -> bool {
    let mut prev: Option<&str> = None;
    for k in map.keys() {
        if !k.is_ascii() || prev.is_some_and(|p| p >= k.as_str()) {
            return false;
        }
        prev = Some(k);
    }
    true
}

/// RFC 8785 §3.2.2.2 string escaping.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    // Only ASCII bytes are escaped, and no byte of a multi-byte UTF-8
    // character is ASCII: runs between escapes are copied whole.
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run..i]);
        if short.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(short);
        }
        run = i + 1;
    }
    out.extend_from_slice(&bytes[run..]);
    out.push(b'"');
}

/// A content identifier: blake3 of an operation's canonical bytes.
/// Ordered by digest bytes ("the lower CID" of the fork rule).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a didmesh CID (CIDv1, raw, blake3, base32 'b…')")]
pub struct CidError;

impl Cid {
    pub fn of(bytes: &[u8]) -> Cid {
        Cid(*blake3::hash(bytes).as_bytes())
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn parse(s: &str) -> Result<Cid, CidError> {
        let body = s.strip_prefix('b').ok_or(CidError)?;
        if body.len() != 58 {
            return Err(CidError);
        }
        let upper = body.to_ascii_uppercase();
        let bytes = BASE32_LOWER
            .decode(upper.as_bytes())
            .map_err(|_| CidError)?;
        let digest = bytes.strip_prefix(&CID_PREFIX).ok_or(CidError)?;
        let arr: [u8; 32] = digest.try_into().map_err(|_| CidError)?;
        Ok(Cid(arr))
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = Vec::with_capacity(36);
        buf.extend_from_slice(&CID_PREFIX);
        buf.extend_from_slice(&self.0);
        write!(f, "b{}", BASE32_LOWER.encode(&buf).to_ascii_lowercase())
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl Serialize for Cid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cid::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Lower-case unpadded base32 (RFC 4648), as used in `did:mesh` suffixes.
pub fn base32_lower(bytes: &[u8]) -> String {
    BASE32_LOWER.encode(bytes).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// RFC 8785 output written the plain way: every map sorted by UTF-16
    /// code units, every character escaped on its own.
    fn reference(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    reference(&Value::String(k.clone()), out);
                    out.push(':');
                    reference(v, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    reference(v, out);
                }
                out.push(']');
            }
            Value::String(s) => {
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\u{8}' => out.push_str("\\b"),
                        '\u{c}' => out.push_str("\\f"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        // Keys and strings from ASCII controls, quotes, BMP characters on
        // both sides of the surrogates and supplementary ones: where byte
        // order and UTF-16 order part.
        let text = "[a-c\"\\\u{0}-\u{1f}\u{7f}é\u{e000}\u{ff61}\u{1f600}]{0,6}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(text, inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// One pass gives both encodings, each as if written on its own.
        #[test]
        fn encoding_with_and_without_keys_in_one_pass(
            map in prop::collection::btree_map(
                prop_oneof![Just("sig".to_string()), Just("cosigs".to_string()), "[a-t]{1,4}", "\\PC{1,3}"],
                json_value(),
                0..8,
            ),
            other in json_value(),
        ) {
            let skip = ["sig", "cosigs"];
            let v = Value::Object(map.clone().into_iter().collect());
            let mut without = map;
            without.retain(|k, _| !skip.contains(&k.as_str()));
            let without = Value::Object(without.into_iter().collect());
            let (all, kept) = canonical_value_and_without(&v, &skip).unwrap();
            prop_assert_eq!(all, canonical_value(&v).unwrap());
            prop_assert_eq!(kept, canonical_value(&without).unwrap());
            // Not an object: both are its encoding.
            if !other.is_object() {
                let (a, k) = canonical_value_and_without(&other, &skip).unwrap();
                prop_assert_eq!(&a, &canonical_value(&other).unwrap());
                prop_assert_eq!(a, k);
            }
        }

        /// The fast paths (maps already in order, strings copied by runs)
        /// write what the plain RFC 8785 rules write.
        #[test]
        fn canonical_value_matches_the_plain_rules(v in json_value()) {
            let mut expected = String::new();
            reference(&v, &mut expected);
            prop_assert_eq!(String::from_utf8(canonical_value(&v).unwrap()).unwrap(), expected);
        }
    }

    #[test]
    fn sorts_keys_and_strips_whitespace() {
        let v = json!({"b": [1, {"z": null, "a": true}], "a": "x\ny\u{1}é"});
        let bytes = canonical_value(&v).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"a\":\"x\\ny\\u0001é\",\"b\":[1,{\"a\":true,\"z\":null}]}"
        );
    }

    #[test]
    fn floats_are_refused() {
        assert_eq!(
            canonical_value(&json!({"a": 1.5})),
            Err(EncodingError::Float)
        );
    }

    #[test]
    fn cid_round_trips_and_has_multiformats_prefix() {
        let cid = Cid::of(b"hello");
        let s = cid.to_string();
        assert!(s.starts_with("bafkr4i"), "{s}");
        assert_eq!(Cid::parse(&s).unwrap(), cid);
        assert!(Cid::parse("bafkr4i").is_err());
        assert!(Cid::parse(&s.replace('b', "B")).is_err());
    }
}
