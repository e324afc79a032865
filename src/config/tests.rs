use std::io::Write;

use super::*;

fn write(content: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(content.as_bytes()).unwrap();
    f
}

const MINIMAL: &str = r#"
[store]
path = "./data"
[auth]
source = "local"
[[clients]]
name = "gw"
address = "127.0.0.1"
secret = "testing123"
"#;

#[test]
fn defaults_apply_under_a_minimal_file() {
    let f = write(MINIMAL);
    let c = Config::load_valid(f.path()).unwrap();
    assert_eq!(c.radius.auth_addr.to_string(), "0.0.0.0:1812");
    assert_eq!(c.admin.addr.to_string(), "127.0.0.1:9812");
    assert_eq!(c.radius.dedup_window, Duration::from_secs(5));
    assert_eq!(c.clients[0].address.to_string(), "127.0.0.1/32");
    assert!(c.clients[0].require_message_authenticator);
    assert_eq!(c.auth.source, Some(AuthSource::Local));
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let f = write("[radius]\nauth_adr = \"127.0.0.1:1812\"\n");
    let err = Config::load(f.path()).unwrap_err().to_string();
    assert!(err.contains("auth_adr"), "{err}");
}

#[test]
fn bad_values_name_the_key() {
    let f = write("[radius]\nauth_addr = \"not an address\"\n");
    let err = Config::load(f.path()).unwrap_err().to_string();
    assert!(err.contains("radius.auth_addr"), "{err}");
}

#[test]
fn every_problem_is_reported() {
    let f = write(
        r#"
[admin]
token = "short"
[[clients]]
name = "a"
address = "10.0.0.0/8"
secret = "x"
[[clients]]
name = "a"
address = "10.1.2.3/8"
secret = "long enough"
"#,
    );
    let problems = Config::load(f.path()).unwrap().validate();
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "admin.token",
            "clients[0].secret",
            "clients[1].name",
            "clients[1].address"
        ],
        "{problems:?}"
    );
}

#[test]
fn store_sizes_busy_poll_and_queue_delay_are_bounded() {
    for (mib, ok) in [
        (0, false),
        (1, true),
        (16, true),
        (65_536, true),
        (65_537, false),
    ] {
        let f = write(&format!("{MINIMAL}\n").replace(
            "path = \"./data\"",
            &format!("path = \"./data\"\npage_cache_mib = {mib}"),
        ));
        let problems = Config::load(f.path()).unwrap().validate();
        let refused = problems.iter().any(|p| p.key == "store.page_cache_mib");
        assert_eq!(refused, !ok, "page_cache_mib = {mib}: {problems:?}");
    }
    let c = Config::load_valid(write(MINIMAL).path()).unwrap();
    assert_eq!(c.store.page_cache_mib, crate::store::DEFAULT_PAGE_CACHE_MIB);
    assert!(
        c.radius.pin_workers,
        "workers one per CPU are pinned unless asked not to"
    );
    let off = write(&format!("{MINIMAL}\n[radius]\npin_workers = false\n"));
    assert!(!Config::load_valid(off.path()).unwrap().radius.pin_workers);
    assert_eq!(c.radius.busy_poll, Duration::ZERO, "off unless asked for");
    for (poll, ok) in [("100us", true), ("1ms", true), ("2ms", false)] {
        let f = write(&format!("{MINIMAL}\n[radius]\nbusy_poll = \"{poll}\"\n"));
        let problems = Config::load(f.path()).unwrap().validate();
        let refused = problems.iter().any(|p| p.key == "radius.busy_poll");
        assert_eq!(refused, !ok, "busy_poll = {poll}: {problems:?}");
    }
    assert_eq!(c.radius.max_queue_delay, Duration::from_secs(2));
    for (delay, ok) in [("0s", true), ("500ms", true), ("60s", true), ("61s", false)] {
        let f = write(&format!(
            "{MINIMAL}\n[radius]\nmax_queue_delay = \"{delay}\"\n"
        ));
        let problems = Config::load(f.path()).unwrap().validate();
        let refused = problems.iter().any(|p| p.key == "radius.max_queue_delay");
        assert_eq!(refused, !ok, "max_queue_delay = {delay}: {problems:?}");
    }
}

#[test]
fn shipped_configs_are_valid() {
    for name in ["ravpnd.toml", "ravpnd.example.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config")
            .join(name);
        let c = Config::load_valid(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!c.clients.is_empty(), "{name}");
    }
}

#[test]
fn missing_file_is_an_error() {
    let err = Config::load(Path::new("/nonexistent/ravpnd.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
}

/// A secret written as a number (unquoted in TOML; all digits in the environment, which
/// figment reads as a number) is refused without its value: taken as its digits it would
/// have lost any leading zeros, and a shared secret changed so fails every authenticator
/// check with no word of why. Quoted, it is taken as written.
#[test]
fn secrets_written_as_numbers_are_refused_and_quoted_ones_taken() {
    let f = write(&format!("{MINIMAL}\n[admin]\ntoken = 1234567890123456\n"));
    let err = Config::load(f.path()).unwrap_err().to_string();
    assert!(
        err.contains("admin.token") && err.contains("a number"),
        "{err}"
    );
    assert!(!err.contains("1234567890"), "{err}");
    let from_env = |v: &str| -> Result<Config, String> {
        let env: figment::value::Value = v.parse().unwrap();
        Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(MINIMAL))
            .merge(Serialized::default("admin.token", env))
            .extract()
            .map_err(|e| e.to_string())
    };
    let err = from_env("0012345678901234").unwrap_err();
    assert!(!err.contains("12345678"), "{err}");
    let c = from_env("\"0012345678901234\"").unwrap();
    assert_eq!(c.admin.token.unwrap().expose(), "0012345678901234");
}

#[test]
fn a_secret_of_the_wrong_type_is_refused_without_its_value() {
    for value in [
        "98765.4321",
        "98765",
        "true",
        "[\"hunter2hunter2\"]",
        "{ leak = \"hunter2hunter2\" }",
    ] {
        let f = write(&MINIMAL.replace("\"testing123\"", value));
        let err = Config::load(f.path()).unwrap_err().to_string();
        assert!(err.contains("clients"), "{value}: {err}");
        assert!(err.contains("secret"), "{value}: {err}");
        for leak in ["98765", "4321", "true", "hunter2"] {
            assert!(!err.contains(leak), "{value} leaked into: {err}");
        }
        let f = write(&format!(
            "{MINIMAL}\n[smtp]\nusername = \"relay\"\npassword = {value}\n"
        ));
        let err = Config::load(f.path()).unwrap_err().to_string();
        assert!(err.contains("smtp.password"), "{value}: {err}");
        for leak in ["98765", "4321", "true", "hunter2"] {
            assert!(!err.contains(leak), "{value} leaked into: {err}");
        }
    }
}

/// ocserv refreshes a lease by Interim-Update every `radius.interim_interval`; a lease of its
/// pool not longer than that would expire under a live session.
#[test]
fn ocserv_pools_must_outlive_the_interim_interval() {
    let config = |lease: &str, interval: &str, kind: &str| {
        format!(
            "{MINIMAL}kind = \"{kind}\"\n[radius]\ninterim_interval = \"{interval}\"\n\
             [[pools]]\nname = \"vpn\"\nnetwork = \"10.8.0.0/24\"\nlease_time = \"{lease}\"\n"
        )
    };
    for (lease, interval, kind, ok) in [
        ("10m", "10m", "ocserv", false),
        ("5m", "10m", "ocserv", false),
        ("11m", "10m", "ocserv", false),
        ("20m", "10m", "ocserv", true),
        ("1h", "10m", "ocserv", true),
        ("1h", "1h", "ocserv", false),
        ("5m", "10m", "asa", true),
    ] {
        let f = write(&config(lease, interval, kind));
        let problems = Config::load(f.path()).unwrap().validate();
        let p = problems.iter().find(|p| p.key == "pools[0].lease_time");
        assert_eq!(p.is_none(), ok, "{kind} {lease}/{interval}: {problems:?}");
        if let Some(p) = p {
            assert!(p.why.contains("radius.interim_interval"), "{p}");
            assert!(p.why.contains(interval), "{p}");
            assert!(p.why.contains("`gw`"), "{p}");
        }
    }
    // Only the pools ocserv clients take addresses from: here an ASA-only second pool.
    let asa_pool = "[[pools]]\nname = \"asa\"\nnetwork = \"10.9.0.0/24\"\nlease_time = \"5m\"\n";
    let f = write(&format!("{}{asa_pool}", config("1h", "10m", "ocserv")));
    assert!(Config::load(f.path()).unwrap().validate().is_empty());
    let f = write(&format!(
        "{}{asa_pool}",
        config("1h", "10m", "ocserv")
            .replace("kind = \"ocserv\"", "kind = \"ocserv\"\npool = \"asa\"")
    ));
    let keys: Vec<_> = Config::load(f.path())
        .unwrap()
        .validate()
        .into_iter()
        .map(|p| p.key)
        .collect();
    assert_eq!(keys, ["pools[1].lease_time"]);
}

/// A typo in `[log] level` would turn logging off (a bare word is a tracing *target*).
#[test]
fn log_levels_are_checked() {
    for (level, ok) in [
        ("info", true),
        ("warn,ravpnd=debug", true),
        ("info,ravpnd::radius=trace,sled=off", true),
        ("loud", false),
        ("info,ravpnd=loud", false),
        ("", false),
    ] {
        let f = write(&format!("{MINIMAL}\n[log]\nlevel = \"{level}\"\n"));
        let problems = Config::load(f.path()).unwrap().validate();
        let bad = problems.iter().any(|p| p.key == "log.level");
        assert_eq!(bad, !ok, "{level}: {problems:?}");
    }
}

/// Errors name keys as the admin wrote them: no figment profile (`default.`), no source
/// location of the daemon's code.
#[test]
fn parse_errors_name_the_key_as_written() {
    let f = write(&format!("{MINIMAL}\n[dns]\nprimary = \"10.0.0.999\"\n"));
    let err = Config::load(f.path()).unwrap_err().to_string();
    assert!(err.starts_with("dns.primary: "), "{err}");
    assert!(!err.contains("default.") && !err.contains(".rs:"), "{err}");
}

/// A field missing from a table of the file is named as a key of the file, whichever
/// provider touched the table last (here a `_FILE` variable's value in it).
#[test]
fn a_missing_field_is_blamed_on_the_file() {
    let toml = "[auth.active_directory]\nprimary_host = \"dc1\"\nprimary_address = \"192.0.2.1\"\n";
    let e = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(toml))
        .merge(Serialized::default(
            "auth.active_directory.admin_password",
            "from-a-file",
        ))
        .extract::<Config>()
        .unwrap_err();
    let text = describe(&e);
    assert!(
        text.contains("auth.active_directory: missing field `domain`"),
        "{text}"
    );
    assert!(
        !text.contains("_FILE") && !text.contains("RAVPND_"),
        "{text}"
    );
}

/// A DC's call timeout must end before the request gives up on the directory, or a silent
/// DC is never found out (every request waits for it until the deadline).
#[test]
fn a_dc_timeout_must_fit_the_request() {
    let config = |timeout: &str, request: &str| {
        format!(
            "{MINIMAL}[radius]\nrequest_timeout = \"{request}\"\n\
             [auth.active_directory]\nprimary_host = \"dc1.corp.example.com\"\n\
             primary_address = \"127.0.0.53\"\ndomain = \"corp.example.com\"\n\
             admin_password = \"x\"\ntimeout = \"{timeout}\"\n"
        )
    };
    for (timeout, request, ok) in [
        ("5s", "10s", true),
        ("9s", "10s", false),
        ("8s", "10s", true),
        ("2s", "2s", false),
        ("1s", "2s", true),
    ] {
        let f = write(&config(timeout, request));
        let problems = Config::load(f.path()).unwrap().validate();
        let p = problems
            .iter()
            .find(|p| p.key == "auth.active_directory.timeout");
        assert_eq!(p.is_none(), ok, "{timeout}/{request}: {problems:?}");
    }
}
