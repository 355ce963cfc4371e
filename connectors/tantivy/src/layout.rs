//! Where the live index and a rebuild's shadow live under `sink.tantivy.path`.
//!
//! The index first lives in the configured folder itself (generation 0). A rebuild writes
//! the shadow into `gen-<N+1>/` beside it; the swap writes `ACTIVE` (`gen-<N+1>`, through
//! a temporary file and a rename, both synced) and then removes the old generation. The
//! rename of `ACTIVE` is the atomic switch, and each generation's checkpoint is in its own
//! commit payload, so the checkpoint switches with it.

use std::io::Write;
use std::path::{Path, PathBuf};

use sinkd_core::error::SinkError;

const ACTIVE: &str = "ACTIVE";
/// The rebuild ticket of the shadow generation named on its first line.
const REBUILD: &str = "REBUILD";

fn io(what: &str, path: &Path, e: std::io::Error) -> SinkError {
    SinkError::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// The live generation's number (0: the folder itself).
pub fn generation(root: &Path) -> Result<u32, SinkError> {
    let path = root.join(ACTIVE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .strip_prefix("gen-")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                SinkError::Config(format!(
                    "{} should name the live index folder (gen-<N>), not {text:?}",
                    path.display()
                ))
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io("cannot read", &path, e)),
    }
}

fn dir_of(root: &Path, generation: u32) -> PathBuf {
    if generation == 0 {
        root.to_owned()
    } else {
        root.join(format!("gen-{generation}"))
    }
}

/// The folder of the live index.
pub fn live_dir(root: &Path) -> Result<PathBuf, SinkError> {
    Ok(dir_of(root, generation(root)?))
}

/// The folder a rebuild fills.
pub fn shadow_dir(root: &Path) -> Result<PathBuf, SinkError> {
    Ok(dir_of(root, generation(root)? + 1))
}

/// Replaces `root/name` with `text` durably: a synced temporary file renamed over it,
/// then the folder synced.
fn write_durably(root: &Path, name: &str, text: &str) -> Result<(), SinkError> {
    let tmp = root.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| io("cannot write", &tmp, e))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("cannot write", &tmp, e))?;
    std::fs::rename(&tmp, root.join(name)).map_err(|e| io("cannot rename", &tmp, e))?;
    std::fs::File::open(root)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", root, e))
}

/// Makes the shadow live (durably) and returns the old live folder's generation.
pub fn switch_to_shadow(root: &Path) -> Result<u32, SinkError> {
    let old = generation(root)?;
    write_durably(root, ACTIVE, &format!("gen-{}\n", old + 1))?;
    Ok(old)
}

/// Records the shadow generation's rebuild ticket.
pub fn set_ticket(root: &Path, ticket: &str) -> Result<(), SinkError> {
    write_durably(
        root,
        REBUILD,
        &format!("gen-{}\n{ticket}", generation(root)? + 1),
    )
}

/// The shadow generation's rebuild ticket; one written for another generation is not.
pub fn ticket(root: &Path) -> Result<Option<String>, SinkError> {
    let path = root.join(REBUILD);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("cannot read", &path, e)),
    };
    let shadow = format!("gen-{}", generation(root)? + 1);
    Ok(text
        .split_once('\n')
        .filter(|(generation, _)| *generation == shadow)
        .map(|(_, ticket)| ticket.to_owned()))
}

/// Removes the rebuild ticket, if there is one.
pub fn remove_ticket(root: &Path) -> Result<(), SinkError> {
    let path = root.join(REBUILD);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("cannot remove", &path, e)),
        _ => Ok(()),
    }
}

/// Deletes a generation that is not live any more (generation 0: the index files in the
/// folder itself, keeping `ACTIVE` and the generation folders).
pub fn remove_generation(root: &Path, generation: u32) -> Result<(), SinkError> {
    if generation > 0 {
        let dir = dir_of(root, generation);
        return match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("cannot remove", &dir, e)),
            _ => Ok(()),
        };
    }
    let entries = std::fs::read_dir(root).map_err(|e| io("cannot read", root, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_file() && entry.file_name() != ACTIVE && entry.file_name() != REBUILD {
            std::fs::remove_file(&path).map_err(|e| io("cannot remove", &path, e))?;
        }
    }
    Ok(())
}

/// Generations left behind by an interrupted clean-up: older than the live one.
pub fn stale_generations(root: &Path) -> Result<Vec<u32>, SinkError> {
    let live = generation(root)?;
    let mut stale = Vec::new();
    if live > 0 && root.join("meta.json").exists() {
        stale.push(0);
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let n = name
                .to_str()
                .and_then(|n| n.strip_prefix("gen-"))
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = n.filter(|n| *n < live) {
                stale.push(n);
            }
        }
    }
    Ok(stale)
}
