//! Secrets in the configuration, kept out of everything cohort prints.
//!
//! Two defences, because a secret can reach output in two ways:
//!
//! - **by name**: `cohort check-config` prints the configuration, and masks
//!   the value of every librdkafka property that carries a secret
//!   ([`is_secret_property`]) as [`REDACTED`];
//! - **by value**: anything else that might quote a value (librdkafka's own
//!   log lines, an rdkafka error such as "Invalid value … for configuration
//!   property", a config error) goes through [`redact`] before it is
//!   written: the log writer ([`RedactingStderr`]) and the binary's final
//!   error message replace every secret value [`remember`]ed from the
//!   loaded configuration. librdkafka masks its known sensitive properties
//!   in its `debug=conf` dump itself; this also covers what it does not.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::RwLock;

/// What a masked secret reads as, in `check-config` output and in logs.
pub const REDACTED: &str = "<redacted>";

/// Whether a librdkafka property's value is a secret: every `*.password`
/// (`sasl.password`, `ssl.key.password`, `ssl.keystore.password`, ...),
/// `sasl.oauthbearer.client.secret`, private keys given inline
/// (`ssl.key.pem`, `sasl.oauthbearer.assertion.private.key.pem`) and their
/// passphrases, `sasl.oauthbearer.config` (which may carry credentials),
/// and anything else whose name contains `password`, `secret`,
/// `passphrase`, `private` or `jaas` (a Java client's JAAS line embeds the
/// password). Case does not matter.
pub fn is_secret_property(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["password", "secret", "passphrase", "private", "jaas"].iter().any(|w| n.contains(w))
        || n.ends_with("key.pem")
        || n == "sasl.oauthbearer.config"
}

/// `properties` with every secret value replaced by [`REDACTED`].
pub fn mask_properties(properties: &mut BTreeMap<String, String>) {
    for (k, v) in properties.iter_mut() {
        if is_secret_property(k) {
            *v = REDACTED.to_string();
        }
    }
}

/// Secret values to replace wherever they appear in text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    needles: Vec<String>,
}

impl Redactor {
    /// Adds the values of the secret-bearing properties among `properties`.
    /// Each is searched for as written and as JSON and Rust `Debug` would
    /// escape it (the JSON log format, `?field`s), so a quote or a backslash
    /// in a password does not let it through.
    pub fn add_properties<'a>(&mut self, properties: impl IntoIterator<Item = (&'a String, &'a String)>) {
        for (k, v) in properties {
            if is_secret_property(k) {
                self.add(v);
            }
        }
    }

    /// Adds one secret value. An empty one is ignored (there is nothing to
    /// hide, and it would match everywhere).
    pub fn add(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let json = serde_json::to_string(secret).unwrap_or_default();
        let debug = format!("{secret:?}");
        for s in [secret, strip_quotes(&json), strip_quotes(&debug)] {
            if !s.is_empty() && !self.needles.iter().any(|n| n == s) {
                self.needles.push(s.to_string());
            }
        }
        self.needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut out = Cow::Borrowed(text);
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = Cow::Owned(out.replace(n.as_str(), REDACTED));
            }
        }
        out
    }
}

fn strip_quotes(s: &str) -> &str {
    s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(s)
}

/// The process's secrets: what [`redact`] and [`RedactingStderr`] hide.
static PROCESS: RwLock<Redactor> = RwLock::new(Redactor { needles: Vec::new() });

/// Remembers the secret values of `config`'s librdkafka properties for the
/// rest of the process. Call it as soon as a configuration is loaded.
pub fn remember(config: &crate::config::Config) {
    let k = &config.kafka;
    let mut r = PROCESS.write().unwrap_or_else(|e| e.into_inner());
    r.add_properties(k.properties.iter().chain(&k.consumer_properties).chain(&k.producer_properties));
}

/// `text` with every [`remember`]ed secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> Cow<'_, str> {
    PROCESS.read().unwrap_or_else(|e| e.into_inner()).redact(text)
}

/// A `tracing_subscriber` writer to stderr that [`redact`]s each log line.
/// The formatter writes one event per writer; it is held until the writer
/// is dropped, so a secret split over two writes is still found.
#[derive(Debug, Default, Clone, Copy)]
pub struct RedactingStderr;

/// One event's bytes on their way to stderr.
#[derive(Debug, Default)]
pub struct RedactingWriter {
    buf: Vec<u8>,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> RedactingWriter {
        RedactingWriter::default()
    }
}

impl Write for RedactingWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let _ = std::io::stderr().lock().write_all(redact(&text).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bearing_properties_are_recognised_by_name() {
        for name in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.truststore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.assertion.private.key.pem",
            "sasl.oauthbearer.assertion.private.key.passphrase",
            "ssl.key.pem",
            "SASL.PASSWORD",
            "my.custom.secret.thing",
            "sasl.jaas.config",
        ] {
            assert!(is_secret_property(name), "{name}");
        }
        for name in ["sasl.username", "sasl.mechanisms", "security.protocol", "ssl.ca.location", "client.id", "debug"] {
            assert!(!is_secret_property(name), "{name}");
        }
    }

    #[test]
    fn masking_replaces_only_the_secret_values() {
        let mut props = BTreeMap::from([
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("sasl.oauthbearer.client.secret".to_string(), "s3cr3t".to_string()),
            ("ssl.key.pem".to_string(), "-----BEGIN PRIVATE KEY-----".to_string()),
            ("sasl.username".to_string(), "cohort".to_string()),
        ]);
        mask_properties(&mut props);
        assert_eq!(props["sasl.password"], REDACTED);
        assert_eq!(props["sasl.oauthbearer.client.secret"], REDACTED);
        assert_eq!(props["ssl.key.pem"], REDACTED);
        assert_eq!(props["sasl.username"], "cohort");
    }

    #[test]
    fn redaction_finds_a_secret_as_written_and_as_json_or_debug_escape_it() {
        let mut r = Redactor::default();
        let props = BTreeMap::from([
            ("sasl.password".to_string(), "hun\"ter2".to_string()),
            ("ssl.key.password".to_string(), String::new()),
            ("client.id".to_string(), "cohort".to_string()),
        ]);
        r.add_properties(&props);
        let raw = "Client config error: Invalid value \"hun\"ter2\" for configuration property \"sasl.password\"";
        assert_eq!(
            r.redact(raw),
            "Client config error: Invalid value \"<redacted>\" for configuration property \"sasl.password\""
        );
        let json = r#"{"fields":{"message":"librdkafka:   sasl.password = hun\"ter2","client":"cohort"}}"#;
        assert!(!r.redact(json).contains("ter2"), "{}", r.redact(json));
        assert!(r.redact(json).contains("cohort"), "a property that is no secret stays");
        assert_eq!(r.redact("nothing to hide"), "nothing to hide");
        assert!(matches!(r.redact("nothing to hide"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_secret_containing_another_is_replaced_whole() {
        let mut r = Redactor::default();
        r.add("abc");
        r.add("xxabcxx");
        assert_eq!(r.redact("[xxabcxx] [abc]"), "[<redacted>] [<redacted>]");
    }
}
