//! Store format 1 → 2, when a store is opened.
//!
//! Format 1 kept each partition's metadata as reserved "customers" in the
//! `states` family (`"\0cohort.watermark"`, `"\0cohort.popularity"`,
//! `"\0cohort.propensity"`) and its offsets in the `input_offsets` and
//! `changelog_offsets` families. Format 2 keeps one typed
//! [`PartitionMeta`] per partition in `partitions`, with the segment
//! populations, which format 1 did not have: they are counted here from the
//! stored states (a state that does not decode counts in no segment).
//!
//! One atomic, synced write turns the store into format 2 (metadata records
//! in, reserved keys out, version 2); a crash before it leaves format 1,
//! which the next open migrates again. The old families are dropped after
//! it (and at any later open that still finds them).

use crate::envelope;
use crate::keys::*;
use crate::store::cf;
use crate::StoreError;
use cohort_core::offer::{Popularity, Propensity};
use cohort_core::partition::PartitionMeta;
use cohort_core::time::Timestamp;
use rocksdb::{WriteBatch, WriteOptions, DB};
use std::collections::BTreeMap;
use std::path::Path;

const LEGACY_WATERMARK: &str = "\u{0}cohort.watermark";
const LEGACY_POPULARITY: &str = "\u{0}cohort.popularity";
const LEGACY_PROPENSITY: &str = "\u{0}cohort.propensity";

fn corrupt(cf: &'static str, key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::CorruptRecord { cf, key: crate::error::display_key(key), reason: reason.into() }
}

/// Migrates a format 1 store to format 2 (see the module doc).
pub(crate) fn v1_to_v2(db: &mut DB, path: &Path) -> Result<(), StoreError> {
    let mut metas: BTreeMap<u32, PartitionMeta> = BTreeMap::new();
    let mut reserved: Vec<Vec<u8>> = Vec::new();
    {
        let states = cf(db, CF_STATES)?;
        let mut it = db.raw_iterator_cf(states);
        it.seek_to_first();
        while let (Some(key), Some(record)) = (it.key(), it.value()) {
            let Some(p) = key_partition(key) else {
                it.next();
                continue;
            };
            let meta = metas.entry(p).or_default();
            let name = &key[PARTITION_LEN..];
            let payload = envelope::open(record).map(|o| o.payload);
            if name.first() == Some(&0) {
                reserved.push(key.to_vec());
                let payload = payload.map_err(|e| corrupt(CF_STATES, key, format!("{e:?}")))?;
                match std::str::from_utf8(name) {
                    Ok(LEGACY_WATERMARK) => {
                        let raw: [u8; 8] =
                            payload.try_into().map_err(|_| corrupt(CF_STATES, key, "watermark is not 8 bytes"))?;
                        meta.watermark = Timestamp(i64::from_be_bytes(raw));
                    }
                    // Undecodable tables are relearned, as format 1's worker did.
                    Ok(LEGACY_POPULARITY) => meta.tables.popularity = Popularity::decode(payload).unwrap_or_default(),
                    Ok(LEGACY_PROPENSITY) => meta.tables.propensity = Propensity::decode(payload).unwrap_or_default(),
                    _ => {}
                }
            } else if let Ok(state) =
                payload.map_err(|_| ()).and_then(|b| cohort_core::encode::decode(b).map_err(|_| ()))
            {
                for m in state.segments {
                    *meta.populations.entry(m.segment).or_default() += 1;
                }
            }
            it.next();
        }
        it.status().map_err(|e| StoreError::rocks("scan", e))?;
    }
    for (name, input) in [(CF_LEGACY_INPUT_OFFSETS, true), (CF_LEGACY_CHANGELOG_OFFSETS, false)] {
        let Some(handle) = db.cf_handle(name) else { continue };
        let mut it = db.raw_iterator_cf(handle);
        it.seek_to_first();
        while let (Some(key), Some(value)) = (it.key(), it.value()) {
            let (Some(p), Ok(raw)) = (key_partition(key), <[u8; 8]>::try_from(value)) else {
                return Err(corrupt(name_static(input), key, "offset record is not partition · topic → 8 bytes"));
            };
            let next = i64::from_be_bytes(raw);
            let meta = metas.entry(p).or_default();
            if input {
                let topic = String::from_utf8_lossy(&key[PARTITION_LEN..]).into_owned();
                meta.next_offsets.insert(topic, next);
            } else {
                meta.changelog_next = Some(next);
            }
            it.next();
        }
        it.status().map_err(|e| StoreError::rocks("scan", e))?;
    }
    let mut wb = WriteBatch::default();
    let (states, partitions) = (cf(db, CF_STATES)?, cf(db, CF_PARTITIONS)?);
    let mut sealed = Vec::new();
    for (p, meta) in &metas {
        envelope::seal_into(&mut sealed, &meta.encode());
        wb.put_cf(partitions, partition_prefix(*p), &sealed);
    }
    for key in reserved {
        wb.delete_cf(states, key);
    }
    wb.put_cf(cf(db, CF_META)?, META_STORE_FORMAT_VERSION, 2u32.to_be_bytes());
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    db.write_opt(wb, &opts).map_err(|e| StoreError::rocks("migrate", e))?;
    drop_legacy_families(db, path)
}

fn name_static(input: bool) -> &'static str {
    if input {
        CF_LEGACY_INPUT_OFFSETS
    } else {
        CF_LEGACY_CHANGELOG_OFFSETS
    }
}

/// Drops format 1's offset families if they are still there.
pub(crate) fn drop_legacy_families(db: &mut DB, _path: &Path) -> Result<(), StoreError> {
    for name in [CF_LEGACY_INPUT_OFFSETS, CF_LEGACY_CHANGELOG_OFFSETS] {
        if db.cf_handle(name).is_some() {
            db.drop_cf(name).map_err(|e| StoreError::rocks("drop_cf", e))?;
        }
    }
    Ok(())
}
