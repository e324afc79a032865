//! The Entra ID source against a local stand-in for Microsoft's token and Graph endpoints,
//! answering as Microsoft documents them (ROPC grant, AADSTS errors, Graph paging).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::support::daemon::{default_config, http_get};
use crate::support::radclient;
use crate::support::tcp_proxy::TcpProxy;
use crate::support::TestDaemon;

const TENANT: &str = "contoso.test";

fn decode(s: &str) -> String {
    let bytes = s.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let h = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(h, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn aadsts(code: u64, what: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "error": "invalid_grant",
            "error_description": format!("AADSTS{code}: {what}. Trace ID: 0000"),
            "error_codes": [code],
        })),
    )
        .into_response()
}

/// Password checks of `wait-` passwords in the stand-in now, and the most at once.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
static MOST_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

async fn token(Path(tenant): Path<String>, body: String) -> Response {
    assert_eq!(tenant, TENANT);
    let form: std::collections::HashMap<String, String> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    if form.get("client_id").map(String::as_str) != Some("app-id-1")
        || form.get("client_secret").map(String::as_str) != Some("app-secret-1")
        || form.get("grant_type").map(String::as_str) != Some("password")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client", "error_codes": [7000215]})),
        )
            .into_response();
    }
    let user = form.get("username").cloned().unwrap_or_default();
    let pw = form.get("password").cloned().unwrap_or_default();
    if pw.starts_with("wait-") {
        // A check that takes a while, counted while it runs.
        let now = IN_FLIGHT.fetch_add(1, Ordering::SeqCst) + 1;
        MOST_IN_FLIGHT.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(250)).await;
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        return aadsts(50126, "Error validating credentials");
    }
    let local = user.split('@').next().unwrap_or_default().to_owned();
    match local.as_str() {
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return aadsts(50126, "too late");
        }
        "disabled" => return aadsts(50057, "The user account is disabled"),
        "locked" => return aadsts(50053, "Account is locked"),
        "expired" => return aadsts(50055, "The password is expired"),
        "mfa" => {
            return aadsts(
                50076,
                "Due to a configuration change ... you must use multi-factor authentication",
            )
        }
        "ghost" => return aadsts(50034, "The user account does not exist"),
        _ => {}
    }
    if pw != "Good-pass1" {
        return aadsts(
            50126,
            "Error validating credentials due to invalid username or password",
        );
    }
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": format!("token-for-{local}")})).into_response()
}

async fn users(
    headers: HeaderMap,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer token-for-admin")
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let all = [
        "good", "disabled", "locked", "expired", "mfa", "slow", "carol",
    ];
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let chunk: Vec<_> = all
        .iter()
        .skip(page * 3)
        .take(3)
        .map(|u| json!({"userPrincipalName": format!("{u}@{TENANT}"), "displayName": format!("User {u}"), "accountEnabled": *u != "disabled"}))
        .collect();
    let mut body = json!({"@odata.context": "https://graph/$metadata#users", "value": chunk});
    if (page + 1) * 3 < all.len() {
        body["@odata.nextLink"] = json!(format!("http://{host}/v1.0/users?page={}", page + 1));
    }
    Json(body).into_response()
}

/// The tenant's OpenID discovery document (what the health check fetches), abridged.
async fn discovery(Path(tenant): Path<String>) -> Response {
    if tenant != TENANT {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_tenant"})),
        )
            .into_response();
    }
    Json(json!({
        "token_endpoint": format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"),
        "issuer": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
    }))
    .into_response()
}

/// Starts the stand-in on a thread with its own runtime; it lives as long as the test binary.
fn entra() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/{tenant}/oauth2/v2.0/token", post(token))
                .route(
                    "/{tenant}/v2.0/.well-known/openid-configuration",
                    get(discovery),
                )
                .route("/v1.0/users", get(users));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn config(addr: SocketAddr) -> String {
    default_config(true).replace("[auth]\nsource = \"local\"\n", "")
        + &format!(
            "[auth]\nsource = \"azure_ad\"\n[auth.azure_ad]\napplication_id = \"app-id-1\"\napplication_secret = \"app-secret-1\"\n\
             domain = \"{TENANT}\"\nadmin_user = \"admin\"\nadmin_password = \"Good-pass1\"\n\
             authority = \"http://{addr}\"\ngraph_url = \"http://{addr}\"\ntimeout = \"1s\"\n"
        )
}

#[test]
fn ropc_verdicts_map_to_reasons_and_graph_listing_pages() {
    let addr = entra();
    let d = TestDaemon::with_config(&config(addr));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&d.ok(&["user", "candidates", "--json"])).unwrap();
    assert_eq!(listed.len(), 7, "three pages of Graph users: {listed:?}");
    let e = d.fails(&["user", "add", "nobody"]);
    assert!(e.contains("not a user of the directory"), "{e}");
    for u in ["good", "disabled", "locked", "expired", "mfa", "slow"] {
        d.ok(&["user", "add", u]);
        let dev = format!("{u}-dev");
        d.ok(&[
            "device",
            "add",
            &dev,
            "--type",
            "windows",
            "--no-device-auth",
        ]);
        d.ok(&["assign", u, &dev]);
    }
    let why = |u: &str, pw: &str| {
        radclient::auth(d.auth_addr, u, pw)
            .attr("Reply-Message")
            .unwrap_or_default()
    };
    assert_eq!(why("good", "Good-pass1"), "accepted");
    assert_eq!(why("good@contoso.test", "Good-pass1"), "accepted");
    assert_eq!(why("good", "bad-pass"), "bad password");
    assert_eq!(why("disabled", "Good-pass1"), "account disabled");
    assert_eq!(why("locked", "Good-pass1"), "account locked out");
    assert_eq!(why("expired", "Good-pass1"), "password expired");
    assert_eq!(
        why("mfa", "Good-pass1"),
        "multi-factor authentication required"
    );
    // A slow answer: no hang past the timeout.
    assert_eq!(why("slow", "Good-pass1"), "directory unavailable");
    d.ok(&["user", "add", "--all"]);
    assert!(d.ok(&["user", "list"]).contains("carol"));
    // A directory user's password is the directory's: none is stored here.
    let out = d.cli(
        &["user", "passwd", "carol", "--password-stdin"],
        Some("Local-pass1"),
    );
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("passwords of directory users live in the directory"),
        "{e}"
    );
}

/// Polls `/readyz` until its status line has `status`; returns the body.
fn readyz_becomes(d: &TestDaemon, status: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = http_get(d.admin_addr, "/readyz");
        if r.contains(&format!(" {status} ")) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never answered {status}: {r}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readyz_follows_whether_entra_id_answers() {
    let entra = entra();
    // The daemon reaches the stand-in through a proxy that the test can take away.
    let front: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = TcpProxy::start(front, entra);
    let d = TestDaemon::with_config(&config(front).replace(
        "timeout = \"1s\"\n",
        "timeout = \"1s\"\nhealth_check_interval = \"100ms\"\n",
    ));
    readyz_becomes(&d, "200");
    d.ok(&["user", "add", "good"]);
    d.ok(&[
        "device",
        "add",
        "good-dev",
        "--type",
        "windows",
        "--no-device-auth",
    ]);
    d.ok(&["assign", "good", "good-dev"]);

    drop(proxy);
    let body = readyz_becomes(&d, "503");
    assert!(
        body.contains(&format!(
            "Entra ID (http://{front}/{TENANT}/v2.0/.well-known/openid-configuration) unreachable"
        )),
        "{body}"
    );
    let r = radclient::auth(d.auth_addr, "good", "Good-pass1");
    assert_eq!(
        r.attr("Reply-Message").as_deref(),
        Some("directory unavailable")
    );

    let _proxy = TcpProxy::start(front, entra);
    readyz_becomes(&d, "200");
    let r = radclient::auth(d.auth_addr, "good", "Good-pass1");
    assert_eq!(
        r.attr("Reply-Message").as_deref(),
        Some("accepted"),
        "{}",
        d.log()
    );
}

/// `max_in_flight` bounds the checks sent to Entra ID at once; the others wait their turn
/// (up to `timeout`) and are answered.
#[test]
fn entra_checks_at_once_are_bounded() {
    let addr = entra();
    let d = TestDaemon::with_config(&config(addr).replace(
        "timeout = \"1s\"\n",
        "timeout = \"2s\"\nmax_in_flight = 2\n",
    ));
    d.ok(&["user", "add", "good"]);
    let auth = d.auth_addr;
    let replies: Vec<_> = (0..6)
        .map(|i| std::thread::spawn(move || radclient::auth(auth, "good", &format!("wait-{i}"))))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap().attr("Reply-Message"))
        .collect();
    for r in &replies {
        assert_eq!(r.as_deref(), Some("bad password"), "{}", d.log());
    }
    assert_eq!(MOST_IN_FLIGHT.load(Ordering::SeqCst), 2);
}
