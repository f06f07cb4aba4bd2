//! What the node's TOML files with a secret in them share: the providers
//! file ([`crate::federation::config`]) and the SMS file
//! ([`crate::sms::config`]). Each file is read with a size cap, a TOML
//! error names the line and never quotes it (that line may hold the
//! secret), and a secret is given either inline or in a file of its own
//! (`NAME = "…"` or `NAME_file = "path"`), relative paths being relative
//! to the config file.

use std::path::{Path, PathBuf};

/// Largest config file or secret file read.
const MAX_FILE: u64 = 64 * 1024;

/// Reads a file of at most 64 KiB (a wrong path given as a secret file
/// must not make the node read a disk image into memory).
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other("larger than 64 KiB"));
    }
    Ok(text)
}

/// Parses `text` as TOML. toml's message names the line and the kind of
/// error; it can quote the offending line, so a syntax error on a
/// secret's own line would show it: keep the location and the kind only.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| {
        let msg = e.message().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {msg}")
            }
            None => msg,
        }
    })
}

/// The secret given as `key = "…"` (`inline`) or `key_file = "path"`
/// (`file`, relative to `base`): exactly one of them, non-empty and free
/// of control characters. `what` names it in the reasons ("client
/// secret"); no reason ever holds the secret.
pub fn secret(
    inline: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
    key: &str,
    what: &str,
) -> Result<String, String> {
    let secret = match (inline, file) {
        (Some(_), Some(_)) => return Err(format!("give {key} or {key}_file, not both")),
        (None, None) => return Err(format!("no {what}: give {key} or {key}_file")),
        (Some(s), None) => s,
        (None, Some(file)) => {
            let path = if file.is_absolute() {
                file
            } else {
                base.join(file)
            };
            let text = read_small(&path)
                .map_err(|e| format!("{key}_file {} cannot be read: {e}", path.display()))?;
            // A file written by `echo` ends in a newline that is not part
            // of the secret.
            text.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if secret.is_empty() || secret.chars().any(char::is_control) {
        return Err(format!("the {what} is empty or holds control characters"));
    }
    Ok(secret)
}

/// Reads the config file at `path` and hands its text to `parse` with the
/// file's folder (where relative secret files are read from). The error
/// is the reason only; the caller adds the path.
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str, &Path) -> Result<T, String>,
) -> Result<T, String> {
    let text = read_small(path).map_err(|e| format!("cannot be read: {e}"))?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&text, base)
}
