//! The server side of the console: the domain services server functions call. The server crate
//! implements it and provides it by context, so the console holds no rule of its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use leptos::prelude::*;

use crate::model::InstanceSummary;

pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

pub trait ConsoleBackend: Send + Sync + 'static {
    fn summary(&self) -> BackendFuture<'_, InstanceSummary>;
}

pub type SharedBackend = Arc<dyn ConsoleBackend>;

/// The backend provided to this request, or an error a server function can return.
pub fn backend() -> Result<SharedBackend, ServerFnError> {
    use_context::<SharedBackend>().ok_or_else(|| ServerFnError::new("console backend missing"))
}
