//! Shared by the criterion benches: the Access-Request a Cisco ASA sends for an AnyConnect
//! (Windows) login, with the attributes it really carries.

use ravpnd::radius::crypto;

pub const SECRET: &[u8] = b"bench-secret-0123456789";
pub const PASSWORD: &[u8] = b"bench-pass";

/// User `i`'s device UID: 64 upper-case hex digits.
pub fn serial_of(i: u32) -> String {
    format!("{i:064X}")
}

fn attr(p: &mut Vec<u8>, typ: u8, value: &[u8]) {
    p.push(typ);
    p.push(2 + value.len() as u8);
    p.extend_from_slice(value);
}

fn vsa(p: &mut Vec<u8>, vendor: u32, typ: u8, value: &[u8]) {
    let mut v = vendor.to_be_bytes().to_vec();
    attr(&mut v, typ, value);
    attr(p, 26, &v);
}

/// A signed AnyConnect Access-Request for `user` presenting device UID `serial`:
/// PAP, NAS-Port-Type = Virtual, ten Cisco-AVPairs (mdm-tlv device data, audit-session-id),
/// ASA tunnel group / client type / session type, Message-Authenticator last.
pub fn anyconnect_request(user: &str, serial: &str, id: u8, authenticator: [u8; 16]) -> Vec<u8> {
    let mut p = vec![1, id, 0, 0];
    p.extend(authenticator);
    attr(&mut p, 1, user.as_bytes());
    attr(
        &mut p,
        2,
        &crypto::encode_pap(PASSWORD, SECRET, &authenticator),
    );
    attr(&mut p, 5, &7u32.to_be_bytes()); // NAS-Port
    attr(&mut p, 30, b"203.0.113.10"); // Called-Station-Id
    attr(&mut p, 31, b"198.51.100.7"); // Calling-Station-Id
    attr(&mut p, 61, &5u32.to_be_bytes()); // NAS-Port-Type = Virtual
    attr(&mut p, 66, b"198.51.100.7"); // Tunnel-Client-Endpoint
    for avpair in [
        "audit-session-id=cb0a0b0c00001000654f1e2a".to_owned(),
        "ip:source-ip=198.51.100.7".to_owned(),
        "mdm-tlv=device-platform=win".to_owned(),
        "mdm-tlv=device-mac=a1-b2-c3-d4-e5-f6".to_owned(),
        "mdm-tlv=device-public-mac=a1-b2-c3-d4-e5-f6".to_owned(),
        "mdm-tlv=ac-user-agent=AnyConnect Windows 4.10.07073".to_owned(),
        "mdm-tlv=device-platform-version=10.0.19045 ".to_owned(),
        "mdm-tlv=device-type=VMware, Inc. VMware Virtual Platform".to_owned(),
        "mdm-tlv=device-uid-global=5F1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D".to_owned(),
        format!("mdm-tlv=device-uid={serial}"),
    ] {
        vsa(&mut p, 9, 1, avpair.as_bytes());
    }
    vsa(&mut p, 3076, 146, b"AnyConnect-TG"); // ASA TunnelGroupName
    vsa(&mut p, 3076, 150, &2u32.to_be_bytes()); // ASA ClientType = AnyConnect-Client-SSL-VPN
    vsa(&mut p, 3076, 151, &1u32.to_be_bytes()); // ASA SessionType = AnyConnect-Client-SSL-VPN
    attr(&mut p, 4, &[192, 0, 2, 10]); // NAS-IP-Address
    p.extend([80, 18]);
    p.extend([0; 16]);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    let ma = p.len() - 16;
    crypto::sign_request(&mut p, ma, SECRET);
    p
}
