//! `cohort check-config`: what a worker would refuse at start, found
//! without connecting to anything: the configuration itself
//! ([`Config::load`]), its rules file, its schemas, and each librdkafka
//! property (a name librdkafka does not know, a value it cannot parse).

use crate::config::Config;
use crate::secrets::{is_secret_property, REDACTED};
use crate::worker;
use anyhow::{bail, Context};
use rdkafka::error::KafkaError;

/// What the check found in a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub rules_version: String,
    pub segments: usize,
    pub offers: usize,
}

/// Checks everything `cohort run` reads before it connects. Errors name
/// the file (and for rules, `file:line:column`), or the property.
pub fn check(config: &Config) -> anyhow::Result<Checked> {
    let rules = worker::load_rules(&config.rules.path)?;
    worker::load_registry(config)
        .with_context(|| format!("format: schemas in {}", config.format.schemas_dir.display()))?;
    check_librdkafka_properties(config)?;
    Ok(Checked {
        rules_version: rules.version().to_string(),
        segments: rules.segments().len(),
        offers: rules.offers().len(),
    })
}

/// Sets each pass-through property on a fresh librdkafka configuration, as
/// the worker's clients will, and reports the first one librdkafka refuses
/// by map and name. The value is not quoted when the property carries a
/// secret (librdkafka's message may contain it).
pub fn check_librdkafka_properties(config: &Config) -> anyhow::Result<()> {
    let k = &config.kafka;
    for (map, props) in [
        ("kafka.properties", &k.properties),
        ("kafka.consumer_properties", &k.consumer_properties),
        ("kafka.producer_properties", &k.producer_properties),
    ] {
        for (key, value) in props {
            let mut one = rdkafka::ClientConfig::new();
            one.set(key, value);
            if let Err(e) = one.create_native_config() {
                let why = match e {
                    KafkaError::ClientConfig(_, desc, _, _) => desc,
                    other => other.to_string(),
                };
                let why = if is_secret_property(key) && !value.is_empty() { why.replace(value, REDACTED) } else { why };
                bail!("{map}: `{key}`: {why}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml: &str) -> Config {
        Config::from_toml("c.toml", toml, Vec::new()).expect("valid config")
    }

    #[test]
    fn librdkafka_refuses_an_unknown_property_by_name_without_its_secret_value() {
        let c = config("[kafka.properties]\n\"sasl.mechanisms\" = \"PLAIN\"\n\"sasl.password\" = \"hunter2\"\n");
        check_librdkafka_properties(&c).expect("known properties pass");
        let c = config("[kafka.consumer_properties]\n\"ssl.truststore.password\" = \"hunter2\"\n");
        let e = check_librdkafka_properties(&c).expect_err("a Java client's property").to_string();
        assert!(e.starts_with("kafka.consumer_properties: `ssl.truststore.password`:"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let c = config("[kafka.producer_properties]\n\"linger.ms\" = \"soon\"\n");
        let e = check_librdkafka_properties(&c).expect_err("not a number").to_string();
        assert!(e.contains("`linger.ms`"), "{e}");
    }
}
