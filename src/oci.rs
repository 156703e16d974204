//! An artifact as an OCI image that Istio pulls as a wasm plugin (`writ package --oci`).
//!
//! The image follows the *compat* variant of the Wasm image specification, the one Istio's
//! image fetcher tries first (`istio/istio` `pkg/wasm/imagefetcher.go`): one layer of the
//! standard media type `application/vnd.oci.image.layer.v1.tar+gzip` holding the module as
//! `plugin.wasm`, and the manifest annotation `module.wasm.image/variant: compat`. Standard
//! media types mean any registry and any OCI tool (`skopeo`, `crane`, `podman`) stores and
//! copies it; the *oci* variant's custom layer type is refused by some registries, and
//! Istio only accepts it with exactly two layers.
//!
//! writ's manifest (what `writ build` writes beside the artifact) travels in the image
//! config, as the label [`MANIFEST_LABEL`]: the config is the one metadata document every
//! tool shows (`skopeo inspect` prints its labels) and it is addressed by the image
//! manifest, so the digest Istio pins covers it too. A custom config media type would make
//! `skopeo inspect` and container tools refuse the image as "not an image", and a blob the
//! manifest does not reference is dropped by every copy.
//!
//! Everything is a function of the artifact bytes: no timestamps (no `created`, tar and
//! gzip times 0), owner ids 0, fixed modes, JSON keys in a fixed order, so the same
//! artifact gives a byte-identical layout (with the same writ: the gzip stream depends on
//! the compressor's version).

use std::io::Write as _;
use std::path::Path;

use serde_json::{Value, json};
use writ_compiler::link;

/// The media type of the one layer: a gzipped tar holding [`WASM_FILE`].
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The media type of the image config (a standard OCI image config).
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The media type of the image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of `index.json`.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The name Istio looks for inside the layer.
pub const WASM_FILE: &str = "plugin.wasm";
/// The config label holding writ's manifest JSON.
pub const MANIFEST_LABEL: &str = "dev.writ.manifest";
/// Manifest annotation: sha256 (hex) of the artifact, the bytes of `plugin.wasm`.
pub const ARTIFACT_SHA256_ANNOTATION: &str = "dev.writ.artifact.sha256";
/// Manifest annotation: the policy's name.
pub const POLICY_NAME_ANNOTATION: &str = "dev.writ.policy.name";
/// Manifest annotation: the policy's version.
pub const POLICY_VERSION_ANNOTATION: &str = "dev.writ.policy.version";
/// The manifest annotation the compat variant requires with a standard OCI layer type.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

/// A content-addressed blob of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The media type its descriptor gives it.
    pub media_type: &'static str,
    /// The blob's content, as written to the layout.
    pub bytes: Vec<u8>,
    /// sha256 (hex) of `bytes`: the blob's file name under `blobs/sha256/`.
    pub sha256: String,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let sha256 = link::sha256_hex(&bytes);
        Blob {
            media_type,
            bytes,
            sha256,
        }
    }

    /// The OCI descriptor that references this blob.
    fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": format!("sha256:{}", self.sha256),
            "size": self.bytes.len(),
        })
    }
}

/// One artifact as an OCI image: the layer, the config and the manifest, and the
/// `index.json` that names the manifest by the policy version.
#[derive(Debug, Clone)]
pub struct WasmImage {
    /// The one layer: a gzipped tar holding the artifact as [`WASM_FILE`].
    pub layer: Blob,
    /// The image config: target, the layer's uncompressed digest, writ's manifest label.
    pub config: Blob,
    /// The image manifest. Its sha256 is what Istio compares a WasmPlugin's `sha256` with.
    pub manifest: Blob,
    /// `index.json`: the manifest's descriptor, tagged [`WasmImage::ref_name`].
    pub index: Vec<u8>,
    /// sha256 (hex) of the artifact.
    pub artifact_sha256: String,
    /// The reference name (tag) of the manifest in `index.json`: the policy version.
    pub ref_name: String,
}

/// Why an artifact cannot be packaged or its layout written.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("not a writ artifact: {0}")]
    NotAnArtifact(String),
    #[error("the embedded manifest does not describe the embedded policy")]
    Inconsistent,
    #[error("cannot write the layer: {0}")]
    Layer(std::io::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{0} is neither empty nor an OCI image layout; choose a new folder (an existing layout is replaced)"
    )]
    NotALayout(String),
}

/// Reads writ's manifest from an artifact and checks it describes the embedded policy (as
/// `writ inspect` does), with `artifact_sha256` and the (unverified) signing key filled in
/// as in the `.manifest.json` `writ build` writes beside it.
pub fn artifact_manifest(wasm: &[u8]) -> Result<link::Manifest, PackageError> {
    let mut manifest =
        link::read_manifest(wasm).map_err(|e| PackageError::NotAnArtifact(e.to_string()))?;
    let policy = link::read_policy(wasm).map_err(|e| PackageError::NotAnArtifact(e.to_string()))?;
    if policy.rules.len() != manifest.rules.len() || policy.name != manifest.policy {
        return Err(PackageError::Inconsistent);
    }
    manifest.artifact_sha256 = Some(link::sha256_hex(wasm));
    manifest.signed_by = link::sign::read_signature(wasm)
        .ok()
        .flatten()
        .map(|r| r.key_id);
    Ok(manifest)
}

impl WasmImage {
    /// Packages the artifact bytes `wasm`, unchanged (a signature section included), with
    /// `manifest` from [`artifact_manifest`].
    pub fn new(wasm: &[u8], manifest: &link::Manifest) -> Result<WasmImage, PackageError> {
        let artifact_sha256 = link::sha256_hex(wasm);
        let tar = layer_tar(wasm).map_err(PackageError::Layer)?;
        let diff_id = link::sha256_hex(&tar);
        let layer = Blob::new(LAYER_MEDIA_TYPE, gzip(&tar).map_err(PackageError::Layer)?);

        let manifest_json = serde_json::to_string(manifest).unwrap_or_default();
        let mut labels = serde_json::Map::new();
        labels.insert(
            "org.opencontainers.image.title".into(),
            manifest.policy.clone().into(),
        );
        labels.insert(
            "org.opencontainers.image.version".into(),
            manifest.version.clone().into(),
        );
        labels.insert(MANIFEST_LABEL.into(), manifest_json.into());
        // `wasm`/`unknown`: the module's target, wasm32-unknown-unknown (proxy-wasm, not
        // WASI). No `created` and no `history`: they would carry build times.
        let config = json!({
            "architecture": "wasm",
            "os": "unknown",
            "config": { "Labels": labels },
            "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        });
        let config = Blob::new(CONFIG_MEDIA_TYPE, to_bytes(&config));

        let mut annotations = serde_json::Map::new();
        let mut annotate = |k: &str, v: &str| {
            annotations.insert(k.to_string(), Value::String(v.to_string()));
        };
        annotate(VARIANT_ANNOTATION, "compat");
        annotate("org.opencontainers.image.title", &manifest.policy);
        annotate("org.opencontainers.image.version", &manifest.version);
        annotate(
            "org.opencontainers.image.description",
            &format!(
                "writ policy {} {} (implements {}), a proxy-wasm HTTP filter",
                manifest.policy, manifest.version, manifest.implements
            ),
        );
        if !manifest.owner.is_empty() {
            annotate("org.opencontainers.image.authors", &manifest.owner);
        }
        annotate(ARTIFACT_SHA256_ANNOTATION, &artifact_sha256);
        annotate(POLICY_NAME_ANNOTATION, &manifest.policy);
        annotate(POLICY_VERSION_ANNOTATION, &manifest.version);
        let image_manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
            "annotations": annotations,
        });
        let image_manifest = Blob::new(MANIFEST_MEDIA_TYPE, to_bytes(&image_manifest));

        let ref_name = manifest.version.clone();
        let mut entry = image_manifest.descriptor();
        entry["annotations"] = json!({ "org.opencontainers.image.ref.name": ref_name });
        let index = to_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [entry],
        }));
        Ok(WasmImage {
            layer,
            config,
            manifest: image_manifest,
            index,
            artifact_sha256,
            ref_name,
        })
    }

    /// Writes the OCI image layout into `dir`: `oci-layout`, `index.json` and
    /// `blobs/sha256/<hex>`. `dir` may be missing, empty, or a layout written before (its
    /// blobs are replaced, so the folder holds exactly this image); anything else is
    /// refused rather than mixed into.
    pub fn write_layout(&self, dir: &Path) -> Result<(), PackageError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| PackageError::Io { path, source }
        };
        let blobs = dir.join("blobs").join("sha256");
        if dir.exists() {
            let mut entries = std::fs::read_dir(dir).map_err(io(dir))?;
            let empty = entries.next().is_none();
            if !empty && !dir.join("oci-layout").is_file() {
                return Err(PackageError::NotALayout(dir.display().to_string()));
            }
            if blobs.is_dir() {
                for entry in std::fs::read_dir(&blobs).map_err(io(&blobs))? {
                    let path = entry.map_err(io(&blobs))?.path();
                    let is_blob = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
                    if is_blob && path.is_file() {
                        std::fs::remove_file(&path).map_err(io(&path))?;
                    }
                }
            }
        }
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        for blob in [&self.layer, &self.config, &self.manifest] {
            let path = blobs.join(&blob.sha256);
            std::fs::write(&path, &blob.bytes).map_err(io(&path))?;
        }
        let layout = dir.join("oci-layout");
        std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io(&layout))?;
        // Last: a reader that finds index.json finds every blob it names.
        let index = dir.join("index.json");
        std::fs::write(&index, &self.index).map_err(io(&index))?;
        Ok(())
    }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A ustar archive with one regular file, [`WASM_FILE`]: mode 0644, owner 0:0, no owner
/// names, time 0.
fn layer_tar(wasm: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, WASM_FILE, wasm)?;
    builder.into_inner()
}

/// gzip at the best level, with no file name, time 0 and OS "unknown" in the header.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_layer_is_a_fixed_tar_of_plugin_wasm() {
        let tar = layer_tar(b"\0asm\x01\0\0\0").unwrap();
        // One 512-byte header, the data padded to 512, two zero blocks.
        assert_eq!(tar.len(), 512 * 4);
        let mut archive = tar::Archive::new(tar.as_slice());
        let entries: Vec<_> = archive.entries().unwrap().map(Result::unwrap).collect();
        assert_eq!(entries.len(), 1);
        let h = entries[0].header();
        assert_eq!(h.path().unwrap().to_str(), Some(WASM_FILE));
        assert_eq!(
            (h.mode().unwrap(), h.mtime().unwrap(), h.uid().unwrap()),
            (0o644, 0, 0)
        );
        // The gzip header carries no time and no name.
        let gz = gzip(&tar).unwrap();
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
        assert_eq!(gzip(&tar).unwrap(), gz);
    }
}
