//! Test databases: a SQLite file in a temporary directory, or a fresh schema on the local
//! PostgreSQL (so runs never collide), dropped when the test finishes.

use std::str::FromStr;
use std::sync::Arc;

use onramp::store::{self, Store};
use sqlx::postgres::PgConnectOptions;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct TestDb {
    pub store: Arc<dyn Store>,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    schema: Option<String>,
}

pub fn postgres_url() -> String {
    std::env::var("ONRAMP_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// True when the run was told to leave PostgreSQL out; otherwise an unreachable server fails.
/// CI (`CI=true`) may not leave it out.
pub fn skip_postgres() -> bool {
    let asked = std::env::var("ONRAMP_TEST_SKIP_POSTGRES").is_ok_and(|v| v == "1");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        !(asked && ci),
        "ONRAMP_TEST_SKIP_POSTGRES=1 under CI=true: CI runs the suite on both databases"
    );
    asked
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("onramp.db").display());
    let store = store::open_sqlite(&url, 8).await.expect("open SQLite");
    TestDb {
        store: Arc::new(store),
        url,
        _dir: Some(dir),
        schema: None,
    }
}

/// A schema of its own on the local PostgreSQL, or None when skipping was asked for.
pub async fn postgres() -> Option<TestDb> {
    if skip_postgres() {
        eprintln!("ONRAMP_TEST_SKIP_POSTGRES=1: PostgreSQL half skipped");
        return None;
    }
    let base = postgres_url();
    let schema = create_schema(&base).await;
    let options = PgConnectOptions::from_str(&base)
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let store = store::open_postgres(options, 8)
        .await
        .expect("open PostgreSQL store");
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    Some(TestDb {
        store: Arc::new(store),
        url,
        _dir: None,
        schema: Some(schema),
    })
}

/// Creates an empty schema; panics with a clear message when PostgreSQL is unreachable.
pub async fn create_schema(base: &str) -> String {
    use sqlx::Connection;
    let schema = format!("onramp_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL at {base} is unreachable ({e}). The storage suite runs on both databases; \
             start it (scripts/setup.sh --test does) or set ONRAMP_TEST_SKIP_POSTGRES=1 deliberately."
        )
    });
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .unwrap();
    schema
}

pub async fn drop_schema(base: &str, schema: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(base).await {
        let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await;
    }
}

impl TestDb {
    pub async fn finish(self) {
        self.store.close().await;
        if let Some(schema) = &self.schema {
            drop_schema(&postgres_url(), schema).await;
        }
    }
}
