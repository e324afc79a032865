use super::*;
use crate::store::AccessDevice;

fn dev(name: &str, t: DeviceType) -> AccessDevice {
    AccessDevice::new(name, t, None, None).expect("short")
}

fn id(serial: Option<&str>, mac: Option<&str>, platform: &str) -> DeviceIdentity {
    let mut pairs = vec![format!("mdm-tlv=device-platform={platform}")];
    if let Some(s) = serial {
        pairs.push(format!("mdm-tlv=device-uid={s}"));
    }
    if let Some(m) = mac {
        pairs.push(format!("mdm-tlv=device-mac={m}"));
    }
    DeviceIdentity::from_avpairs(pairs.iter().map(String::as_str), "device-uid")
}

#[test]
fn identity_reads_anyconnect_avpairs() {
    let pairs = [
        "mdm-tlv=device-platform=win",
        "mdm-tlv=device-uid=ABCDEF0123",
        "mdm-tlv=device-uid-global=99",
        "mdm-tlv=device-mac=a1-b2-c3-d4-e5-f6",
        "mdm-tlv=ac-user-agent=AnyConnect Windows 4.10.07073",
        "audit-session-id=0a0b0c",
    ];
    let i = DeviceIdentity::from_avpairs(pairs, "device-uid");
    assert_eq!(i.serial.as_deref(), Some("ABCDEF0123"));
    assert_eq!(i.mac.as_deref(), Some("a1:b2:c3:d4:e5:f6"));
    assert_eq!(i.platform, Some(DeviceType::Windows));
    let g = DeviceIdentity::from_avpairs(pairs, "device-uid-global");
    assert_eq!(g.serial.as_deref(), Some("99"));
    // What no record could hold is no device ID (it would reach records, logs and mail);
    // of several, the first valid one counts.
    let long = format!("mdm-tlv=device-uid={}", "A".repeat(MAX_SERIAL + 1));
    for bad in [
        "mdm-tlv=device-uid=EVIL\nuser:     alice",
        "mdm-tlv=device-uid=two words",
        "mdm-tlv=device-uid=caf\u{e9}",
        long.as_str(),
    ] {
        let i = DeviceIdentity::from_avpairs([bad, "mdm-tlv=device-platform=win\nx"], "device-uid");
        assert_eq!((i.serial, i.platform_raw), (None, None), "{bad:?}");
    }
    let i = DeviceIdentity::from_avpairs(
        [
            "mdm-tlv=device-uid=bad serial",
            "mdm-tlv=device-uid=FIRST",
            "mdm-tlv=device-uid=SECOND",
            "mdm-tlv=device-mac=12-34-56-78-90-ab",
            "mdm-tlv=device-mac=aa-aa-aa-aa-aa-aa",
        ],
        "device-uid",
    );
    assert_eq!(i.serial.as_deref(), Some("FIRST"));
    assert_eq!(i.mac.as_deref(), Some("12:34:56:78:90:ab"));
    for (raw, t) in [
        ("mac-intel", Some(DeviceType::Mac)),
        ("mac-arm", Some(DeviceType::Mac)),
        ("apple-ios", Some(DeviceType::Ios)),
        ("android", Some(DeviceType::Android)),
        ("linux-64", None),
    ] {
        assert_eq!(platform(raw), t, "{raw}");
    }
}

#[test]
fn mac_normalization() {
    for ok in [
        "12:34:56:78:90:AB",
        "12-34-56-78-90-ab",
        "1234567890ab",
        "1234.5678.90ab",
    ] {
        assert_eq!(
            normalize_mac(ok).as_deref(),
            Some("12:34:56:78:90:ab"),
            "{ok}"
        );
    }
    for bad in [
        "12:34:56:78:90",
        "12:34:56:78:90:ag",
        "12:34:56:78:90:ab:cd",
        "",
        "1:234:56:78:90:ab:",
        "1:234:56:78:90:ab",
        "12:34-56.78:90-ab",
        "12:34:56-78:90:ab",
        "123.4567.890ab",
        "12.34.56.78.90.ab",
        "1234:5678:90ab",
        "12:34:56:78:90:éb",
        "12.34.56.78.90",
        "..............",
        "12:34:56:78:90-:",
    ] {
        assert_eq!(normalize_mac(bad), None, "{bad}");
    }
}

#[test]
fn first_connect_registers_then_matches() {
    let mut d = dev("laptop", DeviceType::Windows);
    let i = id(Some("SER1"), None, "win");
    assert_eq!(
        check(std::slice::from_ref(&d), &i, true, None),
        DeviceCheck::Register {
            device: "laptop".into(),
            serial: "SER1".into()
        }
    );
    d = d.with_serial("ser1");
    assert_eq!(
        check(std::slice::from_ref(&d), &i, true, Some("laptop")),
        DeviceCheck::Accept { device: 0 }
    );
    let other = id(Some("SER2"), None, "win");
    assert_eq!(
        check(std::slice::from_ref(&d), &other, false, None),
        DeviceCheck::Reject(Reason::DeviceIdMismatch)
    );
    assert_eq!(
        check(std::slice::from_ref(&d), &other, true, None),
        DeviceCheck::RegistrationFailed(Reason::NoFreeDeviceSlot)
    );
}

#[test]
fn rejections_are_specific() {
    let none: [AccessDevice; 0] = [];
    assert_eq!(
        check(&none, &id(Some("S"), None, "win"), true, None),
        DeviceCheck::Reject(Reason::DeviceNotAssigned)
    );
    let mut d = dev("laptop", DeviceType::Windows);
    d = d.with_serial("S");
    d.enabled = false;
    assert_eq!(
        check(
            std::slice::from_ref(&d),
            &id(Some("S"), None, "win"),
            true,
            None
        ),
        DeviceCheck::Reject(Reason::DeviceDisabled)
    );
    d.enabled = true;
    assert_eq!(
        check(
            std::slice::from_ref(&d),
            &id(Some("S"), None, "android"),
            true,
            None
        ),
        DeviceCheck::Reject(Reason::PlatformMismatch)
    );
    assert_eq!(
        check(
            std::slice::from_ref(&d),
            &DeviceIdentity::default(),
            true,
            None
        ),
        DeviceCheck::Reject(Reason::NoDeviceId)
    );
    let free = dev("phone", DeviceType::Ios);
    assert_eq!(
        check(
            std::slice::from_ref(&free),
            &DeviceIdentity::default(),
            true,
            None
        ),
        DeviceCheck::RegistrationFailed(Reason::NoDeviceId)
    );
    // A MAC but no serial, with a slot waiting for one: a failed registration (mailed).
    assert_eq!(
        check(
            std::slice::from_ref(&free),
            &id(None, Some("a1:b2:c3:d4:e5:f6"), "apple-ios"),
            true,
            None
        ),
        DeviceCheck::RegistrationFailed(Reason::DeviceIdMismatch)
    );
    assert_eq!(
        check(
            std::slice::from_ref(&free),
            &id(Some("X"), None, "win"),
            true,
            None
        ),
        DeviceCheck::RegistrationFailed(Reason::PlatformMismatch)
    );
    assert_eq!(
        check(
            std::slice::from_ref(&free),
            &id(Some("X"), None, "apple-ios"),
            true,
            Some("elsewhere")
        ),
        DeviceCheck::RegistrationFailed(Reason::SerialInUse)
    );
}

#[test]
fn mac_method_and_device_auth_off() {
    let mut d = dev("desk", DeviceType::Windows);
    d.method = AuthMethod::Mac;
    d = d.with_mac("a1:b2:c3:d4:e5:f6");
    assert_eq!(
        check(
            std::slice::from_ref(&d),
            &id(None, Some("A1-B2-C3-D4-E5-F6"), "win"),
            true,
            None
        ),
        DeviceCheck::Accept { device: 0 }
    );
    assert_eq!(
        check(
            std::slice::from_ref(&d),
            &id(None, Some("a1-b2-c3-d4-e5-f7"), "win"),
            true,
            None
        ),
        DeviceCheck::Reject(Reason::DeviceIdMismatch)
    );

    let mut open = dev("kiosk", DeviceType::Android);
    open.device_auth = false;
    assert_eq!(
        check(
            std::slice::from_ref(&open),
            &id(None, None, "android"),
            true,
            None
        ),
        DeviceCheck::Accept { device: 0 }
    );
    // No identity at all (e.g. ocserv): any device without device auth.
    assert_eq!(
        check(
            std::slice::from_ref(&open),
            &DeviceIdentity::default(),
            true,
            None
        ),
        DeviceCheck::Accept { device: 0 }
    );
    assert_eq!(
        check(
            std::slice::from_ref(&open),
            &id(None, None, "win"),
            false,
            None
        ),
        DeviceCheck::Reject(Reason::NoDeviceId)
    );
}

#[test]
fn accept_names_the_device_that_matched_among_several() {
    let mut laptop = dev("laptop", DeviceType::Windows);
    laptop = laptop.with_serial("ser1");
    let mut phone = dev("phone", DeviceType::Android);
    phone = phone.with_serial("ser2");
    let mut kiosk = dev("kiosk", DeviceType::Mac);
    kiosk.device_auth = false;
    let devices = [laptop, phone, kiosk];
    // The index `check` answers is into the entry it builds from these, in their order.
    let entry = Access::with_devices("u", None, devices.iter().cloned());
    let of = |c| match c {
        DeviceCheck::Accept { device } => Some(entry.device(device).name()),
        _ => None,
    };
    assert_eq!(
        of(check(
            &devices,
            &id(Some("SER2"), None, "android"),
            true,
            None
        )),
        Some("phone")
    );
    assert_eq!(
        of(check(&devices, &id(Some("SER1"), None, "win"), true, None)),
        Some("laptop")
    );
    // Nothing proven: the device without device authentication, of the presented platform.
    assert_eq!(
        of(check(&devices, &id(None, None, "mac-intel"), true, None)),
        Some("kiosk")
    );
}

/// `assigned` settles every request but a first connection, so the caller reads the serial
/// index (`serial_owner`) only for those.
#[test]
fn only_a_first_connection_is_left_to_the_serial_index() {
    let mut laptop = dev("laptop", DeviceType::Windows);
    laptop = laptop.with_serial("ser1");
    let free = dev("phone", DeviceType::Android);
    let devices = Access::with_devices("u", None, [laptop, free]);
    assert_eq!(
        assigned(&devices, &id(Some("ser1"), None, "win")),
        Some(DeviceCheck::Accept { device: 0 })
    );
    assert_eq!(
        assigned(
            &Access::with_devices("u", None, []),
            &id(Some("ser1"), None, "win")
        ),
        Some(DeviceCheck::Reject(Reason::DeviceNotAssigned))
    );
    let first = id(Some("ser9"), None, "android");
    assert_eq!(assigned(&devices, &first), None);
    assert_eq!(
        first_connection(&devices, &first, true, Some("someone-elses")),
        DeviceCheck::RegistrationFailed(Reason::SerialInUse)
    );
    assert_eq!(
        first_connection(&devices, &first, true, None),
        DeviceCheck::Register {
            device: "phone".into(),
            serial: "ser9".into()
        }
    );
}
