//! `/api/v1/sessions`: the live address leases, and an admin's release of leases whose
//! sessions the gateway will never report ended (ocserv sends no Accounting-On/Off and no
//! Stop for a killed client; a gateway that died sent no Accounting-Off).

use std::net::Ipv4Addr;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{AdminState, ApiError};
use crate::ipam::IpamError;
use crate::store::LeaseRecord;

impl From<IpamError> for ApiError {
    fn from(e: IpamError) -> Self {
        match e {
            e @ IpamError::BeingGranted(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            IpamError::Store(e) => e.into(),
            e => {
                tracing::error!(error = %e, "address pool failure in admin API");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

/// `GET /sessions`: who holds which address, and their accounting session.
pub async fn list(State(s): State<Arc<AdminState>>) -> Json<Vec<LeaseRecord>> {
    Json(s.handler.policy().ipam().sessions())
}

/// `DELETE /sessions/{addr}`: ends the lease of one address, durably, and answers it.
pub async fn release(
    State(s): State<Arc<AdminState>>,
    Path(addr): Path<String>,
) -> Result<Json<LeaseRecord>, ApiError> {
    let addr = parse_addr(&addr)?;
    match s.handler.policy().ipam().release_address(addr).await? {
        Some(lease) => {
            log_release(&lease);
            Ok(Json(lease))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no lease holds {addr}"),
        )),
    }
}

/// The query of `DELETE /sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseQuery {
    /// The NAS client (`[[clients]] name`) whose leases to end.
    nas: Option<String>,
}

/// `DELETE /sessions?nas=NAME`: ends every lease held through that NAS client, durably, and
/// answers them (ordered by address). Without `nas`: 400, so that no request ends every
/// session at once by mistake. A name that is not a configured client is taken (a lease
/// may be held through a client since renamed), but when it holds no lease either it is
/// most likely a typo: 404 instead of an empty list that would read as "done".
pub async fn release_nas(
    State(s): State<Arc<AdminState>>,
    query: Result<Query<ReleaseQuery>, QueryRejection>,
) -> Result<Json<Vec<LeaseRecord>>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let Some(nas) = query.nas.filter(|n| !n.is_empty()) else {
        return Err(ApiError::bad_request(
            "name the NAS client whose leases to release (`?nas=NAME`); \
             all sessions at once are not released",
        ));
    };
    let released = s.handler.policy().ipam().release_nas(&nas).await?;
    if released.is_empty() && !s.handler.live().nas.has_client(&nas) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no NAS client named `{nas}` is configured, and no lease is held through it"),
        ));
    }
    for lease in &released {
        log_release(lease);
    }
    tracing::info!(
        nas = nas.as_str(),
        released = released.len(),
        source = "admin API",
        "leases of a NAS released"
    );
    Ok(Json(released))
}

fn parse_addr(addr: &str) -> Result<Ipv4Addr, ApiError> {
    addr.parse()
        .map_err(|_| ApiError::bad_request(format!("`{addr}` is not an IPv4 address")))
}

/// The audit trail: who was holding what when an admin freed it.
fn log_release(l: &LeaseRecord) {
    tracing::info!(
        addr = %l.addr,
        pool = %l.pool,
        // Quoted, as the request path logs them: a user's name came from a gateway.
        user = l.user.as_str(),
        device = l.device.as_str(),
        nas = %l.nas,
        session = l.session_id.as_deref().unwrap_or("-"),
        source = "admin API",
        "lease released"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv4_addresses_are_taken() {
        assert_eq!(parse_addr("10.0.0.2").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        for bad in [
            "",
            "garbage",
            "10.0.0",
            "10.0.0.256",
            "010.0.0.1",
            "::1",
            "10.0.0.0/24",
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(e.message().contains("not an IPv4 address"), "{bad:?}");
        }
    }

    #[test]
    fn a_lease_being_granted_is_a_conflict_and_store_failures_map_as_elsewhere() {
        let addr = Ipv4Addr::new(10, 0, 0, 2);
        let e = ApiError::from(IpamError::BeingGranted(addr));
        assert_eq!(e.status, StatusCode::CONFLICT);
        assert!(e.message().contains("try again"), "{}", e.message());
        let e = ApiError::from(IpamError::GrantUndone(addr));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        let e = ApiError::from(IpamError::Store(crate::store::StoreError::Sled(
            sled::Error::Unsupported("disk full".into()),
        )));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
