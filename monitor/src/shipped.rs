//! The checks of `policies/`, built into the binary: the operator and `novads dev` evaluate
//! them without a policy directory on disk (`novads policies` and `--policies` read a
//! directory instead). `monitor/tests/policies.rs` checks that every file is listed here.

use std::path::Path;

use crate::policy::PolicySet;

/// Each shipped policy file: its name in `policies/` and its text.
pub const FILES: [(&str, &str); 10] = [
    (
        "accounts.yaml",
        include_str!("../../policies/accounts.yaml"),
    ),
    ("audit.yaml", include_str!("../../policies/audit.yaml")),
    ("auth.yaml", include_str!("../../policies/auth.yaml")),
    ("backup.yaml", include_str!("../../policies/backup.yaml")),
    (
        "governance.yaml",
        include_str!("../../policies/governance.yaml"),
    ),
    ("image.yaml", include_str!("../../policies/image.yaml")),
    ("keys.yaml", include_str!("../../policies/keys.yaml")),
    ("network.yaml", include_str!("../../policies/network.yaml")),
    ("tenancy.yaml", include_str!("../../policies/tenancy.yaml")),
    ("time.yaml", include_str!("../../policies/time.yaml")),
];

/// The shipped checks, loaded as `PolicySet::load_dir("policies")` would load them.
pub fn policies() -> PolicySet {
    let mut set = PolicySet::default();
    for (name, text) in FILES {
        set.add_file(&Path::new("policies").join(name), text);
    }
    set
}
