//! Notifications not mailed yet, kept across restarts: the mail task removes them once the
//! relay took them (or it gave up on them), and a start queues what is left.

use super::{Store, StoreError};

impl Store {
    /// Keeps a notification (opaque bytes: the mailer's encoding) until `outbox_remove`;
    /// returns its id. Not flushed: sled writes it out within its flush interval.
    pub fn outbox_add(&self, bytes: &[u8]) -> Result<u64, StoreError> {
        let id = self.db.generate_id()?;
        self.outbox.insert(id.to_be_bytes(), bytes)?;
        Ok(id)
    }

    pub fn outbox_remove(&self, ids: impl IntoIterator<Item = u64>) -> Result<(), StoreError> {
        for id in ids {
            self.outbox.remove(id.to_be_bytes())?;
        }
        Ok(())
    }

    /// Every kept notification, oldest first.
    pub fn outbox(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.outbox
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let id = <[u8; 8]>::try_from(k.as_ref())
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Invalid("outbox key is not an id".into()))?;
                Ok((id, v.to_vec()))
            })
            .collect()
    }
}
