//! The AnyConnect client profile (XML) that points the client at the gateway.

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal AnyConnect profile: one ServerList host entry for the gateway.
pub fn anyconnect_profile(display_name: &str, host: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<AnyConnectProfile xmlns="http://schemas.xmlsoap.org/encoding/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://schemas.xmlsoap.org/encoding/ AnyConnectProfile.xsd">
  <ClientInitialization>
    <UseStartBeforeLogon UserControllable="true">false</UseStartBeforeLogon>
    <AutomaticCertSelection UserControllable="true">true</AutomaticCertSelection>
    <ShowPreConnectMessage>false</ShowPreConnectMessage>
    <CertificateStore>All</CertificateStore>
    <ProxySettings>Native</ProxySettings>
    <AllowLocalProxyConnections>true</AllowLocalProxyConnections>
    <AutoReconnect UserControllable="false">true
      <AutoReconnectBehavior UserControllable="false">ReconnectAfterResume</AutoReconnectBehavior>
    </AutoReconnect>
    <AutoUpdate UserControllable="false">true</AutoUpdate>
    <RSASecurIDIntegration UserControllable="false">Automatic</RSASecurIDIntegration>
    <WindowsLogonEnforcement>SingleLocalLogon</WindowsLogonEnforcement>
    <WindowsVPNEstablishment>AllowRemoteUsers</WindowsVPNEstablishment>
  </ClientInitialization>
  <ServerList>
    <HostEntry>
      <HostName>{}</HostName>
      <HostAddress>{}</HostAddress>
    </HostEntry>
  </ServerList>
</AnyConnectProfile>
"#,
        escape(display_name),
        escape(host)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_gateway_and_escapes() {
        let x = anyconnect_profile("R&D <VPN>", "vpn.example.com");
        assert!(x.contains("<HostName>R&amp;D &lt;VPN&gt;</HostName>"));
        assert!(x.contains("<HostAddress>vpn.example.com</HostAddress>"));
        assert!(x.starts_with("<?xml"));
    }
}
