//! Helpers shared by the unit tests.

use std::path::Path;

use crate::formats::sources::KbldConfig;

/// Writes `text` to `dir/file`, creating the directories on the way.
pub fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
    std::fs::write(path, text).expect("write file");
}

/// Loads a kbld configuration given as text.
pub fn kbld_config(yaml: &str) -> KbldConfig {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "sources.yaml", yaml);
    KbldConfig::load(&dir.path().join("sources.yaml")).expect("valid configuration")
}
