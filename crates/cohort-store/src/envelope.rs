//! The store's record envelope around a customer's state bytes.
//!
//! The state itself is core's versioned encoding and opaque here. The
//! envelope lets the store detect a damaged record (checksum) and evolve its
//! own layout without misreading old records:
//!
//! - version 1 (legacy, read only): `[1] payload`. No checksum. Upgraded on
//!   read: returned as is, and rewritten as version 2 by the next commit of
//!   that customer.
//! - version 2 (written today): `[2] checksum(payload) as u32 LE · payload`.
//!
//! Version 0 and versions above [`RECORD_VERSION`] are refused with
//! [`StoreError::UnsupportedRecordVersion`](crate::StoreError): a record from a
//! newer cohort is never guessed at.

/// The envelope version this build writes.
pub const RECORD_VERSION: u8 = 2;
/// The oldest envelope version this build still reads.
pub const OLDEST_RECORD_VERSION: u8 = 1;

const V2_HEADER_LEN: usize = 5;

/// Why an envelope could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Damaged: empty, truncated or checksum mismatch.
    Corrupt(String),
    /// A version this build does not read.
    Unsupported(u8),
}

/// A decoded envelope: the version it was stored with and the state bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    pub version: u8,
    pub payload: &'a [u8],
}

/// Writes `payload` in the current envelope into `out` (cleared first).
pub fn seal_into(out: &mut Vec<u8>, payload: &[u8]) {
    out.clear();
    out.reserve(V2_HEADER_LEN + payload.len());
    out.push(RECORD_VERSION);
    out.extend_from_slice(&checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// `payload` in the current envelope.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    seal_into(&mut out, payload);
    out
}

/// `payload` in the legacy version-1 envelope. Only for tests of the upgrade
/// path; the store never writes it.
#[doc(hidden)]
pub fn seal_v1(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(1);
    out.extend_from_slice(payload);
    out
}

/// Checks and strips the envelope.
pub fn open(record: &[u8]) -> Result<Opened<'_>, EnvelopeError> {
    let Some((&version, rest)) = record.split_first() else {
        return Err(EnvelopeError::Corrupt("empty record".into()));
    };
    match version {
        1 => Ok(Opened { version, payload: rest }),
        2 => {
            let (Some(sum), Some(payload)) = (rest.get(..4), rest.get(4..)) else {
                return Err(EnvelopeError::Corrupt(format!("truncated header: {} bytes", record.len())));
            };
            let stored = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
            let actual = checksum(payload);
            if stored != actual {
                return Err(EnvelopeError::Corrupt(format!(
                    "checksum mismatch: stored {stored:#010x}, computed {actual:#010x} over {} bytes",
                    payload.len()
                )));
            }
            Ok(Opened { version, payload })
        }
        other => Err(EnvelopeError::Unsupported(other)),
    }
}

/// A fast 32-bit checksum of the payload: four independent
/// multiply-xorshift lanes over 8-byte words (wyhash/fxhash family, so the
/// CPU overlaps the multiplications), folded and finished with murmur3's
/// `fmix64`. It detects torn writes and bit flips; it is not cryptographic.
/// Written here because the SSE4.2 CRC32C instruction needs `unsafe`, which
/// this workspace denies, and a table CRC is several times slower at 1 KiB.
pub fn checksum(data: &[u8]) -> u32 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    const SEEDS: [u64; 4] = [0xC0B0_27D5, 0x2545_F491_4F6C_DD1D, 0x85EB_CA6B, 0xC2B2_AE35];
    fn word(bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    }
    fn mix(h: u64, w: u64) -> u64 {
        let h = (h ^ w).wrapping_mul(K);
        h ^ (h >> 29)
    }
    let mut lanes = SEEDS;
    let mut blocks = data.chunks_exact(32);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = mix(*lane, word(w));
        }
    }
    let mut h = (data.len() as u64).wrapping_mul(K);
    for lane in lanes {
        h = mix(h, lane);
    }
    for w in blocks.remainder().chunks(8) {
        h = mix(h, word(w) ^ ((w.len() as u64) << 59));
    }
    // murmur3 fmix64
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h ^ (h >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_to_their_payload() {
        for len in [0usize, 1, 7, 8, 9, 1024, 1031] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let sealed = seal(&payload);
            assert_eq!(open(&sealed), Ok(Opened { version: RECORD_VERSION, payload: &payload }));
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected_or_refused() {
        let payload: Vec<u8> = (0..100u8).collect();
        let sealed = seal(&payload);
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut damaged = sealed.clone();
                damaged[byte] ^= 1 << bit;
                match open(&damaged) {
                    Ok(opened) => panic!("flip at {byte}.{bit} read as version {}", opened.version),
                    Err(EnvelopeError::Corrupt(_) | EnvelopeError::Unsupported(_)) => {}
                }
            }
        }
    }

    #[test]
    fn truncated_and_unknown_versions_are_refused() {
        assert!(matches!(open(&[]), Err(EnvelopeError::Corrupt(_))));
        assert!(matches!(open(&[2, 0, 0]), Err(EnvelopeError::Corrupt(_))));
        assert_eq!(open(&[0, 1, 2]), Err(EnvelopeError::Unsupported(0)));
        assert_eq!(open(&[3, 1, 2, 3, 4, 5]), Err(EnvelopeError::Unsupported(3)));
        assert_eq!(open(&seal_v1(b"old")), Ok(Opened { version: 1, payload: b"old" }));
    }
}
