//! The decision: request view in, [`Decision`] out. Knows nothing of sockets or sled.

mod reason;

pub use reason::Reason;

use crate::auth::{AuthError, PasswordVerifier, Source};

/// What the policy needs from an Access-Request, already decoded.
#[derive(Debug)]
pub struct AccessRequest<'a> {
    pub user_name: &'a str,
    pub password: &'a [u8],
}

/// The outcome of an Access-Request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accept(ReplyPlan),
    Reject(Reason),
}

/// What an Access-Accept carries beyond the protocol's own attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplyPlan {}

/// Authorization policy over one password source.
pub struct Policy {
    source: Source,
}

impl Policy {
    pub fn new(source: Source) -> Self {
        Self { source }
    }

    pub async fn authorize(&self, req: &AccessRequest<'_>) -> Decision {
        match self.source.verify(req.user_name, req.password).await {
            Ok(()) => Decision::Accept(ReplyPlan::default()),
            Err(e) => Decision::Reject(Reason::from_auth(&e)),
        }
    }
}

impl Reason {
    fn from_auth(e: &AuthError) -> Self {
        match e {
            AuthError::NotSelected => Reason::NoAuthSource,
            AuthError::UnknownUser => Reason::UnknownUser,
            AuthError::BadPassword => Reason::BadPassword,
            AuthError::NoPassword => Reason::NoPassword,
            AuthError::Store(err) => {
                tracing::error!(error = %err, "store failure during password check");
                Reason::InternalError
            }
            AuthError::Internal(err) => {
                tracing::error!(error = %err, "password check failed");
                Reason::InternalError
            }
        }
    }
}
