//! The wire: listeners and protocol front ends. Each decodes its protocol, calls the domain, and
//! encodes the answer; none holds a business rule.

pub mod admin_api;
pub mod amqp;
pub mod console;
pub mod credentials_api;
pub mod device_api;
pub mod http_util;
pub mod https;
pub mod hub_api;
pub mod listener;
pub mod load_shedding;
pub mod metrics_http;
pub mod mqtt;
pub mod openapi;
pub mod service_api;
pub mod websocket;
