//! Missing servers are skipped, or fail when NOVADS_REQUIRE_SERVICES=1.
//!
//! This file holds a single test because it changes the process
//! environment.

use novads_testkit::{PG_BINDIR_ENV, Postgres, REQUIRE_SERVICES_ENV, services_required};

#[tokio::test]
async fn missing_binaries_skip_or_panic() {
    // SAFETY: this test binary has a single test and the runtime is
    // current-thread, so no other thread reads the environment meanwhile.
    unsafe {
        std::env::set_var(PG_BINDIR_ENV, "/nonexistent/novads-testkit");
        std::env::remove_var(REQUIRE_SERVICES_ENV);
    }
    assert!(!services_required());
    assert!(Postgres::start().await.is_none());

    // SAFETY: as above.
    unsafe { std::env::set_var(REQUIRE_SERVICES_ENV, "1") };
    assert!(services_required());
    let err = tokio::spawn(async { Postgres::start().await.is_some() })
        .await
        .expect_err("start panics when services are required");
    let message = err.into_panic();
    let message = message
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(message.contains("apt-get install postgresql"), "{message}");
    assert!(message.contains(REQUIRE_SERVICES_ENV), "{message}");
}
