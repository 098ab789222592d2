//! The bundled DialogSum sample (assets/demo, CC BY-NC-SA 4.0, non-commercial; see its README),
//! embedded so the demo runs wherever the binary is.

use std::path::{Path, PathBuf};

use super::error::DataError;

/// 300 DialogSum train rows (`dialogue`, `summary`).
pub const DEMO_TRAIN_JSONL: &str = include_str!("../../assets/demo/dialogsum.train.jsonl");
/// 50 DialogSum test rows (`dialogue`, `summary1..3`).
pub const DEMO_TEST_JSONL: &str = include_str!("../../assets/demo/dialogsum.test.jsonl");
/// Where the sample comes from and its license, to show next to it.
pub const DEMO_README: &str = include_str!("../../assets/demo/README.md");

/// The demo files written out, ready for `load_dataset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoFiles {
    pub train: PathBuf,
    pub test: PathBuf,
}

/// Writes the sample (and its README) into `dir`, creating it if needed.
pub fn write_demo_files(dir: &Path) -> Result<DemoFiles, DataError> {
    let write = |name: &str, text: &str| -> Result<PathBuf, DataError> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| DataError::Io { path: path.clone(), source })?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io { path: dir.to_path_buf(), source })?;
    write("README.md", DEMO_README)?;
    Ok(DemoFiles { train: write("dialogsum.train.jsonl", DEMO_TRAIN_JSONL)?, test: write("dialogsum.test.jsonl", DEMO_TEST_JSONL)? })
}
