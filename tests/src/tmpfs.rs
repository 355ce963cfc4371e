//! A small tmpfs mounted for one test (the tests run as root), so a test can fill a disk
//! without touching the machine's own.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a given size, unmounted and removed when dropped.
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `megabytes` on a new folder under the temp dir.
    pub fn mount(megabytes: u32) -> Tmpfs {
        let dir = std::env::temp_dir().join(crate::stack::unique("sinkd-tmpfs"));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "mounting a tmpfs on {} (the disk-full tests need root, as CI has)",
            dir.display()
        );
        Tmpfs { dir }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Fills what is left of it with a file (`filler`), 64 KiB at a time until the
    /// kernel says no space is left; returns how many bytes that took.
    pub fn fill(&self) -> u64 {
        use std::io::Write;
        let mut file = std::fs::File::create(self.dir.join("filler")).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => return written,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => return written, // ENOSPC
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
    }

    /// Gives the space [`Tmpfs::fill`] took back.
    pub fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).expect("filler removed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
