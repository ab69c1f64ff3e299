//! Reading a config: the file (with a size cap), `--set` overrides, deserialisation and validation, with every
//! message naming where the offending value came from.

use super::{Config, ConfigError, NanPolicy};
use std::path::Path;

/// Reads, overrides and validates a config file.
pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
    load_labeled(path, &labeled_sets(overrides))
}

/// `--set` overrides, each labelled as itself for messages.
pub fn labeled_sets(overrides: &[String]) -> Vec<(String, String)> {
    overrides.iter().map(|ov| (format!("--set {ov}"), ov.clone())).collect()
}

/// As [`load`], with each override given as (the option that made it, `key=value`): an error about an overridden
/// key names that option rather than the file.
pub fn load_labeled(path: &Path, overrides: &[(String, String)]) -> Result<Config, ConfigError> {
    // Read with a cap: a device such as /dev/zero would otherwise fill memory (a pipe, `<(...)`, is fine).
    let cannot = |e: std::io::Error| ConfigError(format!("{}: cannot read: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = vec![];
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1), &mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError(format!(
            "{}: over {MAX_CONFIG_BYTES} bytes; a config is a small TOML file",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| ConfigError(format!("{}: not UTF-8 text", path.display())))?;
    parse_labeled(&text, &path.display().to_string(), overrides)
}

const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Parses TOML text (named `origin` in messages), applies `key=value` overrides, validates.
pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Config, ConfigError> {
    parse_labeled(text, origin, &labeled_sets(overrides))
}

/// As [`parse`], with labelled overrides (see [`load_labeled`]).
pub fn parse_labeled(text: &str, origin: &str, overrides: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut value: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError(format!("{origin}: {}", one_line(&e.to_string()))))?;
    for (label, ov) in overrides {
        apply_override(&mut value, ov).map_err(|e| ConfigError(format!("{label}: {e}")))?;
    }
    // The last override of the key a message is about, else the file, is where the value came from.
    let source_of = |key: &str| {
        // `key` may lie inside an overridden table (augment.multipliers.rotate under augment.multipliers).
        let covers = |k: &str| key == k || key.strip_prefix(k).is_some_and(|rest| rest.starts_with('.'));
        let set = overrides.iter().rev().find(|(_, ov)| ov.split_once('=').is_some_and(|(k, _)| covers(k.trim())));
        set.map_or(origin, |(label, _)| label.as_str()).to_string()
    };
    let cfg: Config = toml::Value::Table(value).try_into().map_err(|e: toml::de::Error| {
        let msg = one_line(&e.to_string());
        let key = msg.rsplit_once(" in ").map_or("", |(_, k)| k.trim().trim_matches('`'));
        ConfigError(format!("{}: {msg}", source_of(key)))
    })?;
    let mut cfg = cfg;
    if std::mem::take(&mut cfg.training.rollback) {
        cfg.training.nan_policy = NanPolicy::Rollback;
    }
    cfg.validate().map_err(|e| ConfigError(format!("{}: {e}", source_of(e.split(" = ").next().unwrap_or("")))))?;
    Ok(cfg)
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|')).collect::<Vec<_>>().join(" ")
}

/// `section.key=value`; the value is parsed as TOML (number, bool, array), else taken as a string.
fn apply_override(root: &mut toml::Table, ov: &str) -> Result<(), String> {
    let (key, raw) = ov.split_once('=').ok_or("expected section.key=value")?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("'{key}' is not of the form section.key"));
    }
    let value = parse_value(raw.trim());
    let section = root.entry(parts[0].to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let table = section.as_table_mut().ok_or(format!("'{}' is not a section", parts[0]))?;
    table.insert(parts[1].to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}
