//! What the request path reads of the directory: a user with the devices assigned to them,
//! decoded once into one compact entry.
//!
//! One entry per user instead of the user's and each device's full record: one lookup per
//! request, and about half the memory (no timestamps, e-mail or owner copies). At 100,000
//! users with a device each the two record caches held 74 MiB. The entry is one allocation:
//! the fixed part, then the user's name and each device's texts (four allocations took 224
//! bytes a user, one 160, 128 once the fixed part fit 56 bytes, and 112 with AnyConnect's
//! device ID as a digest; see docs/PERFORMANCE.md, "Three more cuts", "A user in two cache
//! lines" and "Device IDs as digests").

use std::fmt;
use std::net::Ipv4Addr;
use std::num::{NonZeroU32, NonZeroU8};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use triomphe::ThinArc;

use super::{AuthMethod, DeviceRecord, DeviceType, Store, StoreError, UserRecord};
use crate::sip_key::SipKey;

/// A user as the request path sees them: a shared handle (a clone is a reference count).
#[derive(Clone)]
pub struct Access(ThinArc<Header, u8>);

/// The fixed part of an entry; the bytes after it are the user's name, then each device's
/// name, serial (packed or a digest, see `Serial`) and MAC. 56 bytes, so that with the
/// reference count and the texts' length a typical user (one device, no MAC registered) fits
/// 112 (jemalloc's class below 128; with a MAC, 128): no field holds what the others tell, and
/// each `Option` has a niche to keep its tag in (`entries_stay_compact`).
#[derive(PartialEq, Eq)]
struct Header {
    /// A fingerprint of the user's argon2id hash; `None` for users whose password lives in a
    /// directory. The hash itself (~100 bytes, most of an entry) is read from the user's record
    /// only when argon2 runs; a verified credential is kept tagged without it.
    password: Option<HashFingerprint>,
    /// The password last verified against the hash, for the local directory.
    credential: VerifiedCredential,
    /// The devices assigned to the user (those whose record names them as owner). The user's
    /// name is the texts before theirs.
    devices: Slots,
}

/// An entry's device slots: most users have one, kept inline; the rare user with several
/// has them behind one thin pointer, which leaves the enum the size of one slot.
#[derive(Debug, PartialEq, Eq)]
enum Slots {
    None,
    One(DeviceSlot),
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer: a Vec would double the enum"
    )]
    Many(Box<Vec<DeviceSlot>>),
}

impl Slots {
    fn as_slice(&self) -> &[DeviceSlot] {
        match self {
            Slots::None => &[],
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(slots) => slots,
        }
    }
}

impl From<Vec<DeviceSlot>> for Slots {
    fn from(mut slots: Vec<DeviceSlot>) -> Self {
        match slots.len() {
            0 => Slots::None,
            1 => Slots::One(slots.pop().expect("one")),
            _ => Slots::Many(Box::new(slots)),
        }
    }
}

/// An assigned device's fixed part in its user's entry; its texts are in the entry's bytes,
/// after the user's name and the texts of the devices before it.
#[derive(Debug, PartialEq, Eq)]
struct DeviceSlot {
    address: AddressHint,
    name_len: u16,
    /// Bytes kept: half the characters for a serial packed from hex, 16 for a digest.
    serial_len: u16,
    mac_len: u16,
    serial_form: SerialForm,
    flags: PackedFlags,
}

impl DeviceSlot {
    /// The bytes its texts take in the entry.
    fn texts_len(&self) -> usize {
        usize::from(self.name_len) + usize::from(self.serial_len) + usize::from(self.mac_len)
    }
}

/// What the policy reads of an assigned device besides its texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceFlags {
    pub device_type: DeviceType,
    pub enabled: bool,
    pub device_auth: bool,
    pub method: AuthMethod,
}

/// `DeviceFlags` in one byte, so that a slot holds its hint's address and grant in 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PackedFlags(u8);

impl PackedFlags {
    const ENABLED: u8 = 1 << 2;
    const DEVICE_AUTH: u8 = 1 << 3;
    const BY_MAC: u8 = 1 << 4;

    fn pack(f: DeviceFlags) -> Self {
        let kind = match f.device_type {
            DeviceType::Windows => 0,
            DeviceType::Mac => 1,
            DeviceType::Ios => 2,
            DeviceType::Android => 3,
        };
        let bit = |on: bool, b: u8| if on { b } else { 0 };
        Self(
            kind | bit(f.enabled, Self::ENABLED)
                | bit(f.device_auth, Self::DEVICE_AUTH)
                | match f.method {
                    AuthMethod::Serial => 0,
                    AuthMethod::Mac => Self::BY_MAC,
                },
        )
    }

    fn unpack(self) -> DeviceFlags {
        DeviceFlags {
            device_type: match self.0 & 3 {
                0 => DeviceType::Windows,
                1 => DeviceType::Mac,
                2 => DeviceType::Ios,
                _ => DeviceType::Android,
            },
            enabled: self.0 & Self::ENABLED != 0,
            device_auth: self.0 & Self::DEVICE_AUTH != 0,
            method: if self.0 & Self::BY_MAC != 0 {
                AuthMethod::Mac
            } else {
                AuthMethod::Serial
            },
        }
    }
}

/// The first 128 bits of SHA-256 over a PHC-format hash: which hash an entry was built from,
/// without keeping it. Two hashes of one user sharing it (2^-128) would share cached
/// credentials, never argon2's verdict on a new one. Its first byte is never 0 (a 0 is kept
/// as 1: barely more than 2^-128), so that `None` needs no byte of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashFingerprint {
    first: NonZeroU8,
    rest: [u8; 15],
}

impl HashFingerprint {
    pub fn of(phc: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(phc.as_bytes());
        let mut rest = [0; 15];
        rest.copy_from_slice(&digest[1..16]);
        Self {
            first: NonZeroU8::new(digest[0]).unwrap_or(NonZeroU8::MIN),
            rest,
        }
    }

    pub fn bytes(&self) -> [u8; 16] {
        let mut b = [self.first.get(); 16];
        b[1..].copy_from_slice(&self.rest);
        b
    }

    /// The fingerprint standing for a hash that `name` does not have (a decoy's check, see
    /// `auth::local`): over no PHC string (which starts with `$`), so never a real one's.
    pub fn of_decoy(name: &str) -> Self {
        Self::of(&format!("\0decoy\0{name}"))
    }
}

/// A credential verified for this entry, kept in it so that a request checks it without a
/// lookup in the credential cache (a table as large as the directory). Only the verifier
/// reads the tag and time. The entry is built again after every write to the user or their
/// devices, and this starts empty then: it never outlives the hash it was verified against.
/// Equality ignores it.
#[derive(Default)]
pub struct VerifiedCredential(parking_lot::Mutex<Option<Kept>>);

/// A verifier's tag of a password and when (its own clock) the password was verified.
#[derive(Clone, Copy)]
pub struct Verified {
    pub tag: [u8; 16],
    pub at: u32,
}

/// `Verified` as an entry keeps it: the time plus one, never 0, holds `None`'s tag.
#[derive(Clone, Copy)]
struct Kept {
    tag: [u8; 16],
    after: NonZeroU32,
}

impl VerifiedCredential {
    pub fn get(&self) -> Option<Verified> {
        self.0.lock().map(|k| Verified {
            tag: k.tag,
            at: k.after.get() - 1,
        })
    }

    /// Keeps `verified` (at the clock's last second, 136 years on, it is not kept: the next
    /// request looks in the credential cache instead).
    pub fn set(&self, verified: Verified) {
        let after = verified.at.checked_add(1).and_then(NonZeroU32::new);
        *self.0.lock() = after.map(|after| Kept {
            tag: verified.tag,
            after,
        });
    }
}

impl std::fmt::Debug for VerifiedCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.get().is_some() { "set" } else { "empty" };
        f.debug_tuple("VerifiedCredential").field(&state).finish()
    }
}

impl PartialEq for VerifiedCredential {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for VerifiedCredential {}

/// The address a device last leased and that grant's number (the pools number every grant),
/// kept in its entry so that a renewal finds its lease without a lookup in the pools' device
/// index (a large table at 100,000 devices) and knows it for its own without reading its
/// names. Only a hint: the pool takes the lease at that address if it carries that grant, or
/// names this user and device; 0 = none. It starts empty whenever the entry is built again,
/// and equality ignores it. One word, so that the two are read as they were set. Set only by
/// the pools, for this entry's device (what lets a grant stand for the names).
#[derive(Debug, Default)]
pub struct AddressHint(AtomicU64);

impl AddressHint {
    /// The address and the grant's number.
    pub fn get(&self) -> Option<(Ipv4Addr, u32)> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            v => Some((Ipv4Addr::from(v as u32), (v >> 32) as u32)),
        }
    }

    pub(crate) fn set(&self, addr: Ipv4Addr, grant: u32) {
        let v = u64::from(u32::from(addr)) | u64::from(grant) << 32;
        self.0.store(v, Ordering::Relaxed);
    }
}

impl PartialEq for AddressHint {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for AddressHint {}

/// A device to put in an entry (`Access::with_devices`): its texts and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessDevice {
    name: Box<str>,
    serial: Option<Box<str>>,
    mac: Option<Box<str>>,
    pub device_type: DeviceType,
    pub enabled: bool,
    pub device_auth: bool,
    pub method: AuthMethod,
}

impl AccessDevice {
    /// A device of `device_type` with device authentication on, by serial, enabled; `None`
    /// if its name, serial or MAC is over 64 KiB (the admin API allows 64 and 128 bytes, a
    /// RADIUS attribute 253): such a record cannot be a device of the request path.
    pub fn new(
        name: &str,
        device_type: DeviceType,
        serial: Option<&str>,
        mac: Option<&str>,
    ) -> Option<Self> {
        let fits = |t: &str| u16::try_from(t.len()).is_ok();
        // Neither a serial nor a MAC can be empty: an empty one is an absent one.
        let text = |t: Option<&str>| t.filter(|t| !t.is_empty()).map(Box::from);
        (fits(name) && fits(serial.unwrap_or("")) && fits(mac.unwrap_or(""))).then(|| Self {
            name: name.into(),
            serial: text(serial),
            mac: text(mac),
            device_type,
            enabled: true,
            device_auth: true,
            method: AuthMethod::Serial,
        })
    }

    /// The same device with `serial` registered (tests).
    #[cfg(test)]
    pub fn with_serial(self, serial: &str) -> Self {
        self.with_ids(Some(serial), self.mac.as_deref())
    }

    /// The same device with `mac` (tests).
    #[cfg(test)]
    pub fn with_mac(self, mac: &str) -> Self {
        self.with_ids(self.serial.as_deref(), Some(mac))
    }

    /// The same device, flags kept, with this serial and MAC (through `new`'s checks).
    #[cfg(test)]
    fn with_ids(&self, serial: Option<&str>, mac: Option<&str>) -> Self {
        let mut d = Self::new(&self.name, self.device_type, serial, mac).expect("short");
        (d.enabled, d.device_auth, d.method) = (self.enabled, self.device_auth, self.method);
        d
    }

    fn from_record(d: &DeviceRecord) -> Option<Self> {
        let mut a = Self::new(
            &d.name,
            d.device_type,
            d.serial.as_deref(),
            d.mac.as_deref(),
        )?;
        (a.enabled, a.device_auth, a.method) = (d.enabled, d.device_auth, d.method);
        Some(a)
    }
}

/// An assigned device as the request path sees it: its slot in the entry, the entry's
/// texts and where its own start.
#[derive(Clone, Copy)]
pub struct Device<'a> {
    slot: &'a DeviceSlot,
    texts: &'a [u8],
    at: usize,
    flags: DeviceFlags,
}

impl<'a> Device<'a> {
    /// The view of `slot`, its flags unpacked once (they are read through `Deref`).
    fn new(slot: &'a DeviceSlot, texts: &'a [u8], at: usize) -> Self {
        let flags = slot.flags.unpack();
        Self {
            slot,
            texts,
            at,
            flags,
        }
    }

    /// `len` bytes of the device's texts (its name, serial, then MAC) after the first `skip`.
    fn part(&self, skip: usize, len: u16) -> &'a [u8] {
        let at = self.at + skip;
        &self.texts[at..at + usize::from(len)]
    }

    pub fn name(&self) -> &'a str {
        text(self.part(0, self.slot.name_len))
    }

    pub fn serial(&self) -> Option<Serial<'a>> {
        let bytes = self.part(usize::from(self.slot.name_len), self.slot.serial_len);
        if bytes.is_empty() {
            return None;
        }
        Some(match self.slot.serial_form {
            SerialForm::Text => Serial::Text(text(bytes)),
            SerialForm::Hex => Serial::Hex(bytes),
            SerialForm::Digest => Serial::Digest(bytes),
        })
    }

    /// Canonical `12:34:56:78:90:ab`.
    pub fn mac(&self) -> Option<&'a str> {
        let skip = usize::from(self.slot.name_len) + usize::from(self.slot.serial_len);
        let mac = text(self.part(skip, self.slot.mac_len));
        (!mac.is_empty()).then_some(mac)
    }

    /// The address the device last leased, and its grant (a hint, see `AddressHint`).
    pub fn address(&self) -> &'a AddressHint {
        &self.slot.address
    }
}

impl std::ops::Deref for Device<'_> {
    type Target = DeviceFlags;

    fn deref(&self) -> &DeviceFlags {
        &self.flags
    }
}

impl fmt::Debug for Device<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.name())
            .field("serial", &self.serial())
            .field("mac", &self.mac())
            .field("flags", &self.flags)
            .finish()
    }
}

/// A registered serial as its entry keeps it: an even number of hex digits packed two to a
/// byte, anything else as text; packed past 16 bytes (AnyConnect's device ID is 64 digits, 32
/// bytes packed), a digest of the packed bytes instead (`Serial::digest`): 16 bytes less in
/// the entry of nearly every AnyConnect user, which leaves it 112 bytes instead of 128
/// (docs/PERFORMANCE.md, "Device IDs as digests"). Serials compare trimmed and without regard
/// to ASCII case, which a packed one cannot tell apart anyway.
#[derive(Debug, Clone, Copy)]
pub enum Serial<'a> {
    Text(&'a str),
    Hex(&'a [u8]),
    Digest(&'a [u8]),
}

/// How an entry keeps a device's serial (`Serial`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SerialForm {
    Text,
    Hex,
    Digest,
}

/// Packed serials longer than this are kept as their digest, which is this long.
const DIGEST_LEN: usize = 16;

/// The longest serial packed: one RADIUS attribute's 253 bytes hold no more digits.
const MAX_PACKED: usize = 126;

impl Serial<'_> {
    /// Whether a presented serial is this one: trimmed, ASCII case ignored.
    pub fn matches(self, presented: &str) -> bool {
        let presented = presented.trim();
        let mut buf = [0; MAX_PACKED];
        match self {
            Serial::Text(s) => s.trim().eq_ignore_ascii_case(presented),
            Serial::Hex(packed) => Self::pack(presented, &mut buf) == Some(packed),
            Serial::Digest(digest) => Self::pack(presented, &mut buf)
                .filter(|packed| packed.len() > DIGEST_LEN)
                .is_some_and(|packed| Self::digest(packed) == digest),
        }
    }

    /// `serial` packed into `buf`, when it is an even number of hex digits, at most 252.
    fn pack<'b>(serial: &str, buf: &'b mut [u8; MAX_PACKED]) -> Option<&'b [u8]> {
        let b = serial.as_bytes();
        if b.is_empty() || !b.len().is_multiple_of(2) || b.len() / 2 > MAX_PACKED {
            return None;
        }
        for (pair, out) in b.chunks_exact(2).zip(buf.iter_mut()) {
            *out = hex_byte(pair)?;
        }
        Some(&buf[..b.len() / 2])
    }

    /// A packed serial's digest: its 128-bit SipHash-2-4 under `digest_key`, random per
    /// process (the entries live only in memory). Matching through digests is the comparison
    /// of the packed bytes but for one chance: a device presenting another serial with the
    /// same digest would pass for this one. The key is random, never stored or logged, so
    /// that chance (~2^-128 a device compared) can only be tried online, one guess per
    /// request that has already passed the password check.
    fn digest(packed: &[u8]) -> [u8; DIGEST_LEN] {
        digest_key().hash24(packed).as_bytes()
    }

    /// Appends what an entry keeps of `serial` to `texts`: its length, and in which form.
    fn keep(serial: &str, texts: &mut Vec<u8>) -> (usize, SerialForm) {
        let mut buf = [0; MAX_PACKED];
        let digest;
        let (kept, form) = match Self::pack(serial, &mut buf) {
            Some(packed) if packed.len() > DIGEST_LEN => {
                digest = Self::digest(packed);
                (&digest[..], SerialForm::Digest)
            }
            Some(packed) => (packed, SerialForm::Hex),
            None => (serial.as_bytes(), SerialForm::Text),
        };
        texts.extend_from_slice(kept);
        (kept.len(), form)
    }
}

/// The key of `Serial::digest`, drawn on first use.
fn digest_key() -> &'static SipKey {
    static KEY: OnceLock<SipKey> = OnceLock::new();
    KEY.get_or_init(SipKey::random)
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| char::from(c).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

/// A text of an entry. Its bytes were copied from whole `&str`s (`Access::with_devices`), and
/// every range read as text is one of them as its slot recorded it; a packed serial or its
/// digest, the only bytes that are not text, is never read as text. Not checked again on each
/// read: the user's name is read on every request (checking took 1 % of the CPU at 100,000
/// users).
fn text(bytes: &[u8]) -> &str {
    debug_assert!(std::str::from_utf8(bytes).is_ok());
    // SAFETY: as above, `bytes` is one whole `&str` as `with_devices` copied it.
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

impl Access {
    /// The entry of `user`, given the records of the devices it lists; a listed device whose
    /// record names another owner (or none) is not the user's.
    pub fn new(user: &UserRecord, devices: &[DeviceRecord]) -> Self {
        let devices = devices
            .iter()
            .filter(|d| d.owner.as_deref() == Some(user.name.as_str()))
            .filter_map(|d| {
                let a = AccessDevice::from_record(d);
                if a.is_none() {
                    tracing::warn!(device = %d.name, "device record too large to match: skipped");
                }
                a
            });
        Self::with_devices(&user.name, user.password_hash.as_deref(), devices)
    }

    /// The entry of a user named `name`, with this hash (its fingerprint) and these devices.
    /// A name over 64 KiB (no store allows one) is cut at a character boundary below it.
    pub fn with_devices(
        name: &str,
        password_hash: Option<&str>,
        devices: impl IntoIterator<Item = AccessDevice>,
    ) -> Self {
        let mut cut = name.len().min(usize::from(u16::MAX));
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut texts = name.as_bytes()[..cut].to_vec();
        let devices: Vec<DeviceSlot> = devices
            .into_iter()
            .map(|d| {
                texts.extend_from_slice(d.name.as_bytes());
                let (serial_len, serial_form) =
                    Serial::keep(d.serial.as_deref().unwrap_or(""), &mut texts);
                let mac = d.mac.as_deref().unwrap_or("");
                texts.extend_from_slice(mac.as_bytes());
                // `AccessDevice::new` checked every length (a cut one would shift the texts).
                let len = |n: usize| u16::try_from(n).expect("checked by AccessDevice::new");
                DeviceSlot {
                    name_len: len(d.name.len()),
                    serial_len: len(serial_len),
                    serial_form,
                    mac_len: len(mac.len()),
                    flags: PackedFlags::pack(DeviceFlags {
                        device_type: d.device_type,
                        enabled: d.enabled,
                        device_auth: d.device_auth,
                        method: d.method,
                    }),
                    address: AddressHint::default(),
                }
            })
            .collect();
        let header = Header {
            password: password_hash.map(HashFingerprint::of),
            credential: VerifiedCredential::default(),
            devices: devices.into(),
        };
        Self(ThinArc::from_header_and_slice(header, &texts))
    }

    fn header(&self) -> &Header {
        &self.0.header.header
    }

    /// Asks the CPU for the entry's first 128 bytes (all of a 112- or 128-byte entry: its
    /// header, the user's name and a device's texts; a 112-byte one may span three lines)
    /// without waiting for them.
    fn prefetch(&self) {
        crate::prefetch::bytes(self.0.heap_ptr().cast(), 128);
    }

    /// The slots of the user's devices.
    fn slots(&self) -> &[DeviceSlot] {
        self.header().devices.as_slice()
    }

    /// Where the devices' texts start: after the user's name.
    fn name_len(&self) -> usize {
        let devices: usize = self.slots().iter().map(DeviceSlot::texts_len).sum();
        self.0.slice.len() - devices
    }

    pub fn name(&self) -> &str {
        text(&self.0.slice[..self.name_len()])
    }

    /// Which argon2id hash the user had when the entry was built; `None` for users whose
    /// password lives in a directory.
    pub fn password(&self) -> Option<HashFingerprint> {
        self.header().password
    }

    /// The password last verified against the hash, for the local directory.
    pub fn credential(&self) -> &VerifiedCredential {
        &self.header().credential
    }

    /// The devices assigned to the user, in the order their record lists them. Each start is
    /// the running sum of the slots before it, so the items must be made in order: never make
    /// this iterator double-ended (`device(i)` sums afresh).
    pub fn devices(&self) -> impl ExactSizeIterator<Item = Device<'_>> + Clone {
        let texts = &self.0.slice;
        let mut at = self.name_len();
        self.slots().iter().map(move |slot| {
            let device = Device::new(slot, texts, at);
            at += slot.texts_len();
            device
        })
    }

    /// The user's `i`th device; panics past the last, as indexing does.
    pub fn device(&self, i: usize) -> Device<'_> {
        let slots = self.slots();
        let before: usize = slots[..i].iter().map(DeviceSlot::texts_len).sum();
        Device::new(&slots[i], &self.0.slice, self.name_len() + before)
    }
}

impl PartialEq for Access {
    /// The same user, hash and devices (credential and address hints aside; packed or
    /// digested serials that differ only in ASCII case are equal, as they match the same
    /// requests).
    fn eq(&self, other: &Self) -> bool {
        self.header() == other.header() && self.0.slice == other.0.slice
    }
}

impl Eq for Access {}

impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Access")
            .field("name", &self.name())
            .field("password", &self.password())
            .field("devices", &self.devices().collect::<Vec<_>>())
            .finish()
    }
}

impl Store {
    /// Starts loading the entries of `names` (the first `PREFETCH_KEYS`) into the CPU's cache,
    /// those in the record cache, without waiting for them or comparing names: the listener
    /// calls it for a whole batch of requests before checking the first one's
    /// Message-Authenticator (`Handler::prefetch`), so that the probes overlap and the MD5
    /// rounds hide the wait the lookups would have had (among 100,000 users the entries are
    /// rarely in cache).
    pub fn prefetch_access<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        self.cache.access.for_candidates(names, Access::prefetch);
    }

    /// The user `name` as the store has them now: the cached entry dropped first (a write
    /// drops it only after it commits; a reader that found the record newer than its entry
    /// must not be handed that entry again).
    pub fn access_fresh(&self, name: &str) -> Result<Option<Access>, StoreError> {
        self.written([name]);
        self.access(name)
    }

    /// The user `name` with their devices, decoded once and shared until a write changes the
    /// user or one of their devices.
    pub fn access(&self, name: &str) -> Result<Option<Access>, StoreError> {
        self.cache.access.get_or_load(name, || {
            let Some(user) = self.read::<UserRecord>(&self.users, name)? else {
                return Ok(None);
            };
            let mut devices = Vec::with_capacity(user.devices.len());
            for d in &user.devices {
                devices.extend(self.read::<DeviceRecord>(&self.devices, d)?);
            }
            Ok(Some(Access::new(&user, &devices)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A serial as these tests show it: its text, packed in upper case, a digest as such.
    fn shown(serial: Serial<'_>) -> String {
        match serial {
            Serial::Text(s) => s.into(),
            Serial::Hex(packed) => packed.iter().map(|b| format!("{b:02X}")).collect(),
            Serial::Digest(_) => "(digest)".into(),
        }
    }

    /// The texts of each device of `a` (the serial as it shows).
    fn texts(a: &Access) -> Vec<(&str, Option<String>, Option<&str>)> {
        a.devices()
            .map(|d| (d.name(), d.serial().map(shown), d.mac()))
            .collect()
    }

    #[test]
    fn devices_keep_their_texts_apart_in_one_entry() {
        let d = |name, serial, mac| AccessDevice::new(name, DeviceType::Mac, serial, mac).unwrap();
        let mac = "a1:b2:c3:d4:e5:f6";
        let a = Access::with_devices(
            "alice",
            None,
            [
                d("all", Some("SER1"), Some(mac)),
                d("mac-only", None, Some(mac)),
                d("serial-only", Some("SER1"), None),
                d("neither", None, None),
                d("empty", Some(""), Some("")),
                d("hex", Some("00ff"), Some(mac)),
                d("id", Some(&"0F".repeat(32)), Some(mac)),
            ],
        );
        assert_eq!(a.name(), "alice");
        let s = |t: &str| Some(t.to_string());
        assert_eq!(
            texts(&a),
            [
                ("all", s("SER1"), Some(mac)),
                ("mac-only", None, Some(mac)),
                ("serial-only", s("SER1"), None),
                ("neither", None, None),
                ("empty", None, None),
                ("hex", s("00FF"), Some(mac)),
                ("id", s("(digest)"), Some(mac)),
            ]
        );
        assert_eq!(a.device(5).name(), "hex");
        let long = "x".repeat(70_000);
        assert!(AccessDevice::new(&long, DeviceType::Mac, None, None).is_none());
        assert!(AccessDevice::new("d", DeviceType::Mac, Some(&long), None).is_none());
        assert!(AccessDevice::new("d", DeviceType::Mac, None, Some(&long)).is_none());
    }

    /// A serial of an even number of hex digits is kept packed (past 32 digits, as the
    /// digest of the packed bytes), and matches what the text would have: trimmed, ASCII case
    /// ignored.
    #[test]
    fn a_packed_or_digested_serial_matches_as_its_text_would() {
        let reference = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
        let id = "0123456789ABCDEFabcdef0123456789ABCDEF0123456789ABCDEF0123456789";
        let other = format!("{}8", &id[..63]);
        let not_hex = format!("{}zz", &id[..62]);
        let padded = format!(" {} ", &id[..34]);
        let longest = "AB".repeat(MAX_PACKED);
        let long = "AB".repeat(MAX_PACKED + 1);
        let stored = [
            id,
            &id[..32],
            &id[..34],
            &longest,
            &long,
            "00",
            "ab12",
            "AB12",
            "abc",
            "ab 12",
            " ab12",
            "SER1",
            "0x12",
            "é1",
        ];
        let presented = [
            id,
            &id.to_lowercase(),
            &format!("  {id}\t"),
            &id[..62],
            &format!("{id}00"),
            &other,
            &not_hex,
            &padded,
            &id[..32],
            &id[..33],
            &id[..34],
            &id[..35],
            &id[..34].to_lowercase(),
            &id[..36],
            &longest,
            &longest.to_lowercase(),
            &long,
            &long.to_lowercase(),
            "00",
            "0",
            "000",
            "ab12",
            "Ab12",
            " AB12 ",
            "ab 12",
            "abc",
            "ABC",
            "ser1",
            "0x12",
            "zz12",
            "ab1\u{e9}",
            "é1",
            "",
        ];
        for s in stored {
            let a = Access::with_devices(
                "u",
                None,
                [AccessDevice::new("d", DeviceType::Windows, Some(s), None).unwrap()],
            );
            let serial = a.device(0).serial().unwrap();
            let hex = s.len() % 2 == 0 && s.bytes().all(|b| b.is_ascii_hexdigit());
            let form = match serial {
                Serial::Text(_) => "text",
                Serial::Hex(_) => "packed",
                Serial::Digest(_) => "digest",
            };
            let expected = match (hex, s.len() / 2) {
                (false, _) => "text",
                (true, n) if n > MAX_PACKED => "text",
                (true, n) if n > DIGEST_LEN => "digest",
                (true, _) => "packed",
            };
            assert_eq!(form, expected, "{s:?}");
            for p in presented {
                assert_eq!(serial.matches(p), reference(s, p), "{s:?} against {p:?}");
            }
        }
    }

    #[test]
    fn a_user_keeps_only_a_fingerprint_of_their_hash() {
        let a = Access::with_devices("alice", Some("$argon2id$v=19$x"), []);
        assert_eq!(a.name(), "alice");
        assert_eq!(a.password(), Some(HashFingerprint::of("$argon2id$v=19$x")));
        assert_ne!(a.password(), Some(HashFingerprint::of("$argon2id$v=19$y")));
        let d = Access::with_devices("bob", None, []);
        assert_eq!(
            (d.name(), d.password(), d.devices().len()),
            ("bob", None, 0)
        );
    }

    #[test]
    fn entries_compare_by_what_they_hold() {
        let dev = |serial| AccessDevice::new("d", DeviceType::Windows, Some(serial), None).unwrap();
        let a = Access::with_devices("u", Some("$h"), [dev("AB")]);
        a.device(0).address().set(Ipv4Addr::new(10, 0, 0, 1), 7);
        assert_eq!(a, Access::with_devices("u", Some("$h"), [dev("AB")]));
        assert_ne!(a, Access::with_devices("u", Some("$h"), [dev("AC")]));
        let id = "0123456789ABCDEF".repeat(4);
        let with_id = |serial: &str| {
            let d = AccessDevice::new("d", DeviceType::Windows, Some(serial), None).unwrap();
            Access::with_devices("u", None, [d])
        };
        assert_eq!(
            with_id(&id),
            with_id(&id.to_lowercase()),
            "digests of one ID"
        );
        assert_ne!(with_id(&id), with_id(&id[..62]));
        assert_ne!(a, Access::with_devices("u", Some("$i"), [dev("AB")]));
        assert_ne!(a, Access::with_devices("v", Some("$h"), [dev("AB")]));
        let mut disabled = dev("AB");
        disabled.enabled = false;
        assert_ne!(a, Access::with_devices("u", Some("$h"), [disabled]));
    }

    /// Every combination of a device's flags reads back from its one byte, and a hint
    /// gives back its address and grant, the highest of each too.
    #[test]
    fn packed_flags_and_hints_read_back_as_set() {
        let types = [
            DeviceType::Windows,
            DeviceType::Mac,
            DeviceType::Ios,
            DeviceType::Android,
        ];
        for device_type in types {
            for (enabled, device_auth, by_mac) in
                (0..8).map(|b| (b & 1 != 0, b & 2 != 0, b & 4 != 0))
            {
                let mut d = AccessDevice::new("d", device_type, Some("s"), None).unwrap();
                d.enabled = enabled;
                d.device_auth = device_auth;
                d.method = if by_mac {
                    AuthMethod::Mac
                } else {
                    AuthMethod::Serial
                };
                let a = Access::with_devices("u", None, [d.clone()]);
                let got = *a.device(0);
                let want = DeviceFlags {
                    device_type,
                    enabled,
                    device_auth,
                    method: d.method,
                };
                assert_eq!(got, want);
                assert_eq!(*a.devices().next().unwrap(), want);
            }
        }
        let hint = AddressHint::default();
        assert_eq!(hint.get(), None);
        for (addr, grant) in [
            (Ipv4Addr::new(10, 0, 0, 1), 0),
            (Ipv4Addr::BROADCAST, u32::MAX),
        ] {
            hint.set(addr, grant);
            assert_eq!(hint.get(), Some((addr, grant)));
        }
    }

    /// A credential kept at any second of the verifier's clock reads back as it was set,
    /// the first second too (its `None` is the stored time 0); only the last is not kept.
    #[test]
    fn a_kept_credential_reads_back_as_set() {
        let a = Access::with_devices("u", Some("$h"), []);
        assert!(a.credential().get().is_none(), "a new entry has none");
        for at in [0, 1, 7, u32::MAX - 1] {
            a.credential().set(Verified {
                tag: [at as u8; 16],
                at,
            });
            let v = a.credential().get().expect("kept");
            assert_eq!((v.tag, v.at), ([at as u8; 16], at));
        }
        a.credential().set(Verified {
            tag: [1; 16],
            at: u32::MAX,
        });
        assert!(a.credential().get().is_none());
    }

    /// The fingerprint is SHA-256's first 128 bits, a first byte 0 kept as 1.
    #[test]
    fn a_fingerprint_is_the_hash_prefix_without_a_zero_first_byte() {
        use sha2::Digest as _;
        let digest = |s: &str| sha2::Sha256::digest(s.as_bytes());
        let f = HashFingerprint::of("$argon2id$x");
        assert_eq!(f.bytes()[..], digest("$argon2id$x")[..16]);
        let zero = (0..10_000)
            .map(|i| format!("$h{i}"))
            .find(|s| digest(s)[0] == 0)
            .expect("one in 256 digests starts with 0");
        let f = HashFingerprint::of(&zero);
        assert_eq!(f.bytes()[0], 1);
        assert_eq!(f.bytes()[1..], digest(&zero)[1..16]);
        assert_eq!(std::mem::size_of::<Option<HashFingerprint>>(), 16);
    }

    /// What 100,000 users cost: an entry is read on every request and kept for each user.
    #[test]
    fn entries_stay_compact() {
        // One allocation: the reference count, the fixed part and the slice's length, then
        // the texts. A user of 9 characters with one device of 8 and AnyConnect's 64-digit
        // ID (its digest: 16 bytes) fits jemalloc's 112-byte class (the four allocations
        // before took 224 bytes, then one 160, then 128 with the ID packed to 32 bytes).
        let fixed = 8 + std::mem::size_of::<triomphe::HeaderWithLength<Header>>();
        assert!(fixed + 9 + 8 + DIGEST_LEN <= 112, "{fixed}");
        let id = AccessDevice::new(
            "laptop-1",
            DeviceType::Windows,
            Some(&"AB".repeat(32)),
            None,
        );
        let a = Access::with_devices("user12345", None, [id.unwrap()]);
        assert_eq!(
            a.0.slice.len(),
            9 + 8 + DIGEST_LEN,
            "the ID kept as its digest"
        );
        assert_eq!(std::mem::size_of::<Header>(), 56);
        assert_eq!(
            std::mem::size_of::<Slots>(),
            std::mem::size_of::<DeviceSlot>()
        );
        assert_eq!(std::mem::size_of::<DeviceSlot>(), 16);
        assert_eq!(std::mem::size_of::<Access>(), 8);
    }

    /// The digest is keyed, by a key of this process's own: not SipHash's zero key.
    #[test]
    fn serial_digests_are_keyed() {
        assert_ne!(*digest_key(), SipKey::ZERO);
        let packed = [0xAB; 32];
        assert_ne!(
            Serial::digest(&packed),
            SipKey::ZERO.hash24(&packed).as_bytes()
        );
        assert_eq!(Serial::digest(&packed), Serial::digest(&packed));
    }
}
