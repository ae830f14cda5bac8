//! The checked-in CRD YAML (crds/*.yaml and charts/novads/crds/*.yaml) must equal what the
//! Rust types generate. Regenerate with:
//!
//!     NOVADS_BLESS=1 cargo test -p novads-crds --test generated_yaml

use std::path::{Path, PathBuf};

fn checked_in_dirs() -> [PathBuf; 2] {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        crate_dir.to_path_buf(),
        crate_dir.join("../charts/novads/crds"),
    ]
}

#[test]
fn checked_in_crd_yaml_equals_generated() {
    let bless = std::env::var_os("NOVADS_BLESS").is_some_and(|value| value == "1");
    let mut stale = Vec::new();
    for dir in checked_in_dirs() {
        for crd in novads_crds::crds() {
            let path = dir.join(novads_crds::crd_file_name(&crd));
            let generated = novads_crds::crd_yaml(&crd);
            if bless {
                std::fs::create_dir_all(&dir).expect("create CRD directory");
                std::fs::write(&path, &generated).expect("write CRD YAML");
                continue;
            }
            let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
            if checked_in != generated {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "checked-in CRD YAML differs from the Rust types: {stale:?}\n\
         regenerate with: NOVADS_BLESS=1 cargo test -p novads-crds --test generated_yaml"
    );
}

#[test]
fn crds_yaml_is_every_crd_in_stable_order() {
    let yaml = novads_crds::crds_yaml();
    let names: Vec<&str> = yaml
        .lines()
        .filter_map(|line| line.strip_prefix("  name: "))
        .filter(|name| name.ends_with(".novads.io"))
        .collect();
    assert_eq!(
        names,
        [
            "municipalities.novads.io",
            "securityexemptions.novads.io",
            "serverimages.novads.io",
            "virtualservers.novads.io"
        ]
    );
    assert_eq!(yaml.matches("---\n").count(), 4);
}
