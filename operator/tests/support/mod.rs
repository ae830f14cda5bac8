//! The operator's mocked-API test kit, shared by the controllers' and the runtime's tests:
//! a scripted API server ([`script`]), a fake one for the whole runtime ([`fake`]), and the
//! chart's RBAC that every request either of them answers is checked against ([`rbac`]).

// Each test binary uses its own part of the kit.
#![allow(dead_code, unused_imports)]

pub mod fake;
pub mod rbac;
pub mod script;

pub use fake::{FakeApi, eventually, fake_client, free_port};
pub use script::{
    Expect, Handle, api_error, api_server, condition, expect, mocked_client, not_found,
};
