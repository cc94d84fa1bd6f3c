//! Which mounts `/etc/fstab` promises: a share that is not mounted leaves
//! its mount point as an empty local folder, where the log is simply
//! missing. What is mounted now is [`crate::follow::mounts`]'s.

use std::path::{Path, PathBuf};

use crate::follow::mounts::unescape;
pub use crate::follow::mounts::{Mount, mount_of, mounts};

/// The mount points in fstab that `dir` is in or under, deepest first:
/// the mounts this host is meant to have there.
pub fn fstab_points_over(fstab: &str, dir: &Path) -> Vec<(PathBuf, String)> {
    let mut points: Vec<(PathBuf, String)> = fstab
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (_source, point, fs_type) = (words.next()?, words.next()?, words.next()?);
            Some((PathBuf::from(unescape(point)), fs_type.to_owned()))
        })
        .filter(|(point, _)| point != Path::new("/") && dir.starts_with(point))
        .collect();
    points.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_points_over_a_folder_deepest_first() {
        let fstab = "# c\nUUID=1 / ext4 defaults 0 1\nroot@fs:/srv /mnt/share fuse.sshfs reconnect 0 0\n/dev/sdb /mnt ext4 defaults 0 2\n";
        let points = fstab_points_over(fstab, Path::new("/mnt/share"));
        assert_eq!(
            points,
            vec![
                (PathBuf::from("/mnt/share"), "fuse.sshfs".to_owned()),
                (PathBuf::from("/mnt"), "ext4".to_owned())
            ]
        );
    }
}
