//! A digest's manifest: the events it covers (id, time, hash), so that `verify` can name an
//! event that was changed, removed or added, not only say that a root differs. Its SHA-256 is
//! in the signed digest.
//!
//! Format (zstd-compressed): `WTM1`, the count (u32 LE), then per event, sorted by hash: the id
//! (`0x00` + 16 bytes when it is a lower-case hyphenated UUID, else `0x01` + length (u16 LE) +
//! bytes), the time (i64 LE microseconds) and the hash (32 bytes).

use super::hash::EventHash;
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"WTM1";

/// Encodes events sorted by hash.
///
/// # Errors
/// An event id over 65,535 bytes (CloudTrail's are 36).
pub fn encode(events: &[EventHash]) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(8 + events.len() * 58);
    raw.extend_from_slice(MAGIC);
    raw.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for e in events {
        match uuid::Uuid::try_parse(&e.event_id) {
            Ok(u) if u.hyphenated().to_string() == e.event_id => {
                raw.push(0);
                raw.extend_from_slice(u.as_bytes());
            }
            _ => {
                let n = u16::try_from(e.event_id.len()).map_err(|_| {
                    Error::Internal(format!(
                        "event id of {} bytes cannot be in a manifest",
                        e.event_id.len()
                    ))
                })?;
                raw.push(1);
                raw.extend_from_slice(&n.to_le_bytes());
                raw.extend_from_slice(e.event_id.as_bytes());
            }
        }
        raw.extend_from_slice(&e.time_us.to_le_bytes());
        raw.extend_from_slice(&e.hash);
    }
    zstd::bulk::compress(&raw, 3).map_err(|e| Error::Internal(format!("manifest: {e}")))
}

/// Decodes a manifest.
///
/// # Errors
/// Bytes that are not a manifest (a finding for `verify`, with the reason).
pub fn decode(bytes: &[u8]) -> std::result::Result<Vec<EventHash>, String> {
    let mut d = zstd::stream::Decoder::new(bytes).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut d, &mut raw).map_err(|e| format!("not zstd: {e}"))?;
    let mut r = Reader { b: &raw, at: 0 };
    if r.take(4)? != MAGIC {
        return Err("not a Watchtrail manifest".into());
    }
    let n = u32::from_le_bytes(r.array()?) as usize;
    let mut out = Vec::with_capacity(n.min(raw.len() / 41 + 1));
    for _ in 0..n {
        let event_id = match r.take(1)?[0] {
            0 => uuid::Uuid::from_bytes(r.array()?).hyphenated().to_string(),
            1 => {
                let len = u16::from_le_bytes(r.array()?) as usize;
                String::from_utf8(r.take(len)?.to_vec()).map_err(|e| e.to_string())?
            }
            t => return Err(format!("unknown id tag {t} at byte {}", r.at - 1)),
        };
        let time_us = i64::from_le_bytes(r.array()?);
        let hash: [u8; 32] = r.array()?;
        out.push(EventHash {
            hash,
            event_id,
            time_us,
        });
    }
    if r.at != raw.len() {
        return Err(format!("{} bytes after the last event", raw.len() - r.at));
    }
    Ok(out)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let s = self
            .b
            .get(self.at..self.at + n)
            .ok_or_else(|| format!("truncated at byte {}", self.at))?;
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_damage_is_refused() {
        let events = vec![
            EventHash {
                hash: [1; 32],
                event_id: "6f1c3f0e-8f55-4e0a-9b7a-0d4b3c2a1f00".into(),
                time_us: 7,
            },
            EventHash {
                hash: [2; 32],
                event_id: "not-a-uuid".into(),
                time_us: -1,
            },
            EventHash {
                hash: [3; 32],
                event_id: "6F1C3F0E-8F55-4E0A-9B7A-0D4B3C2A1F00".into(),
                time_us: 9,
            },
        ];
        let bytes = encode(&events).expect("encode");
        assert_eq!(decode(&bytes).expect("decode"), events);
        assert!(decode(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode(b"junk").is_err());
        assert_eq!(
            decode(&encode(&[]).expect("empty")).expect("decode"),
            vec![]
        );
    }
}
