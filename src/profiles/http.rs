//! The public download listener: `GET /profile/<token>` (and `HEAD`, which counts nothing).
//! Links that do not work (404, 410) are rate-limited per source address (429), so tokens
//! cannot be guessed at speed; a working link is always served, since behind a reverse proxy
//! or a shared NAT every user has one address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use parking_lot::Mutex;

use super::Profiles;
use crate::store::DownloadRefusal;

/// Source addresses tracked at most; the table is cleared when it fills up.
const MAX_TRACKED: usize = 65_536;
const WINDOW: Duration = Duration::from_secs(60);

/// Counts requests for links that do not work, per source address within a window.
pub struct InvalidTokenLimit {
    per_window: u32,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl InvalidTokenLimit {
    pub fn new(per_window: u32) -> Self {
        Self {
            per_window,
            seen: Mutex::default(),
        }
    }

    fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.seen
            .lock()
            .get(&ip)
            .is_some_and(|(start, n)| now.duration_since(*start) < WINDOW && *n >= self.per_window)
    }

    fn record_invalid(&self, ip: IpAddr, now: Instant) {
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_TRACKED {
            seen.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if seen.len() >= MAX_TRACKED {
                seen.clear();
            }
        }
        let e = seen.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) >= WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
    }
}

struct PublicState {
    profiles: Arc<Profiles>,
    limit: InvalidTokenLimit,
}

pub fn router(profiles: Arc<Profiles>, invalid_per_minute: u32) -> Router {
    Router::new()
        .route("/profile/{token}", get(download).head(head))
        .with_state(Arc::new(PublicState {
            profiles,
            limit: InvalidTokenLimit::new(invalid_per_minute),
        }))
}

/// `HEAD /profile/<token>`: mail link scanners check links with HEAD, and must not use up a
/// one-download link. It never touches the store, so it answers 200 whatever the token and
/// tells a guesser nothing. (Without this route axum would answer HEAD with `download`.)
async fn head() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/xml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        (),
    )
}

async fn download(
    State(s): State<Arc<PublicState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
) -> Response {
    let ip = peer.ip().to_canonical();
    let now = Instant::now();
    let refusal = match s.profiles.download(&token).await {
        Ok(Ok(d)) => {
            return (
                [
                    (
                        header::CONTENT_TYPE,
                        "application/xml; charset=utf-8".to_owned(),
                    ),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{}\"", d.filename),
                    ),
                    (header::CACHE_CONTROL, "no-store".to_owned()),
                ],
                d.xml,
            )
                .into_response()
        }
        Ok(Err(r)) => r,
        Err(e) => {
            tracing::error!(error = %e, "profile download failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
        }
    };
    // A working link was served above whatever the count. Every other link gets one answer
    // once the address is blocked, so a guesser learns no more than before (not even 404/410).
    if s.limit.blocked(ip, now) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many invalid links; try again later\n",
        )
            .into_response();
    }
    s.limit.record_invalid(ip, now);
    match refusal {
        DownloadRefusal::Gone => (
            StatusCode::GONE,
            "this link has expired or its downloads are used up; ask for a new one\n",
        )
            .into_response(),
        DownloadRefusal::Unknown => (StatusCode::NOT_FOUND, "no such link\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_address_and_window() {
        let l = InvalidTokenLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        l.record_invalid(a, t0);
        assert!(!l.blocked(a, t0));
        l.record_invalid(a, t0);
        assert!(l.blocked(a, t0));
        assert!(!l.blocked(b, t0));
        assert!(!l.blocked(a, t0 + WINDOW));
    }
}
