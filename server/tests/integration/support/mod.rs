//! Helpers shared by the integration tests: databases to test against, and a real `onramp` process.
#![allow(dead_code)]

pub mod db;
pub mod instance;
pub mod process;
pub mod webhook;
