//! How a record is stored: users, devices and leases as one format byte and their fields in
//! order (postcard), everything else as JSON.
//!
//! The compact form is for the memory of the request path, not the disk: sled keeps in memory
//! every page it reads (see docs/PERFORMANCE.md, "The store's floor"), so the bytes of the
//! records it reads are resident. The scale benchmark's user record took 197 bytes as JSON and
//! takes 124 here, its device 265 and 101, a lease 154 and 39. Records written under schema 1
//! are JSON, which always starts with `{`: both are read, and a record is converted when it is
//! next written; so are leases of the first compact format (schema 2, without `renewed`).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{DeviceRecord, LeaseRecord, ProfileRecord, StoreError, UserRecord, MAX_SESSION_ID_LEN};

/// The first byte of a compact record (JSON records start with `{`). A change to the fields
/// of a compactly stored record needs a new format byte: fields are found by position.
const COMPACT_V1: u8 = 1;
/// Leases since schema 3: `COMPACT_V1`'s fields and the `renewed` mark.
const COMPACT_V2: u8 = 2;

/// Why bytes are not a record (kept as `StoreError::Corrupt`'s source).
pub type DecodeError = Box<dyn std::error::Error + Send + Sync>;

/// A record as it is stored.
pub(super) trait Record: Sized {
    fn encode(&self) -> Vec<u8>;
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;
}

fn compact<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![COMPACT_V1]).expect("records serialize infallibly")
}

/// A compact record, or one written as JSON before.
fn either<C: DeserializeOwned, J: DeserializeOwned>(
    bytes: &[u8],
    from_compact: impl FnOnce(C) -> J,
) -> Result<J, DecodeError> {
    match bytes.split_first() {
        Some((&COMPACT_V1, rest)) => Ok(from_compact(postcard::from_bytes(rest)?)),
        Some((b'{', _)) => Ok(serde_json::from_slice(bytes)?),
        Some((other, _)) => Err(format!("unknown record format {other:#04x}").into()),
        None => Err("empty record".into()),
    }
}

impl Record for DeviceRecord {
    fn encode(&self) -> Vec<u8> {
        compact(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        either(bytes, |d: DeviceRecord| d)
    }
}

/// A lease as `COMPACT_V1` stored it: without the `renewed` mark.
#[derive(Deserialize)]
struct LeaseV1 {
    addr: std::net::Ipv4Addr,
    pool: String,
    user: String,
    device: String,
    nas: String,
    session_id: Option<String>,
    granted: u64,
    expires: u64,
}

impl Record for LeaseRecord {
    fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![COMPACT_V2]).expect("records serialize infallibly")
    }

    /// A lease in memory keeps its device's and user's names' lengths in 16 bits and its
    /// session id's in 12 (`ipam::leases`): a record with longer ones, which no daemon writes,
    /// is corrupt.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let lease = Self::decode_any(bytes)?;
        let fits = |t: &str| u16::try_from(t.len()).is_ok();
        if !fits(&lease.device) || !fits(&lease.user) {
            return Err("a lease's device or user name over 64 KiB".into());
        }
        if lease
            .session_id
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SESSION_ID_LEN)
        {
            return Err("a lease's session id over 4,095 bytes".into());
        }
        Ok(lease)
    }
}

impl LeaseRecord {
    fn decode_any(bytes: &[u8]) -> Result<Self, DecodeError> {
        if let Some((&COMPACT_V2, rest)) = bytes.split_first() {
            return Ok(postcard::from_bytes(rest)?);
        }
        either(bytes, |l: LeaseV1| LeaseRecord {
            addr: l.addr,
            pool: l.pool,
            user: l.user,
            device: l.device,
            nas: l.nas,
            session_id: l.session_id,
            granted: l.granted,
            expires: l.expires,
            renewed: false,
        })
    }
}

/// `UserRecord`'s fields in order: its JSON form leaves out absent ones, which a format
/// without field names cannot.
#[derive(Serialize)]
struct UserOut<'a> {
    name: &'a str,
    password_hash: Option<&'a str>,
    devices: &'a [String],
    email: Option<&'a str>,
    max_devices: Option<u32>,
    created: u64,
    updated: u64,
}

#[derive(Deserialize)]
struct UserIn {
    name: String,
    password_hash: Option<String>,
    devices: Vec<String>,
    email: Option<String>,
    max_devices: Option<u32>,
    created: u64,
    updated: u64,
}

impl Record for UserRecord {
    fn encode(&self) -> Vec<u8> {
        compact(&UserOut {
            name: &self.name,
            password_hash: self.password_hash.as_deref(),
            devices: &self.devices,
            email: self.email.as_deref(),
            max_devices: self.max_devices,
            created: self.created,
            updated: self.updated,
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        either(bytes, |u: UserIn| UserRecord {
            name: u.name,
            password_hash: u.password_hash,
            devices: u.devices,
            email: u.email,
            max_devices: u.max_devices,
            created: u.created,
            updated: u.updated,
        })
    }
}

/// Profiles are few and read rarely: JSON.
impl Record for ProfileRecord {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialize infallibly")
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

pub(super) fn decode<T: Record>(key: &[u8], value: &[u8]) -> Result<T, StoreError> {
    T::decode(value).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

pub(super) fn encode<T: Record>(value: &T) -> Vec<u8> {
    value.encode()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::store::{AuthMethod, DeviceType};

    fn user(full: bool) -> UserRecord {
        UserRecord {
            name: "alice".into(),
            password_hash: full.then(|| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
            devices: if full {
                vec!["laptop".into(), "phone".into()]
            } else {
                vec![]
            },
            email: full.then(|| "alice@example.com".into()),
            max_devices: full.then_some(3),
            created: 1_764_000_000,
            updated: 1_764_000_100,
        }
    }

    fn device(full: bool) -> DeviceRecord {
        DeviceRecord {
            name: "laptop".into(),
            device_type: DeviceType::Android,
            enabled: !full,
            device_auth: full,
            method: if full {
                AuthMethod::Mac
            } else {
                AuthMethod::Serial
            },
            serial: full.then(|| "ABCDEF0123".into()),
            mac: full.then(|| "a1:b2:c3:d4:e5:f6".into()),
            owner: full.then(|| "alice".into()),
            registered_at: full.then_some(1_764_000_200),
            created: 1_764_000_000,
            updated: u64::MAX,
        }
    }

    fn lease(full: bool) -> LeaseRecord {
        LeaseRecord {
            addr: Ipv4Addr::new(10, 8, 1, 2),
            pool: "main".into(),
            user: "alice".into(),
            device: "laptop".into(),
            nas: "asa".into(),
            session_id: full.then(|| "S1".into()),
            granted: 1_764_000_000,
            expires: 1_764_003_600,
            renewed: full,
        }
    }

    fn round_trip<T: Record + Serialize + PartialEq + std::fmt::Debug>(value: T) -> usize {
        let bytes = encode(&value);
        assert!([COMPACT_V1, COMPACT_V2].contains(&bytes[0]));
        assert_eq!(decode::<T>(b"k", &bytes).unwrap(), value);
        // What schema 1 wrote is read too.
        let json = serde_json::to_vec(&value).unwrap();
        assert_eq!(decode::<T>(b"k", &json).unwrap(), value);
        assert!(
            bytes.len() < json.len(),
            "{} vs {} bytes",
            bytes.len(),
            json.len()
        );
        bytes.len()
    }

    /// Every field, present and absent, survives both forms (a field that its serde
    /// attributes leave out of the output would shift the others here).
    #[test]
    fn records_round_trip_in_both_forms() {
        for full in [false, true] {
            round_trip(user(full));
            round_trip(device(full));
            round_trip(lease(full));
        }
    }

    #[test]
    fn the_compact_form_is_compact() {
        let mut u = user(false);
        u.password_hash = Some(format!(
            "$argon2id$v=19$m=8,t=1,p=1${}${}",
            "s".repeat(22),
            "h".repeat(43)
        ));
        u.devices = vec!["dev12345".into()];
        let mut d = device(false);
        d.serial = Some(format!("{:064X}", 12345));
        d.owner = Some("user12345".into());
        d.updated = d.created;
        // The scale benchmark's records, 197, 265 and 154 bytes as JSON.
        assert!(round_trip(u) <= 130);
        assert!(round_trip(d) <= 104);
        assert!(round_trip(lease(false)) <= 40);
    }

    #[test]
    fn what_is_neither_form_is_corrupt() {
        for bad in [&b""[..], b"\x02abc", b"\x01\xff\xff", b"{\"name\":"] {
            let err = decode::<UserRecord>(b"alice", bad).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { key, .. } if key == "alice"),
                "{err}"
            );
        }
    }

    /// A lease in memory keeps 16-bit name lengths and a 12-bit session id length: a record
    /// past them is corrupt, not a panic.
    #[test]
    fn a_lease_with_names_past_its_lengths_is_corrupt() {
        let long = "x".repeat(65_536);
        let fits = "x".repeat(65_535);
        let id = |n| Some("s".repeat(n));
        for (device, user, session, ok) in [
            (&long, &fits, None, false),
            (&fits, &long, None, false),
            (&fits, &fits, id(MAX_SESSION_ID_LEN + 1), false),
            (&fits, &fits, id(MAX_SESSION_ID_LEN), true),
            (&fits, &fits, None, true),
        ] {
            let l = LeaseRecord {
                device: device.clone(),
                user: user.clone(),
                session_id: session,
                ..lease(true)
            };
            assert_eq!(decode::<LeaseRecord>(b"k", &encode(&l)).is_ok(), ok);
        }
    }

    /// Stores written today must read the same tomorrow: fields and enum variants are found
    /// by position, so reordering either (or inserting a variant before the last) changes
    /// these bytes and needs a new format byte instead.
    #[test]
    fn the_compact_form_is_pinned() {
        let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(encode(&device(true))),
            "01066c6170746f7003000101010a41424344454630313233011161313a62323a63333a64343a65353a66360105616c69636501c88392c906808292c906ffffffffffffffffff01"
        );
        assert_eq!(
            hex(encode(&lease(true))),
            "020a080102046d61696e05616c696365066c6170746f700361736101025331808292c906909e92c90601"
        );
        // Leases as schema 2 stored them, without the mark.
        let v1 =
            "010a080102046d61696e05616c696365066c6170746f700361736101025331808292c906909e92c906";
        let bytes: Vec<u8> = (0..v1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).unwrap())
            .collect();
        let read = decode::<LeaseRecord>(b"k", &bytes).unwrap();
        assert_eq!(
            read,
            LeaseRecord {
                renewed: false,
                ..lease(true)
            }
        );
        assert_eq!(
            hex(encode(&user(false))),
            "0105616c69636500000000808292c906e48292c906"
        );
    }
}
