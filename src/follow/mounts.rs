//! Which mount a path is on, from `/proc/self/mountinfo`: read without
//! touching the mounted filesystems, so it answers even while a network
//! share hangs every call made into it.

use std::path::{Path, PathBuf};

/// One line of mountinfo: where, what and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    /// `ext4`, `fuse.sshfs`, `nfs4`, ...
    pub fs_type: String,
    /// `user@host:/path` for sshfs, the device for a disk.
    pub source: String,
}

/// The mounts of this process's mount namespace, in mount order (a later
/// one on the same point hides the earlier).
pub fn mounts() -> Vec<Mount> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default()
}

/// Parses mountinfo: `id parent dev root point options [optional...] -
/// type source superoptions`, with spaces in paths written `\040`.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            Some(Mount {
                point: PathBuf::from(unescape(fields.get(4)?)),
                fs_type: (*fields.get(dash + 1)?).to_owned(),
                source: unescape(fields.get(dash + 2)?),
            })
        })
        .collect()
}

/// The mount that `path` (absolute, with symlinks resolved) is on.
pub fn mount_of<'m>(mounts: &'m [Mount], path: &Path) -> Option<&'m Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        // `max_by_key` keeps the last of equals: the newest mount on the
        // deepest point, which hides those mounted there before it.
        .max_by_key(|m| m.point.components().count())
}

/// Undoes the octal escapes of mountinfo and fstab (`\040` for a space).
pub(crate) fn unescape(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
27 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
60 27 0:50 / /mnt/share rw,nosuid,nodev,relatime shared:30 - fuse.sshfs root@198.18.0.1:/srv/export rw,user_id=0
61 27 0:51 / /mnt/with\\040space rw - tmpfs tmpfs rw
";

    #[test]
    fn a_path_is_on_its_deepest_mount() {
        let mounts = parse_mountinfo(MOUNTINFO);
        assert_eq!(mounts.len(), 3);
        let m = mount_of(&mounts, Path::new("/mnt/share/newbans.log")).unwrap();
        assert_eq!(
            (m.fs_type.as_str(), m.source.as_str()),
            ("fuse.sshfs", "root@198.18.0.1:/srv/export")
        );
        assert_eq!(
            mount_of(&mounts, Path::new("/mnt/shared")).unwrap().fs_type,
            "ext4"
        );
        assert_eq!(
            mount_of(&mounts, Path::new("/mnt/with space/x"))
                .unwrap()
                .fs_type,
            "tmpfs"
        );
    }

    #[test]
    fn the_newest_mount_on_a_point_hides_the_older() {
        let text = "27 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    62 27 0:52 / /mnt/s rw - tmpfs tmpfs rw\n\
                    63 27 0:53 / /mnt/s rw - fuse.sshfs root@198.18.0.1:/srv rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mount_of(&mounts, Path::new("/mnt/s/log")).unwrap().fs_type,
            "fuse.sshfs"
        );
    }
}
