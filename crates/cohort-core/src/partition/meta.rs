//! [`PartitionMeta`]: what a partition knows besides its customers, as one
//! typed record, and its encoding.
//!
//! The store keeps one per partition in a column family of its own,
//! committed in the same atomic write as the batch's states; the changelog
//! carries it under [`changelog_key`]. Format version 3, after the version
//! byte (`uv` = unsigned LEB128 varint, `str` = `uv` length + UTF-8, `i64` =
//! 8 bytes big-endian):
//!
//! ```text
//! watermark      i64 (i64::MIN: nothing seen yet)
//! popularity     uv length + the table's own encoding
//! propensity     uv length + the table's own encoding
//! next offsets   uv n, each: str input topic, i64 next offset
//! populations    uv n, each: str segment, uv customers (sorted by segment)
//! changelog      u8 0 | 1 then i64: the next changelog offset the states reflect
//! rules          u8 0 (none recorded) | 1 then: str rules version, i64 switch
//!                instant, uv switch number, u8 0 (re-evaluation done) | 1
//!                then str: the last customer re-evaluated ("": none yet)
//!                and u8 0 | 1 then the learned tables at the switch
//!                (popularity, propensity, each uv length + encoding)
//! ```
//!
//! Version 2 is version 3 without the tables at the switch, version 1 is
//! version 2 without the rules section; both are still read, and a record
//! without tables at a switch is written as version 2.

use crate::encode::DecodeError;
use crate::engine::Tables;
use crate::offer::{put_str, put_uv, MiniReader, Popularity, Propensity};
use crate::time::Timestamp;
use std::collections::BTreeMap;

/// The format [`PartitionMeta::encode`] writes.
pub const META_FORMAT_VERSION: u8 = 3;

/// The changelog key of partition `partition`'s metadata record, e.g.
/// `"\0cohort.partition/3"`. Customer ids never start with a NUL byte
/// (such events are dead-lettered), so it cannot collide with a customer;
/// the partition number is part of the key because the changelog places
/// records by key, and under one shared key compaction would keep only
/// whichever partition wrote last.
pub fn changelog_key(partition: i32) -> String {
    format!("\u{0}cohort.partition/{partition}")
}

/// One partition's metadata: its watermark, learned tables, input
/// positions, segment populations and changelog position.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionMeta {
    /// Timers due at or before it have fired. [`Timestamp::MIN`]: nothing seen.
    pub watermark: Timestamp,
    /// Learned from the partition's purchases and offer outcomes.
    pub tables: Tables,
    /// Input topic → the next offset to read: everything before it is in
    /// the states committed with this record.
    pub next_offsets: BTreeMap<String, i64>,
    /// Segment → customers of this partition in it, exactly, as of the
    /// states committed with this record. Segments with no customer are absent.
    pub populations: BTreeMap<String, u64>,
    /// The next changelog offset the local states reflect (restore), if known.
    pub changelog_next: Option<i64>,
    /// The rules the partition decides under and how far re-evaluating its
    /// customers under them has come; `None` before any was recorded.
    pub rules: Option<RulesProgress>,
}

/// A partition's rules version and its re-evaluation (see
/// [`super::PartitionTask::switch_rules`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RulesProgress {
    /// [`crate::rules::RuleSet::version`] of the rules in force.
    pub version: String,
    /// The instant the partition switched to them (its watermark then):
    /// every customer decided under older rules is re-evaluated at this
    /// instant (or at its own last decision instant, if later).
    pub at: Timestamp,
    /// How many times the partition has switched rules (1 for the first
    /// recorded version): part of a re-evaluation's output ids, so rules
    /// undone and applied again at the same instant decide anew.
    pub switch: u64,
    /// `Some(c)`: the background re-evaluation has covered every stored
    /// customer up to and including `c` in key order (`""`: none yet);
    /// `None`: it is complete.
    pub after: Option<String>,
    /// The partition's learned tables at the switch, kept while the
    /// re-evaluation runs if an offer lists the `rules_changed` trigger:
    /// an offer decided on the rules change is scored with them, so it
    /// does not depend on where slices fall between events.
    pub tables: Option<Tables>,
}

impl Default for PartitionMeta {
    fn default() -> Self {
        PartitionMeta {
            watermark: Timestamp::MIN,
            tables: Tables::default(),
            next_offsets: BTreeMap::new(),
            populations: BTreeMap::new(),
            changelog_next: None,
            rules: None,
        }
    }
}

/// A [`PartitionMeta`]'s fields, borrowed: what is encoded. The partition
/// task encodes its own fields through this without copying its tables.
pub(crate) struct MetaRef<'a> {
    pub(crate) watermark: Timestamp,
    pub(crate) tables: &'a Tables,
    pub(crate) next_offsets: &'a BTreeMap<String, i64>,
    pub(crate) populations: &'a BTreeMap<String, u64>,
    pub(crate) changelog_next: Option<i64>,
    pub(crate) rules: Option<&'a RulesProgress>,
}

impl MetaRef<'_> {
    /// The record's bytes: in [`META_FORMAT_VERSION`] while it keeps the
    /// tables at a switch, in format 2 otherwise, so that the previous
    /// release still reads what a partition writes unless an offer on
    /// `rules_changed` is being decided (a rolling upgrade, a standby).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let snapshot = self.rules.and_then(|r| r.tables.as_ref());
        let mut out = Vec::with_capacity(256 + 24 * self.populations.len());
        out.push(if snapshot.is_some() { META_FORMAT_VERSION } else { 2 });
        out.extend_from_slice(&self.watermark.as_millis().to_be_bytes());
        put_tables(&mut out, self.tables);
        put_uv(&mut out, self.next_offsets.len() as u64);
        for (topic, next) in self.next_offsets {
            put_str(&mut out, topic);
            out.extend_from_slice(&next.to_be_bytes());
        }
        put_uv(&mut out, self.populations.len() as u64);
        for (segment, n) in self.populations {
            put_str(&mut out, segment);
            put_uv(&mut out, *n);
        }
        match self.changelog_next {
            None => out.push(0),
            Some(o) => {
                out.push(1);
                out.extend_from_slice(&o.to_be_bytes());
            }
        }
        match self.rules {
            None => out.push(0),
            Some(r) => {
                out.push(1);
                put_str(&mut out, &r.version);
                out.extend_from_slice(&r.at.as_millis().to_be_bytes());
                put_uv(&mut out, r.switch);
                match &r.after {
                    None => out.push(0),
                    Some(c) => {
                        out.push(1);
                        put_str(&mut out, c);
                    }
                }
                if let Some(t) = snapshot {
                    out.push(1);
                    put_tables(&mut out, t);
                }
            }
        }
        out
    }
}

impl PartitionMeta {
    /// The record's bytes, in [`META_FORMAT_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        MetaRef {
            watermark: self.watermark,
            tables: &self.tables,
            next_offsets: &self.next_offsets,
            populations: &self.populations,
            changelog_next: self.changelog_next,
            rules: self.rules.as_ref(),
        }
        .encode()
    }

    /// `encoded` with its changelog position set to `next`: the worker
    /// learns where a batch's metadata record landed in the changelog only
    /// once it is acknowledged, and stores the position with the batch.
    pub fn with_changelog_next(encoded: &[u8], next: i64) -> Result<Vec<u8>, DecodeError> {
        let mut meta = PartitionMeta::decode(encoded)?;
        meta.changelog_next = Some(next);
        Ok(meta.encode())
    }

    /// Reads bytes from [`PartitionMeta::encode`]; a version this build does
    /// not know is refused ([`DecodeError::UnsupportedVersion`]), never misread.
    pub fn decode(bytes: &[u8]) -> Result<PartitionMeta, DecodeError> {
        let (mut r, format) = MiniReader::versioned(bytes, META_FORMAT_VERSION)?;
        let watermark = Timestamp(r.i64()?);
        let tables = read_tables(&mut r)?;
        let mut next_offsets = BTreeMap::new();
        for _ in 0..r.len()? {
            let topic = r.string()?;
            next_offsets.insert(topic, r.i64()?);
        }
        let mut populations = BTreeMap::new();
        for _ in 0..r.len()? {
            let segment = r.string()?;
            populations.insert(segment, r.uv()?);
        }
        let changelog_next = match r.bytes(1)?[0] {
            0 => None,
            1 => Some(r.i64()?),
            _ => return Err(DecodeError::Invalid("changelog position flag")),
        };
        let rules = match (format, r.bytes(1).map(|b| b[0])) {
            (1, _) | (_, Ok(0)) => None,
            (_, Ok(1)) => {
                let version = r.string()?;
                let at = Timestamp(r.i64()?);
                let switch = r.uv()?;
                let after = match r.bytes(1)?[0] {
                    0 => None,
                    1 => Some(r.string()?),
                    _ => return Err(DecodeError::Invalid("re-evaluation flag")),
                };
                let tables = match format {
                    2 => None,
                    _ => match r.bytes(1)?[0] {
                        0 => None,
                        1 => Some(read_tables(&mut r)?),
                        _ => return Err(DecodeError::Invalid("switch tables flag")),
                    },
                };
                Some(RulesProgress { version, at, switch, after, tables })
            }
            (_, Ok(_)) => return Err(DecodeError::Invalid("rules flag")),
            (_, Err(e)) => return Err(e),
        };
        r.finish()?;
        Ok(PartitionMeta { watermark, tables, next_offsets, populations, changelog_next, rules })
    }
}

/// Popularity then propensity, each as uv length + its own encoding.
fn put_tables(out: &mut Vec<u8>, tables: &Tables) {
    for table in [tables.popularity.encode(), tables.propensity.encode()] {
        put_uv(out, table.len() as u64);
        out.extend_from_slice(&table);
    }
}

fn read_tables(r: &mut MiniReader<'_>) -> Result<Tables, DecodeError> {
    let n = r.len()?;
    let popularity = Popularity::decode(r.bytes(n)?)?;
    let n = r.len()?;
    let propensity = Propensity::decode(r.bytes(n)?)?;
    Ok(Tables { popularity, propensity })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LineItem, Outcome, Purchase};

    fn sample() -> PartitionMeta {
        let mut m = PartitionMeta { watermark: Timestamp(1_736_760_274_874), ..Default::default() };
        m.tables.popularity.record(&Purchase {
            order_id: "o1".into(),
            items: vec![LineItem {
                product_id: "p-1".into(),
                category: Some("shoes".into()),
                quantity: 2,
                unit_price: 3.5,
            }],
            total: 7.0,
            currency: "EUR".into(),
            channel: None,
        });
        m.tables.propensity.record("winback_20", Outcome::Converted);
        m.next_offsets.insert("clickstream".into(), 657);
        m.next_offsets.insert("purchases".into(), 0);
        m.populations.insert("vip".into(), 3);
        m.populations.insert("lapsed".into(), 1_000_000);
        m.changelog_next = Some(42);
        m.rules = Some(RulesProgress {
            version: "1-3f9a".into(),
            at: Timestamp(1_736_760_000_000),
            switch: 3,
            after: Some("c-7".into()),
            tables: Some(Tables::default()),
        });
        m
    }

    #[test]
    fn roundtrips() {
        let mut done = sample();
        done.rules.as_mut().unwrap().after = None;
        done.rules.as_mut().unwrap().tables = None;
        let mut learned = sample();
        learned.rules.as_mut().unwrap().tables = Some(learned.tables.clone());
        for m in [PartitionMeta::default(), sample(), done, learned] {
            assert_eq!(PartitionMeta::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn reads_format_1() {
        // Format 1 is format 2 without the rules section.
        let mut m = sample();
        m.rules = None;
        let mut v1 = m.encode();
        assert_eq!(v1.pop(), Some(0));
        v1[0] = 1;
        assert_eq!(PartitionMeta::decode(&v1), Ok(m));
    }

    #[test]
    fn writes_format_2_without_tables_at_a_switch() {
        // What the previous release reads: format 3 only while a snapshot is kept.
        let mut m = sample();
        assert_eq!(m.encode()[0], 3);
        m.rules.as_mut().unwrap().tables = None;
        assert_eq!(m.encode()[0], 2);
        assert_eq!(PartitionMeta::default().encode()[0], 2);
        // Format 2 is format 3 without the tables flag.
        let mut v3 = m.encode();
        v3[0] = 3;
        v3.push(0);
        assert_eq!(PartitionMeta::decode(&v3), Ok(m));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let bytes = sample().encode();
        assert_eq!(PartitionMeta::decode(&[]), Err(DecodeError::Empty));
        assert_eq!(PartitionMeta::decode(&[4]), Err(DecodeError::UnsupportedVersion { found: 4, supported: 3 }));
        for cut in 1..bytes.len() {
            assert!(PartitionMeta::decode(&bytes[..cut]).is_err(), "truncated at {cut} must not decode");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(PartitionMeta::decode(&long), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn each_partition_has_its_own_changelog_key() {
        assert_eq!(changelog_key(3), "\u{0}cohort.partition/3");
        assert_ne!(changelog_key(1), changelog_key(11));
    }
}
