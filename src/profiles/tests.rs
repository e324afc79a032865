use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::*;
use crate::store::UserRecord;

#[derive(Default)]
struct FakeClock(AtomicU64);

impl Clock for FakeClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct FakeMailer {
    sent: Mutex<Vec<(String, String, String)>>,
    fail: std::sync::atomic::AtomicBool,
}

impl LinkMailer for FakeMailer {
    fn send<'a>(&'a self, to: &'a str, subject: &'a str, body: String) -> MailFuture<'a> {
        Box::pin(async move {
            if self.fail.load(Ordering::SeqCst) {
                return Err("relay down".into());
            }
            self.sent.lock().push((to.into(), subject.into(), body));
            Ok(())
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    clock: Arc<FakeClock>,
    mailer: Arc<FakeMailer>,
    profiles: Profiles,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut alice = UserRecord::new("alice", None);
    alice.email = Some("alice@example.com".into());
    store.insert_user(&alice).await.unwrap();
    store
        .insert_device(&DeviceRecord::windows("laptop"))
        .await
        .unwrap();
    store.assign("alice", "laptop", 2).await.unwrap();
    let clock = Arc::new(FakeClock(AtomicU64::new(1_000_000)));
    let mailer = Arc::new(FakeMailer::default());
    let config = ProfilesConfig {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        base_url: "https://vpn.example.com/dl/".into(),
        gateway_host: "vpn.example.com".into(),
        gateway_name: Some("Example VPN".into()),
        ..Default::default()
    };
    let profiles = Profiles::new(store.clone(), config, clock.clone(), mailer.clone());
    Fixture {
        _dir: dir,
        store,
        clock,
        mailer,
        profiles,
    }
}

fn token_of(body: &str) -> String {
    let at = body.find("/profile/").unwrap() + "/profile/".len();
    body[at..at + 64].to_owned()
}

fn req(days: u32, downloads: Option<u32>) -> SendRequest {
    SendRequest {
        email: None,
        subject: None,
        valid_days: days,
        downloads,
    }
}

fn status(f: &Fixture) -> Status {
    f.profiles.list().unwrap()[0].status
}

#[tokio::test]
async fn status_walks_through_every_state() {
    let f = fixture().await;
    assert_eq!(status(&f), Status::SendMail);

    f.profiles
        .send("alice", "laptop", &req(1, Some(1)))
        .await
        .unwrap();
    assert_eq!(status(&f), Status::WaitingForDownload);
    let (to, subject, body) = f.mailer.sent.lock()[0].clone();
    assert_eq!(
        (to.as_str(), subject.as_str()),
        ("alice@example.com", "Your VPN profile")
    );
    assert!(
        body.contains("https://vpn.example.com/dl/profile/"),
        "{body}"
    );
    let first = token_of(&body);

    // A day later the unused link has expired.
    f.clock.0.fetch_add(86_400, Ordering::SeqCst);
    assert_eq!(status(&f), Status::UrlExpired);
    assert_eq!(
        f.profiles.download(&first).await.unwrap(),
        Err(DownloadRefusal::Gone)
    );

    // Sent again: a new link, the old one is dead.
    f.profiles
        .send("alice", "laptop", &req(3, Some(2)))
        .await
        .unwrap();
    assert_eq!(status(&f), Status::WaitingForDownload);
    let second = token_of(&f.mailer.sent.lock()[1].2);
    assert_ne!(first, second);
    assert_eq!(
        f.profiles.download(&first).await.unwrap(),
        Err(DownloadRefusal::Unknown)
    );

    let d = f.profiles.download(&second).await.unwrap().unwrap();
    assert!(d.xml.contains("<HostAddress>vpn.example.com</HostAddress>"));
    assert_eq!(d.filename, "Example_VPN.xml");
    assert_eq!(status(&f), Status::WaitingForRegistration);

    f.store
        .register_serial("laptop", "SERIAL-1", "alice")
        .await
        .unwrap();
    assert_eq!(status(&f), Status::Ready);
    // Downloads counted: 2 allowed, one left, then gone.
    assert!(f.profiles.download(&second).await.unwrap().is_ok());
    assert_eq!(
        f.profiles.download(&second).await.unwrap(),
        Err(DownloadRefusal::Gone)
    );
    let v = &f.profiles.list().unwrap()[0];
    assert_eq!((v.downloads_used, v.downloads_allowed), (2, Some(2)));
}

#[tokio::test]
async fn expiry_is_exact_and_unlimited_downloads_stay_until_then() {
    let f = fixture().await;
    f.profiles
        .send("alice", "laptop", &req(2, None))
        .await
        .unwrap();
    let token = token_of(&f.mailer.sent.lock()[0].2);
    for _ in 0..7 {
        assert!(f.profiles.download(&token).await.unwrap().is_ok());
    }
    f.clock.0.fetch_add(2 * 86_400 - 1, Ordering::SeqCst);
    assert!(f.profiles.download(&token).await.unwrap().is_ok());
    f.clock.0.fetch_add(1, Ordering::SeqCst);
    assert_eq!(
        f.profiles.download(&token).await.unwrap(),
        Err(DownloadRefusal::Gone)
    );
    // Downloaded before expiry: the status is not "URL expired".
    assert_eq!(status(&f), Status::WaitingForRegistration);
}

#[tokio::test]
async fn bad_requests_and_a_failed_mail_change_nothing() {
    let f = fixture().await;
    for (days, downloads) in [(0, Some(1)), (31, Some(1)), (7, Some(0)), (7, Some(6))] {
        let e = f
            .profiles
            .send("alice", "laptop", &req(days, downloads))
            .await
            .unwrap_err();
        assert!(matches!(e, ProfileError::Invalid(_)), "{e}");
    }
    assert!(matches!(
        f.profiles.send("bob", "laptop", &req(7, None)).await,
        Err(ProfileError::NotFound(_))
    ));
    assert!(matches!(
        f.profiles.send("alice", "nosuch", &req(7, None)).await,
        Err(ProfileError::NotFound(_))
    ));
    f.store
        .insert_user(&UserRecord::new("carol", None))
        .await
        .unwrap();
    let e = f
        .profiles
        .send("carol", "laptop", &req(7, None))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "device `laptop` is not assigned to `carol`");
    let bad_addr = SendRequest {
        email: Some("not an address".into()),
        ..req(7, None)
    };
    assert!(matches!(
        f.profiles.send("alice", "laptop", &bad_addr).await,
        Err(ProfileError::Invalid(_))
    ));
    f.profiles
        .send("alice", "laptop", &req(7, None))
        .await
        .unwrap();
    let token = token_of(&f.mailer.sent.lock()[0].2);
    f.mailer.fail.store(true, Ordering::SeqCst);
    assert!(matches!(
        f.profiles.send("alice", "laptop", &req(7, None)).await,
        Err(ProfileError::Mail(_))
    ));
    assert!(
        f.profiles.download(&token).await.unwrap().is_ok(),
        "old link still works"
    );
    assert_eq!(
        f.profiles.download(&"0".repeat(64)).await.unwrap(),
        Err(DownloadRefusal::Unknown)
    );
    assert_eq!(
        f.profiles.download("short").await.unwrap(),
        Err(DownloadRefusal::Unknown)
    );
    // Unassigned: the link dies, with the profile — an assignment again starts afresh.
    f.store.unassign("alice", "laptop").await.unwrap();
    assert_eq!(
        f.profiles.download(&token).await.unwrap(),
        Err(DownloadRefusal::Unknown)
    );
    assert!(f.profiles.list().unwrap().is_empty());
    f.store.assign("alice", "laptop", 2).await.unwrap();
    assert_eq!(
        f.profiles.download(&token).await.unwrap(),
        Err(DownloadRefusal::Unknown),
        "the old link stays dead"
    );
    assert_eq!(status(&f), Status::SendMail);
    // The same for a user removed and added again under the same name.
    f.mailer.fail.store(false, Ordering::SeqCst);
    f.profiles
        .send("alice", "laptop", &req(7, None))
        .await
        .unwrap();
    let token = token_of(&f.mailer.sent.lock().last().unwrap().2);
    assert!(f.profiles.download(&token).await.unwrap().is_ok());
    f.store.remove_user("alice").await.unwrap();
    f.store
        .insert_user(&UserRecord::new("alice", None))
        .await
        .unwrap();
    f.store.assign("alice", "laptop", 2).await.unwrap();
    assert_eq!(
        f.profiles.download(&token).await.unwrap(),
        Err(DownloadRefusal::Unknown)
    );
    assert_eq!(status(&f), Status::SendMail);
}

/// The status of `GET <base><token>`.
async fn get(client: &reqwest::Client, base: &str, token: &str) -> u16 {
    let r = client.get(format!("{base}{token}")).send().await.unwrap();
    r.status().as_u16()
}

/// Behind a reverse proxy every user shares the guesser's address: a working link is served
/// to a blocked address, and a blocked address learns nothing about the links that do not work.
#[tokio::test]
async fn a_working_link_is_served_to_an_address_blocked_for_guessing() {
    let f = fixture().await;
    f.profiles
        .send("alice", "laptop", &req(7, Some(1)))
        .await
        .unwrap();
    let valid = token_of(&f.mailer.sent.lock()[0].2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/profile/", listener.local_addr().unwrap());
    let app =
        http::router(Arc::new(f.profiles), 2).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    assert_eq!(get(&client, &base, &"0".repeat(64)).await, 404);
    assert_eq!(get(&client, &base, &"1".repeat(64)).await, 404);
    assert_eq!(get(&client, &base, &valid).await, 200);
    assert_eq!(get(&client, &base, &"2".repeat(64)).await, 429);
    // Used up now: 410 to anyone else, but the same 429 as an unknown token here.
    assert_eq!(get(&client, &base, &valid).await, 429);
}

/// Without `[profiles] listen` nothing serves the links: none is mailed.
#[tokio::test]
async fn no_link_is_sent_without_a_download_listener() {
    let f = fixture().await;
    let profiles = Profiles::new(
        f.store.clone(),
        ProfilesConfig::default(),
        f.clock.clone(),
        f.mailer.clone(),
    );
    let e = profiles
        .send("alice", "laptop", &req(7, Some(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, ProfileError::Store(StoreError::Conflict(m)) if m.contains("download listener is not configured")),
        "{e}"
    );
    assert!(f.mailer.sent.lock().is_empty());
    assert_eq!(status(&f), Status::SendMail);
}
