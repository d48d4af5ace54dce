//! The console's sessions in Onramp's database (any instance serves any user), as tower-sessions
//! asks for them. Rows are keyed by the SHA-256 of the session ID, so a copy of the database holds
//! no usable cookie.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::Store;
use crate::model::StoredSession;

/// Sessions in Onramp's store.
#[derive(Clone)]
pub struct StoreSessions(pub Arc<dyn Store>);

impl std::fmt::Debug for StoreSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSessions")
    }
}

fn row_key(id: &Id) -> String {
    hex::encode(Sha256::digest(id.to_string().as_bytes()))
}

fn backend_error(e: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(e.to_string())
}

#[async_trait]
impl SessionStore for StoreSessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // 128 random bits rarely collide; when they do, draw again rather than take over a session.
        while self
            .0
            .load_session(&row_key(&record.id))
            .await
            .map_err(backend_error)?
            .is_some()
        {
            record.id = Id::default();
        }
        self.save(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let data = serde_json::to_vec(&record.data)
            .map_err(|e| session_store::Error::Encode(e.to_string()))?;
        let expires = DateTime::<Utc>::from_timestamp(record.expiry_date.unix_timestamp(), 0)
            .unwrap_or_else(Utc::now);
        let session = StoredSession {
            id: row_key(&record.id),
            data,
            expires,
        };
        self.0.save_session(&session).await.map_err(backend_error)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(stored) = self
            .0
            .load_session(&row_key(id))
            .await
            .map_err(backend_error)?
        else {
            return Ok(None);
        };
        if stored.expires < Utc::now() {
            return Ok(None);
        }
        let data = serde_json::from_slice(&stored.data)
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp(stored.expires.timestamp())
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record {
            id: *id,
            data,
            expiry_date,
        }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0
            .delete_session(&row_key(id))
            .await
            .map_err(backend_error)
    }
}
